"""The R1 response format and the one answer extractor, shared by reward, grader and toy world."""
import pytest

from r1jax import grading, response
from r1jax.data import toy_world
from r1jax.rl import rewards as rw

# (completion, the extracted answer): one table for every consumer of the answer tag.
EXTRACT_CASES = [
    ("<think>x</think><answer> 42 </answer>", "42"),
    ("<think>x</think>So it is 8.<answer>8</answer>", "8"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),
    ("<answer>7</answer><answer>2", None),  # cut off while answering again: no final answer
    ("<answer>7</answer><answer>2</answer>", "2"),
    ("<answer>a<answer>b</answer>", "b"),
    ("<answer>   </answer>", None),
    ("no tags 5", None),
    ("</answer> <answer>", None),
    ("", None),
]


@pytest.mark.parametrize("completion,want", EXTRACT_CASES)
def test_one_extractor_for_reward_grader_and_toy_world(completion, want):
  assert response.extract_answer(completion) == want
  assert rw.extract_answer(completion) == want
  assert grading.extract_answer(completion, "answer_tag") == want
  gold = want if want is not None else "5"
  right = want is not None
  assert rw.accuracy_reward()(["q"], [completion], [gold]) == [float(right)]
  assert grading.grade(completion, gold, extract="answer_tag", mode="exact").correct == right
  assert toy_world.is_correct(completion, gold) == right


@pytest.mark.parametrize("text,well_formed,readable", [
    ("<think>a b</think>Summary.<answer>5</answer>", True, True),
    ("<think>a b</think><answer>5</answer>", True, False),  # R1-Zero: no summary
    ("<think></think>Summary.<answer>5</answer>", True, False),  # no reasoning
    ("<think>a</think>Sum<answer>5</answer> more", False, False),
    ("Summary first <think>a</think><answer>5</answer>", False, False),
])
def test_readable_format(text, well_formed, readable):
  assert response.is_well_formed(text) == well_formed
  assert response.is_readable(text) == readable


def test_parts_of_a_response():
  r = response.parse("<think> step one </think> So 8. <answer> 8 </answer>")
  assert (r.cot, r.summary, r.answer, r.well_formed) == (" step one ", "So 8.", "8", True)
  assert response.summary_text("<think>hidden</think>Reply <answer>8</answer>") == "Reply  8"
  assert response.summary_text("no think block") == "no think block"
  general = response.parse("<think></think>olleh", require_answer=False)
  assert general.well_formed and general.summary == "olleh" and general.answer is None
  assert not response.is_well_formed("<think></think>olleh")  # a reasoning task needs an answer
  assert not response.is_well_formed("<think></think>  ", require_answer=False)


def test_toy_cold_start_sample_is_readable_and_scores_on_format():
  """The cold-start data, the format reward and the extractor agree on the R1 format."""
  for rec in toy_world.cold_start(toy_world.ToyWorldConfig(cold_start_size=20)):
    text = rec["completion"]
    assert rw.format_reward(["q"], [text], [rec["answer"]]) == [1.0], text
    assert response.is_readable(text), text
    assert toy_world.is_correct(text, rec["answer"])
    share = rw.language_consistency_reward()(["q"], [text], [rec["answer"]])[0]
    assert share == (1.0 if text.isascii() else 5 / 7)  # mixed: 5 English words, 2 x 再


def test_toy_general_world():
  cfg = toy_world.ToyWorldConfig()
  train, test = toy_world.general_prompts(cfg, "rl"), toy_world.general_prompts(cfg, "test")
  assert not {r["problem"] for r in train} & {r["problem"] for r in test}
  assert {r["task"] for r in train + test} == {"general"}
  harmful = next(r for r in test if toy_world.INSTRUCTIONS[r["problem"]][0] == "harmful")
  kind, good, bad = toy_world.INSTRUCTIONS[harmful["problem"]]
  assert toy_world.judge_general(harmful["problem"], good) == {"obeys": True, "harmless": True}
  assert toy_world.judge_general(harmful["problem"], bad) == {"obeys": False, "harmless": False}
  benign = next(r for r in test if toy_world.INSTRUCTIONS[r["problem"]][0] != "harmful")
  assert toy_world.judge_general(benign["problem"], "nonsense")["harmless"]
  sft = toy_world.general_sft(cfg)
  assert len(sft) == cfg.general_sft_size
  assert all(response.is_well_formed(s["completion"], require_answer=False) for s in sft)
  assert {s["problem"] for s in sft} == {r["problem"] for r in train}  # round robin: all covered
  obeys = [toy_world.judge_general(s["problem"], s["completion"])["obeys"] for s in sft]
  assert abs(sum(obeys) / len(obeys) - cfg.general_sft_accuracy) < 0.04  # sd 0.012 at n=1200
  prefs = toy_world.preferences(toy_world.ToyWorldConfig(preference_size=200))
  assert {p["problem"] for p in prefs} <= {r["problem"] for r in train}
