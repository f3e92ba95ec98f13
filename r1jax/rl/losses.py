"""GRPO policy loss: clipped surrogate + KL to a reference, with the published aggregation variants.

Per token t of sequence i (mask m_it), with advantage A_i and ratio rho:
  surr_it = min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)
  loss_it = -surr_it + beta * KL_it                       (the objective is maximised; we minimise)
Ratio modes ('token' is what every public implementation uses):
  'token'     rho_it = exp(logp_it - old_it)
  'sequence'  rho_i  = exp(sum_t m_it (logp_it - old_it))     the GRPO paper's pi(o|q) / pi_old(o|q)
  'gspo'      rho_i  = exp(mean_t m_it (logp_it - old_it))    GSPO, length-normalised
In the sequence modes surr_i is computed once per sequence and given to each of its valid tokens,
so the KL stays per token and the aggregations below apply unchanged. Under 'grpo' aggregation a
sequence's loss is then exactly -surr_i + beta * mean_t KL_it. ('sequence' multiplies per-token
ratios, so its value overflows for long, drifted sequences: it is there to reproduce the paper.)
Aggregations of loss_it:
  'grpo'     (1/S) sum_i [sum_t m_it loss_it / sum_t m_it]    GRPO paper, TRL 'grpo'
  'dapo'     sum_it m_it loss_it / N_tok                      DAPO, TRL 'dapo', verl 'token-mean'
  'dr_grpo'  sum_it m_it loss_it / (S * max_tokens)           Dr.GRPO: a constant token budget
S (sequences) and N_tok (valid tokens) default to this call's; pass the full batch's totals when
the batch is split into accumulated minibatches, so the summed minibatch losses equal the
full-batch loss (the TRL #2995 bug). KL estimators, with d = ref_logp - logp: k1 = -d, k2 = d^2 / 2,
k3 = exp(d) - d - 1 (unbiased, always >= 0).
Masked positions contribute exactly zero loss and zero gradient, whatever values they hold.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

RATIOS = ("token", "sequence", "gspo")
KLS = ("k1", "k2", "k3")
AGGREGATIONS = ("grpo", "dapo", "dr_grpo")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static loss settings (hashable, so it can be a static jit argument).

  beta defaults to 0 (no reference model needed), as in DAPO and Dr.GRPO; R1 used beta = 0.001 with
  k3. max_tokens is the Dr.GRPO constant budget (the max completion length); None means the
  padded length T of the batch, which is only constant if the batch is always padded to it.
  """
  ratio: str = "token"
  eps_low: float = 0.2
  eps_high: float = 0.2
  beta: float = 0.0
  kl: str = "k3"
  aggregation: str = "grpo"
  max_tokens: int | None = None

  def __post_init__(self):
    if self.ratio not in RATIOS:
      raise ValueError(f"ratio must be one of {RATIOS}, got {self.ratio!r}")
    if self.kl not in KLS:
      raise ValueError(f"kl must be one of {KLS}, got {self.kl!r}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
    if not (0.0 <= self.eps_low < 1.0) or self.eps_high < 0.0:
      raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, "
                       f"{self.eps_high}")
    if self.beta < 0.0:
      raise ValueError(f"beta must be >= 0, got {self.beta}")
    if self.max_tokens is not None and self.max_tokens < 1:
      raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def kl_per_token(logp: jax.Array, ref_logp: jax.Array, kind: str) -> jax.Array:
  """Per-token estimate of KL(pi_theta || pi_ref) from log-probs of the sampled tokens."""
  d = ref_logp - logp
  if kind == "k1":
    return -d
  if kind == "k2":
    return 0.5 * d * d
  if kind == "k3":
    return jnp.exp(d) - d - 1.0
  raise ValueError(f"kl must be one of {KLS}, got {kind!r}")


