"""The whole R1 pipeline at smoke size, run by its notebook as written; then rerun, subsets,
resume and stale parents on the same workdir."""
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
  assert "running" not in out


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
