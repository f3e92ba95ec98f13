"""Running a stage: its parents first (built when missing), then the stage, then `lineage.json`.

A stage's parents are named in `config.parents`: role -> {dir, config}. `dir` is the parent's run
directory (or an HF directory / GGUF file for a pretrained model); `config` is the config file that
builds it (`configs/toy_base.py:smoke`), '' when it cannot be built. A parent counts as present when
its `lineage.json` says it finished. A missing or unfinished parent is built (or resumed) with its
own config, which in turn builds its own parents, so any stage's `:smoke` runs on a fresh clone.

`lineage.json` records what a stage was built from and what it made: its parents (directories,
finished steps, config hashes and the digest of what they handed down), its data files (sha256
and record counts), the sha256 of its resolved config, the digest of its own output (last
checkpoint's parameters, or its SFT data set), the r1jax git commit, its wall seconds and its
result. A rerun that finds a parent's digest changed knows the child is stale.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from typing import Any

from absl import logging

from r1jax import config_files, samplers, stages
from r1jax.errors import ConfigError

LINEAGE_FILE = "lineage.json"
CONFIG_FILE = "config.json"
# Fields handed down to a parent built on the fly, so it lands beside the child's data.
INHERITED = ("data.data_dir", "progress")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node.get(part) if hasattr(node, "get") else None
  return node


def check_config(config, stage: str) -> None:
  """Fields named in `config.required` (dotted paths) must be set."""
  for field in config.get("required", ()):
    if _get(config, field) in (None, ""):
      raise ConfigError(f"stage {stage!r} needs --config.{field} (a required field is missing)")


def config_json(config) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


# Fields that say where and how verbosely a stage runs, not what it computes; the sampler draws
# the same tokens either way (r1jax/samplers.py), so a run made before its fields existed (or
# with the other sampler) has the same recipe.
NOT_RECIPE = ("progress", "data.data_dir", "eval.sampler", "eval.num_slots", "rl.sampler",
              "rl.num_slots", "rs.sampler", "rs.num_slots")


def recipe_sha256(config) -> str:
  """sha256 of the resolved config without NOT_RECIPE: equal recipes, equal results."""
  fields = json.loads(config_json(config))
  for dotted in NOT_RECIPE:
    *path, leaf = dotted.split(".")
    node = fields
    for part in path:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(leaf, None)
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def read_lineage(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, LINEAGE_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_finished(path: str) -> bool:
  """A run directory whose stage finished, or a pretrained model file / directory."""
  if not os.path.exists(path):
    return False
  lineage = read_lineage(path) if os.path.isdir(path) else None
  if lineage is not None:
    return bool(lineage.get("finished"))
  return not is_stage_dir(path)  # an HF directory or GGUF file; a stage dir without lineage is not


def is_stage_dir(path: str) -> bool:
  """Written by `run_stage` (its config.json names a stage; an HF config.json does not)."""
  try:
    with open(os.path.join(path, CONFIG_FILE)) as f:
      return "stage" in json.load(f)
  except (OSError, ValueError):
    return False


def git_commit() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config_files.REPO_ROOT,
                         capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() or None


def parent_dirs(config) -> dict[str, str]:
  return {role: p.dir for role, p in (config.get("parents") or {}).items() if p.get("dir")}


def parent_dir(config, role: str) -> str:
  """The directory of the parent `role`; a clear error when the config names none."""
  dirs = parent_dirs(config)
  if role not in dirs:
    raise ConfigError(f"stage {config.get('stage')!r} needs --config.parents.{role}.dir")
  return dirs[role]


def ensure_parents(config) -> None:
  """Builds (or resumes) every missing parent with its own config file."""
  for role, p in (config.get("parents") or {}).items():
    if not p.get("dir") or is_finished(p.dir):
      continue
    if not p.get("config"):
      raise ConfigError(f"parent {role!r} ({p.dir}) is missing and has no config to build it "
                        f"(--config.parents.{role}.config)")
    parent_cfg = config_files.load(p.config)
    with parent_cfg.unlocked():
      for field in INHERITED:
        value, path = _get(config, field), field.split(".")
        node = _get(parent_cfg, ".".join(path[:-1])) if len(path) > 1 else parent_cfg
        if value not in (None, "") and node is not None and path[-1] in node:
          node[path[-1]] = value
    print(f"r1jax: parent {role!r} ({p.dir}) is missing: building it with {p.config}")
    logging.warning("building parent %s at %s with %s", role, p.dir, p.config)
    run_stage(parent_cfg, p.dir)


def _sha256_files(paths: list[str]) -> str:
  h = hashlib.sha256()
  for path in sorted(paths):
    h.update(os.path.basename(path).encode())
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()


def output_sha256(run_dir: str) -> str | None:
  """A digest of what a finished stage hands its children: the parameters of its last checkpoint
  (the files of the `state` item), or its SFT data set; None for anything else."""
  data = os.path.join(run_dir, "sft.jsonl")
  if os.path.isfile(data):
    return _sha256_files([data])
  ckpt = os.path.join(run_dir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) if os.path.isdir(ckpt) else []
  if not steps:
    return None
  state = os.path.join(ckpt, str(steps[-1]), "state")
  files = [os.path.join(root, f) for root, _, names in os.walk(state) for f in names]
  return _sha256_files(files) if files else None


def _parent_lineage(config) -> dict[str, Any]:
  out = {}
  for role, path in parent_dirs(config).items():
    lin = read_lineage(path) if os.path.isdir(path) else None
    out[role] = {"dir": os.path.abspath(path), "step": (lin or {}).get("step"),
                 "config_sha256": (lin or {}).get("config_sha256"),
                 "output_sha256": (lin or {}).get("output_sha256")}
  return out


def _data_lineage(config, workdir: str) -> dict[str, Any]:
  """The data files a stage read: JSONL files and parents' SFT sets, with sha256 and records."""
  out = {}
  data = config.get("data") or {}
  specs = [s.strip() for s in str(data.get("source", "")).split(",") if s.strip()]
  specs += [str(data.get(k)) for k in ("dataset", "general_dataset") if data.get(k)]
  rs = config.get("rs") or {}
  if rs.get("general_source"):
    specs.append(str(rs.general_source))
  for spec in specs:
    kind, _, rest = spec.partition(":")
    path = None
    if kind == "jsonl":
      path = rest.partition(":")[2] if rest.count(":") else rest
    elif kind == "parent" and rest in parent_dirs(config):
      path = os.path.join(parent_dirs(config)[rest], "sft.jsonl")
    if path and os.path.isfile(path):
      with open(path, "rb") as f:
        records = sum(1 for line in f if line.strip())
      out[spec] = {"path": os.path.abspath(path), "sha256": _sha256_files([path]),
                   "records": records}
    else:
      out[spec] = {"generated": True}  # the toy world's TFDS sets: keyed by its config digest
  own = os.path.join(workdir, "sft.jsonl")
  if os.path.isfile(own):
    with open(own, "rb") as f:
      out["written:sft.jsonl"] = {"sha256": _sha256_files([own]),
                                  "records": sum(1 for line in f if line.strip())}
  return out


