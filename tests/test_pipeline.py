"""The whole R1 pipeline at smoke size, run by its notebook as written: every stage's `:smoke`
config through `run_stage`, on its parents. Then rerun, subsets, resume and stale parents on the
same workdir. (That a single stage's `:smoke` builds missing parents on a fresh clone is
tests/test_sft_stage.py's.)"""
import json
import os

import matplotlib
import pytest

from r1jax import config_files, report, runner
from r1jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  """notebooks/r1_pipeline_toy.ipynb in its SMOKE setting (the pipeline's :smoke variant)."""
  tmp = tmp_path_factory.mktemp("pipeline")
  with open(os.path.join(ROOT, "notebooks", "r1_pipeline_toy.ipynb"), encoding="utf-8") as f:
    cells = json.load(f)["cells"]
  code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
  workdir = str(tmp / "r1")
  for old, new in (("SMOKE = False", "SMOKE = True"),
                   ('WORKDIR = "workdirs/r1"', f"WORKDIR = {workdir!r}")):
    assert code.count(old) == 1, old
    code = code.replace(old, new)
  old_cwd, old_env = os.getcwd(), os.environ.get("R1JAX_DATA_DIR")
  os.environ["R1JAX_DATA_DIR"] = str(tmp / "data")
  os.chdir(os.path.join(ROOT, "notebooks"))  # as Jupyter starts it
  matplotlib.use("Agg")
  scope = {"__name__": "__notebook__"}
  try:
    exec(compile(code, "r1_pipeline_toy.ipynb", "exec"), scope)  # noqa: S102
  finally:
    os.chdir(old_cwd)
  yield {"workdir": workdir, "scope": scope, "data": str(tmp / "data")}
  if old_env is None:
    os.environ.pop("R1JAX_DATA_DIR", None)
  else:
    os.environ["R1JAX_DATA_DIR"] = old_env


def _config(pipeline, **fields):
  cfg = config_files.load("configs/r1_pipeline.py:smoke")
  cfg.progress = False
  cfg.data.data_dir = pipeline["data"]  # where the notebook's data went ($R1JAX_DATA_DIR)
  for k, v in fields.items():
    cfg[k] = v
  return cfg


def test_report_has_the_fixed_keys(pipeline):
  rep = pipeline["scope"]["report"]
  assert set(rep) == {"stages", "findings", "wall_s"}
  assert set(rep["findings"]) == set(report.FINDING_KEYS)
  names = set(config_files.load("configs/r1_pipeline.py:smoke").stage_order)
  assert set(rep["stages"]) == names
  for name, row in rep["stages"].items():
    assert set(row) == set(report.STAGE_KEYS), name
    assert row["wall_s"] > 0
    if name not in report.NO_POLICY:
      for key in ("pass@1", "cons@k", "lang_mix_rate", "readable_rate", "general_obey_rate"):
        assert 0.0 <= row[key] <= 1.0, (name, key)
  assert rep["findings"]["distill_flops"] > 0 and rep["findings"]["student_zero_rl_flops"] > 0
  assert 0.0 <= rep["findings"]["rm_pair_accuracy"] <= 1.0
  for out in ("report.md", "report.png"):
    assert os.path.getsize(os.path.join(pipeline["workdir"], out)) > 0
  assert "| grpo_zero_student |" in open(os.path.join(pipeline["workdir"], "report.md")).read()


def test_rerun_skips_every_stage(pipeline, capsys):
  runner.run_stage(_config(pipeline), pipeline["workdir"])
  out = capsys.readouterr().out
  assert out.count("is finished: skipped") == 12
  assert "running" not in out and "evaluating" in out  # evals come from their caches
  for name in ("toy_base", "distill"):
    assert os.path.isfile(os.path.join(pipeline["workdir"], name, "pipeline_eval.json"))


def test_subset_with_a_missing_parent_is_one_line(pipeline, tmp_path):
  with pytest.raises(ConfigError) as e:
    runner.run_stage(_config(pipeline, stages="reasoning_rl"), str(tmp_path / "fresh"))
  assert "stage 'reasoning_rl' needs its parent 'init'" in str(e.value)
  assert "add 'cold_start_sft' to --config.stages" in str(e.value) and "\n" not in str(e.value)


def test_an_interrupted_stage_resumes(pipeline, capsys):
  """A stage without lineage.json (killed before it finished) is run again and resumes."""
  stage = os.path.join(pipeline["workdir"], "grpo_zero_student")
  os.remove(os.path.join(stage, "lineage.json"))
  runner.run_stage(_config(pipeline, stages="toy_base_student,grpo_zero_student"),
                   pipeline["workdir"])
  out = capsys.readouterr().out
  assert f"resuming {stage} from step 2" in out
  assert runner.is_finished(stage)


