"""Answer grading: extract a final answer from a completion and check it against the gold answer.

Math answers are compared with `math-verify` (sympy), so 0.5, 1/2 and \\frac{1}{2} agree, as do
27 and 27.0 or 1,000 and 1000. The toy world uses exact string match. Evaluation, majority vote
and the RL accuracy reward all go through this module: one notion of "correct" and "equal".

Grading never raises on model output: garbage, empty or truncated text is graded wrong. Two
timeouts guard against pathological expressions: math-verify's own (SIGALRM, main thread only)
stops slow Python-level sympy work; `GradingWorker` grades in a child process and kills it past a
hard wall-clock deadline, which also stops work stuck in C code and works from any thread.
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Sequence

import math_verify
from math_verify import ExprExtractionConfig, LatexExtractionConfig

from r1jax import response

log = logging.getLogger(__name__)

EXTRACT_MODES = ("answer_tag", "boxed", "hash", "last_number")
GRADE_MODES = ("math", "exact")
MAX_ANSWER_CHARS = 1000  # longer "answers" are not final answers; they are graded unparsable
SOFT_TIMEOUT_S = 5  # math-verify's per-parse / per-comparison limit (whole seconds, SIGALRM)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """extracted: the answer string found in the completion (None: none found).
  correct: it matches the gold answer. parsed: the grader could read it (sympy for math mode)."""

  extracted: str | None
  correct: bool
  parsed: bool


# ----------------------------------------------------------------------------------- extraction
def _boxed(text: str) -> str | None:
  """Argument of the last \\boxed{...} (or \\fbox), braces balanced; None when cut off."""
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
  if text.startswith(" ", i) and not text[i:].lstrip().startswith("{"):  # "\boxed 5"
    return text[i:].split()[0].rstrip("$.") if text[i:].split() else None
  while i < len(text) and text[i].isspace():
    i += 1
  if i >= len(text) or text[i] != "{":
    return None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == "{" and text[j - 1] != "\\":
      depth += 1
    elif text[j] == "}" and text[j - 1] != "\\":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
  return None


def _hash(text: str) -> str | None:
  """GSM8K's gold format: the rest of the line after the last '####'."""
  idx = text.rfind("####")
  if idx < 0:
    return None
  rest = text[idx + 4:].strip()
  return rest.splitlines()[0].strip() if rest else None


# A sign only when it cannot be a binary minus ("16-3" has last number 3, not -3).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?![.,]\d))?"
    r"|(?:(?<![\w)\]}])-)?\.\d+"
)


def _last_number(text: str) -> str | None:
  """Last number in the text (commas as thousands separators and spaces removed; a/b kept)."""
  last = None
  for last in _NUMBER.finditer(text):
    pass
  return None if last is None else re.sub(r"[,\s]", "", last.group())


_EXTRACTORS = {"answer_tag": response.extract_answer, "boxed": _boxed, "hash": _hash,
               "last_number": _last_number}


def extract_answer(text: str | None,
                   modes: Sequence[str] | str = ("answer_tag", "boxed")) -> str | None:
  """Tries the extraction modes in order; returns the first non-empty answer, else None."""
  modes = (modes,) if isinstance(modes, str) else tuple(modes)
  unknown = [m for m in modes if m not in _EXTRACTORS]
  if unknown:
    raise ValueError(f"unknown extract mode(s) {unknown}; choose from {EXTRACT_MODES}")
  if not isinstance(text, str) or not text:
    return None
  for mode in modes:
    found = _EXTRACTORS[mode](text)
    if found is not None and found.strip():
      return found.strip()
  return None


# ------------------------------------------------------------------------------------ parsing
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_ARG = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname)\s*\{[^{}]*\}")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _clean(answer: str) -> str:
  """Strips math delimiters, currency signs and a closing full stop."""
  s = answer.strip()
  for left, right in _MATH_DELIMS:
    if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
      s = s[len(left):-len(right)].strip()
      break
  s = s.replace("\\$", "")
  s = re.sub(r"\$(?=\s*[-\d.])", "", s)
  return s.rstrip(".").strip()


def _is_prose(s: str) -> bool:
  """True when words remain outside LaTeX commands and \\text{...}: parse as text, not as LaTeX."""
  return bool(_WORD.search(_LATEX_CMD.sub(" ", _TEXT_ARG.sub(" ", s))))


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


