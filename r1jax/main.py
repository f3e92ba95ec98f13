"""r1jax command line: `python -m r1jax.main --config=configs/<stage>.py --workdir=DIR`.

Flags only; everything else is importable (`r1jax.runner.run_stage(config, workdir)`), so a
notebook runs the same code. Any config field can be overridden: `--config.rl.group_size=16`.

A bad input ends the run with one line on stderr, `r1jax: error: <what, naming the file, field
or value>`, and exit code 2: a config file that does not exist, an unknown or mistyped
`--config.<field>`, a workdir that cannot be written or holds an incompatible run, a missing or
malformed data, model or tokenizer file, a damaged checkpoint, a prompt longer than the model's
context, a mesh or batch the devices cannot split. What needs no model is checked before anything
is written; no failing run deletes or overwrites checkpoints or logs. Set `R1JAX_TRACEBACK=1` in
the environment to get the full traceback instead (for a bug report). Anything else is a bug and
shows its traceback as usual.
"""
from __future__ import annotations

import difflib
import json
import logging as std_logging
import os
import re
import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import config_files
from r1jax.errors import ConfigError, R1jaxError
from r1jax.runner import check_config, run_stage  # noqa: F401  (the library entry point)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and outputs (default: where a stage would "
    "look for this run as its parent, e.g. workdirs/grpo_zero_world_reflect).")

TRACEBACK_ENV = "R1JAX_TRACEBACK"
# What a user can fix: reported as one line. OS errors other than these (a full disk, an I/O
# error) keep their traceback: they are not about what the user typed.
USER_ERRORS = (R1jaxError, FileNotFoundError, PermissionError, NotADirectoryError,
               IsADirectoryError, UnicodeDecodeError)


class _QuietLibraries:
  """Drops INFO chatter of orbax / TFDS / grain from the absl log; warnings still show."""

  NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")

  def filter(self, record) -> bool:
    noisy = any(n in record.pathname for n in self.NOISY)
    return record.levelno >= std_logging.WARNING or not noisy


def _drop_closed_loop_noise(unraisable) -> None:
  """tensorstore reads that finish after orbax closed its event loop (a failed restore cancels
  them) report 'Event loop is closed' as unraisable, with a traceback, around and after the one
  error line; they are noise. Everything else goes to Python's own hook."""
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    return
  sys.__unraisablehook__(unraisable)


def _traceback_wanted() -> bool:
  return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def describe(e: BaseException) -> str:
  """The one line an error is reported as: OS errors as 'reason: path', never several lines."""
  if isinstance(e, UnicodeDecodeError):
    text = (f"a file is not UTF-8 text ({e.reason} at byte {e.start}); rerun with "
            f"{TRACEBACK_ENV}=1 to see which")
  elif isinstance(e, OSError) and e.strerror and e.filename is not None:
    text = f"{e.strerror}: {e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
  else:
    text = str(e) or type(e).__name__
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


def fail(message: str) -> NoReturn:
  sys.stdout.flush()
  print(f"r1jax: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


# ------------------------------------------------------------------------------- flag parsing
_OVERRIDE = re.compile(r"^--?(no)?config\.([^=\s]+)")


def _config_spec(argv: list[str]) -> tuple[int, str] | None:
  """(index, value) of the --config flag in argv (either `--config=X` or `--config X`)."""
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    for prefix in ("--config=", "-config="):
      if arg.startswith(prefix):
        return i, arg[len(prefix):]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return i, argv[i + 1]
  return None


def _field_error(config, dotted: str, spec: str) -> str | None:
  """Why `--config.<dotted>` names no field of `config` (None when it does)."""
  node, seen = config, []
  for part in dotted.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      where = ".".join(seen) or "the config"
      close = difflib.get_close_matches(part, [str(k) for k in keys], n=1)
      hint = f"; did you mean --config.{'.'.join(seen + close)}?" if close else ""
      if not keys:
        return f"--config.{dotted}: {where} is a value, not a block of fields ({spec})"
      return f"--config.{dotted}: {where} has no field {part!r} ({spec}){hint}"
    node, seen = node[part], seen + [part]
  return None


def _check_config_args(argv: list[str]) -> list[str]:
  """Loads the --config file as r1jax does (a ConfigError for a missing file or a bad variant)
  and checks that every --config.<field> override names a field of it. Returns argv with the
  config path resolved (a path relative to the repo works from any directory)."""
  found = _config_spec(argv)
  if found is None:
    return argv
  i, spec = found
  try:
    config = config_files.load(spec)
  except R1jaxError:
    raise
  except Exception as e:  # a config file that fails to import: one line
    raise ConfigError(f"config file {spec!r} fails to load: {type(e).__name__}: {e}") from e
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if m and "[" not in m.group(2):  # list indices: left to ml_collections
      error = _field_error(config, m.group(2), spec)
      if error:
        raise ConfigError(error)
  path, colon, variant = spec.partition(":")
  resolved = config_files.resolve(path) + colon + variant
  argv = list(argv)
  if argv[i] in ("--config", "-config"):
    argv[i + 1] = resolved
  else:
    argv[i] = f"--config={resolved}"
  return argv


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config reported as one line: left alone, absl
  prints a multi-line usage dump and ml_collections a traceback (a missing config file, an
  unknown `--config.field`, a value of the wrong type)."""
  try:
    return flags.FLAGS(_check_config_args(argv))
  except flags.Error as e:  # an unknown flag, a value of the wrong type
    if _traceback_wanted():
      raise
    fail(describe(e))
  except USER_ERRORS as e:
    if _traceback_wanted():
      raise
    fail(describe(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections' overrides
    if _traceback_wanted():
      raise
    fail(f"bad --config override: {type(e).__name__}: {describe(e)}")


def main(argv):
  sys.unraisablehook = _drop_closed_loop_noise
  if len(argv) > 1:
    fail(f"unexpected arguments: {argv[1:]} (flags are --config=... and --workdir=...)")
  if _CONFIG.value is None:
    fail("--config=configs/<stage>.py is required")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from r1jax import multihost
  multihost.maybe_initialize_distributed()
  workdir = _WORKDIR.value or config_files.default_workdir(flags.FLAGS["config"].config_filename)
  from r1jax.preemption import Preempted
  try:
    result = run_stage(_CONFIG.value, workdir)
  except Preempted as e:  # SIGTERM honoured: the checkpoint is written, the run resumes on rerun
    sys.stdout.flush()
    print(f"r1jax: {e}", file=sys.stderr, flush=True)
    sys.exit(0)
  except USER_ERRORS as e:
    if _traceback_wanted():
      raise
    fail(describe(e))
  logging.info("finished: %s", json.dumps(result, default=str, sort_keys=True)[:2000])


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
