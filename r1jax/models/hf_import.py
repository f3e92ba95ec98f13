"""Hugging Face Llama / Qwen2 safetensors checkpoints -> r1jax params, one tensor at a time.

HF `nn.Linear` weights are [out, in]; r1jax kernels are [in, *out] with the heads split out
([D, H, Dh], o_proj [H, Dh, D]). Each tensor is read, laid out, cast and placed straight onto its
sharding before the next is read, so the host holds the params plus about one tensor.
`load_params` takes any `TensorSource` keyed by HF names: the GGUF importer reuses it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax
import numpy as np
from safetensors import safe_open

from r1jax import sharding as shd
from r1jax.errors import CheckpointError, ConfigError
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class MissingTensorError(CheckpointError, KeyError):
  """A checkpoint lacks tensors the config needs."""

  def __str__(self):  # KeyError would repr() the message
    return str(self.args[0])


class UnsupportedModelError(CheckpointError, NotImplementedError):
  """A checkpoint of an architecture (or a variant of one) r1jax does not implement."""


# --------------------------------------------------------------------------- config.json


def _rope_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
  """RoPE theta and Llama-3 scaling, from v5 `rope_parameters` or v4 `rope_theta`/`rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  if not scaling and params.get("rope_type", "default") != "default":
    scaling = params
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  out = {"rope_theta": float(theta)}
  if kind == "llama3":
    out.update(rope_scaling_factor=float(scaling["factor"]),
               rope_low_freq_factor=float(scaling["low_freq_factor"]),
               rope_high_freq_factor=float(scaling["high_freq_factor"]),
               rope_original_max_len=int(scaling["original_max_position_embeddings"]))
  elif kind != "default":
    raise UnsupportedModelError(f"rope scaling {kind!r} is not supported (default and llama3 are)")
  return out


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
  """ModelConfig from a Llama / Qwen2 `config.json` dict (transformers v4 or v5 layout)."""
  model_type = hf.get("model_type")
  if model_type not in ARCHITECTURES:
    raise UnsupportedModelError(
        f"model_type {model_type!r} (architectures {hf.get('architectures')}) is not supported; "
        f"r1jax imports {sorted(ARCHITECTURES)}")
  if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias"):
    raise UnsupportedModelError("only SwiGLU MLPs without bias are supported")
  if model_type == "llama" and hf.get("attention_bias"):
    raise UnsupportedModelError("Llama attention_bias=True also biases o_proj, which r1jax lacks")
  if model_type == "qwen2" and hf.get("use_sliding_window"):
    raise UnsupportedModelError("Qwen2 sliding-window attention is not supported")
  needed = ("num_attention_heads", "vocab_size", "hidden_size", "num_hidden_layers",
            "intermediate_size")
  missing = [k for k in needed if not isinstance(hf.get(k), int)]
  if missing:
    raise CheckpointError(f"config.json lacks integer field(s) {missing}")
  heads = hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      mlp_dim=hf["intermediate_size"], head_dim=hf.get("head_dim") or 0,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), qkv_bias=model_type == "qwen2",
      tie_embeddings=bool(hf.get("tie_word_embeddings", model_type == "qwen2")),
      max_seq_len=int(hf.get("max_position_embeddings", 2048)), **_rope_fields(hf))
  fields.update(overrides)
  return ModelConfig(**fields)


# --------------------------------------------------------------------------- tensor layout


@dataclasses.dataclass(frozen=True)
class HFTensor:
  """Where one r1jax param lives in an HF checkpoint and how it is laid out there."""

  name: str
  kind: str = "copy"  # 'copy' (same shape), 'bias' (flattened), 'linear' ([out, in] matrix)
  num_in: int = 1  # linear: how many leading r1jax axes are inputs (o_proj: 2)

  def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.kind == "linear":
      return (math.prod(shape[self.num_in:]), math.prod(shape[:self.num_in]))
    return (math.prod(shape),) if self.kind == "bias" else tuple(shape)

  def to_r1jax(self, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return (array.T if self.kind == "linear" else array).reshape(shape)

  def to_hf(self, array: np.ndarray) -> np.ndarray:
    if self.kind == "linear":
      return np.ascontiguousarray(array.reshape(math.prod(array.shape[:self.num_in]), -1).T)
    return array.reshape(self.hf_shape(array.shape))


def hf_layout(config: ModelConfig) -> dict[str, HFTensor]:
  """r1jax param path ('layers_0/attn/q_proj/kernel') -> its HF tensor."""
  out = {"embed/embedding": HFTensor("model.embed_tokens.weight"),
         "final_norm/scale": HFTensor("model.norm.weight")}
  if not config.tie_embeddings:
    out["lm_head/kernel"] = HFTensor("lm_head.weight", "linear")
  for i in range(config.num_layers):
    r, h = f"layers_{i}", f"model.layers.{i}"
    out[f"{r}/input_norm/scale"] = HFTensor(f"{h}.input_layernorm.weight")
    out[f"{r}/post_attn_norm/scale"] = HFTensor(f"{h}.post_attention_layernorm.weight")
    for p in ("q_proj", "k_proj", "v_proj"):
      out[f"{r}/attn/{p}/kernel"] = HFTensor(f"{h}.self_attn.{p}.weight", "linear")
      if config.qkv_bias:
        out[f"{r}/attn/{p}/bias"] = HFTensor(f"{h}.self_attn.{p}.bias", "bias")
    out[f"{r}/attn/o_proj/kernel"] = HFTensor(f"{h}.self_attn.o_proj.weight", "linear", 2)
    for p in ("gate_proj", "up_proj", "down_proj"):
      out[f"{r}/mlp/{p}/kernel"] = HFTensor(f"{h}.mlp.{p}.weight", "linear")
  return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested param dict -> {'a/b/c': leaf}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, v in flat.items():
    *parents, leaf = path.split("/")
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


# --------------------------------------------------------------------------- loading


class TensorSource(Protocol):
  """Tensors by HF name: what `load_params` reads from."""

  def __contains__(self, name: str) -> bool: ...
  def read(self, name: str) -> np.ndarray: ...
  def where(self, name: str | None = None) -> str: ...  # the file(s), for error messages


class SafetensorsSource:
  """A checkpoint directory: `model.safetensors`, or shards listed in `*.safetensors.index.json`.

  Each read opens (memory-maps) its file and closes it again, so the mapped pages of tensors
  already read do not pile up in the resident set.
  """

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        self._file_of = dict(json.load(f)["weight_map"])
    elif os.path.exists(single):
      with _open(single) as f:
        self._file_of = {k: "model.safetensors" for k in f.keys()}
    else:
      raise FileNotFoundError(f"{directory}: neither model.safetensors nor "
                              "model.safetensors.index.json")

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def where(self, name: str | None = None) -> str:
    return os.path.join(self.directory, self._file_of[name]) if name else self.directory

  def read(self, name: str) -> np.ndarray:
    path = self.where(name)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} (listed in the index for {name}) does not exist")
    with _open(path) as f:
      try:
        return f.get_tensor(name)
      except Exception as e:  # SafetensorError and friends: a damaged file
        raise CheckpointError(f"{path}: tensor {name} cannot be read ({e})") from e


def _open(path: str):
  """safe_open, with a corrupt or truncated file reported as one CheckpointError naming it."""
  try:
    return safe_open(path, framework="numpy")
  except FileNotFoundError:
    raise
  except Exception as e:  # SafetensorError is no OSError / ValueError
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def abstract_params(model: Transformer) -> Any:
  """Boxed (logically partitioned) ShapeDtypeStructs of the model's params."""
  tokens = jax.ShapeDtypeStruct((1, 8), np.int32)
  return jax.eval_shape(lambda r, t: model.init(r, t)["params"], jax.random.key(0), tokens)


def _place(array: np.ndarray, sharding) -> jax.Array:
  """Host array -> device array; with a sharding each device receives only its shard."""
  if sharding is None:
    return jax.device_put(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def load_params(config: ModelConfig, source: TensorSource, *, mesh=None, rules=None) -> Any:
  """Reads every param of `Transformer(config)` from `source`, in `config.param_dtype`.

  With a mesh, each param lands on the sharding the logical rules give it.
  """
  model = Transformer(config)
  boxed = abstract_params(model)
  shapes = flatten(nn.meta.unbox(boxed))
  layout = hf_layout(config)
  if set(shapes) != set(layout):  # the model changed under the importer
    raise RuntimeError(f"HF layout and model params differ: {sorted(set(shapes) ^ set(layout))}")
  missing = [t.name for t in layout.values() if t.name not in source]
  if missing:
    more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
    raise MissingTensorError(f"{source.where()}: missing {len(missing)} tensor(s) the config "
                             f"needs: {', '.join(missing[:10])}{more}")
  shardings = None
  if mesh is not None:
    rules = shd.rules_from_config(rules)
    shardings = flatten(shd.logical_shardings(boxed, mesh, rules))
  dtype = np.dtype(config.param_dtype)
  out = {}
  for path, tensor in layout.items():
    shape = shapes[path].shape
    array = source.read(tensor.name)
    if tuple(array.shape) != tensor.hf_shape(shape):
      raise CheckpointError(f"{source.where(tensor.name)}: {tensor.name} has shape "
                            f"{array.shape}, the config implies {tensor.hf_shape(shape)}")
    array = tensor.to_r1jax(array, shape).astype(dtype, copy=False)
    sharding = None if shardings is None else shardings[path]
    if sharding is not None:
      _check_divisible(path, shape, sharding)
    out[path] = _place(array, sharding)
    del array
  return unflatten(out)


def _check_divisible(path: str, shape: tuple[int, ...], sharding) -> None:
  for dim, axes in zip(shape, tuple(sharding.spec) + (None,) * len(shape)):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    size = math.prod(sharding.mesh.shape[a] for a in names)
    if dim % size:
      raise ConfigError(f"param {path} {shape} cannot be sharded as {sharding.spec} on mesh "
                       f"{dict(sharding.mesh.shape)}: {dim} is not divisible by {size}; use "
                       "logical rules that leave that axis unsharded")


def read_hf_config(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: not a JSON config ({e})") from None
  if not isinstance(hf, dict):
    raise CheckpointError(f"{path}: expected a JSON object")
  return hf


def load_hf_checkpoint(directory: str, *, dtype: str = "float32", mesh=None,
                       rules=None) -> tuple[ModelConfig, Any]:
  """(config, params) from an HF Llama / Qwen2 checkpoint directory."""
  hf = read_hf_config(directory)
  try:
    config = config_from_hf(hf, param_dtype=dtype, dtype=dtype)
  except CheckpointError as e:
    raise type(e)(f"{os.path.join(directory, 'config.json')}: {e}") from None
  except ValueError as e:  # fields that make no ModelConfig
    raise CheckpointError(f"{os.path.join(directory, 'config.json')}: {e}") from None
  return config, load_params(config, SafetensorsSource(directory), mesh=mesh, rules=rules)

