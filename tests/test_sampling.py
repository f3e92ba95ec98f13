"""Sampler: KV-cache decode against full recompute, teacher-forced log-probs, batch invariance,
truncated-distribution statistics, EOS / early exit, n samples per prompt, and a 2x2x2 mesh."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.sampling import (Sampler, left_pad, naive_generate, row_keys, sample_tokens,
                            truncate_logits,
                            segment_ends, sequence_logprobs, token_logprobs)

TINY = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   mlp_dim=64, max_seq_len=128, qkv_bias=True, tie_embeddings=False)
N_NEW = 10
PAD = 0
PROMPTS = [[5, 9, 13], list(range(1, 21)), [7], [3, 4, 8, 15, 16, 23, 42]]  # 3, 20, 1, 7 tokens
SAMPLE = dict(temperature=1.0, eos_id=None, pad_id=PAD, max_new_tokens=N_NEW)


@pytest.fixture(scope="module")
def tiny():
  """A tiny model whose head is scaled up so its next-token distributions are peaked."""
  model = Transformer(TINY)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 30.0
  return model, params


@pytest.fixture(scope="module")
def sampler(tiny):
  """One decode loop over the full cache (compiles fastest); segments are tested against it."""
  return Sampler(tiny[0], decode_segments=1)


@pytest.fixture(scope="module")
def greedy_out(tiny, sampler):
  return sampler(tiny[1], PROMPTS, greedy=True, **SAMPLE)


@pytest.fixture(scope="module")
def sampled_out(tiny, sampler):
  return sampler(tiny[1], PROMPTS, rng=jax.random.key(7), n=2, **SAMPLE)


@pytest.fixture(scope="module")
def teacher_forced(tiny):
  fn = jax.jit(lambda p, t, m: sequence_logprobs(tiny[0], p, t, m))
  return lambda out: np.asarray(fn(tiny[1], *out.sequences()))[:, out.prompt_tokens.shape[1] - 1:]


def test_token_logprobs_hand_values():
  logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  got = token_logprobs(logits, jnp.array([2, 0]))
  np.testing.assert_allclose(got, [3.0 - np.log(np.e + np.e**2 + np.e**3), -np.log(3.0)],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="disagree"):
    token_logprobs(logits, jnp.array([0]))


def test_left_pad_layout():
  tokens, mask = left_pad([[4, 5], [6]], pad_id=9, length=3)
  np.testing.assert_array_equal(tokens, [[9, 4, 5], [9, 9, 6]])
  np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 1]])


def test_row_keys_are_distinct_and_independent_of_the_batch():
  keys = jax.random.key_data(row_keys(jax.random.key(0), jnp.array([0, 1, 0, 1]),
                                      jnp.array([0, 0, 1, 1])))  # (prompt, sample) pairs
  assert len({tuple(np.asarray(k).tolist()) for k in keys}) == 4
  alone = jax.random.key_data(row_keys(jax.random.key(0), jnp.array([1]), jnp.array([0])))
  np.testing.assert_array_equal(alone[0], keys[1])


def test_greedy_cache_decode_equals_full_recompute(tiny, greedy_out):
  model, params = tiny
  out = greedy_out
  assert out.completions.shape == (4, N_NEW) and out.prompt_tokens.shape == (4, 20)
  np.testing.assert_array_equal(out.prompt_tokens[0, -4:], [PAD, 5, 9, 13])
  np.testing.assert_array_equal(out.prompt_mask.sum(1), [3, 20, 1, 7])
  tokens, logprobs = naive_generate(model, params, out.prompt_tokens, N_NEW, out.prompt_mask)
  np.testing.assert_array_equal(out.completions, tokens)
  np.testing.assert_allclose(out.logprobs, logprobs, atol=1e-5, rtol=0)
  assert out.completion_mask.all() and out.truncated.all() and (out.lengths == N_NEW).all()
  assert out.num_decode_steps == N_NEW
  np.testing.assert_array_equal(out.sampling_logprobs, 0.0)  # greedy: a point mass


def test_logprobs_equal_teacher_forced_pass(sampled_out, teacher_forced):
  out = sampled_out
  want = teacher_forced(out)
  np.testing.assert_allclose(out.logprobs, want, atol=1e-5, rtol=0)
  # At temperature 1 without truncation the sampling distribution is the policy itself.
  np.testing.assert_allclose(out.sampling_logprobs, out.logprobs, atol=1e-6, rtol=0)
  assert (out.logprobs < 0).all()


def test_tempered_truncated_sampling_reports_both_distributions(tiny, sampler, teacher_forced):
  model, params = tiny
  out = sampler(params, PROMPTS, rng=jax.random.key(3), temperature=0.7, top_k=5, top_p=0.9,
                eos_id=None, pad_id=PAD, max_new_tokens=N_NEW)
  np.testing.assert_allclose(out.logprobs, teacher_forced(out), atol=1e-5, rtol=0)
  tokens, mask = out.sequences()
  forward = jax.jit(lambda p, t, m: model.apply(
      {"params": p}, t, positions=jnp.cumsum(m, 1) - 1,
      attention_mask=jnp.tril(jnp.ones((30, 30), bool))[None] & m[:, None, :]))
  logits = np.asarray(forward(params, tokens, mask), np.float64)[:, 19:-1] / 0.7  # [4, N, V]
  for r in range(4):
    for t in range(N_NEW):
      probs = np.exp(logits[r, t] - logits[r, t].max())
      probs /= probs.sum()
      support = _reference_support(probs, top_k=5, top_p=0.9)
      tok = out.completions[r, t]
      assert tok in support
      want = np.log(probs[tok] / probs[support].sum())
      np.testing.assert_allclose(out.sampling_logprobs[r, t], want, atol=1e-5)


def _reference_support(probs: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
  """Token ids kept by top-k then top-p, written as a plain loop over the sorted tokens."""
  order = np.argsort(-probs, kind="stable")
  kept = order[:top_k] if top_k else order
  mass, total, support = 0.0, probs[kept].sum(), []
  for tok in kept:
    support.append(tok)
    mass += probs[tok] / total
    if mass >= top_p:
      break
  return np.array(support)


@pytest.mark.parametrize("candidates", [4, 64])
def test_nucleus_from_candidates_equals_full_sort(candidates):
  """The top-k shortcut and the full-sort fallback keep exactly the reference nucleus.

  Peaked rows put >= top_p of the mass in the first 4 tokens (shortcut); flat rows do not, so
  with 4 candidates the batch takes the full sort, with 64 the shortcut covers both.
  """
  rng = np.random.default_rng(0)
  peaked = rng.normal(size=(6, 50)) + np.where(np.arange(50) < 3, 8.0, 0.0)
  flat = rng.normal(size=(6, 50)) * 0.3
  for logits in (peaked, flat, np.concatenate([peaked, flat])):
    for top_p in (0.5, 0.9, 0.95):
      got = np.asarray(jax.jit(truncate_logits, static_argnums=(1, 3))(
          jnp.asarray(logits, jnp.float32), 0, jnp.float32(top_p), candidates))
      for row, out in zip(logits, got):
        probs = np.exp(row - row.max())
        want = np.zeros(50, bool)
        want[_reference_support(probs / probs.sum(), 0, top_p)] = True
        np.testing.assert_array_equal(np.isfinite(out), want)
        np.testing.assert_array_equal(out[want], row[want].astype(np.float32))


@pytest.mark.parametrize("greedy", [True, False])
def test_prompt_alone_equals_prompt_in_left_padded_batch(tiny, sampler, greedy, greedy_out,
                                                        sampled_out):
  """Seeded sampling too: a row's key depends on (rng, prompt id, sample index, step) only."""
  params = tiny[1]
  batch, n = (greedy_out, 1) if greedy else (sampled_out, 2)
  for i in (0, 2, 3):  # 3, 1 and 7 tokens: left-padded to 16 alone, to 32 in the batch
    alone = sampler(params, [PROMPTS[i]], prompt_ids=[i], greedy=greedy, rng=jax.random.key(7),
                    n=n, **SAMPLE)
    rows = slice(i * n, i * n + n)  # row i * n + j is sample j of prompt i
    np.testing.assert_array_equal(alone.completions, batch.completions[rows])
    np.testing.assert_allclose(alone.logprobs, batch.logprobs[rows], atol=1e-5, rtol=0)
    np.testing.assert_allclose(alone.sampling_logprobs, batch.sampling_logprobs[rows],
                               atol=1e-5, rtol=0)