def policy_loss(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array | None,
                mask: jax.Array, advantages: jax.Array, cfg: LossConfig, *,
                num_sequences: jax.Array | int | None = None,
                num_tokens: jax.Array | int | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Returns (loss to minimise, metrics). logp, old_logp, ref_logp, mask: [B, T]; advantages: [B].

  num_sequences / num_tokens override the normalisers S / N_tok (see the module docstring).
  Metrics are over this call's valid tokens: kl (masked mean; 0 without a reference), clip fractions
  (low: rho < 1 - eps_low with A < 0; high: rho > 1 + eps_high with A > 0; both are where the clip
  is active and the token gets no policy gradient), ratio_mean.
  """
  if logp.ndim != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
    raise ValueError(f"logp, old_logp, mask must share one [B, T] shape, got {logp.shape}, "
                     f"{old_logp.shape}, {mask.shape}")
  if advantages.shape != logp.shape[:1]:
    raise ValueError(f"advantages must be [B]={logp.shape[:1]}, got {advantages.shape}")
  if ref_logp is not None and ref_logp.shape != logp.shape:
    raise ValueError(f"ref_logp must be {logp.shape}, got {ref_logp.shape}")
  if cfg.beta > 0.0 and ref_logp is None:
    raise ValueError("beta > 0 needs ref_logp")

  f32 = jnp.float32
  valid = mask.astype(bool)
  m = valid.astype(f32)  # [B, T]
  adv = advantages.astype(f32)[:, None]  # [B, 1]
  # where() on the inputs, not the outputs: garbage (even inf/NaN) at masked positions can reach
  # neither the loss nor the gradient.
  log_ratio = jnp.where(valid, logp.astype(f32) - old_logp.astype(f32), 0.0)  # [B, T]
  len_i = jnp.sum(m, axis=1, keepdims=True)  # [B, 1]
  if cfg.ratio == "token":
    ratio = jnp.exp(log_ratio)  # [B, T]
  elif cfg.ratio == "sequence":
    ratio = jnp.exp(jnp.sum(log_ratio, axis=1, keepdims=True))  # [B, 1]
  else:
    ratio = jnp.exp(jnp.sum(log_ratio, axis=1, keepdims=True) / jnp.maximum(len_i, 1.0))
  clipped = jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
  surr = jnp.minimum(ratio * adv, clipped * adv)  # [B, T] or [B, 1]
  per_token = jnp.broadcast_to(-surr, m.shape)  # [B, T]

  if ref_logp is not None:
    kl = kl_per_token(jnp.where(valid, logp.astype(f32), 0.0),
                      jnp.where(valid, ref_logp.astype(f32), 0.0), cfg.kl)  # [B, T], 0 if masked
    if cfg.beta > 0.0:
      per_token = per_token + cfg.beta * kl
  else:
    kl = jnp.zeros_like(m)
  per_token = per_token * m

  b, t = m.shape
  seqs = b if num_sequences is None else num_sequences
  if cfg.aggregation == "grpo":
    loss = jnp.sum(jnp.sum(per_token, axis=1) / jnp.maximum(len_i[:, 0], 1.0)) / seqs
  elif cfg.aggregation == "dapo":
    toks = jnp.sum(m) if num_tokens is None else num_tokens
    loss = jnp.sum(per_token) / jnp.maximum(jnp.asarray(toks, f32), 1.0)
  else:
    budget = t if cfg.max_tokens is None else cfg.max_tokens
    loss = jnp.sum(per_token) / (jnp.asarray(seqs, f32) * budget)

  n_valid = jnp.maximum(jnp.sum(m), 1.0)
  ratio_bt = jnp.broadcast_to(ratio, m.shape)
  adv_bt = jnp.broadcast_to(adv, m.shape)
  low = (ratio_bt < 1.0 - cfg.eps_low) & (adv_bt < 0) & valid
  high = (ratio_bt > 1.0 + cfg.eps_high) & (adv_bt > 0) & valid
  frac = lambda x: jnp.sum(x.astype(f32)) / n_valid
  metrics = {
      "kl": jax.lax.stop_gradient(jnp.sum(kl * m) / n_valid),
      "clip_frac_low": frac(low),
      "clip_frac_high": frac(high),
      "clip_frac": frac(low | high),
      "ratio_mean": jax.lax.stop_gradient(jnp.sum(ratio_bt * m) / n_valid),
  }
  return loss, metrics


def log_probs_from_logits(logits: jax.Array, tokens: jax.Array,
                          temperature: float = 1.0) -> jax.Array:
  """logits [B, T, V], tokens [B, T] -> log p(tokens) [B, T] in float32.

  Trainer and sampler must both use this (same dtype, same temperature scaling) so that the
  sampler's log-probs and the trainer's old log-probs agree.
  """
  if logits.shape[:-1] != tokens.shape:
    raise ValueError(f"logits {logits.shape} and tokens {tokens.shape} disagree")
  x = logits.astype(jnp.float32)
  if temperature != 1.0:
    x = x / temperature
  picked = jnp.take_along_axis(x, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(x, axis=-1)


def token_entropy(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean over tokens of the entropy of softmax(logits) [B, T, V], in float32."""
  if logits.shape[:-1] != mask.shape:
    raise ValueError(f"logits {logits.shape} and mask {mask.shape} disagree")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, T, V]
  p = jnp.exp(logp)
  ent = -jnp.sum(p * jnp.where(p > 0, logp, 0.0), axis=-1)  # [B, T]; -inf logits add 0
  valid = mask.astype(bool)
  ent = jnp.where(valid, ent, 0.0)
  return jnp.sum(ent) / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
