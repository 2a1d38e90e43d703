"""Insertion policies on the in-memory view: reservoir probabilities, class balance, task budget."""

import math
import random

import pytest

from edgecl.continual.memory.policies import (
    BACKGROUND_CLASS,
    ItemInfo,
    POLICIES,
    ClassBalancedPolicy,
    InMemoryView,
    ReservoirPolicy,
    TaskBudgetPolicy,
    make_policy,
    primary_class,
)
from edgecl.errors import ConfigError
from edgecl.frames import LabelOrigin


def run_stream(policy, capacity, stream, seed):
    """Offer (task, classes) items in order; return the kept stream positions."""
    view = InMemoryView(capacity)
    rng = random.Random(seed)
    for i, (task, classes) in enumerate(stream):
        view.offer(i, task, classes, policy, rng)
    return view


def test_registry_is_one_explicit_dict():
    assert set(POLICIES) == {"reservoir", "class_balanced", "task_budget"}
    assert isinstance(make_policy("reservoir"), ReservoirPolicy)
    assert isinstance(make_policy("task_budget", 25.0), TaskBudgetPolicy)
    assert make_policy("task_budget", 25.0).pct == 25.0


def test_unknown_policy_names_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'reservoir'"):
        make_policy("resevoir")


def test_task_budget_rejects_bad_percentage():
    with pytest.raises(ConfigError, match="task_budget_pct"):
        make_policy("task_budget", 0.0)


def test_primary_class_is_the_rarest_in_memory():
    assert primary_class((0, 2), {0: 5, 2: 1}) == 2
    assert primary_class((0, 2), {0: 1, 2: 1}) == 0  # tie: lowest id
    assert primary_class((3,), {}) == 3
    assert primary_class((), {0: 4}) == BACKGROUND_CLASS


def test_reservoir_keeps_each_item_with_probability_capacity_over_n():
    capacity, n, trials = 10, 50, 2000
    kept = [0] * n
    stream = [("t", (0,))] * n
    for trial in range(trials):
        view = run_stream(ReservoirPolicy(), capacity, stream, seed=trial)
        assert len(view.items) == capacity
        for i in view.items:
            kept[i] += 1
    p = capacity / n  # 0.2 for every position, first and last alike
    sigma = math.sqrt(p * (1 - p) / trials)  # 0.0089
    for i, k in enumerate(kept):
        assert abs(k / trials - p) < 4.5 * sigma, (i, k / trials)


def test_reservoir_fills_before_sampling():
    view = run_stream(ReservoirPolicy(), 5, [("t", (0,))] * 5, seed=0)
    assert sorted(view.items) == [0, 1, 2, 3, 4]


def test_class_balanced_interleaved_stream_is_balanced_within_one():
    stream = [("t", (i % 3,)) for i in range(300)]
    view = run_stream(ClassBalancedPolicy(), 10, stream, seed=1)
    counts = view.class_counts()
    assert sum(counts.values()) == 10
    assert max(counts.values()) - min(counts.values()) <= 1
    assert set(counts) == {0, 1, 2}


@pytest.mark.parametrize("seed", range(5))
def test_class_balanced_sequential_classes_end_within_one(seed):
    # class 0 fills the memory first, then 1, then 2 arrive (class-incremental stream).
    stream = [("t0", (0,))] * 100 + [("t1", (1,))] * 100 + [("t2", (2,))] * 100
    view = run_stream(ClassBalancedPolicy(), 10, stream, seed=seed)
    counts = view.class_counts()
    assert sorted(counts.values()) == [3, 3, 4]


def test_class_balanced_small_class_is_protected():
    # 200 items of class 0, then only 3 of class 1: all 3 must survive later class-0 items.
    stream = [("t", (0,))] * 200 + [("t", (1,))] * 3 + [("t", (0,))] * 200
    view = run_stream(ClassBalancedPolicy(), 10, stream, seed=3)
    assert view.class_counts() == {0: 7, 1: 3}


def test_class_balanced_within_class_is_a_reservoir():
    # Once balanced, class 0 items replace class 0 items with probability m_c / n_c.
    capacity, trials = 4, 1500
    stream = [("t", (0,)), ("t", (1,))] * 20  # 20 per class, 2 slots per class
    kept_first = 0
    for trial in range(trials):
        view = run_stream(ClassBalancedPolicy(), capacity, stream, seed=trial)
        assert view.class_counts() == {0: 2, 1: 2}
        kept_first += 0 in view.items
    # item 0 (class 0) survives with probability 2 / 20 = 0.1
    assert abs(kept_first / trials - 0.1) < 4.5 * math.sqrt(0.1 * 0.9 / trials)


