"""Checkpoints: resharding 8 -> 1 -> 8 devices, optax state, data/meta JSON, retention, params-only."""
import re

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from r1jax import checkpoints
from r1jax.checkpoints import Checkpointer, restore_params

# Varied layouts on the 2x2x2 mesh: 2-D over two axes, 1-D, 2-D over a joint axis, replicated.
SPECS = {"embed": P("fsdp", "tensor"), "bias": P("tensor"), "out": P(("data", "fsdp"), None)}


@pytest.fixture(scope="module")
def mesh():
  return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), devices=jax.devices()[:8])


def _params(mesh):
  embed = jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8) / 7.0  # [16, 8]
  bias = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32)  # [8]
  out = jnp.sin(jnp.arange(8 * 4, dtype=jnp.float32)).reshape(8, 4)  # [8, 4]
  raw = {"embed": embed, "bias": bias, "out": out}
  return {k: jax.device_put(v, NamedSharding(mesh, SPECS[k])) for k, v in raw.items()}


def _state(mesh):
  replicated = NamedSharding(mesh, P())
  return {
      "params": _params(mesh),
      "step": 7,  # a Python int, as a loop counter often is
      "rng": jax.device_put(jax.random.key(42), replicated),  # typed key, shape ()
      "raw_rng": jax.device_put(jax.random.PRNGKey(3), replicated),  # raw uint32 [2]
  }


def _abstract(tree, sharding):
  """ShapeDtypeStructs of `tree`, every leaf targeting `sharding` (a Python int -> int32)."""
  def leaf(x):
    x = jnp.asarray(x) if isinstance(x, int) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree)


def _assert_same_values(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    if checkpoints._is_typed_key(e):
      assert checkpoints._is_typed_key(a)
      assert str(jax.random.key_impl(a)) == str(jax.random.key_impl(e))
      a, e = jax.random.key_data(a), jax.random.key_data(e)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_reshard_8_to_1_to_8_devices(tmp_path, mesh):
  state8 = _state(mesh)
  one = SingleDeviceSharding(jax.devices()[0])
  with Checkpointer(tmp_path / "run", async_save=True) as ckpt:
    assert ckpt.save(100, state8)
    restored1, data_state, meta = ckpt.restore(abstract_state=_abstract(state8, one))
    assert data_state is None and meta is None
    _assert_same_values(restored1, {**state8, "step": np.int32(7)})
    for leaf in jax.tree.leaves(restored1):
      assert leaf.sharding == one
    assert restored1["rng"].shape == () and restored1["raw_rng"].dtype == jnp.uint32

    # Back from one device onto the 8-device mesh with the original layouts.
    assert ckpt.save(101, restored1)
    target8 = {
        "params": {k: NamedSharding(mesh, spec) for k, spec in SPECS.items()},
        "step": NamedSharding(mesh, P()), "rng": NamedSharding(mesh, P()),
        "raw_rng": NamedSharding(mesh, P(None)),
    }
    abstract8 = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             restored1, target8)
    restored8, _, _ = ckpt.restore(abstract_state=abstract8)
    assert ckpt.all_steps() == [100, 101]
    # Without an abstract state: host numpy arrays, typed keys wrapped back.
    host, _, _ = ckpt.restore(100)
  assert isinstance(host["params"]["embed"], np.ndarray) and int(host["step"]) == 7
  _assert_same_values(host, {**state8, "step": np.int64(7)})
  _assert_same_values(restored8, restored1)
  for leaf, sharding in zip(jax.tree.leaves(restored8), jax.tree.leaves(target8)):
    assert leaf.sharding == sharding
    assert len(leaf.sharding.device_set) == 8
  # The typed key still draws the same numbers after the round trip.
  np.testing.assert_array_equal(jax.random.uniform(restored8["rng"], (3,)),
                                jax.random.uniform(jax.random.key(42), (3,)))


def test_optax_adam_state_roundtrip(tmp_path, mesh):
  params = _params(mesh)
  opt = optax.adam(1e-2)
  grads = jax.tree.map(lambda p: jnp.cos(p) + 0.5, params)
  updates, opt_state = opt.update(grads, opt.init(params), params)
  params = optax.apply_updates(params, updates)
  state = {"params": params, "opt_state": opt_state}
  with Checkpointer(tmp_path / "run") as ckpt:
    ckpt.save(1, state)
    # Moments follow their params' layouts; the scalar count is replicated over the mesh.
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding if x.ndim
                                       else NamedSharding(mesh, P())), state)
    restored, _, _ = ckpt.restore(1, abstract_state=abstract)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert isinstance(restored["opt_state"][1], optax.EmptyState)
  assert int(restored["opt_state"][0].count) == 1
  _assert_same_values(restored, state)
  # The restored optimizer continues exactly as the original one would.
  step = lambda s: opt.update(grads, s["opt_state"], s["params"])[0]  # noqa: E731
  _assert_same_values(step(restored), step(state))


