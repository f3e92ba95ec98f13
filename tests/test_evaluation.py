"""Metrics: unbiased pass@k against brute force, pass@1, majority vote, the summary."""
import itertools
import json
import math
import pathlib
import sys
import time
import types
from fractions import Fraction

import numpy as np
import pytest

from configs import eval as eval_config
from r1jax import evaluation, samplers
from r1jax.data import benchmarks
from r1jax.stages import evaluate


def brute_force_pass_at_k(n, c, k):
  """Fraction of all k-subsets of n samples (c correct) holding at least one correct sample."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [
    (1, 0, 1), (1, 1, 1), (4, 2, 2), (5, 1, 3), (6, 0, 3), (6, 6, 2), (7, 3, 1), (8, 3, 4),
    (10, 2, 5), (10, 7, 3), (12, 1, 12), (12, 4, 6),
])
def test_pass_at_k_matches_enumeration(n, c, k):
  assert evaluation.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k),
                                                         rel=0, abs=1e-12)


def test_pass_at_k_hand_values_and_large_n():
  assert evaluation.pass_at_k(4, 2, 2) == pytest.approx(5 / 6, abs=1e-15)  # 1 - C(2,2)/C(4,2)
  assert evaluation.pass_at_k(5, 4, 2) == 1.0  # n - c < k: every pair holds a correct one
  # n = 200: C(200, 100) ~ 9e58; the product form stays exact to float precision.
  exact = 1 - Fraction(math.comb(197, 100), math.comb(200, 100))
  assert evaluation.pass_at_k(200, 3, 100) == pytest.approx(float(exact), rel=0, abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 64])
def test_pass_at_1_is_mean_correctness(n):
  for c in range(n + 1):
    assert evaluation.pass_at_k(n, c, 1) == c / n


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_input(n, c, k):
  with pytest.raises(ValueError):
    evaluation.pass_at_k(n, c, k)


def test_majority_vote_ties_go_to_the_earliest_answer():
  assert evaluation.majority_vote(["3", "4", "4", "3"]) == 0
  assert evaluation.majority_vote(["4", "3", "3", "4"]) == 0
  assert evaluation.majority_vote(["7", "3", "4", "4", "3"]) == 1  # 3 and 4 tie; 3 came first
  assert evaluation.majority_vote(["7", "3", "4", "4"]) == 2  # a clear winner


def test_majority_vote_groups_equal_answers():
  # {1/2, 0.5} and {3} tie at two votes; the group seen first wins.
  assert evaluation.majority_vote(["1/2", "3", "0.5", "3"]) == 0
  assert evaluation.majority_vote(["3", "1/2", r"\frac{1}{2}", "0.5", "3"]) == 1
  # exact grouping keeps 8 and 8.0 apart
  exact = lambda a, b: a.strip() == b.strip()  # noqa: E731
  assert evaluation.majority_vote(["8.0", "8", "8"], equal=exact) == 1


def test_unparsable_never_wins():
  assert evaluation.majority_vote([None, None, None, "5"]) == 3
  assert evaluation.majority_vote([None, "", "  "]) is None
  assert evaluation.majority_vote([]) is None
  records = [{"correct": [False, False, False, True], "extracted": ["x", "x", "x", "5"],
              "parsed": [False, False, False, True], "completions": ["", "", "", ""]}]
  assert evaluation.summarize(records)["cons@4"] == 1.0
  records[0]["parsed"] = [False] * 4
  assert evaluation.summarize(records)["cons@4"] == 0.0


def test_summarize_hand_computed():
  records = [
      {"correct": [True, False, False, True], "extracted": ["5", "4", "4", "5"],
       "parsed": [True] * 4, "num_tokens": [10, 20, 30, 40],
       "truncated": [False, False, True, False]},
      {"correct": [False] * 4, "extracted": ["1", None, "2", "1"],
       "parsed": [True, False, True, True], "num_tokens": [1, 2, 3, 4]},
  ]
  s = evaluation.summarize(records)
  assert s == {
      "pass@1": 0.25,  # (2/4 + 0/4) / 2
      "pass@2": pytest.approx(5 / 12, abs=1e-15),  # (1 - C(2,2)/C(4,2) + 0) / 2
      "pass@4": 0.5,
      "cons@4": 0.5,  # problem 1: 5 and 4 tie, 5 came first and is right; problem 2: 1 is wrong
      "mean_response_length": 13.75,  # 110 tokens / 8 samples
      "response_length_unit": "tokens",
      "num_unparsable": 1,
      "num_truncated": 1,
      "num_problems": 2,
      "num_samples": 8,
      "samples_per_problem": 4,
  }
  assert evaluation.summarize(records, ks=[1, 3])["pass@3"] == pytest.approx(
      (brute_force_pass_at_k(4, 2, 3) + 0.0) / 2, abs=1e-12)


def test_summarize_lengths_in_chars_without_tokens():
  records = [{"correct": [True, False], "extracted": ["1", "2"], "parsed": [True, True],
              "completions": ["abc", "abcdefg"]}]
  s = evaluation.summarize(records)
  assert (s["mean_response_length"], s["response_length_unit"]) == (5.0, "chars")
  assert (s["pass@1"], s["pass@2"], s["cons@2"]) == (0.5, 1.0, 1.0)


def test_summarize_rejects_bad_records():
  with pytest.raises(ValueError):
    evaluation.summarize([])
  with pytest.raises(ValueError, match="expected 2"):
    evaluation.summarize([{"correct": [True, False], "parsed": [True], "extracted": ["1", "2"]}])


def test_default_ks_and_table():
  assert evaluation.default_ks(64) == (1, 2, 4, 8, 16, 32, 64)
  assert evaluation.default_ks(5) == (1, 2, 4, 5)
  assert evaluation.default_ks(1) == (1,)
  table = evaluation.format_table({"pass@1": 0.25, "pass@16": 0.5, "cons@16": 0.375,
                                   "num_problems": 30}, title="aime24")
  lines = table.splitlines()
  assert lines[0] == "aime24"
  assert [ln.split()[0] for ln in lines[1:]] == ["pass@1", "pass@16", "cons@16", "num_problems"]
  assert "37.50%" in lines[3]


# ------------------------------------------------------------------------------ the eval stage
DATA = pathlib.Path(benchmarks.FILES_DIR)  # the benchmark files bundled with the package


def write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def regrade(tmp_path, dataset, rows, **overrides):
  config = eval_config.get_config()
  config.dataset = dataset
  config.completions_file = write_jsonl(tmp_path / f"{dataset}.jsonl", rows)
  for key, value in overrides.items():
    config[key] = value
  summary = evaluate.run(config, str(tmp_path / "wd"))
  out = tmp_path / "wd" / "eval" / (config.name or dataset)
  assert json.loads((out / "summary.json").read_text()) == summary
  return summary, [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extract,timeout", [("", 0.0), ("hash", 0.0), ("last_number", 30.0)])
def test_regrading_gsm8k_gold_solutions_is_perfect(tmp_path, extract, timeout):
  problems = benchmarks.load_benchmark("gsm8k", data_dir=tmp_path / "tfds",
                                       manual_dir=DATA / "gsm8k")
  with open(DATA / "gsm8k" / "test.jsonl") as f:
    solutions = [json.loads(line)["answer"] for line in f]  # worked solutions ending "#### N"
  rows = [{"question": p["problem"], "gold": p["answer"], "id": p["id"], "completions": [s]}
          for p, s in zip(problems, solutions)]
  t0 = time.perf_counter()
  summary, samples = regrade(tmp_path, "gsm8k", rows, extract=extract, grading_timeout_s=timeout)
  seconds = time.perf_counter() - t0
  assert (summary["pass@1"], summary["cons@1"]) == (1.0, 1.0)
  counts = summary["num_problems"], summary["num_samples"], summary["num_unparsable"]
  assert counts == (1319, 1319, 0)
  assert len(samples) == 1319 and samples[5]["completions"] == [solutions[5]]
  assert samples[5]["correct"] == [True] and samples[5]["gold"] == problems[5]["answer"]
  assert seconds < 30, f"grading 1319 answers took {seconds:.1f}s"


@pytest.mark.parametrize("name", ["aime24", "amc23"])
def test_regrading_boxed_gold_is_perfect(tmp_path, name):
  problems = benchmarks.load_benchmark(name, data_dir=tmp_path / "tfds", manual_dir=DATA / name)
  # the gold as given (AIME "025", AMC "27.0") and in its plain integer form (25, 27)
  rows = [{"problem": p["problem"], "gold": p["answer"], "id": p["id"], "completions": [
      f"<think>...</think> The answer is $\\boxed{{{p['answer']}}}$.",
      f"<think>...</think> The answer is $\\boxed{{{int(float(p['answer']))}}}$."]}
      for p in problems]
  summary, samples = regrade(tmp_path, name, rows)
  assert (summary["pass@1"], summary["pass@2"], summary["cons@2"]) == (1.0, 1.0, 1.0)
  assert summary["num_problems"] == len(problems) and summary["num_unparsable"] == 0
  # a wrong answer in the same shape is graded wrong
  wrong = [dict(r, completions=[f"\\boxed{{{int(float(r['gold'])) + 1}}}"]) for r in rows]
  summary, _ = regrade(tmp_path, name, wrong, name=f"{name}_wrong")
  assert summary["pass@1"] == 0.0


def test_regrade_writes_deterministic_outputs(tmp_path):
  rows = [{"problem": "1+1?", "gold": "2", "completions": ["<answer>2</answer>", "<answer>3",
                                                            r"\boxed{2.0}", "garbage"],
           "num_tokens": [5, 4, 6, 2], "truncated": [False, True, False, False]},
          {"question": "half?", "gold": r"\frac{1}{2}", "completions": [
              "<answer>0.5</answer>", "<answer>1/2</answer>", "<answer>3</answer>",
              "<answer>3</answer>"], "num_tokens": [5, 5, 5, 5]}]
  s1, samples = regrade(tmp_path / "a", "math_jsonl", rows, pass_ks="1,2,3")
  s2, _ = regrade(tmp_path / "b", "math_jsonl", rows, pass_ks="1,2,3")
  assert (tmp_path / "a/wd/eval/math_jsonl/summary.json").read_bytes() == (
      tmp_path / "b/wd/eval/math_jsonl/summary.json").read_bytes()
  assert s1["pass@1"] == pytest.approx((2 / 4 + 2 / 4) / 2, abs=1e-15)
  assert s1["pass@3"] == 1.0
  assert s1["pass@2"] == pytest.approx(5 / 6, abs=1e-15)
  assert s1["cons@4"] == 1.0  # problem 1: {2, 2.0} wins; problem 2: {0.5, 1/2} ties {3}, 0.5 first
  assert (s1["num_unparsable"], s1["num_truncated"], s1["mean_response_length"]) == (2, 1, 4.625)
  assert samples[0]["extracted"] == ["2", None, "2.0", None]
  assert samples[0]["correct"] == [True, False, True, False]
  assert samples[1]["prompt"] == "half?" and samples[1]["id"] == "1"
  assert s1["settings"]["extract"] == ["answer_tag", "boxed"]


def test_run_needs_one_source(tmp_path):
  config = eval_config.get_config()
  with pytest.raises(ValueError, match="exactly one"):
    evaluate.run(config, str(tmp_path))
  config.completions_file = write_jsonl(tmp_path / "bad.jsonl",
                                        [{"problem": "p", "completions": []}])
  with pytest.raises(ValueError, match="'gold'"):
    evaluate.run(config, str(tmp_path))


class CharTokenizer:
  """One token per character; 0 pads, 1 ends a completion."""
  pad_id, eos_id = 0, 1

  def encode(self, text):
    return [ord(ch) for ch in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


class FakeSampler:
  """Answers "a+b" prompts with the planned Sampler interface. Row (prompt id, j) draws from its
  own key: right answer, wrong answer, or a completion cut off at max_new_tokens."""

  calls: list = []

  def __init__(self, model, mesh=None):
    del model, mesh

  def __call__(self, params, prompts, *, rng, max_new_tokens, temperature, top_p, top_k, n,
               eos_id, pad_id, prompt_ids):
    import jax
    FakeSampler.calls.append(dict(max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, top_k=top_k, n=n, rows=len(prompts) * n))
    tok = CharTokenizer()
    out = np.full((len(prompts) * n, max_new_tokens), pad_id, np.int32)
    mask = np.zeros(out.shape, bool)
    truncated = np.zeros(len(out), bool)
    for i, (prompt, pid) in enumerate(zip(prompts, prompt_ids)):
      a, b = tok.decode(prompt).split("+")
      for j in range(n):
        key = jax.random.fold_in(jax.random.fold_in(rng, pid), j)
        kind = int(jax.random.randint(key, (), 0, 3))
        text = [f"<answer>{int(a) + int(b)}</answer>", f"<answer>{int(a) * int(b) + 1}</answer>",
                "<answer>" + "x" * max_new_tokens][kind]
        ids = (tok.encode(text) + [eos_id])[:max_new_tokens]
        out[i * n + j, :len(ids)] = ids
        mask[i * n + j, :len(ids)] = True
        truncated[i * n + j] = kind == 2
    return types.SimpleNamespace(completions=out, completion_mask=mask,
                                 logprobs=np.zeros(out.shape, np.float32), truncated=truncated)


@pytest.fixture
def fake_model(monkeypatch):
  loading = types.ModuleType("r1jax.models.loading")
  loading.load_pretrained = lambda path, mesh=None: types.SimpleNamespace(
      model=None, params={}, tokenizer=CharTokenizer(), config=None)
  monkeypatch.setitem(sys.modules, "r1jax.models.loading", loading)
  monkeypatch.setattr(samplers, "make_sampler",  # whichever sampler the config chooses
                      lambda model, mesh=None, rules=None, **kw: FakeSampler(model, mesh))
  problems = [{"problem": f"{a}+{a + 3}", "answer": str(2 * a + 3), "id": f"p{a}"}
              for a in range(7)]
  monkeypatch.setitem(benchmarks.BENCHMARKS, "sums", lambda **kw: problems)
  monkeypatch.setitem(benchmarks.EVAL_DEFAULTS, "sums", benchmarks.EvalDefaults(
      k=4, max_new_tokens=24, extract=("answer_tag",), grade_mode="exact", template="plain"))
  FakeSampler.calls = []
  return problems


def sample_run(tmp_path, seed, batch_size):
  config = eval_config.get_config()
  config.checkpoint, config.dataset = "ckpt", "sums"
  config.seed, config.batch_size = seed, batch_size
  config.data_dir = str(tmp_path / "tfds")
  summary = evaluate.run(config, str(tmp_path))
  out = tmp_path / "eval" / "sums"
  return summary, (out / "summary.json").read_bytes(), [
      json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_sampling_path_is_seeded_and_graded(tmp_path, fake_model):
  summary, raw, samples = sample_run(tmp_path / "a", seed=3, batch_size=3)
  assert FakeSampler.calls[0] == dict(max_new_tokens=24, temperature=0.6, top_p=0.95, top_k=0,
                                      n=4, rows=12)  # the paper's protocol, benchmark defaults
  assert [c["rows"] for c in FakeSampler.calls] == [12, 12, 4]  # 7 problems in batches of 3
  # the same seed gives the same bytes, whatever the batch size; another seed other samples
  assert sample_run(tmp_path / "b", seed=3, batch_size=8)[1] == raw
  assert sample_run(tmp_path / "c", seed=4, batch_size=3)[2] != samples
  # the summary agrees with an independent reading of samples.jsonl
  assert [s["id"] for s in samples] == [p["id"] for p in fake_model]
  right = [[c == f"<answer>{s['gold']}</answer>" for c in s["completions"]] for s in samples]
  assert [s["correct"] for s in samples] == right
  assert summary["pass@1"] == pytest.approx(sum(map(sum, right)) / 28, abs=1e-12)
  assert summary["pass@4"] == pytest.approx(sum(map(any, right)) / 7, abs=1e-12)
  cut = [[c.startswith("<answer>x") for c in s["completions"]] for s in samples]
  assert [s["truncated"] for s in samples] == cut
  assert summary["num_truncated"] == summary["num_unparsable"] == sum(map(sum, cut))
  assert all(n == (24 if t else len(c) + 1)  # the stop token counts
             for s in samples for n, t, c in zip(s["num_tokens"], s["truncated"], s["completions"]))
  assert summary["response_length_unit"] == "tokens"
  assert samples[2]["prompt"] == samples[2]["problem"] == "2+5"
  assert summary["settings"]["seed"] == 3 and summary["settings"]["k"] == 4


def test_config_takes_benchmark_defaults():
  config = eval_config.get_config()
  config.dataset = "aime24"
  s = evaluate.resolve_settings(config)
  assert (s["k"], s["max_new_tokens"], s["temperature"], s["top_p"]) == (64, 32768, 0.6, 0.95)
  assert s["extract"] == ("answer_tag", "boxed")
  assert (s["grade_mode"], s["template"]) == ("math", "r1_zero")
  config.k, config.extract, config.pass_ks = 8, "boxed, last_number", "1,8"
  s = evaluate.resolve_settings(config)
  assert (s["k"], s["extract"], s["pass_ks"]) == (8, ("boxed", "last_number"), (1, 8))
  config.extract = "boxed,lastnumber"
  with pytest.raises(ValueError, match="unknown extract mode"):
    evaluate.resolve_settings(config)
  small = eval_config.get_config("runlocal")
  assert (small.dataset, small.k, small.limit) == ("toy", 2, 16)
  assert evaluate.resolve_settings(small)["grade_mode"] == "exact"
