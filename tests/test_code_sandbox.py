"""The sandboxed `code` reward: scoring, the toy code problems, and hostile programs.

Hostile programs run under tight limits and must end in time, score 0 and leave the host as it
was. Those that try to kill their parent run inside a throwaway Python process, so that a broken
guard fails the test instead of killing the test run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest

from r1jax.data import code_problems
from r1jax.rl import code_sandbox as cs
from r1jax.rl import rewards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIGHT = cs.Limits(cpu_seconds=1, wall_seconds=4, test_seconds=2, memory_mb=256,
                  max_output_bytes=4096)
SLACK_S = 5.0  # process start-up and a busy machine, on top of the wall limit
HAS_UNSHARE = cs.platform().unshare is not None
MODES = [pytest.param("unshare", marks=pytest.mark.skipif(not HAS_UNSHARE, reason="no unshare")),
         "fallback"]

DOUBLE_TESTS = [{"call": "double(2)", "expected": 4}, {"call": "double(0)", "expected": 0},
                {"call": "double(-3)", "expected": -6}, {"call": "double(10)", "expected": 20}]


def wrap(code: str, tag: str = "python") -> str:
  return f"<think>I write it.</think><answer>```{tag}\n{code}```</answer>"


def toy_records() -> list[dict]:
  return code_problems.read_jsonl(code_problems.CODE_SETS["toy_code"])


# ---------------------------------------------------------------------------------------------
# Extraction, formats, scoring


def test_extract_code_takes_the_last_python_block_of_the_answer():
  text = ("<think>```python\nx = 'thinking'\n```</think>"
          "<answer>```text\nnot code\n```\n```python\nfirst = 1\n```\n```\nlast = 2\n```"
          "</answer>")
  assert cs.extract_code(text) == "last = 2\n"
  assert cs.extract_code("Here:\n```py\nprint(1)\n```\nThat's all.") == "print(1)\n"
  assert cs.extract_code("<answer>```javascript\nlet a;\n```</answer>") is None
  assert cs.extract_code("no code at all") is None
  assert cs.extract_code("```python\nunclosed = True\n") is None


def test_no_code_block_scores_zero_without_running(monkeypatch):
  monkeypatch.setattr(cs, "run_tests", lambda *a, **k: pytest.fail("nothing to run"))
  assert cs.score_completion("<answer>42</answer>", DOUBLE_TESTS) == 0.0


def test_pass_rate_and_all_or_nothing():
  right = wrap("def double(x):\n  return 2 * x\n")
  wrong = wrap("def double(x):\n  return x + 2\n")  # right only for double(2)
  assert cs.score_completion(right, DOUBLE_TESTS, "pass_rate") == 1.0
  assert cs.score_completion(right, DOUBLE_TESTS, "all_or_nothing") == 1.0
  assert cs.score_completion(wrong, DOUBLE_TESTS, "pass_rate") == 0.25
  assert cs.score_completion(wrong, DOUBLE_TESTS, "all_or_nothing") == 0.0


def test_io_call_and_assert_tests():
  source = ("import sys\n"
            "def mean(xs):\n  return sum(xs) / len(xs)\n"
            "def pair():\n  return (1, 'a')\n"
            "def yes():\n  return 1\n"
            "if __name__ == '__main__':\n"
            "  words = sys.stdin.read().split()\n"
            "  print(' '.join(reversed(words)) + '   ')\n")
  tests = [
      {"input": "a b c\n", "output": "c b a"},  # trailing spaces and newline ignored
      {"input": "x y", "output": "y x\n\n"},
      {"input": "x y", "output": "x y"},  # wrong
      {"call": "mean([1, 2])", "expected": 1.5},
      {"call": "mean([1, 2, 3, 4, 5, 6])", "expected": 3.5000000001},  # within 1e-6
      {"call": "pair()", "expected": [1, "a"]},  # a tuple is a JSON list
      {"call": "yes()", "expected": True},  # 1 is not True
      {"assert": "assert mean([2]) == 2"},
      {"assert": "mean([2]) == 3"},  # a false expression
  ]
  r = cs.run_tests(source, tests)
  assert [t.passed for t in r.tests] == [True, True, False, True, True, True, False, True, False]
  assert r.tests[2].reason == "wrong answer"
  assert r.score("pass_rate") == pytest.approx(6 / 9)
  assert r.score("all_or_nothing") == 0.0


def test_stdin_program_reading_fd_0_and_exiting():
  source = "import sys\nn = int(open(0).read())\nprint(n * n)\nsys.exit(0)\nprint('never')\n"
  r = cs.run_tests(source, [{"input": "7\n", "output": "49"}, {"input": "3", "output": "9"}])
  assert [t.passed for t in r.tests] == [True, True]


def test_a_lying_eq_does_not_pass_a_call_test():
  source = ("class Anything:\n  def __eq__(self, other):\n    return True\n"
            "class Int(int):\n  def __eq__(self, other):\n    return True\n"
            "def double(x):\n  return Anything() if x else Int(1)\n")
  r = cs.run_tests(source, DOUBLE_TESTS)
  assert r.score() == 0.0
  assert all("not plain JSON data" in t.reason for t in r.tests)


def test_errors_and_crashes_cost_only_their_test():
  source = ("import os\n"
            "def f(x):\n"
            "  if x == 1:\n    return 1 // 0\n"
            "  if x == 2:\n    os._exit(3)\n"
            "  if x == 3:\n    while True:\n      pass\n"
            "  return x\n")
  tests = [{"call": f"f({i})", "expected": i} for i in (0, 1, 2, 3, 4)]
  r = cs.run_tests(source, tests, cs.Limits(test_seconds=1))
  assert [t.passed for t in r.tests] == [True, False, False, False, True]
  assert r.tests[1].reason.startswith("ZeroDivisionError")
  assert r.tests[2].reason == "exited with status 3"
  assert r.tests[3].reason == "time limit exceeded"
  assert r.children == 2  # one restart after the crash, for tests 3 and 4


def test_syntax_error_fails_every_test():
  r = cs.run_tests("def double(x) return 2 * x\n", DOUBLE_TESTS)
  assert r.score() == 0.0 and all(t.reason.startswith("SyntaxError") for t in r.tests)


def test_malformed_tests_are_refused():
  for bad in ([], [{"input": "1"}], [{"call": "f()"}], [{"assert": 3}], "not json"):
    with pytest.raises(ValueError):
      cs.parse_tests(bad)
  with pytest.raises(ValueError):
    cs.code_reward(scoring="most")
  with pytest.raises(ValueError):
    cs.Limits(cpu_seconds=0)


# ---------------------------------------------------------------------------------------------
# The reward function, the registry and the shipped problems


def test_toy_code_problems_reference_solutions_pass_and_splits_partition():
  records = toy_records()
  assert 20 <= len(records) <= 30
  assert all(r["task"] == "code" for r in records)
  train = code_problems.load_code_problems("toy_code", "train")
  test = code_problems.load_code_problems("toy_code", "test")
  assert train and test and not {r["id"] for r in train} & {r["id"] for r in test}
  assert len(train) + len(test) == len(records)
  reward = cs.code_reward(scoring="all_or_nothing")
  completions = [wrap(r["answer"]) for r in records]
  scores = reward([""] * len(records), completions, [r["answer"] for r in records],
                  records=records)
  assert scores == [1.0] * len(records), [r["id"] for r, s in zip(records, scores) if s != 1.0]


def test_a_wrong_solution_to_a_toy_problem_scores_below_one():
  record = next(r for r in toy_records() if r["id"] == "code-fizzbuzz")
  wrong = "n = int(input())\nfor i in range(1, n + 1):\n  print('Fizz' if i % 3 == 0 else i)\n"
  # Tests are n = 5, 15, 1: only n = 1 (no multiple of 5) comes out right.
  assert cs.score_completion(wrap(wrong), record["tests"]) == pytest.approx(1 / 3)


def test_registry_router_and_prompt_loader():
  from ml_collections import ConfigDict

  from r1jax.data import prompts
  records = prompts.load_problems(ConfigDict({"dataset": "toy_code", "data_dir": ""}), "test")
  assert records and all(isinstance(r["tests"], list) for r in records)
  batch = next(prompts.prompt_iterator(records, 2, seed=0))
  assert all(isinstance(r["tests"], list) and r["task"] == "code" for r in batch)
  router = rewards.build_router({"code": {"code": 1.0, "format": 0.5}})
  completions = [wrap(r["answer"]) for r in batch[:1]] + ["<answer>no code</answer>"]
  total, parts, failures = router([r["problem"] for r in batch], completions,
                                  [r["answer"] for r in batch], records=batch)
  assert parts["code"].tolist() == [1.0, 0.0]
  assert parts["format"].tolist() == [1.0, 0.0]
  assert total.tolist() == [1.5, 0.0] and failures == {"code": 0, "format": 0}
  with pytest.raises(KeyError):
    cs.code_reward()([""], ["x"], [""], records=[{"id": "no-tests"}])


# ---------------------------------------------------------------------------------------------
# Hostile programs


def run_hostile(source: str, expected: str, mode: str, audit_hook: bool = True,
                limits: cs.Limits = TIGHT) -> cs.SandboxResult:
  t0 = time.monotonic()
  r = cs.run_tests(source, [{"input": "", "output": expected}], limits, isolation=mode,
                   audit_hook=audit_hook)
  assert time.monotonic() - t0 < limits.wall_seconds + SLACK_S
  assert r.isolation == mode
  assert r.score() == 0.0, r
  return r


def leftover_processes() -> list[int]:
  """Processes still running a sandbox runner (their command line names its work directory)."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"r1jax-code-" in f.read():
          found.append(int(pid))
    except OSError:
      pass
  return found


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_and_sleep_end_in_time(mode):
  r = run_hostile("while True:\n  pass\n", "done", mode)
  assert r.tests[0].reason in ("cpu time limit exceeded", "time limit exceeded")
  # Deaf to the per-test alarm, asleep (no CPU): only the parent's wall clock ends it.
  source = ("import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n"
            "time.sleep(60)\nprint('done')\n")
  r = run_hostile(source, "done", mode, limits=dataclasses.replace(TIGHT, wall_seconds=1.5))
  assert r.tests[0].reason == "wall time limit exceeded"
  assert not leftover_processes()


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(mode):
  source = ("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n")
  run_hostile(source, "done", mode)
  assert not leftover_processes()


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb(mode):
  r = run_hostile("a = [0] * 10**9\nprint('done')\n", "done", mode)  # 8 GB at once
  assert "MemoryError" in r.tests[0].reason
  run_hostile("a = []\nwhile True:\n  a.append(' ' * 10**7)\n", "done", mode)  # page by page


