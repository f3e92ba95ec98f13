"""A NaN or inf in the loss or the gradients: the update leaves the state alone, then the run
stops naming the step (nan_policy='stop', keeping the last good checkpoint) or goes on and counts
the skipped step (nan_policy='skip')."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import checkpoints, sharding, training
from r1jax.errors import ConfigError, NonFiniteError


def _update():
  """A two-parameter 'model' with Adam, on one device: loss = sum((w * x)^2)."""
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  tx = optax.adam(0.1)
  params = {"w": jnp.array([1.0, -2.0])}
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  shards = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                        state)

  def loss_fn(p, batch):
    return jnp.sum((p["w"] * batch["x"]) ** 2), {}

  return training.jit_update(loss_fn, tx, mesh, sharding.rules_from_config(None), shards), state


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_step_leaves_state_unchanged(bad):
  update, state = _update()
  state, metrics = update(state, {"x": jnp.array([1.0, 1.0])})
  assert float(metrics["nonfinite"]) == 0.0 and int(state["step"]) == 1
  before = jax.device_get(state)
  state, metrics = update(state, {"x": jnp.array([bad, 1.0])})
  assert float(metrics["nonfinite"]) == 1.0
  after = jax.device_get(state)
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(x, y)  # params, both Adam moments, count and step
  state, metrics = update(state, {"x": jnp.array([1.0, 1.0])})  # and training goes on
  assert float(metrics["nonfinite"]) == 0.0 and int(state["step"]) == 2


def test_check_finite_policies():
  ok = {"loss": 1.0, "grad_norm": 2.0, "nonfinite": 0.0}
  bad = {"loss": float("nan"), "grad_norm": float("inf"), "nonfinite": 1.0}
  assert training.check_finite(ok, 7, "stop", 5) is False
  assert training.check_finite(bad, 7, "skip", 5) is True
  with pytest.raises(NonFiniteError, match=r"step 7: non-finite loss = nan, grad_norm = inf; .*"
                                           r"last good checkpoint \(step 5\) is kept"):
    training.check_finite(bad, 7, "stop", 5)
  with pytest.raises(ConfigError, match="nan_policy"):
    training.check_finite(ok, 7, "ignore", 5)


def _grpo(smoke_base, workdir, policy):
  from configs import grpo_zero
  from r1jax import runner
  cfg = grpo_zero.get_config("smoke")
  cfg.parents.init.dir = smoke_base["base"]
  cfg.data.data_dir = smoke_base["data"]
  cfg.progress = False
  cfg.num_steps = 3
  cfg.eval.every = 0
  cfg.nan_policy = policy
  cfg.keep_checkpoints = 3
  return runner.run_stage(cfg, workdir)


@pytest.mark.slow
def test_grpo_nan_policies(smoke_base, tmp_path, monkeypatch):
  monkeypatch.setenv("R1JAX_FAULTS", "nan@update:2")  # step 2's rewards become NaN
  stop = str(tmp_path / "stop")
  with pytest.raises(NonFiniteError, match=r"step 2: non-finite loss = nan.*step 1\) is kept"):
    _grpo(smoke_base, stop, "stop")
  assert checkpoints.Checkpointer(os.path.join(stop, "checkpoints")).all_steps() == [1]
  with open(os.path.join(stop, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [1]
  assert not os.path.exists(os.path.join(stop, "lineage.json"))

  skip = str(tmp_path / "skip")
  result = _grpo(smoke_base, skip, "skip")
  assert result["nonfinite_skipped"] == 1.0
  with open(os.path.join(skip, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["nonfinite_skipped"] for r in rows] == [0.0, 1.0, 0.0]
  assert rows[1]["loss"] is None  # written as null: not finite
  ckpt = checkpoints.Checkpointer(os.path.join(skip, "checkpoints"))
  assert ckpt.all_steps() == [1, 2, 3]
  s1, s2, s3 = (ckpt.restore(step)[0] for step in (1, 2, 3))
  assert [int(s["step"]) for s in (s1, s2, s3)] == [1, 1, 2]  # step 2's update was not applied
  same = [np.array_equal(x, y) for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2))]
  moved = [np.array_equal(x, y) for x, y in zip(jax.tree.leaves(s2), jax.tree.leaves(s3))]
  assert all(same) and not all(moved)