def test_cached_sampling_equals_full_recompute_sampling(tiny, sampler):
  model, params = tiny
  kwargs = dict(rng=jax.random.key(5), temperature=0.8, top_k=5, top_p=0.9, pad_id=PAD)
  out = sampler(params, PROMPTS, max_new_tokens=N_NEW, eos_id=None, **kwargs)
  tokens, _ = naive_generate(model, params, out.prompt_tokens, N_NEW, out.prompt_mask,
                             greedy=False, **kwargs)
  np.testing.assert_array_equal(out.completions, tokens)


# Hand-made distribution p = [.4, .3, .15, .1, .05] and what each truncation leaves of it.
HAND_P = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
TRUNCATED = [
    (dict(), HAND_P),
    (dict(top_k=2), np.array([0.4, 0.3, 0, 0, 0]) / 0.7),
    (dict(top_p=0.75), np.array([0.4, 0.3, 0.15, 0, 0]) / 0.85),
    (dict(top_p=0.3), np.array([1.0, 0, 0, 0, 0])),
    (dict(top_k=3, top_p=0.6), np.array([0.4, 0.3, 0, 0, 0]) / 0.7),  # .4/.85 < .6 <= .7/.85
    (dict(temperature=2.0), np.sqrt(HAND_P) / np.sqrt(HAND_P).sum()),
]


