"""Policy loss vs a plain-python float64 double loop, hand-computed cases and analytic gradients."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl.losses import (LossConfig, log_probs_from_logits, policy_loss, token_entropy)


def _kl(lp, rp, kind):
  d = rp - lp
  return {"k1": -d, "k2": 0.5 * d * d, "k3": math.exp(d) - d - 1.0}[kind]


def _reference_loss(logp, old, ref, mask, adv, cfg, num_sequences=None, num_tokens=None):
  """The module docstring's formulas, one token at a time, in float64 Python."""
  b, t = len(logp), len(logp[0])
  lengths = [sum(mask[i]) for i in range(b)]
  total = 0.0
  per_seq = []
  for i in range(b):
    log_ratio_sum = sum(float(logp[i][j]) - float(old[i][j]) for j in range(t) if mask[i][j])
    seq_loss = 0.0
    for j in range(t):
      if not mask[i][j]:
        continue
      if cfg.ratio == "token":
        rho = math.exp(float(logp[i][j]) - float(old[i][j]))
      elif cfg.ratio == "sequence":
        rho = math.exp(log_ratio_sum)
      else:
        rho = math.exp(log_ratio_sum / lengths[i])
      clipped = min(max(rho, 1 - cfg.eps_low), 1 + cfg.eps_high)
      a = float(adv[i])
      term = -min(rho * a, clipped * a)
      if cfg.beta:
        term += cfg.beta * _kl(float(logp[i][j]), float(ref[i][j]), cfg.kl)
      seq_loss += term
    total += seq_loss
    per_seq.append(seq_loss / max(lengths[i], 1))
  s = b if num_sequences is None else num_sequences
  if cfg.aggregation == "grpo":
    return sum(per_seq) / s
  if cfg.aggregation == "dapo":
    return total / (sum(lengths) if num_tokens is None else num_tokens)
  return total / (s * (t if cfg.max_tokens is None else cfg.max_tokens))


def _batch(b=3, t=5, seed=0):
  rng = np.random.default_rng(seed)
  old = rng.normal(-2.0, 0.5, size=(b, t)).astype(np.float32)
  logp = (old + rng.normal(0.0, 0.25, size=(b, t))).astype(np.float32)
  ref = (old + rng.normal(0.0, 0.3, size=(b, t))).astype(np.float32)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
  adv = rng.normal(size=b).astype(np.float32)
  return logp, old, ref, mask, adv


def _hand_2x3():
  # Hand-worked example, eps_low = eps_high = 0.2, beta = 0, token ratios:
  #   row 0 (A = +1, mask [1, 1, 0]): rho = [1.5, 0.9, -]
  #     token 0: min(1.5 * 1, clip(1.5) = 1.2 * 1) = 1.2 -> loss -1.2   (high clip active)
  #     token 1: min(0.9, 0.9) = 0.9                      -> loss -0.9
  #   row 1 (A = -2, mask [1, 1, 1]): rho = [0.5, 1.1, 1.3]
  #     token 0: min(-1.0, clip(0.5) = 0.8 * -2 = -1.6) = -1.6 -> loss 1.6   (low clip active)
  #     token 1: min(-2.2, -2.2) = -2.2                        -> loss 2.2
  #     token 2: min(-2.6, clip(1.3) = 1.2 * -2 = -2.4) = -2.6 -> loss 2.6   (unclipped, A < 0)
  #   grpo:    (mean(-1.2, -0.9) + mean(1.6, 2.2, 2.6)) / 2 = (-1.05 + 2.1333333) / 2 = 0.5416667
  #   dapo:    (-1.2 - 0.9 + 1.6 + 2.2 + 2.6) / 5 = 4.3 / 5 = 0.86
  #   dr_grpo: 4.3 / (2 sequences * max_tokens 4) = 0.5375
  #   clip fractions: low 1/5, high 1/5, total 2/5; ratio_mean = 5.3 / 5 = 1.06.
  old = np.full((2, 3), -1.0, np.float32)
  logp = old + np.log(np.array([[1.5, 0.9, 7.0], [0.5, 1.1, 1.3]], np.float32))
  mask = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
  adv = np.array([1.0, -2.0], np.float32)
  return logp.astype(np.float32), old, mask, adv


@pytest.mark.parametrize("aggregation,want", [("grpo", (-1.05 + 6.4 / 3) / 2), ("dapo", 0.86),
                                              ("dr_grpo", 0.5375)])
