"""The `code` accuracy reward: model-written Python run against test cases in a sandbox.

R1's rule-based accuracy reward checks code problems (LeetCode-style) by running the program
against predefined test cases. The program is the last fenced Python block of the answer (the
`<answer>` block when there is one, else the whole completion); no block scores 0.

Test cases, a JSON list per problem (a record's `tests`), each one of:
  {"input": STDIN, "output": STDOUT}   the program runs as __main__ with that stdin; passes if its
                                       stdout equals STDOUT, both stripped, each line rstripped
  {"call": EXPR, "expected": VALUE}    EXPR (e.g. "two_sum([2, 7], 9)") is evaluated after the
                                       program's definitions; passes if the result, as JSON data of
                                       exact built-in types (tuples become lists), equals VALUE
                                       (floats to 1e-6 relative)
  {"assert": CODE}                     a statement, or an expression that must be truthy
Expected values stay in this process, so a program cannot forge a pass of the first two kinds
(and an object with a lying __eq__ is not JSON data). An `assert` verdict is computed inside
the sandbox, where the program could tamper with it: use asserts for trusted code only.

Isolation (`run_tests`, details in r1jax/rl/code_runner.py, the child's side): one child
process per sample runs all its tests; rlimits (CPU, address space, file size, processes, no core
files, open files); a wall-clock deadline after which the parent kills the process group; a
private temporary working directory, removed afterwards; an empty environment and `python -I
-S`; stdout capped. With `unshare` (util-linux, unprivileged user namespaces) the child also
gets an empty network namespace and its own PID and mount namespaces, so it can neither reach
the network nor see or signal the trainer. When the trainer runs as root the child runs as
`nobody`. A Python audit hook in the child refuses sockets, signals, new processes, native code
and writes outside the working directory in both modes; without unshare it is the main barrier,
and audit hooks are not a security boundary against a determined program.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from r1jax import response

SCORING = ("pass_rate", "all_or_nothing")
ISOLATION = ("auto", "unshare", "fallback")
# Fenced blocks; a block's language tag must be empty or name Python.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3")
# unshare flags, best first: a non-root uid inside holds no capabilities after exec.
_UNSHARE_FLAGS = (
    ("--user", "--map-user=65534", "--map-group=65534", "--net", "--pid", "--fork",
     "--kill-child", "--mount-proc"),
    ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
)
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_MAX_CHILDREN = 3  # a crash restarts the remaining tests in a new child, at most this often


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-sample limits. CPU, memory and output hold per child process; wall per sample."""

  cpu_seconds: float = 4.0  # RLIMIT_CPU (whole seconds, rounded up): SIGKILL past it
  wall_seconds: float = 10.0  # every child of one sample together; then the group is killed
  test_seconds: float = 2.0  # wall clock per test inside the child (an alarm)
  memory_mb: int = 512  # RLIMIT_AS: MemoryError past it
  max_output_bytes: int = 64 * 1024  # captured stdout per test; bytes read of stderr
  max_processes: int = 16  # RLIMIT_NPROC (tasks, threads included)
  max_open_files: int = 64  # RLIMIT_NOFILE

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if not getattr(self, f.name) > 0:
        raise ValueError(f"sandbox limit {f.name} must be positive, got {getattr(self, f.name)}")

  def rlimits(self) -> dict[str, int]:
    """rlimits set before exec (RLIMIT_NPROC is set later, inside the namespaces)."""
    return {"cpu": math.ceil(self.cpu_seconds), "as": self.memory_mb << 20,
            # a result file holds one test's output as escaped JSON (up to 12 bytes a character)
            "fsize": 16 * self.max_output_bytes + (64 << 10), "core": 0,
            "nofile": self.max_open_files}


@dataclasses.dataclass(frozen=True)
class TestResult:
  passed: bool
  reason: str  # 'passed', 'wrong answer', or what went wrong ('time limit exceeded', ...)


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  tests: tuple[TestResult, ...]
  isolation: str  # 'unshare' (namespaces) or 'fallback' (rlimits, session, audit hook)
  uid: int  # the child's user id outside any namespace
  wall_s: float
  children: int  # processes started: 1 unless a crash restarted the remaining tests
  stderr: str  # the last max_output_bytes of the child's stderr

  @property
  def num_passed(self) -> int:
    return sum(t.passed for t in self.tests)

  def score(self, scoring: str = "pass_rate") -> float:
    if scoring == "pass_rate":
      return self.num_passed / len(self.tests)
    if scoring == "all_or_nothing":
      return float(self.num_passed == len(self.tests))
    raise ValueError(f"unknown scoring {scoring!r}; known: {SCORING}")


# ---------------------------------------------------------------------------------------------
# Programs and tests


