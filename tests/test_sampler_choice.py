"""The sampler as a config choice (r1jax/samplers.py): static and continuous give the same eval
records and the same GRPO step, and a bad choice is one ConfigError naming the field before a
model loads.

The GRPO runs compare step 1 (and the evals at steps 0 and 1): rewards, lengths and eval figures
exactly, since both samplers draw the same tokens; losses at 1e-5, since the sampler's log-probs
differ by float32 rounding (~1e-6) and the on-policy loss reads only the trainer's own.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import grpo_zero
from r1jax import main, runner, sample_grade, samplers
from r1jax.continuous_sampling import ContinuousSampler
from r1jax.errors import ConfigError
from r1jax.metrics import read_metrics
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.sampling import Sampler

TINY = ModelConfig(vocab_size=64, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2,
                   mlp_dim=64, max_seq_len=64, tie_embeddings=False)
PROBLEMS = [{"problem": "ab" * (1 + i % 4) + str(i), "answer": str(i), "id": f"p{i}"}
            for i in range(10)]
SETTINGS = dict(template="plain", k=2, max_new_tokens=12, temperature=0.6, top_p=0.95, top_k=0,
                batch_size=2, progress=False)


class _Tok:
  """Characters to ids 2..61; decodes ids as numbers. `eos_id` is set per test."""
  pad_id, bos_id = 0, None

  def __init__(self, eos_id):
    self.eos_id = eos_id

  def encode(self, text):
    return [2 + ord(ch) % 60 for ch in text]

  def decode(self, ids):
    return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def tiny():
  """A one-layer model whose head is scaled up, so a chosen stop token ends rows at spread-out
  lengths (a uniform head would rarely sample it)."""
  model = Transformer(TINY)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 8.0
  return model, params


@pytest.fixture(scope="module")
def eos(tiny) -> int:
  """The token whose first occurrence spreads the sampled lengths most, from a run without EOS."""
  model, params = tiny
  sampler = samplers.make_sampler(model, kind="static")
  free = sample_grade.sample_completions(sampler, params, _Tok(None), PROBLEMS,
                                         rng=jax.random.key(3), **SETTINGS)
  rows = [[int(t) for t in c.split()] for r in free for c in r["completions"]]

  def spread(tok):
    return np.std([r.index(tok) + 1 if tok in r else len(r) for r in rows])
  return max({t for r in rows for t in r}, key=spread)


def test_eval_records_are_the_same_with_either_sampler(tiny, eos, monkeypatch):
  model, params = tiny
  tok = _Tok(eos)
  calls = []
  call = ContinuousSampler.__call__
  monkeypatch.setattr(ContinuousSampler, "__call__",
                      lambda self, *a, **kw: calls.append(len(a[1])) or call(self, *a, **kw))
  run = lambda kind: sample_grade.sample_completions(
      samplers.make_sampler(model, kind=kind, rows=SETTINGS["batch_size"] * SETTINGS["k"]),
      params, tok, PROBLEMS, rng=jax.random.key(3), **SETTINGS)
  static, cont = run("static"), run("continuous")
  assert calls == [8, 2]  # 4 batches of 2 problems per call: 16 rows through 4 slots
  lengths = [n for r in static for n in r["num_tokens"]]
  assert min(lengths) <= 4 and any(t for r in static for t in r["truncated"]), lengths
  assert len(set(lengths)) > 3  # rows stop at spread-out lengths
  assert cont == static  # completions, num_tokens, truncated, ids and order


def test_factory_builds_the_chosen_sampler(tiny):
  model, _ = tiny
  assert type(samplers.make_sampler(model)) is Sampler
  assert samplers.make_sampler(model, kind="continuous", rows=24).num_slots == 24
  assert samplers.make_sampler(model, kind="continuous", num_slots=5, rows=24).num_slots == 5
  assert samplers.from_config({"sampler": "continuous", "num_slots": 6}, "", model,
                              rows=2).num_slots == 6
  assert type(samplers.from_config({"eval": {}}, "eval", model, rows=2)) is Sampler  # older runs


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="dynamic", block="eval"), "eval.sampler='dynamic': must be one of static, "
                                         "continuous"),
    (dict(kind="continuous", num_slots=-1, block="rl"), "rl.num_slots=-1: must be an int >= 0"),
    (dict(kind="static", num_slots=2.5), "num_slots=2.5: must be an int >= 0"),
])
def test_factory_rejects_bad_choices(tiny, kwargs, message):
  with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
    samplers.make_sampler(tiny[0], **kwargs)


def test_a_bad_choice_stops_a_stage_before_it_writes(tmp_path):
  cfg = grpo_zero.get_config("smoke")
  cfg.rl.sampler = "fast"
  with pytest.raises(ConfigError, match=r"^rl\.sampler='fast'"):
    runner.run_stage(cfg, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_the_sampler_fields_are_not_the_recipe():
  """A run made before the fields existed, or with the other sampler, resumes and stays fresh."""
  old = grpo_zero.get_config("smoke")
  new = grpo_zero.get_config("smoke")
  new.rl.sampler, new.rl.num_slots, new.eval.sampler = "continuous", 8, "continuous"
  assert runner.recipe_sha256(old) == runner.recipe_sha256(new)
  assert runner.recipe_changes(json.loads(runner.config_json(old)), new) == []


def _grpo(smoke_base, workdir, kind):
  """One GRPO step on the smoke base with `kind` for rollouts and evals; 16 rollout rows on 8
  slots and 16 eval rows on 8, so both refill (slots round up to the 8-device data axis)."""
  cfg = grpo_zero.get_config("smoke")
  cfg.parents.init.dir, cfg.data.data_dir = smoke_base["base"], smoke_base["data"]
  cfg.progress, cfg.num_steps = False, 1
  cfg.rl.num_prompts, cfg.rl.sampler, cfg.rl.num_slots = 4, kind, 8
  cfg.eval.num_problems, cfg.eval.sampler = 8, kind
  main.run_stage(cfg, workdir)
  return read_metrics(workdir)


def test_grpo_step_is_the_same_with_either_sampler(smoke_base, tmp_path):
  static = _grpo(smoke_base, str(tmp_path / "static"), "static")
  cont = _grpo(smoke_base, str(tmp_path / "continuous"), "continuous")
  assert [r["step"] for r in cont] == [r["step"] for r in static]
  for a, b in zip(static, cont):
    for key, want in a.items():
      if key.startswith("time/") or key in ("tokens_per_s", "eval/time_s"):
        continue
      if key.startswith(("reward", "response_length", "eval/", "accuracy", "format_rate",
                         "truncated", "groups_with_spread")):
        assert b[key] == want or (want != want and b[key] != b[key]), key  # NaN == NaN
      elif isinstance(want, float):
        assert b[key] == pytest.approx(want, abs=1e-5, nan_ok=True), key
  assert any("loss" in r for r in cont) and any("eval/pass@1" in r for r in cont)
