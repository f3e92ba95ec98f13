"""The reward-model stage: a Bradley-Terry reward model for R1's all-scenario RL (stage 4).

  init    parents.init: the policy's SFT run (the paper starts its reward models from DeepSeek-V3
          SFT checkpoints), or any model `load_pretrained` reads; the reward model is that
          transformer with a scalar head (r1jax.models.reward_model)
  data    data.source: 'toy:preferences' (the toy world's pairs, prompts already formatted) or
          'jsonl:preferences:PATH' (prompts formatted with data.template)
  split   data.heldout_fraction of the prompts, chosen by a stable hash of data.heldout_key
          ('prompt': every copy of a prompt lands on one side; 'id': per record), never trained on
  train   train.num_steps steps of train.batch_size pairs, chosen and rejected in one forward;
          batch `s` is drawn by an rng seeded with (seed, s), so a resumed run sees the same data
  eval    held-out pair accuracy, loss and margin at the end
The run directory loads with `reward_model.load_reward_model` and serves GRPO's `reward_model`
reward.
"""
from __future__ import annotations

import functools
import hashlib
import os
import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from r1jax import checkpoints, optim, runner, sharding, stages, training
from r1jax.data import jsonl, prompts as prompt_data, toy_tfds
from r1jax.errors import ConfigError
from r1jax.metrics import MetricsWriter
from r1jax.models import loading, reward_model as rm
from r1jax.rl.bradley_terry import bradley_terry_loss, pair_accuracy
from r1jax.runner import parent_dir
from r1jax.templates import format_prompt

HELDOUT_KEYS = ("prompt", "id")


def load_pairs(data_cfg) -> list[dict[str, str]]:
  """{id, prompt, chosen, rejected} records named by `data_cfg.source`, prompts formatted."""
  source = data_cfg.source
  kind, _, rest = source.partition(":")
  if source == "toy:preferences":
    data_dir = data_cfg.get("data_dir") or prompt_data.default_data_dir()
    records = toy_tfds.load_records("preferences", data_dir,
                                    prompt_data.toy_world_config(data_cfg))
  elif kind == "jsonl" and rest.startswith("preferences:"):
    path = rest.partition(":")[2]
    records = [{**r, "prompt": format_prompt(data_cfg.template, r["prompt"])}
               for r in jsonl.read(path, "preferences")]
  else:
    raise ConfigError(f"data.source {source!r}: the reward model reads 'toy:preferences' or "
                      "'jsonl:preferences:<path>'")
  return [{k: r[k] for k in ("id", "prompt", "chosen", "rejected")} for r in records]


def is_heldout(key: str, fraction: float) -> bool:
  """Stable across runs, machines and Python versions (unlike hash())."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def split_pairs(pairs: Sequence[dict], fraction: float, key: str
                ) -> tuple[list[dict], list[dict]]:
  """(train, heldout); a clear error when either side is empty."""
  if not 0.0 < fraction < 1.0:
    raise ConfigError(f"data.heldout_fraction must be in (0, 1), got {fraction}")
  if key not in HELDOUT_KEYS:
    raise ConfigError(f"data.heldout_key must be one of {HELDOUT_KEYS}, got {key!r}")
  train, heldout = [], []
  for p in pairs:
    (heldout if is_heldout(p[key], fraction) else train).append(p)
  for name, part in (("train", train), ("held-out", heldout)):
    if not part:
      raise ConfigError(f"data.heldout_fraction={fraction} (by {key}) leaves the {name} split of "
                        f"{len(pairs)} preference pairs empty; use more pairs or another fraction")
  return train, heldout


def sample_pairs(pairs: Sequence[dict], batch_size: int, seed: int, step: int) -> list[dict]:
  """Batch `step`: a function of (seed, step) only, so resuming needs no iterator state."""
  rng = np.random.default_rng([seed, step])
  idx = rng.choice(len(pairs), size=batch_size, replace=len(pairs) < batch_size)
  return [pairs[i] for i in idx]


def encode_pairs(tokenizer, pairs: Sequence[dict], max_len: int, pad_id: int
                 ) -> dict[str, np.ndarray]:
  """tokens [2B, T] (B chosen rows, then B rejected rows) and lengths [2B]. T is max_len
  rounded up to the bucket, fixed: one compile, and memory use known from the first step."""
  seqs = ([rm.encode_pair(tokenizer, p["prompt"], p["chosen"], max_len) for p in pairs]
          + [rm.encode_pair(tokenizer, p["prompt"], p["rejected"], max_len) for p in pairs])
  tokens, lengths = rm.pad_rows(seqs, len(seqs), pad_id, min_len=max_len)
  return {"tokens": tokens, "lengths": lengths}


def pair_loss(model: rm.RewardModel, params, batch: dict) -> tuple[jax.Array, dict]:
  """Bradley-Terry loss of one forward over the chosen and rejected rows."""
  scores = model.apply({"params": params}, batch["tokens"], batch["lengths"])  # [2B]
  b = scores.shape[0] // 2
  return bradley_terry_loss(scores[:b], scores[b:])


def init_path(config) -> str:
  """parents.init, checked before any data or weights load: a policy's weights."""
  path = parent_dir(config, "init")
  if not os.path.exists(path):
    raise ConfigError(f"parents.init: {path} does not exist")
  if rm.is_reward_model_dir(path):
    raise ConfigError(f"parents.init: {path} is a reward model; start from the policy's SFT run")
  if runner.is_stage_dir(path) and not loading.is_run_dir(path):
    raise ConfigError(f"parents.init: {path} is a stage run without model weights (no "
                      f"{loading.MODEL_FILE}); start from an SFT run")
  return path


