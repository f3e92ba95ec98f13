"""One GRPO step: rollout (group sampling + rewards) -> advantages -> old/ref log-probs -> mu epochs.

The pieces are pure and jitted (log-probs, the update); the rollout and rewards run on the host.
Rows are laid out as [left-padded prompt ; completion]; positions come from the mask, exactly as
in the sampler, so the trainer's log-probs equal the sampler's (see tests/test_grpo.py).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import multihost, sharding, training
from r1jax.errors import ConfigError
from r1jax.models.transformer import init_cache
from r1jax.rl import advantages as adv_lib
from r1jax.rl import losses
from r1jax.rl.dynamic_sampling import GroupAccumulator
from r1jax.sampling import check_prompts_fit, positions_from_mask
from r1jax.tokenizers import encode_prompt


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """Static settings of a GRPO step (the loss settings live in `loss`)."""
  group_size: int = 8
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  advantage_scale: str = "group"  # 'group' | 'batch' | 'none' (Dr.GRPO)
  advantage_eps: float = 1e-4
  num_minibatches: int = 1  # optimizer steps per epoch over the rollout
  num_epochs: int = 1  # mu: inner epochs against the old policy's log-probs
  mask_truncated: bool = False  # DAPO overlong filtering: no loss on completions without EOS
  dynamic_sampling: bool = False  # DAPO: keep only groups with reward spread, resample to fill
  max_sampling_rounds: int = 4
  old_logprobs_from_sampler: bool = False  # mu=1, 1 minibatch: the sampler's log-probs as old
  loss: losses.LossConfig = losses.LossConfig()

  def __post_init__(self):
    if not isinstance(self.group_size, int) or self.group_size < 2:
      raise ConfigError(f"rl.group_size={self.group_size!r}: GRPO needs groups of >= 2 samples "
                        "(a group of one has no baseline)")
    if not isinstance(self.num_minibatches, int) or self.num_minibatches < 1:
      raise ConfigError(f"rl.num_minibatches={self.num_minibatches!r} must be >= 1")
    if not self.temperature > 0:
      raise ValueError(f"rl.temperature must be > 0, got {self.temperature}")
    if self.old_logprobs_from_sampler and (self.top_p < 1.0 or self.top_k > 0):
      raise ValueError("rl.old_logprobs_from_sampler needs top_p=1 and top_k=0: with a truncated "
                       "sampling distribution the sampler's log-probs are not the trainer's")

  @property
  def prompt_group(self) -> int:
    """Rows per shared prompt in what the trainer sees: a group when the update takes the whole
    rollout (its rows stay in groups), 1 when minibatches draw rows at random."""
    return self.group_size if self.num_minibatches == 1 else 1


def check_batch(num_prompts: int, cfg: GRPOConfig, mesh) -> None:
  """A rollout of num_prompts x G rows must split into `num_minibatches` minibatches that each
  divide over the mesh's data-parallel shards; checked before sampling (a ConfigError naming the
  fields), not met as a shape error in the first update."""
  rows = num_prompts * cfg.group_size
  if cfg.dynamic_sampling and jax.process_count() > 1:
    raise ConfigError("rl.dynamic_sampling runs on one process only: its extra sampling rounds "
                      "differ per process")
  if num_prompts % jax.process_count():
    raise ConfigError(f"rl.num_prompts={num_prompts} does not split over {jax.process_count()} "
                      "processes: each process samples whole groups of its own prompts")
  if rows % cfg.num_minibatches:
    raise ConfigError(f"rl.num_prompts x rl.group_size = {num_prompts} x {cfg.group_size} = {rows} "
                      f"rollout rows do not split into rl.num_minibatches={cfg.num_minibatches} "
                      "minibatches")
  sharding.check_batch(rows // cfg.num_minibatches, mesh,
                       "rollout rows per minibatch (rl.num_prompts x rl.group_size / "
                       "rl.num_minibatches)")


def completion_logits(model, params, tokens: jax.Array, seq_mask: jax.Array,
                      prompt_len: int, temperature: float = 1.0, group_size: int = 1) -> jax.Array:
  """Float32 logits predicting each completion token: [N, L] rows -> [N, L - prompt_len, V].

  Divided by the rollout temperature: the trainer's policy is the distribution that was sampled
  (before top-k / top-p truncation), as in TRL and verl, so at T != 1 the ratio still starts at 1.

  group_size G > 1 says that each run of G consecutive rows shares its prompt columns (a GRPO
  group): the prompt is then run once per group (`_shared_prompt_logits`).
  """
  inputs = tokens[:, :-1]
  length = inputs.shape[1]
  mask = jnp.tril(jnp.ones((length, length), bool))[None] & seq_mask[:, None, :-1].astype(bool)
  positions = positions_from_mask(seq_mask)[:, :-1]
  if group_size > 1 and prompt_len > 1:
    logits = _shared_prompt_logits(model, params, inputs, positions, mask, prompt_len - 1,
                                   group_size)
  else:
    logits = model.apply({"params": params}, inputs, positions=positions, attention_mask=mask)
    logits = logits[:, prompt_len - 1:]
  return logits if temperature == 1.0 else logits / temperature


def _shared_prompt_logits(model, params, inputs, positions, mask, p: int, group_size: int):
  """The same logits with the prompt's forward run once per group, not once per row.

  Causal attention makes a prompt position's keys and values independent of the completion, so
  the G rows of a group can share them: a forward of the N/G prompts (the first p inputs: all
  but the last prompt token) fills a KV cache, which is repeated G times, and a second forward
  runs the last prompt token and the completion of every row against it (the sampler's
  prefill / decode split, with gradients through the cache). Both take their rows of the full
  causal `mask` [N, L, L]. At SmolLM2's R1-Zero shape (96 prompt + 128 completion tokens, G=4)
  that is a third fewer tokens through the model.
  """
  n, length = inputs.shape
  heads = slice(None, None, group_size)  # the first row of each group
  cache = init_cache(model.config, n // group_size, length, dtype=model.config.dtype)
  _, cache = model.apply({"params": params}, inputs[heads, :p], positions=positions[heads, :p],
                         attention_mask=mask[heads, :p], cache=cache, cache_index=0,
                         return_hidden=True)
  cache = [{k: jnp.repeat(v, group_size, axis=0) for k, v in layer.items()} for layer in cache]
  logits, _ = model.apply({"params": params}, inputs[:, p:], positions=positions[:, p:],
                          attention_mask=mask[:, p:], cache=cache, cache_index=p)
  return logits


def completion_logprobs(model, params, tokens, seq_mask, prompt_len, temperature: float = 1.0,
                        group_size: int = 1) -> jax.Array:
  """log pi_T(completion token) [N, Nc], float32, teacher-forced at temperature T."""
  logits = completion_logits(model, params, tokens, seq_mask, prompt_len, temperature,
                             group_size)
  return losses.log_probs_from_logits(logits, tokens[:, prompt_len:])


def make_logprob_fn(model, mesh, rules, prompt_len: int, temperature: float = 1.0,
                    group_size: int = 1) -> Callable:
  """Jitted `params, tokens, seq_mask -> [N, Nc]` log-probs (old policy and reference)."""
  fn = jax.jit(lambda p, t, m: completion_logprobs(model, p, t, m, prompt_len, temperature,
                                                   group_size))

  def run(params, tokens, seq_mask):
    with sharding.mesh_rules(mesh, rules):
      return fn(params, tokens, seq_mask)
  return run


def make_grpo_loss(model, loss_cfg: losses.LossConfig, prompt_len: int,
                   temperature: float = 1.0, group_size: int = 1) -> Callable:
  """`loss(params, batch) -> (loss, metrics)` for a minibatch of rollout rows.

  batch: tokens [N, L], seq_mask [N, L], completion_mask [N, Nc], old_logp, ref_logp [N, Nc],
  advantages [N], and the full rollout's normalisers (num_sequences, num_tokens) so that
  minibatch losses add up to the full-batch loss. Without `old_logp` the update is on-policy
  (one epoch over one minibatch): the old policy is the current one, so old_logp is
  stop_gradient(logp), the ratio is exactly 1 and its gradient is the policy gradient, as in
  TRL, without a separate forward pass. group_size > 1: runs of that many rows share their
  prompt (`GRPOConfig.prompt_group`; see `completion_logits`).
  """
  def loss_fn(params, batch):
    logits = completion_logits(model, params, batch["tokens"], batch["seq_mask"], prompt_len,
                               temperature, group_size)
    logp = losses.log_probs_from_logits(logits, batch["tokens"][:, prompt_len:])
    old_logp = batch["old_logp"] if "old_logp" in batch else jax.lax.stop_gradient(logp)
    loss, metrics = losses.policy_loss(
        logp, old_logp, batch.get("ref_logp"), batch["completion_mask"],
        batch["advantages"], loss_cfg, num_sequences=batch["num_sequences"],
        num_tokens=batch["num_tokens"])
    metrics["entropy"] = jax.lax.stop_gradient(
        losses.token_entropy(logits, batch["completion_mask"]))
    return loss, metrics
  return loss_fn


@dataclasses.dataclass
class Rollout:
  """Host-side result of group sampling: G consecutive rows per prompt."""
  tokens: np.ndarray  # [N, P + Nc] int32: left-padded prompt ; completion
  seq_mask: np.ndarray  # [N, P + Nc]
  completion_mask: np.ndarray  # [N, Nc]
  sampler_logp: np.ndarray  # [N, Nc] at the rollout temperature, before top-k / top-p
  truncated: np.ndarray  # [N] bool
  rewards: np.ndarray  # [N] float32 (weighted total)
  reward_parts: dict[str, np.ndarray]  # name -> [N]
  reward_failures: dict[str, int]
  texts: list[str]  # decoded completions
  prompts: list[str]
  answers: list[str]
  records: list[dict] = dataclasses.field(default_factory=list)  # prompt record of each row

  @property
  def prompt_len(self) -> int:
    return self.tokens.shape[1] - self.completion_mask.shape[1]


def _pad_to(x: np.ndarray, length: int, left: bool, value=0) -> np.ndarray:
  pad = length - x.shape[1]
  if pad <= 0:
    return x
  width = ((0, 0), (pad, 0)) if left else ((0, 0), (0, pad))
  return np.pad(x, width, constant_values=value)


def concat_rollouts(parts: Sequence[Rollout]) -> Rollout:
  """Joins rollouts from several sampling rounds; prompts are re-padded on the left and
  completions on the right to the widest of the parts."""
  if len(parts) == 1:
    return parts[0]
  nc = max(r.completion_mask.shape[1] for r in parts)
  p = max(r.prompt_len for r in parts)

  def rows(r: Rollout, x: np.ndarray) -> np.ndarray:  # [N, P_r + Nc_r] -> [N, p + nc]
    return _pad_to(_pad_to(x, r.tokens.shape[1] + nc - r.completion_mask.shape[1], left=False),
                   p + nc, left=True)

  cat = lambda f: np.concatenate([f(r) for r in parts])  # noqa: E731
  return Rollout(
      tokens=cat(lambda r: rows(r, r.tokens)), seq_mask=cat(lambda r: rows(r, r.seq_mask)),
      completion_mask=cat(lambda r: _pad_to(r.completion_mask, nc, left=False)),
      sampler_logp=cat(lambda r: _pad_to(r.sampler_logp, nc, left=False)),
      truncated=cat(lambda r: r.truncated), rewards=cat(lambda r: r.rewards),
      reward_parts={k: cat(lambda r, k=k: r.reward_parts[k]) for k in parts[0].reward_parts},
      reward_failures={k: sum(r.reward_failures[k] for r in parts) for k in parts[0].reward_failures},
      texts=sum((r.texts for r in parts), []), prompts=sum((r.prompts for r in parts), []),
      answers=sum((r.answers for r in parts), []), records=sum((r.records for r in parts), []))


def take_rows(r: Rollout, idx: np.ndarray) -> Rollout:
  pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
  return dataclasses.replace(
      r, tokens=r.tokens[idx], seq_mask=r.seq_mask[idx], completion_mask=r.completion_mask[idx],
      sampler_logp=r.sampler_logp[idx], truncated=r.truncated[idx], rewards=r.rewards[idx],
      reward_parts={k: v[idx] for k, v in r.reward_parts.items()},
      texts=pick(r.texts), prompts=pick(r.prompts), answers=pick(r.answers),
      records=pick(r.records) if r.records else [])


def sample_groups(sampler, params, tokenizer, reward_set, prompt_texts: Sequence[str],
                  answers: Sequence[str], cfg: GRPOConfig, rng: jax.Array,
                  records: Sequence[dict] | None = None) -> Rollout:
  """G completions per prompt from the current policy, decoded and scored on the host.

  With several processes, each passes its own share of the step's prompts and gets back the
  rollout of its rows; they agree only on the trained width.

  `reward_set(prompts, completions, answers, records=..., completion_lengths=..., truncated=...)`
  sees each row's whole prompt record (task, language, ...), so routing is config.
  """
  ids = [encode_prompt(tokenizer, p) for p in prompt_texts]
  names = [r.get("id", i) for i, r in enumerate(records or [{}] * len(ids))]
  check_prompts_fit(ids, names, cfg.max_new_tokens, sampler, budget="rl.max_new_tokens")
  out = sampler(params, ids, rng=rng, max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, n=cfg.group_size,
                eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  cmask = np.asarray(out.completion_mask).astype(np.int32)
  lengths = cmask.sum(1)
  # Train on the columns that hold tokens (rounded up to a multiple of 16 to bound recompiles):
  # completions far shorter than the budget then cost no padded compute.
  longest = multihost.agree_max(max(int(lengths.max()), 1))
  width = min(cmask.shape[1], -(-longest // 16) * 16)
  comp, cmask = np.asarray(out.completions)[:, :width], cmask[:, :width]
  texts = [tokenizer.decode([t for t in row[:n] if t != tokenizer.eos_id])
           for row, n in zip(comp.tolist(), lengths.tolist())]
  g = cfg.group_size
  prompts = [p for p in prompt_texts for _ in range(g)]
  golds = [a for a in answers for _ in range(g)]
  recs = [dict(r) for r in (records or [{}] * len(prompt_texts)) for _ in range(g)]
  total, parts, failures = reward_set(prompts, texts, golds, records=recs,
                                      completion_lengths=lengths,
                                      truncated=np.asarray(out.truncated))
  tokens = np.concatenate([np.asarray(out.prompt_tokens), comp], axis=1).astype(np.int32)
  seq_mask = np.concatenate([np.asarray(out.prompt_mask).astype(np.int32), cmask], axis=1)
  untruncated = cfg.top_p >= 1.0 and cfg.top_k == 0  # then sampling_logprobs = log softmax(z/T)
  logp = out.sampling_logprobs if untruncated else out.logprobs
  return Rollout(tokens, seq_mask, cmask, np.asarray(logp, np.float32)[:, :width],
                 np.asarray(out.truncated, bool), total, parts, failures, texts, prompts, golds,
                 recs)


def collect_rollout(sample_fn: Callable[[int, jax.Array], Rollout], num_prompts: int,
                    cfg: GRPOConfig, rng: jax.Array) -> tuple[Rollout, dict[str, float]]:
  """Samples one batch; with dynamic sampling, keeps only groups with reward spread and samples
  more prompts (up to `max_sampling_rounds` rounds) until `num_prompts` groups are collected.

  `sample_fn(round, rng)` samples `num_prompts` fresh prompts x G. Returns the rollout and stats.
  """
  g = cfg.group_size
  first = sample_fn(0, jax.random.fold_in(rng, 0))
  if not cfg.dynamic_sampling:
    return first, {"sampling_rounds": 1.0}
  acc = GroupAccumulator(num_prompts, g, max_rounds=cfg.max_sampling_rounds)
  seen, parts, r, rnd = 0, [], first, 0
  while True:
    parts.append(r)
    acc.add({"row": np.arange(len(r.rewards)) + seen}, r.rewards)
    seen += len(r.rewards)
    rnd += 1
    if acc.done:
      break
    r = sample_fn(rnd, jax.random.fold_in(rng, rnd))
  taken = acc.take()  # informative groups first, topped up with constant ones at the round cap
  st = acc.last_stats
  stats = {"sampling_rounds": float(st["rounds"]),
           "kept_group_fraction": st["groups_kept"] / num_prompts,
           "filler_groups": float(st["filler_groups"])}
  return take_rows(concat_rollouts(parts), np.asarray(taken["row"])), stats


def check_prompt_groups(rollout: Rollout, group: int) -> None:
  """The trainer runs each group's prompt once (`completion_logits`): its rows must hold the same
  prompt columns, as `sample_groups` and `concat_rollouts` lay them out."""
  if group == 1:
    return
  prompts = rollout.tokens[:, :rollout.prompt_len] * rollout.seq_mask[:, :rollout.prompt_len]
  grouped = prompts.reshape(-1, group, prompts.shape[1])
  if len(prompts) % group or not np.array_equal(grouped, np.broadcast_to(grouped[:, :1],
                                                                          grouped.shape)):
    raise ValueError(f"rollout rows are not in groups of {group} rows sharing one prompt")


def train_on_rollout(state: dict, rollout: Rollout, *, cfg: GRPOConfig, update_fn: Callable,
                     logprob_fn: Callable, ref_params: Any | None, mesh, rng: jax.Array
                     ) -> tuple[dict, dict[str, float]]:
  """Advantages (sharded over the data axes), old/ref log-probs, then mu epochs of minibatch updates.

  `rollout` holds this process's rows; the arrays the update sees are global (see
  r1jax.multihost), and nothing is gathered back to the host but scalar metrics.
  """
  t0 = time.perf_counter()
  n = rollout.tokens.shape[0] * jax.process_count()  # rows in the global batch
  check_batch(n // cfg.group_size, cfg, mesh)
  check_prompt_groups(rollout, cfg.prompt_group)
  cmask = rollout.completion_mask.copy()
  if cfg.mask_truncated:
    cmask[rollout.truncated] = 0
  arrays = training.shard_batch({"tokens": rollout.tokens, "seq_mask": rollout.seq_mask,
                                 "completion_mask": cmask}, mesh)
  rewards = multihost.to_global(rollout.rewards, mesh)
  arrays["advantages"] = adv_lib.sharded_group_advantages(
      rewards, cfg.group_size, mesh, scale=cfg.advantage_scale, eps=cfg.advantage_eps)
  single_pass = cfg.num_epochs == 1 and cfg.num_minibatches == 1
  if cfg.old_logprobs_from_sampler and single_pass:
    arrays["old_logp"] = training.shard_batch({"x": rollout.sampler_logp}, mesh)["x"]
  elif not single_pass:  # on-policy (single_pass): the loss takes stop_gradient(logp) instead
    arrays["old_logp"] = logprob_fn(state["params"], arrays["tokens"], arrays["seq_mask"])
  if ref_params is not None and cfg.loss.beta > 0:
    arrays["ref_logp"] = logprob_fn(ref_params, arrays["tokens"], arrays["seq_mask"])
  jax.block_until_ready(arrays)
  t1 = time.perf_counter()
  if n % cfg.num_minibatches:
    raise ValueError(f"{n} rollout rows do not split into {cfg.num_minibatches} minibatches")
  mb = n // cfg.num_minibatches
  totals = {"num_sequences": jnp.float32(mb), "num_tokens": jnp.maximum(
      jnp.sum(arrays["completion_mask"]) / cfg.num_minibatches, 1.0).astype(jnp.float32)}
  history = []
  for epoch in range(cfg.num_epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, epoch), n)) \
        if cfg.num_minibatches > 1 else np.arange(n)
    for i in range(cfg.num_minibatches):
      idx = np.sort(order[i * mb:(i + 1) * mb])
      batch = arrays if cfg.num_minibatches == 1 else training.take_rows(arrays, idx, mesh)
      state, metrics = update_fn(state, {**batch, **totals})
      history.append(metrics)
  metrics = jax.tree.map(lambda *xs: float(np.mean([multihost.to_local(x) for x in xs])), *history)
  metrics["time/logprobs_s"] = t1 - t0
  metrics["time/update_s"] = time.perf_counter() - t1
  metrics["advantage_abs_mean"] = float(multihost.to_local(jnp.mean(jnp.abs(arrays["advantages"]))))
  return state, metrics
