"""Benchmark TFDS builders: array_record written and read without TensorFlow."""
import json
import pathlib
import sys

import pytest

from r1jax.data import benchmarks

# The benchmark files bundled with the package: the tests never skip for want of data.
DATA = pathlib.Path(benchmarks.FILES_DIR)


def raw_rows(name):
  with open(DATA / name / "test.jsonl") as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("name,count,first", [
    ("gsm8k", 1319, {"id": "0", "answer": "18"}),
    ("aime24", 30, {"id": "60", "answer": "204"}),
    ("amc23", 40, {"id": "0", "answer": "27.0"}),
])
def test_builders_read_back(tmp_path, name, count, first):
  records = benchmarks.load_benchmark(name, data_dir=tmp_path, manual_dir=DATA / name)
  assert len(records) == count
  assert {k: records[0][k] for k in first} == first
  assert set(records[0]) == {"problem", "answer", "id"}
  assert all(isinstance(v, str) for r in records for v in r.values())
  assert len({r["id"] for r in records}) == count
  rows = raw_rows(name)
  assert records[0]["problem"] == rows[0].get("problem", rows[0].get("question"))  # file order
  files = list((tmp_path / name).glob(f"*/{name}-test.array_record-*"))
  assert len(files) == 1
  assert "tensorflow" not in sys.modules
  # Prepared once, a benchmark no longer needs its source file.
  assert benchmarks.load_benchmark(name, data_dir=tmp_path) == records


def test_gsm8k_gold_is_the_number_after_hashes(tmp_path):
  records = benchmarks.load_benchmark("gsm8k", data_dir=tmp_path, manual_dir=DATA / "gsm8k")
  rows = raw_rows("gsm8k")
  with_commas = [r for r in rows if "," in r["answer"].rsplit("####", 1)[1]]
  assert len(with_commas) == 14  # e.g. "#### 2,125"
  for rec, row in zip(records, rows):
    assert rec["problem"] == row["question"]
    assert rec["answer"] == row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert rec["answer"].lstrip("-").isdigit()


def test_gsm8k_gold_parser():
  assert benchmarks.gsm8k_gold("so 2+2=4\n#### 4") == "4"
  assert benchmarks.gsm8k_gold("a #### b\n#### 1,450,000") == "1450000"
  with pytest.raises(ValueError, match="####"):
    benchmarks.gsm8k_gold("no final answer")


def test_math_jsonl_fields_from_config(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  rows = [{"q": "What is 1/2 + 0?", "a": 0.5, "uid": 7}, {"q": "2+2?", "a": "4", "uid": "x"}]
  (src / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  records = benchmarks.load_benchmark(
      "math_jsonl", data_dir=tmp_path / "tfds", manual_dir=src, split="dev", config_name="mine",
      problem_field="q", answer_field="a", id_field="uid", file_name="dev.jsonl")
  assert records == [{"problem": "What is 1/2 + 0?", "answer": "0.5", "id": "7"},
                     {"problem": "2+2?", "answer": "4", "id": "x"}]
  assert (tmp_path / "tfds" / "math_jsonl" / "mine" / "1.0.0").is_dir()
  with pytest.raises(KeyError, match="'question' missing"):
    benchmarks.load_benchmark("math_jsonl", data_dir=tmp_path / "tfds2", manual_dir=src,
                              split="dev", config_name="bad", problem_field="question",
                              answer_field="a", file_name="dev.jsonl")


def test_missing_source_is_a_clear_error(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="test.jsonl"):
    benchmarks.load_benchmark("aime24", data_dir=tmp_path / "tfds", manual_dir=empty)
  with pytest.raises(KeyError, match="unknown benchmark"):
    benchmarks.load_benchmark("mmlu", data_dir=tmp_path)
  with pytest.raises(TypeError, match="no builder options"):
    benchmarks.load_benchmark("aime24", data_dir=tmp_path, problem_field="q")


def test_gsm8k_downloads_without_a_local_copy(tmp_path):
  class NoManualDir:  # the TFDS download manager of a machine with internet and no manual_dir
    @property
    def manual_dir(self):
      raise AssertionError("Manual directory not enabled.")

    def download(self, url):
      self.url = url
      return tmp_path / "downloaded.jsonl"

  dl = NoManualDir()
  builder = benchmarks.Gsm8k(data_dir=tmp_path)
  assert builder._source_file(dl) == tmp_path / "downloaded.jsonl"
  assert dl.url == benchmarks.GSM8K_URL


def test_registry_accepts_new_benchmarks():
  def loader(*, data_dir=None, manual_dir=None, split="test"):
    return [{"problem": "1+1", "answer": "2", "id": "0"}]

  defaults = benchmarks.EvalDefaults(k=2, max_new_tokens=8, extract=("answer_tag",),
                                     grade_mode="exact", template="plain")
  try:
    benchmarks.register_benchmark("tiny", loader, defaults)
    assert benchmarks.load_benchmark("tiny") == loader()
    assert benchmarks.EVAL_DEFAULTS["tiny"] == defaults
    with pytest.raises(ValueError, match="already registered"):
      benchmarks.register_benchmark("tiny", lambda **kw: [], defaults)
  finally:
    benchmarks.BENCHMARKS.pop("tiny", None)
    benchmarks.EVAL_DEFAULTS.pop("tiny", None)


def test_math_jsonl_default_fields(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  (src / "test.jsonl").write_text('{"problem": "p0", "answer": "1/2"}\n\n{"problem": "p1", '
                                  '"answer": 3}\n')
  records = benchmarks.load_benchmark("math_jsonl", data_dir=tmp_path / "tfds", manual_dir=src)
  assert records == [{"problem": "p0", "answer": "1/2", "id": "0"},
                     {"problem": "p1", "answer": "3", "id": "2"}]  # ids are line numbers


def test_toy_heldout_is_a_benchmark(tmp_path):
  from r1jax.data import toy_world
  records = benchmarks.load_benchmark("toy", data_dir=tmp_path)
  assert len(records) == toy_world.ToyWorldConfig().test_size
  assert set(records[0]) == {"problem", "answer", "id"}
  assert benchmarks.EVAL_DEFAULTS["toy"].grade_mode == "exact"


def test_gsm8k_train_split_for_rl_prompts(tmp_path):
  train = benchmarks.load_benchmark("gsm8k", data_dir=tmp_path, manual_dir=DATA / "gsm8k",
                                    split="train")
  assert len(train) == 7473
  assert train[0]["answer"] == "72"  # Natalia's clips: 48 + 24


def test_bundled_files_are_the_default_source(tmp_path, monkeypatch):
  """No manual_dir and no network needed: the package's own copies are read."""
  def no_download(self, url):
    raise AssertionError(f"downloaded {url}")

  monkeypatch.setattr(benchmarks.tfds.download.DownloadManager, "download", no_download)
  for name in ("gsm8k", "aime24", "amc23"):
    assert benchmarks.bundled_dir(name) == str(DATA / name)
    assert (DATA / name / "test.jsonl").is_file()
  assert benchmarks.bundled_dir("math_jsonl") is None and benchmarks.bundled_dir("toy") is None
  assert len(benchmarks.load_benchmark("gsm8k", data_dir=tmp_path, split="test")) == 1319
  assert len(benchmarks.load_benchmark("gsm8k", data_dir=tmp_path, split="train")) == 7473
  assert len(benchmarks.load_benchmark("aime24", data_dir=tmp_path, manual_dir="")) == 30
