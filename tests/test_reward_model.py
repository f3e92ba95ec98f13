"""The Bradley-Terry reward model: the loss, the last-token read, the stage and the GRPO reward."""
import json
import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from configs import reward_model as rm_config
from r1jax import runner, sharding
from r1jax.errors import ConfigError
from r1jax.metrics import read_metrics
from r1jax.models import reward_model as rm
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer
from r1jax.rl.bradley_terry import bradley_terry_loss, pair_accuracy
from r1jax.stages import reward_model as rm_stage


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, smoke_base):
  """The session's smoke toy base, and the smoke reward model trained from it (once per module)."""
  root = tmp_path_factory.mktemp("reward_model")
  data, base, rm_dir = smoke_base["data"], smoke_base["base"], str(root / "rm")
  cfg = rm_config.get_config("smoke")
  cfg.parents.init = common.parent(base)
  cfg.data.data_dir = data
  cfg.progress = False
  result = runner.run_stage(cfg, rm_dir)
  return {"root": root, "data": data, "base": base, "rm": rm_dir, "result": result}


def test_bradley_terry_loss_matches_hand_computed_values():
  loss, metrics = bradley_terry_loss(jnp.array([2.0, 0.0, 1.0]), jnp.array([0.0, 0.0, 4.0]))
  # diffs 2, 0, -3: -log sigmoid(d) = log(1 + e^-d)
  want = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(3))) / 3
  assert loss.dtype == jnp.float32
  assert abs(float(loss) - want) < 1e-6
  assert abs(float(metrics["pair_accuracy"]) - 1 / 3) < 1e-7  # the tie counts as wrong
  assert abs(float(metrics["margin"]) - (-1 / 3)) < 1e-6
  big, _ = bradley_terry_loss(jnp.array([-100.0]), jnp.array([0.0]))
  assert abs(float(big) - 100.0) < 1e-4  # stable far from zero
  assert pair_accuracy([2.0, 0.0, 1.0], [0.0, 0.0, 4.0]) == pytest.approx(1 / 3)
  assert pair_accuracy([1.0, 2.0], [0.0, 1.0]) == 1.0


def test_reward_model_reads_the_last_real_token():
  config = ModelConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2, num_kv_heads=2,
                       mlp_dim=32)
  model = rm.RewardModel(config)
  # Random values in every leaf (the head's kernel is zero at init), drawn on the host: XLA:CPU
  # takes seconds to compile a threefry init.
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.3, x.shape), jnp.float32),
                        nn.unbox(abstract)["params"])
  score = jax.jit(lambda tokens, lengths: model.apply({"params": params}, tokens, lengths))
  final_hidden = jax.jit(lambda tokens: Transformer(config).apply(
      {"params": params["backbone"]}, tokens, return_hidden=True))  # [B, T, D]
  tokens = jnp.array([[2, 5, 7, 9, 11], [2, 4, 6, 0, 0]], jnp.int32)
  lengths = jnp.array([5, 3], jnp.int32)
  scores = score(tokens, lengths)  # [2]
  hidden = final_hidden(tokens)
  head = params["score_head"]
  want = [hidden[i, n - 1] @ head["kernel"] + head["bias"] for i, n in enumerate([5, 3])]
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
  garbage = jnp.array([[3, 8, 13], [1, 14, 15]], jnp.int32)  # anything after the last real token
  padded = jnp.concatenate([tokens.at[1, 3:].set(12), garbage], axis=1)
  np.testing.assert_allclose(score(padded, lengths), scores, rtol=1e-5, atol=1e-6)
  changed = score(tokens.at[1, 2].set(10), lengths)
  assert abs(float(changed[1] - scores[1])) > 1e-4
  assert float(changed[0]) == pytest.approx(float(scores[0]), abs=1e-6)


def test_smoke_stage_writes_a_loadable_reward_model(dirs):
  result = dirs["result"]
  assert result["step"] == 3
  assert 0.0 <= result["eval/pair_accuracy"] <= 1.0
  assert result["eval/num_pairs"] > 0 and np.isfinite(result["eval/loss"])
  with open(os.path.join(dirs["rm"], rm.MARKER_FILE)) as f:
    assert json.load(f) == {"kind": "bradley_terry"}
  assert runner.read_lineage(dirs["rm"])["finished"]
  records = read_metrics(dirs["rm"])
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
  assert "train/pair_accuracy" in records[0] and "train/margin" in records[0]
  assert [r["step"] for r in records if "eval/pair_accuracy" in r] == [3]
  mesh = sharding.make_mesh()
  model, params, tokenizer = rm.load_reward_model(dirs["rm"], mesh, None)
  assert set(params) == {"backbone", "score_head"}
  assert np.any(np.asarray(params["score_head"]["kernel"]) != 0)  # trained off its zero init
  scorer = rm.RewardScorer(model, params, tokenizer, mesh)
  prompt = "User: Reverse milk.\nAssistant:"
  scores = scorer.score([prompt, prompt], ["klim", "milk"])
  assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_summary_input_ignores_the_reasoning(dirs):
  mesh = sharding.make_mesh()
  summary = rm.make_reward_fn(dirs["rm"], mesh=mesh, rules=None, input="summary")
  whole = rm.make_reward_fn(dirs["rm"], mesh=mesh, rules=None, input="response")
  assert rm.get_scorer(dirs["rm"], mesh) is rm.get_scorer(dirs["rm"], mesh)  # loaded once
  prompt = "User: Count the letters in rock.\nAssistant:"
  completions = ["<think>r o c k: four letters</think>4", "<think>count them</think>4"]
  s = summary([prompt, prompt], completions, ["", ""])
  r = whole([prompt, prompt], completions, ["", ""])
  assert s[0] == s[1]
  assert s[0] == pytest.approx(float(rm.get_scorer(dirs["rm"], mesh).score([prompt], ["4"])[0]))
  assert r[0] != r[1]
  with pytest.raises(ValueError, match="input"):
    rm.make_reward_fn(dirs["rm"], mesh=mesh, input="reasoning")


def test_bad_preference_data_is_a_config_error(tmp_path):
  path = tmp_path / "prefs.jsonl"
  path.write_text('{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n'
                  '{"prompt": "Hi", "chosen": \n', encoding="utf-8")
  data_cfg = rm_config.get_config("smoke").data
  data_cfg.source = f"jsonl:preferences:{path}"
  with pytest.raises(ConfigError, match=re.escape(f"{path}:2:")):
    rm_stage.load_pairs(data_cfg)
  pairs = [{"id": str(i), "prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
  with pytest.raises(ConfigError, match="held-out split"):
    rm_stage.split_pairs(pairs, 1e-9, "prompt")
  with pytest.raises(ConfigError, match="train split"):
    rm_stage.split_pairs(pairs, 1 - 1e-9, "prompt")


def test_init_must_be_a_policy(dirs, tmp_path):
  cfg = rm_config.get_config("smoke")
  cfg.parents.init = common.parent(dirs["rm"])
  with pytest.raises(ConfigError, match="is a reward model"):
    rm_stage.run(cfg, str(tmp_path / "rm_of_rm"))
