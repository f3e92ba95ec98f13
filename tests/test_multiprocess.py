"""Two processes on one machine, as on two TPU hosts: `jax.distributed` on localhost, 4 CPU
devices each, collectives through gloo, the real `python -m r1jax.main` entry point.

Each run is compared with one process holding all 8 devices: same rollouts (sampling keys follow
the global row, not the process), the same metrics, and params and optimizer state equal within
float32 rounding (gradients are summed across processes by gloo, in another order than inside
one process). A checkpoint written by two processes resumes on one, and one written by one
process resumes on two.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("time", "tokens_per_s", "step_s")  # wall-clock figures differ between runs
# Float32 rounding of a gradient summed in another order, after a few Adam steps: the update of
# a weight is lr * m / sqrt(v) ~ lr, so a relative gradient change of ~1e-6 moves it ~1e-6 * lr.
RTOL, ATOL = 1e-5, 1e-6
_CACHE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache: reruns with the same process count load their programs."""
  _CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(config: str, workdir: str, overrides: list[str], processes: int) -> None:
  """Runs the command on `processes` processes sharing 8 CPU devices; all must exit 0."""
  port = _free_port()
  cmd = [sys.executable, "-m", "r1jax.main", f"--config={config}", f"--workdir={workdir}",
         "--config.progress=False", *overrides]
  procs = []
  for i in range(processes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={8 // processes}",
           "JAX_COMPILATION_CACHE_DIR": _CACHE["dir"],
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if processes > 1:
      env.update({"JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                  "R1JAX_NUM_PROCESSES": str(processes), "R1JAX_PROCESS_ID": str(i)})
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i} of {processes}: exit {p.returncode}\n{out[-4000:]}"


def _metric_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def _assert_same_training(a: str, b: str, exact: tuple[str, ...]) -> None:
  """Final checkpoints equal within float32 rounding; metrics equal (the keys in `exact`
  bitwise: they come from sampling, which no cross-process sum touches)."""
  (state_a, data_a, _), (state_b, data_b, _) = (
      checkpoints.Checkpointer(os.path.join(d, "checkpoints")).restore() for d in (a, b))
  leaves_a = jax.tree_util.tree_leaves_with_path(state_a)
  leaves_b = jax.tree_util.tree_leaves_with_path(state_b)
  assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=RTOL, atol=ATOL,
                               err_msg=jax.tree_util.keystr(path))
  assert data_a == data_b
  lines_a, lines_b = _metric_lines(a), _metric_lines(b)
  assert [r["step"] for r in lines_a] == [r["step"] for r in lines_b]
  for ra, rb in zip(lines_a, lines_b):
    assert set(ra) == set(rb)
    for k in ra:
      if k in exact or k.startswith(exact):
        assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
      elif isinstance(ra[k], float):
        np.testing.assert_allclose(rb[k], ra[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _resume_copy(src: str, dest: str) -> None:
  """`src` as it was one checkpoint before its end: the last step and lineage removed."""
  shutil.copytree(src, dest)
  ckpt = os.path.join(dest, "checkpoints")
  last = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  shutil.rmtree(os.path.join(ckpt, str(last)))
  os.remove(os.path.join(dest, "lineage.json"))


@pytest.mark.slow
def test_grpo_on_two_processes_matches_one(smoke_base, tmp_path):
  overrides = [f"--config.parents.init.dir={smoke_base['base']}",
               f"--config.data.data_dir={smoke_base['data']}", "--config.num_steps=3",
               "--config.checkpoint_every=1", "--config.eval.every=3",
               "--config.rl.loss.beta=0.04"]
  config = "configs/grpo_zero.py:smoke"
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _launch(config, one, overrides, processes=1)
  _launch(config, two, overrides, processes=2)
  sampled = ("reward", "response_length", "accuracy", "format_rate", "truncated_fraction",
             "groups_with_spread", "lang_mix_rate", "eval/")
  _assert_same_training(one, two, sampled)
  # Written by two processes, resumed by one.
  resumed = str(tmp_path / "two_then_one")
  _resume_copy(two, resumed)
  _launch(config, resumed, overrides, processes=1)
  _assert_same_training(one, resumed, sampled)


@pytest.mark.slow
def test_sft_on_two_processes_matches_one(smoke_base, tmp_path):
  # Two document shards in both runs: the batches then do not depend on the process count.
  overrides = [f"--config.parents.init.dir={smoke_base['base']}",
               f"--config.data.data_dir={smoke_base['data']}", "--config.checkpoint_every=1",
               "--config.train.data_shards=2"]
  config = "configs/cold_start_sft.py:smoke"
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _launch(config, one, overrides, processes=1)
  _launch(config, two, overrides, processes=2)
  _assert_same_training(one, two, ("eval/",))
  # Written by one process, resumed by two.
  resumed = str(tmp_path / "one_then_two")
  _resume_copy(one, resumed)
  _launch(config, resumed, overrides, processes=2)
  _assert_same_training(one, resumed, ("eval/",))
