"""Deterministic fault injection, so the reliability tests can crash a real run at a chosen point.

`R1JAX_FAULTS` holds comma-separated `ACTION@POINT:STEP` entries (each value parsed once):
  kill@sample:3      SIGKILL this process after step 3's rollouts are sampled
  term@update:2      send SIGTERM to this process after step 2's update (a preemption notice)
  kill@checkpoint:3  SIGKILL right after step 3's asynchronous checkpoint write has started
  kill@eval:4        SIGKILL in the middle of the held-out eval at step 4
  nan@update:2       make step 2's loss NaN (GRPO: the rollout's rewards become NaN)
Steps count from 1 (the step being produced). Unset, every hook is a no-op.
"""
from __future__ import annotations

import functools
import os
import signal

ENV = "R1JAX_FAULTS"
ACTIONS = ("kill", "term", "nan")
POINTS = ("sample", "update", "checkpoint", "eval")


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> frozenset[tuple[str, str, int]]:
  faults = set()
  for entry in filter(None, (e.strip() for e in text.split(","))):
    action, _, rest = entry.partition("@")
    point, _, step = rest.partition(":")
    if action not in ACTIONS or point not in POINTS or not step.isdigit():
      raise ValueError(f"{ENV}: bad entry {entry!r}; expected ACTION@POINT:STEP with ACTION in "
                       f"{ACTIONS} and POINT in {POINTS}")
    faults.add((action, point, int(step)))
  return frozenset(faults)


def armed(action: str, point: str, step: int) -> bool:
  return (action, point, int(step)) in _parse(os.environ.get(ENV, ""))


def at(point: str, step: int) -> None:
  """Kills (SIGKILL) or preempts (SIGTERM) this process when a fault is armed for point:step."""
  if armed("kill", point, step):
    os.kill(os.getpid(), signal.SIGKILL)
  if armed("term", point, step):
    os.kill(os.getpid(), signal.SIGTERM)
