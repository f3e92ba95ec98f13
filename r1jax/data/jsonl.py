"""JSONL data files for real models, each line checked, errors naming the file and line.

Formats (one JSON object per line, UTF-8):
  cold_start   {"problem", "reasoning", "summary", "answer"}: long CoT in the R1 format
  sft          {"prompt", "response"}: general (non-reasoning) SFT; `response` is the reply, or
               a whole R1-format response if it holds `<think>`
  preferences  {"prompt", "chosen", "rejected"}: pairs for the reward model
Every format may carry an "id"; records come back as dicts of str, in file order.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from r1jax import response
from r1jax.errors import ConfigError
from r1jax.templates import format_prompt

FORMATS: dict[str, tuple[str, ...]] = {
    "cold_start": ("problem", "reasoning", "summary", "answer"),
    "sft": ("prompt", "response"),
    "preferences": ("prompt", "chosen", "rejected"),
}


def objects(path, error: type[Exception] = ConfigError,
            what: str = "a JSON object") -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) of each non-blank line of a UTF-8 JSONL file. A line that is
  not JSON, not an object, or a file that is not UTF-8 raises `error` naming `path:line` (or the
  byte), never a raw decoder error. `what` names the object expected in that message."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
  except UnicodeDecodeError as e:
    raise error(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
  for line_no, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except (ValueError, RecursionError) as e:  # also an over-long integer, too deep a nesting
      raise error(f"{path}:{line_no}: not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(row, dict):
      raise error(f"{path}:{line_no}: expected {what}, got {type(row).__name__}")
    yield line_no, row


def read(path: str, fmt: str) -> list[dict[str, Any]]:
  """Checked records of a JSONL file in `fmt`; ConfigError naming `path:line` on a bad line."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown JSONL format {fmt!r}; known: {sorted(FORMATS)}")
  fields = FORMATS[fmt]
  out = []
  try:
    rows = list(objects(path, what=f"an object with {list(fields)}"))
  except FileNotFoundError:
    raise ConfigError(f"{path}: no such {fmt} file") from None
  for line_no, row in rows:
    missing = [k for k in fields if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
      raise ConfigError(f"{path}:{line_no}: {fmt} record needs non-empty string field(s) "
                        f"{missing}; got fields {sorted(row)}")
    rec = {k: row[k] for k in fields}
    rec["id"] = str(row.get("id", f"line-{line_no}"))
    out.append(rec)
  if not out:
    raise ConfigError(f"{path}: no {fmt} records")
  return out


def cold_start_completion(rec: dict) -> str:
  """(reasoning, summary, answer) -> `<think>reasoning</think>summary<answer>answer</answer>`."""
  return (f"{response.THINK_OPEN}{rec['reasoning'].strip()}{response.THINK_CLOSE}"
          f"{rec['summary'].strip()}{response.ANSWER_OPEN}{rec['answer'].strip()}"
          f"{response.ANSWER_CLOSE}")


def sft_records(path: str, fmt: str, template: str) -> list[dict[str, str]]:
  """A cold-start or SFT JSONL file as {id, prompt, completion} training documents."""
  if fmt == "cold_start":
    return [{"id": r["id"], "prompt": format_prompt(template, r["problem"]),
             "completion": cold_start_completion(r)} for r in read(path, fmt)]
  if fmt == "sft":
    return [{"id": r["id"], "prompt": format_prompt(template, r["prompt"]),
             "completion": r["response"] if response.THINK_OPEN in r["response"]
             else f"{response.THINK_OPEN}{response.THINK_CLOSE}{r['response'].strip()}"}
            for r in read(path, fmt)]
  raise ValueError(f"{fmt!r} is not an SFT format (cold_start or sft)")