@pytest.mark.parametrize("mode", MODES)
def test_write_outside_the_work_directory(mode, tmp_path):
  target = tmp_path / "outside"
  target.mkdir(mode=0o777)
  os.chmod(target, 0o777)  # only the sandbox stands in the way, not the directory's mode
  for source in (f"open({str(target / 'a')!r}, 'w').write('x')\nprint('written')\n",
                 (f"import os\nos.symlink({str(target)!r}, 'link')\n"
                  "open('link/b', 'w').write('x')\nprint('written')\n"),
                 f"import os\nos.mkdir({str(target / 'c')!r})\nprint('written')\n"):
    r = run_hostile(source, "written", mode)
    assert "sandbox:" in r.tests[0].reason  # the audit hook refused before the OS was asked
  assert list(target.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
def test_environment_secrets_do_not_leak(mode, monkeypatch):
  secret = "r1jax-fake-secret-7d1f"
  monkeypatch.setenv("R1JAX_FAKE_SECRET", secret)
  run_hostile("import os\nprint(os.environ.get('R1JAX_FAKE_SECRET', 'none'))\n", secret, mode)
  source = ("import os\nfor pid in (os.getppid(), PID):\n"
            "  try:\n"
            "    env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\\0')\n"
            "  except OSError:\n    continue\n"
            "  for kv in env:\n"
            "    if kv.startswith(b'R1JAX_FAKE_SECRET='):\n"
            "      print(kv.split(b'=', 1)[1].decode())\n").replace("PID", str(os.getpid()))
  run_hostile(source, secret, mode)


@pytest.mark.parametrize("mode", MODES)
def test_sockets_do_not_connect(mode):
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    source = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
              "s.sendall(b'hi')\nprint('connected')\n")
    r = run_hostile(source, "connected", mode)
    assert "sandbox:" in r.tests[0].reason
    readable, _, _ = select.select([server], [], [], 0.2)
    assert readable == []


