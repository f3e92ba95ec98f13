"""Metrics of the R1 evaluation protocol: pass@1 averaged over k samples, unbiased pass@k, cons@k.

pass@1 = (1/k) sum_i p_i over k samples per problem, averaged over problems; pass@k from n >= k
samples with c correct is 1 - C(n-c, k) / C(n, k) (Chen et al., 2021); cons@k is the correctness of
the majority answer among the k samples (R1 reports cons@64 on AIME).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from r1jax import grading

Equal = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

  Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
  """
  if not (0 <= c <= n and 1 <= k <= n):
    raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
  if n - c < k:  # every k-subset holds a correct sample
    return 1.0
  if k == 1:  # the product telescopes to (n - c) / n; return c / n without rounding error
    return c / n
  return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: Sequence[str | None], equal: Equal | None = None) -> int | None:
  """Index of the sample whose answer wins the vote; None if no answer is readable.

  answers: [n] extracted answers, None where unparsable (never counted, so never wins).
  Identical strings are bucketed first; buckets then join the first earlier group whose
  representative `equal` accepts (default: the math grader's notion of equal). Tie-break: among
  groups with the most votes, the one whose first member comes earliest wins; its first member
  is returned.
  """
  equal = equal or grading.answers_equal
  buckets: dict[str, list[int]] = {}  # stripped answer -> sample indices, in first-seen order
  for i, a in enumerate(answers):
    if a is not None and a.strip():
      buckets.setdefault(a.strip(), []).append(i)
  groups: list[tuple[str, list[int]]] = []  # (representative answer, member indices)
  for answer, members in buckets.items():
    for rep, group in groups:
      if equal(rep, answer):
        group.extend(members)
        break
    else:
      groups.append((answer, list(members)))
  if not groups:
    return None
  # max() keeps the first maximal group, and groups are in order of first occurrence.
  _, winner = max(groups, key=lambda g: len(g[1]))
  return min(winner)


def default_ks(n: int) -> tuple[int, ...]:
  """Powers of two below n, and n itself: the k's reported for pass@k."""
  ks = [k for k in (2 ** e for e in range(0, max(n, 1).bit_length())) if k < n]
  return tuple(ks + [n]) if n >= 1 else ()


def _as_list(record: Mapping, key: str, n: int, default) -> list:
  value = record.get(key)
  if value is None:
    return [default] * n
  if len(value) != n:
    raise ValueError(f"record field {key!r} has {len(value)} entries, expected {n}")
  return list(value)


def summarize(records: Sequence[Mapping], ks: Sequence[int] | None = None,
              equal: Equal | None = None) -> dict:
  """Summary of graded samples, one record per problem.

  Each record holds per-sample lists of equal length n: 'correct' (bool), 'extracted'
  (str | None), 'parsed' (bool), optionally 'num_tokens' (int) and 'truncated' (bool), and
  'completions' (str) from which lengths are measured in characters when tokens are not given.
  pass@k is reported for each k in `ks` (default: powers of two and n) with k <= the smallest n;
  cons@n votes among all n samples. num_unparsable counts samples whose answer was missing or
  unreadable; lengths are in tokens when every record has them, else in characters.
  """
  if not records:
    raise ValueError("no records to summarize")
  ns = [len(r["correct"]) for r in records]
  if min(ns) < 1:
    raise ValueError("every problem needs at least one sample")
  n_min = min(ns)
  ks = sorted(set(default_ks(n_min) if ks is None else ks))
  if any(k < 1 for k in ks):
    raise ValueError(f"k must be >= 1, got {ks}")
  in_tokens = all(r.get("num_tokens") is not None for r in records)
  per_k: dict[int, list[float]] = {k: [] for k in ks if k <= n_min}
  per_k.setdefault(1, [])
  cons, lengths = [], []
  num_unparsable = num_truncated = 0
  for r, n in zip(records, ns):
    correct = [bool(x) for x in r["correct"]]
    parsed = _as_list(r, "parsed", n, True)
    extracted = _as_list(r, "extracted", n, None)
    c = sum(correct)
    for k in per_k:
      per_k[k].append(pass_at_k(n, c, k))
    votes = [a if ok else None for a, ok in zip(extracted, parsed)]
    winner = majority_vote(votes, equal)
    cons.append(0.0 if winner is None else float(correct[winner]))
    if in_tokens:
      lengths.extend(int(t) for t in _as_list(r, "num_tokens", n, 0))
    else:
      lengths.extend(len(s) for s in _as_list(r, "completions", n, ""))
    num_unparsable += sum(not ok for ok in parsed)
    num_truncated += sum(bool(t) for t in _as_list(r, "truncated", n, False))
  uniform = len(set(ns)) == 1
  summary = {f"pass@{k}": math.fsum(v) / len(v) for k, v in sorted(per_k.items())}
  summary.update({
      (f"cons@{n_min}" if uniform else "cons@all"): math.fsum(cons) / len(cons),
      "mean_response_length": math.fsum(lengths) / len(lengths),
      "response_length_unit": "tokens" if in_tokens else "chars",
      "num_unparsable": num_unparsable,
      "num_truncated": num_truncated,
      "num_problems": len(records),
      "num_samples": sum(ns),
      "samples_per_problem": n_min if uniform else f"{min(ns)}-{max(ns)}",
  })
  return summary


def format_table(summary: Mapping, title: str = "") -> str:
  """A fixed-width two-column table of a summary (rates printed as percentages)."""
  rows = []
  is_rate = lambda k: k.startswith(("pass@", "cons@"))  # noqa: E731
  for key in sorted(summary, key=lambda k: (not is_rate(k), _metric_order(k))):
    value = summary[key]
    if is_rate(key):
      text = f"{100.0 * value:.2f}%"
    elif isinstance(value, float):
      text = f"{value:.2f}"
    else:
      text = str(value)
    rows.append((key, text))
  width = max(len(k) for k, _ in rows)
  lines = [title] if title else []
  lines += [f"{k:<{width}}  {v:>12}" for k, v in rows]
  return "\n".join(lines)


def _metric_order(key: str) -> tuple:
  name, _, k = key.partition("@")
  return (name != "pass", int(k)) if k.isdigit() else (name != "pass", 1 << 62, key)
