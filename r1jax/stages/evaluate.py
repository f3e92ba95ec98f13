"""Evaluation stage: k completions per problem (sampled, or read from a JSONL), graded, summarised.

Writes WORKDIR/eval/NAME/summary.json (pass@1 over k, unbiased pass@k, cons@k, lengths, counts;
sorted keys, so the same seed, checkpoint and config give the same bytes) and samples.jsonl (one
line per problem: prompt, gold, every completion, each extracted answer and verdict), and prints a
summary table. Training stages' held-out evals call `r1jax.sample_grade`, the same code path.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from r1jax import evaluation, grading, stages
from r1jax.data import benchmarks, jsonl
from r1jax.errors import ConfigError
from r1jax.sample_grade import (_csv, grade_and_summarize, sample_and_grade,  # noqa: F401
                                sample_completions)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- settings
def resolve_settings(config) -> dict[str, Any]:
  """Fields left at their sentinel (-1 or '') take the benchmark's defaults (EVAL_DEFAULTS)."""
  name = config.dataset
  d = benchmarks.EVAL_DEFAULTS.get(name) or benchmarks.EVAL_DEFAULTS["math_jsonl"]
  s = {
      "dataset": name,
      "k": config.k if config.k > 0 else d.k,
      "max_new_tokens": config.max_new_tokens if config.max_new_tokens > 0 else d.max_new_tokens,
      "temperature": float(config.temperature),
      "top_p": float(config.top_p),
      "top_k": int(config.top_k),
      "seed": int(config.seed),
      "template": config.template or d.template,
      "extract": _csv(config.extract) or d.extract,
      "grade_mode": config.grade_mode or d.grade_mode,
      "pass_ks": tuple(int(k) for k in _csv(config.pass_ks)) or None,
  }
  try:
    grading.extract_answer("", s["extract"])  # raises on an unknown mode before any sampling
  except ValueError as e:
    raise ConfigError(f"--config.extract: {e}") from None
  if s["grade_mode"] not in grading.GRADE_MODES:
    raise ConfigError(f"grade_mode must be one of {grading.GRADE_MODES}, got {s['grade_mode']!r}")
  return s


def sample_from_checkpoint(config, settings: dict, problems: Sequence[dict]) -> list[dict]:
  """Loads `config.checkpoint` and samples: the one place touching the model and sampler APIs."""
  import jax
  from r1jax import samplers, sharding
  from r1jax.models.loading import load_pretrained

  mesh = sharding.make_mesh(dict(config.mesh))
  bundle = load_pretrained(config.checkpoint, mesh=mesh)
  sampler = samplers.from_config(config, "", bundle.model, mesh,
                                 rows=config.batch_size * settings["k"])
  return sample_completions(
      sampler, bundle.params, bundle.tokenizer, problems, template=settings["template"],
      k=settings["k"], max_new_tokens=settings["max_new_tokens"],
      temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
      batch_size=config.batch_size, rng=jax.random.key(settings["seed"]))


# ------------------------------------------------------------------------------------ grading
def read_completions_file(path: str) -> list[dict]:
  """Problems with completions already made: JSONL lines holding `problem` or `question`, `gold`,
  `completions` (list of str) and optionally `id`, `prompt`, `num_tokens`, `truncated`. A bad
  line is a ConfigError naming `path:line`."""
  out = []
  for line_no, row in jsonl.objects(path):
    problem = row.get("problem", row.get("question"))
    if problem is None or "gold" not in row or not isinstance(row.get("completions"), list):
      raise ConfigError(f"{path}:{line_no}: need 'problem' (or 'question'), 'gold' and a list "
                        f"'completions'; got fields {sorted(row)}")
    if not row["completions"]:
      raise ConfigError(f"{path}:{line_no}: 'completions' is empty")
    rec = {"id": str(row.get("id", line_no - 1)), "problem": problem,
           "prompt": row.get("prompt", problem), "gold": str(row["gold"]),
           "completions": row["completions"]}
    for key in ("num_tokens", "truncated"):
      if row.get(key) is not None:
        rec[key] = row[key]
    out.append(rec)
  if not out:
    raise ConfigError(f"{path}: no problems")
  return out


# ------------------------------------------------------------------------------------ outputs
def write_outputs(out_dir: str, summary: dict, records: Sequence[dict]) -> None:
  """summary.json with sorted keys (byte-identical for identical results) and samples.jsonl."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
    f.write(json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
  with open(os.path.join(out_dir, "samples.jsonl"), "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")


def load_problems(config) -> list[dict]:
  """The benchmark's records {'problem', 'answer', 'id'}, the first `config.limit` if set."""
  from r1jax.data import prompts  # the loader the RL stages use, so 'toy' works the same here

  problems = prompts.load_problems(config, "test")
  return problems[:config.limit] if config.get("limit", 0) > 0 else problems


@stages.register("eval")
def run(config, workdir: str) -> dict:
  """Samples (config.checkpoint) or regrades (config.completions_file), then writes the outputs."""
  if bool(config.checkpoint) == bool(config.completions_file):
    raise ConfigError("set exactly one of --config.checkpoint (sample and grade) and "
                     "--config.completions_file (regrade completions already made)")
  settings = resolve_settings(config)
  if config.completions_file:
    samples = read_completions_file(config.completions_file)
    if config.get("limit", 0) > 0:
      samples = samples[:config.limit]
    source = {"completions_file": os.path.basename(config.completions_file)}
    default_name = os.path.splitext(os.path.basename(config.completions_file))[0]
  else:
    if not config.dataset:
      raise ConfigError("sampling needs --config.dataset (gsm8k, aime24, amc23, math_jsonl, toy)")
    samples = sample_from_checkpoint(config, settings, load_problems(config))
    source = {"checkpoint": config.checkpoint, **{
        key: settings[key] for key in ("k", "max_new_tokens", "temperature", "top_p", "top_k",
                                       "seed", "template")}}
    default_name = config.dataset
  summary, records = grade_and_summarize(
      samples, extract=settings["extract"], mode=settings["grade_mode"], ks=settings["pass_ks"],
      grading_timeout_s=float(config.grading_timeout_s))
  summary["settings"] = {"dataset": config.dataset, "extract": list(settings["extract"]),
                         "grade_mode": settings["grade_mode"], **source}
  name = config.get("name") or config.dataset or default_name
  out_dir = os.path.join(workdir, "eval", name)
  write_outputs(out_dir, summary, records)
  print(evaluation.format_table({k: v for k, v in summary.items() if k != "settings"},
                                title=f"eval {name} ({out_dir})"))
  return summary