def test_data_state_and_metadata_roundtrip(tmp_path, mesh):
  data = grain.MapDataset.range(20).shuffle(seed=5).to_iter_dataset()
  full_pass = list(data)
  iterator = iter(data)
  assert [next(iterator) for _ in range(4)] == full_pass[:4]
  data_state = {"grain": iterator.get_state(), "blob": b"\x00\xff\x10grain", "epoch": 2,
                "nested": [b"", {"k": 1.5, "t": (1, 2)}]}
  meta = {"config": {"lr": 1e-3, "stage": "grpo"}, "tokens_seen": 1_000_000}
  with Checkpointer(tmp_path / "run") as ckpt:
    ckpt.save(3, {"params": _params(mesh)}, data_state=data_state, metadata=meta)
    ckpt.save(4, {"params": _params(mesh)}, data_state=b"\x01\x02raw-bytes")
    restored_state, restored_data, restored_meta = ckpt.restore(3)
    _, bytes_only, no_meta = ckpt.restore(4)
  assert restored_data == {**data_state, "nested": [b"", {"k": 1.5, "t": [1, 2]}]}
  assert restored_meta == meta
  assert bytes_only == b"\x01\x02raw-bytes" and no_meta is None
  # Host restore: numpy arrays, values intact.
  for name, leaf in restored_state["params"].items():
    assert isinstance(leaf, np.ndarray)
    np.testing.assert_array_equal(leaf, np.asarray(_params(mesh)[name]))
  # The data iterator resumes where it was saved, not at the start.
  resumed = iter(data)
  resumed.set_state(restored_data["grain"])
  assert [next(resumed) for _ in range(5)] == full_pass[4:9]


def test_bad_payload_fails_before_saving(tmp_path):
  with Checkpointer(tmp_path / "run") as ckpt:
    with pytest.raises(TypeError, match=r"data\['when'\]"):
      ckpt.save(0, {"x": jnp.ones(2)}, data_state={"when": object()})
    with pytest.raises(TypeError, match="keys must be str"):
      ckpt.save(0, {"x": jnp.ones(2)}, metadata={1: "a"})
    assert ckpt.all_steps() == []


def test_max_to_keep_and_interval(tmp_path):
  with Checkpointer(tmp_path / "keep", max_to_keep=2) as ckpt:
    for step in range(5):
      assert ckpt.save(step, {"x": jnp.full((2,), step, jnp.float32)})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
    state, _, _ = ckpt.restore()
  np.testing.assert_array_equal(state["x"], np.array([4.0, 4.0], np.float32))
  assert sorted(p.name for p in (tmp_path / "keep").iterdir() if p.name.isdigit()) == ["3", "4"]

  with Checkpointer(tmp_path / "every3", save_interval_steps=3, max_to_keep=None) as ckpt:
    saved = [ckpt.save(step, {"x": jnp.zeros(1)}) for step in range(7)]
    assert ckpt.save(7, {"x": jnp.zeros(1)}, force=True)
    assert saved == [True, False, False, True, False, False, True]
    assert ckpt.all_steps() == [0, 3, 6, 7]


def test_restore_params_skips_optimizer_state(tmp_path, mesh):
  params = _params(mesh)
  state = {"params": params, "opt_state": optax.adam(1e-3).init(params), "step": 5,
           "rng": jax.random.key(0)}
  with Checkpointer(tmp_path / "run") as ckpt:
    ckpt.save(5, state)
    ckpt.save(6, {**state, "params": jax.tree.map(lambda p: p + 1.0, params)})
    from_method = ckpt.restore_params(5)
  # Latest step from the run directory, as host numpy.
  latest = restore_params(tmp_path / "run")
  assert set(latest) == set(params)
  for name in params:
    assert isinstance(latest[name], np.ndarray)
    np.testing.assert_array_equal(latest[name], np.asarray(params[name]) + 1.0)
    np.testing.assert_array_equal(from_method[name], np.asarray(params[name]))
  # One step's directory, onto a different layout than it was saved with.
  tensor = {k: NamedSharding(mesh, P(*([None] * (v.ndim - 1)), "tensor")) for k, v in params.items()}
  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=tensor[k])
              for k, v in params.items()}
  sharded = restore_params(tmp_path / "run" / "5", abstract)
  for name in params:
    assert sharded[name].sharding == tensor[name]
    np.testing.assert_array_equal(sharded[name], params[name])


def test_clear_errors(tmp_path, mesh):
  empty = tmp_path / "empty"
  with Checkpointer(empty) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
      ckpt.restore()
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
      restore_params(empty)
    ckpt.save(0, {"params": {"w": jnp.ones(2)}, "raw_rng": jax.random.PRNGKey(0)})
    with pytest.raises(FileNotFoundError, match=r"step 9 .*steps: \[0\]"):
      ckpt.restore(9)
    one = SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(ValueError, match="no .sharding"):
      ckpt.restore(abstract_state={"params": {"w": jax.ShapeDtypeStruct((2,), jnp.float32)},
                                   "raw_rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=one)})
    typed = jax.eval_shape(lambda: jax.random.key(0))
    with pytest.raises(ValueError, match="typed PRNG keys at \\['raw_rng'\\]"):
      ckpt.restore(abstract_state={
          "params": {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=one)},
          "raw_rng": jax.ShapeDtypeStruct(typed.shape, typed.dtype, sharding=one)})
  with pytest.raises(FileNotFoundError, match="does not exist"):
    restore_params(tmp_path / "nowhere")


def test_relative_directory_is_resolved(tmp_path, monkeypatch):
  """`--workdir=workdirs/run` (relative) must work: orbax itself only takes absolute paths."""
  monkeypatch.chdir(tmp_path)
  state = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "step": 1}
  with checkpoints.Checkpointer("runs/rel") as ckpt:
    ckpt.save(1, state)
    ckpt.wait_until_finished()
  np.testing.assert_array_equal(
      checkpoints.restore_params("runs/rel")["w"], state["params"]["w"])
