"""The child side of `r1jax.rl.code_sandbox`: rlimits, a guard, then the tests.

It is never imported by the trainer. The sandbox runs its text as
`python -I -S -c <this file> SPEC [COMMAND...]` under an interpreter the sandbox user can
execute, so it uses the standard library only and runs on Python 3.8+.

With a COMMAND it is the launcher: it lowers its own rlimits and execs COMMAND (unshare, which
starts this script again inside fresh namespaces). The limits thus hold before anything untrusted
runs, without `subprocess`'s `preexec_fn`, which can deadlock in the trainer's threaded process.
Without one it is the runner: it lowers the rlimits again (RLIMIT_NPROC only here, where it
counts the sandbox's own processes), installs the audit hook, and runs the tests of
the payload (JSON on stdin), writing result-<i>.json after each test so that a crash loses only
the test that was running.

Expected outputs never reach this process: it reports what the program printed or returned and
the parent judges. A program that tampers with this script can therefore only report wrong
results, except for `assert` tests, whose verdict is computed here.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import resource
import signal
import stat
import sys

# Audit events refused outright: processes, signals, sockets, native code, other interpreters,
# rlimits, and the introspection that could reach the hook's state.
BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
    "os.startfile", "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg",
    "signal.pthread_kill", "resource.setrlimit", "resource.prlimit", "os.unshare", "os.setns",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
    "cpython.PyInterpreterState_New", "sys.remote_exec", "webbrowser.open", "urllib.Request",
})
BLOCKED_PREFIXES = ("socket.", "ctypes.", "http.", "ftplib.", "smtplib.", "imaplib.", "poplib.",
                    "telnetlib.", "nntplib.")
# Modules that reach past the hook (FFI, raw process creation, sockets, sub-interpreters with no
# hook) and, once stripped below, modules whose re-import would restore what was stripped.
BLOCKED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
    "socket", "_socket", "ssl", "_ssl", "pty", "_xxsubinterpreters", "_xxinterpchannels",
    "_interpreters", "_interpchannels", "_interpqueues", "posix", "os", "signal", "_signal",
    "_imp",
})
# Functions with no audit event that signal, renice or create special files; removed. A speed
# bump only: a fresh copy of a built-in module (importlib.util.module_from_spec) has them again.
STRIPPED = {
    "posix": ("pidfd_open", "mkfifo", "mknod", "setpriority", "sched_setaffinity",
              "sched_setscheduler", "sched_setparam", "setsid", "setpgid", "setpgrp"),
    "signal": ("pidfd_send_signal",),
    "_signal": ("pidfd_send_signal",),
}
# Path-taking events: argument positions of the paths, then of dir_fd arguments (must be unset).
PATH_EVENTS = {
    "os.remove": ((0,), (1,)), "os.rename": ((0, 1), (2, 3)), "os.rmdir": ((0,), (1,)),
    "os.mkdir": ((0,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
    "os.truncate": ((0,), ()), "os.symlink": ((1,), (2,)), "os.link": ((0, 1), (2, 3)),
    "os.utime": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
    "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "os.lchmod": ((0,), ()),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
LIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
          "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
          "nofile": resource.RLIMIT_NOFILE}


def set_limits(limits):
  """Soft = hard, so the program cannot raise them back (RLIMIT_CPU then ends in SIGKILL)."""
  for name, value in limits.items():
    resource.setrlimit(LIMITS[name], (value, value))


def make_hook(root, pid):
  """The audit hook. Everything it uses is bound here, in its closure: the program can rebind
  module attributes and this script's globals, but not a closure it cannot reach (the gc
  introspection events that would reach it are refused)."""
  lstat, readlink, getcwd = os.lstat, os.readlink, os.getcwd
  s_islnk, s_isdir = stat.S_ISLNK, stat.S_ISDIR
  type_, len_, isinstance_, oserror, perm = type, len, isinstance, OSError, PermissionError
  bool_, any_ = bool, any
  str_t, bytes_t, int_t = str, bytes, int
  blocked, prefixes, imports = BLOCKED_EVENTS, BLOCKED_PREFIXES, BLOCKED_IMPORTS
  path_events, write_flags = dict(PATH_EVENTS), WRITE_FLAGS
  own_proc = "/proc/" + str(pid)

  def resolve(path):
    """Absolute, symlink-free form of `path` (plain str/bytes only: a path object's __fspath__
    is program code and could answer differently when the real call asks)."""
    t = type_(path)
    if t is bytes_t:
      path = bytes_t.decode(path, "utf-8", "surrogateescape")
    elif t is not str_t:
      raise perm("sandbox: paths must be str or bytes")
    if not path.startswith("/"):
      path = getcwd() + "/" + path
    todo, done, hops = path.split("/")[::-1], [], 0
    while todo:
      part = todo.pop()
      if part in ("", "."):
        continue
      if part == "..":
        if done:
          done.pop()
        continue
      here = "/" + "/".join(done + [part])
      try:
        mode = lstat(here).st_mode
      except oserror:
        done.append(part)
        continue
      if s_islnk(mode):
        hops += 1
        if hops > 40:
          raise perm("sandbox: too many symlinks")
        target = readlink(here)
        if target.startswith("/"):
          done = []
        todo.extend(target.split("/")[::-1])
        continue
      done.append(part)
    return "/" + "/".join(done)

  def inside(path):
    return path == root or path.startswith(root + "/")

  def check_proc(path):
    if path.startswith("/proc/") and path.split("/")[2].isdigit() and not (
        path == own_proc or path.startswith(own_proc + "/")):
      raise perm("sandbox: other processes' /proc entries are off limits")

  def check_read(path):
    check_proc(path)
    if not inside(path):
      try:
        is_dir = s_isdir(lstat(path).st_mode)
      except oserror:
        is_dir = False
      if is_dir:  # a directory fd outside would let dir_fd= calls escape the checks
        raise perm("sandbox: no opening directories outside the working directory")

  def hook(event, args):
    if event in blocked or event.startswith(prefixes):
      raise perm("sandbox: " + event + " is not allowed")
    if event == "import":
      name = args[0]
      if isinstance_(name, str_t) and str_t.partition(name, ".")[0] in imports:
        raise perm("sandbox: import of " + str_t.__str__(name) + " is not allowed")
    elif event == "open":
      path, mode, flags = args
      if type_(path) is int_t:
        return
      where = resolve(path)
      if type_(flags) is int_t:
        writes = bool_(flags & write_flags)
      else:
        writes = type_(mode) is not str_t or any_(c in mode for c in "wax+")
      check_read(where)
      if writes and not inside(where) and where != "/dev/null":
        raise perm("sandbox: no writing outside the working directory")
    elif event == "object.__setattr__":
      if len_(args) > 1 and isinstance_(args[1], str_t) and str_t.__eq__(args[1], "__code__"):
        raise perm("sandbox: no replacing code objects")
    elif event in path_events:
      paths, dir_fds = path_events[event]
      for i in dir_fds:
        if i < len_(args) and args[i] is not None and not (type_(args[i]) is int_t
                                                          and args[i] == -1):
          raise perm("sandbox: dir_fd arguments are not allowed")
      for i in paths:
        if type_(args[i]) is int_t:
          continue  # an fd: only files opened through the checks above
        if not inside(resolve(args[i])):
          raise perm("sandbox: " + event + " outside the working directory")
    elif (event in ("os.listdir", "os.scandir") and args and args[0] is not None
          and type_(args[0]) is not int_t):
      check_proc(resolve(args[0]))

  return hook


def install_guard(root):
  """Strips unaudited process and signal functions, then adds the hook (which cannot be
  removed)."""
  for name, attrs in STRIPPED.items():
    module = sys.modules.get(name) or __import__(name)
    for attr in attrs:
      for mod in (module, os if name == "posix" else None):
        if mod is not None and hasattr(mod, attr):
          delattr(mod, attr)
  sys.addaudithook(make_hook(os.path.realpath(root), os.getpid()))


class OutputLimit(Exception):
  pass


class TestTimeout(BaseException):
  """Raised by the per-test alarm; a BaseException so `except Exception` in the program does
  not swallow it."""


class CappedBuffer(io.BytesIO):
  """Captured stdout that refuses to grow past `cap` bytes (and remembers that it tried)."""

  def __init__(self, cap):
    super().__init__()
    self.cap, self.overflowed = cap, False

  def write(self, data):
    size = memoryview(data).nbytes
    if self.overflowed or self.tell() + size > self.cap:
      self.overflowed = True
      raise OutputLimit("output limit exceeded")
    return super().write(data)


def describe(exc):
  """'Type: message', short. str() of a program's exception may itself misbehave."""
  try:
    text = str(exc)
  except BaseException:  # noqa: BLE001 (program code: anything may come out)
    text = ""
  name = type(exc).__name__
  return (name + ": " + text if text else name)[:300]


