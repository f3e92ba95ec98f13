"""The reflect world: a toy world in which thinking longer pays, so R1-Zero's self-evolution shows.

In the default toy world RL only *selects* a skill the base already uses now and then (a
step-by-step trace, 15% of chat answers, +85 points): accuracy and length jump within ten steps
and stop. Here the base already thinks, but too fast to be right, and what pays is a habit it
almost never shows: stopping to re-check. RL has to grow that habit from a few percent of
answers, and the habit costs tokens, so held-out accuracy, response length and the reflection
rate rise together (the README section "R1-Zero's self-evolution" has the curves).

Problems are the default world's four-operand `+`/`*` chains, left to right mod 10, except that
`*` takes only 1, 3, 7 or 9 (`mul_digits`): every operation then permutes the digits, so one
wrong step always makes a wrong answer and guessing pays 10% (with `*0` or `*5`, "0" alone pays
about 25%, and RL on a weak reasoner drifts to guessing it). Chat answers in the corpus are
*fast*: the first two operations folded into one step written with `~` ("about"), then the last
one exact:

    6*3*1~8 8*1=8                                  (a fast answer; slips 20% of the time)
    6*3*1~5 5*1=5 wait Solve 6*3*1*1. 6*3=8 8*1=8 8*1=8    (re-checked: the answer is 8)

A few of them (`check_share`, 6%) end with a re-check: `wait`, the problem restated and solved
again one exact step at a time, whose result is the answer. Worked solutions outside any chat
re-check half the time (`worked_check_share`): they teach the re-check as a skill while chat
keeps it a rare habit, as the default world's worked solutions teach its trace.

Why the re-check is more reliable than the step it checks, even after RL: a fast step asks the
small model for two lookups composed in one token; it gets them right ~11% of the time (chance
is 10%) however well it knows the single-digit facts (100%), so no sharpening of the fast step
helps, and learning the ~2,000 compositions one by one is slow. The re-check writes the default
world's trace after a restated problem, the worked-solution layout in which the base fetches
every operand from the problem right before it: 96% right at T 0.6 after a slipped fast step
(an earlier design, re-checking the fast step by copying its operands in place, got 25%).
A re-checked answer is ~54 tokens against ~19, so the budget (`rl.max_new_tokens`) must leave
room for it. The base re-checks ~11% of answers at T 1 (its first rollouts) and none at T 0.6
(the held-out eval): the first held-out sample whose re-check corrects a wrong step and saves
the answer (`corrections`, r1jax.reflection) is the run's "aha moment".

Everything that does not depend on the trace (general prompts, cold start, preferences) is the
default world's, run on this config. The default world's texts do not change: this module is
chosen by the ToyWorldConfig subclass (`GENERATOR`), and its prepared data is keyed by its own
FORMAT_VERSION.
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator
from typing import ClassVar

from r1jax import response
from r1jax.data import toy_world
from r1jax.data.toy_world import (  # noqa: F401
  INSTRUCTIONS,
  OPS,
  TEMPLATE,
  apply,
  cold_start,
  general_prompts,
  general_sft,
  parse,
  preferences,
  solve,
)
from r1jax.templates import format_prompt

# Bump whenever the generated text changes: prepared TFDS data is keyed by it.
FORMAT_VERSION = 7
FAST = "~"  # a fast step's result: `3*4+5~7` ("about 7"); exact steps write `=`
WAIT = "wait"  # opens a re-check
REFLECTION_WORDS = (WAIT,)
TOKENIZER_SYMBOLS = toy_world.TOKENIZER_SYMBOLS + (WAIT,)


@dataclasses.dataclass(frozen=True)
class ReflectWorldConfig(toy_world.ToyWorldConfig):
  """The default world's knobs (sizes, seed, shares) plus the fast-step writer's."""

  GENERATOR: ClassVar[str] = __name__  # the module that writes this world's texts

  # Digits that may follow `*`: 1, 3, 7 and 9 make every operation a permutation of the ten
  # digits, so a wrong step always gives a wrong answer and no answer is likelier than another
  # (guessing pays 10%; with `*0` and `*5` in play, "0" alone would pay about 25%).
  mul_digits: str = "1379"
  # Corpus mix: facts keep the single-operation steps a re-check writes; the rest are traces.
  fact_share: float = 0.2
  worked_share: float = 0.3
  general_share: float = 0.05
  mixed_share: float = 0.0  # no language mixing: this world is about reflection
  cold_start_mixed_share: float = 0.0
  # Operations folded into one fast step (a last step takes what is left, exact when single).
  fuse: int = 2
  # The writer's slip rate on a fast step (a random wrong digit); exact steps never slip.
  fast_error: float = 0.2
  # Share of chat answers the writer re-checks: how often the base model reflects.
  check_share: float = 0.06
  # ... and of worked solutions, outside any chat: the re-check as a skill, not a chat habit.
  worked_check_share: float = 0.5
  # Facts per fact document (`3*4=2 5+6=1 ...`).
  facts_per_doc: int = 8

  def __post_init__(self):
    super().__post_init__()
    if self.fuse < 2:
      raise ValueError(f"fuse={self.fuse}: a fast step folds at least 2 operations")
    if not self.mul_digits or not set(self.mul_digits) <= set("0123456789"):
      raise ValueError(f"mul_digits={self.mul_digits!r} must be some of the digits 0-9")
    if self.facts_per_doc < 1:
      raise ValueError(f"facts_per_doc={self.facts_per_doc} must be >= 1")
    for name in ("fast_error", "check_share", "worked_check_share"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")


# ----------------------------------------------------------------------------------- problems
def random_problem(rng: random.Random, cfg: ReflectWorldConfig, test: bool) -> str:
  """A problem of the train (test=False) or held-out region; `*` takes only cfg.mul_digits."""
  while True:
    n = rng.randint(cfg.min_operands, cfg.max_operands)
    text = str(rng.randrange(10))
    for _ in range(n - 1):
      op = rng.choice(OPS)
      text += op + (rng.choice(cfg.mul_digits) if op == "*" else str(rng.randrange(10)))
    if toy_world.is_test_problem(text, cfg.test_fraction) == test:
      return text


def problems(cfg: ReflectWorldConfig, split: str) -> list[dict]:
  """'rl' (train region) or 'test' (held-out region, no duplicates): {id, problem, answer}."""
  if split not in ("rl", "test"):
    raise ValueError(f"split must be 'rl' or 'test', got {split!r}")
  rng = random.Random(f"r1jax-reflect/{cfg.seed}/{split}")
  size, test, seen, out = getattr(cfg, f"{split}_size"), split == "test", set(), []
  while len(out) < size:
    p = random_problem(rng, cfg, test)
    if test and p in seen:
      continue
    seen.add(p)
    out.append({"id": f"toy-{split}-{len(out):06d}", "problem": p, "answer": solve(p)})
  return out


# ------------------------------------------------------------------------------------- traces
def _fold(acc: int, ops: list[tuple[str, int]]) -> int:
  for op, b in ops:
    acc = apply(acc, op, b)
  return acc


def _expr(acc: int, ops: list[tuple[str, int]]) -> str:
  return str(acc) + "".join(f"{op}{b}" for op, b in ops)


def recheck(problem: str) -> str:
  """`wait Solve 6*3*1*1. 6*3=8 8*1=8 8*1=8`: the problem restated and solved again, one exact
  step per operation, as a worked solution (`Solve P. ...`) lays it out: the layout in which
  the base already fetches each operand from the problem right before it."""
  return f"{WAIT} Solve {problem}. {toy_world.trace(problem)}"


def write_trace(rng: random.Random, cfg: ReflectWorldConfig, problem: str,
                check_share: float | None = None) -> tuple[str, str]:
  """The writer's trace and the answer it reaches: fast steps of `fuse` operations (a last
  shorter one exact), each wrong with probability fast_error, a slip carried on; then, with
  probability check_share (default: the config's), a re-check of the whole problem that is
  always right and gives the answer."""
  check_share = cfg.check_share if check_share is None else check_share
  nums, ops = parse(problem)
  pairs = list(zip(ops, nums[1:]))
  acc, parts = nums[0], []
  for i in range(0, len(pairs), cfg.fuse):
    chunk = pairs[i:i + cfg.fuse]
    fast = _fold(acc, chunk)
    if len(chunk) > 1 and rng.random() < cfg.fast_error:
      fast = (fast + 1 + rng.randrange(9)) % 10
    parts.append(f"{_expr(acc, chunk)}{FAST if len(chunk) > 1 else '='}{fast}")
    acc = fast
  if rng.random() < check_share:
    return " ".join([*parts, recheck(problem)]), solve(problem)
  return " ".join(parts), str(acc)


def clean_trace(problem: str, cfg: ReflectWorldConfig, checks: bool = False) -> str:
  """The writer's trace without slips, re-checked when `checks`."""
  rng = random.Random(0)
  return write_trace(rng, dataclasses.replace(cfg, fast_error=0.0,
                                              check_share=1.0 if checks else 0.0), problem)[0]


# ------------------------------------------------------------------------------------- reading
_FAST_STEP = re.compile(rf"(\d(?:[+*]\d)+){FAST}(\d)")
_EXACT_STEP = re.compile(r"\d[+*]\d=\d")


def _value(expr: str) -> int:
  nums, ops = [int(c) for c in expr[::2]], list(expr[1::2])
  return _fold(nums[0], list(zip(ops, nums[1:])))


def reasoning(text: str) -> str:
  """The reasoning of a response: its think block, or what follows <think> when unclosed."""
  cot = response.cot_text(text)
  if cot is None:
    cot = text.split(response.THINK_OPEN, 1)[-1].split(response.THINK_CLOSE, 1)[0]
  return cot


def _unfolds(words: list[str], k: int, expr: str) -> int:
  """How many words from k write `expr`'s operations as exact steps, each right (0: not so)."""
  nums, ops = [int(c) for c in expr[::2]], list(expr[1::2])
  acc = nums[0]
  for n, (op, b) in enumerate(zip(ops, nums[1:])):
    r = apply(acc, op, b)
    if k + n >= len(words) or words[k + n] != f"{acc}{op}{b}={r}":
      return 0
    acc = r
  return len(ops)


def corrections(text: str) -> list[dict]:
  """Every re-check in a response's reasoning that corrects a wrong step: a fast step whose
  result is not what its own operations give, then, after a later `wait`, those operations
  written as exact steps, each right. [{'step': '6*3*1~5', 'check': 'wait 6*3=8 8*1=8 ...'}]"""
  words, out = reasoning(text).split(), []
  for i, word in enumerate(words):
    m = _FAST_STEP.fullmatch(word)
    if not m or int(m[2]) == _value(m[1]):
      continue  # not a wrong fast step
    for j in (j for j in range(i + 1, len(words)) if words[j] == WAIT):
      start = j + 1  # the re-check's exact steps, after any restated problem
      while start < len(words) and words[start] != WAIT and not _EXACT_STEP.fullmatch(words[start]):
        start += 1
      end = start
      while end < len(words) and _EXACT_STEP.fullmatch(words[end]):
        end += 1
      if any(_unfolds(words, k, m[1]) for k in range(start, end)):
        out.append({"step": word, "check": " ".join(words[j:end])})
        break
  return out


# ------------------------------------------------------------------------------------- corpus
def corpus(cfg: ReflectWorldConfig) -> Iterator[dict]:
  """Pre-training documents {id, prompt, completion, kind}: facts (facts_per_doc a line), worked
  solutions and chat answers in fast steps (kind '[worked_]reflect' when the trace holds a
  re-check), general replies."""
  rng = random.Random(f"r1jax-reflect/{cfg.seed}/corpus")
  train_instructions = [r["problem"] for r in general_prompts(cfg, "rl")]
  for i in range(cfg.corpus_size):
    u = rng.random()
    if u < cfg.fact_share:
      facts = [(rng.randrange(10), rng.choice(OPS), rng.randrange(10))
               for _ in range(cfg.facts_per_doc)]
      (a, op, b), rest = facts[0], facts[1:]
      prompt, kind = f"{a}{op}{b}=", "fact"
      completion = " ".join([str(apply(a, op, b))] + [f"{x}{o}{y}={apply(x, o, y)}"
                                                      for x, o, y in rest])
    elif u < cfg.fact_share + cfg.general_share:
      instruction = rng.choice(train_instructions)
      _, good, bad = INSTRUCTIONS[instruction]
      prompt = format_prompt(TEMPLATE, instruction)
      completion, kind = (good if rng.random() < cfg.general_accuracy else bad), "general"
    else:
      problem = random_problem(rng, cfg, test=False)
      worked = u < cfg.fact_share + cfg.general_share + cfg.worked_share
      trace, answer = write_trace(rng, cfg, problem,
                                  cfg.worked_check_share if worked else cfg.check_share)
      kind = "reflect" if f" {WAIT} " in f" {trace} " else "think"
      if worked:
        prompt, completion = f"Solve {problem}. ", trace
        kind = "worked_" + kind
      else:
        prompt = format_prompt(TEMPLATE, problem)
        completion = f"<think>{trace}</think><answer>{answer}</answer>"
    yield {"id": f"toy-corpus-{i:07d}", "prompt": prompt, "completion": completion, "kind": kind}
