"""Checkpoints of a training run: state pytree, data-iterator state and metadata, via orbax.

One step directory per saved step (`<dir>/<step>/`), holding orbax items:
  state     the train state pytree ({'params', 'opt_state', 'step', 'rng', ...}), tensorstore
  data      the data iterator's state (grain `get_state()`), JSON; bytes are base64-encoded
  meta      free-form JSON (config, metrics, tokenizer name, ...)
  prng_keys {'rng': 'threefry2x32', ...}: which state leaves were typed PRNG keys, JSON

Typed keys (`jax.random.key`) are stored as their uint32 key data, so the arrays on disk are
plain and every restore path (sharded, host numpy, params only) can wrap them back. Restores
reshard onto whatever layout the abstract state asks for: a checkpoint written on 8 devices
loads onto 1 and back. Saving is asynchronous; `restore` and `close` wait for pending saves.
A step directory that cannot be read (truncated, overwritten) raises `CheckpointError` naming it;
nothing on disk is changed, so the user decides what to delete.
"""
from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from r1jax.errors import CheckpointError

PyTree = Any

STATE, DATA, META, PRNG_KEYS = "state", "data", "meta", "prng_keys"
_JSON_ITEMS = (DATA, META, PRNG_KEYS)
_BYTES_TAG = "__base64_bytes__"
_NAME_FORMAT = ocp.step.standard_name_format()  # step directories named '<step>'


# ----------------------------------------------------------------------------- JSON payloads


def _to_json(value: Any, where: str) -> Any:
  """JSON-able copy of `value`; bytes become {_BYTES_TAG: base64}. Raises on anything else."""
  if isinstance(value, (bytes, bytearray)):
    return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise TypeError(f"{where}: JSON keys must be str, got {k!r} ({type(k).__name__})")
      if k == _BYTES_TAG:
        raise ValueError(f"{where}: the key {_BYTES_TAG!r} is reserved for encoded bytes")
      out[k] = _to_json(v, f"{where}[{k!r}]")
    return out
  if isinstance(value, (list, tuple)):
    return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  raise TypeError(f"{where}: {type(value).__name__} is not JSON-able (use str/int/float/bool/"
                  "None/bytes and dicts or lists of them)")


