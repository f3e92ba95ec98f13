"""Meshes from config, logical axis rules, and shardings derived from `jax.eval_shape`.

Params carry logical names (`nn.with_logical_partitioning`); the rules below map them onto mesh
axes. Nothing here writes a PartitionSpec by hand for a param: shardings come from the abstract
(eval_shape) tree, so the same code runs on one CPU and on a pod slice.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
DATA_AXES = ("data", "fsdp")  # the batch is split over both; a GRPO group may span them

# (logical name, mesh axes). Params: embed->fsdp (ZeRO-3 style), heads/mlp/vocab->tensor.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("activation_batch", DATA_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("cache_batch", DATA_AXES),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
)


def make_mesh(shape: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all). One axis size may be -1 (the rest of the devices).

  `shape` maps axis names (default data/fsdp/tensor) to sizes, e.g. {'data': -1, 'tensor': 2}.
  A shape the devices cannot fill is a ConfigError (it comes from `--config.mesh`).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(shape or {"data": -1, "fsdp": 1, "tensor": 1})
  for axis in MESH_AXES:
    shape.setdefault(axis, 1)
  bad = {k: v for k, v in shape.items()
         if v != -1 and (not isinstance(v, (int, np.integer)) or v < 1)}
  if bad:
    raise ConfigError(f"mesh {shape}: axis sizes must be >= 1 (or -1), got {bad} (--config.mesh)")
  unknown = [k for k, v in shape.items() if v == -1]
  if len(unknown) > 1:
    raise ConfigError(f"mesh {shape}: at most one axis may be -1 (--config.mesh)")
  fixed = math.prod(v for v in shape.values() if v != -1)
  if unknown:
    if len(devices) % fixed:
      raise ConfigError(f"mesh {shape}: {len(devices)} devices cannot fill it "
                        f"({len(devices)} is not a multiple of {fixed}; --config.mesh)")
    shape[unknown[0]] = len(devices) // fixed
  if math.prod(shape.values()) != len(devices):
    raise ConfigError(f"mesh {shape} needs {math.prod(shape.values())} devices, but there are "
                      f"{len(devices)}; set --config.mesh.* to sizes whose product is "
                      f"{len(devices)} (or one of them to -1)")
  names = tuple(shape)
  dev_array = np.asarray(devices).reshape(tuple(shape[n] for n in names))
  return Mesh(dev_array, names)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
  """Normalises config rules (lists from ml_collections) to hashable tuples."""
  if rules is None:
    return DEFAULT_RULES
  out = []
  for name, axes in rules:
    out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """NamedShardings for a boxed (LogicallyPartitioned) abstract tree, e.g. from eval_shape(init)."""
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def logical_spec(names: Sequence[str | None], rules=DEFAULT_RULES) -> P:
  """The mesh PartitionSpec that logical axis names ask for."""
  return nn.logical_to_mesh_axes(tuple(names), rules)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis over the data axes, the rest replicated."""
  axes = tuple(a for a in DATA_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes, *([None] * (ndim - 1))))


def batch_divisor(mesh: Mesh) -> int:
  """How many ways the batch axis is split: the product of the data axes' sizes."""
  return math.prod(mesh.shape[a] for a in DATA_AXES if a in mesh.axis_names)


def check_batch(size: int, mesh: Mesh, what: str) -> None:
  """A clear error, before any work, for a batch the data axes cannot split evenly."""
  if size % batch_divisor(mesh):
    raise ConfigError(f"{what}={size} does not divide over the mesh's {batch_divisor(mesh)} "
                     f"data-parallel shards ({dict(mesh.shape)}); use a multiple of "
                     f"{batch_divisor(mesh)} or a smaller --config.mesh.data")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@contextlib.contextmanager
def mesh_rules(mesh: Mesh, rules=DEFAULT_RULES):
  """Sets the mesh and the logical axis rules for tracing (activation constraints need both)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def init_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh,
                 rules=DEFAULT_RULES) -> tuple[Any, Any]:
  """Runs `init_fn(rng)` (returns boxed params) jitted straight into their shardings.

  Returns (unboxed params, their shardings). Params never exist unsharded on one device.
  """
  abstract = jax.eval_shape(init_fn, rng)
  shardings = logical_shardings(abstract, mesh, rules)
  with mesh_rules(mesh, rules):
    params = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng)
  return params, shardings


def param_shardings(model: nn.Module, mesh: Mesh, rules=DEFAULT_RULES, seq_len: int = 8) -> Any:
  """Shardings of `model`'s params (the 'params' collection), from eval_shape of its init."""
  tokens = jax.ShapeDtypeStruct((1, seq_len), np.int32)
  abstract = jax.eval_shape(lambda r, t: model.init(r, t)["params"], jax.random.key(0), tokens)
  return logical_shardings(abstract, mesh, rules)


def shard_params(params: Any, shardings: Any) -> Any:
  """Places a host / single-device params tree onto the given shardings."""
  return jax.tree.map(jax.device_put, params, shardings)


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying target shardings (what orbax restores onto)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
