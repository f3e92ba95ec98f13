"""Plots a run's metrics.jsonl: accuracy and response length against step (a PNG).

  python experiments/plot_metrics.py --workdir=workdirs/grpo_zero [--out=FILE.png]

Training accuracy (rollouts) and held-out eval pass@1 share the left panel; the mean response
length of rollouts and of eval samples the right one.
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
  fig, (acc_ax, len_ax) = plt.subplots(1, 2, figsize=(11, 4))
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
  for ax in (acc_ax, len_ax):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  return out


def main(_):
  out = _OUT.value or os.path.join(_WORKDIR.value, "metrics.png")
  print(plot(_WORKDIR.value, out))


if __name__ == "__main__":
  app.run(main)
