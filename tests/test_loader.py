"""TFDS toy builders (TF-free, array_record) and the grain loaders over them."""
import dataclasses
import json
import sys

import numpy as np
import pytest

from r1jax.data import loader, toy_tfds
from r1jax.data import toy_world as tw

WORLD = tw.ToyWorldConfig(corpus_size=3_000, rl_size=300, test_size=64, cold_start_size=50,
                          preference_size=80, general_sft_size=40)
SIZES = {"corpus": 3_000, "rl": 300, "heldout": 64, "cold_start": 50, "preferences": 80,
         # every toy instruction once, split about 3:1 by hash of its text
         "general_rl": 118, "general_test": 36, "general_sft": 40}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  assert toy_tfds.prepare_all(d, WORLD) == SIZES
  return d


@pytest.fixture(scope="module")
def tok():
  return tw.train_tokenizer(WORLD)


def test_builds_and_reads_back_without_tensorflow(data_dir):
  assert "tensorflow" not in sys.modules
  expected = {"corpus": list(tw.corpus(WORLD)), "rl": tw.problems(WORLD, "rl"),
              "heldout": tw.problems(WORLD, "test"), "cold_start": tw.cold_start(WORLD),
              "preferences": tw.preferences(WORLD)}
  for kind, records in expected.items():
    assert toy_tfds.load_records(kind, data_dir, WORLD) == sorted(records, key=lambda r: r["id"])
  held = toy_tfds.load_toy_heldout(data_dir, WORLD, limit=10)
  assert [set(r) for r in held] == [{"id", "problem", "answer"}] * 10
  assert held == toy_tfds.load_records("heldout", data_dir, WORLD)[:10]
  b = toy_tfds.builder("heldout", data_dir, WORLD, prepare=False)
  assert b.info.splits["test"].num_examples == 64 and b.info.file_format.value == "array_record"


def test_config_name_tracks_every_knob():
  names = {toy_tfds.config_name(WORLD), toy_tfds.config_name(dataclasses.replace(WORLD, seed=1)),
           toy_tfds.config_name(dataclasses.replace(WORLD, think_share=0.3))}
  assert len(names) == 3 and toy_tfds.config_name(WORLD).startswith("seed0-")
  with pytest.raises(ValueError, match="unknown toy data set"):
    toy_tfds.builder("nope", "/tmp", WORLD)


def _docs_of(batch):
  """Splits packed rows into (tokens, loss_mask) per segment, checking positions on the way."""
  out = []
  for toks, mask, seg, pos in zip(batch["tokens"], batch["loss_mask"], batch["segment_ids"],
                                  batch["positions"]):
    n = int((seg > 0).sum())
    assert (seg[n:] == 0).all() and (mask[n:] == 0).all() and (toks[n:] == 0).all()
    assert (np.diff(seg[:n]) >= 0).all() and seg[0] == 1  # contiguous segments 1, 2, ...
    for s in range(1, seg.max() + 1):
      idx = np.flatnonzero(seg == s)
      assert (idx == np.arange(idx[0], idx[0] + len(idx))).all()
      assert (pos[idx] == np.arange(len(idx))).all()
      out.append((toks[idx].tolist(), mask[idx].tolist()))
  return out


def test_packed_rows_hold_whole_documents_with_completion_masks(data_dir, tok):
  src = toy_tfds.data_source("corpus", data_dir, WORLD)
  by_text = {d["prompt"] + d["completion"]: d for d in tw.corpus(WORLD)}
  it = iter(loader.lm_dataset(src, tok, seq_len=64, batch_size=4, seed=3))
  batch = next(it)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: ((4, 64), np.int32) for k in ("tokens", "loss_mask", "segment_ids", "positions")}
  docs = [d for _ in range(5) for d in _docs_of(next(it))]
  assert len(docs) > 40
  for toks, mask in docs:
    assert toks[0] == tok.bos_id and toks[-1] == tok.eos_id
    d = by_text[tok.decode(toks)]
    n_prompt = 1 + len(tok.encode(d["prompt"]))
    assert mask == [0] * n_prompt + [1] * (len(toks) - n_prompt)