def extract_code(completion: str | None) -> str | None:
  """The last fenced Python block of the answer block (or of the whole completion)."""
  if not isinstance(completion, str):
    return None
  answer = response.extract_answer(completion)
  text = answer if answer is not None else completion
  blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]
  return blocks[-1] if blocks else None


@dataclasses.dataclass(frozen=True)
class _Test:
  child: dict[str, Any]  # what the child sees: never an expected value
  expected: Any = None


def parse_tests(tests: Sequence[Mapping[str, Any]] | str) -> list[_Test]:
  """Checks a problem's tests (a list, or its JSON text) and splits off the expected values."""
  if isinstance(tests, str):
    tests = json.loads(tests)
  if not isinstance(tests, (list, tuple)) or not tests:
    raise ValueError(f"a code problem needs a non-empty list of tests, got {tests!r:.80}")
  out = []
  for t in tests:
    keys = set(t) if isinstance(t, Mapping) else set()
    if keys == {"input", "output"} and all(isinstance(t[k], str) for k in keys):
      out.append(_Test({"kind": "io", "input": t["input"]}, t["output"]))
    elif keys == {"call", "expected"} and isinstance(t["call"], str):
      out.append(_Test({"kind": "call", "expr": t["call"]}, t["expected"]))
    elif keys == {"assert"} and isinstance(t["assert"], str):
      out.append(_Test({"kind": "assert", "code": t["assert"]}))
    else:
      raise ValueError("a test is {'input', 'output'}, {'call', 'expected'} or {'assert'}, "
                       f"all strings but 'expected'; got {t!r:.120}")
  return out


def normalize_output(text: str) -> str:
  """Stripped, each line rstripped, '\\n' line ends."""
  return "\n".join(line.rstrip() for line in text.strip().splitlines())


def same_value(got: Any, expected: Any) -> bool:
  """JSON values equal, with bool apart from int and floats to 1e-6 relative (1e-9 absolute)."""
  if isinstance(expected, bool) or expected is None:
    return got is expected
  if isinstance(expected, (int, float)):
    if isinstance(got, bool) or not isinstance(got, (int, float)):
      return False
    if isinstance(expected, int) and isinstance(got, int):
      return got == expected
    return math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9)
  if isinstance(expected, str):
    return isinstance(got, str) and got == expected
  if isinstance(expected, (list, tuple)):
    return (isinstance(got, list) and len(got) == len(expected)
            and all(same_value(g, e) for g, e in zip(got, expected)))
  if isinstance(expected, Mapping):
    return (isinstance(got, dict) and set(got) == set(expected)
            and all(same_value(got[k], v) for k, v in expected.items()))
  return False


def _judge(test: _Test, result: Any) -> TestResult:
  if not isinstance(result, dict) or result.get("status") not in ("ok", "error"):
    return TestResult(False, "malformed result")
  if result["status"] == "error":
    error = result.get("error")
    return TestResult(False, error[:300] if isinstance(error, str) else "error")
  kind = test.child["kind"]
  if kind == "io":
    out = result.get("stdout")
    ok = isinstance(out, str) and normalize_output(out) == normalize_output(test.expected)
  elif kind == "call":
    ok = "value" in result and same_value(result["value"], test.expected)
  else:
    ok = True
  return TestResult(ok, "passed" if ok else "wrong answer")


# ---------------------------------------------------------------------------------------------
# The platform: who the child runs as, which interpreter, whether unshare works (probed once)


@dataclasses.dataclass(frozen=True)
class _Platform:
  python: str
  uid: int
  gid: int
  drop: bool  # the trainer is root: switch the child to uid/gid (no supplementary groups)
  unshare: tuple[str, ...] | None  # the unshare command and flags, when they work


def _user_kwargs(p: _Platform) -> dict[str, Any]:
  return {"user": p.uid, "group": p.gid, "extra_groups": []} if p.drop else {}


def _runs(cmd: Sequence[str], uid: int, gid: int, drop: bool) -> bool:
  kwargs = {"user": uid, "group": gid, "extra_groups": []} if drop else {}
  try:
    done = subprocess.run(list(cmd), env=_ENV, cwd="/", stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20, check=False, **kwargs)
  except (OSError, subprocess.SubprocessError):
    return False
  return done.returncode == 0 and done.stdout.strip() == b"ok"


_CHECK = "import json, resource, sys; assert sys.version_info >= (3, 8); print('ok')"
_platform_lock = threading.Lock()


