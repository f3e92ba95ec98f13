"""Fuzzing the parts that read what users and models write.

(a) The JSONL readers (SFT / cold-start / preference files, benchmark files, completion files) on
arbitrary bytes and arbitrary JSON lines: they return records or raise ConfigError, nothing else.
(b) The answer grader and the response parser on any string, including very long and deeply
nested ones: they never raise and never hang (each call is timed; math-verify has its own
timeouts in the main thread).
"""
import json
import os
import re
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from r1jax import grading, response
from r1jax.data import benchmarks, jsonl
from r1jax.errors import ConfigError
from r1jax.stages import evaluate

# Generous: math-verify stops a parse or a comparison after grading.SOFT_TIMEOUT_S (5 s), and a
# call makes at most a few of them.
MAX_CALL_S = 30.0
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------ JSONL readers
_FIELDS = sorted({f for fields in jsonl.FORMATS.values() for f in fields}
                 | {"id", "question", "gold", "completions", "prompt"})
_json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
              | st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Objects that mostly look like records: the readers' field names with any JSON values.
_records = st.dictionaries(st.sampled_from(_FIELDS), _json_leaf | _json, max_size=6)
_lines = st.lists(_records.map(json.dumps) | _json.map(json.dumps) | st.text(max_size=30),
                  max_size=5).map(lambda ls: "\n".join(ls).encode("utf-8"))
_contents = _lines | st.binary(max_size=300)


def _write(scratch, content: bytes) -> str:
  path = os.path.join(scratch, "data.jsonl")
  with open(path, "wb") as f:
    f.write(content)
  return path


def _records_or_config_error(fn, *args):
  try:
    return fn(*args)
  except ConfigError as e:
    assert "\n" not in str(e), str(e)
    return None


@FUZZ
@given(content=_contents, fmt=st.sampled_from(sorted(jsonl.FORMATS)))
@example(content=b"[" * 100_000, fmt="sft")
@example(content=b"1" * 5000, fmt="sft")
@example(content=b"\xff\xfe{}", fmt="cold_start")
def test_jsonl_read(scratch, content, fmt):
  records = _records_or_config_error(jsonl.read, _write(scratch, content), fmt)
  for r in records or ():
    assert set(r) == {*jsonl.FORMATS[fmt], "id"}
    assert all(isinstance(v, str) for v in r.values())


@FUZZ
@given(content=_contents, fmt=st.sampled_from(["cold_start", "sft"]))
def test_jsonl_sft_records(scratch, content, fmt):
  docs = _records_or_config_error(jsonl.sft_records, _write(scratch, content), fmt, "toy")
  for d in docs or ():
    assert isinstance(d["prompt"], str) and isinstance(d["completion"], str)


@pytest.fixture(scope="module")
def builders(scratch):
  """The benchmark builders, never prepared: only their line reader is fuzzed, not TFDS."""
  config = benchmarks.MathJsonlConfig(name="fuzz", version=benchmarks.MathJsonl.VERSION,
                                      id_field="id")
  return [benchmarks.Gsm8k(data_dir=str(scratch / "tfds")),
          benchmarks.Aime24(data_dir=str(scratch / "tfds")),
          benchmarks.Amc23(data_dir=str(scratch / "tfds")),
          benchmarks.MathJsonl(data_dir=str(scratch / "tfds"), config=config)]


@FUZZ
@given(content=_contents, which=st.integers(0, 3))
@example(content=b'{"question": "q", "answer": "no hashes"}', which=0)
@example(content=b'{"problem": ["p"], "answer": 1, "id": 2}', which=1)
@example(content=b"{" * 50_000, which=3)
def test_benchmark_lines(scratch, builders, content, which):
  builder = builders[which]
  path = _write(scratch, content)
  records = _records_or_config_error(lambda: list(builder._generate_examples(path)))
  for key, r in records or ():
    assert set(r) == {"problem", "answer", "id"} and key == r["id"]
    assert all(isinstance(v, str) for v in r.values())


