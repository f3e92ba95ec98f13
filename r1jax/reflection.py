"""Reflection metrics: how often responses re-check their own steps, and the "aha moment".

The R1 paper tracks R1-Zero's reflective behaviour with the frequency of reflection words
("wait", "check", ...) over training, and shows an "aha moment": a response that stops, re-checks
and corrects itself. Here:
  reflection_rate         share of responses with at least one re-check (a `wait`)
  rechecks_per_response   re-checks per response
  reflection_words/<w>    occurrences of each reflection word per response
The GRPO stage logs them for its rollouts; a held-out eval with `eval.reflection` logs them as
`eval/...`, with `eval/num_aha_samples`: the held-out samples that a re-check saves, i.e. one
that corrects a wrong step (r1jax.data.reflect_world.corrections) in a right answer. The first
eval with one is the aha moment:

  python -m r1jax.reflection --workdir=workdirs/grpo_zero_reflect

re-samples that eval from the step's checkpoint (the eval is deterministic: same problems, seed
and code path), prints the first such sample with its step and writes WORKDIR/aha.json.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence

from r1jax.data import reflect_world

WORDS = reflect_world.REFLECTION_WORDS
_RECHECK = re.compile(rf"\b{reflect_world.WAIT}\b", re.IGNORECASE)
_WORD = {w: re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in WORDS}
AHA_FILE = "aha.json"


def rechecks(text: str) -> int:
  """Re-checks in a response: each `wait` opens one."""
  return len(_RECHECK.findall(text))


def stats(texts: Iterable[str], prefix: str = "") -> dict[str, float]:
  """Reflection rate, re-checks and reflection words per response over `texts`."""
  texts = [t for t in texts if isinstance(t, str)]
  n = max(len(texts), 1)
  counts = [rechecks(t) for t in texts]
  out = {f"{prefix}reflection_rate": sum(c > 0 for c in counts) / n,
         f"{prefix}rechecks_per_response": sum(counts) / n}
  for w, pattern in _WORD.items():
    out[f"{prefix}reflection_words/{w}"] = sum(len(pattern.findall(t)) for t in texts) / n
  return out


def aha_samples(records: Sequence[dict]) -> list[dict]:
  """Graded samples (in problem, then sample order) that a re-check saves: their reasoning
  holds a re-check that corrects a wrong step, and their final answer is right.
  {id, problem, gold, completion, corrections}."""
  out = []
  for r in records:
    for c, ok in zip(r["completions"], r["correct"]):
      fixes = reflect_world.corrections(c) if ok and isinstance(c, str) else []
      if fixes:
        out.append({"id": r.get("id"), "problem": r["problem"], "gold": r.get("gold"),
                    "completion": c, "corrections": fixes})
  return out


def heldout_metrics(records: Sequence[dict]) -> tuple[dict[str, float], dict | None]:
  """The held-out eval's reflection metrics (`eval/` prefix left to the caller) and its first
  aha sample, or None."""
  texts = [c for r in records for c in r["completions"]]
  ahas = aha_samples(records)
  return {**stats(texts), "num_aha_samples": float(len(ahas))}, (ahas[0] if ahas else None)


def format_aha(step: int, aha: dict) -> str:
  fix = aha["corrections"][0]
  return (f"aha moment at step {step}: held-out problem {aha['problem']} (answer {aha['gold']})\n"
          f"  {aha['completion']}\n"
          f"  the step {fix['step']} is wrong; the re-check `{fix['check']}` corrects it")


# --------------------------------------------------------------------------------- the curves
def curve_summary(records: Sequence[dict], window: int = 10) -> dict[str, float]:
  """The held-out curves of a run as the R1-Zero figures read them: pass@1, mean length and
  reflection rate at the first and last eval, and `max_window_share`, the largest share of the
  pass@1 gain between two evals at most `window` steps apart (1.0: it all came in one jump)."""
  evals = [r for r in records if r.get("eval/pass@1") is not None]
  if not evals:
    raise ValueError("no held-out evals in these metrics")
  first, last = evals[0], evals[-1]
  gain = last["eval/pass@1"] - first["eval/pass@1"]
  jumps = [b["eval/pass@1"] - a["eval/pass@1"] for i, a in enumerate(evals) for b in evals[i:]
           if b["step"] - a["step"] <= window]
  out = {"first_step": first["step"], "last_step": last["step"],
         "pass@1_start": first["eval/pass@1"], "pass@1_end": last["eval/pass@1"],
         "pass@1_gain": gain,
         "max_window_share": max(jumps) / gain if gain > 0 else float("nan"),
         "length_start": first["eval/mean_response_length"],
         "length_end": last["eval/mean_response_length"]}
  out["length_ratio"] = out["length_end"] / max(out["length_start"], 1e-9)
  # When each curve rose: the first evals at 10% and at 90% of its total change.
  for key, name in (("eval/pass@1", "pass@1"), ("eval/mean_response_length", "length")):
    out[f"{name}_rise_from"], out[f"{name}_rise_to"] = rise_window(evals, key)
  for key in ("reflection_rate", "rechecks_per_response"):
    if f"eval/{key}" in first:
      out[f"{key}_start"], out[f"{key}_end"] = first[f"eval/{key}"], last[f"eval/{key}"]
  return out


def rise_window(evals: Sequence[dict], key: str) -> tuple[float, float]:
  """The steps of the first evals at which `key` has covered 10% and 90% of its change from the
  first eval to the last (nan, nan when it did not grow)."""
  start, change = evals[0][key], evals[-1][key] - evals[0][key]
  if change <= 0:
    return float("nan"), float("nan")
  reached = lambda f: next(r["step"] for r in evals if r[key] - start >= f * change)
  return reached(0.1), reached(0.9)


# ------------------------------------------------------------------------------ the aha moment
def first_aha_step(records: Sequence[dict]) -> int | None:
  """The first eval step of a run (its metrics records) whose held-out samples hold an aha."""
  steps = [r["step"] for r in records if (r.get("eval/num_aha_samples") or 0) > 0]
  return min(steps) if steps else None


def find_aha(workdir: str) -> dict | None:
  """Re-samples the held-out eval of a GRPO run at its first aha step from that step's
  checkpoint (the parent's weights at step 0) and returns {step, **aha sample}; None when no
  eval found one. Raises when the step's checkpoint is gone (keep_checkpoints too small)."""
  import jax
  import ml_collections

  from r1jax import sample_grade, samplers, sharding
  from r1jax.models import loading
  from r1jax.models.transformer import Transformer
  from r1jax.stages import grpo

  from r1jax.metrics import read_metrics
  step = first_aha_step(read_metrics(workdir))
  if step is None:
    return None
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  path = config.parents.init.dir if step == 0 else workdir
  pre = loading.load_pretrained(path, mesh=mesh, rules=rules, step=None if step == 0 else step)
  model = Transformer(loading.with_precision(pre.config, config.get("precision")))
  ev = config.eval
  problems = grpo.load_prompts(config, "test")[: ev.num_problems]
  sampler = samplers.from_config(config, "eval", model, mesh, rules, rows=ev.batch_size * ev.k)
  samples = sample_grade.sample_completions(
      sampler, pre.params, pre.tokenizer, problems,
      template=config.data.template, k=ev.k, max_new_tokens=ev.max_new_tokens,
      temperature=ev.temperature, top_p=ev.top_p, top_k=ev.get("top_k", 0),
      batch_size=ev.batch_size, rng=jax.random.key(ev.seed), progress=False)
  _, records = sample_grade.grade_and_summarize(
      samples, extract=sample_grade._csv(ev.get("extract", ("answer_tag",))),
      mode=config.get("grader", "exact"), progress=False)
  ahas = aha_samples(records)
  return {"step": step, **ahas[0]} if ahas else None


def main(argv):
  from absl import flags
  del argv
  workdir = flags.FLAGS.workdir
  from r1jax.metrics import read_metrics
  summary = curve_summary(read_metrics(workdir))
  print(" ".join(f"{k}={v:.3g}" for k, v in summary.items()))
  aha = find_aha(workdir)
  if aha is None:
    print(f"no held-out aha in {workdir}")
    return
  print(format_aha(aha["step"], aha))
  with open(os.path.join(workdir, AHA_FILE), "w") as f:
    json.dump(aha, f, indent=2)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "A GRPO run directory.", required=True)
  app.run(main)
