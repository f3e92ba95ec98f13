"""r1jax params -> a Hugging Face Llama / Qwen2 checkpoint directory, to serve or test elsewhere.

Writes config.json (Qwen2ForCausalLM when the model has q/k/v bias, else LlamaForCausalLM),
safetensors shards in HF layout (with model.safetensors.index.json when there are several), and
the tokenizer. Tensors are gathered to the host one shard file at a time.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from safetensors.numpy import save_file

from r1jax.models.config import ModelConfig
from r1jax.models.hf_import import ARCHITECTURES, flatten, hf_layout


def config_to_hf(config: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None) -> dict[str, Any]:
  """The config.json dict (transformers v4 spelling, which v5 also reads)."""
  model_type = "qwen2" if config.qkv_bias else "llama"
  out = {
      "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
      "vocab_size": config.vocab_size, "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_act": "silu",
      "max_position_embeddings": config.max_seq_len, "rms_norm_eps": config.norm_eps,
      "rope_theta": config.rope_theta, "tie_word_embeddings": config.tie_embeddings,
      "torch_dtype": config.param_dtype, "use_cache": True,
      "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
  }
  if model_type == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  else:
    out.update(use_sliding_window=False)
  if config.rope_scaling_factor:
    out["rope_scaling"] = {
        "rope_type": "llama3", "factor": config.rope_scaling_factor,
        "low_freq_factor": config.rope_low_freq_factor,
        "high_freq_factor": config.rope_high_freq_factor,
        "original_max_position_embeddings": config.rope_original_max_len}
  return out


def _to_host(x: Any) -> np.ndarray:
  """A (possibly sharded, possibly multi-host) array as one host numpy array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _plan_shards(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
  """Consecutive groups of tensor paths, each at most `max_bytes` (or one oversize tensor)."""
  groups, current, used = [], [], 0
  for path, size in sizes:
    if current and used + size > max_bytes:
      groups.append(current)
      current, used = [], 0
    current.append(path)
    used += size
  return groups + ([current] if current else [])


def export_hf(path_out: str, params: Any, config: ModelConfig, tokenizer: Any = None, *,
              max_shard_bytes: int = 4 << 30) -> None:
  """Writes `params` of `Transformer(config)` as an HF checkpoint directory at `path_out`.

  `tokenizer`: an HFTokenizer (tokenizer.json + tokenizer_config.json), an object with
  `save(path)` such as SentencePieceTokenizer (tokenizer.model), or None. Every process must
  call this (sharded params are gathered); process 0 writes.
  """
  layout = hf_layout(config)
  flat = flatten(params)
  if set(flat) != set(layout):
    raise ValueError(f"params do not match the config: missing {sorted(set(layout) - set(flat))}"
                     f", unexpected {sorted(set(flat) - set(layout))}")
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(path_out, exist_ok=True)
  sizes = [(p, int(np.prod(flat[p].shape)) * np.dtype(flat[p].dtype).itemsize) for p in layout]
  groups = _plan_shards(sizes, max_shard_bytes)
  names = (["model.safetensors"] if len(groups) == 1 else
           [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
  weight_map = {}
  for file, group in zip(names, groups):
    tensors = {layout[p].name: layout[p].to_hf(_to_host(flat[p])) for p in group}
    weight_map.update({name: file for name in tensors})
    if writer:
      save_file(tensors, os.path.join(path_out, file), metadata={"format": "pt"})
    del tensors
  if not writer:
    return
  if len(groups) > 1:
    index = {"metadata": {"total_size": sum(s for _, s in sizes)}, "weight_map": weight_map}
    _write_json(os.path.join(path_out, "model.safetensors.index.json"), index)
  ids = {k: getattr(tokenizer, k, None) for k in ("bos_id", "eos_id", "pad_id")}
  _write_json(os.path.join(path_out, "config.json"), config_to_hf(config, **ids))
  _write_json(os.path.join(path_out, "generation_config.json"),
              {"bos_token_id": ids["bos_id"], "eos_token_id": ids["eos_id"],
               "pad_token_id": ids["pad_id"]})
  _save_tokenizer(tokenizer, path_out)


def _save_tokenizer(tokenizer: Any, path_out: str) -> None:
  from r1jax.hf_tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
  if tokenizer is None:
    return
  if isinstance(tokenizer, HFTokenizer):
    tokenizer.save(path_out)
  elif hasattr(tokenizer, "save"):
    tokenizer.save(os.path.join(path_out, "tokenizer.model"))
  else:
    raise TypeError(f"cannot save a tokenizer of type {type(tokenizer).__name__}")


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False)
