"""R1 stage 3a, rejection sampling: the stage-2 policy writes the SFT data for stage 3b.

Per prompt: N samples -> graded -> correct ones through the readability filters in order
(r1jax/data/readability.py) -> duplicates dropped -> at most K kept; then general (non-reasoning)
SFT data is added. Writes, into the workdir:
  sft.jsonl + tfds/   the data set ({id, prompt, completion, task}), read by SFT stages through
                      data.source='parent:<role>' (r1jax/data/sft_data.py)
  samples.jsonl       every generated sample with its grade, the filters that fire on it and its
                      verdict (kept | incorrect | <first filter> | duplicate | over_cap)
  stats.json          counts: generated, correct, kept, general, and rejections by reason
A rerun with the same config returns stats.json without sampling again.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
from absl import logging

from r1jax import sample_grade, samplers, sharding, stages
from r1jax.data import prompts as prompt_data, readability, sft_data
from r1jax.errors import ConfigError
from r1jax.models import loading
from r1jax.runner import parent_dir, parent_dirs
from r1jax.stages import grpo

STATS_FILE = "stats.json"
SAMPLES_FILE = "samples.jsonl"
REJECTIONS = ("incorrect", *readability.REJECTIONS, "over_cap")
# Fields that change what is written; progress bars and the sampler (the same samples) do not.
_NOT_HASHED = ("progress", "rs.sampler", "rs.num_slots")


def config_hash(config) -> str:
  fields = json.loads(config.to_json_best_effort())
  for dotted in _NOT_HASHED:
    *path, leaf = dotted.split(".")
    node = fields
    for part in path:
      node = node.get(part, {})
    node.pop(leaf, None)
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _result(stats: dict) -> dict[str, Any]:
  flat = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
  return {"step": 0, **flat, **{f"rejected/{k}": v for k, v in stats["rejected"].items()}}


def finished_stats(workdir: str, digest: str) -> dict | None:
  """stats.json of a finished run of the same config (it is written last), else None."""
  path = os.path.join(workdir, STATS_FILE)
  if not os.path.isfile(path) or not os.path.isfile(os.path.join(workdir, sft_data.SFT_FILE)):
    return None
  with open(path) as f:
    stats = json.load(f)
  return stats if stats.get("config_sha256") == digest else None


def sample_policy(config) -> tuple[list[dict], dict[str, float]]:
  """N graded samples for each of the first rs.num_prompts train prompts."""
  rs = config.rs
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  pre = loading.load_pretrained(parent_dir(config, "policy"), mesh=mesh, rules=rules)
  problems = grpo.load_prompts(config, "train")
  if rs.get("num_prompts", 0) > 0:
    problems = problems[: rs.num_prompts]
  progress = config.get("progress", True)
  sampler = samplers.from_config(config, "rs", pre.model, mesh, rules,
                                 rows=rs.batch_size * rs.num_samples)
  samples = sample_grade.sample_completions(
      sampler, pre.params, pre.tokenizer, problems,
      template=config.data.template, k=rs.num_samples, max_new_tokens=rs.max_new_tokens,
      temperature=rs.temperature, top_p=rs.top_p, top_k=rs.get("top_k", 0),
      batch_size=rs.batch_size, rng=jax.random.key(config.seed), progress=progress)
  summary, graded = sample_grade.grade_and_summarize(
      samples, extract=sample_grade._csv(rs.extract), mode=config.get("grader", "exact"),
      progress=progress)
  return graded, summary


def select(graded: list[dict], rs) -> tuple[list[dict], list[dict], dict[str, int]]:
  """(SFT records, one line per sample for samples.jsonl, rejections by reason)."""
  counts = dict.fromkeys(REJECTIONS, 0)
  cap = rs.get("max_per_prompt", 0)
  records, lines = [], []
  for g in graded:
    texts = g["completions"]
    candidates = [{"text": texts[j], "prompt": g["problem"], "language": g.get("language")}
                  for j in range(len(texts))]
    correct = [j for j in range(len(texts)) if g["correct"][j]]
    counts["incorrect"] += len(texts) - len(correct)
    kept, filtered = readability.apply_filters([candidates[j] for j in correct], rs)
    for name, n in filtered.items():
      counts[name] += n
    kept = [correct[i] for i in kept]
    if cap > 0:
      counts["over_cap"] += max(len(kept) - cap, 0)
    verdict = {j: "kept" if cap <= 0 or n < cap else "over_cap" for n, j in enumerate(kept)}
    for j, text in enumerate(texts):
      fired = readability.flags(candidates[j], rs)
      if not g["correct"][j]:
        v = "incorrect"
      else:
        v = verdict.get(j) or (fired[0] if fired else "duplicate")
      lines.append({"id": f"{g['id']}-s{j}", "problem_id": g["id"], "problem": g["problem"],
                    "gold": g["gold"], "completion": text, "extracted": g["extracted"][j],
                    "correct": bool(g["correct"][j]), "num_tokens": g["num_tokens"][j],
                    "truncated": g["truncated"][j], "flags": fired, "verdict": v})
      if v == "kept":
        records.append({"id": f"{g['id']}-s{j}", "prompt": g["prompt"], "completion": text,
                        "task": "reasoning"})
  return records, lines, counts


def general_records(config) -> list[dict]:
  """rs.general_source (toy:<kind> | jsonl:<fmt>:<path> | ''), rs.general_repeat times."""
  spec = config.rs.get("general_source", "")
  if not spec:
    return []
  data_dir = config.data.get("data_dir") or prompt_data.default_data_dir()
  try:
    source = sft_data.resolve_source(spec, data_dir=data_dir,
                                     world=prompt_data.toy_world_config(config.data),
                                     template=config.data.template, parent_dirs=parent_dirs(config))
  except ConfigError as e:
    raise ConfigError(f"rs.general_source: {e}") from None
  base = [source[i] for i in range(len(source))]
  repeat = config.rs.get("general_repeat", 1)
  return [{"id": r["id"] if n == 0 else f"{r['id']}-r{n}", "prompt": r["prompt"],
           "completion": r["completion"], "task": "general"}
          for n in range(repeat) for r in base]


def _write_jsonl(path: str, rows: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


@stages.register("rejection_sampling")
def run(config, workdir: str) -> dict[str, Any]:
  digest = config_hash(config)
  done = finished_stats(workdir, digest)
  if done is not None:
    print(f"r1jax: {workdir} already holds this config's data set ({done['total']} records)")
    return _result(done)
  os.makedirs(workdir, exist_ok=True)
  stats_path = os.path.join(workdir, STATS_FILE)
  if os.path.exists(stats_path):
    os.remove(stats_path)  # a stale one must not vouch for the files written below

  graded, summary = sample_policy(config)
  records, lines, rejected = select(graded, config.rs)
  _write_jsonl(os.path.join(workdir, SAMPLES_FILE), lines)
  general = general_records(config)
  generated = len(lines)
  correct = sum(line["correct"] for line in lines)
  if not records and not general:
    raise ConfigError(
        f"stage 'rejection_sampling': empty data set after filtering: 0 of {generated} samples "
        f"kept from {len(graded)} prompts ({correct} correct; rejected "
        f"{', '.join(f'{k} {v}' for k, v in rejected.items())}) and no general data "
        f"(rs.general_source={config.rs.get('general_source', '')!r}); see "
        f"{os.path.join(workdir, SAMPLES_FILE)}")
  if not records:
    logging.warning("rejection sampling kept no reasoning sample; the data set is general only")
  sft_data.write_dataset(workdir, records + general)
  stats = {"prompts": len(graded), "generated": generated, "correct": correct,
           "kept_reasoning": len(records), "general": len(general),
           "total": len(records) + len(general), "kept_fraction": len(records) / max(generated, 1),
           "rejected": rejected, "config_sha256": digest,
           "policy": {k: v for k, v in summary.items() if isinstance(v, (int, float))}}
  tmp = stats_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(stats, f, indent=2, sort_keys=True)
  os.replace(tmp, stats_path)
  print(f"r1jax: rejection sampling kept {len(records)} of {generated} samples "
        f"({correct} correct) + {len(general)} general -> {workdir}/{sft_data.SFT_FILE}")
  return _result(stats)
