"""The reflect world: its traces, re-checks and corrections, the reflection metrics, the plumbing
that picks it by config (leaving the default world alone), and its smoke run end to end."""
import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from configs import common
from r1jax import reflection
from r1jax.data import prompts, toy_tfds
from r1jax.data import reflect_world as rw
from r1jax.data import toy_world as tw
from r1jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = rw.ReflectWorldConfig(corpus_size=6000, rl_size=500, test_size=100, cold_start_size=20,
                              preference_size=20, general_sft_size=20)


def test_default_world_is_untouched():
  """The default world keeps its module and its prepared-data key (no variant field in it)."""
  world = tw.ToyWorldConfig()
  assert tw.world_module(world) is tw
  key = {"world": dataclasses.asdict(world), "format": tw.FORMAT_VERSION}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
  assert toy_tfds.config_name(world) == f"seed0-{digest}"
  assert prompts.toy_world_config({"toy": {}}) == world


def test_reflect_world_is_picked_by_config_and_keyed_apart():
  world = prompts.toy_world_config({"toy": {"world": "reflect", "corpus_size": 10}})
  assert isinstance(world, rw.ReflectWorldConfig) and world.corpus_size == 10
  assert tw.world_module(world) is rw
  same_fields = tw.ToyWorldConfig(**{f.name: getattr(world, f.name)
                                     for f in dataclasses.fields(tw.ToyWorldConfig)})
  assert toy_tfds.config_name(world) != toy_tfds.config_name(same_fields)
  with pytest.raises(ValueError, match="unknown toy world"):
    prompts.toy_world_config({"toy": {"world": "mirror"}})
  with pytest.raises(ValueError, match="fuse"):
    rw.ReflectWorldConfig(fuse=1)


def test_recheck_and_clean_traces():
  world = rw.ReflectWorldConfig()
  assert rw.recheck("6*3*1*9") == "wait Solve 6*3*1*9. 6*3=8 8*1=8 8*9=2"
  assert rw.clean_trace("6*3*1*9", world) == "6*3*1~8 8*9=2"
  assert rw.clean_trace("6*3*1*9", world, checks=True) == (
      "6*3*1~8 8*9=2 wait Solve 6*3*1*9. 6*3=8 8*1=8 8*9=2")
  wide = dataclasses.replace(world, min_operands=6, max_operands=6)
  assert rw.clean_trace("3*4+5*6+1", wide) == "3*4+5~7 7*6+1~3"
  with pytest.raises(ValueError):
    rw.ReflectWorldConfig(mul_digits="")


def _exact(step: str) -> bool:
  a, op, b, r = int(step[0]), step[1], int(step[2]), int(step[4])
  return step[3] == "=" and r == tw.apply(a, op, b)


