"""Rejection sampling (R1 stage 3a): readability filters, selection, the stage end to end."""
import json
import os

import pytest

from configs import rejection_sampling as rs_config
from r1jax import runner, sample_grade
from r1jax.data import prompts as prompt_data, readability, sft_data, toy_tfds
from r1jax.errors import ConfigError
from r1jax.stages import rejection_sampling

RS = {"max_paragraph_words": 200, "require_readable": True}


def r1(cot: str, summary: str = "So it is 4.", answer: str = "4") -> str:
  return f"<think>{cot}</think>{summary}<answer>{answer}</answer>"


# ------------------------------------------------------------------------------------ filters
def test_mixed_language_cot_is_rejected():
  assert readability.mixed_language(r1("3+4=七 7*2=4"), "en")
  assert not readability.mixed_language(r1("3 plus 4 is 7. 7 times 2 is 4."), "en")
  assert not readability.mixed_language("no think block at all", "en")  # no CoT, no words


def test_long_paragraph_is_rejected():
  long = " ".join(["word"] * 300)
  assert readability.long_paragraph(r1(long), 200)
  assert readability.long_paragraph(r1("short", summary=long), 200)  # summaries count too
  half = " ".join(["word"] * 150)
  assert not readability.long_paragraph(r1(f"{half}\n\n{half}"), 200)
  assert not readability.long_paragraph(r1(half, summary=half), 200)  # CoT and summary not joined
  assert readability.long_paragraph(r1(f"{half}\n{half}"), 200)  # one newline is no break


def test_code_block_is_rejected_unless_the_prompt_asks_for_code():
  fenced = r1("Let me compute.\n```python\nprint(3 + 4)\n```\nIt is 7.")
  assert readability.code_block(fenced, "What is 3+4?")
  assert not readability.code_block(fenced, "Write a Python program that adds 3 and 4.")
  assert not readability.code_block(fenced, "Use code to add 3 and 4.")
  indented = r1("Like this:\n    def add(a, b):\n        return a + b\nso 7.")
  assert readability.code_block(indented, "What is 3+4?")
  maths = r1("Steps:\n    3 + 4 = 7\n    7 * 2 = 14\nso 14.")
  assert not readability.code_block(maths, "What is (3+4)*2?")
  assert readability.code_block(fenced, "How do I decode this?")  # "decode" does not ask for code


def test_unreadable_format():
  assert not readability.unreadable_format(r1("3+4=7", summary="So 7."))
  assert readability.unreadable_format("<think>3+4=7</think><answer>7</answer>")  # no summary
  assert readability.unreadable_format("<think></think>So 7.<answer>7</answer>")  # no reasoning
  assert readability.unreadable_format("7")
  assert readability.unreadable_format(r1("3+4=7") + " and more")  # text after the answer


def test_dedupe_keeps_the_first_of_whitespace_equal_texts():
  assert readability.dedupe(["a  b", "c", "a b", " a\nb\t", "c "]) == [0, 1]
  assert readability.dedupe([]) == []


def test_apply_filters_counts_each_sample_under_its_first_filter():
  samples = [
      {"text": r1("3+4=七"), "language": "en", "prompt": "p"},  # mixed: counted there only
      {"text": "<think>3+4=七</think><answer>7</answer>", "language": "en", "prompt": "p"},
      {"text": r1("```\nx\n```"), "language": "en", "prompt": "p"},
      {"text": "<think>3+4=7</think><answer>7</answer>", "language": "en", "prompt": "p"},
      {"text": r1("3+4=7"), "language": "en", "prompt": "p"},
      {"text": r1("3+4=7", "So  it\nis 4."), "language": "en", "prompt": "p"},  # a duplicate
      {"text": r1(" ".join(["w"] * 201)), "language": "en", "prompt": "p"},
  ]
  kept, counts = readability.apply_filters(samples, RS)
  assert kept == [4]
  assert counts == {"mixed_language": 2, "long_paragraph": 1, "code_block": 1,
                    "unreadable_format": 1, "duplicate": 1}
  kept, counts = readability.apply_filters(samples, {**RS, "require_readable": False})
  assert kept == [3, 4] and counts["unreadable_format"] == 0
  kept, _ = readability.apply_filters(samples, {**RS, "max_paragraph_words": 0})
  assert kept == [4, 6]
  assert readability.flags(samples[1], RS) == ["mixed_language", "unreadable_format"]


def test_select_grades_filters_dedupes_and_caps():
  texts = ["wrong", r1("3+4=七", answer="7"), r1("a b"), r1("a \n b"), r1("b"), r1("c")]
  graded = [{"id": "p0", "problem": "3+4", "prompt": "User: 3+4\nAssistant:", "gold": "7",
             "language": "en", "completions": texts, "extracted": ["x"] + ["7"] * 5,
             "correct": [False] + [True] * 5, "num_tokens": [3] * 6, "truncated": [False] * 6}]
  records, lines, counts = rejection_sampling.select(graded, {**RS, "max_per_prompt": 2})
  assert [r["completion"] for r in records] == [r1("a b"), r1("b")]
  assert {r["task"] for r in records} == {"reasoning"}
  assert records[0]["prompt"] == "User: 3+4\nAssistant:" and records[0]["id"] == "p0-s2"
  assert [x["verdict"] for x in lines] == ["incorrect", "mixed_language", "kept", "duplicate",
                                           "kept", "over_cap"]
  assert counts == {"incorrect": 1, "mixed_language": 1, "long_paragraph": 0, "code_block": 0,
                    "unreadable_format": 0, "duplicate": 1, "over_cap": 1}
  records, _, counts = rejection_sampling.select(graded, {**RS, "max_per_prompt": 0})
  assert len(records) == 3 and counts["over_cap"] == 0


