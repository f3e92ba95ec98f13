"""The pipeline's report: one row per stage, one column per metric, and the paper's findings.

report.json has fixed keys (scripts read it); report.md is the table and the findings beside the
targets the toy world aims at; report.png shows the metrics by stage and the RL curves.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from r1jax import runner

STAGE_KEYS = ("pass@1", "cons@k", "mean_length", "lang_mix_rate", "readable_rate",
              "general_obey_rate", "harmless_rate", "rm_score", "wall_s")
FINDING_KEYS = ("r1_zero_gain", "lang_mix_r1_zero", "lang_mix_stage2",
                "lang_mix_stage2_no_lang_reward", "stage2_pass1_minus_ablation",
                "rs_kept_fraction", "rs_sft_pass1_minus_stage2", "rm_pair_accuracy",
                "general_obey_gain_stage4", "reasoning_change_stage4",
                "distill_minus_student_zero_rl", "distill_flops", "student_zero_rl_flops")
# Stages that make no policy to sample from.
NO_POLICY = ("rejection_sampling", "reward_model")
RL_STAGES = ("grpo_zero", "reasoning_rl", "reasoning_rl_no_lang", "all_scenario_rl",
             "grpo_zero_student")
# What the toy world should show (the paper's findings), for report.md: key -> (test, text).
TARGETS = {
    "r1_zero_gain": (lambda v: v >= 0.30, ">= 0.30"),
    "lang_mix_r1_zero": (lambda v: v > 0.10, "> 0.10"),
    "lang_mix_stage2": (lambda v: v <= 0.01, "<= 0.01"),
    "stage2_pass1_minus_ablation": (lambda v: v >= -0.03, ">= -0.03"),
    "rs_sft_pass1_minus_stage2": (lambda v: v >= -0.03, ">= -0.03"),
    "rm_pair_accuracy": (lambda v: v >= 0.90, ">= 0.90"),
    "general_obey_gain_stage4": (lambda v: v >= 0.10, ">= 0.10"),
    "reasoning_change_stage4": (lambda v: v >= -0.03, ">= -0.03"),
    "distill_minus_student_zero_rl": (lambda v: v >= 0.10, ">= 0.10"),
}


def _num(v) -> float | None:
  return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _stage_row(ev: dict | None, lineage: dict | None) -> dict[str, float | None]:
  ev = ev or {}
  k = int(ev.get("eval/samples_per_problem", 0))
  row = {"pass@1": ev.get("eval/pass@1"), "cons@k": ev.get(f"eval/cons@{k}"),
         "mean_length": ev.get("eval/mean_response_length"),
         "lang_mix_rate": ev.get("eval/lang_mix_rate"),
         "readable_rate": ev.get("eval/readable_rate"),
         "general_obey_rate": ev.get("eval/general_obey_rate"),
         "harmless_rate": ev.get("eval/harmless_rate"), "rm_score": ev.get("eval/rm_score"),
         "wall_s": (lineage or {}).get("wall_s")}
  return {key: _num(v) for key, v in row.items()}


def _diff(a, b):
  return None if a is None or b is None else a - b


def build(config, workdir: str, evals: dict[str, dict], wall_s: float) -> dict[str, Any]:
  lineages = {name: runner.read_lineage(os.path.join(workdir, name))
              for name in config.stage_order}
  stages = {name: _stage_row(evals.get(name), lineages[name])
            for name in config.stage_order if lineages[name]}
  get = lambda stage, key: (stages.get(stage) or {}).get(key)  # noqa: E731
  result = lambda stage, key: _num(((lineages.get(stage) or {}).get("result") or {}).get(key))  # noqa: E731,E501
  rs_stats = os.path.join(workdir, "rejection_sampling", "stats.json")
  kept = None
  if os.path.isfile(rs_stats):
    with open(rs_stats) as f:
      kept = _num(json.load(f).get("kept_fraction"))
  findings = {
      "r1_zero_gain": _diff(get("grpo_zero", "pass@1"), get("toy_base", "pass@1")),
      "lang_mix_r1_zero": get("grpo_zero", "lang_mix_rate"),
      "lang_mix_stage2": get("reasoning_rl", "lang_mix_rate"),
      "lang_mix_stage2_no_lang_reward": get("reasoning_rl_no_lang", "lang_mix_rate"),
      "stage2_pass1_minus_ablation": _diff(get("reasoning_rl", "pass@1"),
                                           get("reasoning_rl_no_lang", "pass@1")),
      "rs_kept_fraction": kept,
      "rs_sft_pass1_minus_stage2": _diff(get("rejection_sft", "pass@1"),
                                         get("reasoning_rl", "pass@1")),
      "rm_pair_accuracy": result("reward_model", "eval/pair_accuracy"),
      "general_obey_gain_stage4": _diff(get("all_scenario_rl", "general_obey_rate"),
                                        get("rejection_sft", "general_obey_rate")),
      "reasoning_change_stage4": _diff(get("all_scenario_rl", "pass@1"),
                                       get("rejection_sft", "pass@1")),
      "distill_minus_student_zero_rl": _diff(get("distill", "pass@1"),
                                             get("grpo_zero_student", "pass@1")),
      "distill_flops": result("distill", "train_flops"),
      "student_zero_rl_flops": result("grpo_zero_student", "train_flops"),
  }
  return {"stages": stages, "findings": findings, "wall_s": wall_s}


def _fmt(v) -> str:
  if v is None:
    return "-"
  if abs(v) >= 1e5:
    return f"{v:.3g}"
  return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def markdown(rep: dict) -> str:
  lines = ["| stage | " + " | ".join(STAGE_KEYS) + " |",
           "| --- |" + " --- |" * len(STAGE_KEYS)]
  for name, row in rep["stages"].items():
    lines.append(f"| {name} | " + " | ".join(_fmt(row[k]) for k in STAGE_KEYS) + " |")
  lines += ["", "| finding | value | target | holds |", "| --- | --- | --- | --- |"]
  for key in FINDING_KEYS:
    v = rep["findings"][key]
    test, text = TARGETS.get(key, (None, ""))
    holds = "-" if test is None or v is None else ("yes" if test(v) else "**no**")
    lines.append(f"| {key} | {_fmt(v)} | {text} | {holds} |")
  lines.append(f"\nwall time: {rep['wall_s']:.0f} s")
  return "\n".join(lines)


def plot(workdir: str, rep: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from r1jax.metrics import read_metrics
  names = [n for n, row in rep["stages"].items() if row["pass@1"] is not None]
  fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 4.5))
  width = 0.2
  for i, key in enumerate(("pass@1", "lang_mix_rate", "readable_rate", "general_obey_rate")):
    values = [rep["stages"][n][key] or 0.0 for n in names]
    bars.bar([x + i * width for x in range(len(names))], values, width, label=key)
  bars.set_xticks([x + 1.5 * width for x in range(len(names))], names, rotation=35, ha="right")
  bars.set(ylim=(0, 1.05), title="held-out metrics by stage")
  bars.legend(fontsize=8)
  for name in RL_STAGES:
    metrics_file = os.path.join(workdir, name, "metrics.jsonl")
    if os.path.isfile(metrics_file):
      pts = [(r["step"], r["eval/pass@1"]) for r in read_metrics(metrics_file)
             if r.get("eval/pass@1") is not None]
      if pts:
        curves.plot(*zip(*pts), "o-", label=name)
  curves.set(xlabel="RL step", ylabel="held-out pass@1", ylim=(0, 1.05), title="RL curves")
  curves.legend(fontsize=8)
  for ax in (bars, curves):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(workdir: str, rep: dict) -> None:
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(rep, f, indent=2, sort_keys=True)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(markdown(rep) + "\n")
  plot(workdir, rep, os.path.join(workdir, "report.png"))
