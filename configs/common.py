"""Helpers shared by the config files."""
from __future__ import annotations

import os

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses the string after ':' in `--config=file.py:a=1,smoke` into typed fields.

  Each `key=value` is cast to the type of its default; a bare `key` sets a bool default to True.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not value:
      if not isinstance(default, bool):
        raise ValueError(f"config arg {key!r} needs a value")
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value)
  return out


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh axis sizes; -1 takes the remaining devices. See r1jax/sharding.py for the rules."""
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def shared_data_dir(name: str) -> str:
  """A benchmark folder of the team's offline data copies (../shared/data next to the repo)."""
  return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", name))
