"""Evaluation stage: k completions per problem (sampled, or read from a JSONL), graded, summarised.

Writes WORKDIR/eval/NAME/summary.json (pass@1 over k, unbiased pass@k, cons@k, lengths, counts;
sorted keys, so the same seed, checkpoint and config give the same bytes) and samples.jsonl (one
line per problem: prompt, gold, every completion, each extracted answer and verdict), and prints a
summary table. The GRPO stage's held-out eval calls `sample_and_grade`, the same code path.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any, Sequence

import numpy as np
import tqdm

from r1jax import evaluation, grading
from r1jax.data import benchmarks
from r1jax.errors import ConfigError
from r1jax.templates import format_prompt
from r1jax.tokenizers import encode_prompt

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- settings
def _csv(value: Any) -> tuple[str, ...]:
  """'a,b' or ('a', 'b') -> ('a', 'b')."""
  if isinstance(value, str):
    return tuple(s.strip() for s in value.split(",") if s.strip())
  return tuple(value or ())


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
  grading.extract_answer("", s["extract"])  # raises on an unknown mode before any sampling
  if s["grade_mode"] not in grading.GRADE_MODES:
    raise ValueError(f"grade_mode must be one of {grading.GRADE_MODES}, got {s['grade_mode']!r}")
  return s


# ----------------------------------------------------------------------------------- sampling
def sample_completions(sampler, params, tokenizer, problems: Sequence[dict], *, template: str,
                       k: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                       batch_size: int, rng, progress: bool = True) -> list[dict]:
  """k completions per problem. Problem i draws from its own stream (the sampler's prompt_ids),
  so one seed fixes every sample whatever the batch size."""
  if k < 1 or batch_size < 1:
    raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
  out = []
  starts = range(0, len(problems), batch_size)
  for start in tqdm.tqdm(starts, desc="sampling", unit="batch", disable=not progress):
    batch = problems[start:start + batch_size]
    prompts = [format_prompt(template, p["problem"]) for p in batch]
    res = sampler(params, [encode_prompt(tokenizer, p) for p in prompts], rng=rng,
                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                  n=k, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                  prompt_ids=list(range(start, start + len(batch))))
    tokens = np.asarray(res.completions)  # [P*k, N]
    lengths = np.asarray(res.completion_mask).astype(bool).sum(1)  # [P*k]
    truncated = np.asarray(res.truncated).astype(bool)  # [P*k]
    if tokens.shape[0] != len(batch) * k:
      raise ValueError(f"sampler returned {tokens.shape[0]} rows for {len(batch)} prompts x {k}")
    for i, (problem, prompt) in enumerate(zip(batch, prompts)):
      rows = range(i * k, (i + 1) * k)  # rows i*k .. i*k+k-1 belong to prompt i
      out.append({
          "id": problem.get("id", str(start + i)), "problem": problem["problem"], "prompt": prompt,
          "gold": problem["answer"],
          "completions": [tokenizer.decode([t for t in tokens[r, :lengths[r]].tolist()
                                            if t != tokenizer.eos_id]) for r in rows],
          "num_tokens": [int(lengths[r]) for r in rows],  # generated tokens, stop token included
          "truncated": [bool(truncated[r]) for r in rows],
      })
  return out


def sample_from_checkpoint(config, settings: dict, problems: Sequence[dict]) -> list[dict]:
  """Loads `config.checkpoint` and samples: the one place touching the model and sampler APIs."""
  import jax
  from r1jax import sharding
  from r1jax.models.loading import load_pretrained
  from r1jax.sampling import Sampler

  mesh = sharding.make_mesh(dict(config.mesh))
  bundle = load_pretrained(config.checkpoint, mesh=mesh)
  sampler = Sampler(bundle.model, mesh=mesh)
  return sample_completions(
      sampler, bundle.params, bundle.tokenizer, problems, template=settings["template"],
      k=settings["k"], max_new_tokens=settings["max_new_tokens"],
      temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
      batch_size=config.batch_size, rng=jax.random.key(settings["seed"]))


# ------------------------------------------------------------------------------------ grading
def read_completions_file(path: str) -> list[dict]:
  """Problems with completions already made: JSONL lines holding `problem` or `question`, `gold`,
  `completions` (list of str) and optionally `id`, `prompt`, `num_tokens`, `truncated`."""
  out = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      problem = row.get("problem", row.get("question"))
      if problem is None or "gold" not in row or not isinstance(row.get("completions"), list):
        raise ValueError(f"{path}:{line_no}: need 'problem' (or 'question'), 'gold' and a list "
                         f"'completions'; got fields {sorted(row)}")
      if not row["completions"]:
        raise ValueError(f"{path}:{line_no}: 'completions' is empty")
      rec = {"id": str(row.get("id", line_no - 1)), "problem": problem,
             "prompt": row.get("prompt", problem), "gold": str(row["gold"]),
             "completions": row["completions"]}
      for key in ("num_tokens", "truncated"):
        if row.get(key) is not None:
          rec[key] = row[key]
      out.append(rec)
  if not out:
    raise ValueError(f"{path}: no problems")
  return out


def grade_and_summarize(samples: Sequence[dict], *, extract: Sequence[str], mode: str,
                        ks: Sequence[int] | None = None, grading_timeout_s: float = 0.0,
                        progress: bool = True) -> tuple[dict, list[dict]]:
  """Grades every completion, adding per-sample 'extracted', 'parsed', 'correct' lists.

  grading_timeout_s > 0 grades math in a child process killed past that many seconds per
  answer (see grading.GradingWorker); 0 grades in-process under math-verify's own timeouts.
  """
  worker = (grading.GradingWorker(grading_timeout_s)
            if grading_timeout_s > 0 and mode == "math" else None)
  grade = worker.grade if worker else grading.grade
  equal = functools.partial(worker.answers_equal if worker else grading.answers_equal, mode=mode)
  try:
    t0, records = time.perf_counter(), []
    for s in tqdm.tqdm(samples, desc="grading", unit="problem", disable=not progress):
      verdicts = [grade(c if isinstance(c, str) else None, s["gold"], extract=extract, mode=mode)
                  for c in s["completions"]]
      records.append({**s, "extracted": [v.extracted for v in verdicts],
                      "parsed": [v.parsed for v in verdicts],
                      "correct": [v.correct for v in verdicts]})
    seconds = time.perf_counter() - t0
    num = sum(len(s["completions"]) for s in samples)
    log.info("graded %d answers in %.2fs (%.0f answers/s)", num, seconds, num / max(seconds, 1e-9))
    summary = evaluation.summarize(records, ks, equal=equal)
  finally:
    if worker:
      worker.close()
  return summary, records


def sample_and_grade(sampler, params, tokenizer, problems: Sequence[dict], *, template: str, k: int,
                     max_new_tokens: int, temperature: float, top_p: float, top_k: int = 0,
                     batch_size: int, rng, grader: str = "math",
                     extract: Sequence[str] = ("answer_tag", "boxed"),
                     ks: Sequence[int] | None = None, grading_timeout_s: float = 0.0,
                     progress: bool = True) -> tuple[dict, list[dict]]:
  """Samples k completions per problem with a live sampler and grades them: (summary, records)."""
  samples = sample_completions(sampler, params, tokenizer, problems, template=template, k=k,
                               max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, top_k=top_k, batch_size=batch_size, rng=rng,
                               progress=progress)
  return grade_and_summarize(samples, extract=_csv(extract), mode=grader, ks=ks,
                             grading_timeout_s=grading_timeout_s, progress=progress)


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