def _from_json(value: Any) -> Any:
  """Inverse of `_to_json` (tuples come back as lists)."""
  if isinstance(value, dict):
    if set(value) == {_BYTES_TAG}:
      return base64.b64decode(value[_BYTES_TAG])
    return {k: _from_json(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  return value


# ----------------------------------------------------------------------------- typed PRNG keys


def _is_typed_key(x: Any) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _path_name(path: tuple[Any, ...]) -> str:
  """'opt_state/0/mu/w': the same for dicts, namedtuples and lists, as orbax names leaves."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _keys_to_data(state: PyTree) -> tuple[PyTree, dict[str, str]]:
  """Replaces typed keys by their uint32 data; returns the tree and {leaf path: impl name}."""
  impls: dict[str, str] = {}

  def convert(path, x):
    if _is_typed_key(x):
      impls[_path_name(path)] = str(jax.random.key_impl(x))
      return jax.random.key_data(x)
    return x

  return jax.tree_util.tree_map_with_path(convert, state), impls


def _wrap_keys(tree: PyTree, impls: Mapping[str, str], prefix: str = "",
               only: set[str] | None = None) -> PyTree:
  """Wraps the leaves named in `impls` (restricted to `only` when given) back into typed keys."""
  def wrap(path, x):
    name = prefix + _path_name(path)
    if name in impls and (only is None or name in only):
      return jax.random.wrap_key_data(x, impl=impls[name])
    return x

  return jax.tree_util.tree_map_with_path(wrap, tree)


def _physical_abstract(abstract: PyTree) -> tuple[PyTree, set[str]]:
  """Typed-key ShapeDtypeStructs -> their uint32 key-data structs (same sharding).

  Also checks that every ShapeDtypeStruct names its target sharding. Returns the new tree and
  the paths of the typed-key leaves.
  """
  typed: set[str] = set()

  def convert(path, x):
    if not isinstance(x, jax.ShapeDtypeStruct):
      return x
    if x.sharding is None:
      raise ValueError(f"abstract_state leaf {_path_name(path)!r} has no .sharding; set the "
                       "target sharding, or pass abstract_state=None for host numpy arrays")
    if not _is_typed_key(x):
      return x
    typed.add(_path_name(path))
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)

  return jax.tree_util.tree_map_with_path(convert, abstract), typed


# ----------------------------------------------------------------------------- restore helpers


def _host_restore_args(metadata_tree: PyTree) -> PyTree:
  """RestoreArgs that read every array as a host np.ndarray, whatever mesh it was saved on."""
  return jax.tree.map(
      lambda m: ocp.RestoreArgs(restore_type=np.ndarray)
      if isinstance(m, ocp.metadata.ArrayMetadata) else ocp.RestoreArgs(),
      metadata_tree)


def _unreadable(step_dir: epath.Path, e: Exception) -> CheckpointError:
  """One line naming the step directory: orbax / tensorstore errors run to many lines."""
  lines = str(e).strip().splitlines()
  detail = lines[0] if lines else ""
  detail = detail if len(detail) <= 300 else detail[:300] + "..."
  return CheckpointError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: {detail}); "
                         "it was left as it is: delete it to resume from an earlier step (or "
                         "from scratch), or start a new --workdir")


def _read_json(path: epath.Path) -> Any:
  """An orbax JSON item written by `Checkpointer.save`, or None when the item was not saved."""
  if not path.exists():
    return None
  return _from_json(ocp.JsonCheckpointHandler().restore(path)["value"])


def absolute(path: epath.PathLike) -> epath.Path:
  """Orbax wants absolute paths: local relative paths are resolved, URLs (gs://) kept."""
  text = os.fspath(path)
  return epath.Path(text if "://" in text else os.path.abspath(text))


def _resolve_step_dir(path_or_dir: epath.PathLike, step: int | None) -> epath.Path:
  """A step directory from either a step directory or a run directory (+ optional step)."""
  path = absolute(path_or_dir)
  if (path / STATE).exists():
    if step is not None:
      raise ValueError(f"{path} is a single step's directory; do not pass step={step}")
    return path
  if not path.exists():
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  steps = sorted(m.step for m in _NAME_FORMAT.find_all(path))
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {path}")
  if step is None:
    step = steps[-1]
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} in {path}; steps: {steps}")
  return _NAME_FORMAT.find_step(path, step).path


def restore_params(path_or_dir: epath.PathLike, abstract_params: PyTree | None = None,
                   step: int | None = None) -> PyTree:
  """Loads only the 'params' subtree of a checkpoint (eval, or RL from a base model).

  `path_or_dir` is a run directory (latest step, or `step`) or one step's directory. The
  optimizer state is never read, so its structure need not be known. `abstract_params`:
  ShapeDtypeStructs with target shardings; None gives host numpy arrays.
  """
  step_dir = _resolve_step_dir(path_or_dir, step)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(step_dir / STATE).tree
    impls = _read_json(step_dir / PRNG_KEYS) or {}
  except Exception as e:  # any read failure is a damaged step directory
    raise _unreadable(step_dir, e) from e
  if "params" not in tree:
    raise KeyError(f"checkpoint {step_dir} holds no 'params'; top-level keys: {sorted(tree)}")
  if abstract_params is None:
    item = {"params": tree["params"]}
    restore_args, typed = _host_restore_args(item), None
  else:
    physical, typed = _physical_abstract(abstract_params)
    typed = {"params/" + name for name in typed}
    item = {"params": physical}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  try:
    restored = ocp.Checkpointer(handler).restore(
        step_dir / STATE,
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
  except Exception as e:
    raise _unreadable(step_dir, e) from e
  return _wrap_keys(restored["params"], impls, prefix="params/", only=typed)


# ----------------------------------------------------------------------------- the manager


class Checkpointer:
  """A run's checkpoints: async saves every `save_interval_steps`, the last `max_to_keep` kept.

  Use as a context manager (or call `close()`) so pending saves finish before exit.
  """

  def __init__(self, directory: epath.PathLike, *, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 (or None: keep all), got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    self.directory = absolute(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True,
        enable_async_checkpointing=async_save, step_name_format=_NAME_FORMAT)
    # One PyTree handler for 'state' (not StandardCheckpointHandler) so that host-numpy and
    # partial restores go through the same manager; the on-disk format is the same.
    handlers = {STATE: ocp.PyTreeCheckpointHandler()}
    handlers.update({name: ocp.JsonCheckpointHandler() for name in _JSON_ITEMS})
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  # --- saving

  def save(self, step: int, state: PyTree, *, data_state: Any = None,
           metadata: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts saving `state` at `step`; False when the save interval skips this step.

    Returns once arrays are copied off the devices; the writes finish in the background.
    `data_state`: JSON-able dict (or bytes) from the data iterator's `get_state()`.
    """
    items = {}
    # Encode first: a bad payload fails here, not in the background writer.
    for name, value in ((DATA, data_state), (META, metadata)):
      if value is not None:
        items[name] = ocp.args.JsonSave({"value": _to_json(value, name)})
    physical, impls = _keys_to_data(state)
    if impls:
      items[PRNG_KEYS] = ocp.args.JsonSave({"value": impls})
    items[STATE] = ocp.args.PyTreeSave(physical)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's threads."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # --- listing

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  # --- restoring

  def _step_or_latest(self, step: int | None) -> int:
    self._manager.wait_until_finished()
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {self.directory}")
    if step is None:
      return steps[-1]
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"steps: {steps}")
    return step

  def restore(self, step: int | None = None, *, abstract_state: PyTree | None = None
              ) -> tuple[PyTree, Any, dict[str, Any] | None]:
    """(state, data_state, metadata) of `step` (default: latest).

    `abstract_state`: the state's ShapeDtypeStructs, each with the target `.sharding` (any
    mesh, any device count). None restores every array as a host np.ndarray, in nested
    dicts/lists (namedtuples become dicts). data_state / metadata are None if not saved.
    """
    step = self._step_or_latest(step)
    step_dir = _NAME_FORMAT.find_step(self.directory, step).path
    try:
      impls = _read_json(step_dir / PRNG_KEYS) or {}
      tree = self._manager.item_metadata(step)[STATE].tree if abstract_state is None else None
    except Exception as e:  # any read failure is a damaged step directory
      raise _unreadable(step_dir, e) from e
    if abstract_state is None:
      args = ocp.args.PyTreeRestore(restore_args=_host_restore_args(tree))
      typed = None
    else:
      physical, typed = _physical_abstract(abstract_state)
      missing = sorted(typed - set(impls))
      if missing:
        raise ValueError(f"abstract_state asks for typed PRNG keys at {missing}, but step {step} "
                         f"in {self.directory} stored raw arrays there; ask for uint32 instead")
      args = ocp.args.PyTreeRestore(
          item=physical, restore_args=ocp.checkpoint_utils.construct_restore_args(physical))
    try:
      state = self._manager.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE]
      data, meta = _read_json(step_dir / DATA), _read_json(step_dir / META)
    except Exception as e:
      raise _unreadable(step_dir, e) from e
    return _wrap_keys(state, impls, only=typed), data, meta

  def restore_params(self, step: int | None = None, *,
                     abstract_params: PyTree | None = None) -> PyTree:
    """The 'params' subtree only; see the module-level `restore_params`."""
    step = self._step_or_latest(step)
    return restore_params(self.directory, abstract_params, step=step)
