"""Metrics to `WORKDIR/metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow)."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np


def _to_float(v: Any) -> float | None:
  try:
    f = float(np.asarray(v))
  except (TypeError, ValueError):
    return None
  return f if math.isfinite(f) else None


class MetricsWriter:
  """Appends `{"step": s, **scalars}` lines; only process 0 writes.

  A resumed run passes `resume_step` (the checkpoint's step, 0 for a fresh start) and the
  `resume_offset` that `offset()` gave when that checkpoint was saved: every line written after
  the checkpoint is cut, so a run killed anywhere and rerun has each step's lines exactly once.
  Without an offset (an older checkpoint) lines with a larger step are dropped instead.
  TensorBoard hides its events past the resume step (`purge_step`).
  """

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int | None = None,
               resume_offset: int | None = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if resume_step is not None:
        self._rewind(resume_step, resume_offset)
      if tensorboard:
        from tensorboardX import SummaryWriter
        purge = None if resume_step is None else resume_step + 1
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

  def offset(self) -> int:
    """Bytes written so far: saved with each checkpoint, handed back as `resume_offset`."""
    return os.path.getsize(self.path) if os.path.exists(self.path) else 0

  def _rewind(self, step: int, offset: int | None) -> None:
    if not os.path.exists(self.path):
      return
    if offset is None and step:  # a checkpoint that predates offsets: keep lines up to its step
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    else:  # cut at the checkpoint's offset; a fresh start (step 0) keeps nothing
      with open(self.path, "r+") as f:
        f.truncate(offset or 0)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: _to_float(v) for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}, sort_keys=True) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None:
          self._tb.add_scalar(k.replace("@", "_at_"), v, int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir_or_file: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl, later records for a step overriding earlier (resumed) ones."""
  path = workdir_or_file
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  by_key: dict[tuple[int, tuple[str, ...]], dict] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        rec = json.loads(line)
        by_key[(rec["step"], tuple(sorted(rec)))] = rec
  return [by_key[k] for k in sorted(by_key, key=lambda k: k[0])]
