"""Rule rewards: format table, answer extraction, language consistency, overlong, containment."""
import ml_collections
import numpy as np
import pytest

from r1jax.rl import rewards as rw

FORMAT_CASES = [
    ("<think>2+3=5</think><answer>5</answer>", 1.0),  # good
    ("  \n<think>\nstep 1\nstep 2\n</think>\n<answer> 5 </answer>\n", 1.0),  # whitespace around
    ("<think></think><answer>5</answer>", 1.0),  # empty CoT is still the format
    ("<think>x</think> <answer>5</answer>", 1.0),  # the R1-Zero template's space between blocks
    ("<think>x</think>", 0.0),  # missing answer
    ("<answer>5</answer>", 0.0),  # missing think
    ("think>x</think><answer>5</answer>", 0.0),  # broken opening tag
    ("<think>x<answer>5</answer>", 0.0),  # missing </think>
    ("<answer>5</answer><think>x</think>", 0.0),  # wrong order
    ("<think>a<think>b</think></think><answer>5</answer>", 0.0),  # nested think
    ("<think>x</think><answer>5<answer>6</answer></answer>", 0.0),  # nested answer
    ("<think>x</think><answer>5</answer><answer>6</answer>", 0.0),  # two answers
    ("<think>x</think><answer>5</answer> so the answer is 5", 0.0),  # text after </answer>
    ("The answer: <think>x</think><answer>5</answer>", 0.0),  # text before <think>
    ("<think>x</think>then<answer>5</answer>", 1.0),  # a summary between blocks (R1's format)
    ("<think>x</think>So it is 5.\n<answer>5</answer>", 1.0),  # the cold-start shape
    ("<think>x</think>a </think> b<answer>5</answer>", 0.0),  # a tag inside the summary
    ("<think>x</think><answer>  </answer>", 0.0),  # empty answer
    ("", 0.0),  # empty completion
]


@pytest.mark.parametrize("completion,want", FORMAT_CASES)
def test_format_table(completion, want):
  assert rw.format_reward(["q"], [completion], ["5"]) == [want]


def test_format_prefilled_think():
  fn = rw.make_format_reward(prefilled="<think>")
  assert fn(["q"] * 2, ["x</think><answer>5</answer>", "<think>x</think><answer>5</answer>"],
            ["5"] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("completion,want", [
    ("<think>x</think><answer> 42 </answer>", "42"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),  # the last one
    ("<answer>1</answer><answer>2", None),  # the last answer is unterminated: no final answer
    ("<answer>a<answer>b</answer>", "b"),
    ("no tags", None),
    ("</answer> <answer>", None),
    ("", None),
])
def test_extract_answer(completion, want):
  assert rw.extract_answer(completion) == want


def test_accuracy_reward():
  fn = rw.accuracy_reward()
  got = fn(["q"] * 4, ["<think>x</think><answer>5</answer>", "<answer> 5\n</answer>",
                       "<answer>6</answer>", "5"], ["5", " 5 ", "5", "5"])
  assert got == [1.0, 1.0, 0.0, 0.0]
  calls = []
  custom = rw.accuracy_reward(lambda pred, gold: calls.append((pred, gold)) or pred == "x")
  assert custom(["q"], ["<answer>x</answer>"], ["y"]) == [1.0]
  assert calls == [("x", "y")]
  with pytest.raises(ValueError, match="unknown verifier"):
    rw.accuracy_reward("math_verify_missing")


def test_language_consistency_numbers():
  fn = rw.language_consistency_reward()
  # Numbers and arithmetic ("3", "7.", "5+7=2") are neutral: in neither count.
  completions = [
      "<think>3 plus 4 is 7.</think><answer>7</answer>",  # plus, is -> 2/2
      "<think>3 加 4 is 7</think><answer>7</answer>",  # 加, is -> 1/2
      "<think>三加四等于7</think><answer>7</answer>",  # 5 CJK words -> 0/5
      "<think>add 三加 four</think><answer>7</answer>",  # add, 三, 加, four -> 2/4
      "<think>café au lait</think>",  # é is not ASCII: 2/3
      "<think>0*1=0 5+7=二</think><answer>2</answer>",  # the toy world's mixed trace: 二 -> 0/1
      "<think>0*1=0 5+7=2</think><answer>2</answer>",  # a numeric trace: no words -> 1
      "<think>   </think><answer>7</answer>",  # empty CoT: no words -> 1 (thinking earns nothing)
      "<answer>7</answer>",  # no CoT -> 1
      "<think>unterminated",  # no complete CoT -> 1
  ]
  got = fn(["q"] * len(completions), completions, ["7"] * len(completions))
  np.testing.assert_allclose(got, [1.0, 0.5, 0.0, 0.5, 2 / 3, 0.0, 1.0, 1.0, 1.0, 1.0],
                             rtol=1e-12)
  # The target language comes from the prompt record; the default from the factory.
  records = [{"language": "zh"}, {"language": "zh"}, {}]
  got = fn(["q"] * 3, [completions[2], completions[1], completions[2]], ["7"] * 3,
           records=records)
  np.testing.assert_allclose(got, [1.0, 0.5, 0.0], rtol=1e-12)
  zh = rw.language_consistency_reward(default_language="zh")
  np.testing.assert_allclose(zh(["q"], [completions[2]], ["7"]), [1.0], rtol=1e-12)
  with pytest.raises(ValueError, match="unknown target language"):
    rw.language_consistency_reward(default_language="klingon")


def test_soft_overlong_boundaries():
  # max_len 20, cache 4: start 16. L=16 -> 0; 17 -> -1/4; 18 -> -2/4; 20 -> -1; 21 -> -1.
  got = rw.soft_overlong_punishment([0, 15, 16, 17, 18, 19, 20, 21, 100], 20, 4)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, [0, 0, 0, -0.25, -0.5, -0.75, -1, -1, -1], rtol=0, atol=1e-7)
  # DAPO's numbers: Lmax 20480, Lc 4096.
  np.testing.assert_allclose(rw.soft_overlong_punishment([16384, 18432, 20480, 20481], 20480, 4096),
                             [0.0, -0.5, -1.0, -1.0], atol=1e-7)
  with pytest.raises(ValueError):
    rw.soft_overlong_punishment([1], 4, 8)


