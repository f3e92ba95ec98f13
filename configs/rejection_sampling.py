"""R1 stage 3a, rejection sampling: the stage-2 policy writes the SFT data set of stage 3b.

  python -m r1jax.main --config=configs/rejection_sampling.py --workdir=workdirs/rejection_sampling

N samples per training prompt from the reasoning-RL checkpoint (workdirs/reasoning_rl, built
first when missing), graded; correct ones pass the readability filters (mixed-language CoT, long
paragraphs, code blocks, R1's reasoning + summary format), duplicates go, and at most K per
prompt are kept; general (non-reasoning) SFT data is added. Writes sft.jsonl + its TFDS set (what
configs/rejection_sft.py trains on), samples.jsonl (every sample and why it was dropped) and
stats.json. Variants after ':' (comma separated):
  smoke            a few short samples on the smoke chain (the tests); no readable-format filter,
                   since a smoke model is untrained (with model=smollm2: SmolLM2's settings)
  policy=final     sample the final all-scenario RL model instead (configs/distill.py:data=final)
  model=smollm2    SmolLM2-135M-Instruct on GSM8K prompts, math-verify, and the general samples
                   of r1jax/data/files/examples/general_sft.jsonl
Paper vs toy: the stage-2 checkpoint, ~600k reasoning samples kept + ~200k non-reasoning (3:1)
vs <= 2 x 2,000 reasoning + 10 x 118 toy general ones; filters drop mixed languages, long
paragraphs and code blocks in both. The paper gives no sampling temperature or N for this stage.
"""
import ml_collections

from configs import common


def rs_block() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "num_prompts": 2000,  # the first N train prompts; 0 = all
      "num_samples": 4,  # N samples per prompt
      "max_per_prompt": 2,  # K: kept samples per prompt after filtering; 0 = no cap
      "temperature": 0.7,
      "top_p": 0.95,
      "top_k": 0,
      "max_new_tokens": 72,
      "batch_size": 64,  # prompts per sampler call (x N rows)
      "sampler": "static",  # 'static' or 'continuous' (r1jax/samplers.py): the same samples
      #   at another speed; not measured on this stage's lengths (experiments/
      #   continuous_defaults.py measures evals and rollouts)
      "num_slots": 0,  # continuous: decode slots; 0 = batch_size x N
      "extract": ("answer_tag",),  # answer extractors for grading, tried in order
      "max_paragraph_words": 200,  # longer paragraphs are rejected; 0 = no limit
      "require_readable": True,  # reject outputs without reasoning + summary + answer
      "general_source": "toy:general_sft",  # toy:<kind> | jsonl:sft:<path> | '' (none)
      "general_repeat": 1,  # copies of the general data (toy: 1,200 records; ~3:1 reasoning)
  })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False, policy="stage2", model="toy")
  c = ml_collections.ConfigDict()
  c.stage = "rejection_sampling"
  c.name = "rejection_sampling"
  c.seed = 0
  c.progress = True
  c.mesh = common.mesh()
  c.axis_rules = None  # None: r1jax.sharding.DEFAULT_RULES
  c.grader = "exact"  # 'exact' (toy world) or 'math' (math-verify)
  variant = "model=smollm2" if arg.model == "smollm2" else ""
  c.parents = ml_collections.ConfigDict()
  if arg.policy == "stage2":
    c.parents.policy = common.stage_parent("reasoning_rl", arg.smoke, variant)
  elif arg.policy == "final":
    c.parents.policy = common.stage_parent("all_scenario_rl", arg.smoke, variant)
  else:
    raise ValueError(f"unknown policy {arg.policy!r}: 'stage2' (reasoning RL) or 'final'")
  c.data = common.data()  # prompts: the train split of data.dataset
  c.rs = rs_block()
  if arg.model == "smollm2":
    if arg.policy == "stage2":  # SmolLM2 as is: its RL runs are a few steps
      c.parents.policy = common.parent(common.smollm2_path())
    c.data.dataset = "gsm8k"  # the copy shipped in r1jax/data/files
    c.data.template = "r1_zero"
    c.grader = "math"
    c.rs.update({"num_prompts": 4, "num_samples": 2, "max_new_tokens": 128, "batch_size": 4,
                 "extract": ("answer_tag", "boxed", "last_number"), "require_readable": False,
                 "general_source": "jsonl:sft:" + common.example_file("general_sft.jsonl"),
                 "general_repeat": 1})
  elif arg.model != "toy":
    raise ValueError(f"unknown model {arg.model!r}: 'toy' or 'smollm2'")
  if arg.smoke and arg.model == "toy":
    c.data.toy = ml_collections.ConfigDict(common.SMOKE_WORLD)
    c.rs.update({"num_prompts": 8, "num_samples": 4, "max_new_tokens": 16, "batch_size": 8,
                 "require_readable": False, "general_repeat": 1})
  return c
