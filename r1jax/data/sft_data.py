"""SFT data sets: where the (prompt, completion) documents of an SFT stage come from.

`data.source` names one or more sources, comma separated, concatenated in that order:
  toy:<kind>           a toy-world TFDS set: corpus, cold_start, general_sft
  jsonl:<fmt>:<path>   a JSONL file in a format of r1jax.data.jsonl (cold_start or sft)
  parent:<role>        the SFT data set a rejection-sampling stage wrote into that parent's dir

A rejection-sampling stage writes `sft.jsonl` and turns it into a TFDS data set (array_record,
read through grain without TensorFlow) under `tfds/` beside it, with `write_dataset`; SFT stages
read it back with `dataset_source`.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

from etils import epath
import tensorflow_datasets as tfds

from r1jax.data import jsonl, toy_tfds
from r1jax.data.loader import decode_record
from r1jax.errors import ConfigError

SFT_FILE = "sft.jsonl"
FIELDS = ("id", "prompt", "completion", "task")
TOY_KINDS = ("corpus", "cold_start", "general_sft")


class SFTDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """An SFT data set from a JSONL file of {id, prompt, completion, task}; named by its digest."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  code_path = epath.Path(__file__)  # see toy_tfds: TF-free installs lack importlib_resources
  name = "r1jax_sft"

  def __init__(self, jsonl_path: str, **kwargs):
    self.jsonl_path = jsonl_path
    with open(jsonl_path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()[:12]
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=tfds.core.BuilderConfig(name=f"sha{digest}"), **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=(
        tfds.features.FeaturesDict({f: tfds.features.Text() for f in FIELDS})))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    with open(self.jsonl_path, encoding="utf-8") as f:
      for i, line in enumerate(f):
        r = json.loads(line)
        yield i, {k: str(r.get(k, "")) for k in FIELDS}


def write_dataset(run_dir: str, records: Sequence[dict]) -> int:
  """Writes `records` ({id, prompt, completion, task}) as RUN_DIR/sft.jsonl and its TFDS set."""
  path = os.path.join(run_dir, SFT_FILE)
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps({k: r.get(k, "") for k in FIELDS}, ensure_ascii=False) + "\n")
  builder = SFTDataset(path, data_dir=os.path.join(run_dir, "tfds"))
  builder.download_and_prepare()
  return len(records)


def dataset_source(run_dir: str):
  """The random-access source a rejection-sampling stage wrote into `run_dir`."""
  path = os.path.join(run_dir, SFT_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"{run_dir}: no {SFT_FILE}; is it a rejection-sampling run?")
  builder = SFTDataset(path, data_dir=os.path.join(run_dir, "tfds"))
  builder.download_and_prepare()  # a no-op when the files exist
  return builder.as_data_source(split="train")


class ConcatSource:
  """Random access over several sources in turn (records decoded to str)."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = list(sources)
    self.offsets = [0]
    for s in self.sources:
      self.offsets.append(self.offsets[-1] + len(s))

  def __len__(self) -> int:
    return self.offsets[-1]

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < len(self):
      raise IndexError(i)
    j = next(k for k in range(len(self.sources)) if i < self.offsets[k + 1])
    return decode_record(self.sources[j][i - self.offsets[j]])


def resolve_source(spec: str, *, data_dir: str, world, template: str,
                   parent_dirs: dict[str, str]) -> ConcatSource:
  """The documents named by `data.source` (see the module docstring)."""
  parts = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    kind, _, rest = item.partition(":")
    if kind == "toy":
      if rest not in TOY_KINDS:
        raise ConfigError(f"data.source {item!r}: toy SFT sets are {TOY_KINDS}")
      parts.append(toy_tfds.data_source(rest, data_dir, world))
    elif kind == "jsonl":
      fmt, _, path = rest.partition(":")
      parts.append(jsonl.sft_records(path, fmt, template))
    elif kind == "parent":
      if rest not in parent_dirs:
        raise ConfigError(f"data.source {item!r}: no parent {rest!r} in config.parents")
      parts.append(dataset_source(parent_dirs[rest]))
    else:
      raise ConfigError(f"data.source {item!r}: expected toy:<kind>, jsonl:<fmt>:<path> or "
                        "parent:<role>")
  source = ConcatSource(parts)
  if not len(source):
    raise ConfigError(f"data.source {spec!r} holds no documents")
  return source
