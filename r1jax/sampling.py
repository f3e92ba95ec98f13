"""Jitted prefill + KV-cache decode, with the per-token log-probs GRPO trains on.

One jitted function per static configuration does everything on device: prefill of the
left-padded prompts into a KV cache, then a `lax.while_loop` that samples one token per step
and exits as soon as every row has stopped. The log-probs it returns come from
`token_logprobs`, the same gather `sequence_logprobs` (the trainer's teacher-forced pass) uses,
so sampler and trainer cannot disagree beyond float32 rounding.

Row layout: row `i * n + j` is sample j of prompt i. Each row draws from its own key,
fold_in(fold_in(fold_in(rng, prompt_id), j), step), so a prompt samples the same tokens alone
or inside any batch, given the same prompt id.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import multihost, sharding
from r1jax.errors import ConfigError
from r1jax.models.transformer import CACHE_LOGICAL_AXES, Transformer, init_cache
from r1jax.rl import losses


@dataclasses.dataclass(frozen=True)
class SamplerOutput:
  """Host arrays; M = num_prompts * n rows, P = longest prompt, N = max_new_tokens.

  `logprobs` are the policy's own log-probs (temperature 1, no top-k / top-p): exactly what the
  trainer recomputes with `sequence_logprobs`, so GRPO's old/new ratio starts at 1.
  `sampling_logprobs` are under the distribution actually sampled from (0 for greedy).
  """

  prompt_tokens: np.ndarray  # [M, P] int32, left-padded with pad_id
  prompt_mask: np.ndarray  # [M, P] bool
  completions: np.ndarray  # [M, N] int32; the stop token is kept, pad_id after it
  completion_mask: np.ndarray  # [M, N] bool; True for generated tokens, stop token included
  logprobs: np.ndarray  # [M, N] float32; log softmax(logits) of the policy (T=1, untruncated)
  sampling_logprobs: np.ndarray  # [M, N] float32; under the tempered, truncated distribution
  lengths: np.ndarray  # [M] int32 = completion_mask.sum(1)
  truncated: np.ndarray  # [M] bool; no stop token within N
  num_decode_steps: int  # decode-loop iterations run (< N when every row stopped early)

  def sequences(self) -> tuple[np.ndarray, np.ndarray]:
    """[prompt ; completion] rows: tokens [M, P+N], mask [M, P+N].

    `sequence_logprobs(model, params, *out.sequences())[:, P-1:]` reproduces `logprobs` where
    `completion_mask` is set (positions come from the mask, as in the sampler).
    """
    return (np.concatenate([self.prompt_tokens, self.completions], 1),
            np.concatenate([self.prompt_mask, self.completion_mask], 1))


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[tokens] in float32; the trainer's own function, so the two agree."""
  return losses.log_probs_from_logits(logits, tokens)


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """[B, L] positions counting only real tokens, so left padding does not shift RoPE."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def sequence_logprobs(model: Transformer, params: Any, tokens: jax.Array, mask: jax.Array,
                      positions: jax.Array | None = None) -> jax.Array:
  """Teacher-forced log p(tokens[:, t+1] | tokens[:, :t+1]): tokens, mask [B, L] -> [B, L-1].

  `mask` marks real tokens (or holds segment ids for packed rows: attention stays within a
  non-zero segment; pass `positions` then). Float32, temperature 1: what the sampler returns.
  """
  if tokens.shape != mask.shape or tokens.ndim != 2:
    raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must both be [B, L]")
  seg = mask.astype(jnp.int32)
  if positions is None:
    positions = positions_from_mask(seg)
  length = tokens.shape[1]
  causal = jnp.tril(jnp.ones((length, length), bool))[None]
  attn = causal & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)  # [B, L, L]
  logits = model.apply({"params": params}, tokens, positions=positions, attention_mask=attn)
  return token_logprobs(logits[:, :-1], tokens[:, 1:])


NUCLEUS_CANDIDATES = 256  # top-p looks at this many tokens first; a full sort only if short


def _nucleus_cutoff(srt: jax.Array, lse: jax.Array, top_p: jax.Array) -> jax.Array:
  """Smallest kept logit, given logits sorted descending [B, K] and the full logsumexp [B, 1]."""
  probs = jnp.exp(srt - lse)
  before = jnp.cumsum(probs, axis=-1) - probs  # probability mass strictly above each token
  keep = before < top_p  # the top token has 0 mass above it: always kept (top_p > 0)
  return jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)  # [B, 1]


def truncate_logits(logits: jax.Array, top_k: int, top_p: jax.Array | None,
                    candidates: int = NUCLEUS_CANDIDATES) -> jax.Array:
  """Sets logits outside the top-k / nucleus to -inf: [B, V] -> [B, V] float32.

  Nucleus: the smallest set of most likely tokens with probability >= top_p (the top token is
  always kept). Tokens tied with the last kept logit are kept too. The nucleus is found among
  the `candidates` most likely tokens when they hold >= top_p of the mass in every row (nearly
  always at T <= 1); otherwise by sorting the whole vocabulary, which on CPU costs ~50x more
  (300 ms against 6 ms for 32 rows of a 49k vocabulary). Both give the same cutoff.
  """
  x = logits.astype(jnp.float32)
  if top_k:
    kth = jax.lax.top_k(x, top_k)[0][:, -1:]  # [B, 1]
    x = jnp.where(x < kth, -jnp.inf, x)
  if top_p is not None:
    lse = jax.nn.logsumexp(x, axis=-1, keepdims=True)  # [B, 1]
    top = jax.lax.top_k(x, min(candidates, x.shape[-1]))[0]  # [B, K] descending
    covered = jnp.all(jnp.sum(jnp.exp(top - lse), axis=-1) >= top_p)
    full = lambda: _nucleus_cutoff(jnp.sort(x, axis=-1)[:, ::-1], lse, top_p)
    cutoff = jax.lax.cond(covered, lambda: _nucleus_cutoff(top, lse, top_p), full)
    x = jnp.where(x < cutoff, -jnp.inf, x)
  return x


def first_argmax(x: jax.Array) -> jax.Array:
  """argmax over the last axis (first index on ties) as max + min-index: two plain reductions
  that XLA:CPU vectorises, where jnp.argmax's (value, index) reduction runs ~5x slower."""
  top = jnp.max(x, axis=-1, keepdims=True)
  ids = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == top, ids, x.shape[-1] - 1), axis=-1)  # NaN rows: last id