def test_writer_slips_carry_and_the_recheck_fixes_them():
  """Each step starts from the last result written; a slip carries into the answer (every
  operation permutes the digits) unless the trace ends with a re-check, which is always right,
  gives the answer and is an aha exactly when some fast step slipped."""
  rng = random.Random(0)
  world = dataclasses.replace(SMALL, min_operands=4, max_operands=7, fast_error=0.4,
                              check_share=0.5)
  counts = {"fixed": 0, "slipped": 0, "right": 0}
  for _ in range(400):
    problem = rw.random_problem(rng, world, test=False)
    trace, answer = rw.write_trace(rng, world, problem)
    fast, _, check = trace.partition(f" {rw.WAIT} ")
    words, acc = fast.split(), problem[0]
    for w in words:
      assert w[0] == acc and (w[-2] == rw.FAST or _exact(w)), trace
      acc = w[-1]
    slipped = [w for w in words if w[-2] == rw.FAST and int(w[-1]) != rw._value(w[:-2])]
    if check:
      assert check == f"Solve {problem}. {tw.trace(problem)}", trace
      assert answer == tw.solve(problem), trace
      # The re-check redoes each step from the true running value: it corrects the slips
      # made on a right running value (the first slip, at least).
      truth = [str(rw._value(problem[:2 * k + 1])) for k in range(0, len(problem) // 2, 2)]
      on_truth = [w for w, t in zip(words, truth) if w in slipped and w[0] == t]
      assert [c["step"] for c in rw.corrections(f"<think>{trace}</think>")] == on_truth, trace
      assert on_truth[:1] == slipped[:1]
    else:
      assert answer == acc and (slipped or answer == tw.solve(problem)), trace
      assert len(slipped) != 1 or answer != tw.solve(problem), trace  # (two may cancel out)
      assert rw.corrections(f"<think>{trace}</think>") == []
    counts["fixed" if check and slipped else "slipped" if slipped else "right"] += 1
  assert min(counts.values()) > 30, counts


def test_corrections_need_a_wrong_step_and_a_right_recheck():
  fixed = "<think>6*3*1~5 5*9=5 wait Solve 6*3*1*9. 6*3=8 8*1=8 8*9=2</think><answer>2</answer>"
  check = "wait Solve 6*3*1*9. 6*3=8 8*1=8 8*9=2"
  assert rw.corrections(fixed) == [{"step": "6*3*1~5", "check": check}]
  assert rw.corrections("<think>6*3*1~5 wait 6*3=8 8*1=8</think>") != []  # right after it
  assert rw.corrections("<think>6*3*1~8 8*9=2 wait 6*3=8 8*1=8 8*9=2</think>") == []  # right
  assert rw.corrections("<think>6*3*1~5 5*9=5 wait 6*3=8 8*1=3 3*9=7</think>") == []  # wrong
  assert rw.corrections("<think>6*3*1~5 5*9=5 wait 6*3=8</think>") == []  # stops halfway
  assert rw.corrections("<think>6*3*1~5 5*9=5 wait 6*7=2 2*1=2</think>") == []  # other step
  assert rw.corrections("<think>6*3*1~5 5*9=5 6*3=8 8*1=8</think>") == []  # no wait
  assert rw.corrections("<think>6*3*1~5 wait Solve 6*3*1. 6*3=8 8*1=8") != []  # unclosed


def test_corpus_mix_and_splits():
  docs = list(rw.corpus(SMALL))
  kinds = {k: sum(d["kind"] == k for d in docs) / len(docs)
           for k in ("fact", "general", "think", "reflect", "worked_think", "worked_reflect")}
  assert abs(kinds["fact"] - SMALL.fact_share) < 0.03
  # Re-checking is a rare habit in chat answers (check_share) and a common skill in worked
  # solutions (worked_check_share).
  chat_rate = kinds["reflect"] / (kinds["think"] + kinds["reflect"])
  worked_rate = kinds["worked_reflect"] / (kinds["worked_think"] + kinds["worked_reflect"])
  assert abs(chat_rate - SMALL.check_share) < 0.015 and SMALL.check_share <= 0.1
  assert abs(worked_rate - SMALL.worked_check_share) < 0.05 and SMALL.worked_check_share >= 0.3
  chat = [d for d in docs if d["kind"] in ("think", "reflect")]
  right = sum(tw.is_correct(d["completion"], tw.solve(d["prompt"][6:].split("\n")[0]))
              for d in chat) / len(chat)
  assert 0.78 < right < 0.84  # the one fast step slips 20% of the time, unless re-checked
  train = {r["problem"] for r in rw.problems(SMALL, "rl")}
  test = [r["problem"] for r in rw.problems(SMALL, "test")]
  assert not train & set(test) and len(set(test)) == len(test)
  assert all(len(p) == 7 and all(p[i + 1] in SMALL.mul_digits
                                 for i in range(1, 7, 2) if p[i] == "*") for p in test)
  assert docs == list(rw.corpus(SMALL))  # seeded


def test_reflection_stats_and_aha_samples():
  texts = ["<think>1+2*3~9 wait 1+2=3 3*3=9</think><answer>9</answer>",
           "<think>1+2*3~8 wait 1+2=3 3*3=9 wait</think><answer>9</answer>",
           "<think>1+2*3~9</think><answer>9</answer>", "Wait, 7*8 is 6, not 4."]
  s = reflection.stats(texts)
  assert s["reflection_rate"] == 0.75
  assert s["rechecks_per_response"] == 1.0
  assert s["reflection_words/wait"] == 1.0
  records = [{"id": "a", "problem": "1+2*3", "gold": "9", "completions": texts[:2],
              "correct": [True, True]},
             {"id": "b", "problem": "1+2*3", "gold": "8", "completions": texts[1:2],
              "correct": [False]}]  # a correction that does not save the answer: no aha
  metrics, first = reflection.heldout_metrics(records)
  assert metrics["num_aha_samples"] == 1.0
  assert first["completion"] == texts[1] and first["corrections"][0]["step"] == "1+2*3~8"
  assert "aha moment at step 30" in reflection.format_aha(30, first)


def test_curve_summary_by_hand():
  """The figures the issue's criteria read, on four evals computed by hand: gain 0.6 - 0.1 = 0.5;
  the largest rise within 10 steps is 0.35 - 0.1 = 0.25 (steps 0-10) or 0.6 - 0.35 (10-20), a
  share of 0.5; length 20 -> 50 (x2.5) reaches 10% of its change (23) at step 10 and 90% (47)
  at step 20; pass@1 reaches 0.15 at step 10 and 0.55 at step 20."""
  def ev(step, p, length, rate):
    return {"step": step, "eval/pass@1": p, "eval/mean_response_length": length,
            "eval/reflection_rate": rate, "eval/rechecks_per_response": rate}
  records = [ev(0, 0.1, 20, 0.0), {"step": 5, "loss": 1.0}, ev(10, 0.35, 30, 0.2),
             ev(20, 0.6, 50, 0.9), ev(30, 0.6, 50, 1.0)]
  s = reflection.curve_summary(records)
  assert s["pass@1_gain"] == pytest.approx(0.5, abs=1e-12)
  assert s["max_window_share"] == pytest.approx(0.5, abs=1e-12)
  assert s["length_ratio"] == pytest.approx(2.5, abs=1e-12)
  assert (s["pass@1_rise_from"], s["pass@1_rise_to"]) == (10, 20)
  assert (s["length_rise_from"], s["length_rise_to"]) == (10, 20)
  assert (s["reflection_rate_start"], s["reflection_rate_end"]) == (0.0, 1.0)
  flat = reflection.curve_summary([ev(0, 0.5, 20, 0.0), ev(10, 0.4, 20, 0.0)])
  assert flat["pass@1_gain"] == pytest.approx(-0.1) and flat["max_window_share"] != flat[
      "max_window_share"]  # nan: no gain to share
  with pytest.raises(ValueError, match="no held-out evals"):
    reflection.curve_summary([{"step": 1, "loss": 0.0}])


def test_reflect_smoke_from_the_command_line(tmp_path):
  """`grpo_zero.py:world=reflect,smoke` through the real entry point: builds its own reflect base
  (the smoke model on the reflect world's data), trains two steps and logs reflection metrics
  for rollouts and held-out samples; the reflection CLI then reads the run."""
  workdir, base = tmp_path / "grpo", tmp_path / "base"
  cmd = [sys.executable, "-m", "r1jax.main", "--config=configs/grpo_zero.py:world=reflect,smoke",
         f"--workdir={workdir}", f"--config.parents.init.dir={base}",
         f"--config.data.data_dir={tmp_path / 'data'}", "--config.progress=False"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(base / "config.json") as f:
    assert json.load(f)["data"]["toy"]["world"] == "reflect"
  # The reflect base and the RL run prepare the reflect world's own data, under its own key; the
  # default world's appears too when the default smoke base (the reflect base's parent, shared
  # by other tests in workdirs/) had to be built first.
  default, world = (cls(**common.SMOKE_WORLD) for cls in (tw.ToyWorldConfig, rw.ReflectWorldConfig))
  prepared = set(os.listdir(tmp_path / "data" / "r1jax_toy_corpus"))
  assert toy_tfds.config_name(world) in prepared
  assert prepared <= {toy_tfds.config_name(world), toy_tfds.config_name(default)}
  records = read_metrics(str(workdir))
  train = [r for r in records if "loss" in r]
  assert [r["step"] for r in train] == [1, 2]
  for key in ("reflection_rate", "rechecks_per_response", "reflection_words/wait"):
    assert 0.0 <= train[0][key] <= 16.0, key
  evals = [r for r in records if "eval/pass@1" in r]
  assert [r["step"] for r in evals] == [0, 2]
  for key in ("eval/reflection_rate", "eval/rechecks_per_response", "eval/num_aha_samples"):
    assert key in evals[0], key
  proc = subprocess.run([sys.executable, "-m", "r1jax.reflection", f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  if any(r["eval/num_aha_samples"] for r in evals):
    assert "aha moment at step" in proc.stdout
    assert (workdir / reflection.AHA_FILE).exists()
  else:
    assert "no held-out aha" in proc.stdout