@pytest.mark.parametrize("kwargs,want", TRUNCATED)
def test_sample_frequencies_match_truncated_distribution(kwargs, want):
  n = 40_000
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(HAND_P, jnp.float32)), (n, 5))
  keys = jax.random.split(jax.random.key(0), n)
  top_p = kwargs.get("top_p")
  tokens, slp = jax.jit(lambda lg, k: sample_tokens(
      lg, k, jnp.float32(kwargs.get("temperature", 1.0)), greedy=False,
      top_k=kwargs.get("top_k", 0), top_p=None if top_p is None else jnp.float32(top_p)))(
          logits, keys)
  freq = np.bincount(np.asarray(tokens), minlength=5) / n
  sigma = np.sqrt(want * (1 - want) / n)
  assert (np.abs(freq - want) <= 5 * sigma + 1e-12).all(), (freq, want)
  assert (freq[want == 0] == 0).all()
  np.testing.assert_allclose(slp, np.log(want[np.asarray(tokens)]), atol=1e-5)


def test_sampler_first_token_frequencies(tiny, sampler):
  """Many samples of one prompt's first token against the truncated model distribution."""
  model, params = tiny
  n, temp, top_k, top_p = 3000, 1.5, 8, 0.8
  prompt = [3, 1, 4, 1, 5, 9, 2, 6]
  out = sampler(params, [prompt], rng=jax.random.key(2), n=n, max_new_tokens=1,
                temperature=temp, top_k=top_k, top_p=top_p, eos_id=None, pad_id=PAD)
  logits = np.asarray(model.apply({"params": params}, jnp.array([prompt]))[0, -1], np.float64)
  probs = np.exp((logits - logits.max()) / temp)
  probs /= probs.sum()
  support = _reference_support(probs, top_k, top_p)
  want = np.zeros_like(probs)
  want[support] = probs[support] / probs[support].sum()
  assert 3 <= len(support) < top_k  # the nucleus, not top-k, is binding here
  freq = np.bincount(out.completions[:, 0], minlength=TINY.vocab_size) / n
  sigma = np.sqrt(want * (1 - want) / n)
  assert (np.abs(freq - want) <= 5 * sigma + 1e-12).all(), (freq[support], want[support])
  assert freq[want == 0].sum() == 0


def test_eos_stops_each_row_and_masks_the_rest(tiny, sampler, greedy_out):
  model, params = tiny
  ref = greedy_out.completions  # greedy without EOS: a stopped row is a prefix of it
  eos = int(ref[0, 3])
  out = sampler(params, PROMPTS, greedy=True, max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD)
  steps = 0
  for r in range(len(PROMPTS)):
    hits = np.flatnonzero(ref[r] == eos)
    length = hits[0] + 1 if len(hits) else N_NEW
    steps = max(steps, length)
    np.testing.assert_array_equal(out.completions[r, :length], ref[r, :length])
    np.testing.assert_array_equal(out.completions[r, length:], PAD)
    np.testing.assert_array_equal(out.completion_mask[r], np.arange(N_NEW) < length)
    np.testing.assert_array_equal(out.logprobs[r, length:], 0.0)
    np.testing.assert_allclose(out.logprobs[r, :length], greedy_out.logprobs[r, :length],
                               atol=1e-5)
    assert out.lengths[r] == length and out.truncated[r] == (len(hits) == 0)
  assert out.num_decode_steps == (steps if not out.truncated.any() else N_NEW)
  assert not out.truncated[0] and out.lengths[0] <= 4


def test_early_exit_when_every_row_stops_at_the_first_token(tiny, sampler, greedy_out):
  model, params = tiny
  firsts = sorted(set(greedy_out.completions[:, 0].tolist()))
  out = sampler(params, PROMPTS, greedy=True, max_new_tokens=N_NEW, eos_id=None, pad_id=PAD,
                stop_ids=firsts)
  assert out.num_decode_steps == 1
  np.testing.assert_array_equal(out.completions[:, 0], greedy_out.completions[:, 0])
  np.testing.assert_array_equal(out.completions[:, 1:], PAD)
  np.testing.assert_array_equal(out.lengths, 1)
  assert not out.truncated.any()