def test_hand_computed_2x3(aggregation, want):
  logp, old, mask, adv = _hand_2x3()
  cfg = LossConfig(aggregation=aggregation, max_tokens=4)
  loss, m = policy_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(mask),
                        jnp.asarray(adv), cfg)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_low"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_high"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac"], 0.4, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_mean"], 1.06, rtol=1e-6)
  assert float(m["kl"]) == 0.0


@pytest.mark.parametrize("ratio,want", [
    # Same 2x3 batch, sequence ratios (every valid token of a row gets its row's surrogate):
    #   'sequence': row 0 rho = 1.5 * 0.9 = 1.35 -> clipped to 1.2, A = +1 -> loss -1.2 per token.
    #               row 1 rho = 0.5 * 1.1 * 1.3 = 0.715 -> min(-1.43, 0.8 * -2 = -1.6) -> 1.6.
    #               grpo: (-1.2 + 1.6) / 2 = 0.2
    ("sequence", 0.2),
    #   'gspo':     row 0 rho = sqrt(1.35) = 1.161895 (inside the clip) -> loss -1.161895.
    #               row 1 rho = 0.715 ** (1/3) = 0.894201 (inside) -> loss 1.788403.
    #               grpo: (-1.161895 + 1.788403) / 2 = 0.313254
    ("gspo", (-math.sqrt(1.35) + 2 * 0.715**(1 / 3)) / 2),
])
def test_hand_computed_sequence_ratios(ratio, want):
  logp, old, mask, adv = _hand_2x3()
  loss, m = policy_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(mask),
                        jnp.asarray(adv), LossConfig(ratio=ratio))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(want, {"sequence": 0.2, "gspo": 0.313254}[ratio], atol=1e-6)
  if ratio == "sequence":  # two tokens of row 0 high-clipped, three of row 1 low-clipped.
    np.testing.assert_allclose([m["clip_frac_high"], m["clip_frac_low"]], [0.4, 0.6], rtol=1e-6)


def test_hand_computed_kl():
  # logp = -1, ref = -1.5 at both tokens of one row: d = ref - logp = -0.5.
  # k1 = 0.5, k2 = 0.125, k3 = exp(-0.5) + 0.5 - 1 = 0.1065306597.
  logp = jnp.full((1, 2), -1.0)
  ref = jnp.full((1, 2), -1.5)
  mask = jnp.ones((1, 2))
  for kind, want in (("k1", 0.5), ("k2", 0.125), ("k3", math.exp(-0.5) - 0.5)):
    cfg = LossConfig(beta=0.1, kl=kind)
    # rho = 1, A = 0: the surrogate is 0, so the loss is beta * KL.
    loss, m = policy_loss(logp, logp, ref, mask, jnp.zeros(1), cfg)
    np.testing.assert_allclose(m["kl"], want, rtol=1e-6)
    np.testing.assert_allclose(loss, 0.1 * want, rtol=1e-6)


CASES = list(itertools.product(["token", "sequence", "gspo"], ["k1", "k2", "k3"],
                               ["grpo", "dapo", "dr_grpo"],
                               [(0.2, 0.2), (0.2, 0.28), (10.0, 10.0)]))


def _cfg(ratio, kl, aggregation, eps, beta=0.04):
  eps_low = min(eps[0], 0.999)  # (10, 10): clip effectively off, PPO's unclipped objective.
  return LossConfig(ratio=ratio, kl=kl, aggregation=aggregation, eps_low=eps_low,
                    eps_high=eps[1], beta=beta, max_tokens=7)


@pytest.mark.parametrize("ratio,kl,aggregation,eps", CASES)
def test_matches_double_loop(ratio, kl, aggregation, eps):
  logp, old, ref, mask, adv = _batch(seed=len(ratio) + len(aggregation))
  cfg = _cfg(ratio, kl, aggregation, eps)
  loss, _ = policy_loss(*map(jnp.asarray, (logp, old, ref, mask, adv)), cfg)
  want = _reference_loss(logp.astype(np.float64), old, ref, mask, adv, cfg)
  np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-7)