@pytest.mark.parametrize("mode", MODES)
def test_output_floods_are_capped(mode):
  r = run_hostile("print('x' * 100_000_000)\n", "x", mode)
  assert r.tests[0].reason == "output limit exceeded"
  r = run_hostile("import os\nwhile True:\n  os.write(2, b'e' * 10**6)\n", "x", mode)
  assert r.tests[0].reason.startswith("OSError: [Errno 27]")  # RLIMIT_FSIZE: file too large
  assert 0 < len(r.stderr.encode()) <= TIGHT.max_output_bytes


@pytest.mark.parametrize("mode", MODES)
def test_deep_recursion(mode):
  r = run_hostile("def f(n):\n  return 0 if n == 0 else 1 + f(n - 1)\nprint(f(10000))\n",
                  "10000", mode)
  assert r.tests[0].reason.startswith("RecursionError")
  run_hostile("import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n  return f(n + 1) + 1\n"
              "print(f(0))\n", "0", mode, limits=dataclasses.replace(TIGHT, memory_mb=64))


# The program runs in a throwaway Python process (its "parent") and tries to kill it and this
# test process. The wrapper prints the score; a killed wrapper fails the test.
KILL_PARENT = ("import os, signal\n"
               "for pid in (os.getppid(), PARENT, PYTEST):\n"
               "  if pid > 0:\n"
               "    os.kill(pid, signal.SIGKILL)\n"
               "print('killed')\n")