def test_overlong_reward_uses_token_lengths():
  fn = rw.overlong_reward(max_len=20, cache_len=4)
  # Character length would be huge; the reward must use the token counts in extras.
  got = fn(["q"] * 2, ["x" * 500, "y"], ["a"] * 2, completion_lengths=[17, 30])
  np.testing.assert_allclose(got, [-0.25, -1.0], atol=1e-7)
  with pytest.raises(KeyError):
    fn(["q"], ["x"], ["a"])


def _boom(prompts, completions, answers, **extras):
  raise RuntimeError("verifier crashed")


def _fails_on_bad(prompts, completions, answers, **extras):
  if any("bad" in c for c in completions):
    raise ValueError("cannot parse")
  return [float(len(c)) for c in completions]


def test_failure_containment():
  named = {
      "format": (rw.format_reward, 1.0),
      "boom": (_boom, 2.0),
      "picky": (_fails_on_bad, 0.5),
      "nan": (lambda p, c, a, **e: [float("nan"), 1.0, 1.0], 1.0),
      "short": (lambda p, c, a, **e: [1.0], 1.0),  # wrong length on the batch, right per sample
  }
  completions = ["<think>x</think><answer>5</answer>", "bad", "ok"]
  total, per, failures = rw.combine_rewards(named, ["q"] * 3, completions, ["5"] * 3)
  assert total.dtype == np.float32 and total.shape == (3,)
  assert failures == {"format": 0, "boom": 3, "picky": 1, "nan": 1, "short": 0}
  np.testing.assert_array_equal(per["format"], [1, 0, 0])
  np.testing.assert_array_equal(per["boom"], [0, 0, 0])
  np.testing.assert_array_equal(per["picky"], [34, 0, 2])
  np.testing.assert_array_equal(per["nan"], [0, 1, 1])
  np.testing.assert_array_equal(per["short"], [1, 1, 1])
  np.testing.assert_allclose(total, [1 + 0.5 * 34 + 0 + 1, 0 + 0 + 1 + 1, 0.5 * 2 + 1 + 1],
                             rtol=1e-7)


def test_per_sample_retry_slices_extras():
  seen = []

  def needs_lengths(prompts, completions, answers, completion_lengths, step):
    seen.append((list(completion_lengths), step))
    if len(completions) > 1:
      raise RuntimeError("batch path broken")
    return [float(completion_lengths[0])]

  total, _, failures = rw.combine_rewards({"len": (needs_lengths, 1.0)}, ["q"] * 2, ["a", "b"],
                                          ["x", "y"], completion_lengths=np.array([3, 9]), step=7)
  np.testing.assert_array_equal(total, [3.0, 9.0])
  assert failures == {"len": 0}
  assert seen[1:] == [([3], 7), ([9], 7)]


