"""Blocks shared by the config files: the SFT and GRPO stage configs, eval, optimiser, parents.

Each stage file starts from `sft(...)` or `grpo(...)` and changes what makes it that stage, so a
field means the same thing in every file. Smoke variants share SMOKE_WORLD and the smoke model.
"""
from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict

# A small toy world for the smoke variants (tests): every split a few hundred records.
SMOKE_WORLD = {"corpus_size": 2000, "rl_size": 200, "test_size": 32, "cold_start_size": 50,
               "general_sft_size": 118, "preference_size": 50}
# Variant toy worlds (r1jax.data.prompts.TOY_WORLDS) by name; '' is the default world.
TOY_WORLDS = ("", "reflect")
# The smoke model: one tiny layer.
SMOKE_MODEL = {"d_model": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "mlp_dim": 64}
# The distillation student: the toy model at half width and depth (~4x fewer FLOPs per token).
STUDENT_MODEL = {"d_model": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "mlp_dim": 384}


def parse_arg(arg: str | None, **defaults) -> ConfigDict:
  """Parses the string after ':' in `--config=file.py:a=1,smoke` into typed fields.

  Each `key=value` is cast to the type of its default; a bare `key` sets a bool default to True.
  """
  out = ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not value:
      if not isinstance(default, bool):
        raise ValueError(f"config arg {key!r} needs a value")
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value)
  return out


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ConfigDict:
  """Mesh axis sizes; -1 takes the remaining devices. See r1jax/sharding.py for the rules."""
  return ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def workdir(stage: str, smoke: bool = False) -> str:
  """Where a stage runs by default; smoke runs keep to workdirs/smoke/ so they never mix."""
  return f"workdirs/smoke/{stage}" if smoke else f"workdirs/{stage}"


def parent(dir: str, config: str = "") -> ConfigDict:  # noqa: A002
  """A parent run: its directory, and the config file (`path.py:variant`) that builds it when it
  is missing ('' = never build: a pretrained model file)."""
  return ConfigDict({"dir": dir, "config": config})


def stage_parent(stage_file: str, smoke: bool, variant: str = "") -> ConfigDict:
  """The parent built by configs/<stage_file>.py in its default workdir (the one
  `python -m r1jax.main` uses without --workdir)."""
  from r1jax import config_files
  arg = ",".join(filter(None, ["smoke" if smoke else "", variant]))
  spec = f"configs/{stage_file}.py" + (f":{arg}" if arg else "")
  return parent(config_files.default_workdir(spec), spec)


def toy_world(c: ConfigDict, world: str) -> None:
  """Selects a variant toy world for a stage's data (after any smoke shrinking, which it keeps):
  the `world` field of `data.toy`, read by r1jax.data.prompts.toy_world_config."""
  if world not in TOY_WORLDS:
    raise ValueError(f"unknown world {world!r}; known: {TOY_WORLDS}")
  if world:
    c.data.toy = ConfigDict({**c.data.toy.to_dict(), "world": world})


def smollm2_path() -> str:
  from r1jax.models import gguf_import
  return gguf_import.smollm2_gguf_path()


def data(dataset: str = "toy", template: str = "toy") -> ConfigDict:
  return ConfigDict({
      "dataset": dataset,  # prompts: 'toy', 'toy_general', or a benchmark (gsm8k, aime24, ...)
      "data_dir": "",  # TFDS data dir ('' -> $R1JAX_DATA_DIR or ~/r1jax_data)
      "manual_dir": "",  # benchmark source folder ('' -> the copy shipped in r1jax/data/files)
      "template": template,  # prompt template: 'r1_zero' (the paper's), 'toy', 'plain' or a string
      "language": "en",  # the CoT's target language when a prompt record names none
      "toy": ConfigDict(),  # r1jax.data.toy_world.ToyWorldConfig overrides (must match the base's)
  })


