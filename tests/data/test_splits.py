"""How split-tasks gives groups (flights) to train/val/test: greedy passes (one largest group
first, the others in fixed random orders), then the seed draws among the splits about as
balanced as the best one found.

Before: groups were taken largest first and the seed only broke ties between groups of equal
size, so with a dozen flights of different sizes every --seed gave the same split (on
hit-uav-dev, seeds 0, 1 and 2 gave identical lists, and the person task got no val image)."""

import math
from collections import Counter

from edgecl.data.splits import BALANCE_GAP, _assign_splits, _greedy_splits, _imbalance

RATIOS = (0.7, 0.1, 0.2)


def _flights():
    """Twelve flights of different sizes; task 0 in all, task 1 in some."""
    groups = {f"f{i:02d}": Counter({0: 5 + 3 * i, **({1: 2 + i} if i % 3 == 0 else {})})
              for i in range(12)}
    totals = Counter()
    for c in groups.values():
        totals.update(c)
    return groups, totals


def test_the_imbalance_by_hand():
    groups = {"a": Counter({0: 6}), "b": Counter({0: 2}), "c": Counter({0: 2})}
    totals = Counter({0: 10})
    # train 6 (target 7), val 2 (target 1), test 2 (target 2): (1/10)^2 + (1/10)^2 + 0
    split = {"a": "train", "b": "val", "c": "test"}
    assert abs(_imbalance(split, groups, totals, RATIOS) - 0.02) < 1e-12


def _rms(split, groups, totals):
    return math.sqrt(_imbalance(split, groups, totals, RATIOS) / (3 * len(totals)))


def test_seeds_draw_among_splits_about_as_balanced_as_largest_first():
    groups, totals = _flights()
    largest_first = _greedy_splits(sorted(groups, key=lambda g: -sum(groups[g].values())),
                                   groups, totals, RATIOS)
    drawn = [_assign_splits(groups, totals, RATIOS, seed) for seed in range(6)]
    assert len({tuple(sorted(split.items())) for split, _ in drawn}) > 1
    assert len({n for _, n in drawn}) == 1 and drawn[0][1] > 1  # the same choice for every seed
    for split, _ in drawn:
        assert set(split) == set(groups)
        assert _rms(split, groups, totals) <= _rms(largest_first, groups, totals) + BALANCE_GAP
    assert _assign_splits(groups, totals, RATIOS, 3) == drawn[3]  # the same seed, the same split


def test_where_one_split_alone_is_balanced_every_seed_gives_it():
    # 7, 2 and 1 images: train 7, test 2, val 1 is exact; nothing else comes close
    groups = {"a": Counter({0: 7}), "b": Counter({0: 2}), "c": Counter({0: 1})}
    totals = Counter({0: 10})
    for seed in range(4):
        assert _assign_splits(groups, totals, RATIOS, seed) == (
            {"a": "train", "b": "test", "c": "val"}, 1)


def test_a_split_that_leaves_a_task_without_test_images_loses_to_one_that_does_not():
    # one group holds most of task 1: the most balanced split for task 0 alone would put
    # every task-1 image in train
    groups = {"big": Counter({0: 40, 1: 3}), "mid": Counter({0: 12}), "small": Counter({0: 8}),
              "t1": Counter({1: 1})}
    totals = Counter({0: 60, 1: 4})
    for seed in range(3):
        split, _ = _assign_splits(groups, totals, RATIOS, seed)
        tested = Counter()
        for g, s in split.items():
            if s == "test":
                tested.update(groups[g])
        assert tested[0] and tested[1]
