"""Grading: answer extraction, math-verify equivalence, exact match, timeouts."""
import threading
import time

import pytest

from r1jax import grading

B = ("boxed",)
TAG = ("answer_tag",)
ALL = ("answer_tag", "boxed", "hash", "last_number")
BIG = "12345678901234567890123"

# (completion, gold, extract modes, grade mode, expected correct)
CASES = [
    # equivalent forms
    (r"\boxed{0.5}", "1/2", B, "math", True),
    (r"\boxed{1/2}", r"\frac{1}{2}", B, "math", True),
    (r"\boxed{\frac12}", "0.5", B, "math", True),
    (r"\boxed{\dfrac{1}{2}}", "0.5", B, "math", True),
    (r"\boxed{-\frac{1}{2}}", "-0.5", B, "math", True),
    (r"\boxed{1.5}", r"\frac{3}{2}", B, "math", True),
    (r"\boxed{27}", "27.0", B, "math", True),  # AMC golds are floats
    (r"\boxed{27.0}", "27", B, "math", True),
    (r"\boxed{25}", "025", B, "math", True),  # AIME golds keep leading zeros
    (r"\boxed{1,000}", "1000", B, "math", True),
    (r"\boxed{1{,}000}", "1000", B, "math", True),
    (r"\boxed{1,000,000}", "1000000", B, "math", True),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", B, "math", True),
    (r"\boxed{3\sqrt{3}}", r"\sqrt{27}", B, "math", True),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", B, "math", True),
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}", B, "math", True),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", B, "math", True),
    (r"\boxed{x = 5}", "5", B, "math", True),
    (r"\boxed{\infty}", r"\infty", B, "math", True),
    # percent, units, currency
    (r"\boxed{50\%}", "50", B, "math", True),
    (r"\boxed{50\%}", "0.5", B, "math", True),
    (r"\boxed{18 \text{ dollars}}", "18", B, "math", True),
    (r"\boxed{5 \text{ cm}}", "5", B, "math", True),
    (r"\boxed{\$18}", "18", B, "math", True),
    ("<answer>The answer is 18 dollars.</answer>", "18", TAG, "math", True),
    ("<answer>$18.00</answer>", "18", TAG, "math", True),
    (r"<answer>\$1,000</answer>", "1000", TAG, "math", True),
    (r"<answer>The final answer is \boxed{42}.</answer>", "42", TAG, "math", True),
    # non-equivalent forms
    (r"\boxed{3}", "-3", B, "math", False),
    (r"\boxed{0.5}", "50", B, "math", False),
    (r"\boxed{\sqrt{2}}", "2", B, "math", False),
    (r"\boxed{0.33}", "1/3", B, "math", False),
    (r"\boxed{3.14}", r"\pi", B, "math", False),
    (r"\boxed{x+1}", "x+2", B, "math", False),
    (r"\boxed{7}", "7.5", B, "math", False),
    # huge numbers: compared exactly, not in floating point
    (rf"\boxed{{{BIG}}}", BIG, B, "math", True),
    (rf"\boxed{{{BIG}}}", BIG[:-1] + "4", B, "math", False),
    (r"\boxed{2^{64}}", "18446744073709551616", B, "math", True),
    (r"\boxed{10^{100}}", "1" + "0" * 100, B, "math", True),
    (r"\boxed{10^{100}}", "1" + "0" * 99 + "1", B, "math", False),
    # several answers: the last one counts
    (r"first \boxed{3}, then \boxed{4}", "4", B, "math", True),
    (r"first \boxed{3}, then \boxed{4}", "3", B, "math", False),
    ("<answer>3</answer> no, <answer>4</answer>", "4", TAG, "math", True),
    ("<answer>3</answer> no, <answer>4</answer>", "3", TAG, "math", False),
    # nested braces in \boxed
    (r"\boxed{\frac{1}{\sqrt{4}}}", "1/2", B, "math", True),
    (r"\boxed{\boxed{7}}", "7", B, "math", True),
    # malformed LaTeX, empty, garbage, truncated: wrong, never an exception
    (r"\boxed{\frac{1}{}}", "1", B, "math", False),
    (r"\boxed{\sqrt{}}", "0", B, "math", False),
    (r"\boxed{)(}", "0", B, "math", False),
    (r"\boxed{}", "1", B, "math", False),
    ("", "1", ALL, "math", False),
    (None, "1", ALL, "math", False),
    ("<answer>   </answer>", "1", TAG, "math", False),
    ("\x00\xff garbage }}}{{{", "1", ALL, "math", False),
    ("<think>so it is 4 <answer>4", "4", TAG, "math", False),  # cut off inside the answer
    (r"so the answer is \boxed{\frac{1}{2}", "1/2", B, "math", False),  # cut off inside the box
    # last number and GSM8K's '####'
    ("16-3-4=9 eggs; 9*2=18 dollars", "18", ("last_number",), "math", True),
    ("She has 1,234 apples", "1234", ("last_number",), "math", True),
    ("answer: 1/4 of the pie", "0.25", ("last_number",), "math", True),
    ("it fell to -5 degrees", "-5", ("last_number",), "math", True),
    ("x-5", "-5", ("last_number",), "math", False),  # a binary minus is no sign
    ("work...\n#### 1,000", "1000", ("hash",), "math", True),
    # exact match (the toy world)
    ("<answer> 8 </answer>", "8", TAG, "exact", True),
    ("<answer>08</answer>", "8", TAG, "exact", False),
    ("<answer>8.0</answer>", "8", TAG, "exact", False),
]


