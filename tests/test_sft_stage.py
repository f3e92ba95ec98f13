"""The SFT stage on its data sources, epochs, and the one-line errors of bad data and parents."""
import json
import os
import subprocess
import sys

import pytest

from configs import cold_start_sft, common, toy_base
from r1jax import runner
from r1jax.data import jsonl, loader, sft_data
from r1jax.errors import ConfigError
from r1jax.tokenizers import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  root = tmp_path_factory.mktemp("sft")
  cfg = toy_base.get_config("smoke")
  cfg.data.data_dir = str(root / "data")
  cfg.progress = False
  runner.run_stage(cfg, str(root / "base"))
  return {"root": root, "data": str(root / "data"), "base": str(root / "base")}


def test_cold_start_from_a_jsonl_file_for_whole_epochs(base):
  """jsonl:cold_start:<file> -> R1-format documents; num_epochs counts the packed batches."""
  path = common.example_file("cold_start.jsonl")
  cfg = cold_start_sft.get_config("smoke")
  cfg.parents.init = common.parent(base["base"])
  cfg.data.data_dir = base["data"]
  cfg.data.source = ",".join([f"jsonl:cold_start:{path}"] * 3)  # sources concatenate
  cfg.train.update({"num_epochs": 2.0, "batch_size": 2, "seq_len": 128})
  with pytest.raises(ConfigError, match=r"train.batch_size=2 does not divide over the mesh's 8"):
    runner.run_stage(cfg, str(base["root"] / "cold_jsonl"))
  cfg.train.batch_size = 8
  cfg.eval.num_problems = 0
  cfg.progress = False
  docs = jsonl.sft_records(path, "cold_start", "toy")
  tok = load_tokenizer(os.path.join(base["base"], "tokenizer.model"))
  per_epoch = sum(1 for _ in loader.lm_dataset(sft_data.ConcatSource([docs] * 3), tok,
                                               seq_len=128, batch_size=8, seed=0, num_epochs=1))
  result = runner.run_stage(cfg, str(base["root"] / "cold_jsonl"))
  assert per_epoch >= 1 and result["step"] == 2 * per_epoch
  assert result["num_documents"] == 3 * len(docs) == 24
  assert docs[0]["completion"].startswith("<think>In April")
  assert "</think>Natalia sold" in docs[0]["completion"]
  assert docs[0]["completion"].endswith("<answer>72</answer>")


@pytest.mark.parametrize("content,fmt,message", [
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a", \n', "sft", ":2: not JSON"),
    ('{"prompt": "a"}\n', "sft", ":1: sft record needs non-empty string field(s) ['response']"),
    ('{"problem": "a", "reasoning": "r", "summary": "s", "answer": ""}\n', "cold_start",
     ":1: cold_start record needs non-empty string field(s) ['answer']"),
    ("\n\n", "sft", ": no sft records"),
    ('["a", "b"]\n', "preferences", ":1: expected an object"),
])
def test_bad_jsonl_is_one_line_naming_file_and_line(tmp_path, content, fmt, message):
  path = tmp_path / "data.jsonl"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(ConfigError) as e:
    jsonl.read(str(path), fmt)
  assert str(e.value) == f"{path}{message}" or str(e.value).startswith(f"{path}{message}")
  assert "\n" not in str(e.value)


def test_not_utf8(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes('{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
  with pytest.raises(ConfigError, match=r"latin1.jsonl: not UTF-8"):
    jsonl.read(str(path), "sft")


def test_unknown_source_and_missing_parent_are_clear(base, tmp_path):
  with pytest.raises(ConfigError, match="expected toy:<kind>"):
    sft_data.resolve_source("hf:squad", data_dir=base["data"], world=None, template="toy",
                            parent_dirs={})
  with pytest.raises(ConfigError, match="no parent 'data'"):
    sft_data.resolve_source("parent:data", data_dir=base["data"], world=None, template="toy",
                            parent_dirs={})
  cfg = cold_start_sft.get_config("smoke")
  cfg.parents.init = common.parent(str(tmp_path / "nowhere"))
  with pytest.raises(ConfigError, match="parent 'init' .*nowhere.* is missing and has no config"):
    runner.run_stage(cfg, str(tmp_path / "child"))


def test_a_missing_parent_is_built_from_its_config(tmp_path):
  """cold_start_sft:smoke on a fresh directory builds its toy base first (same data dir)."""
  proc = subprocess.run(
      [sys.executable, "-m", "r1jax.main", "--config=configs/cold_start_sft.py:smoke",
       f"--workdir={tmp_path / 'cold'}", f"--config.parents.init.dir={tmp_path / 'base'}",
       f"--config.data.data_dir={tmp_path / 'data'}", "--config.progress=False"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "parent 'init'" in proc.stdout and "building it with configs/toy_base.py:smoke" in proc.stdout
  lineage = json.loads((tmp_path / "cold" / "lineage.json").read_text())
  assert lineage["finished"] and lineage["parents"]["init"]["step"] == 3
  assert lineage["parents"]["init"]["dir"] == str(tmp_path / "base")
  assert runner.read_lineage(str(tmp_path / "base"))["stage"] == "sft"
