"""Group advantages vs straightforward float64 numpy loops, single device and sharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1jax.rl import advantages as adv


def _reference(rewards, group_size, scale, eps):
  """Plain loop in float64: A_i = (r_i - mean(r)) / std(r) within each group (unbiased std)."""
  r = np.asarray(rewards, np.float64)
  n = len(r)
  batch_mean = sum(r) / n
  batch_std = np.sqrt(sum((x - batch_mean)**2 for x in r) / (n - 1))
  out = np.zeros(n)
  for g in range(n // group_size):
    members = r[g * group_size:(g + 1) * group_size]
    mean = sum(members) / group_size
    std = np.sqrt(sum((x - mean)**2 for x in members) / (group_size - 1))
    for j, x in enumerate(members):
      if scale == "none":
        out[g * group_size + j] = x - mean
      elif scale == "group":
        out[g * group_size + j] = (x - mean) / (std + eps)
      else:
        out[g * group_size + j] = (x - mean) / (batch_std + eps)
  return out


def _rewards(n, seed=0):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 3, size=n).astype(np.float32) * 0.5 + rng.normal(size=n).astype(np.float32)
  return r


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_modes_match_numpy_loop(scale, group_size):
  r = _rewards(16, seed=group_size)
  got = adv.group_advantages(jnp.asarray(r), group_size, scale=scale, eps=1e-4)
  assert got.dtype == jnp.float32 and got.shape == (16,)
  np.testing.assert_allclose(got, _reference(r, group_size, scale, 1e-4), rtol=1e-6, atol=1e-6)


def test_hand_computed_group():
  # Group [1, 0, 0, 1]: mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 0.5773502691896258.
  # A = +-0.5 / (0.5773502691896258 + 1e-4) = +-0.8658754...
  got = adv.group_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]), 4)
  a = 0.5 / (np.sqrt(1.0 / 3.0) + 1e-4)
  np.testing.assert_allclose(got, [a, -a, -a, a], rtol=1e-6)
  # Dr.GRPO: no division.
  np.testing.assert_allclose(adv.group_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]), 4,
                                                  scale="none"), [0.5, -0.5, -0.5, 0.5])


def test_eps_effect():
  r = jnp.array([1.0, 0.0, 0.5, 0.5])
  std = np.sqrt(0.5 / 3.0)
  for eps in (0.0, 1e-4, 0.1):
    got = adv.group_advantages(r, 4, eps=eps)
    np.testing.assert_allclose(got[0], 0.5 / (std + eps), rtol=1e-6)
  # Constant group: zero advantage, finite even with eps = 0 in 'none' and eps > 0 elsewhere.
  const = adv.group_advantages(jnp.ones(4), 4, eps=1e-4)
  np.testing.assert_array_equal(const, np.zeros(4))


def test_rejects_bad_group_size():
  with pytest.raises(ValueError, match="group_size"):
    adv.group_advantages(jnp.ones(4), 1)
  with pytest.raises(ValueError, match="multiple"):
    adv.group_advantages(jnp.ones(6), 4)
  with pytest.raises(ValueError, match="scale"):
    adv.group_advantages(jnp.ones(4), 2, scale="std")
  with pytest.raises(ValueError, match=r"\[N\]"):
    adv.group_advantages(jnp.ones((2, 2)), 2)


def test_jittable():
  r = jnp.asarray(_rewards(8))
  f = jax.jit(adv.group_advantages, static_argnums=1, static_argnames="scale")
  np.testing.assert_allclose(f(r, 4, scale="batch"), _reference(np.asarray(r), 4, "batch", 1e-4),
                             rtol=1e-6, atol=1e-6)


def _mesh():
  return Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))


# (N, G): 16 rows on 8 devices = 2 rows each. G=8 spans 4 devices, G=4 spans 2, G=2 sits on one.
# N=48, G=6: 6 rows per device, groups aligned with devices. N=24, G=4: 3 rows per device, so
# groups straddle device boundaries unevenly.
@pytest.mark.parametrize("n,group_size", [(16, 8), (16, 4), (16, 2), (48, 6), (24, 4), (16, 16)])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_sharded_equals_single_device(n, group_size, scale):
  mesh = _mesh()
  r = jax.device_put(jnp.asarray(_rewards(n, seed=n + group_size)),
                     NamedSharding(mesh, P(("data", "fsdp"))))
  fn = jax.jit(lambda x: adv.sharded_group_advantages(x, group_size, mesh, scale=scale))
  got = fn(r)
  want = adv.group_advantages(r, group_size, scale=scale)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got, _reference(np.asarray(r), group_size, scale, 1e-4),
                             rtol=1e-6, atol=1e-6)
  assert got.sharding.spec == P(("data", "fsdp"))


def test_sharded_with_extra_model_axis():
  # Mesh ('data', 'tensor'): rewards sharded over 'data' only, replicated over 'tensor'.
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ("data", "tensor"))
  r = jnp.asarray(_rewards(16, seed=3))
  got = adv.sharded_group_advantages(r, 8, mesh)
  np.testing.assert_allclose(got, _reference(np.asarray(r), 8, "group", 1e-4), rtol=1e-6,
                             atol=1e-6)


def test_sharded_rejects_indivisible():
  with pytest.raises(ValueError, match="divisible"):
    adv.sharded_group_advantages(jnp.ones(12), 2, _mesh())


def test_zero_spread_metrics():
  r = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
  assert float(adv.zero_spread_fraction(r, 2)) == 0.75
  m = adv.group_reward_metrics(r, 2)
  np.testing.assert_allclose(m["reward_mean"], 0.5, rtol=1e-6)
  # Only group [0, 1] has spread: unbiased std sqrt(0.5); mean over 4 groups.
  np.testing.assert_allclose(m["reward_group_std"], np.sqrt(0.5) / 4, rtol=1e-6)
  np.testing.assert_allclose(m["frac_zero_std_groups"], 0.75)
