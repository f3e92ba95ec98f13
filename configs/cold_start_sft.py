"""R1 stage 1, cold start: SFT of the base model on long, readable chain-of-thought samples.

  python -m r1jax.main --config=configs/cold_start_sft.py --workdir=workdirs/cold_start_sft

The samples are in R1's readable format (r1jax/response.py): `<think>reasoning</think>summary
<answer>answer</answer>`; the loss covers the completion only. The toy world writes them as
English step-by-step CoT with a check pass and a one-line summary; the base model
(workdirs/toy_base) is built first when missing. Variants after ':':
  smoke            a few steps on a smoke base (the tests)
  model=smollm2    SmolLM2-135M-Instruct on r1jax/data/files/examples/cold_start.jsonl
                   (format: {"problem", "reasoning", "summary", "answer"} per line)
Paper vs toy: DeepSeek-V3-Base on thousands of curated long-CoT samples vs the 1.5M-param toy
base on 2,000 generated ones for 3 epochs (lr 1e-3 cosine).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
  c = common.sft("cold_start_sft", source="toy:cold_start")
  c.parents.init = common.stage_parent("toy_base", arg.smoke)
  c.train.num_epochs = 3.0
  c.eval.max_new_tokens = 72  # cold-start CoT runs to ~55 tokens on the toy tokenizer
  if arg.model == "smollm2":
    common.smollm2_sft(c, "jsonl:cold_start:" + common.example_file("cold_start.jsonl"))
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")
  if arg.smoke:
    common.smoke_sft(c, arg.model)
  return c
