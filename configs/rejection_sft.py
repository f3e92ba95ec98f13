"""R1 stage 3b: SFT of the *base* model on the rejection-sampling data, for 2 epochs.

  python -m r1jax.main --config=configs/rejection_sft.py --workdir=workdirs/rejection_sft

The paper fine-tunes DeepSeek-V3-Base here, not the RL checkpoint: the stage-2 model only
produced the data. The data set is what configs/rejection_sampling.py wrote (correct, readable
reasoning samples plus general SFT data; built first when missing), read through grain from its
TFDS array_record files. Variants after ':':
  smoke            a few steps on the smoke chain (the tests)
  model=smollm2    SmolLM2-135M-Instruct on the SmolLM2 rejection-sampling run's data
Paper vs toy: ~800k samples (600k reasoning + 200k general), 2 epochs vs a few thousand samples,
2 epochs (lr 1e-3 cosine).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, model="toy")
  c = common.sft("rejection_sft", source="parent:data")
  c.parents.init = common.stage_parent("toy_base", arg.smoke)  # the base, not the RL model
  variant = "model=smollm2" if arg.model == "smollm2" else ""
  c.parents.data = common.stage_parent("rejection_sampling", arg.smoke, variant)
  c.train.num_epochs = 2.0
  c.eval.max_new_tokens = 72
  if arg.model == "smollm2":
    common.smollm2_sft(c, "parent:data")
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")
  if arg.smoke:
    common.smoke_sft(c, arg.model)
  return c
