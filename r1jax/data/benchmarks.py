"""Evaluation benchmarks as TFDS builders (array_record files, no TensorFlow) with one record shape:
{'problem': str, 'answer': str, 'id': str}.

Each builder reads a local JSONL file from `manual_dir` (the folder holding it). Without one,
GSM8K, AIME 2024 and AMC 2023 read the copies bundled in the package (r1jax/data/files, see its
README; `bundled_dir`), so they work offline; GSM8K still downloads its public files when neither
is there. `load_benchmark(name, ...)` builds (once) and reads a benchmark as a list of dicts in
file order. `BENCHMARKS` maps names to loaders (the toy world's held-out set is one; others plug
in with `register_benchmark`), `EVAL_DEFAULTS` to how each is evaluated (samples per problem,
generation length, answer extraction, grading mode).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator

import tensorflow_datasets as tfds

from r1jax.data import jsonl
from r1jax.errors import ConfigError

GSM8K_URL = ("https://raw.githubusercontent.com/openai/grade-school-math/master/"
             "grade_school_math/data/test.jsonl")
FILE_FORMAT = "array_record"
# Benchmarks whose source files ship with the package, one folder each under FILES_DIR.
BUNDLED = ("gsm8k", "aime24", "amc23")
FILES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")

Loader = Callable[..., list[dict]]
PathLike = str | os.PathLike


def bundled_dir(name: str) -> str | None:
  """The package's own copy of a benchmark's files, so no manual_dir or network is needed; None
  for other benchmarks or when the files were left out of the install."""
  path = os.path.join(FILES_DIR, name)
  return path if name in BUNDLED and os.path.isdir(path) else None


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "problem": tfds.features.Text(),  # the question, as given to the model
      "answer": tfds.features.Text(),  # the gold final answer, as a string
      "id": tfds.features.Text(),  # stable identifier within the benchmark
  })


def _as_text(value: Any) -> str:
  """JSON scalars as the text they were written as (27.0 stays "27.0"; grading handles 27)."""
  if isinstance(value, str):
    return value
  if isinstance(value, bool) or value is None:
    raise ValueError(f"expected a string or number, got {value!r}")
  return json.dumps(value)


class RecordError(ConfigError, KeyError):
  """A benchmark file line that is not a record of its format, named by `path:line`. Also a
  KeyError (a missing field) and a ValueError (a bad value), as those errors were before."""

  def __str__(self):  # KeyError would repr() the message
    return str(self.args[0])


def _read_jsonl(path) -> Iterator[tuple[int, dict]]:
  """(0-based line number, object) of each non-blank line; a RecordError naming `path:line` for
  a line that is not a JSON object, or a file that is not UTF-8."""
  for line_no, row in jsonl.objects(path, RecordError):
    yield line_no - 1, row


def gsm8k_gold(solution: str) -> str:
  """GSM8K's final answer: the text after '####', thousands commas removed ("1,600" -> "1600")."""
  if "####" not in solution:
    raise ValueError(f"GSM8K solution without '####': {solution[-80:]!r}")
  return solution.rsplit("####", 1)[1].strip().replace(",", "")