def eval_block(num_problems: int = 256, max_new_tokens: int = 64) -> ConfigDict:
  """Held-out eval with the paper's protocol: pass@1 over k samples at T 0.6 / top-p 0.95."""
  return ConfigDict({
      "every": 10,  # steps between evals (RL stages; also at step 0 and at the end); 0 = off
      "num_problems": num_problems,  # 0 = skip
      "k": 4,  # samples per problem: pass@1 is averaged over them
      "temperature": 0.6,
      "top_p": 0.95,
      "max_new_tokens": max_new_tokens,
      "batch_size": 128,  # prompts per sampler call
      "seed": 0,  # with k, T, top-p and length as in configs/eval.py: the same samples
      # 'static' or 'continuous' (r1jax/samplers.py): the same samples, at another speed. The
      # continuous sampler decodes num_slots rows at once (0 = batch_size x k), refilling a
      # finished row's slot from 4 batches per call. Static here: on the toy world's eval (the
      # reflect base, T 0.6) every completion has the same length, and continuous measured
      # 0.88x; SmolLM2's long-tailed GSM8K evals take continuous (smollm2_grpo;
      # experiments/continuous_defaults.py).
      "sampler": "static",
      "num_slots": 0,
      "extract": ("answer_tag",),
      "general_problems": 0,  # held-out toy general prompts judged by the world (RL stages)
  })


def optim(learning_rate: float, schedule: str = "constant", warmup_steps: int = 0,
          weight_decay: float = 0.0, b2: float = 0.99) -> ConfigDict:
  return ConfigDict({"learning_rate": learning_rate, "schedule": schedule,
                     "warmup_steps": warmup_steps, "total_steps": 0,  # set by the stage
                     "end_lr_factor": 0.1, "weight_decay": weight_decay, "b1": 0.9, "b2": b2,
                     "grad_clip": 1.0})


def smoke_eval(c: ConfigDict) -> None:
  c.eval.update({"every": 2, "num_problems": 4, "k": 2, "max_new_tokens": 16, "batch_size": 4})
  if c.eval.general_problems:
    c.eval.general_problems = 5  # one of each toy instruction kind


def precision() -> ConfigDict:
  """How the model computes; the weights and optimizer state stay float32 (the TPU norm is
  compute 'bfloat16'). remat: what a block keeps for the backward pass ('none' | 'full' |
  'dots_saveable'); kv_cache: the sampler's cache dtype ('' = compute)."""
  return ConfigDict({"compute": "float32", "kv_cache": "", "remat": "none"})


def sft(name: str, source: str) -> ConfigDict:
  """The SFT stage (r1jax/stages/sft.py): init, data source, completion-only loss, epochs/steps."""
  c = ConfigDict()
  c.stage = "sft"
  c.name = name  # progress bar and log label
  c.seed = 0
  c.progress = True  # tqdm bar
  c.mesh = mesh()
  c.axis_rules = None  # None: r1jax.sharding.DEFAULT_RULES
  c.checkpoint_every = 200
  c.nan_policy = "stop"  # a NaN/inf loss or gradient: 'stop' (keep the last good checkpoint and
  #   exit naming the step) or 'skip' (leave the state as it was, count it in the metrics)
  c.grader = "exact"  # eval grader: 'exact' (toy world) or 'math' (math-verify)
  c.parents = ConfigDict()  # role -> parent(dir, config); 'init' holds the starting weights
  c.model = ConfigDict({
      "init": "parent",  # 'parent' (parents.init's weights) or 'scratch' (a fresh preset)
      "preset": "toy",  # scratch only: r1jax.models.config.PRESETS
      "overrides": ConfigDict(),  # scratch only: e.g. {'d_model': 192}
  })
  c.precision = precision()
  c.tokenizer = ConfigDict({"source": "toy", "vocab_size": 448})  # scratch only: 'toy' trains
  #   the toy world's SentencePiece tokenizer; 'parent:<role>' takes that run's tokenizer
  c.data = data()
  c.data.source = source  # r1jax.data.sft_data: toy:<kind> | jsonl:<fmt>:<path> | parent:<role>
  c.train = ConfigDict({
      "num_steps": 100,  # used when num_epochs is 0
      "num_epochs": 0.0,  # > 0: that many passes over the data (R1 stage 3: 2)
      "batch_size": 32,  # packed rows per step
      "seq_len": 160,
      # Row blocks read from as many document shards (0: one per process). Fix it to resume
      # a run on another process count: the batches depend on it, not on the processes.
      "data_shards": 0,
      "log_every": 10,
  })
  c.optim = optim(1e-3, "cosine", warmup_steps=10, weight_decay=0.01, b2=0.999)
  c.eval = eval_block(num_problems=256, max_new_tokens=96)
  return c