@pytest.mark.parametrize("completion,gold,extract,mode,expected", CASES)
def test_grade_table(completion, gold, extract, mode, expected):
  verdict = grading.grade(completion, gold, extract=extract, mode=mode)
  assert verdict.correct is expected, verdict
  if expected:
    assert verdict.parsed


def test_table_size():
  assert len(CASES) >= 40


@pytest.mark.parametrize("completion,extract,extracted,parsed", [
    (r"\boxed{\frac{1}{}}", ALL, r"\frac{1}{}", False),  # found but unreadable
    ("<think>x</think> <answer>4", TAG, None, False),
    ("<think>x</think> <answer>4", ALL, "4", True),  # the last-number fallback finds it
    (r"\boxed{abc def}", ALL, "abc def", False),
    (r"\boxed{\frac{1}{2}}", ALL, r"\frac{1}{2}", True),
])
def test_verdict_fields(completion, extract, extracted, parsed):
  v = grading.grade(completion, "1", extract=extract)
  assert (v.extracted, v.parsed, v.correct) == (extracted, parsed, False)


def test_extract_modes_in_order():
  text = r"we get \boxed{3} <answer>5</answer> and finally 7"
  assert grading.extract_answer(text, ("answer_tag", "boxed")) == "5"
  assert grading.extract_answer(text, ("boxed", "answer_tag")) == "3"
  assert grading.extract_answer(text, "last_number") == "7"
  assert grading.extract_answer("no answer here", ALL) is None
  with pytest.raises(ValueError, match="unknown extract mode"):
    grading.extract_answer(text, ("boxd",))
  with pytest.raises(ValueError, match="unknown grade mode"):
    grading.grade(text, "5", mode="fuzzy")


def test_answers_equal():
  assert grading.answers_equal("0.5", r"\frac{1}{2}")
  assert grading.answers_equal("1,000", "1000")
  assert not grading.answers_equal("3", "4")
  assert not grading.answers_equal(r"\frac{1}{}", r"\frac{1}{}")  # unreadable equals nothing
  assert not grading.answers_equal(None, "1")
  assert grading.answers_equal(" 8", "8 ", mode="exact")
  assert not grading.answers_equal("8.0", "8", mode="exact")


def test_verify_is_the_rl_check():
  assert grading.verify("0.5", "1/2")
  assert not grading.verify(None, "1/2")
  assert not grading.verify("", "1/2")
  assert grading.verify("8", "8", mode="exact")


def test_verify_from_a_thread_uses_the_worker():
  out = {}

  def check():  # math-verify's SIGALRM timeout cannot run here, the shared worker does
    out["yes"] = grading.verify(r"\frac{1}{2}", "0.5")
    out["no"] = grading.verify("0.6", "0.5")

  t = threading.Thread(target=check)
  t.start()
  t.join(120)
  assert out == {"yes": True, "no": False}


def test_worker_kills_a_pathological_expression():
  # sympy would spend SOFT_TIMEOUT_S (5 s) on this tower; the worker's hard deadline is 1 s.
  with grading.GradingWorker(timeout_s=1.0) as worker:
    assert worker.grade(r"\boxed{2}", "2", extract=B) == grading.Verdict("2", True, True)
    t0 = time.perf_counter()
    v = worker.grade(r"\boxed{9^{9^{9^{9}}}}", "5", extract=B)
    assert time.perf_counter() - t0 < 4.0
    assert v == grading.Verdict("9^{9^{9^{9}}}", False, False)
    assert worker.num_timeouts == 1
    # the next call gets a fresh child
    assert worker.grade(r"\boxed{1/2}", "0.5", extract=B).correct
    assert worker.answers_equal("0.5", "1/2")
    with pytest.raises(ValueError, match="unknown grade mode"):
      worker.verify("1", "1", mode="fuzzy")
