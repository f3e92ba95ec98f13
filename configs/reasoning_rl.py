"""R1 stage 2, reasoning RL: GRPO from the cold-start model with accuracy + format + language
consistency rewards, summed as in the paper.

  python -m r1jax.main --config=configs/reasoning_rl.py --workdir=workdirs/reasoning_rl

The language reward is the share of the CoT's words in the prompt record's target language
(`data.language` when a record names none); a CoT without words scores 1, so the reward costs
mixing and never pays for thinking (r1jax/language.py). Every eval logs `eval/lang_mix_rate`;
every step logs the rollouts' `lang_mix_rate`. The cold-start model (workdirs/cold_start_sft) is
built first when missing. Variants after ':':
  smoke            two tiny steps (the tests)
  no_lang          the paper's ablation: the same run without the language reward
  model=smollm2    from the SmolLM2 cold-start run, GSM8K prompts, math-verify
Paper vs toy: lr 3e-6 vs 1e-4, beta 0.001 vs 0, G 16 vs 8, T 1.0 vs 1.0, clip eps 10 (Nature
methods) vs 0.2, 32,768 tokens vs 72.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, no_lang=False, model="toy")
  c = common.grpo("reasoning_rl_no_lang" if arg.no_lang else "reasoning_rl")
  variant = "model=smollm2" if arg.model == "smollm2" else ""
  c.parents.init = common.stage_parent("cold_start_sft", arg.smoke, variant)
  c.rewards = ml_collections.ConfigDict({"reasoning": {"accuracy": 1.0, "format": 1.0,
                                                       "language": 1.0}})
  if arg.no_lang:
    del c.rewards.reasoning["language"]
  c.num_steps = 40
  c.eval.every = 20  # evals cost ~15 s each at this length
  c.rl.max_new_tokens = 72
  c.eval.max_new_tokens = 72
  c.optim.learning_rate = 1e-4
  if arg.model == "smollm2":
    common.smollm2_grpo(c)
    c.rewards.reasoning.update({"accuracy": 1.0})
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")
  if arg.smoke:
    common.smoke_grpo(c, arg.model)
  return c