def _soft_timeout() -> int | None:
  # math-verify's timeout uses SIGALRM, which Python allows only in the main thread.
  return SOFT_TIMEOUT_S if _in_main_thread() else None


@functools.lru_cache(maxsize=16384)
def _parse_math(answer: str) -> tuple:
  """math-verify parse of an extracted answer: LaTeX (as if boxed) unless it reads as prose,
  in which case math-verify looks for the answer inside the text. Returns a tuple of sympy
  objects and fallback strings; () when nothing could be read."""
  s = _clean(answer)
  if not s or len(s) > MAX_ANSWER_CHARS:
    return ()
  try:
    if _is_prose(s):
      out = math_verify.parse(s, [LatexExtractionConfig(), ExprExtractionConfig()],
                              parsing_timeout=_soft_timeout())
    else:
      out = math_verify.parse("\\boxed{" + s + "}", [LatexExtractionConfig()],
                              parsing_timeout=_soft_timeout())
      if not any(_is_sympy(x) for x in out):  # e.g. "1/2 + x" typed without LaTeX
        out = math_verify.parse(s, [ExprExtractionConfig()], parsing_timeout=_soft_timeout())
  except Exception:  # noqa: BLE001 -- model output must never crash grading
    log.debug("math parse failed for %r", s, exc_info=True)
    return ()
  return tuple(out)


def _is_sympy(x) -> bool:
  return not isinstance(x, str)


def _math_equal(gold: tuple, pred: tuple) -> bool:
  try:
    return bool(math_verify.verify(list(gold), list(pred), timeout_seconds=_soft_timeout()))
  except Exception:  # noqa: BLE001
    log.debug("math-verify comparison failed", exc_info=True)
    return False


def _normalize_exact(s: str) -> str:
  return " ".join(s.split())


def _check_mode(mode: str) -> None:
  if mode not in GRADE_MODES:
    raise ValueError(f"unknown grade mode {mode!r}; choose from {GRADE_MODES}")


# ---------------------------------------------------------------------------------- public API
def grade(completion: str | None, gold: str, *,
          extract: Sequence[str] | str = ("answer_tag", "boxed"), mode: str = "math") -> Verdict:
  """Extracts the answer from `completion` (modes tried in order) and compares it with `gold`.

  mode='math': math-verify equivalence; an answer sympy cannot read is unparsable and wrong.
  mode='exact': whitespace-normalised string equality.
  Outside the main thread math-verify's SIGALRM timeout is off: use `GradingWorker` there.
  """
  _check_mode(mode)
  extracted = extract_answer(completion, extract)
  return Verdict(extracted, *_check(extracted, str(gold), mode))


def _check(extracted: str | None, gold: str, mode: str) -> tuple[bool, bool]:
  """(correct, parsed) of an already extracted answer."""
  if extracted is None or not extracted.strip():
    return False, False
  if mode == "exact":
    return _normalize_exact(extracted) == _normalize_exact(gold), True
  if not _gold_readable(gold):  # free-text gold: string equality is all we can do
    return _normalize_exact(_clean(extracted)) == _normalize_exact(_clean(gold)), True
  pred = _parse_math(extracted)
  if not any(_is_sympy(x) for x in pred):
    return False, False
  return _math_equal(_parse_math(gold), pred), True


@functools.lru_cache(maxsize=4096)
def _gold_readable(gold: str) -> bool:
  readable = any(_is_sympy(x) for x in _parse_math(gold))
  if not readable:
    log.warning("gold answer %.200r is not readable by math-verify; using exact match", gold)
  return readable


def answers_equal(a: str | None, b: str | None, *, mode: str = "math") -> bool:
  """The grader's notion of two extracted answers being the same (used by majority vote).
  Unreadable answers equal nothing, not even themselves."""
  _check_mode(mode)
  if a is None or b is None or not a.strip() or not b.strip():
    return False
  if mode == "exact":
    return _normalize_exact(a) == _normalize_exact(b)
  pa, pb = _parse_math(a), _parse_math(b)
  if not any(_is_sympy(x) for x in pa) or not any(_is_sympy(x) for x in pb):
    return False
  if _normalize_exact(_clean(a)) == _normalize_exact(_clean(b)):
    return True
  return _math_equal(pa, pb) or _math_equal(pb, pa)


