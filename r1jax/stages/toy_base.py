"""The toy_base stage: the toy world's stand-in for DeepSeek-V3-Base.

Builds the toy data sets (TFDS, array_record), trains a SentencePiece tokenizer on the corpus,
pre-trains a small transformer on it (loss on completions and fact answers only), checkpoints
both, and measures the base model's held-out pass@1 with the evaluation protocol that GRPO logs.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
from absl import logging
from tqdm import tqdm

from r1jax import checkpoints, optim, sft, sharding, training
from r1jax.data import loader, prompts as prompt_data, toy_tfds, toy_world
from r1jax.metrics import MetricsWriter
from r1jax.models import loading
from r1jax.models.config import get_model_config
from r1jax.models.transformer import Transformer
from r1jax.tokenizers import SentencePieceTokenizer

TOKENIZER_FILE = "tokenizer.model"


def build_tokenizer(world: toy_world.ToyWorldConfig, workdir: str, vocab_size: int):
  path = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.exists(path):
    return SentencePieceTokenizer(path), path
  t = time.perf_counter()
  tok = toy_world.train_tokenizer(world, path, vocab_size=vocab_size)
  logging.info("trained a %d-piece tokenizer in %.1fs", tok.vocab_size, time.perf_counter() - t)
  return tok, path


def run(config, workdir: str) -> dict[str, Any]:
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  world = prompt_data.toy_world_config(config.data)
  data_dir = config.data.get("data_dir") or prompt_data.default_data_dir()
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  corpus = toy_tfds.data_source("corpus", data_dir, world)
  logging.info("toy corpus: %d documents (%.1fs)", len(corpus), time.perf_counter() - t0)
  tokenizer, tok_path = build_tokenizer(world, workdir, config.tokenizer.vocab_size)
  model_cfg = get_model_config(config.model.preset, vocab_size=tokenizer.vocab_size,
                               **dict(config.model.get("overrides", {}) or {}))
  loading.write_model_files(workdir, model_cfg, tok_path)
  model = Transformer(model_cfg)
  logging.info("toy base model: %s params", f"{model_cfg.num_params():,}")

  tx = optim.make_optimizer(config.optim)
  state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(config.seed))
  ds = loader.lm_dataset(corpus, tokenizer, seq_len=config.train.seq_len,
                         batch_size=config.train.batch_size, seed=config.seed)
  data_iter = iter(ds)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, loading.CHECKPOINT_DIR), max_to_keep=1)
  start = ckpt.latest_step() or 0
  if start:
    state, data_state, _ = ckpt.restore(
        start, abstract_state=sharding.abstract_with_shardings(state, shards))
    data_iter.set_state(data_state["data"])
    print(f"r1jax: resuming toy_base from step {start}")
  update = training.jit_update(functools.partial(sft.next_token_loss, model), tx, mesh, rules,
                               shards)
  writer = MetricsWriter(workdir)
  bar = tqdm(range(start, config.train.num_steps), initial=start, total=config.train.num_steps,
             desc="toy_base", disable=not config.get("progress", True))
  metrics: dict[str, Any] = {}
  for step in bar:
    batch = training.shard_batch(next(data_iter), mesh)
    state, metrics = update(state, batch)
    done = step + 1 == config.train.num_steps
    if (step + 1) % config.train.log_every == 0 or done:
      metrics = jax.tree.map(float, metrics)
      writer.write(step + 1, {f"train/{k}": v for k, v in metrics.items()})
      bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['token_accuracy']:.3f}")
    if (step + 1) % config.checkpoint_every == 0 or done:
      ckpt.save(step + 1, state, data_state={"data": data_iter.get_state()},
                metadata={"stage": "toy_base"}, force=True)
  ckpt.wait_until_finished()
  ckpt.close()
  result = {"step": config.train.num_steps, "num_params": model_cfg.num_params(),
            "train_time_s": time.perf_counter() - t0, **jax.tree.map(float, metrics)}
  if config.eval.num_problems:
    from r1jax.stages.grpo import evaluate
    from r1jax.sampling import Sampler
    problems = prompt_data.load_problems(config.data, "test")[: config.eval.num_problems]
    ev = evaluate(Sampler(model, mesh=mesh, rules=rules), state["params"], tokenizer, problems,
                  config, jax.random.key(config.eval.seed))
    writer.write(config.train.num_steps, ev)
    result.update(ev)
    print(f"r1jax: toy base held-out pass@1 = {ev.get('eval/pass@1', float('nan')):.3f}")
  writer.close()
  return result
