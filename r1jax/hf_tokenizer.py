"""Hugging Face `tokenizer.json` tokenizers (Qwen2.5, Llama 3, SmolLM2) behind r1jax's interface.

`encode` never adds special tokens by itself: prompts reach the model through the chat template,
which writes BOS where a model wants it (Llama 3), so adding it again would double it. Chat
templates are rendered with jinja2 the way transformers renders them; without jinja2 a plain
ChatML rendering stands in for ChatML vocabularies (Qwen, SmolLM), minus any default system
prompt the template would add.
"""
from __future__ import annotations

import datetime
import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_then_bytes(pattern: str):
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


# llama.cpp pre-tokenizer names -> the HF pre-tokenizer that splits text the same way.
_GGUF_PRE_TOKENIZERS = {
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence([  # llama.cpp: '\p{N}' first, then GPT-2's split
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama-bpe": lambda: _split_then_bytes(LLAMA3_SPLIT),
}


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_str(t: Any) -> str | None:
  """tokenizer_config.json spells a special token as a string or {'content': ...}."""
  return t.get("content") if isinstance(t, Mapping) else t


def _template_str(t: Any) -> str | None:
  """A template string, or the 'default' one of a list of named templates."""
  if isinstance(t, list):
    named = {x["name"]: x["template"] for x in t}
    return named.get("default")
  return t


class HFTokenizer:
  """A `tokenizers.Tokenizer` plus the special tokens and chat template of its model."""

  def __init__(self, tokenizer: str | tokenizers.Tokenizer, *, bos_token: str | None = None,
               eos_token: str | None = None, pad_token: str | None = None,
               chat_template: str | None = None):
    """`tokenizer`: a `tokenizer.json` path, a directory holding one, or a Tokenizer object.

    From a path, special tokens and the chat template come from the files beside it
    (tokenizer_config.json, special_tokens_map.json, chat_template.jinja, config.json);
    keyword arguments override them.
    """
    found: dict[str, Any] = {}
    if isinstance(tokenizer, str):
      path = os.path.join(tokenizer, "tokenizer.json") if os.path.isdir(tokenizer) else tokenizer
      if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer.json at {tokenizer}")
      found = _read_sidecar_files(os.path.dirname(path))
      tokenizer = tokenizers.Tokenizer.from_file(path)
    self._tok = tokenizer
    given = dict(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                 chat_template=chat_template)
    found.update({k: v for k, v in given.items() if v is not None})
    self.chat_template: str | None = found.get("chat_template")
    self.bos_token, self.eos_token, self.pad_token = (
        found.get("bos_token"), found.get("eos_token"), found.get("pad_token"))
    for name in ("bos", "eos"):  # ids from config.json when the tokenizer files name no token
      if getattr(self, f"{name}_token") is None and found.get(f"{name}_id") is not None:
        setattr(self, f"{name}_token", self.id_to_piece(found[f"{name}_id"]))
    self._special_ids = frozenset(i for i, t in self._tok.get_added_tokens_decoder().items()
                                  if t.special)

  @classmethod
  def from_gguf(cls, reader_or_path) -> "HFTokenizer":
    """Byte-level BPE rebuilt from a GGUF file's tokenizer metadata (tokens, merges, types)."""
    from r1jax.models import gguf_import  # pylint: disable=import-outside-toplevel
    field = gguf_import.field
    reader = reader_or_path
    if isinstance(reader, str):
      reader = gguf_import.GGUFReader(reader)
    kind, pre = field(reader, "tokenizer.ggml.model"), field(reader, "tokenizer.ggml.pre", "gpt2")
    if kind != "gpt2":
      raise NotImplementedError(f"GGUF tokenizer model {kind!r} is not supported (gpt2 is)")
    if pre not in _GGUF_PRE_TOKENIZERS:
      raise NotImplementedError(f"GGUF pre-tokenizer {pre!r} is not supported "
                                f"({sorted(_GGUF_PRE_TOKENIZERS)} are)")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", None) or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                     fuse_unk=False, byte_fallback=False)
    tok = tokenizers.Tokenizer(bpe)
    tok.pre_tokenizer = _GGUF_PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|im_end|>) are special; user-defined ones (<think>) are matched whole too.
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == _CONTROL])
    tok.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == _USER_DEFINED])

    def token(key):
      i = field(reader, f"tokenizer.ggml.{key}_token_id", None)
      return None if i is None else tokens[int(i)]
    return cls(tok, bos_token=token("bos"), eos_token=token("eos"), pad_token=token("padding"),
               chat_template=field(reader, "tokenizer.chat_template", None))

  # ------------------------------------------------------------------ the Tokenizer interface

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def _id(self, token: str | None) -> int | None:
    return None if token is None else self.piece_to_id(token)

  @property
  def bos_id(self) -> int | None:
    """None for models without one (Qwen2.5 names none)."""
    return self._id(self.bos_token)

  @property
  def eos_id(self) -> int | None:
    return self._id(self.eos_token)

  @property
  def pad_id(self) -> int | None:
    """The pad token, else EOS (padding is masked anyway)."""
    return self._id(self.pad_token) if self.pad_token is not None else self.eos_id

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Ids of `text`; special tokens written in it (`<|im_start|>`) become their ids."""
    ids = self._tok.encode(text, add_special_tokens=False).ids
    if add_bos:
      ids = [self._required("bos")] + ids
    return ids + [self._required("eos")] if add_eos else ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`; special (control) tokens are dropped unless asked for."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def id_to_piece(self, i: int) -> str:
    piece = self._tok.id_to_token(int(i)) if 0 <= i < self.vocab_size else None
    if piece is None:
      raise ValueError(f"id {i} outside the vocabulary [0, {self.vocab_size})")
    return piece

  def piece_to_id(self, piece: str) -> int:
    i = self._tok.token_to_id(piece)
    if i is None:
      raise KeyError(f"{piece!r} is not a piece of this tokenizer")
    return i

  def is_special(self, i: int) -> bool:
    return int(i) in self._special_ids

  def _required(self, name: str) -> int:
    i = getattr(self, f"{name}_id")
    if i is None:
      raise ValueError(f"this tokenizer has no {name} token")
    return i

  # ------------------------------------------------------------------ chat

  def apply_chat_template(self, messages: Sequence[Mapping[str, str]],
                          add_generation_prompt: bool = True, **kwargs: Any) -> str:
    """The prompt text for `messages` ([{'role': ..., 'content': ...}]), ready for `encode`."""
    if self.chat_template is not None and _has_jinja():
      special = {k: getattr(self, k) for k in ("bos_token", "eos_token", "pad_token")}
      return _compiled(self.chat_template).render(
          messages=list(messages), add_generation_prompt=add_generation_prompt,
          **{**special, **kwargs})
    return self.chatml(messages, add_generation_prompt)

  def chatml(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
             ) -> str:
    """Plain ChatML, the fallback without jinja2; needs <|im_start|> in the vocabulary."""
    if self._tok.token_to_id("<|im_start|>") is None:
      reason = "jinja2 is not installed" if self.chat_template else "it has no chat template"
      raise RuntimeError(f"cannot render chat for this tokenizer: {reason} and its vocabulary "
                         "is not ChatML")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

  # ------------------------------------------------------------------ saving

  def save(self, directory: str) -> None:
    """Writes tokenizer.json and tokenizer_config.json (loadable by transformers' AutoTokenizer)."""
    os.makedirs(directory, exist_ok=True)
    self._tok.save(os.path.join(directory, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token,
           "eos_token": self.eos_token, "pad_token": self.pad_token,
           "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
    if self.chat_template is not None:
      cfg["chat_template"] = self.chat_template
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump(cfg, f, indent=2, ensure_ascii=False)


def _read_sidecar_files(directory: str) -> dict[str, Any]:
  """Special tokens and chat template from the files transformers writes beside tokenizer.json."""
  out: dict[str, Any] = {}
  for name in ("config.json", "generation_config.json"):
    for key in ("bos_token_id", "eos_token_id"):
      v = _read_json(os.path.join(directory, name)).get(key)
      if isinstance(v, list):  # several stop ids: the first is the EOS
        v = v[0] if v else None
      if v is not None:
        out[key.replace("_token_id", "_id")] = v
  for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
    cfg = _read_json(os.path.join(directory, name))
    for key in ("bos_token", "eos_token", "pad_token"):
      if _token_str(cfg.get(key)) is not None:
        out[key] = _token_str(cfg[key])
    if _template_str(cfg.get("chat_template")) is not None:
      out["chat_template"] = _template_str(cfg["chat_template"])
  jinja = os.path.join(directory, "chat_template.jinja")
  if os.path.exists(jinja):
    with open(jinja, encoding="utf-8") as f:
      out["chat_template"] = f.read()
  return out


def _has_jinja() -> bool:
  try:
    import jinja2  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


@functools.lru_cache(maxsize=16)
def _compiled(template: str):
  """The template in a sandboxed environment set up as transformers sets up its own."""
  import jinja2  # pylint: disable=import-outside-toplevel
  from jinja2 import ext, sandbox  # pylint: disable=import-outside-toplevel

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=[ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)
