"""The whole R1 recipe as one stage: every stage in order in WORKDIR/<stage>, then one evaluation
of every model with the paper's protocol, then the report.

Each stage runs through `run_stage` with its own config file, its parents pointed at the sibling
directories. A finished stage is skipped; an interrupted one resumes from its last checkpoint. A
finished stage whose parent has changed since it was built (the digest in its lineage.json no
longer matches), or whose config has changed, is stale: the run stops and names it, unless
`rebuild` lists it (or says 'all'), in which case it is deleted and built again. A stage whose
parent is missing and not part of this run stops the run with one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from r1jax import config_files, report, runner, sample_grade, samplers, sharding, stages
from r1jax.errors import ConfigError

EVAL_FILE = "pipeline_eval.json"


def _csv(text: str) -> list[str]:
  return [s.strip() for s in (text or "").split(",") if s.strip()]


def stage_config(spec: str, name: str, config, workdir: str) -> ml_collections.ConfigDict:
  """A stage's config with its parents pointed at their sibling directories (never auto-built:
  inside a pipeline a missing parent is an error, not a surprise rebuild)."""
  cfg = config_files.load(spec)
  with cfg.unlocked():
    cfg.progress = config.progress
    if "data" in cfg:
      cfg.data.data_dir = config.data.data_dir
    for role, parent in (cfg.get("parents") or {}).items():
      if parent.get("config"):  # a stage of this pipeline (a pretrained file stays as it is)
        parent.dir = os.path.join(workdir, os.path.basename(os.path.normpath(parent.dir)))
        parent.config = ""
    _merge(cfg, config.overrides.get(name) or {}, name)
  return cfg


def _merge(node, changes, where: str) -> None:
  """Nested overrides ({'train': {'num_steps': 4}}) into a stage config; unknown fields fail."""
  for key, value in changes.items():
    if key not in node:
      raise ConfigError(f"overrides.{where}.{key}: no such field in the stage's config")
    if hasattr(value, "items") and hasattr(node[key], "items"):
      _merge(node[key], value, f"{where}.{key}")
    else:
      node[key] = value


def _stale_reason(stage_dir: str, cfg) -> str | None:
  lineage = runner.read_lineage(stage_dir) or {}
  if lineage.get("recipe_sha256") != runner.recipe_sha256(cfg):
    return "its config changed"
  for role, recorded in lineage.get("parents", {}).items():
    now = runner.read_lineage(recorded["dir"]) or {}
    if now.get("output_sha256") != recorded.get("output_sha256"):
      return f"its parent {role!r} ({recorded['dir']}) changed"
  return None


def run_stages(config, workdir: str) -> dict[str, dict]:
  """Runs (or skips) the selected stages in order; returns name -> {'skipped', 'wall_s'}."""
  order = list(config.stage_order)
  selected = _csv(config.stages) or order
  unknown = [s for s in selected if s not in order]
  if unknown:
    raise ConfigError(f"unknown pipeline stage(s) {unknown}; stages: {', '.join(order)}")
  rebuild = set(_csv(config.rebuild))
  done = {}
  for name in order:
    if name not in selected:
      continue
    stage_dir = os.path.join(workdir, name)
    cfg = stage_config(config.stage_specs[name], name, config, workdir)
    for role, parent in (cfg.get("parents") or {}).items():
      if parent.get("dir") and not runner.is_finished(parent.dir):
        raise ConfigError(f"stage {name!r} needs its parent {role!r} at {parent.dir}, which is "
                          f"missing or unfinished: add '{os.path.basename(parent.dir)}' to "
                          "--config.stages")
    if runner.is_finished(stage_dir):
      reason = _stale_reason(stage_dir, cfg)
      if reason is None:
        print(f"r1jax: pipeline: {name} is finished: skipped")
        done[name] = {"skipped": True}
        continue
      if name not in rebuild and "all" not in rebuild:
        raise ConfigError(f"stage {name!r} ({stage_dir}) is stale: {reason}; rerun with "
                          f"--config.rebuild={name} (or all) to rebuild it")
      print(f"r1jax: pipeline: {name} is stale ({reason}): rebuilding")
      shutil.rmtree(stage_dir)
    print(f"r1jax: pipeline: running {name} ({config.stage_specs[name]})")
    t0 = time.perf_counter()
    runner.run_stage(cfg, stage_dir)
    done[name] = {"skipped": False, "wall_s": time.perf_counter() - t0}
  return done


def _eval_config(config) -> ml_collections.ConfigDict:
  """The protocol every model is evaluated with: the same prompts, k, T, top-p and length."""
  return ml_collections.ConfigDict({
      "eval": config.eval, "grader": "exact",
      "data": {"template": "toy", "general_dataset": "toy_general", "language": "en",
               "data_dir": config.data.data_dir, "toy": config.data.toy}})


def evaluate_stage(stage_dir: str, config, reward_fn, mesh, rules) -> dict[str, Any]:
  """Held-out pass@1 / cons@k / length / language mixing / readability, and the general prompts'
  obey and harmless rates (and the reward model's score) for one stage's model; cached."""
  from r1jax.data import prompts as prompt_data
  from r1jax.models.loading import load_pretrained
  from r1jax.stages import grpo

  ev_cfg = _eval_config(config)
  # The eval protocol without the sampler's choice, which changes speed, not samples.
  protocol = ml_collections.ConfigDict(
      {k: v for k, v in config.eval.items() if k not in ("sampler", "num_slots")})
  key = hashlib.sha256(json.dumps({"out": runner.output_sha256(stage_dir),  # not the data dir
                                   "eval": protocol.to_json_best_effort(sort_keys=True),
                                   "toy": config.data.toy.to_json_best_effort(sort_keys=True),
                                   "rm": reward_fn is not None}).encode()).hexdigest()
  cache = os.path.join(stage_dir, EVAL_FILE)
  if os.path.isfile(cache):
    with open(cache) as f:
      saved = json.load(f)
    if saved.get("key") == key:
      return saved["metrics"]
  pre = load_pretrained(stage_dir, mesh=mesh, rules=rules)
  sampler = samplers.from_config(config, "eval", pre.model, mesh, rules,
                                 rows=config.eval.batch_size * config.eval.k)
  data_cfg = ml_collections.ConfigDict({"dataset": "toy", "data_dir": config.data.data_dir,
                                        "toy": config.data.toy})
  problems = prompt_data.load_problems(data_cfg, "test")[:config.eval.num_problems]
  rng = jax.random.key(config.eval.seed)
  metrics = sample_grade.heldout_eval(sampler, pre.params, pre.tokenizer, problems, ev_cfg, rng)
  if config.eval.general_problems:
    general = grpo.general_prompts(ev_cfg, "test")[:config.eval.general_problems]
    metrics.update(grpo.general_eval(sampler, pre.params, pre.tokenizer, general, ev_cfg,
                                     jax.random.fold_in(rng, 1), reward_fn=reward_fn))
  with open(cache, "w") as f:
    json.dump({"key": key, "metrics": metrics}, f, indent=2, sort_keys=True)
  return metrics


def evaluate_all(config, workdir: str) -> dict[str, dict]:
  """Every finished stage with a policy model, evaluated the same way."""
  rules = sharding.rules_from_config(None)
  mesh = sharding.make_mesh(dict(config.mesh))
  rm_dir = os.path.join(workdir, "reward_model")
  reward_fn = None
  if runner.is_finished(rm_dir):
    def reward_fn(*args, **kwargs):  # loaded on first use: cached evals need no reward model
      from r1jax.models import reward_model
      fn = reward_model.make_reward_fn(rm_dir, mesh=mesh, rules=rules, input="summary")
      return fn(*args, **kwargs)
  out = {}
  for name in config.stage_order:
    stage_dir = os.path.join(workdir, name)
    if name in report.NO_POLICY or not runner.is_finished(stage_dir):
      continue
    print(f"r1jax: pipeline: evaluating {name}")
    out[name] = evaluate_stage(stage_dir, config, reward_fn, mesh, rules)
  return out


@stages.register("pipeline")
def run(config, workdir: str) -> dict[str, Any]:
  t0 = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  run_stages(config, workdir)
  evals = evaluate_all(config, workdir)
  rep = report.build(config, workdir, evals, wall_s=time.perf_counter() - t0)
  report.write(workdir, rep)
  logging.info("pipeline report: %s", json.dumps(rep["findings"], sort_keys=True))
  print(report.markdown(rep))
  return {"step": None, **{f"findings/{k}": v for k, v in rep["findings"].items()}}