def verify(pred: str | None, gold: str, *, mode: str = "math") -> bool:
  """Is an already extracted answer correct? The RL accuracy reward's check.

  In the main thread grading runs in-process under math-verify's SIGALRM timeouts; from other
  threads it goes through a shared `GradingWorker` (hard deadline, no signals needed).
  """
  _check_mode(mode)
  if _in_main_thread():
    return _check(pred, str(gold), mode)[0]
  return _shared_worker().verify(pred, str(gold), mode=mode)


# --------------------------------------------------------------------------- hard-deadline worker
def _serve(fd: int) -> None:
  """Child process: answers (name, args, kwargs) requests on socket `fd` until it closes."""
  conn = Connection(fd)
  calls = {"grade": grade, "answers_equal": answers_equal, "verify": verify}
  conn.send("ready")
  while True:
    try:
      name, args, kwargs = conn.recv()
    except (EOFError, OSError):
      return
    try:
      conn.send((True, calls[name](*args, **kwargs)))
    except Exception as e:  # noqa: BLE001 -- report, keep serving
      conn.send((False, repr(e)))


class GradingWorker:
  """Grades in a child Python process; a call past `timeout_s` kills the child (restarted on the
  next call) and counts as a wrong, unparsable answer. Thread-safe; calls are serialised.

  The child is a fresh interpreter (not fork: unsafe once JAX runs threads; not multiprocessing's
  spawn: it re-imports the caller's __main__), talking over a socket pair.
  """

  def __init__(self, timeout_s: float = 30.0, startup_timeout_s: float = 120.0):
    if timeout_s <= 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    self.timeout_s = timeout_s
    self.startup_timeout_s = startup_timeout_s
    self.num_timeouts = 0
    self._lock = threading.Lock()
    self._proc: subprocess.Popen | None = None
    self._conn: Connection | None = None

  def _start(self) -> None:
    ours, theirs = socket.socketpair()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the r1jax package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, "-c", f"from r1jax import grading; grading._serve({theirs.fileno()})"]
    self._proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                  env=env)
    theirs.close()
    self._conn = Connection(ours.detach())
    try:
      ready = self._conn.poll(self.startup_timeout_s) and self._conn.recv() == "ready"
    except (EOFError, OSError):
      ready = False
    if not ready:
      self._stop()
      raise RuntimeError(f"grading worker did not start ({' '.join(cmd)})")

  def _stop(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
    if self._conn is not None:
      self._conn.close()
    self._proc = self._conn = None

  def _call(self, name: str, args: tuple, kwargs: dict, default):
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._stop()
        self._start()
      self._conn.send((name, args, kwargs))
      try:
        ready = self._conn.poll(self.timeout_s)
        ok, value = self._conn.recv() if ready else (None, None)
      except (EOFError, OSError):  # the child died (e.g. out of memory)
        ready, ok = False, None
      if not ready or ok is None:
        self.num_timeouts += 1
        log.warning("grading call %s timed out after %.1fs; graded wrong", name, self.timeout_s)
        self._stop()
        return default
    if not ok:
      raise ValueError(value)  # bad arguments, e.g. an unknown mode: the caller's bug
    return value

  def grade(self, completion: str | None, gold: str, *,
            extract: Sequence[str] | str = ("answer_tag", "boxed"), mode: str = "math") -> Verdict:
    _check_mode(mode)
    extract = (extract,) if isinstance(extract, str) else tuple(extract)
    default = Verdict(extract_answer(completion, extract), False, False)
    return self._call("grade", (completion, gold), {"extract": extract, "mode": mode}, default)

  def answers_equal(self, a: str | None, b: str | None, *, mode: str = "math") -> bool:
    return self._call("answers_equal", (a, b), {"mode": mode}, False)

  def verify(self, pred: str | None, gold: str, *, mode: str = "math") -> bool:
    return self._call("verify", (pred, gold), {"mode": mode}, False)

  def close(self) -> None:
    with self._lock:
      self._stop()

  def __enter__(self) -> "GradingWorker":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


_SHARED: GradingWorker | None = None
_SHARED_LOCK = threading.Lock()


def _shared_worker() -> GradingWorker:
  global _SHARED
  with _SHARED_LOCK:
    if _SHARED is None:
      _SHARED = GradingWorker()
      atexit.register(_SHARED.close)
    return _SHARED
