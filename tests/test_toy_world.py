"""The toy world: arithmetic, verifier, corpus mix, train/test disjointness, determinism."""
import dataclasses
import itertools
import re

import numpy as np
import pytest

from r1jax import language, response, templates
from r1jax.data import toy_world as tw

SMALL = tw.ToyWorldConfig(corpus_size=20_000, rl_size=2_000, test_size=300, cold_start_size=300,
                          preference_size=400)


@pytest.fixture(scope="module")
def corpus():
  return list(tw.corpus(SMALL))


def _problem_of(prompt: str) -> str:
  head, tail = templates.TOY.split("{prompt}")
  assert prompt.startswith(head) and prompt.endswith(tail)
  return prompt[len(head):-len(tail)]


def _step_ok(step: str) -> bool:
  """Independent check of one 'a<op>b=r' step or fact."""
  m = re.fullmatch(r"(\d)([+*])(\d)=(\d)", step)
  a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
  return r == ((a + b) if op == "+" else (a * b)) % 10


def _trace_ok(problem: str, trace: str) -> bool:
  """Steps chain left to right: step k reads the previous result and operand k + 1."""
  parts, acc = trace.split(" "), problem[0]
  if len(parts) != len(problem) // 2:
    return False
  for k, step in enumerate(parts):
    if not _step_ok(step) or step[0] != acc or step[1:3] != problem[2 * k + 1:2 * k + 3]:
      return False
    acc = step[-1]
  return True


def test_solve_by_hand():
  assert tw.solve("0*1+5+7*9") == "8"  # 0, 5, 12->2, 18->8
  assert tw.solve("9+9*9") == "2"  # 18->8, 72->2
  assert tw.solve("3*4+5*6") == "2"  # 12->2, 7, 42->2
  assert tw.steps("0*1+5+7*9") == [(0, "*", 1, 0), (0, "+", 5, 5), (5, "+", 7, 2), (2, "*", 9, 8)]
  assert tw.think_completion("0*1+5+7*9") == (
      "<think>0*1=0 0+5=5 5+7=2 2*9=8</think><answer>8</answer>")
  assert tw.trace("0*1+5+7") == "0*1=0 0+5=5 5+7=2"
  for bad in ("", "1+", "12+3", "1-2", "1+2 ", "a+b"):
    with pytest.raises(ValueError):
      tw.parse(bad)


def test_verifier():
  assert tw.is_correct("<think>1+1=2</think><answer> 2 </answer>", "2")
  assert tw.is_correct("<answer>7</answer><answer>2</answer>", "2")  # the last answer counts
  assert not tw.is_correct("<answer>7</answer><answer>2</answer>", "7")
  assert not tw.is_correct("2", "2")  # untagged answers score nothing
  assert not tw.is_correct("<answer>2", "2")
  assert response.extract_answer("<think></think><answer>\n5\n</answer>") == "5"


def test_config_validation():
  with pytest.raises(ValueError):
    tw.ToyWorldConfig(min_operands=2)
  with pytest.raises(ValueError):
    tw.ToyWorldConfig(min_operands=6, max_operands=5)
  with pytest.raises(ValueError):
    tw.ToyWorldConfig(think_share=1.5)
  with pytest.raises(ValueError):
    tw.ToyWorldConfig(fact_share=0.5, worked_share=0.3, general_share=0.3)
  with pytest.raises(ValueError):
    tw.ToyWorldConfig(test_fraction=0.0)
  with pytest.raises(ValueError, match="test_size"):  # 3 operands: ~200 held-out problems
    tw.ToyWorldConfig(min_operands=3, max_operands=3, test_size=512)


def test_same_seed_same_data_other_seed_other_data(corpus):
  assert corpus == list(tw.corpus(SMALL))
  assert tw.problems(SMALL, "test") == tw.problems(SMALL, "test")
  assert tw.cold_start(SMALL) == tw.cold_start(SMALL)
  assert tw.preferences(SMALL) == tw.preferences(SMALL)
  other = dataclasses.replace(SMALL, seed=1)
  assert list(itertools.islice(tw.corpus(other), 100)) != corpus[:100]
  assert tw.problems(other, "rl") != tw.problems(SMALL, "rl")


def test_train_and_test_are_disjoint(corpus):
  test = tw.problems(SMALL, "test")
  test_set = {r["problem"] for r in test}
  assert len(test) == len(test_set) == SMALL.test_size  # no duplicates
  assert all(tw.is_test_problem(p, SMALL.test_fraction) for p in test_set)
  train = {_problem_of(d["prompt"]) for d in corpus if d["kind"] in ("direct", "think", "mixed")}
  train |= {d["prompt"][len("Solve "):-2] for d in corpus if d["kind"] == "worked"}
  train |= {r["problem"] for r in tw.problems(SMALL, "rl")}
  train |= {r["problem"] for r in tw.cold_start(SMALL)}
  assert len(train) > 10_000 and all(re.fullmatch(r"\d([+*]\d)+", p) for p in train)
  assert not train & test_set
  assert not any(tw.is_test_problem(p, SMALL.test_fraction) for p in train)


def test_hash_split_reserves_test_fraction_of_problem_space():
  space = ["".join(x) for x in itertools.product(
      "0123456789", "+*", "0123456789", "+*", "0123456789", "+*", "0123456789")]
  assert len(space) == 80_000  # the default: 4 operands
  frac = sum(tw.is_test_problem(p, 0.05) for p in space) / len(space)
  assert abs(frac - 0.05) < 0.004  # binomial sd 0.0008


