"""The whole DeepSeek-R1 recipe on the toy world, one command: every stage, then one evaluation
of every model with the paper's protocol, then a report.

  python -m r1jax.main --config=configs/r1_pipeline.py --workdir=workdirs/r1

Stages, in order, each in WORKDIR/<stage> (the config file that defines it in brackets):
  toy_base (toy_base.py), grpo_zero (grpo_zero.py: R1-Zero, the comparison), cold_start_sft,
  reasoning_rl, reasoning_rl_no_lang (reasoning_rl.py:no_lang, the language-reward ablation),
  rejection_sampling, rejection_sft, reward_model, all_scenario_rl, toy_base_student
  (toy_base.py:student), distill, grpo_zero_student (distill.py:control, the control)
A rerun skips finished stages and resumes an interrupted one. --config.stages=a,b runs a subset
(a stage whose parent is missing stops with one line). A stage built on a parent that has
changed since is stale: the run stops and names it unless --config.rebuild=NAME (or all).
Outputs: WORKDIR/report.json (fixed keys), report.md (the table and the findings beside their
targets), report.png (metrics by stage and the RL curves).
Variants after ':':
  smoke     every stage at smoke size (the tests and notebooks/r1_pipeline_toy.ipynb)
Per-stage overrides, nested (in Python, or from a notebook):
  config.overrides = {"reasoning_rl": {"num_steps": 80, "rl": {"group_size": 16}}}
"""
import ml_collections

from configs import common

STAGES = (
    ("toy_base", "configs/toy_base.py"),
    ("grpo_zero", "configs/grpo_zero.py"),
    ("cold_start_sft", "configs/cold_start_sft.py"),
    ("reasoning_rl", "configs/reasoning_rl.py"),
    ("reasoning_rl_no_lang", "configs/reasoning_rl.py:no_lang"),
    ("rejection_sampling", "configs/rejection_sampling.py"),
    ("rejection_sft", "configs/rejection_sft.py"),
    ("reward_model", "configs/reward_model.py"),
    ("all_scenario_rl", "configs/all_scenario_rl.py"),
    ("toy_base_student", "configs/toy_base.py:student"),
    ("distill", "configs/distill.py"),
    ("grpo_zero_student", "configs/distill.py:control"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.progress = True
  c.mesh = common.mesh()
  c.stages = ""  # comma-separated subset ('' = all, in the order above)
  c.rebuild = ""  # stale stages to delete and build again: names, or 'all'
  smoke = (lambda spec: spec + (",smoke" if ":" in spec else ":smoke")) if arg.smoke else str
  c.stage_order = tuple(name for name, _ in STAGES)  # ConfigDict keys do not keep an order
  c.stage_specs = ml_collections.ConfigDict({name: smoke(spec) for name, spec in STAGES})
  c.overrides = ml_collections.ConfigDict()  # stage -> {dotted field: value}
  c.data = ml_collections.ConfigDict({"data_dir": "",  # TFDS data ('' -> $R1JAX_DATA_DIR)
                                      "toy": common.SMOKE_WORLD if arg.smoke else {}})
  # One protocol for every stage's model: the paper's (k samples, T 0.6, top-p 0.95).
  c.eval = common.eval_block(num_problems=256, max_new_tokens=72)
  c.eval.general_problems = 36  # every held-out toy instruction
  if arg.smoke:
    common.smoke_eval(c)
  return c
