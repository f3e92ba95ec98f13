"""Errors the command line reports as one line, without a traceback."""


class ConfigError(ValueError):
  """A config that cannot run: an unknown stage, a missing or contradictory field."""
