"""Masked next-token loss: pre-training the toy base, cold-start SFT, rejection-sampling SFT, distillation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(target) under float32 log_softmax: [B, T, V], [B, T] -> [B, T]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


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
  nll = -token_logprobs(logits, targets)
  n = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / n
  acc = ((jnp.argmax(logits, -1) == targets) * mask).sum() / n
  return loss, {"nll": loss, "token_accuracy": acc, "loss_tokens": mask.sum()}
