"""R1's readability filters for rejection sampling: which correct samples are still unfit for SFT.

The paper keeps only correct samples and then drops those whose chain of thought mixes languages,
has long paragraphs or holds code blocks, and keeps the readable reasoning + summary format.
Each filter is a pure function over one completion (plus what it needs: the target language, the
prompt, a limit) that returns True when the sample must be REJECTED. `FILTERS` holds them in the
order they are applied, so a rejected sample is counted under the first filter that rejects it.

A sample is a dict {'text': completion, 'prompt': the problem as asked (not the template),
'language': the CoT's target language}. The filter config (the stage's `rs` block, or any
mapping) reads `max_paragraph_words` (0 = no limit) and `require_readable`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from r1jax import language, response

# A prompt asking for code, by these words (any inflection) or a fence of its own.
_ASKS_FOR_CODE = re.compile(r"```|\b(code|coding|program|function|python|script)", re.IGNORECASE)
# An indented line that reads like code: a statement keyword first, or a ; { } at the end.
_CODE_LINE = re.compile(
    r"^(?:\t| {4,})\s*(?:(?:def|class|import|from|return|for|while|if|elif|else|print|int|void|"
    r"public|function|var|let|const)\b|#include).*$|^(?:\t| {4,}).*[;{}]\s*$")
_INDENTED = re.compile(r"^(?:\t| {4,})\S")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def mixed_language(text: str, lang: str = "en") -> bool:
  """The CoT has a word outside the target language (R1's language-mixing problem)."""
  return language.mixes_languages(response.cot_text(text), lang)


def paragraphs(text: str) -> list[str]:
  """Paragraphs of the CoT and of the summary (split on blank lines; the two never join)."""
  parts = [response.cot_text(text) or "", response.summary_text(text)]
  return [p for part in parts for p in _PARAGRAPH_BREAK.split(part) if p.strip()]


def long_paragraph(text: str, max_paragraph_words: int) -> bool:
  """Some paragraph has more than `max_paragraph_words` words (a CJK character is one word)."""
  return any(len(language.words(p)) > max_paragraph_words for p in paragraphs(text))


def asks_for_code(prompt: str) -> bool:
  return bool(_ASKS_FOR_CODE.search(prompt or ""))


def has_code(text: str) -> bool:
  """A ``` fence, or two or more consecutive indented lines of which one reads like code."""
  if "```" in text:
    return True
  block: list[str] = []
  for line in text.splitlines() + [""]:
    if _INDENTED.match(line):
      block.append(line)
      continue
    if len(block) >= 2 and any(_CODE_LINE.match(b) for b in block):
      return True
    block = []
  return False


def code_block(text: str, prompt: str) -> bool:
  """Code in a reply to a prompt that did not ask for code."""
  return not asks_for_code(prompt) and has_code(text)


def unreadable_format(text: str) -> bool:
  """Not R1's readable format (non-empty reasoning, a summary, then the answer)."""
  return not response.is_readable(text)


Filter = Callable[[dict, Any], bool]
FILTERS: dict[str, Filter] = {
    "mixed_language": lambda s, c: mixed_language(s["text"], s.get("language") or "en"),
    "long_paragraph": lambda s, c: (c.get("max_paragraph_words", 0) > 0
                                    and long_paragraph(s["text"], c["max_paragraph_words"])),
    "code_block": lambda s, c: code_block(s["text"], s.get("prompt", "")),
    # Optional: an R1-Zero-style policy writes no summary, so every sample would fail this one.
    "unreadable_format": lambda s, c: bool(c.get("require_readable", True))
                                      and unreadable_format(s["text"]),
}
# What apply_filters counts: every filter, then duplicates.
REJECTIONS = (*FILTERS, "duplicate")


def flags(sample: dict, config) -> list[str]:
  """Every filter that rejects `sample`, in FILTERS order (the first one is what counts)."""
  return [name for name, fn in FILTERS.items() if fn(sample, config)]


def normalize(text: str) -> str:
  return " ".join(text.split())


def dedupe(texts: Sequence[str]) -> list[int]:
  """Indices of the first of each group of texts equal after whitespace normalisation."""
  seen: set[str] = set()
  kept = []
  for i, t in enumerate(texts):
    key = normalize(t)
    if key not in seen:
      seen.add(key)
      kept.append(i)
  return kept


def apply_filters(samples: Sequence[dict], config) -> tuple[list[int], dict[str, int]]:
  """One prompt's samples through FILTERS in order, then dedupe: (kept indices, rejections by
  name). A sample is counted under the first filter that rejects it."""
  counts = dict.fromkeys(REJECTIONS, 0)
  passing = []
  for i, s in enumerate(samples):
    rejected = next((name for name, fn in FILTERS.items() if fn(s, config)), None)
    if rejected is None:
      passing.append(i)
    else:
      counts[rejected] += 1
  kept = [passing[j] for j in dedupe([samples[i]["text"] for i in passing])]
  counts["duplicate"] = len(passing) - len(kept)
  return kept, counts