class _JsonlBenchmark(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A benchmark read from one JSONL file in manual_dir (or bundled, or downloaded from URL)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  FILE_NAME = "test.jsonl"
  SPLIT = "test"
  URL: str | None = None
  HOMEPAGE = ""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass manual_dir=<the folder holding the benchmark's JSONL file>."

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """No source folder: TFDS 4.9.10 would otherwise import `importlib_resources` (a package
    it needs only on Python < 3.9) to look for a checksums file these builders do not ship."""
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=_features(),
                                 homepage=self.HOMEPAGE, disable_shuffling=True)

  def _file_name(self) -> str:
    return self.FILE_NAME

  def _split_name(self) -> str:
    return self.SPLIT

  def _source_file(self, dl_manager):
    try:
      local = dl_manager.manual_dir / self._file_name()
    except AssertionError:  # no manual_dir given, or it is missing / empty
      local = None
    if local is not None and local.exists():
      return local
    if self.URL:
      return dl_manager.download(self.URL)
    raise FileNotFoundError(f"{self.name}: no {self._file_name()} in manual_dir. "
                            f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  # Further splits: name -> (file name in manual_dir, URL or None). Built when their file is
  # there (or downloadable), so a manual_dir holding only the test file still works.
  EXTRA_SPLITS: dict[str, tuple[str, str | None]] = {}

  def _split_generators(self, dl_manager):
    splits = {self._split_name(): self._generate_examples(self._source_file(dl_manager))}
    for split, (file_name, url) in self.EXTRA_SPLITS.items():
      try:
        local = dl_manager.manual_dir / file_name
      except AssertionError:
        local = None
      if local is not None and local.exists():
        splits[split] = self._generate_examples(local)
      elif url:
        splits[split] = self._generate_examples(dl_manager.download(url))
    return splits

  def _generate_examples(self, path):
    for line_no, row in _read_jsonl(path):
      try:
        record = self._record(line_no, row)
      except (KeyError, ValueError, TypeError) as e:
        what = f"field {e.args[0]!r} missing" if type(e) is KeyError else str(e)
        raise RecordError(f"{path}:{line_no + 1}: not a {self.name} record: {what}") from None
      bad = sorted(k for k, v in record.items() if not isinstance(v, str))
      if bad:
        raise RecordError(f"{path}:{line_no + 1}: not a {self.name} record: {bad} must be text")
      yield record["id"], record

  def _record(self, line_no: int, row: dict) -> dict:
    raise NotImplementedError


class Gsm8k(_JsonlBenchmark):
  """GSM8K test set (Cobbe et al., 2021): 1,319 grade-school word problems; gold after '####'."""

  name = "gsm8k"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "The train split (RL prompts)."}
  URL = GSM8K_URL
  EXTRA_SPLITS = {"train": ("train.jsonl", GSM8K_URL.replace("test.jsonl", "train.jsonl"))}
  HOMEPAGE = "https://github.com/openai/grade-school-math"

  def _record(self, line_no, row):
    return {"problem": row["question"], "answer": gsm8k_gold(row["answer"]), "id": str(line_no)}


class Aime24(_JsonlBenchmark):
  """AIME 2024 I and II: 30 problems with integer answers 0-999 (as strings, e.g. "025")."""

  name = "aime24"
  HOMEPAGE = "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I"

  def _record(self, line_no, row):
    return {"problem": row["problem"], "answer": _as_text(row["answer"]), "id": _as_text(row["id"])}


class Amc23(_JsonlBenchmark):
  """AMC 2023: 40 problems; answers are numbers written as floats (27.0), kept as given."""

  name = "amc23"
  HOMEPAGE = "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A"

  def _record(self, line_no, row):
    return {"problem": row["problem"], "answer": _as_text(row["answer"]), "id": _as_text(row["id"])}


@dataclasses.dataclass(eq=False)
class MathJsonlConfig(tfds.core.BuilderConfig):
  """Where a generic math JSONL keeps its fields. An empty id_field numbers the lines instead."""

  problem_field: str = "problem"
  answer_field: str = "answer"
  id_field: str = ""
  file_name: str = "test.jsonl"
  split: str = "test"


class MathJsonl(_JsonlBenchmark):
  """Any math JSONL file (MATH-500 and the like) with field names from the builder config."""

  name = "math_jsonl"

  @property
  def _fields(self) -> MathJsonlConfig:
    return self.builder_config or MathJsonlConfig(name="default")

  def _file_name(self) -> str:
    return self._fields.file_name

  def _split_name(self) -> str:
    return self._fields.split

  def _record(self, line_no, row):
    cfg = self._fields
    for field in (cfg.problem_field, cfg.answer_field) + ((cfg.id_field,) if cfg.id_field else ()):
      if field not in row:
        raise RecordError(f"field {field!r} missing (has {sorted(row)})")
    rid = _as_text(row[cfg.id_field]) if cfg.id_field else str(line_no)
    return {"problem": _as_text(row[cfg.problem_field]), "answer": _as_text(row[cfg.answer_field]),
            "id": rid}


def build(builder_cls, *, data_dir: PathLike | None = None, manual_dir: PathLike | None = None,
          config: tfds.core.BuilderConfig | str | None = None) -> tfds.core.DatasetBuilder:
  """Prepares the array_record files (once; later calls reuse them) and returns the builder.
  No manual_dir ('' or None) means the bundled copy, where the package has one."""
  manual_dir = manual_dir or bundled_dir(builder_cls.name)
  builder = builder_cls(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir else None)
  builder.download_and_prepare(download_config=download_config)
  return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str = "test") -> list[dict]:
  """Reads a prepared split with TFDS's TF-free data source; text decoded to str, file order."""
  source = builder.as_data_source(split=split)
  return [{k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in source[i].items()}
          for i in range(len(source))]


