"""Model: shapes, KV-cache decode == full forward, logical shardings on a 2x2x2 mesh."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.models.config import ModelConfig, get_model_config, PRESETS
from r1jax.models.transformer import Transformer, contract, init_cache, rope_inv_freq

TINY = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   mlp_dim=64, max_seq_len=64, qkv_bias=True, tie_embeddings=False)


@pytest.fixture(scope="module")
def tiny():
  model = Transformer(TINY)
  tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, TINY.vocab_size)
  params = nn.unbox(model.init(jax.random.key(0), tokens)["params"])
  return model, params, tokens


def test_param_count_matches_config(tiny):
  model, params, _ = tiny
  n = sum(x.size for x in jax.tree.leaves(params))
  assert n == TINY.num_params()


def test_presets_are_consistent():
  assert get_model_config("smollm2-135m").head_dim == 64
  assert abs(get_model_config("smollm2-135m").num_params() - 134_515_008) < 1e3
  assert abs(get_model_config("qwen2.5-0.5b").num_params() - 494_032_768) < 1e3
  assert abs(get_model_config("llama3.1-8b").num_params() - 8_030_261_248) < 1e3
  with pytest.raises(ValueError, match="unknown model preset"):
    get_model_config("gpt-5")
  assert set(PRESETS) >= {"toy", "smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b",
                          "llama3.1-8b"}


def test_causality(tiny):
  model, params, tokens = tiny
  logits = model.apply({"params": params}, tokens)
  changed = tokens.at[:, 8:].set((tokens[:, 8:] + 1) % TINY.vocab_size)
  logits2 = model.apply({"params": params}, changed)
  np.testing.assert_allclose(logits[:, :8], logits2[:, :8], atol=1e-6)
  assert not np.allclose(logits[:, 8:], logits2[:, 8:])


def test_cached_decode_equals_full_forward(tiny):
  model, params, tokens = tiny
  full = model.apply({"params": params}, tokens)
  cache = init_cache(TINY, tokens.shape[0], 16)
  logits, cache = model.apply({"params": params}, tokens[:, :7], cache=cache, cache_index=0)
  steps = [logits]
  for t in range(7, tokens.shape[1]):
    logits, cache = model.apply({"params": params}, tokens[:, t:t + 1], cache=cache, cache_index=t)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_segment_ids_isolate_packed_documents(tiny):
  model, params, tokens = tiny
  seg = jnp.array([[1] * 5 + [2] * 7] * 4)
  packed = model.apply({"params": params}, tokens, segment_ids=seg)
  second = model.apply({"params": params}, tokens[:, 5:])
  np.testing.assert_allclose(packed[:, 5:], second, atol=1e-5, rtol=1e-5)


def test_llama3_rope_scaling_matches_reference_formula():
  cfg = get_model_config("llama3.1-8b")
  inv = np.asarray(rope_inv_freq(cfg), np.float64)
  base = 1.0 / (500000.0 ** (np.arange(0, 128, 2) / 128))
  want = []
  for f in base:  # the published Llama 3.1 recipe, written as a plain loop
    wavelen = 2 * np.pi / f
    if wavelen < 8192 / 4:
      want.append(f)
    elif wavelen > 8192 / 1:
      want.append(f / 8)
    else:
      s = (8192 / wavelen - 1) / (4 - 1)
      want.append((1 - s) * f / 8 + s * f)
  np.testing.assert_allclose(inv, want, rtol=1e-6)


def test_sharded_params_and_logits_on_2x2x2_mesh(tiny):
  model, params, tokens = tiny
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = sharding.param_shardings(model, mesh)
  want_specs = {
      "q_proj/kernel": ("fsdp", "tensor", None), "q_proj/bias": ("tensor", None),
      "k_proj/kernel": ("fsdp", "tensor", None), "o_proj/kernel": ("tensor", None, "fsdp"),
      "gate_proj/kernel": ("fsdp", "tensor"), "down_proj/kernel": ("tensor", "fsdp"),
      "embed/embedding": ("tensor", "fsdp"), "lm_head/kernel": ("fsdp", "tensor"),
      "input_norm/scale": (None,),
  }
  flat = {"/".join(k.key for k in path): s for path, s in
          jax.tree_util.tree_flatten_with_path(shardings)[0]}
  for path, s in flat.items():
    for suffix, spec in want_specs.items():
      if path.endswith(suffix):
        assert tuple(s.spec) == spec, (path, s.spec)
  assert any(p.endswith("o_proj/kernel") for p in flat)
  sharded = sharding.shard_params(params, shardings)
  batch = jax.device_put(tokens, sharding.batch_sharding(mesh))
  with sharding.mesh_rules(mesh):
    logits = jax.jit(lambda p, t: model.apply({"params": p}, t))(sharded, batch)
  np.testing.assert_allclose(logits, model.apply({"params": params}, tokens), atol=1e-5)



def test_sharded_gradients_on_2x2x2_mesh(tiny):
  """The projections' hand-written backward (`contract`) under data, fsdp and tensor sharding."""
  model, params, tokens = tiny
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  loss = lambda p, t: jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, t))[..., 0] ** 2)
  want = jax.grad(loss)(params, tokens)
  sharded = sharding.shard_params(params, sharding.param_shardings(model, mesh))
  batch = jax.device_put(tokens, sharding.batch_sharding(mesh))
  with sharding.mesh_rules(mesh):
    got = jax.jit(jax.grad(loss))(sharded, batch)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5), got, want)

def test_make_mesh_errors():
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="needs"):
    sharding.make_mesh({"data": 3, "fsdp": 1, "tensor": 1})
  assert sharding.make_mesh({"data": -1, "tensor": 2}).shape == {"data": 4, "fsdp": 1, "tensor": 2}


@pytest.mark.parametrize("x_shape,k_shape,num_in", [
    ((3, 5, 8), (8, 4, 6), 1),  # q/k/v projections: [B, T, D] @ [D, H, Dh]
    ((3, 5, 4, 6), (4, 6, 8), 2),  # o_proj: [B, T, H, Dh] @ [H, Dh, D]
])
def test_contract_gradients_equal_float64_reference(x_shape, k_shape, num_in):
  """The hand-written backward of `contract` against numpy's, for a non-trivial cotangent."""
  rng = np.random.default_rng(0)
  x, k = rng.normal(size=x_shape), rng.normal(size=k_shape)
  out_shape = x_shape[:len(x_shape) - num_in] + k_shape[num_in:]
  dy = rng.normal(size=out_shape)
  loss = lambda x, k: jnp.sum(contract(x, k, num_in) * dy)
  gx, gk = jax.grad(loss, argnums=(0, 1))(jnp.float32(x), jnp.float32(k))
  n_in, n_out = int(np.prod(k_shape[:num_in])), int(np.prod(k_shape[num_in:]))
  x2, dy2, k2 = x.reshape(-1, n_in), dy.reshape(-1, n_out), k.reshape(n_in, n_out)
  np.testing.assert_allclose(gx, (dy2 @ k2.T).reshape(x_shape), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gk, (x2.T @ dy2).reshape(k_shape), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(contract(jnp.float32(x), jnp.float32(k), num_in),
                             np.tensordot(x, k, num_in), rtol=1e-5, atol=1e-5)
