"""The stage registry: each stage module registers `run(config, workdir) -> dict` under a name.

    @stages.register("sft")
    def run(config, workdir): ...

`config.stage` names the stage; `get(name)` imports every module of this package once, so adding
a stage is adding a file.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

StageFn = Callable[[Any, str], dict]
_REGISTRY: dict[str, StageFn] = {}
_LOADED = False


def register(name: str) -> Callable[[StageFn], StageFn]:
  def wrap(fn: StageFn) -> StageFn:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"stage {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn
  return wrap


def _load_all() -> None:
  global _LOADED
  if not _LOADED:
    for mod in pkgutil.iter_modules(__path__):
      importlib.import_module(f"{__name__}.{mod.name}")
    _LOADED = True


def names() -> list[str]:
  _load_all()
  return sorted(_REGISTRY)


def get(name: str) -> StageFn | None:
  _load_all()
  return _REGISTRY.get(name)
