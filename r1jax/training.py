"""Train state as a plain dict of pytrees, its shardings from `jax.eval_shape`, and a jitted update.

state = {'params', 'opt_state', 'step'}. Shardings come from the params' logical names (optax
states mirror the params tree, so their boxes carry the same names); nothing is written by hand.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax import multihost, sharding
from r1jax.errors import ConfigError, NonFiniteError


def _sample_tokens(seq_len: int = 8):
  return jax.ShapeDtypeStruct((1, seq_len), np.int32)


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh, rules) -> Any:
  """NamedShardings for {'params', 'opt_state', 'step'} derived from eval_shape of the init."""
  def init(rng):
    params = model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  boxed = jax.eval_shape(init, jax.random.key(0))
  return sharding.logical_shardings(boxed, mesh, rules)


def init_state(model: nn.Module, tx, mesh, rules, rng, params=None) -> tuple[dict, Any]:
  """A fresh state (random init, or given params) placed on its shardings. Returns (state, shardings)."""
  shardings = state_shardings(model, tx, mesh, rules)

  def make(rng, params):
    if params is None:
      params = nn.unbox(model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"])
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  with sharding.mesh_rules(mesh, rules):
    if params is None:
      state = jax.jit(lambda r: make(r, None), out_shardings=shardings)(rng)
    else:
      params = jax.device_put(params, shardings["params"])
      state = jax.jit(lambda r, p: make(r, p), out_shardings=shardings)(rng, params)
  return state, shardings


def apply_gradients(state: dict, grads: Any, tx: optax.GradientTransformation) -> tuple[dict, dict]:
  """One optimizer update; returns the new state and grad/param/update norms."""
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
             "update_norm": optax.tree.norm(updates)}
  return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics


def jit_update(loss_fn: Callable[[Any, dict], tuple[jax.Array, dict]], tx, mesh, rules,
               state_shards: Any) -> Callable[[dict, dict], tuple[dict, dict]]:
  """Jits `state, batch -> state, metrics` for `loss_fn(params, batch) -> (loss, metrics)`.

  A step whose loss or gradients are not finite leaves the state as it was (params, optimizer
  moments and step count) and reports `nonfinite` = 1; `check_finite` then stops the run or lets
  it go on, by `nan_policy`. The state is donated; batch arrays are sharded over the data axes
  by the caller.
  """
  def step(state, batch):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    new_state, norms = apply_gradients(state, grads, tx)
    finite = jnp.isfinite(loss) & jnp.isfinite(norms["grad_norm"])
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, {"loss": loss, **metrics, **norms,
                       "nonfinite": 1.0 - finite.astype(jnp.float32)}

  jitted = jax.jit(step, in_shardings=(state_shards, None), out_shardings=(state_shards, None),
                   donate_argnums=(0,))

  def run(state, batch):
    with sharding.mesh_rules(mesh, rules):
      return jitted(state, batch)
  return run


NAN_POLICIES = ("stop", "skip")


def check_finite(metrics: dict, step: int, policy: str, last_checkpoint: int | None) -> bool:
  """True when the step was skipped for a NaN/inf; under 'stop' raises NonFiniteError instead,
  before anything is saved, so the last good checkpoint stays the latest."""
  if policy not in NAN_POLICIES:
    raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}")
  if not float(metrics.get("nonfinite", 0.0)) > 0:
    return False
  if policy == "skip":
    return True
  what = ", ".join(f"{k} = {float(metrics[k])}" for k in ("loss", "grad_norm") if k in metrics)
  kept = (f"the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint
          else "no checkpoint was written")
  raise NonFiniteError(f"step {step}: non-finite {what}; stopped before saving, {kept} "
                       "(--config.nan_policy=skip skips such steps instead)")


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """This process's rows (host arrays) -> global arrays split along the batch axis over the data
  axes; with P processes the global batch has P times the rows (see r1jax.multihost)."""
  return {k: multihost.to_global(v, mesh) for k, v in batch.items()}


@functools.partial(jax.jit, static_argnums=(2,))
def _take(x: jax.Array, idx: jax.Array, out_sharding) -> jax.Array:
  return jax.lax.with_sharding_constraint(x[idx], out_sharding)


def take_rows(batch: dict[str, jax.Array], idx: np.ndarray, mesh) -> dict[str, jax.Array]:
  """Rows `idx` (the same on every process) of global arrays, gathered on the devices into a
  batch split over the data axes: minibatches never pass through a host."""
  idx = multihost.replicate(np.asarray(idx, np.int32), mesh)
  return {k: _take(v, idx, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
