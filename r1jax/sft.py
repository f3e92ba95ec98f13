"""Masked next-token loss: pre-training the toy base, cold-start SFT, rejection-sampling SFT, distillation."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.rl.losses import log_probs_from_logits


def next_token_loss(model, params, batch: dict) -> tuple[jax.Array, dict]:
  """Mean NLL of tokens[:, 1:] where loss_mask[:, 1:] (and within the same packed segment).

  batch: tokens [B, L] int32, loss_mask [B, L] (1 on tokens to predict), optional
  segment_ids [B, L] and positions [B, L] for packed rows.
  """
  tokens = batch["tokens"]
  seg = batch.get("segment_ids")
  logits = model.apply({"params": params}, tokens[:, :-1],
                       positions=None if batch.get("positions") is None else batch["positions"][:, :-1],
                       segment_ids=None if seg is None else seg[:, :-1])
  targets = tokens[:, 1:]
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  if seg is not None:
    mask = mask * (seg[:, 1:] == seg[:, :-1]) * (seg[:, 1:] != 0)
  nll = -log_probs_from_logits(logits, targets)
  n = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / n
  acc = ((jnp.argmax(logits, -1) == targets) * mask).sum() / n
  return loss, {"nll": loss, "token_accuracy": acc, "loss_tokens": mask.sum()}
