"""The SFT stage: one loop for toy-base pre-training, cold-start SFT, rejection SFT and distillation.

They differ only in config:
  init    model.init = 'scratch' (a `model.preset`, with a tokenizer trained on the toy world or
          taken from a parent) or 'parent' (the weights of `parents.init`: an r1jax run, an HF
          directory or a GGUF file)
  data    data.source (r1jax.data.sft_data): the toy corpus, toy cold-start CoT, a JSONL file, or
          the data set a rejection-sampling parent wrote
  mask    the loss covers completion tokens only (prompts are context)
  length  train.num_steps, or train.num_epochs over the data (steps counted from a packing pass)
  loss    next-token NLL; with distill.logit_weight > 0 also KL to `parents.teacher`'s logits
Checkpoints carry the data iterator, so a rerun resumes exactly; a held-out eval (pass@1 over k,
lang_mix_rate, readable_rate) closes the run when `eval.num_problems` > 0.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
from absl import logging
from tqdm import tqdm

from r1jax import (checkpoints, faults, optim, preemption, sample_grade, samplers, sft, sharding,
                   stages, training)
from r1jax.data import loader, prompts as prompt_data, sft_data, toy_world
from r1jax.errors import ConfigError
from r1jax.metrics import MetricsWriter, read_metrics
from r1jax.models import loading
from r1jax.models.config import get_model_config
from r1jax.models.transformer import Transformer
from r1jax.runner import parent_dir, parent_dirs
from r1jax.tokenizers import SentencePieceTokenizer, load_tokenizer

TOKENIZER_FILE = "tokenizer.model"


def build_tokenizer(world: toy_world.ToyWorldConfig, workdir: str, vocab_size: int):
  """The toy world's SentencePiece tokenizer, trained once into the workdir."""
  path = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.exists(path):
    return SentencePieceTokenizer(path), path
  t = time.perf_counter()
  tok = toy_world.train_tokenizer(world, path, vocab_size=vocab_size)
  logging.info("trained a %d-piece tokenizer in %.1fs", tok.vocab_size, time.perf_counter() - t)
  return tok, path


def _scratch_model(config, workdir: str, world):
  """A fresh model: tokenizer trained on the toy world, or the tokenizer of a parent run."""
  source = config.tokenizer.get("source", "toy")
  if source == "toy":
    tokenizer, tok_path = build_tokenizer(world, workdir, config.tokenizer.vocab_size)
  elif source.startswith("parent:"):
    run = parent_dir(config, source.split(":", 1)[1])
    if not loading.is_run_dir(run):
      raise ConfigError(f"tokenizer.source={source!r}: {run} is not an r1jax run directory")
    tok_path = loading.tokenizer_path(run)
    tokenizer = load_tokenizer(tok_path)
  else:
    raise ConfigError(f"tokenizer.source must be 'toy' or 'parent:<role>', got {source!r}")
  model_cfg = get_model_config(config.model.preset, vocab_size=tokenizer.vocab_size,
                               **dict(config.model.get("overrides", {}) or {}))
  loading.write_model_files(workdir, model_cfg, tok_path)
  return Transformer(model_cfg), tokenizer, None


def _parent_model(config, workdir: str, mesh, rules):
  path = parent_dir(config, "init")
  pre = loading.load_pretrained(path, mesh=mesh, rules=rules)
  loading.inherit_model_files(workdir, pre)
  return pre.model, pre.tokenizer, pre.params


def steps_for(config, source, tokenizer) -> int:
  """train.num_steps, or num_epochs x the packed batches of one pass over the data."""
  train = config.train
  if train.get("num_epochs", 0) <= 0:
    return train.num_steps
  one_pass = loader.lm_dataset(source, tokenizer, seq_len=train.seq_len,
                               batch_size=train.batch_size, seed=config.seed, num_epochs=1)
  per_epoch = sum(1 for _ in one_pass)
  if per_epoch == 0:
    raise ConfigError(f"{len(source)} documents do not fill one batch of {train.batch_size} rows")
  return int(round(per_epoch * train.num_epochs))


def logit_distillation(config, model, tokenizer, mesh, rules):
  """The loss with a logit-matching term against `parents.teacher` (same vocabulary required)."""
  path = parent_dir(config, "teacher")
  teacher = loading.load_pretrained(path, mesh=mesh, rules=rules)
  same = (teacher.config.vocab_size == model.config.vocab_size
          and teacher.tokenizer.vocab_size == tokenizer.vocab_size
          and all(teacher.tokenizer.encode(t) == tokenizer.encode(t) for t in _VOCAB_PROBES))
  if not same:
    raise ConfigError(
        f"logit distillation (distill.logit_weight > 0) needs the student's vocabulary to be the "
        f"teacher's: student has {model.config.vocab_size} ids, teacher {path} has "
        f"{teacher.config.vocab_size} (or they tokenize text differently); use plain SFT "
        f"distillation (distill.logit_weight=0), as R1 does")
  loss = functools.partial(sft.distill_loss, model, teacher.model,
                           weight=float(config.distill.logit_weight),
                           temperature=float(config.distill.get("temperature", 1.0)))
  return loss, teacher.params


_VOCAB_PROBES = ("<think>3+4=7</think>So 7.<answer>7</answer>", "Reverse moon. 12345 abc XYZ")


