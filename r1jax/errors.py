"""Errors the command line reports as one line, without a traceback (`r1jax.main`)."""


class R1jaxError(Exception):
  """A run that cannot go on for a reason the user can fix; the message names the file, field or
  value."""


class ConfigError(R1jaxError, ValueError):
  """A config that cannot run: an unknown stage, a missing or contradictory field."""


class NonFiniteError(R1jaxError, FloatingPointError):
  """A NaN or inf in the loss or the gradients under `nan_policy='stop'`; the last good checkpoint
  is kept."""


class CheckpointError(R1jaxError, ValueError):
  """A checkpoint or model file that cannot be read: a corrupt or truncated step directory, HF
  directory or GGUF file, or one of an architecture r1jax does not import. The message names the
  file or step directory, which is left as it is. Also a ValueError, as the importers' errors
  were before."""
