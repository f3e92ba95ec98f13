"""Multi-process runs: each process holds its own rows; only small metrics cross hosts.

One r1jax process runs per host (a TPU VM worker, or a CPU process in tests). Arrays the jitted
programs see are global (`jax.Array`s over the whole mesh), but the host side of every loop is
per process:
- a batch is built from this process's rows (`process_rows`) and assembled into a global array
  with `to_global` (`jax.make_array_from_process_local_data`), never gathered on one host;
- a result comes back as this process's rows (`to_local`: the addressable shards);
- what must agree across processes (a padded length) or be reported once (metrics) goes
  through `multihost_utils` as a few scalars (`agree_max`, `combine_metrics`).
With one process every function here is the identity or a plain `device_put`, so the
single-process path is the multi-process path with P = 1.

Launch (one command per process; on TPU pods `jax.distributed.initialize()` finds its peers):
  JAX_COORDINATOR_ADDRESS=host0:1234 R1JAX_NUM_PROCESSES=2 R1JAX_PROCESS_ID=0 python -m r1jax.main ...
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from r1jax import sharding
from r1jax.errors import ConfigError

NUM_PROCESSES_ENV, PROCESS_ID_ENV = "R1JAX_NUM_PROCESSES", "R1JAX_PROCESS_ID"
_CLUSTER_ENVS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                 "SLURM_NTASKS")


def maybe_initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` when the environment describes several processes.

  TPU pods, SLURM and the like are found by JAX itself. Elsewhere (CPU processes on one or more
  machines) set JAX_COORDINATOR_ADDRESS, R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID; CPU
  collectives then go through gloo.
  """
  if not any(os.environ.get(v) for v in _CLUSTER_ENVS):
    return
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if hosts and len(hosts.split(",")) == 1:
    return  # a single-host TPU VM
  kwargs: dict[str, Any] = {}
  if os.environ.get(NUM_PROCESSES_ENV):
    try:
      kwargs = {"num_processes": int(os.environ[NUM_PROCESSES_ENV]),
                "process_id": int(os.environ[PROCESS_ID_ENV])}
    except (KeyError, ValueError) as e:
      raise ConfigError(f"{NUM_PROCESSES_ENV} needs {PROCESS_ID_ENV} beside it, both integers "
                        f"({e})") from e
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise ConfigError(f"{PROCESS_ID_ENV}={kwargs['process_id']} must lie in "
                        f"[0, {NUM_PROCESSES_ENV}={kwargs['num_processes']})")
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:  # already initialised
    logging.info("jax.distributed.initialize skipped: %s", e)
    return
  logging.info("jax.distributed initialised: process %d of %d", jax.process_index(),
               jax.process_count())


def is_primary() -> bool:
  """The process that writes shared files (config, lineage, metrics, model files)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def process_rows(mesh, num_rows: int) -> slice:
  """The rows of a [num_rows, ...] batch (split over the data axes) this process holds.

  Processes own contiguous, equal blocks of the data-parallel shards; a batch that does not
  divide over them is a ConfigError.
  """
  shard = sharding.batch_sharding(mesh, 1)
  spans = {(idx[0].start or 0, num_rows if idx[0].stop is None else idx[0].stop)
           for idx in shard.addressable_devices_indices_map((num_rows,)).values()}
  lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
  if (hi - lo) * jax.process_count() != num_rows or sum(e - s for s, e in spans) != hi - lo:
    raise ConfigError(f"a batch of {num_rows} rows does not split into {jax.process_count()} "
                      f"equal, contiguous process blocks over mesh {dict(mesh.shape)}")
  return slice(lo, hi)


def to_global(local: np.ndarray, mesh) -> jax.Array:
  """This process's rows -> the global array, rows split over the data axes.

  Every process passes the same number of rows; the global batch has P times as many.
  """
  local = np.asarray(local)
  spec = sharding.batch_sharding(mesh, local.ndim)
  if jax.process_count() == 1:
    return jax.device_put(local, spec)
  shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
  return jax.make_array_from_process_local_data(spec, local, shape)


def replicate(tree: Any, mesh) -> Any:
  """Small host values (scalars, PRNG keys) placed replicated on the mesh. With several
  processes they stay on the host: jit replicates such inputs itself, and `device_put` cannot
  place onto another process's devices."""
  if jax.process_count() > 1:
    return tree
  return jax.device_put(tree, sharding.replicated(mesh))


def to_local(x: jax.Array) -> np.ndarray:
  """The rows of a global array (split along axis 0) that this process holds, in order."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:  # a scalar or a replicated result: every process has it all
    return np.asarray(x.addressable_data(0))
  blocks: dict[int, np.ndarray] = {}
  for s in x.addressable_shards:
    start = (s.index[0].start or 0) if s.index else 0
    blocks.setdefault(start, np.asarray(s.data))
  return np.concatenate([blocks[k] for k in sorted(blocks)])


def process_share(items: Sequence[Any]) -> tuple[list[Any], int, int]:
  """This process's contiguous share of `items`, padded to the same length on every process.

  Returns (share, index of its first item, number of real items in it); the padding repeats the
  share's last item (or the list's first) and is for the caller to drop.
  """
  p, n = jax.process_count(), len(items)
  per = math.ceil(n / p)
  lo = min(jax.process_index() * per, n)
  share = list(items[lo:lo + per])
  real = len(share)
  filler = share[-1] if share else items[0]
  return share + [filler] * (per - real), lo, real


def agree_max(value: int) -> int:
  """The largest of every process's `value` (a padded length all must use)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils
  return int(np.max(multihost_utils.process_allgather(np.int64(value))))


def combine_metrics(metrics: Mapping[str, Any], weight: float = 1.0) -> dict[str, Any]:
  """Per-process metrics -> the run's: '*/max' keys take the max, 'num_*' and
  'reward_failures/*' keys the sum, other numbers the `weight`-weighted mean (NaNs skipped).

  With equal weights per process (equal row counts) the mean is the mean over all rows; a
  process at weight 0 contributes nothing. Non-numeric values are kept from this process.
  """
  out = dict(metrics)
  if jax.process_count() == 1:
    return out
  from jax.experimental import multihost_utils
  keys = sorted(k for k, v in metrics.items()
                if isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
  values = np.asarray([float(metrics[k]) for k in keys] + [float(weight)], np.float64)
  every = np.asarray(multihost_utils.process_allgather(values))  # [P, K + 1]
  w = every[:, -1]
  for j, k in enumerate(keys):
    col = every[:, j]
    ok = np.isfinite(col) & (w > 0)  # a process at weight 0 holds only padding
    if k.endswith("/max"):
      out[k] = float(np.max(col[ok])) if ok.any() else float("nan")
    elif k.startswith(("num_", "reward_failures/")) or "/num_" in k:
      out[k] = type(metrics[k])(np.sum(col[ok]))
    else:
      out[k] = float(np.sum(col[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else float("nan")
  return out


def merge_dicts(local: Mapping[str, Any]) -> dict[str, Any]:
  """The union of every process's JSON-able dict (disjoint keys, e.g. the data shards each one
  reads): small state that one process saves for all."""
  if jax.process_count() == 1:
    return dict(local)
  from jax.experimental import multihost_utils
  raw = np.frombuffer(json.dumps(local, sort_keys=True).encode(), np.uint8)
  width = agree_max(len(raw))
  rows = np.asarray(multihost_utils.process_allgather(np.pad(raw, (0, width - len(raw)))))
  merged: dict[str, Any] = {}
  for row in rows:
    merged.update(json.loads(bytes(row).rstrip(b"\0").decode()))
  return merged
