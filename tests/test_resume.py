"""Kill -9 anywhere, resume exactly: real `python -m r1jax.main` runs, crashed by `r1jax.faults`.

Each chain runs the same command until it finishes, crashing it at a different point each time
(SIGKILL during sampling, the update, an asynchronous checkpoint write and the eval; SIGTERM, a
preemption notice, which must save and exit with status 0). The final checkpoint (params,
optimizer state, step, data-iterator state) must equal an uninterrupted run's bit for bit, and
metrics.jsonl must hold the same lines: every step once, the same values except wall times.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("time", "tokens_per_s", "step_s")  # wall-clock figures differ between runs


_CACHE = {}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent JAX compilation cache for every run here: each rerun loads the programs the
  first run compiled (about 3x faster on 2 cores), and the same executables run in both runs."""
  _CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))


def _cli(config: str, workdir: str, overrides: list[str], faults: str = ""):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "R1JAX_FAULTS": faults,
         "JAX_COMPILATION_CACHE_DIR": _CACHE["dir"],
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  cmd = [sys.executable, "-m", "r1jax.main", f"--config={config}", f"--workdir={workdir}",
         "--config.progress=False", *overrides]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _run_chain(config, workdir, overrides, crashes):
  """Reruns the command once per crash (each must die as planned), then once to the end."""
  for faults, expected in crashes:
    out = _cli(config, workdir, overrides, faults)
    assert out.returncode == expected, (faults, out.returncode, out.stderr[-3000:])
    if expected == 0:  # SIGTERM: a clean exit with one line that says how to go on
      assert "stopped at step" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
  out = _cli(config, workdir, overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _metric_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def _assert_same_run(a, b):
  (state_a, data_a, _), (state_b, data_b, _) = (
      checkpoints.Checkpointer(os.path.join(d, "checkpoints")).restore() for d in (a, b))
  leaves_a = jax.tree_util.tree_leaves_with_path(state_a)
  leaves_b = jax.tree_util.tree_leaves_with_path(state_b)
  assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
  assert data_a == data_b
  lines_a, lines_b = _metric_lines(a), _metric_lines(b)
  assert [r["step"] for r in lines_a] == [r["step"] for r in lines_b]
  assert lines_a == lines_b
  committed = os.listdir(os.path.join(b, "checkpoints"))
  assert all(name.isdigit() for name in committed), committed  # no half-written step is left


def _overrides(smoke_base, tmp_path, name, extra):
  """Each run gets its own copy of the toy data: the crashed run never shares the plain one's."""
  data = tmp_path / f"data_{name}"
  shutil.copytree(smoke_base["data"], data)
  return [f"--config.parents.init.dir={smoke_base['base']}", f"--config.data.data_dir={data}",
          *extra]


@pytest.mark.slow
def test_grpo_resumes_exactly_after_kills_and_sigterm(smoke_base, tmp_path):
  extra = ["--config.num_steps=4", "--config.eval.every=2", "--config.checkpoint_every=1",
           "--config.rl.loss.beta=0.04"]
  config = "configs/grpo_zero.py:smoke"
  plain, crashed = str(tmp_path / "plain"), str(tmp_path / "crashed")
  assert _cli(config, plain, _overrides(smoke_base, tmp_path, "plain", extra)).returncode == 0
  kill = -signal.SIGKILL
  _run_chain(config, crashed, _overrides(smoke_base, tmp_path, "crashed", extra), [
      ("kill@sample:1", kill),
      ("term@update:2", 0),  # preempted after step 2: saves step 2 and exits cleanly
      ("kill@checkpoint:3", kill),  # mid-write of step 3's checkpoint
      ("kill@eval:4", kill),
  ])
  _assert_same_run(plain, crashed)
  with open(os.path.join(crashed, "lineage.json")) as f:
    assert json.load(f)["finished"]


@pytest.mark.slow
def test_sft_resumes_exactly_after_kills(smoke_base, tmp_path):
  extra = ["--config.checkpoint_every=1"]
  config = "configs/cold_start_sft.py:smoke"
  plain, crashed = str(tmp_path / "plain"), str(tmp_path / "crashed")
  assert _cli(config, plain, _overrides(smoke_base, tmp_path, "plain", extra)).returncode == 0
  kill = -signal.SIGKILL
  _run_chain(config, crashed, _overrides(smoke_base, tmp_path, "crashed", extra), [
      ("kill@update:2", kill), ("kill@checkpoint:3", kill), ("kill@eval:3", kill)])
  _assert_same_run(plain, crashed)
