"""Rule rewards for GRPO: named, weighted, composable host-side functions with failures contained.

A reward function has the signature
    fn(prompts: list[str], completions: list[str], answers: list[str], **extras) -> list[float]
and scores N samples at once. `extras` carries per-sample side data as length-N sequences:
`records` (the whole prompt record of each sample: task, language, answer, ...) and
`completion_lengths` (token counts from the sampler); a function ignores the extras it does not use.
`RewardRouter` picks a reward set per sample by the record's `task`.

Completion convention: the completion is the text the model generated after the prompt. With the
R1-Zero template (ending in "Assistant:") the model writes `<think>` itself, so a well-formed
completion is `<think>...</think><answer>...</answer>`. For a template that pre-fills `<think>`,
build the format reward with `make_format_reward(prefilled="<think>")`.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import numpy as np

from r1jax import language, response
from r1jax.rl import code_sandbox

RewardFn = Callable[..., Sequence[float]]
Verifier = Callable[[str | None, str], bool]


def make_format_reward(prefilled: str = "", require_answer: bool = True) -> RewardFn:
  """1.0 iff `prefilled + completion` follows the R1 format of `r1jax.response`:
  `<think>T</think>S<answer>A</answer>` up to surrounding whitespace.

  T (reasoning) and S (summary) may be empty, so R1-Zero's `<think>T</think><answer>A</answer>`
  and the cold-start `<think>T</think>summary<answer>A</answer>` both score 1. A must hold
  something besides whitespace; no part may contain a tag (no nesting, no repeats), and nothing
  may follow </answer>. `require_answer=False` (general prompts): `<think>T</think>REPLY` with a
  non-empty reply and no answer block.
  """

  def format_reward(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers, extras
    return [1.0 if response.is_well_formed(prefilled + c, require_answer) else 0.0
            for c in completions]

  return format_reward


format_reward = make_format_reward()
extract_answer = response.extract_answer  # the one answer-tag extractor (grading uses it too)


def exact_match(pred: str | None, gold: str) -> bool:
  """Verifier for the toy world: equal after stripping surrounding whitespace."""
  return pred is not None and pred.strip() == gold.strip()


VERIFIERS: dict[str, Verifier] = {"exact_match": exact_match}


def accuracy_reward(verifier: Verifier | str = exact_match) -> RewardFn:
  """1.0 iff verifier(extracted answer, gold answer); a verifier may also be named in VERIFIERS."""
  if isinstance(verifier, str):
    if verifier not in VERIFIERS:
      raise ValueError(f"unknown verifier {verifier!r}; known: {sorted(VERIFIERS)}")
    verifier = VERIFIERS[verifier]

  def accuracy(prompts, completions, answers, **extras) -> list[float]:
    del prompts, extras
    if len(answers) != len(completions):
      raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
    return [1.0 if verifier(extract_answer(c), a) else 0.0 for c, a in zip(completions, answers)]

  return accuracy


def language_consistency_reward(default_language: str = "en") -> RewardFn:
  """R1 stage 2: the share of the CoT's words in the target language (`r1jax.language`).

  The target language is the prompt record's `language` field (extras['records']), else
  `default_language`. A CoT with no words scores 1 (see r1jax.language): the reward costs mixing
  and never pays for thinking itself.
  """
  language.check_language(default_language)

  def language_consistency(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers
    records = extras.get("records") or [{}] * len(completions)
    return [language.target_share(response.cot_text(c), r.get("language") or default_language)
            for c, r in zip(completions, records)]

  return language_consistency


def soft_overlong_punishment(lengths_in_tokens: Sequence[int] | np.ndarray, max_len: int,
                             cache_len: int) -> np.ndarray:
  """DAPO: 0 if L <= max_len - cache_len; (max_len - cache_len - L) / cache_len up to max_len; -1.

  L is counted in tokens of the completion. Returns float32 [N].
  """
  if not 0 < cache_len <= max_len:
    raise ValueError(f"need 0 < cache_len <= max_len, got {cache_len}, {max_len}")
  length = np.asarray(lengths_in_tokens, np.float64)
  start = max_len - cache_len
  out = np.where(length <= start, 0.0, (start - length) / cache_len)
  return np.where(length > max_len, -1.0, out).astype(np.float32)


def overlong_reward(max_len: int, cache_len: int,
                    length_key: str = "completion_lengths") -> RewardFn:
  """Reward fn form of `soft_overlong_punishment`, reading token lengths from extras[length_key]."""
  if not 0 < cache_len <= max_len:
    raise ValueError(f"need 0 < cache_len <= max_len, got {cache_len}, {max_len}")

  def overlong(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers
    if length_key not in extras:
      raise KeyError(f"overlong reward needs token lengths in extras[{length_key!r}]")
    lengths = extras[length_key]
    if len(lengths) != len(completions):
      raise ValueError(f"{len(completions)} completions but {len(lengths)} lengths")
    return soft_overlong_punishment(lengths, max_len, cache_len).tolist()

  return overlong


def _slice_extras(extras: Mapping[str, Any], i: int, n: int) -> dict[str, Any]:
  """Per-sample view of extras: length-n sequences are sliced to [i:i+1], the rest passed as is."""
  out = {}
  for k, v in extras.items():
    sliceable = isinstance(v, (list, tuple, np.ndarray)) and len(v) == n
    out[k] = v[i:i + 1] if sliceable else v
  return out


def _checked(values: Sequence[float], n: int) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.shape != (n,):
    raise ValueError(f"reward function returned shape {values.shape}, expected ({n},)")
  return values


DEFAULT_TIMEOUT_S = 300.0  # per call; generous, since a reward model's first call compiles


def with_timeout(fn: RewardFn, timeout_s: float, name: str = "reward") -> RewardFn:
  """`fn` run in a daemon thread that must return within `timeout_s`, else TimeoutError: a hung
  reward costs its samples their score (counted as failures) instead of stalling the run.

  Python cannot kill a thread, so a hung call is abandoned and keeps its thread until it returns;
  code that may never return belongs in a child process (the `code` reward's sandbox).
  """
  if not timeout_s or timeout_s <= 0:
    return fn

  def timed(*args, **kwargs):
    out: dict[str, Any] = {}

    def target():
      try:
        out["value"] = fn(*args, **kwargs)
      except BaseException as e:  # pylint: disable=broad-except  (re-raised in the caller)
        out["error"] = e

    thread = threading.Thread(target=target, daemon=True, name=f"reward-{name}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
      raise TimeoutError(f"reward {name!r} returned nothing within {timeout_s:g} s "
                         "(its timeout_s)")
    if "error" in out:
      raise out["error"]
    return out["value"]

  return timed


def _score_one_fn(name: str, fn: RewardFn, prompts, completions, answers,
                  extras) -> tuple[np.ndarray, int]:
  """Scores with fn; on an exception retries sample by sample. Returns (scores [N], failures)."""
  n = len(completions)
  try:
    scores = _checked(fn(prompts, completions, answers, **extras), n)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("reward %r failed on a batch of %d (%s: %s); retrying per sample", name, n,
                    type(e).__name__, e)
    scores = np.zeros(n)
    bad = np.zeros(n, bool)
    for i in range(n):
      try:
        scores[i] = _checked(fn(prompts[i:i + 1], completions[i:i + 1], answers[i:i + 1],
                                **_slice_extras(extras, i, n)), 1)[0]
      except Exception as e_i:  # pylint: disable=broad-except
        bad[i] = True
        logging.warning("reward %r failed on sample %d (%s: %s); scoring 0", name, i,
                        type(e_i).__name__, e_i)
  else:
    bad = np.zeros(n, bool)
  nonfinite = ~np.isfinite(scores)
  if nonfinite.any():
    logging.warning("reward %r returned %d non-finite scores; scoring them 0", name,
                    int(nonfinite.sum()))
  bad |= nonfinite
  return np.where(bad, 0.0, scores), int(bad.sum())


def combine_rewards(named_fns: Mapping[str, tuple[RewardFn, float]], prompts: Sequence[str],
                    completions: Sequence[str], answers: Sequence[str], **extras
                    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]:
  """Weighted sum of named rewards. Returns (total [N] float32, name -> [N] float32 unweighted,
  name -> number of samples that scored 0 because the function raised or returned non-finite).
  """
  prompts, completions, answers = list(prompts), list(completions), list(answers)
  n = len(completions)
  if len(prompts) != n or len(answers) != n:
    raise ValueError(f"got {len(prompts)} prompts, {n} completions, {len(answers)} answers")
  total = np.zeros(n, np.float64)
  per_reward, failures = {}, {}
  for name, (fn, weight) in named_fns.items():
    scores, failed = _score_one_fn(name, fn, prompts, completions, answers, extras)
    total += weight * scores
    per_reward[name] = scores.astype(np.float32)
    failures[name] = failed
  return total.astype(np.float32), per_reward, failures


class RewardSet:
  """Named reward functions with weights; calling it runs `combine_rewards`."""

  def __init__(self, named_fns: Mapping[str, tuple[RewardFn, float]]):
    if not named_fns:
      raise ValueError("a RewardSet needs at least one reward function")
    self.named_fns = dict(named_fns)

  @property
  def weights(self) -> dict[str, float]:
    return {name: w for name, (_, w) in self.named_fns.items()}

  def __call__(self, prompts, completions, answers, **extras):
    return combine_rewards(self.named_fns, prompts, completions, answers, **extras)


# name -> factory(**kwargs) -> RewardFn. Other modules may add entries (e.g. math-verify accuracy).
REWARD_REGISTRY: dict[str, Callable[..., RewardFn]] = {
    "accuracy": accuracy_reward,
    "code": code_sandbox.code_reward,  # runs the program in a sandbox against record['tests']
    "format": make_format_reward,
    "language": language_consistency_reward,
    "overlong": overlong_reward,
}


def build_reward_set(config: Mapping[str, Any],
                     registry: Mapping[str, Callable[..., RewardFn]] | None = None) -> RewardSet:
  """Builds from {name: weight} or {name: {'weight': w, **factory_kwargs}} (dict or ConfigDict).

  e.g. {'accuracy': 1.0, 'format': 1.0, 'overlong': {'weight': 1.0, 'max_len': 512,
  'cache_len': 128}}. Every call has a timeout: a dict spec's `timeout_s` (0: none), else
  DEFAULT_TIMEOUT_S.
  """
  registry = REWARD_REGISTRY if registry is None else registry
  named = {}
  for name, spec in dict(config).items():
    if name not in registry:
      raise ValueError(f"unknown reward {name!r}; known: {sorted(registry)}")
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
      weight, kwargs = float(spec), {}
    elif hasattr(spec, "items"):
      kwargs = dict(spec.items())
      if "weight" not in kwargs:
        raise ValueError(f"reward {name!r}: a dict spec needs a 'weight'")
      weight = float(kwargs.pop("weight"))
    else:
      raise ValueError(f"reward {name!r}: spec must be a weight or a dict, got {spec!r}")
    timeout_s = float(kwargs.pop("timeout_s", DEFAULT_TIMEOUT_S))
    named[name] = (with_timeout(registry[name](**kwargs), timeout_s, name), weight)
  return RewardSet(named)


DEFAULT_TASK = "reasoning"


def task_of(record: Mapping[str, Any]) -> str:
  return record.get("task") or DEFAULT_TASK


class RewardRouter:
  """Routes each sample to the reward set of its prompt record's `task` ('reasoning' when the
  record has none): rule rewards for reasoning prompts, the reward model for general ones.

  Calling it returns (total [N], name -> [N] scores, NaN where the reward did not apply,
  name -> failures). `check_records` fails early, before any sampling, on a task with no route.
  """

  def __init__(self, routes: Mapping[str, RewardSet]):
    if not routes:
      raise ValueError("a RewardRouter needs at least one task route")
    self.routes = dict(routes)

  def check_records(self, records: Sequence[Mapping[str, Any]], where: str = "prompts") -> None:
    for r in records:
      if task_of(r) not in self.routes:
        raise ValueError(f"{where}: record {r.get('id', '?')!r} has task {task_of(r)!r}, which has "
                         f"no reward route; routes: {sorted(self.routes)} (config.rewards)")

  def __call__(self, prompts, completions, answers, records, **extras):
    n = len(completions)
    if len(records) != n:
      raise ValueError(f"{n} completions but {len(records)} prompt records")
    self.check_records(records)
    tasks = np.array([task_of(r) for r in records])
    total = np.zeros(n, np.float32)
    names = sorted({name for rs in self.routes.values() for name in rs.named_fns})
    parts = {name: np.full(n, np.nan, np.float32) for name in names}
    failures = {name: 0 for name in names}
    for task, reward_set in self.routes.items():
      idx = np.flatnonzero(tasks == task)
      if not len(idx):
        continue
      pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
      sub_extras = {k: (np.asarray(v)[idx] if isinstance(v, np.ndarray) and len(v) == n
                        else pick(v) if isinstance(v, (list, tuple)) and len(v) == n else v)
                    for k, v in extras.items()}
      t, p, f = reward_set(pick(prompts), pick(completions), pick(answers), records=pick(records),
                           **sub_extras)
      total[idx] = t
      for name, scores in p.items():
        parts[name][idx] = scores
        failures[name] += f[name]
    return total, parts, failures


def build_router(config: Mapping[str, Any],
                 registry: Mapping[str, Callable[..., RewardFn]] | None = None) -> RewardRouter:
  """{task: {name: spec}} -> RewardRouter (each task's specs as in `build_reward_set`)."""
  return RewardRouter({task: build_reward_set(specs, registry) for task, specs in dict(config).items()})
