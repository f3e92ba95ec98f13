"""SFT losses: the masked next-token loss (pre-training the toy base, cold start, rejection SFT,
distillation by SFT), and an optional logit-distillation term for students that share the
teacher's vocabulary.

R1's distillation is the plain SFT loss on the teacher's samples; `distill_loss` is the classic
alternative (Hinton et al.), offered for comparison: (1 - w) * NLL + w * T^2 * KL(teacher_T ||
student_T) on the same completion tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.rl.losses import log_probs_from_logits


def _forward(model, params, batch):
  seg = batch.get("segment_ids")
  pos = batch.get("positions")
  logits = model.apply({"params": params}, batch["tokens"][:, :-1],
                       positions=None if pos is None else pos[:, :-1],
                       segment_ids=None if seg is None else seg[:, :-1])
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  if seg is not None:
    mask = mask * (seg[:, 1:] == seg[:, :-1]) * (seg[:, 1:] != 0)
  return logits, mask


def next_token_loss(model, params, batch: dict) -> tuple[jax.Array, dict]:
  """Mean NLL of tokens[:, 1:] where loss_mask[:, 1:] (and within the same packed segment).

  batch: tokens [B, L] int32, loss_mask [B, L] (1 on tokens to predict), optional
  segment_ids [B, L] and positions [B, L] for packed rows.
  """
  logits, mask = _forward(model, params, batch)
  return _nll(logits, mask, batch["tokens"][:, 1:])


def _nll(logits, mask, targets) -> tuple[jax.Array, dict]:
  nll = -log_probs_from_logits(logits, targets)
  n = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / n
  acc = ((jnp.argmax(logits, -1) == targets) * mask).sum() / n
  return loss, {"nll": loss, "token_accuracy": acc, "loss_tokens": mask.sum()}


def distill_loss(model, teacher_model, params, batch: dict, *, weight: float,
                 temperature: float = 1.0) -> tuple[jax.Array, dict]:
  """(1 - weight) * NLL + weight * T^2 * mean KL(teacher_T || student_T) over completion tokens.

  batch['teacher_params'] holds the frozen teacher (passed as data so it is not baked into the
  compiled step); both models must share one vocabulary.
  """
  logits, mask = _forward(model, params, batch)
  nll, metrics = _nll(logits, mask, batch["tokens"][:, 1:])
  t_logits, _ = _forward(teacher_model, jax.lax.stop_gradient(batch["teacher_params"]), batch)
  t_logp = jax.nn.log_softmax(t_logits.astype(jnp.float32) / temperature, -1)
  s_logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
  kl = (jnp.exp(t_logp) * (t_logp - s_logp)).sum(-1)  # [B, T]
  kl = (kl * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  loss = (1.0 - weight) * nll + weight * temperature ** 2 * kl
  return loss, {**metrics, "kl_to_teacher": kl}
