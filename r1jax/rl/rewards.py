"""Rule rewards for GRPO: named, weighted, composable host-side functions with failures contained.

A reward function has the signature
    fn(prompts: list[str], completions: list[str], answers: list[str], **extras) -> list[float]
and scores N samples at once. `extras` carries per-sample side data as length-N sequences (e.g.
`completion_lengths`, token counts from the sampler); a function ignores the extras it does not use.

Completion convention: the completion is the text the model generated after the prompt. With the
R1-Zero template (ending in "Assistant:") the model writes `<think>` itself, so a well-formed
completion is `<think>...</think><answer>...</answer>`. For a template that pre-fills `<think>`,
build the format reward with `make_format_reward(prefilled="<think>")`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import numpy as np

RewardFn = Callable[..., Sequence[float]]
Verifier = Callable[[str | None, str], bool]

_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def make_format_reward(prefilled: str = "") -> RewardFn:
  """1.0 iff `prefilled + completion` is `<think>T</think><answer>A</answer>` up to whitespace.

  Whitespace is allowed before, between and after the two blocks. T may be empty; A must hold
  something besides whitespace; neither may contain any of the four tags (no nesting, no repeats),
  and nothing may follow </answer>.
  """

  def format_reward(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers, extras
    scores = []
    for c in completions:
      match = _FORMAT.fullmatch(prefilled + c)
      ok = (match is not None and match.group(2).strip() != ""
            and not any(tag in match.group(1) + match.group(2) for tag in _TAGS))
      scores.append(1.0 if ok else 0.0)
    return scores

  return format_reward


format_reward = make_format_reward()


def extract_answer(completion: str) -> str | None:
  """Content of the last <answer>...</answer>, stripped; None if there is none."""
  end = completion.rfind("</answer>")
  if end < 0:
    return None
  start = completion.rfind("<answer>", 0, end)
  if start < 0:
    return None
  return completion[start + len("<answer>"):end].strip()


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


# One CJK/kana/hangul/full-width character is one word; any other run of non-space is one word.
_CJK = ("\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3400-\u4dbf"
        "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef")
_WORDS = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def is_ascii_word(word: str) -> bool:
  """Default target-language test: every character is printable ASCII (letters, digits, punct)."""
  return all("!" <= ch <= "~" for ch in word)


def cot_words(completion: str) -> list[str] | None:
  """Words of the first <think>...</think> block; None if the completion has no complete CoT."""
  match = _THINK.search(completion)
  return None if match is None else _WORDS.findall(match.group(1))


def language_consistency_reward(is_target_word: Callable[[str], bool] = is_ascii_word) -> RewardFn:
  """Num(words in the target language) / Num(words) in the CoT (R1 stage 2); 0 without a CoT."""

  def language_consistency(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers, extras
    scores = []
    for c in completions:
      words = cot_words(c)
      scores.append(sum(map(is_target_word, words)) / len(words) if words else 0.0)
    return scores

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
    "format": make_format_reward,
    "language": language_consistency_reward,
    "overlong": overlong_reward,
}


def build_reward_set(config: Mapping[str, Any],
                     registry: Mapping[str, Callable[..., RewardFn]] | None = None) -> RewardSet:
  """Builds from {name: weight} or {name: {'weight': w, **factory_kwargs}} (dict or ConfigDict).

  e.g. {'accuracy': 1.0, 'format': 1.0, 'overlong': {'weight': 1.0, 'max_len': 512,
  'cache_len': 128}}.
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
    named[name] = (registry[name](**kwargs), weight)
  return RewardSet(named)
