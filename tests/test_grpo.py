"""GRPO trainer: log-prob agreement with the sampler, sharded == single device, dynamic sampling."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import sharding, training
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.rl import grpo, losses
from r1jax.sampling import Sampler

CFG = ModelConfig(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_dim=64, max_seq_len=64)
G = 4
NEW = 8


@pytest.fixture(scope="module")
def setup():
  model = Transformer(CFG)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(4, CFG.vocab_size, size=n)) for n in (3, 7, 5, 6)]
  out = Sampler(model)(params, prompts, rng=jax.random.key(1), max_new_tokens=NEW,
                       temperature=1.0, n=G, eos_id=3, pad_id=0)
  return model, params, out


def _rollout(out, rewards):
  comp = np.asarray(out.completions)
  cmask = np.asarray(out.completion_mask).astype(np.int32)
  n = comp.shape[0]
  return grpo.Rollout(
      tokens=np.concatenate([np.asarray(out.prompt_tokens), comp], 1).astype(np.int32),
      seq_mask=np.concatenate([np.asarray(out.prompt_mask).astype(np.int32), cmask], 1),
      completion_mask=cmask, sampler_logp=np.asarray(out.logprobs, np.float32),
      truncated=np.asarray(out.truncated, bool), rewards=np.asarray(rewards, np.float32),
      reward_parts={"r": np.asarray(rewards, np.float32)}, reward_failures={"r": 0},
      texts=[""] * n, prompts=[""] * n, answers=[""] * n)


def test_trainer_logprobs_equal_sampler_logprobs(setup):
  model, params, out = setup
  r = _rollout(out, np.zeros(len(out.completions)))
  prompt_len = r.tokens.shape[1] - NEW
  logp = grpo.completion_logprobs(model, params, jnp.asarray(r.tokens), jnp.asarray(r.seq_mask),
                                  prompt_len)
  m = r.completion_mask.astype(bool)
  assert m.sum() > 0
  np.testing.assert_allclose(np.asarray(logp)[m], r.sampler_logp[m], atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_trainer_logprobs_at_the_sampling_temperature(setup, temperature):
  """Rollouts drawn at T: the trainer's recomputed log-probs (logits / T) equal the log-probs of
  the distribution the sampler drew from, and sample_groups stores exactly those."""
  model, params, _ = setup
  rng = np.random.default_rng(3)
  prompts = [list(rng.integers(4, CFG.vocab_size, size=n)) for n in (4, 6)]
  out = Sampler(model)(params, prompts, rng=jax.random.key(2), max_new_tokens=NEW,
                       temperature=temperature, n=G, eos_id=3, pad_id=0)
  tokens, mask = out.sequences()
  prompt_len = tokens.shape[1] - NEW
  m = np.asarray(out.completion_mask).astype(bool)
  at_t = grpo.completion_logprobs(model, params, jnp.asarray(tokens), jnp.asarray(mask),
                                  prompt_len, temperature)
  np.testing.assert_allclose(np.asarray(at_t)[m], np.asarray(out.sampling_logprobs)[m],
                             atol=1e-5, rtol=0)
  at_one = grpo.completion_logprobs(model, params, jnp.asarray(tokens), jnp.asarray(mask),
                                    prompt_len)
  assert np.abs(np.asarray(at_one)[m] - np.asarray(at_t)[m]).max() > 1e-2  # T matters

  class _Tok:
    eos_id, pad_id = 3, 0

    def encode(self, text):
      return [int(t) for t in text.split()]

    def decode(self, ids):
      return " ".join(map(str, ids))

  cfg = grpo.GRPOConfig(group_size=G, max_new_tokens=NEW, temperature=temperature)
  reward = lambda p, c, a, **kw: (np.zeros(len(c), np.float32), {}, {})  # noqa: E731
  r = grpo.sample_groups(Sampler(model), params, _Tok(), reward,
                         [" ".join(map(str, p)) for p in prompts], ["0", "0"], cfg,
                         jax.random.key(2))
  logp = grpo.completion_logprobs(model, params, jnp.asarray(r.tokens), jnp.asarray(r.seq_mask),
                                  r.prompt_len, temperature)
  cm = r.completion_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(logp)[cm], r.sampler_logp[cm], atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="top_p=1"):
    grpo.GRPOConfig(old_logprobs_from_sampler=True, top_p=0.95)


def _one_update(model, params, rollout, mesh, num_minibatches=2, group=1):
  """One GRPO update; `group` rows per prompt run the prompt once (1: every row runs it)."""
  cfg = grpo.GRPOConfig(group_size=G, max_new_tokens=NEW, num_minibatches=num_minibatches,
                        num_epochs=1,
                        loss=losses.LossConfig(beta=0.04, aggregation="dapo", eps_high=0.28))
  tx = optax.adam(1e-2)
  rules = sharding.DEFAULT_RULES
  state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(0), params=params)
  prompt_len = rollout.tokens.shape[1] - NEW
  update = training.jit_update(grpo.make_grpo_loss(model, cfg.loss, prompt_len, group_size=group),
                               tx, mesh, rules, shards)
  logprob_fn = grpo.make_logprob_fn(model, mesh, rules, prompt_len, group_size=group)
  ref = jax.tree.map(lambda x: x * 0.99, state["params"])
  state, metrics = grpo.train_on_rollout(state, rollout, cfg=cfg, update_fn=update,
                                         logprob_fn=logprob_fn, ref_params=ref, mesh=mesh,
                                         rng=jax.random.key(5))
  return jax.device_get(state["params"]), metrics


def test_sharded_update_equals_single_device(setup):
  """16 rows, G=4 on data=8: each group spans two devices."""
  model, params, out = setup
  rewards = np.array([1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0.5, 0, 1, 0], np.float32)
  rollout = _rollout(out, rewards)
  single = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  multi = sharding.make_mesh({"data": 8})
  p1, m1 = _one_update(model, params, rollout, single)
  p8, m8 = _one_update(model, params, rollout, multi)
  for k in ("loss", "kl", "clip_frac", "grad_norm", "entropy", "advantage_abs_mean"):
    np.testing.assert_allclose(m8[k], m1[k], atol=1e-5, rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), p8, p1)
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), p1, params)
  assert max(jax.tree.leaves(moved)) > 1e-4  # the update did something


def test_shared_prompt_update_equals_per_row(setup):
  """One minibatch keeps the rollout in groups, so the trainer runs each group's prompt once
  (left-padded prompts of 3-7 tokens, rows stopping early). Its log-probs and gradients equal
  the per-row path's, and so do the update's metrics with each group split over two of eight
  devices; rows out of their groups are refused. (The params after the update are not
  compared: Adam's first step moves every weight by about +-lr whatever its gradient's size, so
  a gradient of ~1e-9 rounding differently moves its weight by up to 2e-2.)"""
  model, params, out = setup
  rewards = np.array([1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0.5, 0, 1, 0], np.float32)
  rollout = _rollout(out, rewards)
  for row, stop in ((1, 3), (6, 5)):  # two rows end early: pad tokens, masked out
    rollout.tokens[row, rollout.prompt_len + stop:] = 0
    rollout.seq_mask[row, rollout.prompt_len + stop:] = 0
    rollout.completion_mask[row, stop:] = 0
  single = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  _, m_row = _one_update(model, params, rollout, single, num_minibatches=1, group=1)
  _, m_grp = _one_update(model, params, rollout, sharding.make_mesh({"data": 8}),
                         num_minibatches=1, group=G)
  for k in ("loss", "kl", "grad_norm", "entropy"):
    np.testing.assert_allclose(m_grp[k], m_row[k], atol=1e-5, rtol=1e-5, err_msg=k)
  assert m_row["kl"] > 0  # the reference forward took part
  tokens, seq_mask = jnp.asarray(rollout.tokens), jnp.asarray(rollout.seq_mask)
  logp = {g: jax.jit(lambda p, g=g: grpo.completion_logprobs(
      model, p, tokens, seq_mask, rollout.prompt_len, group_size=g))(params) for g in (1, G)}
  cm = rollout.completion_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(logp[G])[cm], np.asarray(logp[1])[cm], atol=1e-5, rtol=0)
  batch = {"tokens": tokens, "seq_mask": seq_mask,
           "completion_mask": jnp.asarray(rollout.completion_mask),
           "advantages": jnp.asarray(rewards - rewards.mean()),
           "num_sequences": jnp.float32(len(rewards)), "num_tokens": jnp.float32(cm.sum())}
  grads = {g: jax.jit(jax.grad(lambda p, g=g: grpo.make_grpo_loss(
      model, losses.LossConfig(), rollout.prompt_len, group_size=g)(p, batch)[0]))(params)
      for g in (1, G)}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads[G],
               grads[1])
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[1])) > 1e-4
  grpo.check_prompt_groups(rollout, G)
  shuffled = grpo.take_rows(rollout, np.roll(np.arange(len(rewards)), 1))
  with pytest.raises(ValueError, match="groups of 4"):
    grpo.check_prompt_groups(shuffled, G)


def test_on_policy_loss_needs_no_old_forward(setup):
  """One epoch over one minibatch: the loss without old_logp (stop_gradient(logp) inside) has
  the value, gradients and ratio of the loss given the old policy's log-probs computed by a
  separate forward of the same params, the pass it saves."""
  model, params, out = setup
  rewards = np.array([1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0.5, 0, 1, 0], np.float32)
  r = _rollout(out, rewards)
  prompt_len = r.tokens.shape[1] - NEW
  cfg = losses.LossConfig(beta=0.04, eps_high=0.28)
  loss_fn = grpo.make_grpo_loss(model, cfg, prompt_len)
  tokens, seq_mask = jnp.asarray(r.tokens), jnp.asarray(r.seq_mask)
  batch = {"tokens": tokens, "seq_mask": seq_mask,
           "completion_mask": jnp.asarray(r.completion_mask),
           "advantages": jnp.asarray(rewards - rewards.mean()),
           "ref_logp": grpo.completion_logprobs(model, jax.tree.map(lambda x: x * 0.99, params),
                                                tokens, seq_mask, prompt_len),
           "num_sequences": jnp.float32(len(rewards)), "num_tokens": jnp.float32(1.0)}
  old = grpo.completion_logprobs(model, params, tokens, seq_mask, prompt_len)
  grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (l_on, m_on), g_on = grad(params, batch)
  (l_old, m_old), g_old = grad(params, {**batch, "old_logp": old})
  assert float(m_on["ratio_mean"]) == 1.0 and float(m_on["clip_frac"]) == 0.0
  np.testing.assert_allclose(float(l_on), float(l_old), rtol=1e-6, atol=1e-7)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_on, g_old)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_on)) > 1e-4


def test_dynamic_sampling_keeps_only_groups_with_spread(setup):
  """Prompts whose reward is constant are dropped; extra rounds fill the batch."""
  _, _, out = setup
  calls = []

  def sample_fn(rnd, _rng):
    calls.append(rnd)
    # 4 prompts x G: prompts 0 and 2 always score 1 (no spread), 1 and 3 vary.
    rewards = np.array([[1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 1]],
                       np.float32).reshape(-1)
    r = _rollout(out, rewards)
    r.prompts = [f"round{rnd}-p{i // G}" for i in range(len(rewards))]
    return r

  cfg = grpo.GRPOConfig(group_size=G, dynamic_sampling=True, max_sampling_rounds=5)
  rollout, stats = grpo.collect_rollout(sample_fn, 4, cfg, jax.random.key(0))
  assert calls == [0, 1]  # two informative groups per round -> two rounds for four groups
  assert rollout.rewards.shape == (4 * G,)
  groups = rollout.rewards.reshape(4, G)
  assert (groups.std(1) > 0).all()
  assert stats["kept_group_fraction"] == 1.0 and stats["sampling_rounds"] == 2
  assert [p.split("-")[1] for p in rollout.prompts[::G]] == ["p1", "p3", "p1", "p3"]


def test_dynamic_sampling_round_cap_tops_up_and_reports(setup):
  _, _, out = setup
  sample_fn = lambda rnd, _r: _rollout(out, np.r_[np.zeros(12), [0, 1, 0, 0]])  # noqa: E731
  cfg = grpo.GRPOConfig(group_size=G, dynamic_sampling=True, max_sampling_rounds=2)
  rollout, stats = grpo.collect_rollout(sample_fn, 4, cfg, jax.random.key(0))
  assert rollout.rewards.shape == (4 * G,)
  assert stats["sampling_rounds"] == 2 and stats["kept_group_fraction"] == 0.5
  assert stats["filler_groups"] == 2


def test_grpo_config_rejects_bad_minibatching(setup):
  model, params, out = setup
  cfg = dataclasses.replace(grpo.GRPOConfig(group_size=G), num_minibatches=3)
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="minibatches"):
    tx = optax.sgd(0.1)
    state, shards = training.init_state(model, tx, mesh, sharding.DEFAULT_RULES,
                                        jax.random.key(0), params=params)
    grpo.train_on_rollout(state, _rollout(out, np.zeros(16)), cfg=cfg, update_fn=None,
                          logprob_fn=lambda *a: jnp.zeros((16, NEW)), ref_params=None,
                          mesh=mesh, rng=jax.random.key(0))