def sample_tokens(logits: jax.Array, keys: jax.Array, temperature: jax.Array, *, greedy: bool,
                  top_k: int = 0, top_p: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """One token per row: logits [B, V], keys [B] -> (tokens [B] int32, sampling log-probs [B]).

  Greedy takes the argmax (its sampling log-prob is 0: a point mass). Otherwise the logits are
  divided by the temperature, truncated (`truncate_logits`) and sampled with each row's key
  by Gumbel-max, as `jax.random.categorical` does.
  """
  if greedy:
    return first_argmax(logits), jnp.zeros(logits.shape[:1], jnp.float32)
  x = truncate_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
  gumbel = jax.vmap(lambda k: jax.random.gumbel(k, x.shape[1:], jnp.float32))(keys)  # [B, V]
  tokens = first_argmax(x + gumbel)
  return tokens, token_logprobs(x, tokens)


def row_keys(rng: jax.Array, prompt_ids: jax.Array, sample_ids: jax.Array) -> jax.Array:
  """[M] keys, one per row, from (rng, prompt id, sample index): batch-invariant streams."""
  return jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(rng, p), s))(
      prompt_ids, sample_ids)


def check_prompts_fit(prompts: Sequence[Sequence[int]], names: Sequence[Any], max_new_tokens: int,
                      sampler: Any, budget: str = "max_new_tokens") -> None:
  """A ConfigError naming the first prompt whose tokens plus the completion budget exceed the
  sampler's model's context. Callers that know the prompts' ids check before sampling (and so
  before anything compiles): the sampler itself sees only a padded batch of anonymous rows.
  A sampler without a `model.config` (a stand-in) is not checked."""
  max_seq_len = getattr(getattr(getattr(sampler, "model", None), "config", None),
                        "max_seq_len", None)
  if max_seq_len is None:
    return
  for ids, name in zip(prompts, names):
    if len(ids) + max_new_tokens > max_seq_len:
      raise ConfigError(
          f"prompt {str(name)!r} is {len(ids)} tokens; with {budget}={max_new_tokens} it needs "
          f"{len(ids) + max_new_tokens} positions, more than the model's max_seq_len "
          f"{max_seq_len} (shorten the prompt or the template, or lower {budget})")


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int,
             length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Lists of token ids -> left-padded tokens [B, length] int32 and mask [B, length] bool."""
  longest = max((len(p) for p in prompts), default=0)
  length = longest if length is None else length
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  if longest > length:
    raise ValueError(f"prompt of {longest} tokens does not fit length {length}")
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, p in enumerate(prompts):
    tokens[i, length - len(p):] = p
    mask[i, length - len(p):] = True
  return tokens, mask


@dataclasses.dataclass(frozen=True)
class _Static:
  """Everything that shapes the compiled decode (one compilation each)."""
  max_new_tokens: int
  greedy: bool
  top_k: int
  use_top_p: bool
  segments: int = 1


def segment_ends(max_new_tokens: int, segments: int) -> list[int]:
  """Step counts at which the decode cache grows: N/2^(k-1), ..., N/4, N/2, N.

  Attention reads the whole cache every step, so a cache sized for the final length makes
  early steps pay for slots not yet written. Growing it in k geometric stages (k copies of the
  compiled step) cuts the slots read per step from P + N to about P + 2N/3 for k = 4.
  """
  ends = [max(1, max_new_tokens >> i) for i in reversed(range(segments))]
  return sorted(set(ends))


def _constrain_cache(cache):
  return [{k: nn.with_logical_constraint(v, CACHE_LOGICAL_AXES) for k, v in layer.items()}
          for layer in cache]


def _stop_array(stop_ids: Sequence[int]) -> np.ndarray:
  """Stop ids padded with -1 (never a token) to a multiple of 8: new ids seldom recompile."""
  out = np.full(max(8, -(-len(stop_ids) // 8) * 8), -1, np.int32)
  out[:len(stop_ids)] = stop_ids
  return out


def _next_tokens(logits, keys, t, done, temperature, top_p, stop, pad_id, st: _Static):
  """One decode step's bookkeeping, shared by `Sampler` and `naive_generate`.

  logits [B, V], per-row keys [B], done [B] -> tokens [B] (pad_id once done), policy and
  sampling log-probs [B] (0 once done), and the updated done flags.
  """
  step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
  new, slp = sample_tokens(logits, step_keys, temperature, greedy=st.greedy, top_k=st.top_k,
                           top_p=top_p if st.use_top_p else None)
  lp = jnp.where(done, 0.0, token_logprobs(logits, new))
  slp = jnp.where(done, 0.0, slp)
  new = jnp.where(done, pad_id, new)
  return new, lp, slp, done | jnp.any(new[:, None] == stop[None, :], axis=1)


def _generate(params, tokens, mask, rows_valid, prompt_ids, sample_ids, rng, temperature, top_p,
              stop, pad_id, *, model: Transformer, st: _Static):
  """tokens, mask [B, P] (left-padded) -> completions, masks and log-probs [B, N]."""
  b, p = tokens.shape
  n_new = st.max_new_tokens
  ends = segment_ends(n_new, st.segments)
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
  positions = positions_from_mask(mask)  # [B, P]
  plen = jnp.sum(mask.astype(jnp.int32), axis=1)  # [B]
  # Cache slots: the prompt, then every generated token but the last.
  key_valid = jnp.concatenate([mask, jnp.zeros((b, n_new - 1), bool)], axis=1)  # [B, P+N-1]
  cache = _constrain_cache(init_cache(model.config, b, p - 1 + ends[0]))
  if p > 1:  # all but the last prompt token; the loop's first step feeds that one
    slots = jnp.arange(p - 1 + ends[0])
    attn = ((slots[None, None, :] <= jnp.arange(p - 1)[None, :, None])
            & key_valid[:, None, :slots.shape[0]])
    _, cache = apply(tokens[:, :-1], positions=positions[:, :-1], attention_mask=attn,
                     cache=cache, cache_index=0, return_hidden=True)
  keys = row_keys(rng, prompt_ids, sample_ids)  # [B]

  def body(carry):
    t, cache, last, done, out_tok, out_mask, out_lp, out_slp = carry
    slot = p - 1 + t  # where `last` goes in the cache
    slots = jnp.arange(cache[0]["k"].shape[2])
    attn = (key_valid[:, :slots.shape[0]] | ((slots >= p) & (slots <= slot)))[:, None, :]
    logits, cache = apply(last[:, None], positions=(plen - 1 + t)[:, None],
                          attention_mask=attn, cache=cache, cache_index=slot)  # [B, 1, V]
    new, lp, slp, new_done = _next_tokens(logits[:, 0], keys, t, done, temperature, top_p, stop,
                                          pad_id, st)
    col = lambda buf, v: jax.lax.dynamic_update_slice_in_dim(buf, v[:, None], t, 1)
    out_tok, out_mask = col(out_tok, new), col(out_mask, ~done)
    out_lp, out_slp = col(out_lp, lp), col(out_slp, slp)
    return t + 1, _constrain_cache(cache), new, new_done, out_tok, out_mask, out_lp, out_slp

  zeros = jnp.zeros((b, n_new), jnp.float32)
  carry = (jnp.int32(0), cache, tokens[:, -1], ~rows_valid,
           jnp.full((b, n_new), pad_id, jnp.int32), jnp.zeros((b, n_new), bool), zeros, zeros)
  for i, end in enumerate(ends):  # one loop per cache length; each exits once all rows stop
    if i:
      grow = ((0, 0), (0, 0), (0, end - ends[i - 1]), (0, 0))
      cache = _constrain_cache([{k: jnp.pad(v, grow) for k, v in layer.items()}
                                for layer in carry[1]])
      carry = (carry[0], cache, *carry[2:])
    cond = lambda c, end=end: (c[0] < end) & ~jnp.all(c[3])
    carry = jax.lax.while_loop(cond, body, carry)
  t, _, _, done, out_tok, out_mask, out_lp, out_slp = carry
  return dict(completions=out_tok, completion_mask=out_mask, logprobs=out_lp,
              sampling_logprobs=out_slp, stopped=done, num_decode_steps=t)


class Sampler:
  """Batched sampling from a `Transformer`, sharded on `mesh` like the model (or one device).

  Prompt length is rounded up to `length_bucket` and the row count to a multiple of the
  data-parallel size, so a run with varying prompts compiles only a few times.
  `decode_segments` sets how often the KV cache grows during decode (`segment_ends`).
  """

  refills = False  # a finished row's place stays idle until the call ends (ContinuousSampler)

  def __init__(self, model: Transformer, mesh: jax.sharding.Mesh | None = None,
               rules=sharding.DEFAULT_RULES, length_bucket: int = 16, decode_segments: int = 4):
    if length_bucket < 1 or decode_segments < 1:
      raise ValueError(f"length_bucket={length_bucket} and decode_segments={decode_segments} "
                       "must be >= 1")
    self.model, self.mesh, self.rules, self.length_bucket = model, mesh, rules, length_bucket
    self.decode_segments = decode_segments
    self._compiled: dict[_Static, Any] = {}
    self._param_shardings = None
    self._dp = 1
    if mesh is not None:
      self._param_shardings = sharding.param_shardings(model, mesh, rules)
      batch_axes = sharding.logical_spec(("activation_batch",), rules)[0] or ()
      batch_axes = (batch_axes,) if isinstance(batch_axes, str) else batch_axes
      self._dp = math.prod(mesh.shape[a] for a in batch_axes)

  def __call__(self, params, prompts, *, rng: jax.Array | None = None, max_new_tokens: int,
               prompt_mask: np.ndarray | None = None, temperature: float = 1.0,
               top_p: float = 1.0, top_k: int = 0, greedy: bool = False, n: int = 1,
               eos_id: int | None, pad_id: int, stop_ids: Sequence[int] = (),
               prompt_ids: Sequence[int] | None = None) -> SamplerOutput:
    """Samples `n` completions per prompt (lists of ids, or left-padded tokens + `prompt_mask`).

    `eos_id` (None: no EOS) and `stop_ids` end a row; `prompt_ids` (default 0..B-1) seed each
    prompt's random stream, so equal ids give equal samples whatever the batch.
    """
    tokens, mask = self._check_prompts(prompts, prompt_mask, pad_id)
    vocab = self.model.config.vocab_size
    if max_new_tokens < 1 or n < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} and n={n} must be >= 1")
    if not greedy and not temperature > 0:
      raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
    if not 0.0 < top_p <= 1.0 or not 0 <= top_k <= vocab:
      raise ValueError(f"need 0 < top_p <= 1 and 0 <= top_k <= {vocab}: {top_p}, {top_k}")
    if rng is None and not greedy:
      raise ValueError("sampling needs an rng (or greedy=True)")
    stops = tuple(sorted({*stop_ids, *(() if eos_id is None else (eos_id,))}))
    if any(not 0 <= i < vocab for i in (*stops, pad_id)):
      raise ValueError(f"stop ids {stops} and pad_id {pad_id} must lie in [0, {vocab})")
    num_prompts, plen = tokens.shape
    first = jax.process_index() * num_prompts  # each process samples its own prompts
    ids = (first + np.arange(num_prompts) if prompt_ids is None
           else np.asarray(prompt_ids, np.int32))
    if ids.shape != (num_prompts,):
      raise ValueError(f"prompt_ids needs {num_prompts} entries, got shape {ids.shape}")
    if plen + max_new_tokens > self.model.config.max_seq_len:
      raise ValueError(f"{plen} prompt + {max_new_tokens} new tokens exceed max_seq_len "
                       f"{self.model.config.max_seq_len}")

    rows = np.repeat(np.arange(num_prompts), n)  # row i * n + j is sample j of prompt i
    batch = self._batch(tokens[rows], mask[rows], ids[rows], np.arange(len(rows)) % n, pad_id)
    st = _Static(max_new_tokens, bool(greedy), int(top_k) if not greedy else 0,
                 bool(top_p < 1.0) and not greedy, self.decode_segments)
    scalars = (jax.random.key(0) if rng is None else rng, jnp.float32(temperature),
               jnp.float32(top_p), _stop_array(stops), jnp.int32(pad_id))
    out = self._run(st, params, batch, scalars)
    m, trim = len(rows), batch[0].shape[1] - plen
    cmask = out["completion_mask"][:m]
    return SamplerOutput(
        prompt_tokens=batch[0][:m, trim:], prompt_mask=batch[1][:m, trim:],
        completions=out["completions"][:m], completion_mask=cmask,
        logprobs=out["logprobs"][:m], sampling_logprobs=out["sampling_logprobs"][:m],
        lengths=cmask.sum(1).astype(np.int32), truncated=~out["stopped"][:m],
        num_decode_steps=int(out["num_decode_steps"]))

  def _batch(self, tokens, mask, prompt_ids, sample_ids, pad_id) -> tuple[np.ndarray, ...]:
    """Pads [M, P] rows to the length bucket and M to this process's data-parallel size.

    Filler rows hold one pad token and start done, so they never delay the early exit. With
    several processes the bucket is the largest any of them needs (every process runs the same
    program) and M must be the same on each.
    """
    m, p = tokens.shape
    local_dp = max(self._dp // jax.process_count(), 1)
    m_pad = -(-m // local_dp) * local_dp
    p_pad = -(-multihost.agree_max(p) // self.length_bucket) * self.length_bucket
    tok = np.full((m_pad, p_pad), pad_id, np.int32)
    msk = np.zeros((m_pad, p_pad), bool)
    tok[:m, p_pad - p:], msk[:m, p_pad - p:] = tokens, mask
    msk[m:, -1] = True
    pad_rows = lambda x: np.pad(np.asarray(x, np.int32), (0, m_pad - m))
    return tok, msk, np.arange(m_pad) < m, pad_rows(prompt_ids), pad_rows(sample_ids)

  def _run(self, st: _Static, params, batch, scalars) -> dict[str, np.ndarray]:
    fn = self._compiled.get(st)
    if fn is None:
      fn = self._compiled[st] = jax.jit(lambda *a: _generate(*a, model=self.model, st=st))
    return self._execute(fn, params, batch, scalars)

  def _execute(self, fn, params, batch, scalars) -> dict[str, np.ndarray]:
    """Runs a compiled sampling program (`fn(params, *batch, *scalars)` -> {name: [rows, ...]})
    on the mesh: this process's rows in, this process's rows out."""
    if self.mesh is None:
      return jax.device_get(fn(params, *batch, *scalars))
    params = jax.device_put(params, self._param_shardings)
    batch = tuple(multihost.to_global(a, self.mesh) for a in batch)
    scalars = multihost.replicate(scalars, self.mesh)
    with sharding.mesh_rules(self.mesh, self.rules):
      out = fn(params, *batch, *scalars)
    return {k: multihost.to_local(v) for k, v in out.items()}  # this process's rows only

  def _check_prompts(self, prompts, prompt_mask, pad_id) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(prompts, (np.ndarray, jax.Array)):
      tokens = np.asarray(prompts, np.int32)
      mask = np.ones(tokens.shape, bool) if prompt_mask is None else np.asarray(prompt_mask, bool)
      if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(f"prompt tokens {tokens.shape} and mask {mask.shape} must be [B, P]")
      if not mask[:, -1].all() or (np.diff(mask.astype(np.int8), axis=1) < 0).any():
        raise ValueError("prompts must be left-padded and non-empty: mask 0...0 1...1 per row")
    else:
      if prompt_mask is not None:
        raise ValueError("prompt_mask goes with an array of prompt tokens, not lists")
      tokens, mask = left_pad(prompts, pad_id)
    if ((tokens < 0) | (tokens >= self.model.config.vocab_size))[mask].any():
      raise ValueError(f"prompt token ids must lie in [0, {self.model.config.vocab_size})")
    return tokens, mask


@functools.lru_cache(maxsize=16)
def _naive_step(model: Transformer, st: _Static):
  """One jitted full-recompute step over the fixed [B, P+N] buffer (donated, updated in place)."""

  def step(params, buf, buf_mask, done, keys, t, *rest):  # buf, buf_mask [B, P+N]
    p = buf.shape[1] - st.max_new_tokens
    logits = model.apply({"params": params}, buf, positions=positions_from_mask(buf_mask),
                         attention_mask=jnp.tril(jnp.ones((buf.shape[1],) * 2, bool))[None]
                         & buf_mask[:, None, :])  # [B, P+N, V]: the whole prefix, again
    logits = jax.lax.dynamic_index_in_dim(logits, p - 1 + t, 1, keepdims=False)  # [B, V]
    new, lp, _, new_done = _next_tokens(logits, keys, t, done, *rest, st)
    buf = jax.lax.dynamic_update_slice_in_dim(buf, new[:, None], p + t, 1)
    buf_mask = jax.lax.dynamic_update_slice_in_dim(buf_mask, ~done[:, None], p + t, 1)
    return buf, buf_mask, new_done, lp

  return jax.jit(step, donate_argnums=(1, 2))


def naive_generate(model: Transformer, params, prompt_tokens, max_new_tokens: int,
                   prompt_mask=None, *, rng: jax.Array | None = None, greedy: bool = True,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   eos_id: int | None = None, pad_id: int = 0,
                   prompt_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reference decoder without a cache: each step re-runs the model over the whole buffer.

  prompt_tokens [B, P] left-padded (+ prompt_mask) -> (tokens [B, N] int32, log-probs [B, N]),
  pad_id / 0 after a row's EOS. The per-step forward on the fixed [B, P+N] buffer is jitted
  once, so this is the honest full-recompute baseline, and it samples with the same keys as
  `Sampler` (one sample per prompt).
  """
  tokens = np.asarray(prompt_tokens, np.int32)
  mask = np.ones(tokens.shape, bool) if prompt_mask is None else np.asarray(prompt_mask, bool)
  if tokens.ndim != 2 or mask.shape != tokens.shape or not mask[:, -1].all():
    raise ValueError(f"need left-padded prompt tokens and mask [B, P], got {tokens.shape}")
  b, p = tokens.shape
  step = _naive_step(model, _Static(max_new_tokens, greedy, 0 if greedy else top_k,
                                    top_p < 1.0 and not greedy))
  buf = jnp.asarray(np.pad(tokens, ((0, 0), (0, max_new_tokens)), constant_values=pad_id))
  buf_mask = jnp.asarray(np.pad(mask, ((0, 0), (0, max_new_tokens))))
  ids = np.arange(b) if prompt_ids is None else np.asarray(prompt_ids)
  keys = row_keys(jax.random.key(0) if rng is None else rng, jnp.asarray(ids, jnp.int32),
                  jnp.zeros(b, jnp.int32))
  done = jnp.zeros(b, bool)
  rest = (jnp.float32(temperature), jnp.float32(top_p),
          _stop_array(() if eos_id is None else (eos_id,)), jnp.int32(pad_id))
  logprobs = []
  for t in range(max_new_tokens):
    buf, buf_mask, done, lp = step(params, buf, buf_mask, done, keys, jnp.int32(t), *rest)
    logprobs.append(lp)
  return np.asarray(buf[:, p:]), np.asarray(jnp.stack(logprobs, axis=1))