def test_task_budget_keeps_each_image_with_probability_pct():
    trials, n = 1000, 50
    kept = [0] * n
    sizes = []
    for trial in range(trials):
        view = run_stream(TaskBudgetPolicy(10.0), 1000, [("a", (0,))] * n, seed=trial)
        sizes.append(len(view.items))
        for i in view.items:
            kept[i] += 1
    sigma = math.sqrt(0.1 * 0.9 / trials)  # 0.0095
    for i, k in enumerate(kept):
        assert abs(k / trials - 0.1) < 4.5 * sigma, (i, k / trials)
    assert abs(sum(sizes) / trials - 5.0) < 0.2  # 10% of 50


def test_task_budget_percentage_per_task():
    stream = [("a", (0,))] * 2000 + [("b", (1,))] * 1000
    counts = run_stream(TaskBudgetPolicy(10.0), 10_000, stream, seed=0).task_counts()
    assert abs(counts["a"] - 200) < 4.5 * math.sqrt(2000 * 0.09)  # binomial sd 13.4
    assert abs(counts["b"] - 100) < 4.5 * math.sqrt(1000 * 0.09)


def test_task_budget_offers_every_frame_without_a_task_a_slot():
    # an operator's 30 answers (task "stream") all enter; a benchmark task keeps its 10 %
    stream = [("stream", (0,))] * 30 + [("a", (1,))] * 1000
    counts = run_stream(TaskBudgetPolicy(10.0), 10_000, stream, seed=0).task_counts()
    assert counts["stream"] == 30
    assert abs(counts["a"] - 100) < 4.5 * math.sqrt(1000 * 0.09)


def test_task_budget_full_memory_evicts_from_largest_task():
    stream = [("a", (0,))] * 100 + [("b", (1,))] * 100
    view = run_stream(TaskBudgetPolicy(50.0), 60, stream, seed=0)
    counts = view.task_counts()
    assert sum(counts.values()) == 60
    assert abs(counts["a"] - counts["b"]) <= 1


@pytest.mark.parametrize("policy", [ReservoirPolicy(), ClassBalancedPolicy(), TaskBudgetPolicy(100)])
def test_a_full_memory_gives_up_a_pseudo_label_before_a_human_one(policy):
    """Before: the victim was any sample of the chosen class or task, a person's answer as
    likely as a pseudo-label. Ids 0 and 2 are human-verified, 1 and 3 pseudo-labelled."""
    victims = set()
    for seed in range(40):
        view = InMemoryView(capacity=4)
        rng = random.Random(seed)
        for i in range(4):
            assert view.offer(i, "t0", (1,), policy, rng,
                              origin=LabelOrigin.GROUND_TRUTH if i % 2 == 0 else LabelOrigin.PSEUDO)
        item = ItemInfo("t0", (1,), 1)
        victims.add(policy.victim(item, view, rng))
    assert victims == {1, 3}


@pytest.mark.parametrize("policy", [ReservoirPolicy(), ClassBalancedPolicy(), TaskBudgetPolicy(100)])
def test_a_full_memory_gives_up_a_persons_answer_last(policy):
    """Before: a person's answer went as readily as a labelled stream's frame (7 of 11 answers
    at capacity 40 evicted within a minute). Ids 0 and 3 are answers, 1 and 4 came with their
    frames, 2 from an import, 5 is a pseudo-label: the pseudo-label goes first, then 1, 2 or 4,
    never an answer while another kind is stored."""
    plan = [LabelOrigin.OPERATOR, LabelOrigin.GROUND_TRUTH, LabelOrigin.IMPORT,
            LabelOrigin.OPERATOR, LabelOrigin.GROUND_TRUTH, LabelOrigin.PSEUDO]
    first, second = set(), set()
    for seed in range(40):
        view = InMemoryView(capacity=6)
        rng = random.Random(seed)
        for i, origin in enumerate(plan):
            assert view.offer(i, "t0", (1,), policy, rng, origin=origin)
        item = ItemInfo("t0", (1,), 1)
        victim = policy.victim(item, view, rng)
        first.add(victim)
        view.remove(victim)
        second.add(policy.victim(item, view, rng))
    assert first == {5}
    assert second == {1, 2, 4}


def test_only_answers_stored_draw_the_victim_among_them():
    view = InMemoryView(capacity=3)
    for i in range(3):
        view.offer(i, "t0", (1,), ReservoirPolicy(), random.Random(0), origin=LabelOrigin.OPERATOR)
    victims = {ReservoirPolicy().victim(ItemInfo("t0", (1,), 1), view, random.Random(seed))
               for seed in range(30)}
    assert victims == {0, 1, 2}


def test_one_kind_of_label_draws_the_victim_as_before():
    # 40 seeds, all human-verified: the victim is the one a plain uniform draw names
    for seed in range(40):
        view = InMemoryView(capacity=4)
        for i in range(4):
            view.offer(i, "t0", (1,), ReservoirPolicy(), random.Random(0))
        expected = random.Random(seed).randrange(4)
        assert ReservoirPolicy().victim(ItemInfo("t0", (1,), 1), view, random.Random(seed)) \
            == expected