def _load_tfds(builder_cls, *, data_dir=None, manual_dir=None, split: str = "test",
               **options) -> list[dict]:
  config = None
  if builder_cls is MathJsonl:
    # The config name names the prepared files: give each JSONL file its own name.
    config = MathJsonlConfig(name=options.pop("config_name", "default"), version=MathJsonl.VERSION,
                             split=split, **options)
  elif options:
    raise TypeError(f"{builder_cls.name} takes no builder options, got {sorted(options)}")
  builder = build(builder_cls, data_dir=data_dir, manual_dir=manual_dir, config=config)
  return read_split(builder, split)


def _load_toy(*, data_dir=None, manual_dir=None, split: str = "test", **world) -> list[dict]:
  """The toy world's held-out problems; `world` overrides ToyWorldConfig fields."""
  from r1jax.data import prompts, toy_tfds, toy_world  # lazy: those modules import this one

  if split != "test" or manual_dir:
    raise ValueError("the toy held-out set has only split 'test' and is generated, not read")
  return toy_tfds.load_toy_heldout(data_dir or prompts.default_data_dir(),
                                   toy_world.ToyWorldConfig(**world))


@dataclasses.dataclass(frozen=True)
class EvalDefaults:
  """How a benchmark is evaluated unless the config says otherwise."""

  k: int  # samples per problem (pass@1 is averaged over them; cons@k votes among them)
  max_new_tokens: int  # generation budget per sample
  extract: tuple[str, ...]  # answer extraction modes, tried in order (see r1jax.grading)
  grade_mode: str = "math"  # 'math' (math-verify) or 'exact'
  template: str = "r1_zero"  # prompt template (r1jax.templates): the paper's zero-shot prompt


BENCHMARKS: dict[str, Loader] = {
    "gsm8k": functools.partial(_load_tfds, Gsm8k),
    "aime24": functools.partial(_load_tfds, Aime24),
    "amc23": functools.partial(_load_tfds, Amc23),
    "math_jsonl": functools.partial(_load_tfds, MathJsonl),
    "toy": _load_toy,
}

_MATH = ("answer_tag", "boxed")
# R1 samples 64 answers per AIME problem, up to 32,768 tokens each (the paper's evaluation setup).
EVAL_DEFAULTS: dict[str, EvalDefaults] = {
    "gsm8k": EvalDefaults(k=4, max_new_tokens=8192, extract=_MATH + ("hash", "last_number")),
    "aime24": EvalDefaults(k=64, max_new_tokens=32768, extract=_MATH),
    "amc23": EvalDefaults(k=16, max_new_tokens=32768, extract=_MATH),
    "math_jsonl": EvalDefaults(k=4, max_new_tokens=32768, extract=_MATH),
    # The toy world: as the GRPO stage's held-out eval (configs/grpo_zero.py, c.eval).
    "toy": EvalDefaults(k=4, max_new_tokens=64, extract=("answer_tag",), grade_mode="exact",
                        template="toy"),
}


def register_benchmark(name: str, loader: Loader, defaults: EvalDefaults) -> None:
  """Adds a benchmark: loader(data_dir=..., manual_dir=..., split=...) -> list of records."""
  if name in BENCHMARKS and BENCHMARKS[name] is not loader:
    raise ValueError(f"benchmark {name!r} is already registered")
  BENCHMARKS[name] = loader
  EVAL_DEFAULTS[name] = defaults


def load_benchmark(name: str, data_dir: PathLike | None = None, manual_dir: PathLike | None = None,
                   split: str = "test", **options) -> list[dict]:
  """Records {'problem', 'answer', 'id'} of a registered benchmark, in file order.

  data_dir: where TFDS keeps the prepared files (default: TFDS_DATA_DIR or ~/tensorflow_datasets).
  manual_dir: the folder holding the source JSONL (default: `bundled_dir(name)` for gsm8k, aime24
  and amc23). options: MathJsonl fields (problem_field, ...).
  """
  if name not in BENCHMARKS:
    raise KeyError(f"unknown benchmark {name!r}; registered: {sorted(BENCHMARKS)}")
  return BENCHMARKS[name](data_dir=data_dir, manual_dir=manual_dir, split=split, **options)