def test_n_samples_per_prompt_are_grouped_by_prompt(sampled_out):
  out = sampled_out
  assert out.completions.shape == (8, N_NEW)
  for i, prompt in enumerate(PROMPTS):
    group = slice(2 * i, 2 * i + 2)
    np.testing.assert_array_equal(out.prompt_tokens[group, -len(prompt):], [prompt, prompt])
    np.testing.assert_array_equal(out.prompt_mask[group].sum(1), [len(prompt)] * 2)
  assert (out.completions[0::2] != out.completions[1::2]).any(axis=1).all()  # samples differ


def test_sharded_sampler_matches_one_device(tiny, greedy_out, sampled_out):
  model, params = tiny
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = Sampler(model, mesh)
  greedy = sharded(params, PROMPTS, greedy=True, **SAMPLE)
  np.testing.assert_array_equal(greedy.completions, greedy_out.completions)
  np.testing.assert_allclose(greedy.logprobs, greedy_out.logprobs, atol=1e-5, rtol=0)
  sampled = sharded(params, PROMPTS[:3], rng=jax.random.key(7), n=2, **SAMPLE)  # 6 rows -> 8
  np.testing.assert_array_equal(sampled.completions, sampled_out.completions[:6])
  np.testing.assert_allclose(sampled.logprobs, sampled_out.logprobs[:6], atol=1e-5, rtol=0)


def test_array_prompts_and_bad_inputs(tiny, sampler, greedy_out):
  model, params = tiny
  out = sampler(params, greedy_out.prompt_tokens, prompt_mask=greedy_out.prompt_mask,
                greedy=True, **SAMPLE)
  np.testing.assert_array_equal(out.completions, greedy_out.completions)
  bad = [
      (dict(prompts=[[1, 2], []]), "at least one token"),
      (dict(prompts=np.ones((1, 3), np.int32), prompt_mask=np.array([[1, 1, 0]])), "left-padded"),
      (dict(prompts=[[1, 64]]), r"prompt token ids"),
      (dict(prompts=[[1]], top_p=0.0), "top_p"),
      (dict(prompts=[[1]], top_k=65), "top_k"),
      (dict(prompts=[[1]], temperature=0.0), "temperature"),
      (dict(prompts=[[1]], rng=None), "needs an rng"),
      (dict(prompts=[[1]], max_new_tokens=200), "max_seq_len"),
      (dict(prompts=[[1]], max_new_tokens=0), "max_new_tokens"),
      (dict(prompts=[[1]], eos_id=70), "stop ids"),
  ]
  for overrides, match in bad:
    kwargs = dict(rng=jax.random.key(0), **SAMPLE)
    kwargs.update(overrides)
    prompts = kwargs.pop("prompts")
    with pytest.raises(ValueError, match=match):
      sampler(params, prompts, **kwargs)


def test_sequence_logprobs_on_packed_rows_equal_separate_rows(tiny):
  model, params = tiny
  a, b = [4, 8, 15, 16, 23], [42, 7, 9]
  packed = jnp.array([a + b])
  seg = jnp.array([[1] * 5 + [2] * 3])
  pos = jnp.array([list(range(5)) + list(range(3))])
  fn = jax.jit(sequence_logprobs, static_argnums=0)
  got = fn(model, params, packed, seg, pos)[0]  # [7]
  want_a = fn(model, params, jnp.array([a]), jnp.ones((1, 5), bool))[0]
  want_b = fn(model, params, jnp.array([b]), jnp.ones((1, 3), bool))[0]
  np.testing.assert_allclose(got[:4], want_a, atol=1e-5, rtol=0)
  np.testing.assert_allclose(got[5:], want_b, atol=1e-5, rtol=0)  # got[4] crosses the boundary


def test_growing_cache_in_segments_changes_nothing(tiny, sampled_out):
  """Default sampler: the cache grows at steps 1, 2, 5 (of 10); EOS exits inside a segment."""
  model, params = tiny
  assert segment_ends(N_NEW, 4) == [1, 2, 5, 10]
  ref = sampled_out  # one loop over the full cache, no EOS: a stopped row is a prefix of it
  eos = int(ref.completions[0, 3])
  out = Sampler(model)(params, PROMPTS, rng=jax.random.key(7), n=2, **{**SAMPLE, "eos_id": eos})
  for r, row in enumerate(ref.completions):
    stop = np.flatnonzero(row == eos)
    length = stop[0] + 1 if len(stop) else N_NEW
    np.testing.assert_array_equal(out.completions[r, :length], row[:length])
    np.testing.assert_array_equal(out.completions[r, length:], PAD)
    np.testing.assert_allclose(out.logprobs[r, :length], ref.logprobs[r, :length],
                               atol=1e-5, rtol=0)
    assert out.lengths[r] == length
