"""A decoder-only transformer in Flax Linen: RoPE, RMSNorm, GQA, SwiGLU, optional qkv bias.

One module serves training (full causal forward) and decoding (reads and writes a KV cache
passed in and out as a plain pytree, so the sampler can carry it through `lax.while_loop`).
Every param carries logical axis names; `r1jax.sharding` maps them onto a mesh.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig

Cache = list[dict[str, jax.Array]]  # per layer: {'k': [B, Hkv, S, Dh], 'v': [B, Hkv, S, Dh]}
_NEG_INF = -1e30


def rope_inv_freq(config: ModelConfig) -> jax.Array:
  """[Dh/2] inverse frequencies, with Llama-3 scaling when configured."""
  hd = config.head_dim
  inv = 1.0 / (config.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  if config.rope_scaling_factor:
    factor = config.rope_scaling_factor
    low_wavelen = config.rope_original_max_len / config.rope_low_freq_factor
    high_wavelen = config.rope_original_max_len / config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (config.rope_original_max_len / wavelen - config.rope_low_freq_factor) / (
        config.rope_high_freq_factor - config.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv = jnp.where(medium, smoothed, scaled)
  return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotate [B, T, H, Dh] by positions [B, T] (Hugging Face 'rotate half' layout)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def causal_mask(segment_ids: jax.Array | None, length: int, batch: int) -> jax.Array:
  """[B, T, T] bool: causal, and (for packed rows) within one non-zero segment."""
  mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None]
  if segment_ids is None:
    return jnp.broadcast_to(mask, (batch, length, length))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return mask & same & (segment_ids[:, None, :] != 0)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y.astype(x.dtype) * scale.astype(x.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract(x: jax.Array, kernel: jax.Array, num_in: int) -> jax.Array:
  """x[..., *in] @ kernel[*in, *out]: `jnp.tensordot` with a backward pass XLA:CPU runs fast.

  JAX's own transpose of the contraction makes XLA:CPU transpose the [tokens, out] output
  gradient (a strided copy fused with the elementwise ops that produce it) before the
  weight-gradient matmul; writing both gradients as 2-D matmuls that contract the token axis
  of both operands avoids every copy. On the bench-38m MLP this takes forward + backward from
  ~63% to ~93% of the matmul peak, with bit-identical gradients.
  """
  return jnp.tensordot(x, kernel, axes=num_in)


def _contract_fwd(x, kernel, num_in):
  return contract(x, kernel, num_in), (x, kernel)


def _contract_bwd(num_in, res, dy):
  x, kernel = res
  k_in = math.prod(kernel.shape[:num_in])
  x2 = x.reshape(-1, k_in)  # [N, K]
  dy2 = dy.reshape(x2.shape[0], -1)  # [N, F]
  k2 = kernel.reshape(k_in, dy2.shape[1])  # [K, F]
  dx = jax.lax.dot_general(dy2, k2, (((1,), (1,)), ((), ())))  # [N, K]
  dk = jax.lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))  # [K, F]
  return dx.reshape(x.shape).astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


contract.defvjp(_contract_fwd, _contract_bwd)


class Linear(nn.Module):
  """x[..., *in] @ kernel[*in, *out] (+ bias[*out]), with logical names on the kernel axes.

  (flax's DenseGeneral initialises a flat kernel and reshapes it, which breaks logical
  constraints on multi-dimensional kernels once a mesh is set.)
  """
  features: tuple[int, ...]
  axes: tuple[str, ...]
  num_in: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[-self.num_in:]
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(nn.initializers.normal(0.02), self.axes),
        in_shape + self.features, self.param_dtype)
    y = contract(x.astype(self.dtype), kernel.astype(self.dtype), self.num_in)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.zeros, self.axes[self.num_in:]), self.features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _dense(features, axes, name, config, use_bias=False, num_in=1):
  features = features if isinstance(features, tuple) else (features,)
  return Linear(features, axes, num_in, use_bias, name=name, dtype=jnp.dtype(config.dtype),
                param_dtype=jnp.dtype(config.param_dtype))


def _write_cache(cache: jax.Array, new: jax.Array, index) -> jax.Array:
  """Writes new [B, Hkv, T, Dh] into cache [B, Hkv, S, Dh] at slot `index`: a scalar (every row
  at once, in place), or [B] (one slot per row, for continuous batching: a scatter that touches
  only the B x T written slots, where a one-hot select would rewrite the whole cache)."""
  new = new.astype(cache.dtype)
  if jnp.ndim(index) == 0:
    return jax.lax.dynamic_update_slice_in_dim(cache, new, index, 2)
  return jax.vmap(lambda c, x, i: jax.lax.dynamic_update_slice_in_dim(c, x, i, 1))(
      cache, new, index)


def _weighted_values(probs: jax.Array, v: jax.Array) -> jax.Array:
  """probs [B, Hkv, G, T, S] @ v [B, Hkv, S, Dh] -> [B, T, Hkv, G, Dh].

  The matmul's output keeps the operands' batch order and is transposed after: asking the
  einsum for [B, T, ...] directly makes XLA:CPU compute v^T @ probs^T, a contraction over the
  cache's non-minor axis that it runs as a slow generic dot (about 2x the time of this plain
  batched matmul in a SmolLM2 decode step).
  """
  return jnp.einsum("bkgts,bksd->bkgtd", probs, v).transpose(0, 3, 1, 2, 4)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, cache, cache_index):
    c = self.config
    h, kv, hd = c.num_heads, c.num_kv_heads, c.head_dim
    q = _dense((h, hd), ("embed", "heads", "head_dim"), "q_proj", c, c.qkv_bias)(x)
    k = _dense((kv, hd), ("embed", "kv_heads", "head_dim"), "k_proj", c, c.qkv_bias)(x)
    v = _dense((kv, hd), ("embed", "kv_heads", "head_dim"), "v_proj", c, c.qkv_bias)(x)
    inv_freq = rope_inv_freq(c)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)  # [B, Hkv, T, Dh]: the cache layout
    if cache is not None:
      k = _write_cache(cache["k"], k, cache_index)
      v = _write_cache(cache["v"], v, cache_index)
      cache = {"k": k, "v": v}
    b, t = q.shape[:2]
    q = q.reshape(b, t, kv, h // kv, hd)  # [B, T, Hkv, G, Dh]
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(q.dtype),
                        preferred_element_type=jnp.float32) / math.sqrt(hd)
    scores = jnp.where(mask[:, None, None], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = _weighted_values(probs, v).reshape(b, t, h, hd).astype(x.dtype)
    out = _dense(c.d_model, ("heads", "head_dim", "embed"), "o_proj", c, num_in=2)(out)
    return out, cache


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    gate = _dense(c.mlp_dim, ("embed", "mlp"), "gate_proj", c)(x)
    up = _dense(c.mlp_dim, ("embed", "mlp"), "up_proj", c)(x)
    y = nn.with_logical_constraint(nn.silu(gate) * up, ("activation_batch", "activation_length", "activation_mlp"))
    return _dense(c.d_model, ("mlp", "embed"), "down_proj", c)(y)


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, cache, cache_index):
    c = self.config
    pdt = jnp.dtype(c.param_dtype)
    attn_out, cache = Attention(c, name="attn")(
        RMSNorm(c.norm_eps, pdt, name="input_norm")(x), positions, mask, cache, cache_index)
    x = x + attn_out
    x = x + MLP(c, name="mlp")(RMSNorm(c.norm_eps, pdt, name="post_attn_norm")(x))
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    return x, cache


# jax.checkpoint policies by ModelConfig.remat name (None: save nothing, recompute the block).
REMAT = {"full": None, "dots_saveable": jax.checkpoint_policies.dots_saveable}


class Transformer(nn.Module):
  """Decoder-only LM. `apply({'params': p}, tokens)` -> float32 logits [B, T, V].

  Decoding: pass `cache` (from `init_cache`) and `cache_index` (where the T new keys go: a
  scalar, or [B] with one write slot per row);
  returns `(logits, new_cache)`. `attention_mask` [B, T, S] (S = T, or cache length) overrides
  the default causal mask; `segment_ids` [B, T] restricts attention to packed segments.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions=None, attention_mask=None, segment_ids=None,
               cache: Cache | None = None, cache_index=0, return_hidden: bool = False):
    c = self.config
    b, t = tokens.shape
    per_row = jnp.ndim(cache_index) == 1  # [B] write slots (continuous batching)
    if positions is None:
      start = cache_index[:, None] if per_row else cache_index
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None] + start, (b, t))
    if attention_mask is None:
      if cache is None:
        attention_mask = causal_mask(segment_ids, t, b)
      else:
        slots = jnp.arange(cache[0]["k"].shape[2])
        queries = (cache_index[:, None] + jnp.arange(t) if per_row
                   else (cache_index + jnp.arange(t))[None])  # [B or 1, T]
        attention_mask = jnp.broadcast_to(slots[None, None, :] <= queries[:, :, None],
                                          (b, t, slots.shape[0]))
    embed = nn.Embed(c.vocab_size, c.d_model, name="embed",
                     dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype),
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(0.02), ("vocab", "embed")))
    x = embed(tokens)
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    block_cls = Block if c.remat == "none" else nn.remat(Block, policy=REMAT[c.remat])
    new_cache = []
    for i in range(c.num_layers):
      x, layer_cache = block_cls(c, name=f"layers_{i}")(
          x, positions, attention_mask, None if cache is None else cache[i], cache_index)
      new_cache.append(layer_cache)
    x = RMSNorm(c.norm_eps, jnp.dtype(c.param_dtype), name="final_norm")(x)
    if return_hidden:
      out = x.astype(jnp.float32)
    elif c.tie_embeddings:
      out = embed.attend(x).astype(jnp.float32)
    else:
      out = _dense(c.vocab_size, ("embed", "vocab"), "lm_head", c)(x).astype(jnp.float32)
    return out if cache is None else (out, new_cache)


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
  """Zero KV cache [B, Hkv, S, Dh] per layer (decode reads it without a transpose)."""
  dtype = jnp.dtype(dtype or config.cache_dtype or config.dtype)
  shape = (batch, config.num_kv_heads, length, config.head_dim)
  return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
          for _ in range(config.num_layers)]


CACHE_LOGICAL_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "head_dim")
