"""The toy world's base model (the stand-in for DeepSeek-V3-Base): tokenizer + pre-training.

  python -m r1jax.main --config=configs/toy_base.py --workdir=workdirs/toy_base

Builds the toy data sets, trains a SentencePiece tokenizer, pre-trains a ~1M-param decoder for a
few CPU minutes and reports its held-out pass@1. `configs/grpo_zero.py` runs this stage by
itself when its base model is missing. Variant `:smoke` shrinks everything for tests.
"""
import ml_collections

from configs import common

# A small toy world for the smoke variants (tests): every split a few hundred records.
SMOKE_WORLD = {"corpus_size": 2000, "rl_size": 200, "test_size": 32, "cold_start_size": 50,
               "preference_size": 50}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.stage = "toy_base"
  c.seed = 0
  c.progress = True
  c.mesh = common.mesh()
  c.axis_rules = None  # None: r1jax.sharding.DEFAULT_RULES
  c.checkpoint_every = 200
  c.grader = "exact"

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "toy"
  c.data.data_dir = ""  # TFDS data dir ('' -> $R1JAX_DATA_DIR or ~/r1jax_data)
  c.data.template = "toy"
  c.data.toy = ml_collections.ConfigDict()  # r1jax.data.toy_world.ToyWorldConfig overrides

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 448  # SentencePiece BPE; digits split, R1 tags single pieces

  c.model = ml_collections.ConfigDict()
  c.model.preset = "toy"  # r1jax.models.config.PRESETS; vocab_size comes from the tokenizer
  c.model.overrides = ml_collections.ConfigDict()  # e.g. {'d_model': 192}

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 420
  c.train.batch_size = 32  # packed rows per step
  c.train.seq_len = 144
  c.train.log_every = 25

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 3e-3
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 40
  c.optim.total_steps = c.train.num_steps
  c.optim.end_lr_factor = 0.1
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.grad_clip = 1.0

  # Held-out pass@1 of the base, with the protocol configs/grpo_zero.py logs at its step 0.
  c.eval = ml_collections.ConfigDict()
  c.eval.num_problems = 256  # 0 = skip
  c.eval.k = 4
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.max_new_tokens = 64
  c.eval.batch_size = 128
  c.eval.seed = 0
  c.eval.extract = ("answer_tag",)

  if arg.smoke:
    c.data.toy = ml_collections.ConfigDict(SMOKE_WORLD)
    c.model.overrides = ml_collections.ConfigDict({"d_model": 32, "num_layers": 1, "num_heads": 2,
                                                   "num_kv_heads": 2, "mlp_dim": 64})
    c.train.num_steps = 3
    c.train.batch_size = 8
    c.train.seq_len = 96
    c.train.log_every = 1
    c.eval.num_problems = 4
    c.eval.k = 2
    c.eval.max_new_tokens = 16
    c.eval.batch_size = 4
  c.optim.total_steps = c.train.num_steps
  return c