def _init_model(path: str, workdir: str, mesh, rules):
  """The policy's model and params; the run dir gets its model files and the marker."""
  pre = loading.load_pretrained(path, mesh=mesh, rules=rules)
  loading.inherit_model_files(workdir, pre)
  rm.write_marker(workdir)
  return rm.RewardModel(pre.config), pre.params, pre.tokenizer


def heldout_eval(scorer: rm.RewardScorer, pairs: Sequence[dict]) -> dict[str, float]:
  n = len(pairs)
  # One call over both replies: their rows share batches and bucket lengths (fewer compiles).
  scores = scorer.score([p["prompt"] for p in pairs] * 2,
                        [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
  chosen, rejected = scores[:n], scores[n:]
  diff = chosen.astype(np.float64) - rejected
  return {"eval/pair_accuracy": pair_accuracy(chosen, rejected),
          "eval/loss": float(np.mean(np.logaddexp(0.0, -diff))),  # -log sigmoid(diff)
          "eval/margin": float(np.mean(diff)), "eval/num_pairs": float(n)}


@stages.register("reward_model")
def run(config, workdir: str) -> dict[str, Any]:
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  init = init_path(config)
  train_cfg = config.train
  rows, data = 2 * train_cfg.batch_size, sharding.batch_divisor(mesh)
  if rows % data:
    raise ConfigError(f"train.batch_size={train_cfg.batch_size} pairs make {rows} rows, not a "
                      f"multiple of the {data} data-parallel devices")
  pairs = load_pairs(config.data)
  train, heldout = split_pairs(pairs, config.data.heldout_fraction,
                               config.data.get("heldout_key", "prompt"))
  model, backbone, tokenizer = _init_model(init, workdir, mesh, rules)
  params = rm.init_params(model, backbone, jax.random.key(config.seed))
  del backbone
  num_steps = train_cfg.num_steps
  optim_cfg = optim.for_steps(config.optim, num_steps)
  tx = optim.make_optimizer(optim_cfg)
  state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(config.seed),
                                      params=params)
  del params
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, loading.CHECKPOINT_DIR), max_to_keep=1)
  start = ckpt.latest_step() or 0
  meta = None
  if start:
    state, _, meta = ckpt.restore(
        start, abstract_state=sharding.abstract_with_shardings(state, shards))
    print(f"r1jax: resuming {workdir} from step {start}")
  update = training.jit_update(functools.partial(pair_loss, model), tx, mesh, rules, shards)
  pad_id = rm.pad_id_of(tokenizer)
  writer = MetricsWriter(workdir, resume_step=start,
                         resume_offset=(meta or {}).get("metrics_offset"))
  name = config.get("name") or os.path.basename(os.path.normpath(workdir))
  bar = tqdm(range(start, num_steps), initial=start, total=num_steps, desc=name,
             disable=not config.get("progress", True))
  metrics: dict[str, Any] = {}
  for step in bar:
    batch = encode_pairs(tokenizer, sample_pairs(train, train_cfg.batch_size, config.seed, step),
                         train_cfg.seq_len, pad_id)
    state, metrics = update(state, training.shard_batch(batch, mesh))
    done = step + 1 == num_steps
    if (step + 1) % train_cfg.log_every == 0 or done:
      metrics = jax.tree.map(float, metrics)
      writer.write(step + 1, {f"train/{k}": v for k, v in metrics.items()})
      bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['pair_accuracy']:.2f}")
    if (step + 1) % config.checkpoint_every == 0 or done:
      ckpt.save(step + 1, state, force=True,
                metadata={"stage": "reward_model", "metrics_offset": writer.offset()})
  ckpt.close()
  scorer = rm.RewardScorer(model, state["params"], tokenizer, mesh, rules,
                           max_len=train_cfg.seq_len, batch_size=config.eval.batch_size)
  ev = heldout_eval(scorer, heldout)
  writer.write(num_steps, ev)
  writer.close()
  print(f"r1jax: {name} held-out pair accuracy = {ev['eval/pair_accuracy']:.3f} "
        f"over {len(heldout)} pairs")
  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  return {"step": num_steps, "num_params": num_params, "num_train_pairs": len(train),
          "time_s": time.perf_counter() - t0,
          **{f"train/{k}": float(v) for k, v in metrics.items()}, **ev}
