"""r1jax command line: `python -m r1jax.main --config=configs/<stage>.py --workdir=DIR`.

Flags only; everything else is importable (`r1jax.runner.run_stage(config, workdir)`), so a
notebook runs the same code. Any config field can be overridden: `--config.rl.group_size=16`.
"""
from __future__ import annotations

import logging as std_logging
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.errors import ConfigError
from r1jax.runner import check_config, run_stage  # noqa: F401  (the library entry point)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")


class _QuietLibraries:
  """Drops INFO chatter of orbax / TFDS / grain from the absl log; warnings still show."""

  NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or not any(n in record.pathname for n in self.NOISY)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/<stage>.py is required")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from r1jax import sharding
  sharding.maybe_initialize_distributed()
  workdir = _WORKDIR.value or os.path.join("workdirs", str(_CONFIG.value.get("stage", "run")))
  try:
    result = run_stage(_CONFIG.value, workdir)
  except (ConfigError, FileNotFoundError) as e:
    print(f"r1jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("finished: %s", json.dumps(result, default=str, sort_keys=True)[:2000])


if __name__ == "__main__":
  app.run(main)
