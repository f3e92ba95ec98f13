"""Which knob makes R1-Zero's self-evolution on the reflect world: one run per knob, one table.

  python experiments/reflect_ablations.py [--variants=baseline,clip_higher,...] [--steps=120]

Each variant is `configs/grpo_zero.py:world=reflect` with one override, trained from the same
reflect base (built first when missing) in `<out>/<variant>`; a finished run is read, not rerun.
The table gives, per variant, what the issue's criteria read from the held-out curves
(r1jax.reflection.curve_summary): pass@1 at the start and end, the largest share of the gain
inside 10 steps, the length ratio, the reflection rate at the start and end, the first aha step,
the mean share of clipped tokens, and the RL wall time (steps and evals). It is printed as markdown and written, with every run's summary, to
`<out>/ablations.json`; `--plot` draws every variant's held-out curves in one figure.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from absl import app, flags

from r1jax import reflection
from r1jax.metrics import read_metrics
from r1jax.runner import is_finished

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/grpo_zero.py:world=reflect"

# name -> (the knob as the issue names it, overrides). Everything else is the baseline config.
VARIANTS = {
    "baseline": ("as configured: eps 0.2/0.2, beta 0, G 8, budget 64, DAPO token mean", []),
    # One update per rollout (mu = 1, the default) keeps the ratio at exactly 1, so the clip
    # range only acts once a rollout is split into several updates.
    "clip_higher": ("clip-higher: eps_high 0.28 (DAPO)", ["--config.rl.loss.eps_high=0.28"]),
    "minibatch_4": ("4 updates per rollout (minibatches), eps 0.2",
                    ["--config.rl.num_minibatches=4"]),
    "minibatch_4_clip_higher": ("4 updates per rollout, clip-higher eps_high 0.28",
                                ["--config.rl.num_minibatches=4", "--config.rl.loss.eps_high=0.28"]),
    "lr_3e-5": ("learning rate 3e-5 (x3)", ["--config.optim.learning_rate=3e-5"]),
    "kl_0.04": ("KL penalty: beta 0.04 (k3)", ["--config.rl.loss.beta=0.04"]),
    "kl_0.001": ("KL penalty: beta 0.001 (the paper's)", ["--config.rl.loss.beta=0.001"]),
    "group_4": ("group size 4 (same prompts, half the samples)", ["--config.rl.group_size=4"]),
    "group_16": ("group size 16 (twice the samples)", ["--config.rl.group_size=16"]),
    "budget_40": ("length budget 40 tokens: no room for a re-check (~54)",
                  ["--config.rl.max_new_tokens=40"]),
    "budget_96": ("length budget 96 tokens", ["--config.rl.max_new_tokens=96"]),
    "grpo_mean": ("GRPO's per-response loss mean instead of DAPO's token mean",
                  ["--config.rl.loss.aggregation=grpo"]),
}
DEFAULT = "baseline,clip_higher,kl_0.04,group_4,budget_40,grpo_mean"

_VARIANTS = flags.DEFINE_string("variants", DEFAULT, f"Comma-separated, from: {', '.join(VARIANTS)}.")
_STEPS = flags.DEFINE_integer("steps", 120, "RL steps per run.")
_OUT = flags.DEFINE_string("out", "workdirs/reflect_ablations", "Runs and ablations.json go here.")
_PLOT = flags.DEFINE_string("plot", None, "Also draw every variant's held-out curves to this PNG.")


def criteria(s: dict) -> dict[str, bool]:
  """The issue's bar: +30 points not in one jump, length x1.5 rising with accuracy, reflection
  from under 5% to over 30%."""
  overlap = not (math.isnan(s["length_rise_from"]) or math.isnan(s["pass@1_rise_from"])) and (
      s["length_rise_from"] <= s["pass@1_rise_to"] and s["pass@1_rise_from"] <= s["length_rise_to"])
  return {"gain>=30pts": s["pass@1_gain"] >= 0.30,
          "gradual": s["max_window_share"] <= 0.5,
          "length>=1.5x_with_accuracy": s["length_ratio"] >= 1.5 and overlap,
          "reflection<5%->30%": s.get("reflection_rate_start", 1.0) < 0.05
                                and s.get("reflection_rate_end", 0.0) > 0.30}


def run(name: str, steps: int, out: str) -> dict:
  workdir = os.path.join(out, name)
  if not is_finished(workdir):
    cmd = [sys.executable, "-m", "r1jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
           f"--config.num_steps={steps}", "--config.progress=False", *VARIANTS[name][1]]
    print("$", " ".join(cmd[2:]), flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"{name}: {time.time() - start:.0f} s", flush=True)
  records = read_metrics(workdir)
  summary = reflection.curve_summary(records)
  summary["rl_wall_s"] = sum(r.get("time/step_s", 0.0) + r.get("eval/time_s", 0.0)
                             for r in records)
  summary["first_aha_step"] = reflection.first_aha_step(records)
  clipped = [r["clip_frac"] for r in records if r.get("clip_frac") is not None]
  summary["clip_frac_mean"] = sum(clipped) / max(len(clipped), 1)
  return {"variant": name, "knob": VARIANTS[name][0], "summary": summary,
          "criteria": criteria(summary)}


def table(rows: list[dict]) -> str:
  lines = ["| variant | pass@1 start -> end | largest 10-step share | length start -> end | "
           "reflection start -> end | first aha | clipped tokens | RL min | all criteria |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    s = r["summary"]
    aha = "-" if s["first_aha_step"] is None else s["first_aha_step"]
    lines.append(
        f"| {r['knob']} | {s['pass@1_start']:.1%} -> {s['pass@1_end']:.1%} | "
        f"{s['max_window_share']:.2f} | {s['length_start']:.0f} -> {s['length_end']:.0f} "
        f"(x{s['length_ratio']:.2f}) | {s.get('reflection_rate_start', 0):.1%} -> "
        f"{s.get('reflection_rate_end', 0):.1%} | {aha} | {s['clip_frac_mean']:.2%} | "
        f"{s['rl_wall_s'] / 60:.1f} | "
        f"{'yes' if all(r['criteria'].values()) else 'no: ' + ', '.join(k for k, v in r['criteria'].items() if not v)} |")
  return "\n".join(lines)


def plot(rows: list[dict], out: str, runs: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = (("eval/pass@1", "held-out pass@1"), ("eval/mean_response_length", "mean length (tokens)"),
          ("eval/reflection_rate", "reflection rate"))
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for r in rows:
    evals = [e for e in read_metrics(os.path.join(runs, r["variant"])) if "eval/pass@1" in e]
    for ax, (key, _) in zip(axes, keys):
      ax.plot([e["step"] for e in evals], [e[key] for e in evals], "o-", ms=3, label=r["variant"])
  for ax, (_, title) in zip(axes, keys):
    ax.set(xlabel="step", title=title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=110)


def main(argv):
  del argv
  names = [n.strip() for n in _VARIANTS.value.split(",") if n.strip()]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise app.UsageError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
  rows = [run(n, _STEPS.value, _OUT.value) for n in names]
  print(table(rows))
  with open(os.path.join(_OUT.value, "ablations.json"), "w") as f:
    json.dump(rows, f, indent=2)
  if _PLOT.value:
    plot(rows, _PLOT.value, _OUT.value)
    print("wrote", _PLOT.value)


if __name__ == "__main__":
  app.run(main)