def test_same_seed_same_batches_and_state_restore(data_dir, tok):
  src = toy_tfds.data_source("corpus", data_dir, WORLD)
  make = lambda seed: iter(loader.lm_dataset(src, tok, seq_len=48, batch_size=3, seed=seed))
  a, b, c = make(0), make(0), make(1)
  first = [next(a) for _ in range(3)]
  for x in first:
    np.testing.assert_array_equal(x["tokens"], next(b)["tokens"])
  assert not np.array_equal(first[0]["tokens"], next(c)["tokens"])
  state = json.loads(json.dumps(a.get_state()))  # JSON-able, as checkpoints store it
  want = [next(a) for _ in range(4)]
  fresh = make(0)
  fresh.set_state(state)
  for w in want:
    got = next(fresh)
    for k in w:
      np.testing.assert_array_equal(got[k], w[k])


def test_padded_rows_one_document_each(data_dir, tok):
  src = toy_tfds.data_source("cold_start", data_dir, WORLD)
  batch = next(iter(loader.lm_dataset(src, tok, seq_len=200, batch_size=4, pack=False)))
  docs = _docs_of(batch)
  assert len(docs) == 4 and (batch["segment_ids"].max(axis=1) == 1).all()
  for toks, mask in docs:
    text = tok.decode(toks)
    assert text.startswith("User: ") and text.endswith("</answer>") and sum(mask) > 30  # ~38


def test_truncation_keeps_the_first_tokens(tok):
  rec = {"prompt": b"User: 1+2+3\nAssistant:", "completion": b"<think>1+2=3 3+3=6</think>"}
  full = loader.TokenizeLM(tok, 1000).map(rec)
  cut = loader.TokenizeLM(tok, 10).map(rec)
  assert len(cut["tokens"]) == 10
  np.testing.assert_array_equal(cut["tokens"], full["tokens"][:10])
  np.testing.assert_array_equal(cut["loss_mask"], full["loss_mask"][:10])
  with pytest.raises(ValueError, match="no completion"):
    loader.TokenizeLM(tok, 10, add_eos=False).map({"prompt": "x", "completion": ""})


def test_record_batches_epochs_and_shards(data_dir):
  src = toy_tfds.data_source("rl", data_dir, WORLD)
  ids = {r["id"] for r in tw.problems(WORLD, "rl")}
  one = list(loader.record_dataset(src, batch_size=32, num_epochs=1, seed=0))
  assert [len(b) for b in one] == [32] * 9 + [12]
  assert sorted(r["id"] for b in one for r in b) == sorted(ids)
  two = [r["id"] for b in loader.record_dataset(src, batch_size=100, num_epochs=2, seed=0)
         for r in b]
  assert set(two[:300]) == set(two[300:]) == ids and two[:300] != two[300:]  # reshuffled
  shards = [[r["id"] for b in loader.record_dataset(src, batch_size=50, num_epochs=1,
                                                    shard_index=i, shard_count=2,
                                                    fields=("id",)) for r in b]
            for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 150 and set(shards[0]) | set(shards[1]) == ids
  with pytest.raises(ValueError, match="shard_index"):
    loader.record_dataset(src, batch_size=4, shard_index=2, shard_count=2)


class _CharsNoBos:
  """A tokenizer without bos (like Qwen2.5's): ids are code points, eos is 1."""
  vocab_size, bos_id, eos_id, pad_id = 0x110000, None, 1, 1

  def encode(self, text):
    return [ord(c) for c in text]


def test_tokenize_without_bos():
  out = loader.TokenizeLM(_CharsNoBos(), 100).map({"prompt": "ab", "completion": "c"})
  assert out["tokens"].tolist() == [97, 98, 99, 1] and out["loss_mask"].tolist() == [0, 0, 1, 1]
