"""The SFT stage on its data sources, epochs, and the one-line errors of bad data and parents."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import cold_start_sft, common, toy_base
from r1jax import runner
from r1jax.data import jsonl, loader, sft_data
from r1jax.errors import ConfigError
from r1jax.tokenizers import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def base(tmp_path_factory, smoke_base):
  return {"root": tmp_path_factory.mktemp("sft"), "data": smoke_base["data"],
          "base": smoke_base["base"]}


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


def test_distill_loss_matches_its_formula():
  """(1-w) NLL + w T^2 KL(teacher_T || student_T), against numpy on a tiny model."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from r1jax import sft
  from r1jax.models.config import ModelConfig
  from r1jax.models.transformer import Transformer

  model = Transformer(ModelConfig(vocab_size=11, d_model=16, num_layers=1, num_heads=2,
                                  num_kv_heads=2, mlp_dim=32, max_seq_len=16))
  init = lambda k: nn.unbox(model.init(jax.random.key(k), jnp.zeros((1, 6), jnp.int32))["params"])
  student = init(0)
  teacher = jax.tree.map(lambda x: 8.0 * x, init(1))  # sharper: a KL far from 0
  tokens = jnp.asarray([[1, 4, 5, 6, 7, 2], [1, 3, 3, 9, 2, 0]], jnp.int32)
  mask = jnp.asarray([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]], jnp.int32)
  batch = {"tokens": tokens, "loss_mask": mask, "teacher_params": teacher}
  w, t = 0.3, 2.0
  loss, m = sft.distill_loss(model, model, student, batch, weight=w, temperature=t)

  def logp(params, temp):
    z = np.asarray(model.apply({"params": params}, tokens[:, :-1]), np.float64) / temp
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  sel = np.asarray(mask[:, 1:], bool)
  targets = np.asarray(tokens[:, 1:])
  nll = -np.take_along_axis(logp(student, 1.0), targets[..., None], -1)[..., 0][sel].mean()
  pt, ps = logp(teacher, t), logp(student, t)
  kl = (np.exp(pt) * (pt - ps)).sum(-1)[sel].mean()
  np.testing.assert_allclose(float(m["nll"]), nll, rtol=1e-5)
  np.testing.assert_allclose(float(m["kl_to_teacher"]), kl, rtol=1e-5)
  np.testing.assert_allclose(float(loss), (1 - w) * nll + w * t * t * kl, rtol=1e-5)
  # A student equal to its teacher has no KL to it.
  _, same = sft.distill_loss(model, model, teacher, batch, weight=w, temperature=t)
  assert abs(float(same["kl_to_teacher"])) < 1e-6


def test_logit_distillation_refuses_a_student_with_another_vocabulary(base, tmp_path):
  """The student keeps the toy tokenizer; a teacher with another vocabulary is named in one line."""
  from configs import distill
  teacher = tmp_path / "teacher"
  cfg = toy_base.get_config("smoke")
  cfg.data.data_dir = base["data"]
  cfg.tokenizer.vocab_size = 400  # another vocabulary
  cfg.train.num_steps = 1
  cfg.eval.num_problems = 0
  cfg.progress = False
  runner.run_stage(cfg, str(teacher))
  d = distill.get_config("smoke")
  d.parents.init = common.parent(base["base"])
  d.parents.teacher = common.parent(str(teacher))
  d.data.source = "toy:cold_start"
  d.data.data_dir = base["data"]
  d.distill.logit_weight = 0.5
  d.progress = False
  with pytest.raises(ConfigError, match=r"needs the student's vocabulary to be the teacher's: "
                                        r"student has \d+ ids, teacher .*teacher has \d+"):
    runner.run_stage(d, str(tmp_path / "student"))
  d.parents.teacher = common.parent(base["base"])  # same vocabulary: it trains
  d.eval.num_problems = 0
  result = runner.run_stage(d, str(tmp_path / "student_ok"))
  assert np.isfinite(result["kl_to_teacher"]) and result["step"] == d.train.num_steps
