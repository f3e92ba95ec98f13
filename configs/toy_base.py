"""The toy world's base model (the stand-in for DeepSeek-V3-Base): tokenizer + pre-training.

  python -m r1jax.main --config=configs/toy_base.py --workdir=workdirs/toy_base

An SFT-stage config (r1jax/stages/sft.py) from scratch: builds the toy data sets, trains a
SentencePiece tokenizer, pre-trains a ~1.5M-param decoder on the toy corpus for a few CPU minutes
(loss on completions and fact answers only) and reports its held-out pass@1. Every stage that
needs the base builds it with this file when it is missing. Variants after ':':
  smoke      a one-layer model, three steps (the tests)
  student    the distillation student's base: the same corpus and tokenizer, a model at half
             width and depth (configs/distill.py; workdirs/toy_base_student)
  world=reflect  the base of the reflect world (r1jax/data/reflect_world.py): the default base
             pre-trained further on that world's corpus; it answers with a fast step and rarely
             re-checks it (configs/grpo_zero.py:world=reflect; workdirs/toy_base_world_reflect)
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, student=False, world="")
  name = "toy_base_student" if arg.student else "toy_base"
  c = common.sft(name + (f"_{arg.world}" if arg.world else ""), source="toy:corpus")
  c.model.init = "scratch"
  c.model.preset = "toy"  # vocab_size comes from the tokenizer
  if arg.student:
    c.model.overrides = ml_collections.ConfigDict(common.STUDENT_MODEL)
  c.tokenizer.source = "toy"  # digits split, R1 tags single pieces
  c.train.update({"num_steps": 420, "batch_size": 32, "seq_len": 144, "log_every": 25})
  c.optim = common.optim(3e-3, "cosine", warmup_steps=40, weight_decay=0.01, b2=0.999)
  c.eval.max_new_tokens = 64  # the protocol configs/grpo_zero.py logs at its step 0
  if arg.world == "reflect":
    reflect(c, arg.smoke)
  if arg.smoke:
    common.smoke_sft(c)
    c.model.overrides = ml_collections.ConfigDict(common.SMOKE_MODEL)
  common.toy_world(c, arg.world)
  return c


def reflect(c: ml_collections.ConfigDict, smoke: bool) -> None:
  """The reflect world's base: the default base, pre-trained 300 steps more on the reflect
  corpus (its tokenizer too: `~` and `wait` are a few of its pieces). From scratch, 500 steps
  left a model that knew 29-56% of the single-digit facts and fetched the operands of longer
  problems at random: a re-check is only worth the facts and the fetching it rests on."""
  c.model.init = "parent"
  c.parents.init = common.stage_parent("toy_base", smoke)
  c.train.num_steps = 300
  c.optim = common.optim(1e-3, "cosine", warmup_steps=20, weight_decay=0.01, b2=0.999)
