"""The GRPO stage (R1-Zero, and the RL stages of R1): the training loop around `r1jax.rl.grpo`.

Per step: prompts -> G samples each -> rule rewards -> group advantages -> mu epochs of updates;
metrics to metrics.jsonl + TensorBoard, a held-out eval every `eval_every` steps (`eval/pass@1`),
checkpoints every `checkpoint_every` steps. Rerunning on the same workdir resumes.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from r1jax import checkpoints, optim, sharding, templates, training
from r1jax.data import prompts as prompt_data
from r1jax.metrics import MetricsWriter
from r1jax.models import loading
from r1jax.rl import grpo, losses, rewards as rewards_lib
from r1jax.sampling import Sampler


def grpo_config(rl) -> grpo.GRPOConfig:
  loss_fields = dict(rl.loss)
  if loss_fields.get("max_tokens") is None:  # Dr.GRPO's constant budget: the completion budget
    loss_fields["max_tokens"] = rl.max_new_tokens
  loss = losses.LossConfig(**loss_fields)
  fields = {k: rl[k] for k in rl.keys() if k not in ("loss", "num_prompts", "ref_reset_every")}
  return grpo.GRPOConfig(loss=loss, **fields)


def build_rewards(config) -> rewards_lib.RewardSet:
  """Rule rewards from `config.rewards` ({name: weight | {weight, **kwargs}}); `accuracy` uses the
  grader named by `config.grader` ('exact' for the toy world, 'math' for math-verify)."""
  registry = dict(rewards_lib.REWARD_REGISTRY)
  if config.get("grader", "exact") == "math":
    from r1jax import grading
    registry["accuracy"] = lambda **kw: rewards_lib.accuracy_reward(grading.verify, **kw)
  return rewards_lib.build_reward_set(config.rewards, registry)


def ensure_base_model(config) -> str:
  """The run to start from; builds the toy base (a few CPU minutes) when it is missing."""
  path = config.model.init_from
  if os.path.exists(path) and (not loading.is_run_dir(path) or checkpoints.Checkpointer(
      os.path.join(path, loading.CHECKPOINT_DIR)).latest_step() is not None):
    return path
  if not config.model.get("build_base_if_missing", False):
    raise FileNotFoundError(f"model.init_from={path!r} does not exist")
  from configs import toy_base as toy_base_config
  from r1jax.stages import toy_base
  logging.warning("base model %s not found: building the toy base model first", path)
  print(f"r1jax: base model {path} not found; building it with configs/toy_base.py first")
  base_cfg = toy_base_config.get_config(config.model.get("base_config_arg", ""))
  with base_cfg.unlocked():
    base_cfg.data.data_dir = config.data.get("data_dir") or base_cfg.data.data_dir
  toy_base.run(base_cfg, path)
  return path


def evaluate(sampler, params, tokenizer, problems, config, rng) -> dict[str, float]:
  """pass@1 over k samples on held-out problems: the same code path as configs/eval.py."""
  from r1jax.stages import evaluate as eval_stage
  ev = config.eval
  summary, _ = eval_stage.sample_and_grade(
      sampler, params, tokenizer, problems, template=config.data.template, k=ev.k,
      max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, top_p=ev.top_p,
      top_k=ev.get("top_k", 0), batch_size=ev.batch_size, rng=rng,
      grader=config.get("grader", "exact"), extract=ev.get("extract", ("answer_tag",)),
      progress=False)
  return {f"eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}


def rollout_metrics(r: grpo.Rollout, cfg: grpo.GRPOConfig) -> dict[str, float]:
  lengths = r.completion_mask.sum(1)
  out = {"reward/total": float(r.rewards.mean()), "response_length/mean": float(lengths.mean()),
         "response_length/max": float(lengths.max()), "truncated_fraction": float(r.truncated.mean())}
  for name, part in r.reward_parts.items():
    out[f"reward/{name}"] = float(part.mean())
    out[f"reward_failures/{name}"] = float(r.reward_failures.get(name, 0))
  if "accuracy" in r.reward_parts:
    out["accuracy"] = out["reward/accuracy"]
  if "format" in r.reward_parts:
    out["format_rate"] = out["reward/format"]
  spread = r.rewards.reshape(-1, cfg.group_size).std(1) > 0
  out["groups_with_spread"] = float(spread.mean())
  return out


def run(config, workdir: str) -> dict[str, Any]:
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  base_path = ensure_base_model(config)
  pre = loading.load_pretrained(base_path, mesh=mesh, rules=rules)
  model, tokenizer = pre.model, pre.tokenizer
  if loading.is_run_dir(base_path) and os.path.abspath(base_path) != os.path.abspath(workdir):
    loading.copy_model_files(base_path, workdir)
  cfg = grpo_config(config.rl)
  tx = optim.make_optimizer(config.optim)
  state, state_shards = training.init_state(model, tx, mesh, rules, jax.random.key(config.seed),
                                            params=pre.params)
  del pre
  reward_set = build_rewards(config)
  train_problems = prompt_data.load_problems(config.data, "train")
  eval_problems = prompt_data.load_problems(config.data, "test")[: config.eval.num_problems]
  prompt_iter = prompt_data.prompt_iterator(train_problems, config.rl.num_prompts, config.seed)

  use_ref = cfg.loss.beta > 0
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, loading.CHECKPOINT_DIR),
                                  max_to_keep=config.get("keep_checkpoints", 2))
  start = ckpt.latest_step() or 0
  ref_params = jax.tree.map(lambda x: x.copy(), state["params"]) if use_ref else None
  if start:
    full = {**state, **({"ref_params": ref_params} if use_ref else {})}
    shards = {**state_shards, **({"ref_params": state_shards["params"]} if use_ref else {})}
    restored, data_state, _ = ckpt.restore(
        start, abstract_state=sharding.abstract_with_shardings(full, shards))
    ref_params = restored.pop("ref_params", None)
    state = restored
    prompt_iter.set_state(data_state["prompts"])
    logging.info("resumed from step %d", start)
    print(f"r1jax: resuming {workdir} from step {start}")

  sampler = Sampler(model, mesh=mesh, rules=rules)
  prompt_len_cache: dict[int, Any] = {}
  loss_fn_cache: dict[int, Any] = {}

  def fns_for(prompt_len: int):
    """Jitted log-prob and update functions, one per (bucketed) prompt length."""
    if prompt_len not in prompt_len_cache:
      prompt_len_cache[prompt_len] = grpo.make_logprob_fn(model, mesh, rules, prompt_len)
      loss_fn_cache[prompt_len] = training.jit_update(
          grpo.make_grpo_loss(model, cfg.loss, prompt_len), tx, mesh, rules, state_shards)
    return prompt_len_cache[prompt_len], loss_fn_cache[prompt_len]

  writer = MetricsWriter(workdir)
  base_rng = jax.random.key(config.seed)
  eval_rng = jax.random.key(config.eval.seed)
  template = config.data.template
  last_eval: dict[str, float] = {}

  def run_eval(step):
    nonlocal last_eval
    t = time.perf_counter()
    last_eval = evaluate(sampler, state["params"], tokenizer, eval_problems, config, eval_rng)
    last_eval["eval/time_s"] = time.perf_counter() - t
    writer.write(step, last_eval)
    logging.info("step %d eval: %s", step, last_eval)

  if start == 0 and config.eval.every:
    run_eval(0)
  bar = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps, desc="grpo",
             disable=not config.get("progress", True))
  for step in bar:
    rng = jax.random.fold_in(base_rng, step)
    t0 = time.perf_counter()

    def sample_fn(_round, r):
      batch = next(prompt_iter)
      texts = [templates.format_prompt(template, b["problem"]) for b in batch]
      return grpo.sample_groups(sampler, state["params"], tokenizer, reward_set, texts,
                                [b["answer"] for b in batch], cfg, r)

    rollout, ds_stats = grpo.collect_rollout(sample_fn, config.rl.num_prompts, cfg,
                                             jax.random.fold_in(rng, 1))
    t1 = time.perf_counter()
    logprob_fn, update_fn = fns_for(rollout.prompt_len)
    state, train_metrics = grpo.train_on_rollout(
        state, rollout, cfg=cfg, update_fn=update_fn, logprob_fn=logprob_fn,
        ref_params=ref_params, mesh=mesh, rng=jax.random.fold_in(rng, 2))
    t2 = time.perf_counter()
    if use_ref and config.rl.ref_reset_every and (step + 1) % config.rl.ref_reset_every == 0:
      ref_params = jax.tree.map(lambda x: x.copy(), state["params"])
    tokens = float(rollout.completion_mask.sum())
    metrics = {**rollout_metrics(rollout, cfg), **train_metrics, **ds_stats,
               "time/sampling_s": t1 - t0, "time/train_s": t2 - t1, "time/step_s": t2 - t0,
               "tokens_per_s": tokens / max(t2 - t0, 1e-9),
               "learning_rate": float(optim.make_schedule(config.optim)(step))}
    writer.write(step + 1, metrics)
    bar.set_postfix(acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                    len=f"{metrics['response_length/mean']:.0f}",
                    eval=f"{last_eval.get('eval/pass@1', float('nan')):.2f}")
    done = step + 1 == config.num_steps
    if config.eval.every and ((step + 1) % config.eval.every == 0 or done):
      run_eval(step + 1)
    if (step + 1) % config.checkpoint_every == 0 or done:
      full = {**state, **({"ref_params": ref_params} if use_ref else {})}
      ckpt.save(step + 1, full, data_state={"prompts": prompt_iter.get_state()},
                metadata={"stage": "grpo"}, force=True)
  ckpt.wait_until_finished()
  ckpt.close()
  writer.close()
  return {"step": config.num_steps, **last_eval}