def _analytic_grad(logp, old, ref, mask, adv, cfg):
  """Hand-derived d loss / d logp in float64.

  w_it = aggregation weight of token (i, t). Token ratios: g_it = w_it * (-A_i rho_it u_it + beta
  KL'_it), u = 1 where the unclipped branch is the active one. Sequence ratios: the surrogate
  s_i depends on every token through log rho_i, so g_it = -(sum_t' w_it') A_i rho_i u_i
  d(log rho_i)/d logp_it + w_it beta KL'_it, with d(log rho_i)/d logp_it = 1 ('sequence') or
  1 / len_i ('gspo'). KL' = dKL/dlogp: k1 -> 1, k2 -> logp - ref, k3 -> 1 - exp(ref - logp).
  """
  logp, old, ref, mask, adv = (np.asarray(x, np.float64) for x in (logp, old, ref, mask, adv))
  b, t = logp.shape
  lengths = mask.sum(1, keepdims=True)
  if cfg.aggregation == "grpo":
    w = mask / (b * np.maximum(lengths, 1))
  elif cfg.aggregation == "dapo":
    w = mask / mask.sum()
  else:
    w = mask / (b * cfg.max_tokens)
  a = adv[:, None]
  log_ratio = (logp - old) * mask
  if cfg.ratio == "token":
    rho, dlog = np.exp(log_ratio), 1.0
  elif cfg.ratio == "sequence":
    rho, dlog = np.exp(log_ratio.sum(1, keepdims=True)), 1.0
  else:
    rho, dlog = np.exp(log_ratio.sum(1, keepdims=True) / lengths), 1.0 / lengths
  clipped = np.clip(rho, 1 - cfg.eps_low, 1 + cfg.eps_high)
  inside = (rho >= 1 - cfg.eps_low) & (rho <= 1 + cfg.eps_high)
  unclipped_active = (rho * a < clipped * a) | inside
  dsurr = a * rho * unclipped_active * dlog  # d surrogate / d logp of one token
  if cfg.ratio == "token":
    g = -w * dsurr
  else:
    g = -w.sum(1, keepdims=True) * dsurr * mask
  dkl = {"k1": np.ones_like(logp), "k2": logp - ref, "k3": 1.0 - np.exp(ref - logp)}[cfg.kl]
  return g + w * cfg.beta * dkl


@pytest.mark.parametrize("ratio", ["token", "sequence", "gspo"])
@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("kl", ["k1", "k2", "k3"])
def test_gradient_matches_analytic(ratio, aggregation, kl):
  logp, old, ref, mask, adv = _batch(b=4, t=6, seed=7)
  cfg = _cfg(ratio, kl, aggregation, (0.2, 0.28))
  grad = jax.grad(lambda lp: policy_loss(lp, *map(jnp.asarray, (old, ref, mask, adv)), cfg)[0])(
      jnp.asarray(logp))
  want = _analytic_grad(logp, old, ref, mask, adv, cfg)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(grad)[mask == 0] == 0.0)
  # The case must hold tokens with the clip active (zero surrogate gradient) and tokens without.
  log_ratio = (logp - old) * mask
  rho = {"token": np.exp(log_ratio), "sequence": np.exp(log_ratio.sum(1, keepdims=True)),
         "gspo": np.exp(log_ratio.sum(1, keepdims=True) / mask.sum(1, keepdims=True))}[ratio]
  a = adv[:, None]
  clip_active = np.broadcast_to(((rho > 1.28) & (a > 0)) | ((rho < 0.8) & (a < 0)), mask.shape)
  assert np.any(clip_active & (mask == 1)) and np.any(~clip_active & (mask == 1))