def smoke_sft(c: ConfigDict, model: str = "toy") -> None:
  """A few tiny steps; on a real model (SmolLM2) one step of its own data, no toy world."""
  real = model not in ("toy", "student")
  c.data.toy = ConfigDict({} if real else SMOKE_WORLD)
  c.train.update({"num_steps": 3, "num_epochs": 0.0, "batch_size": 8, "seq_len": 96,
                  "log_every": 1})
  c.checkpoint_every = 2
  c.optim.warmup_steps = 1
  smoke_eval(c)
  if real:
    c.train.update({"num_steps": 1, "batch_size": 2, "seq_len": 256})
    c.eval.num_problems = 0


def grpo(name: str) -> ConfigDict:
  """The GRPO stage (r1jax/stages/grpo.py) with R1-Zero's settings on the toy world."""
  c = ConfigDict()
  c.stage = "grpo"
  c.name = name
  c.seed = 0
  c.num_steps = 40  # optimizer steps = num_steps * rl.num_epochs * rl.num_minibatches
  c.checkpoint_every = 10
  c.keep_checkpoints = 2
  c.nan_policy = "stop"  # a NaN/inf loss or gradient: 'stop' or 'skip' (see sft())
  c.progress = True
  c.mesh = mesh()  # data-parallel over every device by default
  c.axis_rules = None  # None: r1jax.sharding.DEFAULT_RULES
  c.precision = precision()
  c.grader = "exact"  # accuracy reward + eval grader: 'exact' (toy world) or 'math' (math-verify)
  c.parents = ConfigDict()  # 'init': the policy's starting weights; 'reward_model' when used
  c.data = data()
  c.data.general_fraction = 0.0  # share of each batch's prompts from data.general_dataset
  c.data.general_dataset = "toy_general"  # general (non-reasoning) prompts, task='general'

  c.rl = ConfigDict()
  c.rl.num_prompts = 16  # prompts per step (R1: 32)
  c.rl.group_size = 8  # G completions per prompt (R1: 16)
  c.rl.max_new_tokens = 48  # completion budget in tokens (R1: 32,768)
  c.rl.temperature = 1.0  # rollout temperature (R1-Zero: 1.0, stage 4: 0.7); the trainer's
  #   log-probs use the same temperature (logits / T), as TRL and verl do
  c.rl.top_p = 1.0
  c.rl.top_k = 0
  c.rl.sampler = "continuous"  # rollouts: 'static' or 'continuous' (r1jax/samplers.py), the
  #   same samples at another speed (held-out evals use eval.sampler). Continuous decodes the
  #   long tail in a narrower batch: 1.35x the static tokens/s on the reflect world's 128-row
  #   rollout (experiments/continuous_defaults.py)
  c.rl.num_slots = 0  # continuous: decode slots; 0 = all num_prompts x G rows (no refill). Half
  #   the rows measured 1.9x there, on a CPU, where a step costs in proportion to its rows; on
  #   an accelerator a decode step costs about the same at any width, so fewer slots than rows
  #   mean more steps, and 0 never runs more steps than static
  c.rl.advantage_scale = "group"  # 'group' (GRPO) | 'batch' | 'none' (Dr.GRPO)
  c.rl.advantage_eps = 1e-4  # added to the std (TRL: 1e-4, verl: 1e-6)
  c.rl.num_minibatches = 1  # optimizer steps per epoch over one rollout (R1: 16)
  c.rl.num_epochs = 1  # mu: inner epochs against the old policy's log-probs (R1: 1)
  c.rl.mask_truncated = False  # DAPO overlong filtering
  c.rl.dynamic_sampling = False  # DAPO: drop groups with equal rewards and resample
  c.rl.max_sampling_rounds = 4  # cap on dynamic-sampling rounds per step
  c.rl.old_logprobs_from_sampler = False  # reuse the sampler's log-probs as the old policy's
  c.rl.ref_reset_every = 400  # reset the reference model to the policy every N steps (R1: 400)
  c.rl.loss = ConfigDict()
  c.rl.loss.ratio = "token"  # 'token' | 'sequence' (the paper's formula) | 'gspo'
  c.rl.loss.eps_low = 0.2
  c.rl.loss.eps_high = 0.2  # DAPO clip-higher: 0.28
  c.rl.loss.beta = 0.0  # KL coefficient (R1: 0.001); 0 skips the reference forward
  c.rl.loss.kl = "k3"  # 'k1' | 'k2' | 'k3'
  c.rl.loss.aggregation = "grpo"  # 'grpo' | 'dapo' | 'dr_grpo'
  c.rl.loss.max_tokens = ml_collections.config_dict.placeholder(int)  # dr_grpo budget

  # Rewards per task of the prompt record ('reasoning' when a record has none): each task maps
  # reward name -> weight (or {'weight': w, **kwargs}). A prompt whose task has no entry stops
  # the run before sampling. R1-Zero: accuracy + format, equal weight.
  c.rewards = ConfigDict({"reasoning": {"accuracy": 1.0, "format": 1.0}})

  c.optim = optim(2e-4)  # R1: 3e-6 on a 671B model; the toy model wants more
  c.eval = eval_block(num_problems=256, max_new_tokens=64)
  return c


