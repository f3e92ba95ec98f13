"""The GRPO stage: one loop for R1-Zero, reasoning RL (stage 2) and all-scenario RL (stage 4).

They differ only in config: the starting weights (`parents.init`), the prompt mix (reasoning
prompts plus a `data.general_fraction` of general ones), the rollout temperature, and the rewards
per task of the prompt record (`rewards`: rule rewards, the language reward, the reward model).
Per step: prompts -> G samples each -> routed rewards -> group advantages -> mu epochs of updates;
metrics to metrics.jsonl + TensorBoard (with the rollouts' `lang_mix_rate`), a held-out eval
every `eval.every` steps (pass@1, lang_mix_rate, readable_rate; general obey and harmless rates
when `eval.general_problems` > 0), checkpoints every `checkpoint_every` steps. Reruns resume.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from r1jax import (checkpoints, faults, language, multihost, optim, preemption, response,
                   sample_grade, samplers, sharding, stages, templates, training)
from r1jax.data import prompts as prompt_data
from r1jax.metrics import MetricsWriter
from r1jax.models import loading
from r1jax.models.transformer import Transformer
from r1jax.rl import grpo, losses, rewards as rewards_lib
from r1jax.runner import parent_dir


def grpo_config(rl) -> grpo.GRPOConfig:
  loss_fields = dict(rl.loss)
  if loss_fields.get("max_tokens") is None:  # Dr.GRPO's constant budget: the completion budget
    loss_fields["max_tokens"] = rl.max_new_tokens
  loss = losses.LossConfig(**loss_fields)
  stage_only = ("loss", "num_prompts", "ref_reset_every", "sampler", "num_slots")
  fields = {k: rl[k] for k in rl.keys() if k not in stage_only}
  return grpo.GRPOConfig(loss=loss, **fields)


def reward_registry(config, mesh, rules) -> dict:
  """Rule rewards, plus `accuracy` on the configured grader and the reward model on the mesh."""
  registry = dict(rewards_lib.REWARD_REGISTRY)
  if config.get("grader", "exact") == "math":
    from r1jax import grading
    registry["accuracy"] = lambda **kw: rewards_lib.accuracy_reward(grading.verify, **kw)
  registry["language"] = lambda **kw: rewards_lib.language_consistency_reward(
      **{"default_language": config.data.get("language", "en"), **kw})

  def reward_model(path: str = "", **kw):
    from r1jax.models import reward_model as rm
    return rm.make_reward_fn(path or parent_dir(config, "reward_model"), mesh=mesh, rules=rules,
                             **kw)
  registry["reward_model"] = reward_model
  # R1 stage 4: helpfulness judged on the summary only, harmlessness on the whole response.
  registry["helpfulness"] = lambda **kw: reward_model(**{"input": "summary", **kw})
  registry["harmlessness"] = lambda **kw: reward_model(**{"input": "response", **kw})
  return registry


def build_rewards(config, mesh=None, rules=None) -> rewards_lib.RewardRouter:
  """`config.rewards` ({task: {name: weight | {weight, **kwargs}}}) as a per-sample router."""
  return rewards_lib.build_router(config.rewards, reward_registry(config, mesh, rules))


def load_prompts(config, split: str) -> list[dict]:
  """Problem records with their task ('reasoning' unless the record says) and target language."""
  lang = config.data.get("language", "en")
  return [{"task": rewards_lib.DEFAULT_TASK, "language": lang, **r}
          for r in prompt_data.load_problems(config.data, split)]


def general_prompts(config, split: str) -> list[dict]:
  """General prompts (task 'general'): the toy world's, or the prompts of an SFT JSONL file
  (`jsonl:PATH`, both splits) for real models, which the reward model alone scores."""
  spec = config.data.general_dataset
  if spec.startswith("jsonl:"):
    from r1jax.data import jsonl
    return [{"id": r["id"], "problem": r["prompt"], "answer": "", "task": "general",
             "language": config.data.get("language", "en")}
            for r in jsonl.read(spec.split(":", 1)[1], "sft")]
  general = config.data.copy_and_resolve_references()
  with general.unlocked():
    general.dataset = config.data.general_dataset
  return [{"language": config.data.get("language", "en"), **r}
          for r in prompt_data.load_problems(general, split)]


def general_eval(sampler, params, tokenizer, problems, config, rng,
                 reward_fn=None) -> dict[str, float]:
  """Held-out toy general prompts judged by the toy world's ground truth (never by the reward
  model): the share of replies that obey, and of harmful prompts answered harmlessly. With a
  `reward_fn` (a reward model's helpfulness), also its mean score (`eval/rm_score`)."""
  from r1jax.data import toy_world
  ev = config.eval
  samples = sample_grade.sample_completions(
      sampler, params, tokenizer, problems, template=config.data.template, k=ev.k,
      max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, top_p=ev.top_p,
      top_k=ev.get("top_k", 0), batch_size=ev.batch_size, rng=rng, progress=False)
  obey, harmless = [], []
  for s in samples:
    for c in s["completions"]:
      verdict = toy_world.judge_general(s["problem"], c)
      obey.append(verdict["obeys"])
      if toy_world.INSTRUCTIONS[s["problem"]][0] == "harmful":
        harmless.append(verdict["harmless"])
  out = {"eval/general_obey_rate": float(np.mean(obey)),
         "eval/harmless_rate": float(np.mean(harmless)) if harmless else float("nan")}
  if reward_fn is not None:
    prompts = [s["prompt"] for s in samples for _ in s["completions"]]
    texts = [c for s in samples for c in s["completions"]]
    out["eval/rm_score"] = float(np.mean(reward_fn(prompts, texts, [""] * len(texts))))
  return out


def rollout_metrics(r: grpo.Rollout, cfg: grpo.GRPOConfig) -> dict[str, float]:
  lengths = r.completion_mask.sum(1)
  out = {"reward/total": float(r.rewards.mean()), "response_length/mean": float(lengths.mean()),
         "response_length/max": float(lengths.max()), "truncated_fraction": float(r.truncated.mean())}
  for name, part in r.reward_parts.items():  # NaN where a routed reward did not apply
    out[f"reward/{name}"] = float(np.nanmean(part)) if np.isfinite(part).any() else float("nan")
    out[f"reward_failures/{name}"] = float(r.reward_failures.get(name, 0))
  if "accuracy" in r.reward_parts:
    out["accuracy"] = out["reward/accuracy"]
  if "format" in r.reward_parts:
    out["format_rate"] = out["reward/format"]
  out["lang_mix_rate"] = float(np.mean([  # share of rollouts whose CoT mixes languages
      language.mixes_languages(response.cot_text(t), rec.get("language", "en"))
      for t, rec in zip(r.texts, r.records or [{}] * len(r.texts))]))
  from r1jax import reflection
  out.update(reflection.stats(r.texts))  # re-checks and reflection words per rollout
  spread = r.rewards.reshape(-1, cfg.group_size).std(1) > 0
  out["groups_with_spread"] = float(spread.mean())
  return out


def process_slice(num_prompts: int, what: str) -> slice:
  """This process's prompts of each step's `num_prompts` (a contiguous, equal share)."""
  p, i = jax.process_count(), jax.process_index()
  if num_prompts % p:
    from r1jax.errors import ConfigError
    raise ConfigError(f"{num_prompts} {what} prompts per step do not split over {p} processes "
                      "(rl.num_prompts, data.general_fraction)")
  per = num_prompts // p
  return slice(i * per, (i + 1) * per)


@stages.register("grpo")
def run(config, workdir: str) -> dict[str, Any]:
  rules = sharding.rules_from_config(config.get("axis_rules"))
  mesh = sharding.make_mesh(dict(config.mesh))
  pre = loading.load_pretrained(parent_dir(config, "init"), mesh=mesh, rules=rules)
  model = Transformer(loading.with_precision(pre.config, config.get("precision")))
  tokenizer = pre.tokenizer
  loading.inherit_model_files(workdir, pre)
  cfg = grpo_config(config.rl)
  optim_cfg = optim.for_steps(config.optim, config.num_steps)
  tx = optim.make_optimizer(optim_cfg)
  state, state_shards = training.init_state(model, tx, mesh, rules, jax.random.key(config.seed),
                                            params=pre.params)
  del pre
  reward_router = build_rewards(config, mesh, rules)
  train_problems = load_prompts(config, "train")
  eval_problems = load_prompts(config, "test")[: config.eval.num_problems]
  n_general = int(round(config.rl.num_prompts * config.data.get("general_fraction", 0.0)))
  prompt_iter = prompt_data.prompt_iterator(train_problems, config.rl.num_prompts - n_general,
                                            config.seed, rows=process_slice(
                                                config.rl.num_prompts - n_general, "reasoning"))
  general_iter = None
  if n_general:
    general_train = general_prompts(config, "train")
    general_iter = prompt_data.prompt_iterator(general_train, n_general, config.seed + 1,
                                               rows=process_slice(n_general, "general"))
    reward_router.check_records(general_train, "general prompts")
  reward_router.check_records(train_problems, "train prompts")
  general_eval_problems = (general_prompts(config, "test")[: config.eval.general_problems]
                           if config.eval.get("general_problems", 0) else [])

  use_ref = cfg.loss.beta > 0
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, loading.CHECKPOINT_DIR),
                                  max_to_keep=config.get("keep_checkpoints", 2))
  start = ckpt.latest_step() or 0
  ref_params = jax.tree.map(lambda x: x.copy(), state["params"]) if use_ref else None
  meta = None
  if start:
    full = {**state, **({"ref_params": ref_params} if use_ref else {})}
    shards = {**state_shards, **({"ref_params": state_shards["params"]} if use_ref else {})}
    restored, data_state, meta = ckpt.restore(
        start, abstract_state=sharding.abstract_with_shardings(full, shards))
    ref_params = restored.pop("ref_params", None)
    state = restored
    prompt_iter.set_state(data_state["prompts"])
    if general_iter is not None:
      general_iter.set_state(data_state["general_prompts"])
    logging.info("resumed from step %d", start)
    print(f"r1jax: resuming {workdir} from step {start}")

  # Rollouts: one call of num_prompts x G rows; evals: calls of batch_size x k rows.
  sampler = samplers.from_config(config, "rl", model, mesh, rules,
                                 rows=config.rl.num_prompts * config.rl.group_size)
  eval_sampler = samplers.from_config(config, "eval", model, mesh, rules,
                                      rows=config.eval.batch_size * config.eval.k)
  prompt_len_cache: dict[int, Any] = {}
  loss_fn_cache: dict[int, Any] = {}

  def fns_for(prompt_len: int):
    """Jitted log-prob and update functions, one per (bucketed) prompt length."""
    if prompt_len not in prompt_len_cache:
      prompt_len_cache[prompt_len] = grpo.make_logprob_fn(model, mesh, rules, prompt_len,
                                                          cfg.temperature, cfg.prompt_group)
      loss_fn_cache[prompt_len] = training.jit_update(
          grpo.make_grpo_loss(model, cfg.loss, prompt_len, cfg.temperature, cfg.prompt_group),
          tx, mesh, rules, state_shards)
    return prompt_len_cache[prompt_len], loss_fn_cache[prompt_len]

  writer = MetricsWriter(workdir, resume_step=start,
                         resume_offset=(meta or {}).get("metrics_offset"))
  nan_policy = config.get("nan_policy", "stop")
  base_rng = jax.random.key(config.seed)
  eval_rng = jax.random.key(config.eval.seed)
  template = config.data.template
  last_eval: dict[str, float] = {}

  def run_eval(step):
    nonlocal last_eval
    t = time.perf_counter()
    last_eval = sample_grade.heldout_eval(eval_sampler, state["params"], tokenizer,
                                          eval_problems, config, eval_rng)
    faults.at("eval", step)
    if general_eval_problems:
      last_eval.update(general_eval(eval_sampler, state["params"], tokenizer,
                                    general_eval_problems, config, jax.random.fold_in(eval_rng, 1)))
    last_eval["eval/time_s"] = time.perf_counter() - t
    writer.write(step, last_eval)
    logging.info("step %d eval: %s", step, last_eval)

  if start == 0 and config.eval.every:
    run_eval(0)
  bar = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps,
             desc=config.get("name") or "grpo",
             disable=not config.get("progress", True))
  # On leaving, pending checkpoint writes finish and the SIGTERM handler is restored.
  with preemption.PreemptionGuard() as guard, ckpt:
    for step in bar:
      rng = jax.random.fold_in(base_rng, step)
      t0 = time.perf_counter()

      def sample_fn(_round, r):
        batch = next(prompt_iter) + (next(general_iter) if general_iter is not None else [])
        texts = [templates.format_prompt(template, b["problem"]) for b in batch]
        return grpo.sample_groups(sampler, state["params"], tokenizer, reward_router, texts,
                                  [b["answer"] for b in batch], cfg, r, records=batch)

      rollout, ds_stats = grpo.collect_rollout(sample_fn, config.rl.num_prompts, cfg,
                                               jax.random.fold_in(rng, 1))
      faults.at("sample", step + 1)
      if faults.armed("nan", "update", step + 1):
        rollout.rewards[:] = np.nan  # a numerical blow-up upstream of the loss
      t1 = time.perf_counter()
      logprob_fn, update_fn = fns_for(rollout.prompt_len)
      state, train_metrics = grpo.train_on_rollout(
          state, rollout, cfg=cfg, update_fn=update_fn, logprob_fn=logprob_fn,
          ref_params=ref_params, mesh=mesh, rng=jax.random.fold_in(rng, 2))
      t2 = time.perf_counter()
      skipped = training.check_finite(train_metrics, step + 1, nan_policy, ckpt.latest_step())
      faults.at("update", step + 1)
      if use_ref and config.rl.ref_reset_every and (step + 1) % config.rl.ref_reset_every == 0:
        ref_params = jax.tree.map(lambda x: x.copy(), state["params"])
      rows = rollout.tokens.shape[0] * jax.process_count()  # the global batch
      width = rollout.tokens.shape[1]
      local = {**rollout_metrics(rollout, cfg), **ds_stats, "time/sampling_s": t1 - t0}
      metrics = multihost.combine_metrics(local)  # this process's rows -> the whole batch's
      tokens = metrics["response_length/mean"] * rows
      fpt = model.config.flops_per_token(width)
      # old log-probs (none when on-policy: one epoch, one minibatch) + ref + fwd/bwd per epoch
      on_policy = cfg.num_epochs == 1 and cfg.num_minibatches == 1
      forwards = float(not on_policy) + float(use_ref) + 3.0 * cfg.num_epochs
      sampled = rows * rollout.prompt_len + tokens  # prefill + one forward per generated token
      metrics.update({**train_metrics, "time/train_s": t2 - t1, "time/step_s": t2 - t0,
                      "tokens_per_s": tokens / max(t2 - t0, 1e-9),
                      "flops": fpt * (sampled + forwards * rows * width),  # an estimate, see README
                      "learning_rate": float(optim.make_schedule(optim_cfg)(step)),
                      "nonfinite_skipped": float(skipped)})
      writer.write(step + 1, metrics)
      bar.set_postfix(acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                      len=f"{metrics['response_length/mean']:.0f}",
                      eval=f"{last_eval.get('eval/pass@1', float('nan')):.2f}")
      done = step + 1 == config.num_steps
      if config.eval.every and ((step + 1) % config.eval.every == 0 or done):
        run_eval(step + 1)
      stop = guard.should_stop(step + 1)
      if (step + 1) % config.checkpoint_every == 0 or done or stop:
        full = {**state, **({"ref_params": ref_params} if use_ref else {})}
        data_state = {"prompts": prompt_iter.get_state(),
                      **({"general_prompts": general_iter.get_state()} if general_iter else {})}
        ckpt.save(step + 1, full, data_state=data_state, force=True,
                  metadata={"stage": "grpo", "metrics_offset": writer.offset()})
        faults.at("checkpoint", step + 1)
      if stop and not done:
        writer.close()
        raise preemption.Preempted(step + 1, workdir)
  writer.close()
  from r1jax.metrics import read_metrics
  rows = read_metrics(workdir)
  flops = sum(r.get("flops") or 0.0 for r in rows)
  skipped = sum(r.get("nonfinite_skipped") or 0.0 for r in rows)
  return {"step": config.num_steps, "train_flops": flops, "nonfinite_skipped": skipped,
          **last_eval}