# -------------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def dirs(tmp_path_factory, smoke_base):
  """The session's smoke toy base model: the policy to sample."""
  return {"root": tmp_path_factory.mktemp("rs"), "data": smoke_base["data"],
          "base": smoke_base["base"]}


def _rs_config(dirs, **rs):
  cfg = rs_config.get_config("smoke")
  cfg.parents.policy.dir = dirs["base"]
  cfg.parents.policy.config = ""
  cfg.data.data_dir = dirs["data"]
  cfg.progress = False
  cfg.rs.update(rs)
  return cfg


def test_stage_writes_a_data_set_the_sft_stage_reads(dirs, monkeypatch):
  workdir = str(dirs["root"] / "rs")
  cfg = _rs_config(dirs, general_source="toy:general_sft", general_repeat=2)
  result = runner.run_stage(cfg, workdir)
  with open(os.path.join(workdir, "stats.json")) as f:
    stats = json.load(f)
  n, k = cfg.rs.num_samples, cfg.rs.max_per_prompt
  assert stats["prompts"] == cfg.rs.num_prompts
  assert stats["generated"] == stats["prompts"] * n
  assert stats["correct"] + stats["rejected"]["incorrect"] == stats["generated"]
  assert stats["kept_reasoning"] + sum(stats["rejected"].values()) == stats["generated"]
  assert stats["kept_reasoning"] <= k * stats["prompts"]
  world = prompt_data.toy_world_config(cfg.data)
  assert stats["general"] == 2 * len(toy_tfds.load_records("general_sft", dirs["data"], world))
  assert stats["total"] == stats["kept_reasoning"] + stats["general"]
  assert set(stats["rejected"]) == set(rejection_sampling.REJECTIONS)
  assert result["total"] == stats["total"] and result["step"] == 0

  source = sft_data.dataset_source(workdir)
  assert len(source) == stats["total"]
  tasks = [r["task"].decode() for r in source.__getitems__(list(range(len(source))))]
  assert tasks.count("general") == stats["general"]
  assert tasks.count("reasoning") == stats["kept_reasoning"]

  with open(os.path.join(workdir, "samples.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == stats["generated"]
  verdicts = [x["verdict"] for x in lines]
  assert verdicts.count("kept") == stats["kept_reasoning"]
  for reason, count in stats["rejected"].items():
    assert verdicts.count(reason) == count, reason
  assert runner.read_lineage(workdir)["finished"]

  # The same config again: stats.json back, nothing sampled.
  real_sample_policy = rejection_sampling.sample_policy

  def no_sampling(config):
    raise AssertionError("resampled a finished run")
  monkeypatch.setattr(rejection_sampling, "sample_policy", no_sampling)
  assert rejection_sampling.run(cfg, workdir) == result

  # A changed config samples again; with every sample graded correct, the cap binds.
  monkeypatch.setattr(rejection_sampling, "sample_policy", real_sample_policy)
  _grade_all(monkeypatch, True)
  cfg.rs.max_per_prompt = 1
  again = runner.run_stage(cfg, workdir)
  assert again["correct"] == again["generated"] == stats["generated"]
  assert 0 < again["kept_reasoning"] <= again["prompts"]
  assert again["kept_reasoning"] + sum(v for k, v in again.items()
                                       if k.startswith("rejected/")) == again["generated"]
  source = sft_data.dataset_source(workdir)
  tasks = [r["task"].decode() for r in source.__getitems__(list(range(len(source))))]
  assert tasks.count("reasoning") == again["kept_reasoning"] and len(tasks) == again["total"]


def _grade_all(monkeypatch, correct: bool) -> None:
  """Grades as usual, then marks every sample `correct` (an untrained model gets nothing right)."""
  real = sample_grade.grade_and_summarize

  def graded(samples, **kw):
    summary, records = real(samples, **kw)
    return summary, [{**r, "correct": [correct] * len(r["correct"])} for r in records]
  monkeypatch.setattr(sample_grade, "grade_and_summarize", graded)


def test_empty_data_set_is_one_clear_line(dirs, monkeypatch):
  _grade_all(monkeypatch, False)
  workdir = str(dirs["root"] / "empty")
  cfg = _rs_config(dirs, general_source="")
  n = cfg.rs.num_prompts * cfg.rs.num_samples
  with pytest.raises(ConfigError) as e:
    runner.run_stage(cfg, workdir)
  message = str(e.value)
  assert "\n" not in message
  assert "rejection_sampling" in message and "empty data set after filtering" in message
  assert f"0 of {n} samples" in message and f"incorrect {n}," in message
  assert runner.read_lineage(workdir) is None
  assert not os.path.exists(os.path.join(workdir, "stats.json"))
  with open(os.path.join(workdir, "samples.jsonl")) as f:
    assert sum(1 for _ in f) == n