def _check_workdir(workdir: str, stage: str) -> None:
  """A workdir holds one stage's run: resuming another stage's checkpoints there would fail late."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      found = json.load(f).get("stage")
  except (OSError, ValueError):
    return
  if found not in (None, stage):
    raise ConfigError(f"workdir {workdir} holds a {found!r} run; refusing to run stage {stage!r} "
                      "there (choose another --workdir)")


# Fields a resumed run may change: how long it runs and how often it saves, logs and evaluates,
# what it does on a NaN, where its data and parents' configs are, how it computes (precision:
# the weights stay float32), how it is laid out on the devices (checkpoints reshard on
# restore) and which sampler draws its rollouts (the same tokens). A pattern matches a field
# and everything under it; '*' is one level. Any other field, even one the earlier run's
# config lacked, is the recipe.
RESUMABLE = ("num_steps", "train.num_steps", "train.num_epochs", "train.log_every",
             "train.data_shards",
             "checkpoint_every", "keep_checkpoints", "nan_policy", "progress", "name", "eval",
             "precision", "data.data_dir", "data.manual_dir", "parents.*.config", "mesh",
             "axis_rules", "stages", "rebuild", "rl.sampler", "rl.num_slots")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; an empty block has no fields."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _resumable(field: str) -> bool:
  parts = field.split(".")
  for pattern in RESUMABLE:
    pat = pattern.split(".")
    if len(pat) <= len(parts) and all(p in ("*", f) for p, f in zip(pat, parts)):
      return True
  return False


def _has_checkpoints(workdir: str) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))


def _show(value: Any) -> str:
  return value if value == "<unset>" else json.dumps(value)


def recipe_changes(old: dict, config) -> list[str]:
  """'field=old; this config has new' for each field that differs between a run's config.json
  (`old`) and `config`, ignoring RESUMABLE fields. optim.total_steps counts only when both
  name a length (0 derives it from the run's steps); parents' dirs compare as normalised paths."""
  new = _flatten(json.loads(config_json(config)))
  old = _flatten(old)
  out = []
  for field in sorted(set(old) | set(new)):
    a, b = old.get(field, "<unset>"), new.get(field, "<unset>")
    if _resumable(field) or a == b:
      continue
    if field == "optim.total_steps" and not (a and b):
      continue
    if field.startswith("parents.") and field.endswith(".dir") and isinstance(a, str) \
        and isinstance(b, str) and os.path.normpath(a) == os.path.normpath(b):
      continue
    out.append(f"{field}={_show(a)}; this config has {_show(b)}")
  return out


def _check_resume(workdir: str, config, stage: str) -> None:
  """A workdir with checkpoints of an earlier run of this stage resumes them: with a different
  recipe (model shapes, loss, data, ...) that would fail late or silently mix two recipes. Checked
  before anything is written; the fields in RESUMABLE may change."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path) or not _has_checkpoints(workdir):
    return
  try:
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  except (OSError, ValueError):
    return
  if not isinstance(old, dict) or old.get("stage") != stage:
    return
  changes = recipe_changes(old, config)
  if changes:
    more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
    raise ConfigError(f"workdir {workdir} was run with {'; and '.join(changes[:4])}{more} "
                      f"(use a new --workdir, or delete {workdir})")


def check_devices(config, stage: str) -> None:
  """The mesh fits the devices and each step's batch divides over it: one line before parents
  are built or anything is written, not a shape error after the first compile."""
  if config.get("mesh") is None:
    return
  from r1jax import sharding
  mesh = sharding.make_mesh(dict(config.mesh))
  train = config.get("train") or {}
  if stage == "sft" and train.get("batch_size"):
    sharding.check_batch(train.batch_size, mesh, "train.batch_size")
  elif stage == "grpo" and config.get("rl") is not None:
    from r1jax.rl import grpo as rl_grpo
    from r1jax.stages import grpo as grpo_stage
    rl_grpo.check_batch(config.rl.num_prompts, grpo_stage.grpo_config(config.rl), mesh)


# Stages whose loops shard their data and metrics over processes (r1jax.multihost); the others
# sample or write whole files on one host.
MULTIPROCESS_STAGES = ("sft", "grpo")


def _check_processes(stage: str) -> None:
  import jax
  if jax.process_count() > 1 and stage not in MULTIPROCESS_STAGES:
    raise ConfigError(f"stage {stage!r} runs on one process; of the stages, "
                      f"{', '.join(MULTIPROCESS_STAGES)} run on several (launch this one on a "
                      "single host, without R1JAX_NUM_PROCESSES)")


def run_stage(config, workdir: str) -> dict:
  """Parents, then the stage named by `config.stage`; writes config.json first, lineage.json last.

  Everything that can be checked without a model is checked before anything is written."""
  name = config.get("stage")
  fn = stages.get(name)
  if fn is None:
    raise ConfigError(f"unknown stage {name!r}; known stages: {', '.join(stages.names())}")
  check_config(config, name)
  _check_processes(name)
  _check_workdir(workdir, name)
  _check_resume(workdir, config, name)
  check_devices(config, name)
  samplers.check_config(config)
  ensure_parents(config)
  from r1jax import multihost
  os.makedirs(workdir, exist_ok=True)
  text = config_json(config)
  if multihost.is_primary():  # with several processes, process 0 writes the run's files
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(text)
  t0 = time.perf_counter()
  result = fn(config, workdir)
  lineage = {"stage": name, "finished": True, "step": result.get("step"),
             "parents": _parent_lineage(config), "data": _data_lineage(config, workdir),
             "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
             "recipe_sha256": recipe_sha256(config),
             "output_sha256": output_sha256(workdir), "git_commit": git_commit(),
             "wall_s": time.perf_counter() - t0,
             "result": {k: v for k, v in result.items()
                        if isinstance(v, (int, float, str, bool)) or v is None}}
  if multihost.is_primary():
    with open(os.path.join(workdir, LINEAGE_FILE), "w") as f:
      json.dump(lineage, f, indent=2, sort_keys=True)
  multihost.barrier(f"finished {workdir}")  # a parent is finished for every process at once
  return result
