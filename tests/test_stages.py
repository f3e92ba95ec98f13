"""Stages end to end on shrunken configs: the command line, resume, and eval == GRPO's step-0 eval."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import eval as eval_config
from configs import grpo_zero
from r1jax import checkpoints, main, runner
from r1jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, smoke_base):
  """The session's smoke toy base model, and a directory of this module's own."""
  base = smoke_base["base"]
  assert np.isfinite(smoke_base["result"]["loss"])
  assert runner.is_finished(base) and runner.read_lineage(base)["step"] == 3
  return {"root": tmp_path_factory.mktemp("stages"), "data": smoke_base["data"], "base": base}


def _grpo(dirs, workdir, **overrides):
  cfg = grpo_zero.get_config("smoke")
  cfg.parents.init.dir = dirs["base"]
  cfg.data.data_dir = dirs["data"]
  cfg.progress = False
  for k, v in overrides.items():
    cfg[k] = v
  return main.run_stage(cfg, workdir)


def test_grpo_two_steps_from_the_command_line(dirs):
  workdir = str(dirs["root"] / "cli")
  cmd = [sys.executable, "-m", "r1jax.main", "--config=configs/grpo_zero.py:smoke",
         f"--workdir={workdir}", f"--config.parents.init.dir={dirs['base']}",
         f"--config.data.data_dir={dirs['data']}", "--config.progress=False"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_metrics(workdir)
  train = [r for r in records if "loss" in r]
  assert [r["step"] for r in train] == [1, 2]
  for key in ("reward/accuracy", "reward/format", "accuracy", "format_rate", "kl", "clip_frac",
              "entropy", "grad_norm", "tokens_per_s", "time/sampling_s", "time/train_s",
              "response_length/mean", "response_length/max"):
    assert key in train[0], key
  evals = [r for r in records if "eval/pass@1" in r]
  assert [r["step"] for r in evals] == [0, 2]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["rl"]["group_size"] == 4
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert checkpoints.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 2


def test_resume_gives_the_same_params_as_one_run(dirs):
  one = str(dirs["root"] / "one_run")
  split = str(dirs["root"] / "split_run")
  _grpo(dirs, one, num_steps=3)
  _grpo(dirs, split, num_steps=1)
  _grpo(dirs, split, num_steps=3)  # resumes from step 1
  a = checkpoints.restore_params(os.path.join(one, "checkpoints"), step=3)
  b = checkpoints.restore_params(os.path.join(split, "checkpoints"), step=3)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-6), a, b)
  steps = [r["step"] for r in read_metrics(split) if "loss" in r]
  assert steps == [1, 2, 3]


def test_eval_stage_reproduces_grpo_step0_eval(dirs):
  """Same protocol, same code path: the eval stage on the base == GRPO's eval record at step 0."""
  workdir = str(dirs["root"] / "cli")
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    workdir = str(dirs["root"] / "one_run")
    _grpo(dirs, workdir, num_steps=1)
  step0 = [r for r in read_metrics(workdir) if "eval/pass@1" in r and r["step"] == 0][0]
  g = grpo_zero.get_config("smoke")
  cfg = eval_config.get_config()
  cfg.checkpoint, cfg.dataset, cfg.data_dir = dirs["base"], "toy", dirs["data"]
  cfg.toy = dict(g.data.toy)
  cfg.limit, cfg.k, cfg.max_new_tokens = g.eval.num_problems, g.eval.k, g.eval.max_new_tokens
  cfg.seed = g.eval.seed
  summary = main.run_stage(cfg, str(dirs["root"] / "eval"))
  assert summary["pass@1"] == pytest.approx(step0["eval/pass@1"], abs=1e-9)
  assert summary["mean_response_length"] == pytest.approx(step0["eval/mean_response_length"])


def test_unknown_stage_is_one_clear_line():
  proc = subprocess.run(
      [sys.executable, "-m", "r1jax.main", "--config=configs/grpo_zero.py:smoke",
       "--config.stage=warmup", "--workdir=/tmp/r1jax_unused"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("r1jax: error: unknown stage 'warmup'; known stages: ")
  assert {"eval", "grpo", "sft"} <= set(last.split(": ")[-1].split(", "))


def test_missing_required_field(tmp_path):
  cfg = eval_config.get_config()
  with pytest.raises(main.ConfigError, match="checkpoint"):
    main.run_stage(cfg, str(tmp_path))
