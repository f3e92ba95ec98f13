"""Continuous batching: a fixed set of decode slots, each refilled with the next waiting row as
soon as its row stops, all inside one jitted `lax.while_loop`.

The static `Sampler` decodes its whole batch until the longest row stops; with a long-tailed
length distribution most rows sit finished while the tail decodes. Here S slots share one KV
cache [S, Hkv, P-1+N, Dh] laid out per slot exactly as the static sampler lays out a row (the
left-padded prompt in [0, P-1), then the generated tokens), and every slot keeps its own step
counter t, so it writes its next key at its own cache slot P-1+t (`Transformer`'s per-row
`cache_index`). All rows are on device from the start (tokenised, left-padded to one bucket) and
a queue pointer in the loop carry says which is next.

Refill: before each step an inner `while_loop` gives the free slots the next waiting rows, by a
prefill forward of their prompts ([R, P-1] tokens into a small cache of their own) whose keys
are then scattered into those slots' prompt region. Keys the slot's previous row wrote further
on stay, masked out by the slot's attention mask, so nothing is cleared. R = `refill_rows`
(default: all slots) when at least R/2 rows go in at once (the first fill), else R = 1: a
single row costs about half a 32-slot decode step (bench-decode on CPU) and runs only when a
slot frees. Prefilling as decode steps instead (feeding the prompt one token per step through
the slot) is simpler but holds the slot one extra step per prompt token: at 32-token prompts
and a mean completion of 36 tokens, 86% more slot-steps.

Tail: once no row waits, the busy slots move into narrower batches (`slot_widths`: S, S/4, ...)
as soon as they fit, so the last long rows do not pay for S slots each step.

Determinism: a row draws token t with fold_in(row_keys(rng, prompt id, sample id), t), the
static sampler's keys, and its cache holds the same keys at the same slots, so it samples the
same tokens as in `Sampler` (log-probs equal up to float32 rounding: the prefill and the
attention reduce over other lengths, ~1e-6). `_next_tokens` folds one step into every row, so
the per-slot steps fold their own counters here and call `sample_tokens` directly.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax import sharding
from r1jax.models.transformer import Transformer, init_cache
from r1jax.sampling import (Sampler, _constrain_cache, _Static, positions_from_mask,
                            row_keys, sample_tokens, token_logprobs)


def _rows(x: jax.Array) -> jax.Array:
  """[M, ...] per-row outputs split over the data axes like the batch (`to_local` per process)."""
  return nn.with_logical_constraint(x, ("activation_batch",) + (None,) * (x.ndim - 1))


def _continuous_generate(params, tokens, mask, rows_valid, prompt_ids, sample_ids, rng,
                         temperature, top_p, stop, pad_id, *, model: Transformer, st: _Static,
                         widths: tuple[int, ...], refill_rows: int):
  """tokens, mask [M, P] (left-padded) -> the static `_generate`'s outputs through the slots.

  widths: the slot counts, largest first; the loop moves to the next once no row waits and at
  most that many slots are busy (a narrower batch for the tail, as `segment_ends` shortens the
  cache early on).
  """
  m, p = tokens.shape
  n_new, s = st.max_new_tokens, widths[0]
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
  positions = positions_from_mask(mask)  # [M, P]
  plen = jnp.sum(mask.astype(jnp.int32), axis=1)  # [M]
  keys = row_keys(rng, prompt_ids, sample_ids)  # [M]
  order = jnp.argsort(jnp.where(rows_valid, 0, 1), stable=True).astype(jnp.int32)  # the queue
  num_valid = jnp.sum(rows_valid.astype(jnp.int32))
  causal = jnp.tril(jnp.ones((p - 1, p - 1), bool))
  slot_ids = jnp.arange(p - 1 + n_new)

  def prefill(rows):  # rows [R] -> per layer {'k', 'v'} [R, Hkv, P-1, Dh]: all but the last token
    attn = causal[None] & mask[rows, None, :-1]
    _, cache = apply(tokens[rows, :-1], positions=positions[rows, :-1], attention_mask=attn,
                     cache=init_cache(model.config, rows.shape[0], p - 1), cache_index=0,
                     return_hidden=True)
    return cache

  def fill(r, c):
    """Up to r free slots get the next r waiting rows, with one [r, P-1] prefill forward."""
    cache, row, t, last, smask, splen, q = c
    free = row >= m
    take = jnp.minimum(jnp.minimum(jnp.sum(free.astype(jnp.int32)), num_valid - q), r)
    at = jnp.nonzero(free, size=r, fill_value=s)[0]
    at = jnp.where(jnp.arange(r) < take, at, s)  # s: dropped by the scatters
    rows = order[jnp.minimum(q + jnp.arange(r), m - 1)]
    if p > 1:
      cache = [{k: v.at[at, :, :p - 1].set(new[k], mode="drop") for k, v in layer.items()}
               for layer, new in zip(cache, prefill(rows))]
    put = lambda a, v: a.at[at].set(v, mode="drop")
    return (_constrain_cache(cache), put(row, rows), put(t, 0), put(last, tokens[rows, -1]),
            put(smask, mask[rows]), put(splen, plen[rows]), q + take)

  def refill(c):
    """A wide forward when many slots are free (the first fill), else one row at a time."""
    if refill_rows == 1:
      return fill(1, c)
    waiting = jnp.minimum(jnp.sum((c[1] >= m).astype(jnp.int32)), num_valid - c[-1])
    return jax.lax.cond(2 * waiting >= refill_rows, lambda c: fill(refill_rows, c),
                        lambda c: fill(1, c), c)

  def step(c, refills: bool):
    """Refills the free slots (first width only), then one decode step for every slot."""
    *slots, out, stopped, steps = c
    if refills:
      more = lambda c: jnp.any(c[1] >= m) & (c[-1] < num_valid)
      slots = jax.lax.while_loop(more, refill, tuple(slots))
    cache, row, t, last, smask, splen, q = slots
    active = row < m
    idx = p - 1 + t  # [W]: where each slot's `last` goes in the cache
    key_valid = jnp.pad(smask, ((0, 0), (0, n_new - 1)))
    attn = (key_valid | ((slot_ids >= p) & (slot_ids <= idx[:, None])))[:, None, :]
    logits, cache = apply(last[:, None], positions=(splen - 1 + t)[:, None],
                          attention_mask=attn, cache=cache, cache_index=idx)
    logits = logits[:, 0]
    step_keys = jax.vmap(jax.random.fold_in)(keys[jnp.minimum(row, m - 1)], t)
    new, slp = sample_tokens(logits, step_keys, temperature, greedy=st.greedy, top_k=st.top_k,
                             top_p=top_p if st.use_top_p else None)
    lp = token_logprobs(logits, new)
    vals = dict(completions=new, completion_mask=jnp.ones_like(active), logprobs=lp,
                sampling_logprobs=slp)  # idle slots have row == m: dropped
    out = {k: _rows(buf.at[row, t].set(vals[k], mode="drop")) for k, buf in out.items()}
    t = jnp.where(active, t + 1, t)  # an idle slot's writes (clamped to the cache) stay masked
    is_stop = jnp.any(new[:, None] == stop[None, :], axis=1)
    finished = active & (is_stop | (t >= n_new))
    stopped = _rows(stopped.at[jnp.where(finished, row, m)].set(is_stop, mode="drop"))
    row = jnp.where(finished, m, row)  # free for the next waiting row
    return _constrain_cache(cache), row, t, new, smask, splen, q, out, stopped, steps + 1

  def narrow(c, w):
    """The busy slots (at most w) gathered into a batch of w; the rest idle."""
    cache, row, t, last, smask, splen, q, *rest = c
    busy = row < m
    sel = jnp.nonzero(busy, size=w, fill_value=0)[0]
    row = jnp.where(jnp.arange(w) < jnp.sum(busy.astype(jnp.int32)), row[sel], m)
    cache = [{k: v[sel] for k, v in layer.items()} for layer in cache]
    return (_constrain_cache(cache), row, t[sel], last[sel], smask[sel], splen[sel], q, *rest)

  zeros = _rows(jnp.zeros((m, n_new), jnp.float32))
  out = dict(completions=_rows(jnp.full((m, n_new), pad_id, jnp.int32)),
             completion_mask=_rows(jnp.zeros((m, n_new), bool)), logprobs=zeros,
             sampling_logprobs=zeros)
  cache = init_cache(model.config, s, p - 1 + n_new)  # every slot starts free: refilled first
  carry = (_constrain_cache(cache), jnp.full(s, m, jnp.int32), jnp.zeros(s, jnp.int32),
           jnp.zeros(s, jnp.int32), jnp.zeros((s, p), bool), jnp.ones(s, jnp.int32),
           jnp.int32(0), out, _rows(~rows_valid), jnp.int32(0))
  for i, w in enumerate(widths):
    if i:
      carry = narrow(carry, w)
    below = widths[i + 1] if i + 1 < len(widths) else 0
    busy = lambda c, below=below: (c[6] < num_valid) | (jnp.sum((c[1] < m).astype(jnp.int32))
                                                         > below)
    carry = jax.lax.while_loop(busy, functools.partial(step, refills=i == 0), carry)
  return dict(**carry[7], stopped=carry[8], num_decode_steps=carry[9])


def slot_widths(num_slots: int, stages: int, multiple: int) -> tuple[int, ...]:
  """Batch widths S, S/4, S/16, ... (`stages` of them, multiples of the data-parallel size)."""
  widths = [-(-max(num_slots >> (2 * i), 1) // multiple) * multiple for i in range(stages)]
  return tuple(sorted(set(widths), reverse=True))


class ContinuousSampler(Sampler):
  """`Sampler` with continuous batching over `num_slots` decode slots: same call, same output.

  Rows enter the slots in order. `num_slots` is rounded up to the data-parallel size (and down
  to the row count). A refill with at least `refill_rows` / 2 rows waiting for free slots
  prefills up to `refill_rows` of them in one forward (default: all slots, so the first fill is
  one batched prefill), a smaller one prefills row by row. Once no row waits, the busy slots
  move into narrower batches, `tail_stages` widths S, S/4, ... in all. The output's
  `num_decode_steps` counts batched decode steps, which may exceed max_new_tokens. With several
  processes each passes its own prompts, as with `Sampler`; the slots serve all of them.
  """

  refills = True  # a call with more rows than slots keeps every slot busy: callers pass more

  def __init__(self, model: Transformer, mesh: jax.sharding.Mesh | None = None,
               rules=sharding.DEFAULT_RULES, *, num_slots: int, length_bucket: int = 16,
               refill_rows: int | None = None, tail_stages: int = 2):
    if num_slots < 1 or (refill_rows is not None and refill_rows < 1) or tail_stages < 1:
      raise ValueError(f"num_slots={num_slots}, refill_rows={refill_rows} and "
                       f"tail_stages={tail_stages} must be >= 1")
    super().__init__(model, mesh, rules, length_bucket=length_bucket, decode_segments=1)
    self.num_slots, self.refill_rows, self.tail_stages = num_slots, refill_rows, tail_stages

  def _run(self, st: _Static, params, batch, scalars) -> dict[str, Any]:
    rows = batch[0].shape[0] * jax.process_count()  # the global batch, a multiple of dp
    widths = slot_widths(min(self.num_slots, rows), self.tail_stages, self._dp)
    key = (st, widths, min(self.refill_rows or widths[0], widths[0]))
    fn = self._compiled.get(key)
    if fn is None:
      fn = self._compiled[key] = jax.jit(functools.partial(
          _continuous_generate, model=self.model, st=st, widths=widths, refill_rows=key[2]))
    return self._execute(fn, params, batch, scalars)