@stages.register("sft")
def run(config, workdir: str) -> dict[str, Any]:
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  world = prompt_data.toy_world_config(config.data)
  data_dir = config.data.get("data_dir") or prompt_data.default_data_dir()
  sharding.check_batch(config.train.batch_size, mesh, "train.batch_size")
  # The data first: a bad file fails before any model work or anything written to the workdir.
  source = sft_data.resolve_source(config.data.source, data_dir=data_dir, world=world,
                                   template=config.data.template, parent_dirs=parent_dirs(config))
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  init = config.model.get("init", "scratch")
  if init == "scratch":
    model, tokenizer, params = _scratch_model(config, workdir, world)
  elif init == "parent":
    model, tokenizer, params = _parent_model(config, workdir, mesh, rules)
  else:
    raise ConfigError(f"model.init must be 'scratch' or 'parent', got {init!r}")
  model = Transformer(loading.with_precision(model.config, config.get("precision")))
  num_steps = steps_for(config, source, tokenizer)
  logging.info("sft: %d documents, %d steps, %s params", len(source), num_steps,
               f"{model.config.num_params():,}")

  optim_cfg = optim.for_steps(config.optim, num_steps)
  tx = optim.make_optimizer(optim_cfg)
  state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(config.seed),
                                      params=params)
  del params
  num_shards = config.train.get("data_shards", 0) or jax.process_count()
  data_iter = loader.ShardedBatches(  # each process reads only its shards of the documents
      lambda shard, rows: loader.lm_dataset(
          source, tokenizer, seq_len=config.train.seq_len, batch_size=rows, seed=config.seed,
          shard_index=shard, shard_count=num_shards),
      num_shards=num_shards, batch_size=config.train.batch_size)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, loading.CHECKPOINT_DIR), max_to_keep=1)
  start = ckpt.latest_step() or 0
  meta = None
  if start:
    state, data_state, meta = ckpt.restore(
        start, abstract_state=sharding.abstract_with_shardings(state, shards))
    data_iter.set_state(data_state["data"])
    print(f"r1jax: resuming {workdir} from step {start}")
  loss_fn, teacher_params = functools.partial(sft.next_token_loss, model), None
  if config.get("distill", {}).get("logit_weight", 0.0) > 0:
    loss_fn, teacher_params = logit_distillation(config, model, tokenizer, mesh, rules)
  update = training.jit_update(loss_fn, tx, mesh, rules, shards)
  writer = MetricsWriter(workdir, resume_step=start,
                         resume_offset=(meta or {}).get("metrics_offset"))
  nan_policy = config.get("nan_policy", "stop")
  name = config.get("name") or os.path.basename(os.path.normpath(workdir))
  bar = tqdm(range(start, num_steps), initial=start, total=num_steps, desc=name,
             disable=not config.get("progress", True))
  metrics: dict[str, Any] = {}
  t_log, step_log = time.perf_counter(), start
  flags: list[tuple[int, Any]] = []  # (step, on-device metrics) not yet checked for NaN/inf
  skipped = 0  # steps skipped for a NaN/inf since the last metrics line

  def check_flags() -> None:
    """Host check of the steps since the last one, before anything is logged or saved."""
    nonlocal skipped
    for s, m in flags:
      skipped += training.check_finite(jax.tree.map(float, m), s, nan_policy, ckpt.latest_step())
    flags.clear()

  # On leaving, pending checkpoint writes finish and the SIGTERM handler is restored.
  with preemption.PreemptionGuard() as guard, ckpt:
    for step in bar:
      batch = training.shard_batch(next(data_iter), mesh)
      if teacher_params is not None:
        batch["teacher_params"] = teacher_params
      state, metrics = update(state, batch)
      flags.append((step + 1, {k: metrics[k] for k in ("nonfinite", "loss", "grad_norm")}))
      faults.at("update", step + 1)
      done = step + 1 == num_steps
      stop = guard.should_stop(step + 1)
      if (step + 1) % config.train.log_every == 0 or done:
        check_flags()
        metrics = jax.tree.map(float, metrics)  # waits for the step: the timing below is real
        metrics["step_s"] = (time.perf_counter() - t_log) / (step + 1 - step_log)
        t_log, step_log = time.perf_counter(), step + 1
        writer.write(step + 1, {f"train/{k}": v for k, v in metrics.items()}
                     | {"train/nonfinite_skipped": float(skipped)})
        skipped = 0
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['token_accuracy']:.3f}")
      if (step + 1) % config.checkpoint_every == 0 or done or stop:
        check_flags()
        ckpt.save(step + 1, state, data_state={"data": data_iter.get_state()}, force=True,
                  metadata={"stage": "sft", "metrics_offset": writer.offset()})
        faults.at("checkpoint", step + 1)
      if stop and not done:
        writer.close()
        raise preemption.Preempted(step + 1, workdir)
  seq = config.train.seq_len - 1  # fwd + bwd ~ 3 forwards over every (padded) row position
  flops = 3.0 * config.train.batch_size * seq * model.config.flops_per_token(seq) * num_steps
  result = {"step": num_steps, "num_params": model.config.num_params(), "train_flops": flops,
            "num_documents": len(source), "train_time_s": time.perf_counter() - t0,
            "nonfinite_skipped": sum(r.get("train/nonfinite_skipped") or 0.0
                                     for r in read_metrics(workdir)),
            **jax.tree.map(float, metrics)}
  if config.eval.num_problems:
    problems = prompt_data.load_problems(config.data, "test")[: config.eval.num_problems]
    sampler = samplers.from_config(config, "eval", model, mesh, rules,
                                   rows=config.eval.batch_size * config.eval.k)
    ev = sample_grade.heldout_eval(sampler, state["params"], tokenizer, problems, config,
                                   jax.random.key(config.eval.seed))
    faults.at("eval", num_steps)
    writer.write(num_steps, ev)
    result.update(ev)
    print(f"r1jax: {name} held-out pass@1 = {ev.get('eval/pass@1', float('nan')):.3f}, "
          f"readable = {ev.get('eval/readable_rate', float('nan')):.3f}")
  writer.close()
  return result
