"""The sampler a stage samples with, chosen by config: 'static' (`r1jax.sampling.Sampler`) or
'continuous' (`r1jax.continuous_sampling.ContinuousSampler`). Both sample the same tokens from
the same prompt ids and rng, so the choice changes speed, never samples.

The samplers are imported when built: the eval stage regrades completions files without JAX.
"""
from __future__ import annotations

from r1jax.errors import ConfigError

KINDS = ("static", "continuous")
# Problems per call in `sample_grade.sample_completions` with a continuous sampler, in batches
# of `batch_size`: its slots hold one batch (num_slots 0), and the next batches wait to refill
# them, so a batch's long tail decodes beside the next batch's rows instead of alone. One
# drained tail per REFILL_BATCHES batches; the progress bar still moves every few batches.
REFILL_BATCHES = 4


def check(kind, num_slots, block: str = "") -> None:
  """A ConfigError naming the field of config `block` ('rl' -> rl.sampler) for a bad choice."""
  field = lambda f: f"{block}.{f}" if block else f
  if kind not in KINDS:
    raise ConfigError(f"{field('sampler')}={kind!r}: must be one of {', '.join(KINDS)}")
  if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 0:
    raise ConfigError(f"{field('num_slots')}={num_slots!r}: must be an int >= 0 "
                      "(0 = one batch's rows)")


def check_config(config) -> None:
  """Every sampler choice in a stage config (the eval stage's own fields, and the eval, rl and
  rs blocks), checked before a stage loads a model."""
  for block in ("", "eval", "rl", "rs"):
    node = config.get(block) if block else config
    if hasattr(node, "get") and ("sampler" in node or "num_slots" in node):
      check(node.get("sampler", "static"), node.get("num_slots", 0), block)


def make_sampler(model, mesh=None, rules=None, *, kind: str = "static", num_slots: int = 0,
                 rows: int = 1, block: str = ""):
  """A sampler of `kind` for `model`; `num_slots` 0 gives the continuous sampler `rows` slots
  (one static batch's rows). Errors name the fields in config `block` ('rl' -> rl.sampler)."""
  check(kind, num_slots, block)
  from r1jax import sharding
  rules = sharding.DEFAULT_RULES if rules is None else rules
  if kind == "static":
    from r1jax.sampling import Sampler
    return Sampler(model, mesh, rules)
  from r1jax.continuous_sampling import ContinuousSampler
  return ContinuousSampler(model, mesh, rules, num_slots=num_slots or max(rows, 1))


def from_config(config, block: str, model, mesh=None, rules=None, *, rows: int):
  """`make_sampler` from the `sampler` and `num_slots` fields of `config.<block>` ('' = the
  config itself); absent, as in runs made before they existed, they mean static."""
  node = config[block] if block else config
  return make_sampler(model, mesh, rules, kind=node.get("sampler", "static"),
                      num_slots=node.get("num_slots", 0), rows=rows, block=block)