def plain(value, depth=0):
  """JSON data of exact built-in types: a subclass with a lying __eq__ is refused, not judged."""
  t = type(value)
  if value is None or t in (bool, int, float, str):
    return value
  if depth > 64:
    raise ValueError("result nested too deeply")
  if t in (list, tuple):
    return [plain(v, depth + 1) for v in value]
  if t is dict and all(type(k) is str for k in value):
    return {k: plain(v, depth + 1) for k, v in value.items()}
  raise TypeError("result of type " + t.__name__ + " is not plain JSON data")


class Runner:
  """Runs one payload's tests from `start` on, one result file per test."""

  def __init__(self, payload, workdir):
    self.workdir = workdir  # absolute paths: the program may chdir away
    self.source, self.tests = payload["source"], payload["tests"]
    self.start, self.cap = payload["start"], payload["max_output"]
    self.test_seconds = payload["test_seconds"]
    self.code = self.namespace = self.setup_error = None
    self.stdio = sys.stdin, sys.stdout

  def write_result(self, i, result):
    try:
      data = json.dumps(result)
    except (TypeError, ValueError) as e:
      data = json.dumps({"status": "error", "error": describe(e)})
    name = os.path.join(self.workdir, f"result-{i}.json")
    try:
      with open(name + ".tmp", "w", encoding="utf-8") as f:
        f.write(data)
    except Exception:  # noqa: BLE001 (RLIMIT_FSIZE: the result itself is too large)
      with open(name + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps({"status": "error", "error": "result too large"}))
    os.replace(name + ".tmp", name)

  def run_main(self, stdin_path, namespace):
    """Executes the program as __main__ with stdin from a file (so open(0) reads it too)."""
    fd = os.open(stdin_path, os.O_RDONLY)
    if fd != 0:  # 0 itself when an earlier test's open(0) closed it
      os.dup2(fd, 0)
      os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (lives past the call)
    buf = CappedBuffer(self.cap)
    sys.stdout = io.TextIOWrapper(buf, encoding="utf-8", errors="replace", write_through=True)
    try:
      exec(self.code, namespace)  # noqa: S102 (running the program is the point)
    except SystemExit as e:
      if e.code not in (None, 0):
        raise
    if buf.overflowed:
      raise OutputLimit("output limit exceeded")
    sys.stdout.flush()
    return buf.getvalue().decode("utf-8", "replace")

  def definitions(self):
    """The program run once, not as __main__, for call and assert tests."""
    if self.namespace is None and self.setup_error is None:
      ns = {"__name__": "solution", "__builtins__": builtins}
      try:
        self.run_main("/dev/null", ns)
        self.namespace = ns
      except TestTimeout:
        raise
      except BaseException as e:  # noqa: BLE001 (reported per test)
        self.setup_error = e
    if self.setup_error is not None:
      raise self.setup_error
    return self.namespace

  def run_test(self, i, test):
    kind = test["kind"]
    if kind == "io":
      ns = {"__name__": "__main__", "__builtins__": builtins}
      stdin = os.path.join(self.workdir, f"stdin-{i}.txt")
      return {"status": "ok", "stdout": self.run_main(stdin, ns)}
    ns = self.definitions()
    if kind == "call":
      value = eval(compile(test["expr"], "<test>", "eval"), ns)
      return {"status": "ok", "value": plain(value)}
    try:
      code = compile(test["code"], "<test>", "eval")
    except SyntaxError:
      exec(compile(test["code"], "<test>", "exec"), ns)  # noqa: S102
      return {"status": "ok"}
    if not eval(code, ns):
      return {"status": "error", "error": "assertion is false"}
    return {"status": "ok"}

  def run(self):
    try:
      self.code = compile(self.source, "<solution>", "exec")
    except BaseException as e:  # noqa: BLE001 (SyntaxError, RecursionError, MemoryError)
      for i in range(self.start, len(self.tests)):
        self.write_result(i, {"status": "error", "error": describe(e)})
      return

    def alarm(signum, frame):
      raise TestTimeout("time limit exceeded")

    for i in range(self.start, len(self.tests)):
      try:
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, self.test_seconds)
        try:
          result = self.run_test(i, self.tests[i])
        finally:  # an alarm that fires here still lands in the handlers below
          signal.setitimer(signal.ITIMER_REAL, 0)
      except OutputLimit:
        result = {"status": "error", "error": "output limit exceeded"}
      except TestTimeout:
        result = {"status": "error", "error": "time limit exceeded"}
      except BaseException as e:  # noqa: BLE001 (whatever the program raised)
        result = {"status": "error", "error": describe(e)}
      finally:
        sys.stdin, sys.stdout = self.stdio
      self.write_result(i, result)


def main(argv):
  spec = json.loads(argv[1])
  set_limits(spec["limits"])
  if len(argv) > 2:
    os.execv(argv[2], argv[2:])
  os.chdir(spec["workdir"])
  payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
  for i, test in enumerate(payload["tests"]):
    if test["kind"] == "io":
      with open(f"stdin-{i}.txt", "w", encoding="utf-8") as f:
        f.write(test["input"])
  if not hasattr(builtins, "exit"):  # -S leaves out site's exit() and quit()
    builtins.exit = builtins.quit = sys.exit
  set_limits({"nproc": spec["nproc"]})
  sys.argv = ["solution"]
  if spec["hook"]:
    install_guard(spec["workdir"])
  Runner(payload, spec["workdir"]).run()


if __name__ == "__main__":
  main(sys.argv)
