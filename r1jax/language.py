"""Languages of a chain of thought: word splitting, the target-language test, language mixing.

R1's language-consistency reward is Num(words in the target language) / Num(words) of the CoT.
Words: one CJK / kana / hangul / full-width character is one word (those scripts have no spaces);
any other run of non-space characters is one word. Words without letters (numbers, `5+7=2`,
punctuation) belong to every language: they are neutral and left out of both counts.

The rule for a CoT with no words (empty, or no think block at all): it has no word outside the
target language, so its share is 1. The reward therefore never pays for thinking as such (an
empty CoT scores the same as a consistent one); it only costs mixing.
"""
from __future__ import annotations

import re
from typing import Callable

_CJK = ("\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3400-\u4dbf"
        "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef")
_WORDS = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")


def words(text: str | None) -> list[str]:
  return _WORDS.findall(text or "")


def is_neutral(word: str) -> bool:
  """Numbers, arithmetic and punctuation: no letters and no CJK, so in no language at all."""
  return not any(ch.isalpha() for ch in word) and not _CJK_CHAR.search(word)


def is_english(word: str) -> bool:
  """Every character printable ASCII."""
  return all("!" <= ch <= "~" for ch in word)


def is_chinese(word: str) -> bool:
  """A CJK character (numerals 〇一二 ... included)."""
  return bool(_CJK_CHAR.fullmatch(word))


LANGUAGES: dict[str, Callable[[str], bool]] = {"en": is_english, "zh": is_chinese}


def check_language(name: str) -> str:
  if name not in LANGUAGES:
    raise ValueError(f"unknown target language {name!r}; known: {sorted(LANGUAGES)}")
  return name


def target_share(text: str | None, language: str = "en") -> float:
  """Share of the non-neutral words of `text` in `language`; 1.0 when there are none."""
  in_target = LANGUAGES[check_language(language)]
  counted = [w for w in words(text) if not is_neutral(w)]
  if not counted:
    return 1.0
  return sum(map(in_target, counted)) / len(counted)


def mixes_languages(text: str | None, language: str = "en") -> bool:
  """True when some non-neutral word of `text` is outside `language`."""
  return target_share(text, language) < 1.0
