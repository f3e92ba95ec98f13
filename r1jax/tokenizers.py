"""One tokenizer interface over SentencePiece and Hugging Face tokenizer.json files.

Stages see only `Tokenizer`: encode/decode, the special ids and the piece table. The R1 tags are
single pieces so that rewards, masks and samplers can find them by id; digits are split so that
arithmetic is learnable. `load_tokenizer` picks the implementation from the path.
"""
from __future__ import annotations

import io
from typing import Iterable, Protocol, Sequence, runtime_checkable

from etils import epath
import sentencepiece as spm

R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@runtime_checkable
class Tokenizer(Protocol):
  """What r1jax needs of a tokenizer. Ids are plain ints; decode drops control ids.

  bos_id is None for models without one (Qwen2.5). r1jax's implementations also take
  encode(text, add_bos=..., add_eos=...); callers that accept any Tokenizer use encode(text).
  """

  @property
  def vocab_size(self) -> int: ...
  @property
  def bos_id(self) -> int | None: ...
  @property
  def eos_id(self) -> int | None: ...
  @property
  def pad_id(self) -> int | None: ...
  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def id_to_piece(self, i: int) -> str: ...
  def piece_to_id(self, piece: str) -> int: ...


class SentencePieceTokenizer:
  """A SentencePiece model; `train` builds one from an iterator of texts."""

  prepend_bos = True  # r1jax documents are [bos] prompt completion [eos] (see templates.prompt_ids)

  def __init__(self, model: str | bytes):
    """`model`: a path to a `.model` file (local or any epath, e.g. gs://) or its bytes."""
    proto = model if isinstance(model, bytes) else epath.Path(model).read_bytes()
    self._sp = spm.SentencePieceProcessor(model_proto=proto)
    self._proto = proto

  @classmethod
  def train(cls, texts: Iterable[str], out_path: str | None = None, *, vocab_size: int,
            user_defined_symbols: Sequence[str] = R1_TAGS, model_type: str = "bpe",
            byte_fallback: bool = True, split_digits: bool = True,
            max_sentence_length: int = 16384, num_threads: int = 2) -> "SentencePieceTokenizer":
    """Trains on `texts` (any iterable, streamed) and writes `out_path` if given.

    Lossless by construction: identity normalisation, whitespace kept as is, no dummy prefix, so
    decode(encode(x)) == x and encode(a) + encode(b) == encode(a + b) at a tag boundary. Ids:
    pad 0, unk 1, bos 2, eos 3, then the user-defined symbols (each a single piece).
    """
    if any("," in s for s in user_defined_symbols):
      raise ValueError("user_defined_symbols may not contain ','")
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=writer, vocab_size=vocab_size,
        model_type=model_type, user_defined_symbols=list(user_defined_symbols),
        split_digits=split_digits, byte_fallback=byte_fallback, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        max_sentence_length=max_sentence_length, num_threads=num_threads, minloglevel=2)
    tok = cls(writer.getvalue())
    if out_path is not None:
      tok.save(out_path)
    return tok

  def save(self, path: str) -> None:
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(self._proto)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    """The model's pad id; models trained without one (pad -1) pad with eos, masked anyway."""
    pad = self._sp.pad_id()
    return pad if pad >= 0 else self.eos_id

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    return self._sp.encode(text, add_bos=add_bos, add_eos=add_eos)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    if not 0 <= i < self.vocab_size:
      raise ValueError(f"id {i} outside the vocabulary [0, {self.vocab_size})")
    return self._sp.id_to_piece(int(i))

  def piece_to_id(self, piece: str) -> int:
    """Raises for a piece that is not in the vocabulary (SentencePiece would return unk)."""
    i = self._sp.piece_to_id(piece)
    if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i):
      raise KeyError(f"{piece!r} is not a piece of this tokenizer")
    return i


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
  """A prompt's ids as the model saw prompts in training: [bos] + text for tokenizers whose
  documents start with bos (`prepend_bos`: r1jax's SentencePiece ones; HF tokenizers that add
  no bos by default, such as SmolLM2's, leave it off). Sampling, RL and evaluation all use this."""
  ids = tokenizer.encode(text)
  if getattr(tokenizer, "prepend_bos", False) and tokenizer.bos_id is not None:
    ids = [tokenizer.bos_id] + ids
  return ids


def load_tokenizer(path: str) -> Tokenizer:
  """`.model` file -> SentencePiece; `tokenizer.json` or a directory holding one -> HFTokenizer.

  A directory without tokenizer.json but with tokenizer.model loads that SentencePiece model.
  """
  p = epath.Path(path)
  if p.suffix == ".model":
    return SentencePieceTokenizer(path)
  if p.name == "tokenizer.json" or (p.is_dir() and (p / "tokenizer.json").exists()):
    try:
      from r1jax.hf_tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"{path} is a Hugging Face tokenizer but r1jax.hf_tokenizer is "
                        f"unavailable: {e}") from e
    return HFTokenizer(path)
  if p.is_dir() and (p / "tokenizer.model").exists():
    return SentencePieceTokenizer(str(p / "tokenizer.model"))
  raise ValueError(f"cannot tell the tokenizer type of {path!r}: expected a .model file, a "
                   "tokenizer.json file or a directory holding one of them")

