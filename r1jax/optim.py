"""Optimizers from config: AdamW with warm-up and cosine (or constant) decay, global-norm clip."""
from __future__ import annotations

import optax


def make_schedule(cfg) -> optax.Schedule:
  """cfg: learning_rate, warmup_steps, total_steps, schedule ('cosine' | 'constant')."""
  lr, warmup = float(cfg.learning_rate), int(cfg.get("warmup_steps", 0))
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    if warmup:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    return optax.constant_schedule(lr)
  if kind == "cosine":
    total = int(cfg.total_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(total, warmup + 1), end_value=lr * cfg.get("end_lr_factor", 0.1))
  raise ValueError(f"unknown learning-rate schedule {kind!r}; use 'cosine' or 'constant'")


def make_optimizer(cfg) -> optax.GradientTransformation:
  """cfg: the schedule fields, plus weight_decay, b1, b2, eps, grad_clip (0 = off)."""
  chain = []
  if cfg.get("grad_clip", 0.0):
    chain.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
  chain.append(optax.adamw(make_schedule(cfg), b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.95),
                           eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0)))
  return optax.chain(*chain)


def for_steps(cfg, num_steps: int):
  """`cfg` with total_steps set to a stage's step count (configs leave it 0: the stage knows)."""
  out = cfg.copy_and_resolve_references()
  with out.unlocked():
    out.total_steps = cfg.get("total_steps") or num_steps
  return out
