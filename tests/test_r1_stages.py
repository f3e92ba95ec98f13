"""Every R1 stage's `:smoke` on a fresh directory, through `run_stage`: each builds its missing
parents with their own configs, down to the toy base, as on a fresh clone."""
import json
import os

import numpy as np
import pytest

from r1jax import config_files, runner
from r1jax.metrics import read_metrics

STAGES = ("toy_base", "cold_start_sft", "reasoning_rl", "rejection_sampling", "rejection_sft",
          "reward_model", "all_scenario_rl")


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
  """Runs the configs in a temporary working directory, so workdirs/smoke/ lands there."""
  root = tmp_path_factory.mktemp("r1")
  old = os.getcwd()
  os.chdir(root)
  yield root
  os.chdir(old)


def _run(spec: str, root):
  cfg = config_files.load(spec)
  cfg.progress = False
  cfg.data.data_dir = str(root / "data")
  return runner.run_stage(cfg, str(root / "workdirs" / "smoke" / cfg.name))


def test_all_scenario_rl_smoke_builds_the_whole_chain(smoke_root):
  result = _run("configs/all_scenario_rl.py:smoke", smoke_root)
  assert result["step"] == 2
  for stage in STAGES:
    lineage = runner.read_lineage(str(smoke_root / "workdirs" / "smoke" / stage))
    assert lineage and lineage["finished"], stage
  lin = runner.read_lineage(str(smoke_root / "workdirs" / "smoke" / "all_scenario_rl"))
  assert set(lin["parents"]) == {"init", "reward_model"}
  assert lin["parents"]["init"]["dir"].endswith("rejection_sft")
  # Rejection SFT starts from the base, not from the RL model; its data from stage 3a.
  rs_sft = runner.read_lineage(str(smoke_root / "workdirs" / "smoke" / "rejection_sft"))
  assert rs_sft["parents"]["init"]["dir"].endswith(os.path.join("smoke", "toy_base"))
  assert rs_sft["parents"]["data"]["dir"].endswith("rejection_sampling")
  stats = json.loads((smoke_root / "workdirs" / "smoke" / "rejection_sampling" / "stats.json")
                     .read_text())
  assert stats["total"] == stats["kept_reasoning"] + stats["general"] > 0
  records = read_metrics(str(smoke_root / "workdirs" / "smoke" / "all_scenario_rl"))
  train = [r for r in records if "loss" in r]
  # General prompts were routed to the reward model, reasoning prompts to the rules.
  for key in ("reward/helpfulness", "reward/harmlessness", "reward/accuracy", "lang_mix_rate"):
    assert np.isfinite(train[0][key]), key
  evals = [r for r in records if "eval/pass@1" in r]
  for key in ("eval/general_obey_rate", "eval/harmless_rate", "eval/lang_mix_rate",
              "eval/readable_rate"):
    assert 0.0 <= evals[-1][key] <= 1.0, key
  reasoning = read_metrics(str(smoke_root / "workdirs" / "smoke" / "reasoning_rl"))
  assert "reward/language" in [r for r in reasoning if "loss" in r][0]


def test_distill_and_its_control(smoke_root):
  """The student distils on the stage-3a data; its R1-Zero control is one variant away."""
  result = _run("configs/distill.py:smoke", smoke_root)
  assert result["step"] == 3 and np.isfinite(result["loss"])
  lin = runner.read_lineage(str(smoke_root / "workdirs" / "smoke" / "distill"))
  assert lin["parents"]["init"]["dir"].endswith("toy_base_student")
  control = config_files.load("configs/distill.py:smoke,control")
  assert control.stage == "grpo"
  assert control.parents.init.dir == "workdirs/smoke/toy_base_student"
  result = _run("configs/distill.py:smoke,control", smoke_root)
  assert result["step"] == 2
  assert runner.read_lineage(str(smoke_root / "workdirs" / "smoke" / "grpo_zero_student"))
  wrong = config_files.load("configs/distill.py:smoke,control")
  with pytest.raises(runner.ConfigError, match="holds a 'sft' run; refusing to run stage 'grpo'"):
    runner.run_stage(wrong, str(smoke_root / "workdirs" / "smoke" / "distill"))
