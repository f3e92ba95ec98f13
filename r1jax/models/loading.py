"""r1jax run directories as a checkpoint kind of `from_pretrained`.

A run directory (what `toy_base`, SFT and RL stages write) holds `model.json` (the ModelConfig
and the tokenizer's file name), that tokenizer, and orbax checkpoints under `checkpoints/`.
`load_pretrained` loads it, or any HF directory / GGUF file, sharded on a mesh.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax import checkpoints, multihost, sharding
from r1jax.errors import CheckpointError, ConfigError
from r1jax.models import pretrained
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer

MODEL_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"


def is_run_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MODEL_FILE))


def write_model_files(workdir: str, config: ModelConfig, tokenizer_path: str) -> None:
  """Records the model config and a copy of the tokenizer in a run directory (process 0 writes,
  the others wait for it)."""
  os.makedirs(workdir, exist_ok=True)
  if not multihost.is_primary():
    multihost.barrier(f"model files {workdir}")
    return
  name = os.path.basename(tokenizer_path)
  dest = os.path.join(workdir, name)
  if os.path.abspath(tokenizer_path) != os.path.abspath(dest):
    if os.path.isdir(tokenizer_path):
      shutil.copytree(tokenizer_path, dest, dirs_exist_ok=True)
    else:
      shutil.copy(tokenizer_path, dest)
  with open(os.path.join(workdir, MODEL_FILE), "w") as f:
    json.dump({"model": config.to_dict(), "tokenizer": name}, f, indent=2, sort_keys=True)
  multihost.barrier(f"model files {workdir}")


def copy_model_files(src_run: str, dest_run: str) -> None:
  """A derived run (RL from a base) starts with its parent's model config and tokenizer."""
  with open(os.path.join(src_run, MODEL_FILE)) as f:
    spec = json.load(f)
  write_model_files(dest_run, ModelConfig.from_dict(spec["model"]),
                    os.path.join(src_run, spec["tokenizer"]))


def inherit_model_files(workdir: str, pre: pretrained.Pretrained) -> None:
  """A run started from `pre` (an r1jax run, an HF directory or a GGUF file) records the model
  config and tokenizer, so its own checkpoints load as an r1jax run directory later."""
  if is_run_dir(pre.path):
    if os.path.abspath(pre.path) != os.path.abspath(workdir):
      copy_model_files(pre.path, workdir)
    return
  tok_dir = os.path.join(workdir, "tokenizer")
  if multihost.is_primary():
    pre.tokenizer.save(tok_dir)
  write_model_files(workdir, pre.config, tok_dir)


def _read_spec(run_dir: str) -> dict:
  path = os.path.join(run_dir, MODEL_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: not JSON ({e})") from None
  if not isinstance(spec, dict) or not {"model", "tokenizer"} <= set(spec):
    raise CheckpointError(f"{path}: expected an object with 'model' and 'tokenizer'")
  return spec


def tokenizer_path(run_dir: str, spec: dict | None = None) -> str:
  """The tokenizer file (or folder) a run directory records in model.json (`spec`, if read)."""
  return os.path.join(run_dir, (spec or _read_spec(run_dir))["tokenizer"])


def read_model_files(run_dir: str) -> tuple[ModelConfig, Any]:
  from r1jax.tokenizers import load_tokenizer
  spec = _read_spec(run_dir)
  tok = tokenizer_path(run_dir, spec)
  if not os.path.exists(tok):  # SentencePiece would say only "No such file or directory"
    raise CheckpointError(f"{run_dir}: its tokenizer {tok} (named in {MODEL_FILE}) is missing; "
                          "copy it back from the run this one started from")
  return ModelConfig.from_dict(spec["model"]), load_tokenizer(tok)


def load_run_dir(path: str, *, mesh=None, dtype: str | None = None, rules=None,
                 step: int | None = None) -> pretrained.Pretrained:
  """Params of the latest (or given) checkpoint step, restored straight onto their shardings."""
  rules = rules or sharding.DEFAULT_RULES
  mesh = mesh or sharding.make_mesh()
  config, tokenizer = read_model_files(path)
  if dtype:
    config = config.replace(param_dtype=dtype, dtype=dtype)
  model = Transformer(config)
  shardings = sharding.param_shardings(model, mesh, rules)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  abstract = sharding.abstract_with_shardings(nn.unbox(boxed["params"]), shardings)
  params = checkpoints.restore_params(os.path.join(path, CHECKPOINT_DIR), abstract, step=step)
  return pretrained.Pretrained(config, model, params, tokenizer, path)


def with_precision(config: ModelConfig, precision) -> ModelConfig:
  """A stage's `precision` block ({compute, kv_cache, remat}) applied to a model config. The
  weights keep their dtype (float32 master weights, so float32 optimizer state); model.json keeps
  the weights' own config, so a child run picks its precision afresh."""
  if not precision:
    return config
  return config.replace(dtype=precision.get("compute") or config.dtype,
                        cache_dtype=precision.get("kv_cache", config.cache_dtype),
                        remat=precision.get("remat") or config.remat)


def load_pretrained(path: str, *, mesh=None, rules=None, step: int | None = None,
                    dtype: str | None = None) -> pretrained.Pretrained:
  """An r1jax run directory (optionally at `step`), a HF checkpoint directory or a GGUF file."""
  if is_run_dir(path):
    return load_run_dir(path, mesh=mesh, dtype=dtype, rules=rules, step=step)
  pre = pretrained.from_pretrained(path, mesh=mesh, dtype=dtype or "float32", rules=rules)
  if pre.tokenizer is None:  # every stage encodes text: fail here, not at the first prompt
    raise ConfigError(f"{path}: no tokenizer (tokenizer.json) beside the model; add the "
                      "model's tokenizer files to that directory")
  return pre


pretrained.register_loader("r1jax-run", is_run_dir, load_run_dir)