def test_a_changed_parent_makes_its_child_stale(pipeline):
  changed = {"cold_start_sft": {"train": {"num_steps": 4}}}
  cfg = _config(pipeline, stages="cold_start_sft,reasoning_rl", overrides=changed)
  with pytest.raises(ConfigError, match=r"stage 'cold_start_sft' .* is stale: its config changed; "
                                        r"rerun with --config.rebuild=cold_start_sft"):
    runner.run_stage(cfg, pipeline["workdir"])
  cfg.rebuild = "cold_start_sft"
  with pytest.raises(ConfigError, match=r"stage 'reasoning_rl' .* is stale: its parent 'init' "
                                        r".*cold_start_sft.* changed"):
    runner.run_stage(cfg, pipeline["workdir"])
  assert runner.read_lineage(os.path.join(pipeline["workdir"], "cold_start_sft"))["step"] == 4


def test_each_stage_ran_through_run_stage_on_its_parents(pipeline):
  """Every stage's :smoke config ran (run_stage wrote its lineage) on the right parents."""
  import numpy as np

  from r1jax.metrics import read_metrics
  wd = pipeline["workdir"]
  lineage = lambda name: runner.read_lineage(os.path.join(wd, name))  # noqa: E731
  for name in config_files.load("configs/r1_pipeline.py:smoke").stage_order:
    assert lineage(name)["finished"], name
  stage4 = lineage("all_scenario_rl")
  assert set(stage4["parents"]) == {"init", "reward_model"}
  assert stage4["parents"]["init"]["dir"].endswith("rejection_sft")
  # Rejection SFT starts from the base, not from the RL model; its data comes from stage 3a.
  rs_sft = lineage("rejection_sft")
  assert rs_sft["parents"]["init"]["dir"].endswith("toy_base")
  assert rs_sft["parents"]["data"]["dir"].endswith("rejection_sampling")
  assert rs_sft["data"]["parent:data"]["records"] == lineage("rejection_sampling")["result"]["total"]
  assert lineage("distill")["parents"]["init"]["dir"].endswith("toy_base_student")
  assert lineage("grpo_zero_student")["parents"]["init"]["dir"].endswith("toy_base_student")
  assert lineage("grpo_zero_student")["stage"] == "grpo"
  stats = json.load(open(os.path.join(wd, "rejection_sampling", "stats.json")))
  assert stats["total"] == stats["kept_reasoning"] + stats["general"] > 0
  train = [r for r in read_metrics(os.path.join(wd, "all_scenario_rl")) if "loss" in r]
  # General prompts were routed to the reward model, reasoning prompts to the rules.
  for key in ("reward/helpfulness", "reward/harmlessness", "reward/accuracy", "lang_mix_rate"):
    assert np.isfinite(train[0][key]), key
  evals = [r for r in read_metrics(os.path.join(wd, "all_scenario_rl")) if "eval/pass@1" in r]
  for key in ("eval/general_obey_rate", "eval/harmless_rate", "eval/lang_mix_rate"):
    assert 0.0 <= evals[-1][key] <= 1.0, key
  stage2 = [r for r in read_metrics(os.path.join(wd, "reasoning_rl")) if "loss" in r]
  ablation = [r for r in read_metrics(os.path.join(wd, "reasoning_rl_no_lang")) if "loss" in r]
  assert "reward/language" in stage2[0] and "reward/language" not in ablation[0]


def test_a_workdir_refuses_another_stage(pipeline):
  control = config_files.load("configs/distill.py:smoke,control")
  with pytest.raises(ConfigError, match="holds a 'sft' run; refusing to run stage 'grpo'"):
    runner.run_stage(control, os.path.join(pipeline["workdir"], "distill"))


@pytest.mark.parametrize("spec,expected", [
    ("configs/toy_base.py", "workdirs/toy_base"),
    ("configs/toy_base.py:smoke", "workdirs/smoke/toy_base"),
    ("configs/toy_base.py:world=reflect", "workdirs/toy_base_world_reflect"),
    ("configs/toy_base.py:smoke,world=reflect", "workdirs/smoke/toy_base_world_reflect"),
    ("configs/grpo_zero.py:model=smollm2", "workdirs/grpo_zero_model_smollm2")])
def test_default_workdir_is_where_children_look(spec, expected):
  """`python -m r1jax.main --config=SPEC` without --workdir runs where a stage naming SPEC as its
  parent looks for it (configs/common.stage_parent), so building a parent by hand and letting a
  child build it agree."""
  from configs import common
  assert config_files.default_workdir(spec) == expected
  stem, _, arg = spec.removeprefix("configs/").partition(":")
  variant = ",".join(a for a in arg.split(",") if a and a != "smoke")
  assert common.stage_parent(stem[:-3], "smoke" in arg, variant).dir == expected
