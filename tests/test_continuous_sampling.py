"""ContinuousSampler against the static Sampler: the same tokens, masks, truncation flags and
log-probs (float32 rounding) on skewed EOS lengths with more rows than slots, greedy and
sampled, n > 1, on one device and a 2x2x2 mesh; and the Transformer's per-row cache_index.

Log-probs are compared at atol 1e-5: both samplers compute the same float32 math, but reduce
attention over other cache lengths (the static cache grows in segments, the slot cache is full
length; the refill prefill has its own P-1 cache) and matmuls over other batch sizes, which
moves log-probs of magnitude <= ~10 by a few float32 ulps (~2e-6 seen), far below 1e-5.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.continuous_sampling import ContinuousSampler, slot_widths
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.sampling import Sampler

TINY = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   mlp_dim=64, max_seq_len=128, qkv_bias=True, tie_embeddings=False)
N_NEW, PAD, SLOTS = 16, 0, 4
PROMPTS = [[5, 9, 13], list(range(1, 21)), [7], [3, 4, 8, 15, 16, 23, 42], [11, 2],
           [60, 61, 62, 63, 1]]
GREEDY = dict(greedy=True)
SAMPLED = dict(rng=jax.random.key(7), temperature=0.8, top_k=8, n=2)
FIELDS = ("prompt_tokens", "prompt_mask", "completions", "completion_mask", "lengths",
          "truncated")


@pytest.fixture(scope="module")
def tiny():
  """A tiny model whose head is scaled up so its next-token distributions are peaked."""
  model = Transformer(TINY)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 30.0
  return model, params


def _skewed_stop(completions: np.ndarray) -> int:
  """The token whose first occurrence spreads the rows' lengths most (absent: N, truncated)."""
  def lengths(tok):
    return [np.flatnonzero(r == tok)[0] + 1 if (r == tok).any() else N_NEW for r in completions]
  return int(max(np.unique(completions), key=lambda tok: np.std(lengths(tok))))


@pytest.fixture(scope="module")
def static(tiny):
  """Static reference outputs per mode, with an EOS chosen (from a run without one) so row
  lengths are skewed: some rows stop within a few tokens, some run to the budget."""
  model, params = tiny
  sampler = Sampler(model, decode_segments=2)
  refs = {}
  for name, kw in (("greedy", GREEDY), ("sampled", SAMPLED)):
    free = sampler(params, PROMPTS, max_new_tokens=N_NEW, eos_id=None, pad_id=PAD, **kw)
    eos = _skewed_stop(free.completions)
    out = sampler(params, PROMPTS, max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD, **kw)
    assert out.lengths.min() <= N_NEW // 4 and out.truncated.any(), out.lengths  # skewed
    refs[name] = (eos, out)
  return refs


def _assert_same(got, want):
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
  np.testing.assert_allclose(got.sampling_logprobs, want.sampling_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_continuous_equals_static(tiny, static, mode):
  model, params = tiny
  eos, want = static[mode]
  sampler = ContinuousSampler(model, num_slots=SLOTS)
  got = sampler(params, PROMPTS, max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD,
                **(GREEDY if mode == "greedy" else SAMPLED))
  assert len(want.lengths) > SLOTS  # rows wait for slots: refills happen
  _assert_same(got, want)
  # Refilled slots keep busy: fewer batched steps than row-steps over the slots.
  assert got.num_decode_steps < -(-len(want.lengths) // SLOTS) * N_NEW


def test_continuous_on_mesh_equals_one_device_static(tiny, static):
  """2x2x2 mesh: 8 slots over the data axes, filler rows (10 rows -> 12), a narrower tail."""
  model, params = tiny
  eos, want = static["sampled"]
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sampler = ContinuousSampler(model, mesh, num_slots=6)  # rounded up to 8
  got = sampler(params, PROMPTS[:5], max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD, **SAMPLED)
  assert got.completions.shape == (10, N_NEW)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(got, f), getattr(want, f)[:10], err_msg=f)
  np.testing.assert_allclose(got.logprobs, want.logprobs[:10], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got.sampling_logprobs, want.sampling_logprobs[:10], atol=1e-5,
                             rtol=0)


def test_per_row_cache_index_equals_scalar_index_per_row(tiny):
  """Rows writing at their own cache slots (default positions and mask) give the logits and
  cache each row gets alone with a scalar index."""
  model, params = tiny
  cache_len, index = 12, np.array([3, 7])
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, TINY.vocab_size, (2, 2)), jnp.int32)  # T = 2 per row
  shape = (2, TINY.num_kv_heads, cache_len, TINY.head_dim)
  cache = [{k: jnp.asarray(rng.normal(size=shape), jnp.float32) for k in ("k", "v")}
           for _ in range(TINY.num_layers)]
  apply = jax.jit(lambda c, t, i: model.apply({"params": params}, t, cache=c, cache_index=i))
  logits, new = apply(cache, tokens, jnp.asarray(index, jnp.int32))
  for b in range(2):
    row_cache = [{k: v[b:b + 1] for k, v in layer.items()} for layer in cache]
    want, want_cache = apply(row_cache, tokens[b:b + 1], jnp.int32(index[b]))
    np.testing.assert_allclose(logits[b:b + 1], want, atol=1e-5, rtol=0)
    for layer, want_layer in zip(new, want_cache):
      for k in ("k", "v"):
        np.testing.assert_allclose(layer[k][b:b + 1], want_layer[k], atol=1e-6, rtol=0)
  # Only the two written slots of each row changed.
  changed = np.any(np.asarray(new[0]["k"] != cache[0]["k"]), axis=(1, 3))  # [B, S]
  written = [[i in (3, 4) for i in range(cache_len)], [i in (7, 8) for i in range(cache_len)]]
  np.testing.assert_array_equal(changed, written)


def test_slot_widths_and_bad_arguments(tiny):
  assert slot_widths(32, 2, 1) == (32, 8)
  assert slot_widths(32, 3, 1) == (32, 8, 2)
  assert slot_widths(8, 3, 4) == (8, 4)  # rounded up to the data-parallel size, deduplicated
  assert slot_widths(5, 1, 4) == (8,)
  for kw in (dict(num_slots=0), dict(num_slots=4, refill_rows=0), dict(num_slots=4,
                                                                          tail_stages=0)):
    with pytest.raises(ValueError, match="must be >= 1"):
      ContinuousSampler(tiny[0], **kw)
