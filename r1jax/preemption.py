"""SIGTERM, the preemption notice of Cloud TPU and most schedulers: finish the step, checkpoint, exit.

The handler only sets a flag; the training loop asks `should_stop(step)` after each step, saves a
checkpoint when it is true and raises `Preempted`, which `r1jax.main` turns into a one-line message
and exit status 0 (the run is resumable, not failed; `lineage.json` is not written, so a pipeline
knows the stage is unfinished). On multi-host runs every process must stop at the same step, so
the flag is agreed through JAX's preemption sync point when `jax.distributed` is initialised.
"""
from __future__ import annotations

import signal
import threading

import jax


class Preempted(Exception):
  """Raised after the checkpoint of the step at which SIGTERM was honoured has been written."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"stopped at step {step} on SIGTERM; checkpoint saved in {workdir}, "
                     "rerun the same command to resume")
    self.step = step


class PreemptionGuard:
  """Catches SIGTERM while active (a context manager); restores the previous handler on exit."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None

  def __enter__(self) -> PreemptionGuard:
    # Multi-host: JAX's own preemption notifier owns SIGTERM (see should_stop).
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:  # every process gets the same answer for the same step
      from jax.experimental import multihost_utils
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # no preemption sync manager was set up by jax.distributed
        return False
    return self._flag.is_set()
