"""Code problem sets for the `code` reward: records that carry their own test cases.

A record is {'id', 'problem', 'answer' (a reference solution), 'task': 'code', 'tests'}, with
tests in the format of `r1jax.rl.code_sandbox`. They are read straight from JSONL rather than
through TFDS, whose flat text features would have to serialise the nested `tests` list.
`toy_code` is the small set shipped in r1jax/data/files/code/; its 'train' and 'test' splits
come from a hash of each id, so adding a problem never moves the others.
"""
from __future__ import annotations

import os
import zlib
from typing import Any

from r1jax.data import jsonl
from r1jax.rl import code_sandbox

CODE_SETS = {"toy_code": os.path.join(os.path.dirname(os.path.abspath(__file__)), "files", "code",
                                      "toy_code.jsonl")}
TEST_SHARE = 4  # one id in this many (by crc32) goes to 'test'


def split_of(problem_id: str) -> str:
  return "test" if zlib.crc32(problem_id.encode("utf-8")) % TEST_SHARE == 0 else "train"


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Checked code records of a JSONL file, in file order; errors name the file and line."""
  out, seen = [], set()
  for line_no, row in jsonl.objects(path):
    where = f"{path}:{line_no}"
    for key in ("id", "problem", "answer"):
      if not isinstance(row.get(key), str) or not row[key].strip():
        raise ValueError(f"{where}: a code record needs a non-empty string {key!r}")
    if row["id"] in seen:
      raise ValueError(f"{where}: duplicate id {row['id']!r}")
    seen.add(row["id"])
    try:
      code_sandbox.parse_tests(row.get("tests"))
    except (ValueError, TypeError) as e:
      raise ValueError(f"{where}: {e}") from None
    out.append({**row, "task": row.get("task") or "code"})
  return out


def load_code_problems(name: str, split: str) -> list[dict[str, Any]]:
  """Records of a code set in CODE_SETS for split 'train' or 'test'."""
  if split not in ("train", "test"):
    raise ValueError(f"code problem sets have splits 'train' and 'test', not {split!r}")
  if name not in CODE_SETS:
    raise KeyError(f"unknown code problem set {name!r}; known: {sorted(CODE_SETS)}")
  return [r for r in read_jsonl(CODE_SETS[name]) if split_of(r["id"]) == split]
