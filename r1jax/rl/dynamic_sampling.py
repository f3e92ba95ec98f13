"""DAPO dynamic sampling: keep only groups whose rewards differ, resample until the batch is full.

A group whose G rewards are all equal has zero advantage everywhere, so it adds no policy gradient
and only dilutes the batch. The rollout loop samples a batch of groups, scores it, and hands it to
a `GroupAccumulator` until the accumulator is `done`:

    acc = GroupAccumulator(num_groups=32, group_size=16, max_rounds=4)
    while not acc.done:
      batch, rewards = sample_and_score()     # arrays with leading dim N = groups * G, rewards [N]
      acc.add(batch, rewards)
    train_batch = acc.take()                  # batch arrays + 'rewards' + 'informative'
    log(acc.last_stats)

If `max_rounds` runs out first, `take` fills the batch (so shapes stay fixed for the jitted train
step) with constant-reward groups seen along the way; they carry zero advantage. Their rows are
marked False in `informative`, and `last_stats['filler_groups']` says how many there were.
Host-side numpy only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def informative_groups(rewards: np.ndarray, group_size: int, tol: float = 0.0) -> np.ndarray:
  """rewards [N] -> bool [N // group_size]: True where max - min of the group exceeds tol."""
  rewards = np.asarray(rewards)
  if rewards.ndim != 1 or group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"rewards must be [N] with N a multiple of group_size={group_size}, "
                     f"got shape {rewards.shape}")
  r = rewards.reshape(-1, group_size)
  return (r.max(axis=1) - r.min(axis=1)) > tol


class GroupAccumulator:
  """Collects informative groups over sampling rounds until `num_groups` are held.

  Args:
    num_groups: groups wanted in the training batch.
    group_size: samples per group (G); rows of one group are contiguous.
    max_rounds: rounds after which `done` is True even if not full (None: no cap).
    fill: if not full at `take`, pad with constant-reward groups to keep the shape fixed.
    tol: a group is informative if max - min of its rewards exceeds tol.
  """

  def __init__(self, num_groups: int, group_size: int, max_rounds: int | None = None,
               fill: bool = True, tol: float = 0.0):
    if num_groups < 1 or group_size < 1:
      raise ValueError(f"need num_groups >= 1 and group_size >= 1, got {num_groups}, {group_size}")
    if max_rounds is not None and max_rounds < 1:
      raise ValueError(f"max_rounds must be >= 1 or None, got {max_rounds}")
    self.num_groups, self.group_size = num_groups, group_size
    self.max_rounds, self.fill, self.tol = max_rounds, fill, tol
    self.last_stats: dict[str, int] = {}
    self._reset()

  def _reset(self):
    self._kept: list[dict[str, np.ndarray]] = []  # each: key -> [G, ...], plus 'rewards'
    self._dropped: list[dict[str, np.ndarray]] = []  # at most num_groups, for filling
    self._keys: tuple[str, ...] | None = None
    self.rounds = 0
    self.groups_seen = 0
    self.groups_dropped = 0
    self.overflow_groups = 0

  @property
  def num_kept(self) -> int:
    return len(self._kept)

  @property
  def full(self) -> bool:
    return self.num_kept >= self.num_groups

  @property
  def done(self) -> bool:
    return self.full or (self.max_rounds is not None and self.rounds >= self.max_rounds)

  def add(self, batch: Mapping[str, np.ndarray], rewards: np.ndarray) -> int:
    """Adds one sampled round. batch: key -> [N, ...]; rewards [N]. Returns groups kept."""
    rewards = np.asarray(rewards)
    keep = informative_groups(rewards, self.group_size, self.tol)  # [N // G]
    n = rewards.shape[0]
    if "rewards" in batch or "informative" in batch:
      raise ValueError("batch keys 'rewards' and 'informative' are reserved for the accumulator")
    keys = tuple(sorted(batch))
    if self._keys is not None and keys != self._keys:
      raise ValueError(f"batch keys {keys} differ from earlier rounds' {self._keys}")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    for k, v in arrays.items():
      if v.ndim == 0 or v.shape[0] != n:
        raise ValueError(f"batch[{k!r}] has shape {v.shape}; expected leading dim {n}")
    self._keys = keys
    arrays["rewards"] = rewards
    self.rounds += 1
    self.groups_seen += keep.size
    kept_now = 0
    for g, informative in enumerate(keep):
      rows = slice(g * self.group_size, (g + 1) * self.group_size)
      group = {k: v[rows] for k, v in arrays.items()}
      if not informative:
        self.groups_dropped += 1
        if len(self._dropped) < self.num_groups:
          self._dropped.append(group)
      elif self.full:
        self.overflow_groups += 1
      else:
        self._kept.append(group)
        kept_now += 1
    return kept_now

  def take(self) -> dict[str, np.ndarray]:
    """Returns the training batch and resets for the next step.

    Keys: the batch's keys, 'rewards' [N'] and 'informative' bool [N'], with N' = num_groups * G
    when full or filled, fewer if too few groups were seen. Kept groups come first, in the order
    they were sampled. `last_stats` reports rounds, groups seen/kept/dropped, filler and overflow.
    """
    groups = self._kept[:self.num_groups]
    flags = [True] * len(groups)
    filler = []
    if self.fill and len(groups) < self.num_groups:
      filler = self._dropped[:self.num_groups - len(groups)]
    groups = groups + filler
    flags = flags + [False] * len(filler)
    if not groups:
      raise ValueError("no groups to take: add() at least one round first")
    out = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
    out["informative"] = np.repeat(np.asarray(flags), self.group_size)
    self.last_stats = {
        "rounds": self.rounds,
        "groups_seen": self.groups_seen,
        "groups_kept": len(flags) - len(filler),
        "groups_dropped": self.groups_dropped,
        "filler_groups": len(filler),
        "overflow_groups": self.overflow_groups,
        "shortfall_groups": self.num_groups - len(groups),
    }
    self._reset()
    return out
