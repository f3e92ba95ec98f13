"""`from_pretrained`: one call from a checkpoint path to config, model, (sharded) params, tokenizer.

Dispatch is a short list of (matches, load) pairs tried in order, so other checkpoint kinds
(r1jax's own directories) slot in with `register_loader` without touching the importers.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from r1jax.errors import ConfigError
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer


@dataclasses.dataclass
class Pretrained:
  """A loaded model: `model.apply({'params': params}, tokens [B, T])` -> logits [B, T, V]."""

  config: ModelConfig
  model: Transformer
  params: Any
  tokenizer: Any  # HFTokenizer (or any r1jax Tokenizer); None when the checkpoint has none
  path: str = ""  # what was loaded


# (matches(path), load(path, *, mesh, dtype, rules)) -> Pretrained
Loader = Callable[..., Pretrained]
_LOADERS: list[tuple[str, Callable[[str], bool], Loader]] = []
# Names that stand for a file r1jax knows how to find.
ALIASES: dict[str, Callable[[], str]] = {}


def register_loader(name: str, matches: Callable[[str], bool], load: Loader,
                    first: bool = True) -> None:
  """Adds a checkpoint kind; `first` tries it before the built-in ones."""
  entry = (name, matches, load)
  _LOADERS.insert(0, entry) if first else _LOADERS.append(entry)


def from_pretrained(path: str, *, mesh=None, dtype: str = "float32", rules=None) -> Pretrained:
  """Loads an HF checkpoint directory (config.json + safetensors), a .gguf file or an alias.

  `dtype` is the param and compute dtype ('float32' or 'bfloat16'); logits stay float32.
  With `mesh`, params are placed by the logical axis `rules` (default: r1jax.sharding's).
  """
  path = ALIASES[path]() if path in ALIASES else os.path.expanduser(str(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist (aliases: {sorted(ALIASES)})")
  for _, matches, load in _LOADERS:
    if matches(path):
      return load(path, mesh=mesh, dtype=dtype, rules=rules)
  kinds = ", ".join(name for name, _, _ in _LOADERS)
  raise ConfigError(f"{path}: not a checkpoint r1jax can load (known kinds: {kinds})")


def _is_hf_dir(path: str) -> bool:
  return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def _load_hf(path: str, *, mesh=None, dtype="float32", rules=None) -> Pretrained:
  from r1jax.hf_tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
  from r1jax.models.hf_import import load_hf_checkpoint  # pylint: disable=import-outside-toplevel
  config, params = load_hf_checkpoint(path, dtype=dtype, mesh=mesh, rules=rules)
  has_tok = os.path.exists(os.path.join(path, "tokenizer.json"))
  return Pretrained(config, Transformer(config), params, HFTokenizer(path) if has_tok else None,
                    path)


def _is_gguf(path: str) -> bool:
  return os.path.isfile(path) and path.endswith(".gguf")


def _load_gguf(path: str, *, mesh=None, dtype="float32", rules=None) -> Pretrained:
  from r1jax.hf_tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
  from r1jax.models.gguf_import import load_gguf  # pylint: disable=import-outside-toplevel
  config, params, reader = load_gguf(path, dtype=dtype, mesh=mesh, rules=rules)
  return Pretrained(config, Transformer(config), params, HFTokenizer.from_gguf(reader), path)


def _smollm2() -> str:
  from r1jax.models.gguf_import import smollm2_gguf_path  # pylint: disable=import-outside-toplevel
  return smollm2_gguf_path()


register_loader("hf-safetensors", _is_hf_dir, _load_hf, first=False)
register_loader("gguf", _is_gguf, _load_gguf, first=False)
ALIASES["smollm2"] = _smollm2
ALIASES["smollm2-135m-instruct"] = _smollm2