def smoke_grpo(c: ConfigDict, model: str = "toy") -> None:
  c.num_steps = 2
  c.checkpoint_every = 1
  c.rl.num_prompts = 2
  c.rl.group_size = 4
  c.rl.max_new_tokens = 16
  c.data.toy = ConfigDict({} if model not in ("toy", "student") else SMOKE_WORLD)
  smoke_eval(c)


def example_file(name: str) -> str:
  """A small JSONL example shipped with r1jax (r1jax/data/files/examples/), for real models."""
  import os

  import r1jax.data
  return os.path.join(os.path.dirname(r1jax.data.__file__), "files", "examples", name)


def smollm2_sft(c: ConfigDict, jsonl: str) -> None:
  """An SFT stage on SmolLM2-135M-Instruct: a few steps on a shipped JSONL example file."""
  c.parents.init = parent(smollm2_path())
  c.data.source = jsonl
  c.data.template = "r1_zero"
  c.grader = "math"
  c.train.update({"num_steps": 3, "num_epochs": 0.0, "batch_size": 2, "seq_len": 256,
                  "log_every": 1})
  c.checkpoint_every = 3
  c.optim = optim(1e-5, "constant")
  c.eval.num_problems = 0  # a 135M model's GSM8K eval takes minutes: configs/eval.py does it


def smollm2_grpo(c: ConfigDict) -> None:
  """A GRPO stage on SmolLM2-135M-Instruct scale: GSM8K prompts, math-verify, two steps."""
  c.data.dataset = "gsm8k"  # the copy shipped in r1jax/data/files
  c.data.template = "r1_zero"
  c.grader = "math"
  c.num_steps = 2
  c.checkpoint_every = 2
  c.rl.num_prompts = 2
  c.rl.group_size = 4
  c.rl.max_new_tokens = 128
  c.eval.every = 0
  c.eval.num_problems = 0
  c.eval.extract = ("answer_tag", "boxed", "last_number")
  c.eval.sampler = "continuous"  # 1.13x static on 16 GSM8K problems, k 4, 256 tokens
  #   (experiments/continuous_defaults.py): long-tailed lengths
  c.optim.learning_rate = 1e-6
