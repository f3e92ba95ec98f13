"""R1's reward model: the policy's transformer with a scalar head, and the GRPO reward it gives.

Stage 4 (all-scenario RL) rewards general prompts with reward models trained on preference pairs
(r1jax/stages/reward_model.py, Bradley-Terry). The model reads the final-norm hidden state of
each row's last real token (the eos after the reply), so right padding never changes a score.

A reward-model run directory is an r1jax run directory (model.json + tokenizer + checkpoints/
holding {'backbone', 'score_head'} params) with a marker file `reward_model.json`. GRPO uses it
through `make_reward_fn`, which scores the summary (helpfulness: the paper judges only the final
summary) or the whole response (harmlessness: reasoning included).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoints, multihost, response, sharding, training
from r1jax.errors import ConfigError
from r1jax.models import loading
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.tokenizers import encode_prompt

MARKER_FILE = "reward_model.json"
KIND = "bradley_terry"
INPUTS = ("summary", "response")  # what of a completion the reward model reads
BUCKET = 32  # sequence lengths are padded to a multiple of this, bounding recompiles


class ScoreHead(nn.Module):
  """hidden [B, D] -> score [B]. Zero init: an untrained head prefers nothing (BT loss log 2)."""

  @nn.compact
  def __call__(self, hidden):
    d = hidden.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (d,), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                      jnp.float32)
    return hidden.astype(jnp.float32) @ kernel + bias


class RewardModel(nn.Module):
  """tokens [B, T] int32 (right-padded), lengths [B] (real tokens per row) -> float32 [B].

  `lengths` None reads the last position of every row (what `init` traces with).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, lengths=None):
    b, t = tokens.shape
    hidden = Transformer(self.config, name="backbone")(tokens, return_hidden=True)  # [B, T, D]
    if lengths is None:
      lengths = jnp.full((b,), t, jnp.int32)
    last = jnp.clip(lengths.astype(jnp.int32) - 1, 0, t - 1)  # [B]
    # Causal attention: the state at `last` never sees the padding after it.
    h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, D]
    return ScoreHead(name="score_head")(h)  # [B]