def test_masked_garbage_is_inert():
  logp, old, ref, mask, adv = _batch(b=3, t=5, seed=3)
  mask[2] = 0  # a fully masked row
  dirty = [x.copy() for x in (logp, old, ref)]
  for x, v in zip(dirty, (np.nan, np.inf, -np.inf)):
    x[mask == 0] = v
  for ratio, aggregation in itertools.product(["token", "sequence", "gspo"],
                                              ["grpo", "dapo", "dr_grpo"]):
    cfg = LossConfig(ratio=ratio, aggregation=aggregation, beta=0.1, kl="k3", max_tokens=5)
    clean = [np.where(mask == 1, x, -1.0).astype(np.float32) for x in (logp, old, ref)]
    f = lambda lp, o, r: policy_loss(lp, o, r, jnp.asarray(mask), jnp.asarray(adv), cfg)
    (loss_d, m_d), grad_d = jax.value_and_grad(f, has_aux=True)(*map(jnp.asarray, dirty))
    loss_c, m_c = f(*map(jnp.asarray, clean))
    assert np.isfinite(float(loss_d))
    np.testing.assert_array_equal(loss_d, loss_c)
    for k in m_c:
      np.testing.assert_array_equal(m_d[k], m_c[k])
    assert np.all(np.isfinite(grad_d))
    assert np.all(np.asarray(grad_d)[mask == 0] == 0.0)
    want = _reference_loss(clean[0].astype(np.float64), clean[1], clean[2], mask, adv, cfg)
    np.testing.assert_allclose(loss_d, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_gradient_accumulation_normaliser(aggregation):
  logp, old, ref, mask, adv = _batch(b=4, t=6, seed=11)
  mask[1, 2:] = 0
  mask[3, 1:] = 0
  cfg = LossConfig(aggregation=aggregation, beta=0.04, max_tokens=6, eps_high=0.28)
  args = lambda s: [jnp.asarray(x[s]) for x in (logp, old, ref, mask, adv)]
  full, _ = policy_loss(*args(slice(None)), cfg)
  halves = [slice(0, 2), slice(2, 4)]
  total_tokens = int(mask.sum())
  accumulated = sum(policy_loss(*args(s), cfg, num_sequences=4, num_tokens=total_tokens)[0]
                    for s in halves)
  np.testing.assert_allclose(accumulated, full, rtol=1e-6)
  grad = lambda s, **kw: jax.grad(lambda lp: policy_loss(lp, *args(s)[1:], cfg, **kw)[0])(
      jnp.asarray(logp[s]))
  acc_grad = np.concatenate([grad(s, num_sequences=4, num_tokens=total_tokens) for s in halves])
  np.testing.assert_allclose(acc_grad, grad(slice(None)), rtol=1e-6, atol=1e-9)
  # Without the override the per-minibatch normalisers are wrong (the bug the override fixes).
  naive = sum(policy_loss(*args(s), cfg)[0] for s in halves)
  assert abs(float(naive) - float(full)) > 1e-3


def test_jit_and_dtypes():
  logp, old, ref, mask, adv = _batch()
  cfg = LossConfig(ratio="gspo", beta=0.01, aggregation="dapo")
  f = jax.jit(policy_loss, static_argnums=5)
  bf = lambda x: jnp.asarray(x, jnp.bfloat16)
  loss, m = f(bf(logp), bf(old), bf(ref), jnp.asarray(mask, bool), bf(adv), cfg)
  assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in m.values())
  want = _reference_loss(*(np.asarray(bf(x), np.float64) for x in (logp, old, ref)), mask,
                         np.asarray(bf(adv), np.float64), cfg)
  np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-7)


def test_bad_input():
  with pytest.raises(ValueError, match="aggregation"):
    LossConfig(aggregation="mean")
  with pytest.raises(ValueError, match="ratio"):
    LossConfig(ratio="seq")
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="ref_logp"):
    policy_loss(x, x, None, x, jnp.zeros(2), LossConfig(beta=0.1))
  with pytest.raises(ValueError, match="advantages"):
    policy_loss(x, x, None, x, jnp.zeros(3), LossConfig())


def test_log_probs_from_logits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32) * 3
  tokens = rng.integers(0, 7, size=(2, 3))
  for temp in (1.0, 0.6):
    x = logits.astype(np.float64) / temp
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    want = np.take_along_axis(x, tokens[..., None], -1)[..., 0] - lse
    got = log_probs_from_logits(jnp.asarray(logits), jnp.asarray(tokens), temperature=temp)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # bfloat16 logits are upcast before the softmax.
  got = log_probs_from_logits(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(tokens))
  assert got.dtype == jnp.float32


def test_token_entropy():
  # Row 0, token 0: uniform over 4 -> log 4. Token 1: two -inf logits -> uniform over 2 -> log 2.
  # Row 0, token 2 is masked and holds NaN. Masked mean = (log 4 + log 2) / 2.
  logits = np.zeros((1, 3, 4), np.float32)
  logits[0, 1, 2:] = -np.inf
  logits[0, 2] = np.nan
  mask = np.array([[1, 1, 0]])
  got = token_entropy(jnp.asarray(logits), jnp.asarray(mask))
  np.testing.assert_allclose(got, (math.log(4) + math.log(2)) / 2, rtol=1e-6)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 3, 5))
  p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
  want = -(p * np.log(p)).sum(-1).mean()
  np.testing.assert_allclose(token_entropy(jnp.asarray(x, jnp.float32), jnp.ones((2, 3))), want,
                             rtol=1e-6)
