"""R1 stage 4, all-scenario RL: GRPO from the rejection-SFT model on reasoning and general
prompts, each sample rewarded by its prompt's task.

  python -m r1jax.main --config=configs/all_scenario_rl.py --workdir=workdirs/all_scenario_rl

Routing (config.rewards, by the prompt record's `task`):
  reasoning   accuracy + format + language (rule rewards, as in stage 2)
  general     the Bradley-Terry reward model (configs/reward_model.py): helpfulness on the
              summary only, harmlessness on the whole response, reasoning included; plus the
              format of a general reply (`<think>...</think>reply`)
A task with no route stops the run before sampling. The reward model runs jitted on the mesh,
sharded like the policy. Rollouts are sampled at T=0.7 and the trainer's log-probs use the same
temperature. Held-out general prompts are judged by the toy world's own ground truth
(eval/general_obey_rate, eval/harmless_rate), never by the reward model. Parents (the
rejection-SFT policy and the reward model) are built first when missing. Variants after ':':
  smoke            two tiny steps (the tests)
  model=smollm2    SmolLM2 parents; GSM8K prompts and the general prompts of
                   r1jax/data/files/examples/general_sft.jsonl, scored by the SmolLM2 reward model
Paper vs toy: ~1,700 steps at T 0.7 with preference rewards in the last 400 vs 40 steps at
T 0.7, half of each batch general prompts, KL beta 0.05 against reward-model over-optimisation.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
  c = common.grpo("all_scenario_rl")
  variant = "model=smollm2" if arg.model == "smollm2" else ""
  c.parents.init = common.stage_parent("rejection_sft", arg.smoke, variant)
  c.parents.reward_model = common.stage_parent("reward_model", arg.smoke, variant)
  c.data.general_fraction = 0.5  # half the prompts general: at 0.25 and lr 5e-5, 40 steps barely
  #   moved the general replies (harmless 71% -> 79%); at 0.5 and 1e-4, 71% -> 93% by step 20
  c.rl.temperature = 0.7  # the paper's stage-4 rollout temperature
  c.rewards = ml_collections.ConfigDict({
      "reasoning": {"accuracy": 1.0, "format": 1.0, "language": 1.0},
      "general": {"helpfulness": 1.0, "harmlessness": 1.0,
                  "format": {"weight": 1.0, "require_answer": False}},
  })
  c.num_steps = 40
  c.eval.every = 20  # evals cost ~15 s each at this length
  c.rl.max_new_tokens = 72
  c.eval.max_new_tokens = 72
  c.eval.general_problems = 64
  c.optim.learning_rate = 1e-4
  # A KL penalty to the rejection-SFT policy: without it the policy games the reward model within
  # 40 steps (held-out obey 29.9% -> 20.1%, replies like 'cake cake' that the RM scores 3.3);
  # with 0.05, 29.9% -> 33.3% and harmless 78.6% -> 100% (README, "What does not reproduce").
  c.rl.loss.beta = 0.05
  if arg.model == "smollm2":
    common.smollm2_grpo(c)
    c.rl.num_prompts = 4  # 2 GSM8K + 2 general prompts from the shipped SFT example file
    c.data.general_fraction = 0.5
    c.data.general_dataset = "jsonl:" + common.example_file("general_sft.jsonl")
    c.eval.general_problems = 0  # no ground-truth judge outside the toy world
    c.rl.loss.beta = 0.0  # two steps leave nothing to over-optimise; skips the reference pass
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")
  if arg.smoke:
    common.smoke_grpo(c, arg.model)
    c.rl.num_prompts = 4  # 2 reasoning + 2 general
  return c
