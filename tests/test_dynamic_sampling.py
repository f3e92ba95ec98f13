"""DAPO dynamic sampling: constant groups dropped, batch filled across rounds, round cap."""
import numpy as np
import pytest

from r1jax.rl.dynamic_sampling import GroupAccumulator, informative_groups


def _round(group_rewards, start_id):
  """A sampled round: groups given as reward lists (G each); rows carry a running sample id."""
  rewards = np.asarray(group_rewards, np.float32).reshape(-1)
  n = rewards.size
  ids = np.arange(start_id, start_id + n)
  batch = {"ids": ids, "tokens": np.stack([ids, -ids], axis=1)}  # tokens [N, 2]
  return batch, rewards


def test_informative_groups():
  r = np.array([1, 1, 0, 1, 0.5, 0.5, 0, 0], np.float32)
  np.testing.assert_array_equal(informative_groups(r, 2), [False, True, False, False])
  np.testing.assert_array_equal(informative_groups(np.array([0.0, 1e-9]), 2, tol=1e-6), [False])
  with pytest.raises(ValueError):
    informative_groups(np.zeros(5), 2)


def test_constant_groups_dropped_and_filled_across_rounds():
  acc = GroupAccumulator(num_groups=3, group_size=2, max_rounds=5)
  # Round 1: groups (ids 0-1) const, (2-3) mixed, (4-5) const -> keeps 1.
  assert acc.add(*_round([[1, 1], [0, 1], [0, 0]], 0)) == 1
  assert not acc.full and not acc.done and acc.rounds == 1
  # Round 2: (6-7) mixed, (8-9) const, (10-11) mixed -> keeps 2, now full.
  assert acc.add(*_round([[1, 0], [1, 1], [0.5, 0]], 6)) == 2
  assert acc.full and acc.done
  out = acc.take()
  np.testing.assert_array_equal(out["ids"], [2, 3, 6, 7, 10, 11])
  np.testing.assert_array_equal(out["tokens"][:, 1], -out["ids"])
  np.testing.assert_array_equal(out["rewards"], [0, 1, 1, 0, 0.5, 0])
  assert out["informative"].all() and out["rewards"].dtype == np.float32
  assert acc.last_stats == {"rounds": 2, "groups_seen": 6, "groups_kept": 3, "groups_dropped": 3,
                            "filler_groups": 0, "overflow_groups": 0, "shortfall_groups": 0}
  # take() resets for the next step.
  assert acc.rounds == 0 and acc.num_kept == 0 and not acc.done


def test_overflow_is_discarded_and_counted():
  acc = GroupAccumulator(num_groups=2, group_size=2)
  acc.add(*_round([[0, 1], [1, 0], [0, 1], [1, 1]], 0))
  out = acc.take()
  np.testing.assert_array_equal(out["ids"], [0, 1, 2, 3])
  assert acc.last_stats["overflow_groups"] == 1 and acc.last_stats["groups_dropped"] == 1


def test_round_cap_fills_with_constant_groups():
  acc = GroupAccumulator(num_groups=3, group_size=2, max_rounds=2)
  acc.add(*_round([[1, 1], [0, 1]], 0))
  assert not acc.done
  acc.add(*_round([[0, 0], [1, 1]], 4))
  assert acc.done and not acc.full and acc.rounds == 2
  out = acc.take()
  # Kept group first, then constant groups in the order seen.
  np.testing.assert_array_equal(out["ids"], [2, 3, 0, 1, 4, 5])
  np.testing.assert_array_equal(out["informative"], [True, True, False, False, False, False])
  assert acc.last_stats["groups_kept"] == 1 and acc.last_stats["filler_groups"] == 2
  assert acc.last_stats["shortfall_groups"] == 0


def test_no_fill_returns_what_is_available():
  acc = GroupAccumulator(num_groups=4, group_size=2, max_rounds=1, fill=False)
  acc.add(*_round([[1, 1], [0, 1], [1, 0]], 0))
  assert acc.done
  out = acc.take()
  np.testing.assert_array_equal(out["ids"], [2, 3, 4, 5])
  assert acc.last_stats["shortfall_groups"] == 2 and acc.last_stats["filler_groups"] == 0


def test_too_few_groups_even_with_fill():
  acc = GroupAccumulator(num_groups=4, group_size=2, max_rounds=1)
  acc.add(*_round([[1, 1], [0, 1]], 0))
  out = acc.take()
  assert out["ids"].shape == (4,) and acc.last_stats["shortfall_groups"] == 2


def test_bad_input():
  acc = GroupAccumulator(num_groups=2, group_size=2)
  with pytest.raises(ValueError, match="leading dim"):
    acc.add({"ids": np.arange(3)}, np.zeros(4))
  with pytest.raises(ValueError, match="reserved"):
    acc.add({"rewards": np.arange(4)}, np.zeros(4))
  acc.add({"ids": np.arange(4)}, np.array([0, 1, 0, 1]))
  with pytest.raises(ValueError, match="keys"):
    acc.add({"other": np.arange(4)}, np.array([0, 1, 0, 1]))
  with pytest.raises(ValueError, match="no groups"):
    GroupAccumulator(num_groups=1, group_size=2).take()
  with pytest.raises(ValueError):
    GroupAccumulator(num_groups=1, group_size=2, max_rounds=0)