@FUZZ
@given(content=_contents)
@example(content=b'{"problem": "p", "gold": %s, "completions": ["a"]}' % (b"[" * 900 + b"]" * 900))
def test_completions_file(scratch, content):
  rows = _records_or_config_error(evaluate.read_completions_file, _write(scratch, content))
  for r in rows or ():
    assert isinstance(r["completions"], list) and r["completions"]
    assert isinstance(r["gold"], str) and isinstance(r["id"], str)


# ------------------------------------------------------------------------------------ grading
_PIECES = ["\\frac{", "}", "{", "(", ")", "[", "]", "\\boxed{", "\\fbox{", "<answer>",
           "</answer>", "<think>", "</think>", "####", "1", "2", "7", "0.5", "1,000", "x", "^",
           "/", "+", "-", " ", "\n", "$", "\\sqrt{", "\\text{", "\\left(", "\\right)", "\\pi",
           "=", "%", "\\", "e", "and", "\\infty", "i"]
_texts = (st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
          | st.text(max_size=80))
PATHOLOGICAL = {
    "long": "1" * 100_000,
    "long_words": "the answer is " * 8000,
    "frac": "\\frac{" * 5000,
    "parens": "(" * 10_000,
    "braces": "{" * 10_000,
    "boxed_braces": "\\boxed{" + "{" * 10_000,
    "answer_parens": "<answer>" + "(" * 900 + "</answer>",
    "answer_long": "<answer>" + "9" * 100_000 + "</answer>",
    "answer_nested_frac": "<answer>" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "</answer>",
    "tags": "<think>" + "</think><answer></answer>" * 5000 + "x",
    "tags_closed": "<think>" + "</think><answer>1</answer>" * 5000,
    "spaces_numbers": ("1" + " " * 1000) * 100,
}


def _timed(fn, *args, **kwargs):
  t0 = time.perf_counter()
  out = fn(*args, **kwargs)
  elapsed = time.perf_counter() - t0
  assert elapsed < MAX_CALL_S, f"{fn.__name__} took {elapsed:.1f}s"
  return out


def _grade_everything(text: str, gold: str) -> None:
  for mode in grading.GRADE_MODES:
    assert isinstance(_timed(grading.verify, text, gold, mode=mode), bool)
    assert isinstance(_timed(grading.answers_equal, text, gold, mode=mode), bool)
    v = _timed(grading.grade, text, gold, extract=grading.EXTRACT_MODES, mode=mode)
    assert v.extracted is None or isinstance(v.extracted, str)
    assert isinstance(v.correct, bool) and isinstance(v.parsed, bool)
  found = _timed(response.extract_answer, text)
  assert found is None or (isinstance(found, str) and found)
  for require in (True, False):
    r = _timed(response.parse, text, require)
    assert isinstance(r.well_formed, bool)


@settings(FUZZ, max_examples=100)
@given(text=_texts, gold=_texts | st.sampled_from(["1", "1/2", "\\frac{1}{2}", "x^2", "7"]))
def test_grader_never_raises_or_hangs(text, gold):
  _grade_everything(text, gold)


# math-verify's SIGALRM timeout may fire inside hypothesis's gc callback: reported, not raised.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_grader_on_pathological_text(name):
  text = PATHOLOGICAL[name]
  _grade_everything(text, "1/2")
  _grade_everything("1/2", text)  # as the gold, too (a malformed benchmark record)


# The response format's regexes, which `response.parse` replaced with linear scans: the same groups.
_WITH_ANSWER = re.compile(r"\s*<think>(.*?)</think>(.*?)<answer>(.*?)</answer>\s*", re.DOTALL)
_NO_ANSWER = re.compile(r"\s*<think>(.*?)</think>(.*)", re.DOTALL)
_tagged = st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "a", " ",
                                    "\n", "<", "think>", "\u3000"]), max_size=14).map("".join)


@settings(FUZZ, max_examples=300)
@given(text=_tagged)
@example(text="<think>a</think>b<answer>c</answer><answer>d</answer> ")
@example(text=" <think></think></answer><answer></answer>")
def test_response_split_equals_the_regex(text):
  for pattern, with_answer in ((_WITH_ANSWER, True), (_NO_ANSWER, False)):
    m = pattern.fullmatch(text)
    assert response._split(text, with_answer) == (m.groups() if m else None), pattern.pattern
