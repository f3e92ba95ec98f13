"""Plots a run's metrics.jsonl: accuracy and response length against step (a PNG).

  python experiments/plot_metrics.py --workdir=workdirs/grpo_zero [--out=FILE.png]

Training accuracy (rollouts) and held-out eval pass@1 share the left panel; the mean response
length of rollouts and of eval samples the right one. A run that logs reflection metrics (every
GRPO run; `eval.reflection` for the held-out ones, r1jax/reflection.py) gets two more panels, as
in the R1 paper's figures: the reflection rate (share of responses with a re-check) and
re-checks per response, and the frequency of each reflection word per response; a dotted line
marks the first eval with an aha sample (a held-out re-check that corrects a wrong step).
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from r1jax.metrics import read_metrics  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
_OUT = flags.DEFINE_string("out", None, "PNG path (default: WORKDIR/metrics.png).")


def series(records, key):
  pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
  return [p[0] for p in pts], [p[1] for p in pts]


def plot(workdir: str, out: str) -> str:
  records = read_metrics(workdir)
  if not records:
    raise ValueError(f"{workdir}/metrics.jsonl holds no records")
  reflective = any(r.get("reflection_rate") for r in records)
  fig, axes = plt.subplots(2 if reflective else 1, 2, figsize=(11, 8 if reflective else 4),
                           squeeze=False)
  (acc_ax, len_ax), panels = axes[0], list(axes.flat)
  for key, label, style in (("accuracy", "rollout accuracy", "-"),
                            ("eval/pass@1", "held-out pass@1", "o-")):
    x, y = series(records, key)
    if x:
      acc_ax.plot(x, y, style, label=label, alpha=0.6 if style == "-" else 1.0)
  acc_ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="accuracy")
  for key, label, style in (("response_length/mean", "rollout mean length", "-"),
                            ("eval/mean_response_length", "eval mean length", "o-")):
    x, y = series(records, key)
    if x:
      len_ax.plot(x, y, style, label=label, alpha=0.6 if style == "-" else 1.0)
  len_ax.set(xlabel="step", ylabel="tokens", title="response length")
  if reflective:
    _reflection_panels(records, *axes[1])
  aha = [r["step"] for r in records if (r.get("eval/num_aha_samples") or 0) > 0]
  for ax in panels:
    if aha:
      ax.axvline(min(aha), color="gray", ls=":", label=f"first aha (step {min(aha)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  return out


def _reflection_panels(records, rate_ax, words_ax) -> None:
  for key, label, style in (("reflection_rate", "rollouts", "-"),
                            ("eval/reflection_rate", "held-out", "o-")):
    x, y = series(records, key)
    if x:
      rate_ax.plot(x, y, style, label=label, alpha=0.6 if style == "-" else 1.0)
  rate_ax.set(xlabel="step", ylabel="share of responses", ylim=(0, 1),
              title="reflection rate (responses with a re-check)")
  for key, label, style in (("rechecks_per_response", "re-checks (rollouts)", "-"),
                            ("eval/rechecks_per_response", "re-checks (held-out)", "s")):
    x, y = series(records, key)
    if x:
      words_ax.plot(x, y, style, color="black", ms=4, label=label, alpha=0.5)
  words = sorted({k.split("/", 1)[1] for r in records for k in r
                  if k.startswith("reflection_words/")})
  for w in words:
    x, y = series(records, f"reflection_words/{w}")
    words_ax.plot(x, y, "--", label=f'"{w}" (rollouts)', alpha=0.8)
    x, y = series(records, f"eval/reflection_words/{w}")
    if x:
      words_ax.plot(x, y, "o", ms=3, label=f'"{w}" (held-out)')
  words_ax.set(xlabel="step", ylabel="per response", title="re-checks and reflection words")


def main(_):
  out = _OUT.value or os.path.join(_WORKDIR.value, "metrics.png")
  print(plot(_WORKDIR.value, out))
  aha = os.path.join(_WORKDIR.value, "aha.json")
  if os.path.exists(aha):  # written by `python -m r1jax.reflection --workdir=...`
    import json

    from r1jax import reflection
    with open(aha) as f:
      found = json.load(f)
    print(reflection.format_aha(found["step"], found))


if __name__ == "__main__":
  app.run(main)