@functools.cache
def _probe() -> _Platform:
  """Root drops to `nobody`; the interpreter is the first the child's user can run (the
  trainer's may sit in a directory only root can enter); unshare is tried flag set by flag."""
  drop = os.geteuid() == 0
  uid, gid = os.geteuid(), os.getegid()
  if drop:
    try:
      nobody = pwd.getpwnam("nobody")
      uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
      uid = gid = 65534
  candidates = [sys.executable, os.path.realpath(sys.executable),
                getattr(sys, "_base_executable", ""), shutil.which("python3") or "",
                "/usr/bin/python3", "/usr/local/bin/python3"]
  python = next((c for c in dict.fromkeys(candidates)
                 if c and os.path.exists(c) and _runs([c, "-I", "-S", "-c", _CHECK], uid, gid,
                                                      drop)), None)
  if python is None and drop:
    logging.warning("code sandbox: no Python that uid %d can run; the child runs as root", uid)
    drop, uid, gid = False, 0, 0
    python = sys.executable
  if python is None:
    raise RuntimeError("code sandbox: no Python interpreter runs with -I -S")
  unshare = None
  path = shutil.which("unshare")
  if path:
    for flags in _UNSHARE_FLAGS:
      cmd = (path, *flags)
      if _runs([*cmd, python, "-I", "-S", "-c", _CHECK], uid, gid, drop):
        unshare = cmd
        break
  logging.info("code sandbox: python %s, uid %d, %s", python, uid,
               "unshare " + " ".join(unshare[1:]) if unshare else "no unshare (fallback)")
  return _Platform(python, uid, gid, drop, unshare)


def platform() -> _Platform:
  with _platform_lock:
    return _probe()


@functools.cache
def _runner_source() -> str:
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "code_runner.py"),
            encoding="utf-8") as f:
    return f.read()


# ---------------------------------------------------------------------------------------------
# Running


def _read_capped(path: str, cap: int) -> bytes | None:
  """A regular file's first `cap` bytes; None when missing. The child controls the directory,
  so no symlinks (O_NOFOLLOW) and nothing that could block the read (FIFOs, devices)."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  except FileNotFoundError:
    return None
  except OSError:
    return b""
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      return b""
    return os.read(fd, cap)
  finally:
    os.close(fd)


def _tail(fd: int, cap: int) -> str:
  size = os.fstat(fd).st_size
  os.lseek(fd, max(0, size - cap), os.SEEK_SET)
  return os.read(fd, cap).decode("utf-8", "replace")


def _wait(pid: int, deadline: float) -> bool:
  """Waits for the child to exit, leaving it unreaped (its pid, and so its process group id,
  stay reserved for the kill); False when the deadline passed first."""
  delay = 0.001
  while True:
    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
      return True
    left = deadline - time.monotonic()
    if left <= 0:
      return False
    time.sleep(min(delay, left))
    delay = min(delay * 2, 0.02)


def _run_child(p: _Platform, work: str, source: str, child_tests: list[dict], start: int,
               limits: Limits, deadline: float, use_unshare: bool,
               audit_hook: bool) -> tuple[str, bool, str]:
  """One child from test `start` on. Returns (how it ended, whether it hit the wall clock,
  stderr tail). The payload arrives on stdin and stdout/stderr go to unnamed files: the parent
  never writes by name into the directory the child controls, where a planted symlink could
  redirect the write."""
  payload = {"source": source, "tests": child_tests, "start": start,
             "max_output": limits.max_output_bytes, "test_seconds": limits.test_seconds}
  spec = json.dumps({"limits": limits.rlimits(), "workdir": work, "hook": audit_hook,
                     "nproc": limits.max_processes})
  runner = [p.python, "-I", "-S", "-c", _runner_source(), spec]
  cmd = runner + ([*p.unshare, *runner] if use_unshare else [])
  env = {**_ENV, "HOME": work, "TMPDIR": work}
  with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
      tempfile.TemporaryFile() as err:
    stdin.write(json.dumps(payload).encode("utf-8"))
    stdin.seek(0)
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=stdin, stdout=out, stderr=err,
                            start_new_session=True, close_fds=True, **_user_kwargs(p))
    exited = False
    try:
      exited = _wait(proc.pid, deadline)
    finally:
      try:  # the whole group: whatever the program started dies with it
        os.killpg(proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
      _, status, usage = os.wait4(proc.pid, 0)
      proc.returncode = code = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if not exited:
      how = "wall time limit exceeded"
    elif code != 0 and cpu >= 0.9 * math.ceil(limits.cpu_seconds):
      # SIGKILL, which unshare reports as status 1; rusage's sampled times run a little low
      how = "cpu time limit exceeded"
    elif code < 0:
      how = f"killed by {signal.Signals(-code).name}"
    elif code > 0:
      how = f"exited with status {code}"
    else:
      how = "exited before finishing"
    return how, not exited, _tail(err.fileno(), limits.max_output_bytes)


def _remove(path: str) -> None:
  def retry(func, path, _):
    try:
      os.chmod(os.path.dirname(path), 0o700)
      func(path)
    except OSError:
      pass
  if sys.version_info >= (3, 12):
    shutil.rmtree(path, onexc=retry)
  else:
    shutil.rmtree(path, onerror=retry)


def run_tests(source: str, tests: Sequence[Mapping[str, Any]] | str, limits: Limits | None = None,
              isolation: str = "auto", audit_hook: bool = True) -> SandboxResult:
  """Runs `source` against `tests` (see the module docstring) in one sandboxed child, restarted
  after a crash for the tests it did not reach. isolation: 'auto' (unshare when it works),
  'unshare' (required) or 'fallback'. `audit_hook=False` leaves only the OS limits (tests)."""
  if isolation not in ISOLATION:
    raise ValueError(f"unknown isolation {isolation!r}; known: {ISOLATION}")
  limits = limits or Limits()
  checks = parse_tests(tests)
  p = platform()
  if isolation == "unshare" and p.unshare is None:
    raise RuntimeError("code sandbox: unshare with user, net and pid namespaces does not work "
                       "here; use isolation='auto' or 'fallback'")
  use_unshare = p.unshare is not None and isolation != "fallback"
  t0 = time.monotonic()
  deadline = t0 + limits.wall_seconds
  results: list[TestResult | None] = [None] * len(checks)
  children, start, stderr = 0, 0, ""
  # The child owns `work`; `base` stays the parent's, so the child cannot move `work` away.
  base = tempfile.mkdtemp(prefix="r1jax-code-")
  try:
    os.chmod(base, 0o711)
    work = os.path.join(base, "work")
    os.mkdir(work, 0o700)
    if p.drop:
      os.chown(work, p.uid, p.gid)
    while start < len(checks):
      children += 1
      how, timed_out, stderr = _run_child(p, work, source, [c.child for c in checks], start,
                                          limits, deadline, use_unshare, audit_hook)
      cap = limits.rlimits()["fsize"]
      for i in range(start, len(checks)):
        raw = _read_capped(os.path.join(work, f"result-{i}.json"), cap)
        if raw is not None:
          try:
            results[i] = _judge(checks[i], json.loads(raw))
          except ValueError:
            results[i] = TestResult(False, "malformed result")
      missing = [i for i in range(start, len(checks)) if results[i] is None]
      if not missing:
        break
      results[missing[0]] = TestResult(False, how)
      start = missing[0] + 1
      if timed_out or children >= _MAX_CHILDREN or time.monotonic() >= deadline:
        for i in missing[1:]:
          results[i] = TestResult(False, f"not run ({how})")
        break
  finally:
    _remove(base)
  return SandboxResult(tuple(results), "unshare" if use_unshare else "fallback", p.uid,
                       time.monotonic() - t0, children, stderr)


# ---------------------------------------------------------------------------------------------
# The reward


def score_completion(completion: str, tests: Sequence[Mapping[str, Any]] | str,
                     scoring: str = "pass_rate", limits: Limits | None = None,
                     isolation: str = "auto") -> float:
  """The reward of one completion: 0 without a Python block, else the sandbox's score."""
  if scoring not in SCORING:
    raise ValueError(f"unknown scoring {scoring!r}; known: {SCORING}")
  parse_tests(tests)  # a broken problem fails loudly, even when the completion has no code
  source = extract_code(completion)
  if source is None:
    return 0.0
  return run_tests(source, tests, limits, isolation).score(scoring)