def init_params(model: RewardModel, backbone_params: Any, rng: jax.Array) -> dict:
  """{'backbone': the policy's params, 'score_head': fresh}. An untied policy's lm_head is
  dropped: the reward model never computes logits."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  wanted = abstract["params"]["backbone"]
  missing = sorted(set(wanted) - set(backbone_params))
  if missing:
    raise ValueError(f"the policy's params lack {missing}; is it the model of this config?")
  backbone = {k: v for k, v in backbone_params.items() if k in wanted}
  d = model.config.d_model
  head = nn.unbox(ScoreHead().init(rng, jnp.zeros((1, d), jnp.float32))["params"])
  return {"backbone": backbone, "score_head": head}


# ----------------------------------------------------------------------------- run directories


def write_marker(workdir: str) -> None:
  with open(os.path.join(workdir, MARKER_FILE), "w") as f:
    json.dump({"kind": KIND}, f, indent=2, sort_keys=True)


def is_reward_model_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MARKER_FILE))


def load_reward_model(run_dir: str, mesh=None, rules=None, step: int | None = None
                      ) -> tuple[RewardModel, Any, Any]:
  """(model, params, tokenizer) of a reward-model run, params restored onto the shardings the
  logical `rules` give on `mesh` (the policy's layout)."""
  if not is_reward_model_dir(run_dir):
    raise ConfigError(f"{run_dir} is not a reward-model run directory (no {MARKER_FILE}); "
                      "train one with configs/reward_model.py")
  with open(os.path.join(run_dir, MARKER_FILE)) as f:
    kind = json.load(f).get("kind")
  if kind != KIND:
    raise ConfigError(f"{run_dir}/{MARKER_FILE}: unknown reward model kind {kind!r}")
  rules = sharding.rules_from_config(rules)
  mesh = mesh or sharding.make_mesh()
  config, tokenizer = loading.read_model_files(run_dir)
  model = RewardModel(config)
  shardings = sharding.param_shardings(model, mesh, rules)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  abstract = sharding.abstract_with_shardings(nn.unbox(boxed["params"]), shardings)
  params = checkpoints.restore_params(os.path.join(run_dir, loading.CHECKPOINT_DIR), abstract,
                                      step=step)
  return model, params, tokenizer


# ----------------------------------------------------------------------------- inputs


def encode_pair(tokenizer, prompt: str, reply: str, max_len: int) -> list[int]:
  """[bos] prompt reply eos, as the policy saw documents; over `max_len`, cut from the left (the
  prompt's start goes first) so the eos the score is read at always stays."""
  ids = encode_prompt(tokenizer, prompt) + tokenizer.encode(reply)
  if tokenizer.eos_id is not None:
    ids.append(tokenizer.eos_id)
  return ids[-max_len:]


def pad_rows(seqs: Sequence[Sequence[int]], num_rows: int, pad_id: int, min_len: int = 1
             ) -> tuple[np.ndarray, np.ndarray]:
  """tokens [num_rows, T] right-padded to T, the longest row (at least min_len) rounded up to
  a multiple of BUCKET, and lengths [num_rows]. Rows past len(seqs) hold one pad token
  (length 1) and are dropped by the caller."""
  longest = max([min_len] + [len(s) for s in seqs])
  t = -(-longest // BUCKET) * BUCKET
  tokens = np.full((num_rows, t), pad_id, np.int32)
  lengths = np.ones((num_rows,), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, :len(s)] = s
    lengths[i] = len(s)
  return tokens, lengths


def pad_id_of(tokenizer) -> int:
  """Any id pads: the score is read before the padding, which causal attention never sees."""
  return 0 if tokenizer.pad_id is None else tokenizer.pad_id


def chunk_rows(n: int, data: int, batch_size: int) -> int:
  """Rows of one scoring call for n sequences: data x a power of two, at most batch_size
  (rounded up to a multiple of data), so a few shapes serve any n."""
  cap = -(-batch_size // data) * data
  rows = data
  while rows < min(n, cap):
    rows *= 2
  return min(rows, cap)


# ----------------------------------------------------------------------------- scoring


class RewardScorer:
  """Scores (prompt, reply) texts with a reward model on a mesh, in padded fixed-shape batches."""

  def __init__(self, model: RewardModel, params: Any, tokenizer, mesh, rules=None, *,
               max_len: int = 256, batch_size: int = 64):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.mesh, self.rules = mesh, sharding.rules_from_config(rules)
    self.max_len, self.batch_size = max_len, batch_size
    self.pad_id = pad_id_of(tokenizer)
    self._jitted = jax.jit(lambda p, tokens, lengths: model.apply({"params": p}, tokens, lengths),
                           out_shardings=sharding.batch_sharding(mesh, 1))

  def score(self, prompts: Sequence[str], replies: Sequence[str], *, max_len: int | None = None,
            batch_size: int | None = None) -> np.ndarray:
    """float32 [N] scores of prompt i followed by reply i (see `encode_pair`)."""
    if len(prompts) != len(replies):
      raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
    max_len = max_len or self.max_len
    batch_size = batch_size or self.batch_size
    seqs = [encode_pair(self.tokenizer, p, r, max_len) for p, r in zip(prompts, replies)]
    out = np.zeros((len(seqs),), np.float32)
    data = sharding.batch_divisor(self.mesh)
    cap = -(-batch_size // data) * data  # the most rows one call takes
    for start in range(0, len(seqs), cap):
      chunk = seqs[start:start + cap]
      tokens, lengths = pad_rows(chunk, chunk_rows(len(chunk), data, batch_size), self.pad_id)
      batch = training.shard_batch({"tokens": tokens, "lengths": lengths}, self.mesh)
      with sharding.mesh_rules(self.mesh, self.rules):
        scores = self._jitted(self.params, batch["tokens"], batch["lengths"])  # [rows]
      out[start:start + len(chunk)] = multihost.to_local(scores)[:len(chunk)]  # this process's
    return out


_SCORERS: dict[tuple, RewardScorer] = {}


def get_scorer(path: str, mesh=None, rules=None) -> RewardScorer:
  """The scorer of the reward model at `path`, loaded once per (path, mesh, rules) per process,
  so several reward entries sharing one reward model hold one copy of its params."""
  mesh = mesh or sharding.make_mesh()
  rules = sharding.rules_from_config(rules)
  key = (os.path.abspath(path), mesh, rules)
  if key not in _SCORERS:
    model, params, tokenizer = load_reward_model(path, mesh, rules)
    _SCORERS[key] = RewardScorer(model, params, tokenizer, mesh, rules)
  return _SCORERS[key]


def make_reward_fn(path: str, *, mesh=None, rules=None, input: str = "summary",  # noqa: A002
                   max_len: int = 256, batch_size: int = 64):
  """A GRPO RewardFn scoring prompt + the completion's summary ('summary', helpfulness) or
  prompt + the whole completion ('response', harmlessness). Scores are raw: a Bradley-Terry
  model fixes only differences, so group advantages drop the offset, and the reward's weight
  sets its scale against the other rewards of a task."""
  if input not in INPUTS:
    raise ValueError(f"reward model input must be one of {INPUTS}, got {input!r}")
  scorer = get_scorer(path, mesh, rules)

  def reward_model(prompts, completions, answers, **extras) -> list[float]:
    del answers, extras
    if input == "summary":
      replies = [response.summary_text(c) for c in completions]
    else:
      replies = list(completions)
    return scorer.score(prompts, replies, max_len=max_len, batch_size=batch_size).tolist()

  return reward_model
