"""Problem sets for RL and evaluation, and the grain iterator that feeds prompts to GRPO.

Every problem set has the benchmark record shape {'id', 'problem', 'answer'} and may carry more
fields that reward functions read: `task` ('reasoning' when absent; 'general' routes to the reward
model) and `language` (the CoT's target language). Sets: the toy world's RL prompts and held-out
set ('toy'), its general prompts ('toy_general'), GSM8K, AIME 2024, AMC 2023, any math JSONL, or
the code problems of `r1jax.data.code_problems` ('toy_code': task 'code', with their `tests`).
"""
from __future__ import annotations

import os
from typing import Any

import grain

from r1jax.data import benchmarks, code_problems, toy_tfds, toy_world


# Variant worlds by the `world` field of a config's `toy` block ('' or absent: the default world).
TOY_WORLDS = {"": "ToyWorldConfig", "reflect": "ReflectWorldConfig"}


def toy_world_config(cfg) -> toy_world.ToyWorldConfig:
  """The ToyWorldConfig named by a config's `toy` block (fields override the defaults);
  `world: reflect` picks r1jax.data.reflect_world's config."""
  overrides = dict(cfg.get("toy", {}) or {})
  world = overrides.pop("world", "")
  if world not in TOY_WORLDS:
    raise ValueError(f"unknown toy world {world!r}; known: {sorted(TOY_WORLDS)}")
  if world == "reflect":
    from r1jax.data import reflect_world
    return reflect_world.ReflectWorldConfig(**overrides)
  return toy_world.ToyWorldConfig(**overrides)


def default_data_dir() -> str:
  return os.environ.get("R1JAX_DATA_DIR", os.path.join(os.path.expanduser("~"), "r1jax_data"))


# Toy problem sets: dataset name -> {split: toy_tfds kind}.
TOY_SETS = {"toy": {"train": "rl", "test": "heldout"},
            "toy_general": {"train": "general_rl", "test": "general_test"}}


def load_problems(data_cfg, split: str) -> list[dict[str, Any]]:
  """Records of `data_cfg.dataset` ('toy', a code set or a registered benchmark) for split 'train'
  or 'test'."""
  data_dir = data_cfg.get("data_dir") or default_data_dir()
  name = data_cfg.dataset
  if name in TOY_SETS:
    world = toy_world_config(data_cfg)
    return toy_tfds.load_records(TOY_SETS[name][split], data_dir, world)
  if name in code_problems.CODE_SETS:
    return code_problems.load_code_problems(name, split)
  options = dict(data_cfg.get("options", {}) or {})
  return benchmarks.load_benchmark(name, data_dir=data_dir, manual_dir=data_cfg.get("manual_dir"),
                                   split=split, **options)


def prompt_iterator(records: list[dict], batch_size: int, seed: int,
                    rows: slice = slice(None)):
  """Endless, shuffled (reshuffled each epoch), checkpointable batches of problem records.

  Each batch is `rows` of the global batch of `batch_size`: a process reads only its own
  prompts, while the order (and the iterator's state, a position in it) is the same whatever
  the number of processes, so a checkpoint resumes on any of them.
  """
  if len(records) < batch_size:
    raise ValueError(f"{len(records)} problems cannot fill a batch of {batch_size} prompts")
  # Endless in practice: 2**40 records in all (grain cannot iterate an endless batch of 1).
  epochs = max(2**40 // len(records), 1)
  ds = (grain.MapDataset.range(len(records)).seed(seed).shuffle().repeat(epochs)
        .batch(batch_size).map(lambda idx: [records[int(i)] for i in idx[rows]]))
  return iter(ds)