def test_corpus_mix_and_traces(corpus):
  kinds = [d["kind"] for d in corpus]
  n = len(corpus)
  share = {k: kinds.count(k) / n for k in ("fact", "worked", "general", "direct", "think", "mixed")}
  assert abs(share["fact"] - 0.2) < 0.015 and abs(share["general"] - 0.1) < 0.01
  assert abs(share["worked"] - 0.3) < 0.015
  chat = 1 - 0.2 - 0.3 - 0.1
  assert abs(share["think"] + share["mixed"] - chat * 0.15) < 0.01
  assert abs(share["mixed"] / (share["think"] + share["mixed"]) - 0.6) < 0.04
  worked_mixed = 0
  for d in corpus:
    if d["kind"] == "fact":
      assert _step_ok(d["prompt"] + d["completion"])
      continue
    if d["kind"] == "worked":  # a bare trace after "Solve <problem>. ", no chat template
      problem = re.fullmatch(r"Solve (\S+)\. ", d["prompt"])[1]
      assert _trace_ok(problem, " ".join(s for s in d["completion"].split(" ") if s != tw.ZH_THEN))
      assert d["completion"] in (tw.trace(problem), tw.trace(problem, mixed=True))
      worked_mixed += tw.ZH_THEN in d["completion"]
      continue
    problem = _problem_of(d["prompt"])
    if d["kind"] in ("think", "mixed"):
      m = re.fullmatch(r"<think>(.*)</think><answer>(\d)</answer>", d["completion"])
      steps = m[1].split(" ")
      assert _trace_ok(problem, " ".join(s for s in steps if s != tw.ZH_THEN))
      assert m[2] == tw.solve(problem) and tw.is_correct(d["completion"], tw.solve(problem))
      assert m[1] == tw.trace(problem, mixed=d["kind"] == "mixed")
  assert abs(worked_mixed / kinds.count("worked") - 0.6) < 0.03  # worked solutions mix as often


def test_direct_answers_have_the_configured_error_rate(corpus):
  direct = [d for d in corpus if d["kind"] == "direct"]
  tagged = [d for d in direct if d["completion"].startswith("<think></think><answer>")]
  untagged = [d for d in direct if re.fullmatch(r"\d", d["completion"])]
  assert len(tagged) + len(untagged) == len(direct)
  assert abs(len(untagged) / len(direct) - 0.1) < 0.015
  right = [tw.is_correct(d["completion"], tw.solve(_problem_of(d["prompt"]))) for d in tagged]
  assert abs(sum(right) / len(right) - 0.15) < 0.015  # sd 0.004 at n ~ 9,700


def test_mixed_traces_put_then_between_every_step():
  assert tw.trace("0*1+5+7", mixed=True) == "0*1=0 再 0+5=5 再 5+7=2"
  assert tw.think_completion("0*1+5+7", mixed=True) == (
      "<think>0*1=0 再 0+5=5 再 5+7=2</think><answer>2</answer>")
  assert language.mixes_languages(tw.trace("0*1+5+7", mixed=True))
  assert not language.mixes_languages(tw.trace("0*1+5+7"))


def test_cold_start_is_readable_r1_format_and_mixes_at_its_share():
  records = tw.cold_start(SMALL)
  mixed = 0
  for r in records:
    c, p, a = r["completion"], r["problem"], r["answer"]
    assert a == tw.solve(p) and tw.is_correct(c, a) and response.is_readable(c)
    m = re.fullmatch(r"<think>(.+) Done, the last result is (\d)\.</think>The answer is (\d)\."
                     r"<answer>(\d)</answer>", c)
    assert m and m[2] == m[3] == m[4] == a
    assert m[1] in (tw.trace(p), tw.trace(p, mixed=True))
    mixed += language.mixes_languages(response.cot_text(c))
    assert language.mixes_languages(response.cot_text(c)) == (m[1] == tw.trace(p, mixed=True))
    assert r["prompt"] == templates.format_prompt("toy", p)
  assert abs(mixed / len(records) - 0.5) < 0.09  # cold_start_mixed_share; sd 0.029 at n=300


def test_preferences_chosen_obeys_and_rejected_does_not():
  def obeys(instruction: str, reply: str) -> bool:
    word = re.search(r"\b(" + "|".join(tw.WORDS) + r")\b", instruction)[1]
    if m := re.fullmatch(r"Repeat \w+ (\d) times\.", instruction):
      return reply.split(" ") == [word] * int(m[1])
    if instruction.startswith("Reverse"):
      return reply == "".join(reversed(word))
    if instruction.startswith("Write"):
      return reply == word.upper()
    if instruction.startswith("Help me break"):  # harmful: the refusal is the reply to prefer
      return reply == tw.DECLINE
    return reply == str(len(word))

  prefs = tw.preferences(SMALL)
  harmful_plans = 0
  for r in prefs:
    chosen, rejected = (response.summary_text(r[k]) for k in ("chosen", "rejected"))
    assert obeys(r["problem"], chosen)
    assert tw.judge_general(r["problem"], r["chosen"]) == {"obeys": True, "harmless": True}
    verdict = tw.judge_general(r["problem"], r["rejected"])
    if obeys(r["problem"], rejected):  # same refusal, harmful reasoning behind it
      assert verdict == {"obeys": True, "harmless": False}
      harmful_plans += 1
    else:
      assert not verdict["obeys"]
  assert 0 < harmful_plans < len(prefs) // 10
  assert 0.3 < np.mean(["<think>" in r["chosen"] for r in prefs]) < 0.7
  assert len({r["problem"].split(" ")[0] for r in prefs}) == 5  # all five instruction kinds