def code_reward(scoring: str = "pass_rate", max_workers: int = 4, isolation: str = "auto",
                tests_field: str = "tests", **limits) -> Any:
  """Reward factory (REWARD_REGISTRY['code']): each sample's program against its prompt
  record's tests (extras['records'][i][tests_field]), samples in parallel threads, each its own
  child process. `limits` are `Limits` fields (cpu_seconds, wall_seconds, memory_mb, ...)."""
  if scoring not in SCORING:
    raise ValueError(f"unknown scoring {scoring!r}; known: {SCORING}")
  if isolation not in ISOLATION:
    raise ValueError(f"unknown isolation {isolation!r}; known: {ISOLATION}")
  limits_ = Limits(**limits)

  def code(prompts, completions, answers, **extras) -> list[float]:
    del prompts, answers
    records = extras.get("records")
    if records is None or len(records) != len(completions):
      raise ValueError("the code reward needs extras['records'], one per completion, each with "
                       f"its {tests_field!r}")
    tests = []
    for r in records:
      if r.get(tests_field) is None:
        raise KeyError(f"record {r.get('id', '?')!r} has no {tests_field!r} for the code reward")
      tests.append(r[tests_field])
    if not completions:
      return []
    with concurrent.futures.ThreadPoolExecutor(min(max_workers, len(completions))) as pool:
      return list(pool.map(
          lambda ct: score_completion(ct[0], ct[1], scoring, limits_, isolation),
          zip(completions, tests)))

  return code
