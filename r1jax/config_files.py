"""Loading ml_collections config files by path, as the command line does: `path.py:variant`.

Stages name their parents by config file (`configs/toy_base.py:smoke`), so a stage whose parent is
missing can build it. Library code never imports `configs/`; it reads a named file like any data.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections

from r1jax.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path: str) -> str:
  """A config path as given (relative to the working directory), else relative to the repo."""
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise ConfigError(f"config file {path!r} does not exist")


def load(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:a=1,smoke' -> get_config('a=1,smoke') of that file."""
  path, _, arg = spec.partition(":")
  path = resolve(path)
  root = os.path.dirname(os.path.dirname(path))  # config files import `configs.common`
  if root not in sys.path:
    sys.path.insert(0, root)
  name = "r1jax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    return module.get_config(arg or None)
  except ValueError as e:
    raise ConfigError(f"{spec}: {e}") from e


def default_workdir(spec: str) -> str:
  """Where `--config=spec` runs without --workdir: where a stage that names it as its parent
  looks for it (configs/common.stage_parent). `configs/grpo_zero.py:world=reflect` ->
  workdirs/grpo_zero_world_reflect; a smoke variant goes under workdirs/smoke/."""
  path, _, arg = spec.partition(":")
  parts = [a.strip() for a in arg.split(",") if a.strip()]
  name = "_".join([os.path.splitext(os.path.basename(path))[0]]
                  + [a.replace("=", "_") for a in parts if a != "smoke"])
  return os.path.join("workdirs", *(["smoke"] if "smoke" in parts else []), name)
