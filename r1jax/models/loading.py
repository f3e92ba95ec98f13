"""Load any model r1jax can start from: an r1jax run directory, a HF checkpoint, or a GGUF file.

An r1jax run directory (what `toy_base`, SFT and RL stages write) holds `model.json` (the
ModelConfig), the tokenizer file named there, and orbax checkpoints under `checkpoints/`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax import checkpoints, sharding
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer

MODEL_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class Pretrained:
  config: ModelConfig
  model: Transformer
  params: Any
  tokenizer: Any


def is_run_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MODEL_FILE))


def write_model_files(workdir: str, config: ModelConfig, tokenizer_path: str) -> None:
  """Records the model config and a copy of the tokenizer in a run directory."""
  os.makedirs(workdir, exist_ok=True)
  name = os.path.basename(tokenizer_path)
  dest = os.path.join(workdir, name)
  if os.path.abspath(tokenizer_path) != os.path.abspath(dest):
    (shutil.copytree if os.path.isdir(tokenizer_path) else shutil.copy)(tokenizer_path, dest)
  with open(os.path.join(workdir, MODEL_FILE), "w") as f:
    json.dump({"model": config.to_dict(), "tokenizer": name}, f, indent=2, sort_keys=True)


def copy_model_files(src_run: str, dest_run: str) -> None:
  """A derived run (RL from a base) starts with its parent's model config and tokenizer."""
  with open(os.path.join(src_run, MODEL_FILE)) as f:
    spec = json.load(f)
  write_model_files(dest_run, ModelConfig.from_dict(spec["model"]),
                    os.path.join(src_run, spec["tokenizer"]))


def read_model_files(run_dir: str) -> tuple[ModelConfig, Any]:
  from r1jax.tokenizers import load_tokenizer
  with open(os.path.join(run_dir, MODEL_FILE)) as f:
    spec = json.load(f)
  return ModelConfig.from_dict(spec["model"]), load_tokenizer(os.path.join(run_dir, spec["tokenizer"]))


def load_pretrained(path: str, *, mesh=None, rules=sharding.DEFAULT_RULES, step: int | None = None,
                    dtype: str | None = None) -> Pretrained:
  """Model, params (sharded on `mesh`, default all devices on the data axis) and tokenizer."""
  mesh = mesh or sharding.make_mesh()
  if is_run_dir(path):
    config, tokenizer = read_model_files(path)
    if dtype:
      config = config.replace(param_dtype=dtype, dtype=dtype)
    model = Transformer(config)
    shardings = sharding.param_shardings(model, mesh, rules)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    abstract = sharding.abstract_with_shardings(nn.unbox(boxed["params"]), shardings)
    params = checkpoints.restore_params(os.path.join(path, CHECKPOINT_DIR), abstract, step=step)
    return Pretrained(config, model, params, tokenizer)
  if os.path.exists(path):
    from r1jax.models import pretrained
    return pretrained.from_pretrained(path, mesh=mesh, dtype=dtype or "float32", rules=rules)
  raise FileNotFoundError(f"no model at {path!r}: expected an r1jax run directory "
                          f"(with {MODEL_FILE}), a Hugging Face checkpoint directory or a .gguf file")

