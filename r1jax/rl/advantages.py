"""Group-relative advantages for GRPO (outcome supervision: one scalar per sample).

Rows are grouped contiguously: rows g*G .. g*G+G-1 are the G samples of prompt g. The group mean
is the baseline (no critic). Scaling follows the public implementations:

  'group'  A_i = (r_i - mean_g) / (std_g + eps)        GRPO paper, TRL scale_rewards='group'
  'batch'  A_i = (r_i - mean_g) / (std_batch + eps)    TRL scale_rewards='batch'
  'none'   A_i =  r_i - mean_g                          Dr.GRPO

std is the unbiased (Bessel, ddof=1) standard deviation, as in TRL and verl. Everything is float32.

`sharded_group_advantages` computes the same numbers under `jax.shard_map` with the rewards sharded
over the data axes; a group may span several devices, so per-group sums are scattered into a
[num_groups] vector and summed over devices with `lax.psum` (two passes: mean, then squared
deviations, the same arithmetic as the single-device path).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
from jax import lax
import numpy as np
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

SCALES = ("group", "batch", "none")


def _check(rewards: jax.Array, group_size: int, scale: str) -> tuple[int, int]:
  """Validates shapes at trace time; returns (N, num_groups)."""
  if rewards.ndim != 1:
    raise ValueError(f"rewards must be [N], got shape {rewards.shape}")
  if scale not in SCALES:
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
  integral = isinstance(group_size, (int, np.integer)) and not isinstance(group_size, bool)
  if not integral or group_size < 2:
    raise ValueError(
        f"group_size must be an int >= 2 (a group of one has no baseline and no spread), "
        f"got {group_size!r}")
  n = rewards.shape[0]
  if n % group_size:
    raise ValueError(f"number of rewards {n} is not a multiple of group_size {group_size}")
  return n, n // int(group_size)


def group_advantages(rewards: jax.Array, group_size: int, *, scale: str = "group",
                     eps: float = 1e-4) -> jax.Array:
  """rewards [N] -> advantages [N] float32, groups of `group_size` contiguous rows."""
  _, num_groups = _check(rewards, group_size, scale)
  r = rewards.astype(jnp.float32).reshape(num_groups, group_size)  # [Gn, G]
  centered = r - jnp.mean(r, axis=1, keepdims=True)  # [Gn, G]
  if scale == "none":
    return centered.reshape(-1)
  if scale == "group":
    std = jnp.sqrt(jnp.sum(centered**2, axis=1, keepdims=True) / (group_size - 1))  # [Gn, 1]
  else:  # 'batch': unbiased std of all N rewards around the batch mean.
    flat = r.reshape(-1)
    std = jnp.sqrt(jnp.sum((flat - jnp.mean(flat))**2) / (flat.shape[0] - 1))
  return (centered / (std + eps)).reshape(-1)


def sharded_group_advantages(rewards: jax.Array, group_size: int, mesh: Mesh,
                             data_axes: Sequence[str] = ("data", "fsdp"), *,
                             scale: str = "group", eps: float = 1e-4) -> jax.Array:
  """Same as `group_advantages`, with rewards [N] sharded over `data_axes` of `mesh`.

  Axes of `data_axes` absent from the mesh are ignored; other mesh axes see replicated rewards.
  Returns advantages [N] sharded like the input (P(data_axes)).
  """
  n, num_groups = _check(rewards, group_size, scale)
  axes = tuple(a for a in data_axes if a in mesh.axis_names)
  if not axes:
    return group_advantages(rewards, group_size, scale=scale, eps=eps)
  num_shards = math.prod(mesh.shape[a] for a in axes)
  if n % num_shards:
    raise ValueError(f"number of rewards {n} is not divisible by the {num_shards} shards of "
                     f"mesh axes {axes}")
  return _sharded_fn(n, num_groups, group_size, mesh, axes, scale, float(eps))(rewards)


@functools.lru_cache(maxsize=64)
def _sharded_fn(n: int, num_groups: int, group_size: int, mesh: Mesh, axes: tuple[str, ...],
                scale: str, eps: float):
  """The jitted shard_map for one static setting: built once, so each step does not recompile."""
  local_n = n // math.prod(mesh.shape[a] for a in axes)

  def local(r_loc):  # r_loc [N / num_shards]
    r_loc = r_loc.astype(jnp.float32)
    offset = lax.axis_index(axes) * local_n
    gid = (offset + jnp.arange(local_n)) // group_size  # [n_loc] global group id of each row

    def group_sum(x):  # [n_loc] -> [num_groups], summed over all shards
      return lax.psum(jax.ops.segment_sum(x, gid, num_segments=num_groups), axes)

    mean = group_sum(r_loc) / group_size  # [Gn]
    centered = r_loc - mean[gid]  # [n_loc]
    if scale == "none":
      return centered
    if scale == "group":
      std = jnp.sqrt(group_sum(centered**2) / (group_size - 1))[gid]  # [n_loc]
    else:
      batch_mean = lax.psum(jnp.sum(r_loc), axes) / n
      std = jnp.sqrt(lax.psum(jnp.sum((r_loc - batch_mean)**2), axes) / (n - 1))
    return centered / (std + eps)

  spec = P(axes)
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec,), out_specs=spec))



def zero_spread_fraction(rewards: jax.Array, group_size: int) -> jax.Array:
  """Fraction of groups whose rewards are all equal (zero advantage: no policy gradient)."""
  _, num_groups = _check(rewards, group_size, "group")
  r = rewards.astype(jnp.float32).reshape(num_groups, group_size)
  return jnp.mean((jnp.max(r, axis=1) == jnp.min(r, axis=1)).astype(jnp.float32))


def group_reward_metrics(rewards: jax.Array, group_size: int) -> dict[str, jax.Array]:
  """Scalars worth logging every step: reward mean, mean in-group std, zero-spread fraction."""
  _, num_groups = _check(rewards, group_size, "group")
  r = rewards.astype(jnp.float32).reshape(num_groups, group_size)
  return {
      "reward_mean": jnp.mean(r),
      "reward_group_std": jnp.mean(jnp.std(r, axis=1, ddof=1)),
      "frac_zero_std_groups": zero_spread_fraction(rewards, group_size),
  }
