"""The Bradley-Terry pairwise loss that trains R1's reward models on (chosen, rejected) pairs.

P(chosen beats rejected) = sigmoid(r_chosen - r_rejected); the loss is its mean negative
log-likelihood. Only score differences matter, so a reward model is defined up to a constant.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def bradley_terry_loss(r_chosen: jax.Array, r_rejected: jax.Array) -> tuple[jax.Array, dict]:
  """mean(-log sigmoid(r_chosen - r_rejected)) over pairs, in float32.

  r_chosen, r_rejected: [B] scores of each pair's replies. Metrics: `pair_accuracy`, the share of
  pairs ranked right (a tie counts as wrong: a constant model must score 0, not 0.5), and
  `margin`, the mean score difference.
  """
  r_chosen = r_chosen.astype(jnp.float32)  # [B]
  r_rejected = r_rejected.astype(jnp.float32)  # [B]
  diff = r_chosen - r_rejected  # [B]
  loss = -jnp.mean(jax.nn.log_sigmoid(diff))  # log_sigmoid is stable for large |diff|
  metrics = {"pair_accuracy": jnp.mean((r_chosen > r_rejected).astype(jnp.float32)),
             "margin": jnp.mean(diff)}
  return loss, metrics


def pair_accuracy(chosen_scores: Sequence[float] | np.ndarray,
                  rejected_scores: Sequence[float] | np.ndarray) -> float:
  """Host-side share of pairs with chosen > rejected (ties count as wrong), for held-out eval."""
  chosen = np.asarray(chosen_scores, np.float64)
  rejected = np.asarray(rejected_scores, np.float64)
  if chosen.shape != rejected.shape or chosen.ndim != 1 or not chosen.size:
    raise ValueError(f"need two equal non-empty [N] score arrays, got shapes {chosen.shape} "
                     f"and {rejected.shape}")
  return float(np.mean(chosen > rejected))
