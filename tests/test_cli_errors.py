"""Every bad input on the real command line: one `r1jax: error:` line naming the file, field or
value, a non-zero exit, no traceback, and a workdir that was there before left as it was.

Each case is one `python -m r1jax.main` subprocess; they run in a few threads at once. Cases that
need a model use the session's smoke toy base (read only) or copies of it that they damage.
"""
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from configs import grpo_zero
from r1jax import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_QWEN2 = os.path.join(ROOT, "tests", "data", "parity", "tiny_qwen2")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _snapshot(path: str, everything: bool) -> dict:
  """What must not change: every file (names, sizes, mtimes), or the checkpoints' files and the
  metrics log's content (a failing run may rewrite config.json / model.json as they were)."""
  out = {}
  for dirpath, _, names in os.walk(path):
    for name in names:
      full = os.path.join(dirpath, name)
      rel = os.path.relpath(full, path)
      st = os.stat(full)
      if everything or rel.startswith("checkpoints" + os.sep):
        out[rel] = (st.st_size, st.st_mtime_ns)
      elif rel == "metrics.jsonl":
        with open(full, "rb") as f:
          out[rel] = f.read()
  return out


def _write_gguf(path: str, arch: str) -> None:
  gguf = pytest.importorskip("gguf")
  w = gguf.GGUFWriter(path, arch)
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _cases(tmp, base: str, data: str) -> dict[str, dict]:
  """name -> {args, expect (substrings of the error line), watch (dir, everything?) or None}.
  Builds the damaged inputs each case needs under `tmp`."""
  rng = random.Random(0)
  cases = {}

  def add(name, args, *expect, workdir=None, watch=None):
    workdir = workdir or str(tmp / "work" / name)
    cases[name] = {"args": [*args, f"--workdir={workdir}", "--config.progress=False"],
                   "expect": expect, "watch": watch}

  def copy_of(src, name):
    dest = str(tmp / "copies" / name)
    shutil.copytree(src, dest)
    return dest

  grpo = ["--config=configs/grpo_zero.py:smoke", f"--config.parents.init.dir={base}",
          f"--config.data.data_dir={data}"]
  cold = ["--config=configs/cold_start_sft.py:smoke", f"--config.data.data_dir={data}"]
  toy_base = ["--config=configs/toy_base.py:smoke", f"--config.data.data_dir={data}"]

  # The command line itself.
  add("config_file_missing", ["--config=configs/nope.py"], "configs/nope.py", "does not exist")
  add("field_unknown", [*grpo, "--config.rl.nonexistent=1"], "--config.rl.nonexistent",
      "no field 'nonexistent'")
  add("field_wrong_type", [*grpo, "--config.num_steps=abc"], "--config.num_steps=abc")

  # Workdirs.
  if not IS_ROOT:  # root writes anywhere: the run would train a model there
    locked = tmp / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    add("workdir_not_writable", toy_base, str(locked), "Permission denied",
        workdir=str(locked), watch=(str(locked), True))
  a_file = tmp / "a_file"
  a_file.write_text("not a directory\n")
  add("workdir_under_a_file", toy_base, str(a_file), workdir=str(a_file / "run"))
  other = copy_of(base, "other_stage")
  add("workdir_of_another_stage", grpo, "holds a 'sft' run", "refusing to run stage 'grpo'",
      workdir=other, watch=(other, True))
  shapes = copy_of(base, "other_shapes")
  add("resume_other_model_shapes", [*toy_base, "--config.model.overrides.d_model=64"],
      f"workdir {shapes} was run with model.overrides.d_model=32; this config has 64",
      f"delete {shapes}", workdir=shapes, watch=(shapes, True))
  beta = tmp / "copies" / "grpo_beta"
  (beta / "checkpoints" / "2" / "state").mkdir(parents=True)
  (beta / "checkpoints" / "2" / "state" / "_METADATA").write_text("{}")
  (beta / "metrics.jsonl").write_text('{"step": 2, "loss": 0.5}\n')
  cfg = grpo_zero.get_config("smoke")
  cfg.parents.init.dir, cfg.data.data_dir, cfg.rl.loss.beta = base, data, 0.04
  (beta / "config.json").write_text(runner.config_json(cfg))
  add("resume_other_kl_beta", grpo, "rl.loss.beta=0.04; this config has 0.0",
      workdir=str(beta), watch=(str(beta), True))

  # A damaged checkpoint and a run directory without its tokenizer.
  corrupt = copy_of(base, "corrupt_checkpoint")
  state = os.path.join(corrupt, "checkpoints", "3", "state")
  for name in os.listdir(os.path.join(state, "d")):
    path = os.path.join(state, "d", name)
    os.truncate(path, os.path.getsize(path) // 2)
  add("checkpoint_truncated", toy_base, "checkpoint", os.path.join(corrupt, "checkpoints", "3"),
      "cannot be read", workdir=corrupt, watch=(corrupt, False))
  no_tok = copy_of(base, "no_tokenizer")
  os.remove(os.path.join(no_tok, "tokenizer.model"))
  add("parent_tokenizer_missing", [*cold, f"--config.parents.init.dir={no_tok}"],
      os.path.join(no_tok, "tokenizer.model"), "is missing", watch=(no_tok, True))
  hf_no_tok = copy_of(TINY_QWEN2, "hf_no_tokenizer")
  os.remove(os.path.join(hf_no_tok, "tokenizer.json"))
  add("hf_dir_without_tokenizer", [*cold, f"--config.parents.init.dir={hf_no_tok}"], hf_no_tok,
      "no tokenizer")

  # JSONL data files.
  jsonl_dir = tmp / "jsonl"
  jsonl_dir.mkdir()
  good = {"problem": "p", "reasoning": "r", "summary": "s", "answer": "1"}
  files = {"malformed": ('{"problem": "p", \n', ":1: not JSON"),
           "empty": ("\n\n", ": no cold_start records"),
           "missing_field": (json.dumps({**good, "answer": ""}) + "\n",
                             ":1: cold_start record needs non-empty string field(s) ['answer']"),
           "not_utf8": (json.dumps(good).replace('"p"', '"caf\xe9"').encode("latin-1"),
                        ": not UTF-8")}
  for kind, (content, message) in files.items():
    path = jsonl_dir / f"{kind}.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    add(f"jsonl_{kind}", [*cold, f"--config.parents.init.dir={base}",
                          f"--config.data.source=jsonl:cold_start:{path}"], f"{path}{message}")

  # Shapes: a prompt longer than the context, batches the mesh does not divide, a mesh too big.
  long_template = "word " * 300 + "{prompt}"
  add("prompt_too_long", [*grpo, f"--config.data.template={long_template}"], "prompt '",
      "tokens; with max_new_tokens=16", "max_seq_len 256")
  add("rollout_prompt_too_long", [*grpo, f"--config.data.template={long_template}",
                                  "--config.eval.every=0"], "with rl.max_new_tokens=16",
      "max_seq_len 256")
  add("batch_not_divisible_sft", [*cold, f"--config.parents.init.dir={base}",
                                  "--config.train.batch_size=3"],
      "train.batch_size=3 does not divide over the mesh's 8 data-parallel shards")
  add("batch_not_divisible_grpo", [*grpo, "--config.rl.num_prompts=3", "--config.rl.group_size=2"],
      "rl.num_prompts x rl.group_size", "=6 does not divide over the mesh's 8")
  add("group_of_one", [*grpo, "--config.rl.group_size=1"], "rl.group_size=1")
  add("mesh_too_big", [*grpo, "--config.mesh.data=16"], "mesh {'data': 16", "needs 16 devices",
      "there are 8")

  # Model files: corrupt, truncated, or of an architecture r1jax does not import.
  models = tmp / "models"
  models.mkdir()
  (models / "random.gguf").write_bytes(rng.randbytes(4096))
  _write_gguf(str(models / "whole.gguf"), "llama")
  whole = (models / "whole.gguf").read_bytes()
  (models / "truncated.gguf").write_bytes(whole[:len(whole) // 2])
  _write_gguf(str(models / "bert.gguf"), "bert")
  for name, expect in (("random.gguf", "not a readable GGUF file"),
                       ("truncated.gguf", "not a readable GGUF file"),
                       ("bert.gguf", "GGUF architecture 'bert' is not supported")):
    add(f"gguf_{name.split('.')[0]}", [*cold, f"--config.parents.init.dir={models / name}"],
        str(models / name), expect)
  for kind in ("random", "truncated", "bert"):
    hf = copy_of(TINY_QWEN2, f"hf_{kind}")
    weights = os.path.join(hf, "model.safetensors")
    if kind == "random":
      with open(weights, "wb") as f:
        f.write(rng.randbytes(4096))
    elif kind == "truncated":
      os.truncate(weights, os.path.getsize(weights) // 2)
    else:
      with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"architectures": ["BertModel"], "model_type": "bert"}, f)
    expect = ((os.path.join(hf, "config.json"), "model_type 'bert'") if kind == "bert" else
              (weights, "not a readable safetensors file"))
    add(f"safetensors_{kind}", [*cold, f"--config.parents.init.dir={hf}"], *expect)
  return cases


def _run(case: dict, env: dict) -> dict:
  before = _snapshot(*case["watch"]) if case["watch"] else None
  proc = subprocess.run([sys.executable, "-m", "r1jax.main", *case["args"]], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  after = _snapshot(*case["watch"]) if case["watch"] else None
  return {"proc": proc, "before": before, "after": after}


@pytest.fixture(scope="module")
def results(tmp_path_factory, smoke_base):
  tmp = tmp_path_factory.mktemp("cli_errors")
  cases = _cases(tmp, smoke_base["base"], smoke_base["data"])
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", R1JAX_DATA_DIR=smoke_base["data"])
  env.pop("R1JAX_TRACEBACK", None)
  with ThreadPoolExecutor(max_workers=3) as pool:
    futures = {name: pool.submit(_run, case, env) for name, case in cases.items()}
    out = {name: {**cases[name], **f.result()} for name, f in futures.items()}
  if (tmp / "locked").exists():
    os.chmod(tmp / "locked", 0o700)
  return out


CASES = ["config_file_missing", "field_unknown", "field_wrong_type", "workdir_not_writable",
         "workdir_under_a_file", "workdir_of_another_stage", "resume_other_model_shapes",
         "resume_other_kl_beta", "checkpoint_truncated", "parent_tokenizer_missing",
         "hf_dir_without_tokenizer", "jsonl_malformed", "jsonl_empty", "jsonl_missing_field",
         "jsonl_not_utf8", "prompt_too_long", "rollout_prompt_too_long",
         "batch_not_divisible_sft", "batch_not_divisible_grpo", "group_of_one", "mesh_too_big",
         "gguf_random", "gguf_truncated", "gguf_bert", "safetensors_random",
         "safetensors_truncated", "safetensors_bert"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line(results, name):
  if name == "workdir_not_writable" and IS_ROOT:
    pytest.skip("root writes into a 0o500 directory, so it cannot be made unwritable")
  r = results[name]
  proc = r["proc"]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("r1jax: error:")]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
  for part in r["expect"]:
    assert part in errors[0], (part, errors[0])
  if r["watch"]:
    assert r["after"] == r["before"], f"{r['watch'][0]} changed"


@pytest.mark.slow
def test_every_case_is_in_the_table(results):
  assert sorted(results) == sorted(c for c in CASES if c != "workdir_not_writable" or not IS_ROOT)


def test_what_a_resumed_run_may_change():
  """How long a run goes, how it logs, evaluates, saves and lays out: free. The recipe: not."""
  cfg = grpo_zero.get_config("smoke")
  cfg.parents.init.dir = "workdirs/base"
  old = json.loads(runner.config_json(cfg))
  new = grpo_zero.get_config("smoke")
  new.parents.init.dir = "workdirs/./base/"
  new.parents.init.config = ""
  new.num_steps, new.checkpoint_every, new.keep_checkpoints = 50, 5, 9
  new.name, new.progress, new.data.data_dir = "again", False, "/elsewhere"
  new.eval.every, new.eval.k, new.mesh.data, new.optim.total_steps = 0, 8, 4, 50
  assert runner.recipe_changes(old, new) == []
  old["optim"]["total_steps"] = 40  # a schedule length both name: part of the recipe
  new.rl.loss.beta, new.rl.group_size = 0.01, 16
  assert runner.recipe_changes(old, new) == [
      "optim.total_steps=40; this config has 50", "rl.group_size=4; this config has 16",
      "rl.loss.beta=0.0; this config has 0.01"]
  del old["seed"]
  assert "seed=<unset>; this config has 0" in runner.recipe_changes(old, new)