KILL_ALL = ("import os, signal\n"
            "pids = [int(d) for d in os.listdir('/proc') if d.isdigit()] + [PARENT, PYTEST]\n"
            "hit = False\n"
            "for pid in pids:\n"
            "  if pid in (os.getpid(), 1):\n    continue\n"
            "  try:\n"
            "    os.kill(pid, signal.SIGKILL)\n"
            "    hit = hit or pid in (PARENT, PYTEST)\n"
            "  except OSError:\n"
            "    pass\n"
            "print('killed' if hit else 'missed')\n")
WRAPPER = """
import json, os, sys
from r1jax.rl import code_sandbox as cs
source = sys.argv[1].replace("PARENT", str(os.getpid()))
limits = cs.Limits(cpu_seconds=1, wall_seconds=4, test_seconds=1, memory_mb=256)
r = cs.run_tests(source, [{"input": "", "output": "killed"}], limits, isolation=sys.argv[2],
                 audit_hook=sys.argv[3] == "1")
print(json.dumps({"score": r.score(), "reason": r.tests[0].reason}))
"""


def run_killer(source: str, mode: str, audit_hook: bool) -> dict:
  source = source.replace("PYTEST", str(os.getpid()))
  done = subprocess.run([sys.executable, "-c", WRAPPER, source, mode, str(int(audit_hook))],
                        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
  assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["score"] == 0.0, result
  return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("program", [KILL_PARENT, KILL_ALL], ids=["parent", "all"])
def test_killing_the_parent(mode, program):
  result = run_killer(program, mode, audit_hook=True)
  # KILL_ALL swallows the refusals and prints 'missed'
  assert "sandbox: os.kill" in result["reason"] or result["reason"] == "wrong answer"


@pytest.mark.skipif(not HAS_UNSHARE, reason="no unshare")
def test_namespaces_hold_without_the_audit_hook(tmp_path):
  """The OS layer alone (unshare, rlimits, uid): no network, no parent in sight, no fork bomb."""
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    source = (f"import socket\nsocket.create_connection(('127.0.0.1', "
              f"{server.getsockname()[1]}), timeout=1)\nprint('connected')\n")
    r = run_hostile(source, "connected", "unshare", audit_hook=False)
    assert "unreachable" in r.tests[0].reason
    assert select.select([server], [], [], 0.2)[0] == []
  for program in (KILL_PARENT, KILL_ALL):
    run_killer(program, "unshare", audit_hook=False)
  source = "import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n"
  run_hostile(source, "done", "unshare", audit_hook=False)
  assert not leftover_processes()
  run_hostile(f"print(open('/proc/{os.getpid()}/environ').read())\n", "x", "unshare",
              audit_hook=False)


def test_the_child_runs_unprivileged_and_isolated():
  """What the child sees of itself: a bare environment, not root when the trainer is root, and
  with unshare its own PID namespace (it is PID 1 and has no parent in sight)."""
  source = ("import os\n"
            "def info():\n"
            "  return {'uid': os.getuid(), 'env': sorted(os.environ), 'pid': os.getpid(),\n"
            "          'ppid': os.getppid()}\n")
  p = cs.platform()
  if os.geteuid() == 0:
    assert p.drop and p.uid != 0
  env = sorted(["PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"])
  for mode in (["unshare"] if HAS_UNSHARE else []) + ["fallback"]:
    if mode == "unshare":
      expected = {"uid": 65534 if "--map-user=65534" in p.unshare else 0, "env": env, "pid": 1,
                  "ppid": 0}
    else:
      expected = {"uid": p.uid, "env": env, "ppid": os.getpid()}
    tests = [{"call": f"info()[{k!r}]", "expected": v} for k, v in expected.items()]
    r = cs.run_tests(source, tests, isolation=mode)
    assert [t.reason for t in r.tests] == ["passed"] * len(tests), (mode, r)
    assert r.uid == p.uid
