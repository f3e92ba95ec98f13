"""Model shapes: one frozen dataclass and the named presets r1jax knows.

The presets cover the paper's distillation students (Qwen2.5, Llama 3.1), the one real model
reachable offline (SmolLM2-135M), the toy world and the benchmark shapes. Shapes only: weights
come from `r1jax.models.loading`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


REMAT_POLICIES = ("none", "full", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder-only transformer (Llama / Qwen2 / SmolLM family)."""

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  mlp_dim: int
  head_dim: int = 0  # 0 -> d_model // num_heads
  rope_theta: float = 10_000.0
  # Llama-3 rope scaling; factor 0 disables it.
  rope_scaling_factor: float = 0.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = True
  max_seq_len: int = 2048
  param_dtype: str = "float32"  # the master weights (and so the optimizer state)
  dtype: str = "float32"  # compute dtype; logits and losses are always float32
  cache_dtype: str = ""  # the KV cache's dtype; '' = the compute dtype
  # What each block keeps for the backward pass: 'none' (every activation), 'full' (only its
  # input: the block is recomputed) or 'dots_saveable' (matmul outputs; the rest recomputed).
  remat: str = "none"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim == 0:
      if self.d_model % self.num_heads:
        raise ValueError(f"d_model={self.d_model} not divisible by num_heads={self.num_heads}")
      object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    for name in ("param_dtype", "dtype") + (("cache_dtype",) if self.cache_dtype else ()):
      jnp.dtype(getattr(self, name))  # raises on an unknown dtype name
    if isinstance(self.remat, bool):  # model.json files written before remat policies
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r}; known: {REMAT_POLICIES}")

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
    return cls(**d)

  def num_params(self) -> int:
    """Parameter count (embeddings included once when tied)."""
    d, h, kv, hd = self.d_model, self.num_heads, self.num_kv_heads, self.head_dim
    attn = d * h * hd * 2 + d * kv * hd * 2
    if self.qkv_bias:
      attn += h * hd + 2 * kv * hd
    block = attn + 3 * d * self.mlp_dim + 2 * d
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * block + emb + d

  def flops_per_token(self, seq_len: int) -> float:
    """Forward FLOPs per token: 2 * matmul params + attention scores (causal average)."""
    d, hd = self.d_model, self.head_dim
    matmul = self.num_layers * (
        d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2 + 3 * d * self.mlp_dim)
    matmul += self.vocab_size * d
    attn = self.num_layers * 2 * self.num_heads * hd * seq_len  # QK^T and AV, half of T on average x2
    return 2.0 * matmul + attn


PRESETS: dict[str, ModelConfig] = {
    # The toy world's base model (~1M params); the vocab is set from the trained tokenizer.
    "toy": ModelConfig(vocab_size=128, d_model=128, num_layers=4, num_heads=4, num_kv_heads=4,
                       mlp_dim=768, max_seq_len=256),
    # Shape of the decode-throughput benchmark.
    "bench-decode": ModelConfig(vocab_size=1024, d_model=256, num_layers=4, num_heads=4,
                                num_kv_heads=4, mlp_dim=1024, max_seq_len=512),
    # ~38M params: the training-MFU benchmark preset.
    "bench-38m": ModelConfig(vocab_size=8192, d_model=512, num_layers=8, num_heads=8,
                             num_kv_heads=8, mlp_dim=2048, max_seq_len=512),
    "smollm2-135m": ModelConfig(vocab_size=49152, d_model=576, num_layers=30, num_heads=9,
                                num_kv_heads=3, mlp_dim=1536, rope_theta=100_000.0,
                                norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, num_layers=24, num_heads=14,
                                num_kv_heads=2, mlp_dim=4864, rope_theta=1_000_000.0,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, num_layers=28, num_heads=12,
                                num_kv_heads=2, mlp_dim=8960, rope_theta=1_000_000.0,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, d_model=3584, num_layers=28, num_heads=28,
                              num_kv_heads=4, mlp_dim=18944, rope_theta=1_000_000.0,
                              qkv_bias=True, tie_embeddings=False, max_seq_len=32768),
    "qwen2.5-32b": ModelConfig(vocab_size=152064, d_model=5120, num_layers=64, num_heads=40,
                               num_kv_heads=8, mlp_dim=27648, rope_theta=1_000_000.0,
                               qkv_bias=True, tie_embeddings=False, max_seq_len=32768),
    "llama3.1-8b": ModelConfig(vocab_size=128256, d_model=4096, num_layers=32, num_heads=32,
                               num_kv_heads=8, mlp_dim=14336, rope_theta=500_000.0,
                               rope_scaling_factor=8.0, rope_low_freq_factor=1.0,
                               rope_high_freq_factor=4.0, rope_original_max_len=8192,
                               norm_eps=1e-5, tie_embeddings=False, max_seq_len=131072),
}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
  """A named preset with optional field overrides (e.g. dtype='bfloat16')."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