def test_build_reward_set_from_config():
  cfg = ml_collections.ConfigDict({
      "accuracy": 1.0,
      "format": 0.5,
      "overlong": {"weight": 1.0, "max_len": 20, "cache_len": 4},
  })
  reward_set = rw.build_reward_set(cfg)
  assert reward_set.weights == {"accuracy": 1.0, "format": 0.5, "overlong": 1.0}
  total, per, failures = reward_set(["q"] * 2, ["<think>x</think><answer>5</answer>",
                                                "<answer>5</answer>"], ["5", "6"],
                                    completion_lengths=[18, 3])
  np.testing.assert_allclose(total, [1.0 + 0.5 - 0.5, 0.0], atol=1e-7)
  assert set(per) == {"accuracy", "format", "overlong"} and sum(failures.values()) == 0
  with pytest.raises(ValueError, match="unknown reward"):
    rw.build_reward_set({"helpfulness": 1.0})
  with pytest.raises(ValueError, match="weight"):
    rw.build_reward_set({"overlong": {"max_len": 20, "cache_len": 4}})
  custom = rw.build_reward_set({"len": 2.0}, registry={"len": lambda: _fails_on_bad})
  np.testing.assert_array_equal(custom(["q"], ["abc"], ["x"])[0], [6.0])


def _spy(tag, calls):
  def fn(prompts, completions, answers, records=None, **extras):
    calls.append((tag, [r["id"] for r in records]))
    return [1.0] * len(completions)
  return fn


def test_router_sends_each_task_to_its_own_rewards():
  calls = []
  router = rw.build_router(
      {"reasoning": {"accuracy": 1.0}, "general": {"rm": 2.0}},
      registry={"accuracy": lambda: _spy("accuracy", calls), "rm": lambda: _spy("rm", calls)})
  records = [{"id": "a", "task": "reasoning"}, {"id": "b", "task": "general"}, {"id": "c"},
             {"id": "d", "task": "general"}]
  total, parts, failures = router(["q"] * 4, ["x"] * 4, ["1", "", "1", ""], records=records)
  # A general prompt never gets the accuracy reward; a reasoning prompt never gets the RM.
  assert sorted(calls) == [("accuracy", ["a", "c"]), ("rm", ["b", "d"])]
  np.testing.assert_array_equal(total, [1.0, 2.0, 1.0, 2.0])
  np.testing.assert_array_equal(np.isnan(parts["accuracy"]), [False, True, False, True])
  np.testing.assert_array_equal(np.isnan(parts["rm"]), [True, False, True, False])
  assert failures == {"accuracy": 0, "rm": 0}


def test_router_fails_early_on_a_task_without_a_route():
  router = rw.build_router({"reasoning": {"format": 1.0}})
  with pytest.raises(ValueError, match=r"record 'p7' has task 'code'.*routes: \['reasoning'\]"):
    router.check_records([{"id": "p1"}, {"id": "p7", "task": "code"}])
  with pytest.raises(ValueError, match="no reward route"):
    router(["q"], ["x"], ["1"], records=[{"id": "z", "task": "general"}])


def _sleepy(hang_on: str = "hang"):
  """A reward that never returns on completions equal to `hang_on` (scores 1 otherwise)."""
  import time

  def fn(prompts, completions, answers, **extras):
    if hang_on in completions:
      time.sleep(3600)
    return [1.0] * len(completions)
  return lambda: fn


def test_hung_reward_times_out_per_call_and_costs_only_its_samples():
  import time
  rs = rw.build_reward_set({"slow": {"weight": 1.0, "timeout_s": 0.3}}, {"slow": _sleepy()})
  t = time.perf_counter()
  total, parts, failures = rs(["q"] * 3, ["ok", "hang", "fine"], ["", "", ""])
  # one batch call and three per-sample retries, each cut at 0.3 s: the run is never stalled
  assert time.perf_counter() - t < 3.0
  np.testing.assert_array_equal(total, [1.0, 0.0, 1.0])
  assert failures == {"slow": 1}


def test_reward_timeout_zero_means_none_and_errors_pass_through():
  boom = rw.with_timeout(lambda *a, **k: 1 / 0, 5.0, "boom")
  with pytest.raises(ZeroDivisionError):
    boom([], [], [])
  plain = lambda *a, **k: [2.0]  # noqa: E731
  assert rw.with_timeout(plain, 0, "plain") is plain
  assert rw.build_reward_set({"format": 1.0}).named_fns["format"][0] is not rw.format_reward
