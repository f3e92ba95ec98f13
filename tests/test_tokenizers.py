"""SentencePiece tokenizer: lossless round trips, single-piece tags and digits, loading."""
import pickle
import sys

import pytest

from r1jax import templates, tokenizers
from r1jax.data import toy_world as tw

WORLD = tw.ToyWorldConfig(corpus_size=3_000, cold_start_size=200, preference_size=200)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "toy.model"
  t = tw.train_tokenizer(WORLD, str(path))
  assert path.exists()
  return t


def _toy_texts():
  docs = list(tw.corpus(WORLD))
  texts = [d["prompt"] + d["completion"] for d in docs]
  texts += [r["prompt"] + r["completion"] for r in tw.cold_start(WORLD)]
  texts += [r["prompt"] + r["chosen"] for r in tw.preferences(WORLD)]
  return texts


def test_interface_and_special_ids(tok):
  assert isinstance(tok, tokenizers.Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 2, 3, 448)
  assert tok.id_to_piece(tok.eos_id) == "</s>" and tok.id_to_piece(tok.bos_id) == "<s>"
  with pytest.raises(ValueError):
    tok.id_to_piece(tok.vocab_size)
  with pytest.raises(KeyError):
    tok.piece_to_id("no such piece")


def test_tags_digits_and_ops_are_single_pieces(tok):
  for s in tw.TOKENIZER_SYMBOLS + tuple("0123456789+*="):
    ids = tok.encode(s)
    assert len(ids) == 1 and tok.id_to_piece(ids[0]) == s and tok.piece_to_id(s) == ids[0], s
  assert [tok.id_to_piece(i) for i in tok.encode("<think>12+345=7</think><answer>7</answer>")] == [
      "<think>", "1", "2", "+", "3", "4", "5", "=", "7", "</think>", "<answer>", "7", "</answer>"]


def test_round_trip_on_every_kind_of_toy_text(tok):
  texts = _toy_texts()
  assert any(tw.ZH_THEN in t for t in texts)
  for t in texts:
    assert tok.decode(tok.encode(t)) == t
  assert tok.encode_batch(texts[:50]) == [tok.encode(t) for t in texts[:50]]


def test_prompt_and_completion_tokenize_independently(tok):
  """Training encodes prompt and completion apart; RL samples after the encoded prompt: the
  ids must be the same as encoding the whole document."""
  for d in tw.corpus(WORLD):
    assert tok.encode(d["prompt"]) + tok.encode(d["completion"]) == tok.encode(
        d["prompt"] + d["completion"])


def test_byte_fallback_and_control_ids(tok):
  text = "Grüße, 世界 🙂\n  two  spaces"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.decode([tok.bos_id] + tok.encode("1+2") + [tok.eos_id, tok.pad_id]) == "1+2"


def test_save_load_and_pickle(tok, tmp_path):
  tok.save(str(tmp_path / "a" / "x.model"))
  for loaded in (tokenizers.load_tokenizer(str(tmp_path / "a" / "x.model")),
                 pickle.loads(pickle.dumps(tok))):
    assert isinstance(loaded, tokenizers.SentencePieceTokenizer)
    assert loaded.encode("User: 1+2\nAssistant:") == tok.encode("User: 1+2\nAssistant:")
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "tokenizer.model").write_bytes((tmp_path / "a" / "x.model").read_bytes())
  assert tokenizers.load_tokenizer(str(tmp_path / "b")).vocab_size == tok.vocab_size


def test_load_tokenizer_dispatch_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="cannot tell"):
    tokenizers.load_tokenizer(str(tmp_path))
  (tmp_path / "tokenizer.json").write_text("{}")
  monkeypatch.setitem(sys.modules, "r1jax.hf_tokenizer", None)  # import fails
  with pytest.raises(ImportError, match="Hugging Face"):
    tokenizers.load_tokenizer(str(tmp_path))
  with pytest.raises(ValueError, match=","):
    tokenizers.SentencePieceTokenizer.train(["a,b"], vocab_size=300, user_defined_symbols=["a,b"])


def test_prompt_templates():
  r1_zero = ("A conversation between User and Assistant. The user asks a question, and the "
             "Assistant solves it. The assistant first thinks about the reasoning process in the "
             "mind and then provides the user with the answer. The reasoning process and answer "
             "are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
             "i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
             "User: What is 2+2?. Assistant:")
  assert templates.format_prompt("r1_zero", "What is 2+2?") == r1_zero
  assert templates.format_prompt("toy", "1+2") == "User: 1+2\nAssistant:"
  assert templates.format_prompt("plain", "x {y}") == "x {y}"
  assert templates.format_prompt("Q: {prompt} A:", "{prompt}") == "Q: {prompt} A:"
  with pytest.raises(ValueError, match="unknown template"):
    templates.format_prompt("chatml", "x")


class _CharsNoBos:
  """A tokenizer without bos (like Qwen2.5's): ids are code points, eos is 1."""
  vocab_size, bos_id, eos_id, pad_id = 0x110000, None, 1, 1

  def encode(self, text):
    return [ord(c) for c in text]


def test_encode_prompt_adds_bos_only_where_there_is_one(tok):
  assert tokenizers.encode_prompt(tok, "User: 1+2") == [tok.bos_id] + tok.encode("User: 1+2")
  assert tok.encode("1", add_bos=True, add_eos=True) == [tok.bos_id] + tok.encode("1") + [
      tok.eos_id]
  assert tokenizers.encode_prompt(_CharsNoBos(), "ab") == [97, 98]
