"""Sampling k completions per problem and grading them: one library path for the eval stage,
the held-out evals of every training stage, and rejection sampling.

`sample_and_grade` returns the summary (pass@1 over k, unbiased pass@k, cons@k, lengths, and the
readability figures: `lang_mix_rate`, the share of samples whose CoT mixes languages, and
`readable_rate`, the share in R1's reasoning + summary format) and one record per problem.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Sequence

import numpy as np
import tqdm

from r1jax import evaluation, grading, language, multihost, response
from r1jax.samplers import REFILL_BATCHES
from r1jax.sampling import check_prompts_fit
from r1jax.templates import format_prompt
from r1jax.tokenizers import encode_prompt

log = logging.getLogger(__name__)


def _csv(value) -> tuple[str, ...]:
  """'a,b' or ('a', 'b') -> ('a', 'b')."""
  if isinstance(value, str):
    return tuple(s.strip() for s in value.split(",") if s.strip())
  return tuple(value or ())


# ----------------------------------------------------------------------------------- sampling
def sample_completions(sampler, params, tokenizer, problems: Sequence[dict], *, template: str,
                       k: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                       batch_size: int, rng, progress: bool = True,
                       first_id: int = 0) -> list[dict]:
  """k completions per problem. Problem i draws from its own stream (the sampler's prompt_ids,
  first_id + i), so one seed fixes every sample whatever the batch size, process count or
  sampler. A sampler that refills finished rows' slots (`refills`) gets REFILL_BATCHES batches
  per call, so finished rows make room for waiting ones (r1jax/samplers.py)."""
  if k < 1 or batch_size < 1:
    raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
  encoded = [encode_prompt(tokenizer, format_prompt(template, p["problem"])) for p in problems]
  check_prompts_fit(encoded, [p.get("id", str(i)) for i, p in enumerate(problems)],
                    max_new_tokens, sampler)
  out = []
  per_call = batch_size * (REFILL_BATCHES if getattr(sampler, "refills", False) else 1)
  starts = range(0, len(problems), per_call)
  for start in tqdm.tqdm(starts, desc="sampling", unit="batch", disable=not progress):
    batch = problems[start:start + per_call]
    prompts = [format_prompt(template, p["problem"]) for p in batch]
    res = sampler(params, encoded[start:start + per_call], rng=rng,
                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                  n=k, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                  prompt_ids=list(range(first_id + start, first_id + start + len(batch))))
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
          **{key: problem[key] for key in ("task", "language") if key in problem},
      })
  return out


# ------------------------------------------------------------------------------------ grading
def readability(records: Sequence[dict], default_language: str = "en") -> dict[str, float]:
  """lang_mix_rate: share of completions whose CoT mixes languages (against the record's
  `language`); readable_rate: share in R1's readable format (reasoning + summary + answer)."""
  mixed, readable, n = 0, 0, 0
  for r in records:
    lang = r.get("language") or default_language
    for c in r["completions"]:
      if not isinstance(c, str):
        continue
      n += 1
      mixed += language.mixes_languages(response.cot_text(c), lang)
      readable += response.is_readable(c)
  return {"lang_mix_rate": mixed / max(n, 1), "readable_rate": readable / max(n, 1)}


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
    summary.update(readability(records))
  finally:
    if worker:
      worker.close()
  return summary, records


def sample_and_grade(sampler, params, tokenizer, problems: Sequence[dict], *, template: str, k: int,
                     max_new_tokens: int, temperature: float, top_p: float, top_k: int = 0,
                     batch_size: int, rng, grader: str = "math",
                     extract: Sequence[str] = ("answer_tag", "boxed"),
                     ks: Sequence[int] | None = None, grading_timeout_s: float = 0.0,
                     progress: bool = True, first_id: int = 0) -> tuple[dict, list[dict]]:
  """Samples k completions per problem with a live sampler and grades them: (summary, records)."""
  samples = sample_completions(sampler, params, tokenizer, problems, template=template, k=k,
                               max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, top_k=top_k, batch_size=batch_size, rng=rng,
                               progress=progress, first_id=first_id)
  return grade_and_summarize(samples, extract=_csv(extract), mode=grader, ks=ks,
                             grading_timeout_s=grading_timeout_s, progress=progress)


def heldout_eval(sampler, params, tokenizer, problems: Sequence[dict], config, rng
                 ) -> dict[str, float]:
  """A training stage's held-out eval from its `eval` block (k samples, T, top-p, length): the
  same protocol and code path as configs/eval.py. Returns {'eval/<metric>': value}.

  With several processes each samples and grades its share of the problems, and the summaries
  are combined (means weighted by problems, counts summed; r1jax.multihost.combine_metrics).
  """
  ev = config.eval
  share, first, real = multihost.process_share(problems)
  samples = sample_completions(
      sampler, params, tokenizer, share, template=config.data.template, k=ev.k,
      max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, top_p=ev.top_p,
      top_k=ev.get("top_k", 0), batch_size=ev.batch_size, rng=rng, progress=False,
      first_id=first)
  # A process left with only padding still summarises one problem, at weight 0.
  summary, records = grade_and_summarize(samples[:max(real, 1)],
                                         extract=_csv(ev.get("extract", ("answer_tag",))),
                                         mode=config.get("grader", "exact"), progress=False)
  if ev.get("reflection", False):  # re-checks, reflection words and aha samples (r1jax.reflection)
    from r1jax import reflection
    found, aha = reflection.heldout_metrics(records)
    summary.update(found)
    if aha is not None:
      log.info("held-out aha sample: %s", reflection.format_aha(-1, aha).split("\n", 1)[1])
  summary = multihost.combine_metrics(summary, weight=real)
  return {f"eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
