"""The R1 response format, in one place: reasoning, then a summary, then (for reasoning tasks) the
answer.

    <think>REASONING</think>SUMMARY<answer>ANSWER</answer>

This is how r1jax writes the paper's `|special_token|<reasoning_process>|special_token|<summary>`:
`<think>` ... `</think>` are the special tokens around the reasoning, the summary is the text
between `</think>` and `<answer>` (or everything after `</think>` when there is no answer block),
and the final answer sits in `<answer>` tags so rules can check it. R1-Zero's format is the special
case of an empty summary (`<think>...</think><answer>...</answer>`), so R1-Zero outputs and
cold-start outputs are graded by the same rule. General (non-reasoning) replies have no answer
block: `<think>...</think>REPLY`, where the reply is the summary.

Everything that reads a response goes through here: the format reward, the language reward, the
answer extractor of the accuracy reward and of the eval grader, the reward model's inputs
(helpfulness reads the summary), and the readability filters of rejection sampling.
"""
from __future__ import annotations

import dataclasses

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@dataclasses.dataclass(frozen=True)
class Response:
  """A response split into its parts. `cot` is None when there is no complete think block;
  `answer` is None when there is no answer block; `well_formed` says the whole text follows the
  format (no stray or repeated tags, nothing before <think> or after </answer>)."""

  cot: str | None
  summary: str
  answer: str | None
  well_formed: bool


def _clean(*parts: str) -> bool:
  return not any(tag in part for part in parts for tag in TAGS)


def _split(text: str, with_answer: bool) -> tuple[str, ...] | None:
  """The groups that `\\s*<think>(.*?)</think>(.*?)<answer>(.*?)</answer>\\s*` (or, without the
  answer, `\\s*<think>(.*?)</think>(.*)`) fullmatches, DOTALL, found with `find` in linear time:
  the regex backtracks cubically on repeated tags, and a policy can write thousands of them.
  The first </think> after the opening <think>, the first <answer> after it, and the </answer>
  that ends the text (trailing whitespace aside): what the lazy groups settle on."""
  body = text.lstrip()
  if not body.startswith(THINK_OPEN):
    return None
  start = len(text) - len(body) + len(THINK_OPEN)
  close = text.find(THINK_CLOSE, start)
  if close < 0:
    return None
  rest = close + len(THINK_CLOSE)
  if not with_answer:
    return text[start:close], text[rest:]
  tail = text.rstrip()
  if not tail.endswith(ANSWER_CLOSE):
    return None
  end = len(tail) - len(ANSWER_CLOSE)
  opening = text.find(ANSWER_OPEN, rest)
  if opening < 0 or opening + len(ANSWER_OPEN) > end:
    return None
  return text[start:close], text[rest:opening], text[opening + len(ANSWER_OPEN):end]


def parse(text: str, require_answer: bool = True) -> Response:
  """Splits `text` by the format above (`require_answer=False`: a general reply, no answer block)."""
  m = _split(text, with_answer=True)
  if m is not None:
    cot, summary, answer = m
    ok = _clean(cot, summary, answer) and answer.strip() != ""
    return Response(cot, summary.strip(), answer.strip(), ok)
  m = _split(text, with_answer=False)
  if m is not None:
    cot, summary = m
    ok = not require_answer and _clean(cot, summary) and summary.strip() != ""
    return Response(cot, summary.strip(), extract_answer(text), ok)
  return Response(cot_text(text), summary_text(text), extract_answer(text), False)


def is_well_formed(text: str, require_answer: bool = True) -> bool:
  return parse(text, require_answer).well_formed


def is_readable(text: str, require_answer: bool = True) -> bool:
  """R1's readable format: well formed, with non-empty reasoning and a non-empty summary."""
  r = parse(text, require_answer)
  return r.well_formed and bool(r.cot and r.cot.strip()) and bool(r.summary)


def extract_answer(text: str | None) -> str | None:
  """The one answer-tag extractor (accuracy reward, eval grader, toy world): the content of the
  last `<answer>`, stripped, if that block is closed; else None. A last `<answer>` that is never
  closed (a response cut off while answering again) has no final answer: an earlier closed
  answer does not count, since the model was revising it."""
  if not isinstance(text, str):
    return None
  start = text.rfind(ANSWER_OPEN)
  if start < 0:
    return None
  end = text.find(ANSWER_CLOSE, start)
  if end < 0:
    return None
  found = text[start + len(ANSWER_OPEN):end].strip()
  return found or None


def cot_text(text: str) -> str | None:
  """The reasoning: the content of the first complete think block; None when there is none."""
  start = text.find(THINK_OPEN)
  if start < 0:
    return None
  end = text.find(THINK_CLOSE, start)
  return None if end < 0 else text[start + len(THINK_OPEN):end]


def summary_text(text: str) -> str:
  """What a reader sees after the reasoning: the text after the first </think>, answer tags
  removed (their content kept). Without a closed think block, the whole text."""
  end = text.find(THINK_CLOSE)
  rest = text if end < 0 else text[end + len(THINK_CLOSE):]
  return rest.replace(ANSWER_OPEN, " ").replace(ANSWER_CLOSE, " ").strip()
