"""Selection policies on hand-made inputs, their combination, duplicates, rate limit, eviction."""

import dataclasses

import numpy as np
import pytest
from labels_fakes import dets, textured

from edgecl.config import LabelsConfig, SelectionConfig
from edgecl.continual.memory import Sample
from edgecl.frames import Detections, Frame
from edgecl.runtime.labels import (SELECTION_POLICIES, MemoryEmbeddings, NoveltyRing,
                                   OperatorQueue, RateLimiter, SelectionContext, Selector,
                                   embedding_distance, thumbnail_embedding)
from edgecl.runtime.labels.selection import (disagreement_score, forgetting_score, novel_score,
                                             random_score, uncertain_score)

IMG = textured(0)
BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)


def ctx(cfg=None, image=IMG, ring=None, **kw):
    cfg = cfg or LabelsConfig()
    return SelectionContext(cfg, thumbnail_embedding(image), ring or NoveltyRing(8),
                            np.random.default_rng(0), **kw)


def frame(image=IMG, i=0):
    return Frame(image, i, float(i), "cam://0")


def only(**weights):
    zero = {f.name: 0.0 for f in dataclasses.fields(SelectionConfig)}
    return SelectionConfig(**{**zero, **weights})


def test_registry_names_match_config_fields():
    assert set(SELECTION_POLICIES) == {f.name for f in dataclasses.fields(SelectionConfig)}


def test_uncertain_scores_band_only_peaks_in_middle():
    c = ctx(LabelsConfig(uncertain_low=0.3, uncertain_high=0.6))
    assert uncertain_score(frame(), dets([0.9, 0.1]), c) == 0.0
    assert uncertain_score(frame(), dets([]), c) == 0.0
    assert uncertain_score(frame(), dets([0.45]), c) == pytest.approx(1.0)
    edge = uncertain_score(frame(), dets([0.3]), c)
    assert edge == pytest.approx(0.5) and uncertain_score(frame(), dets([0.9, 0.4]), c) > edge


def test_embedding_distance_same_scene_small_other_scene_large():
    a, b = thumbnail_embedding(IMG), thumbnail_embedding(textured(1))
    brighter = thumbnail_embedding(np.clip(IMG.astype(int) + 30, 0, 255).astype(np.uint8))
    assert embedding_distance(a, a) == 0.0
    assert embedding_distance(a, brighter) < 0.03          # exposure change: same scene
    assert embedding_distance(a, b) > 0.15


def test_novel_empty_ring_is_novel_and_held_scene_is_not():
    cfg = LabelsConfig(novel_distance=0.2)
    ring = NoveltyRing(4)
    assert novel_score(frame(), dets([]), ctx(cfg, ring=ring)) == 1.0
    ring.add(thumbnail_embedding(IMG), 0.0)
    assert novel_score(frame(), dets([]), ctx(cfg, ring=ring)) == 0.0
    assert novel_score(frame(textured(5)), dets([]), ctx(cfg, textured(5), ring)) > 0.8


def test_novelty_ring_is_bounded_and_merges_near_duplicates():
    ring = NoveltyRing(3)
    for s in range(5):
        ring.add(thumbnail_embedding(textured(s)), float(s))
    assert len(ring) == 3
    assert ring.nearest(thumbnail_embedding(textured(0))) > 0.1   # overwritten
    ring = NoveltyRing(3)
    for t in range(10):
        ring.add(thumbnail_embedding(IMG), float(t), merge_distance=0.03)
    assert len(ring) == 1
    assert ring.nearest(thumbnail_embedding(IMG), since_s=9.0) == 0.0   # time refreshed


def test_disagreement_same_partial_and_none():
    same = dets([0.9, 0.8], classes=[0, 1])
    c = ctx(previous_detector=lambda image: same)
    assert disagreement_score(frame(), same, c) == 0.0
    other_class = dets([0.9], classes=[1])
    c = ctx(previous_detector=lambda i: other_class)
    assert disagreement_score(frame(), dets([0.9]), c) == 1.0
    moved = Detections(np.array([[150, 60, 190, 95]], np.float32), np.array([0.9], np.float32),
                       np.array([0]))
    assert disagreement_score(frame(), dets([0.9]), ctx(previous_detector=lambda i: moved)) == 1.0
    half = disagreement_score(frame(), dets([0.9]), ctx(previous_detector=lambda i: same))
    assert half == pytest.approx(1 - 2 * 1 / 3)
    assert disagreement_score(frame(), dets([0.9]), ctx()) == 0.0               # no previous
    assert disagreement_score(frame(), dets([0.9]), ctx(previous_detector=lambda i: None)) == 0.0
    low_noise = dets([0.1], classes=[3])
    assert disagreement_score(frame(), dets([]), ctx(previous_detector=lambda i: low_noise)) == 0.0


def test_forgetting_fires_on_forgotten_class_only():
    c = ctx(forgetting_classes=lambda: {2})
    assert forgetting_score(frame(), dets([0.9], classes=[2]), c) == 1.0
    assert forgetting_score(frame(), dets([0.9], classes=[1]), c) == 0.0
    assert forgetting_score(frame(), dets([0.05], classes=[2]), c) == 0.0     # below the band
    assert forgetting_score(frame(), dets([0.9], classes=[2]), ctx()) == 0.0


def test_random_share_is_seeded_and_about_right():
    cfg = LabelsConfig(random_share=0.1, seed=3)
    rng = np.random.default_rng(3)
    c = SelectionContext(cfg, thumbnail_embedding(IMG), NoveltyRing(1), rng)
    draws = [random_score(frame(), dets([]), c) for _ in range(2000)]
    chosen = [d for d in draws if d > 0]
    assert 150 < len(chosen) < 250 and all(0.0 < d <= 1.0 for d in chosen)
    assert 0.4 < float(np.mean(chosen)) < 0.6, "chosen frames get a uniform priority"
    again = SelectionContext(cfg, thumbnail_embedding(IMG), NoveltyRing(1),
                             np.random.default_rng(3))
    assert [random_score(frame(), dets([]), again) for _ in range(2000)] == draws


def test_selector_combines_weights_and_records_reasons():
    cfg = LabelsConfig(selection=SelectionConfig(uncertain=1.0, novel=0.5, disagreement=0.0,
                                                 forgetting=2.0, random=0.0), novel_distance=0.2)
    sel = Selector(cfg, forgetting_classes=lambda: {0})
    cand = sel.score(frame(), dets([0.45]), sel.embed(IMG))
    assert cand.reasons == {"uncertain": 1.0, "novel": 1.0, "forgetting": 1.0}
    assert cand.priority == pytest.approx(1.0 + 0.5 + 2.0)


def test_selector_threshold_duplicates_and_rate_limit():
    now = [1000.0]
    cfg = LabelsConfig(selection=only(novel=1.0), min_priority=0.5, dedup_window_s=60,
                       dedup_distance=0.03, max_per_minute=2)
    sel = Selector(cfg, clock=lambda: now[0], monotonic=lambda: now[0])
    first, why = sel.consider(frame(), dets([]), sel.embed(IMG))
    assert why == "selected"
    sel.queued(first)
    assert sel.consider(frame(), dets([]), sel.embed(IMG)) == (None, "not_selected")  # seen
    # 2 a minute: one at least every 30 s, so the minute's share is not taken in one burst
    assert sel.consider(frame(textured(1)), dets([]), sel.embed(textured(1)))[1] == "rate_limited"
    now[0] += 29.9
    assert sel.consider(frame(textured(1)), dets([]), sel.embed(textured(1)))[1] == "rate_limited"
    now[0] += 0.1
    cand, why = sel.consider(frame(textured(1)), dets([]), sel.embed(textured(1)))
    assert why == "selected"
    sel.queued(cand)
    now[0] += 29.0
    assert sel.consider(frame(textured(2)), dets([]), sel.embed(textured(2)))[1] == "rate_limited"
    now[0] += 1.0                                     # 60 s after the first: it left the window
    cand, why = sel.consider(frame(textured(2)), dets([]), sel.embed(textured(2)))
    assert why == "selected"
    # duplicate: high priority (uncertain) but the same scene was queued within the window
    cfg2 = dataclasses.replace(cfg, selection=only(uncertain=1.0))
    sel2 = Selector(cfg2, clock=lambda: now[0], monotonic=lambda: now[0])
    c1, _ = sel2.consider(frame(), dets([0.45]), sel2.embed(IMG))
    sel2.queued(c1)
    assert sel2.consider(frame(), dets([0.45]), sel2.embed(IMG)) == (None, "duplicate")
    now[0] += 61                                      # window over: may be queued again
    assert sel2.consider(frame(), dets([0.45]), sel2.embed(IMG))[1] == "selected"


def test_the_duplicate_window_follows_the_monotonic_clock_when_the_wall_clock_jumps():
    wall, mono = [1_795_000_000.0], [500.0]
    cfg = LabelsConfig(selection=only(uncertain=1.0), dedup_window_s=60, dedup_distance=0.03)
    sel = Selector(cfg, clock=lambda: wall[0], monotonic=lambda: mono[0])
    emb = sel.embed(IMG)
    # seen 30 s ago in an earlier run (wall time); then the clock goes back to 1970
    sel.remember(emb, wall[0] - 30.0)
    assert sel.consider(frame(), dets([0.45]), emb) == (None, "duplicate")
    wall[0] = 100.0
    mono[0] += 31.0  # 61 s after it was seen: the window is over
    assert sel.consider(frame(), dets([0.45]), emb)[1] == "selected"
    # an item stamped in the future (the clock went back since) counts as seen just now
    later = Selector(cfg, clock=lambda: wall[0], monotonic=lambda: mono[0])
    later.remember(emb, 1_795_000_000.0)
    assert later.consider(frame(), dets([0.45]), emb) == (None, "duplicate")
    mono[0] += 61.0
    assert later.consider(frame(), dets([0.45]), emb)[1] == "selected"
    # a wall clock stepped forward by years expires nothing early
    sel3 = Selector(cfg, clock=lambda: wall[0], monotonic=lambda: mono[0])
    c, _ = sel3.consider(frame(), dets([0.45]), emb)
    sel3.queued(c)
    wall[0] += 10 * 365 * 86400.0
    assert sel3.consider(frame(), dets([0.45]), emb) == (None, "duplicate")


def smooth_scene(seed, shape=(512, 640)):
    """A low-contrast grey scene like a thermal camera's from above: smooth noise with
    structure at about 64 px, grey levels 90-150."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((shape[0] // 64, shape[1] // 64)).astype(np.float32)
    big = np.clip(cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), 0, 1)
    return np.repeat((90 + big * 60).astype(np.uint8)[:, :, None], 3, axis=2)


def test_a_slowly_panning_camera_does_not_offer_the_same_scene_again():
    cfg = LabelsConfig(selection=only(uncertain=1.0), dedup_window_s=60, dedup_distance=0.03,
                       max_per_minute=0)
    sel = Selector(cfg, clock=lambda: 0.0, monotonic=lambda: 0.0)
    scene = smooth_scene(0)
    first = scene[0:384, 0:480]
    c, why = sel.consider(frame(first), dets([0.45]), sel.embed(first))
    assert why == "selected"
    sel.queued(c)
    for dx, dy in [(30, 10), (50, 0), (0, 40), (40, 20)]:  # 6-10 % of the frame
        moved = scene[dy:dy + 384, dx:dx + 480]
        emb = sel.embed(moved)
        assert sel.ring.nearest(emb) > 0.03                # plain thumbnails: a new scene
        assert sel.consider(frame(moved), dets([0.45]), emb) == (None, "duplicate")
    for seed in (1, 2, 3):                                 # other places are still offered
        other = smooth_scene(seed)[0:384, 0:480]
        assert sel.consider(frame(other), dets([0.45]), sel.embed(other))[1] == "selected"


def test_rate_limiter_sliding_window_and_unlimited():
    t = [0.0]
    lim = RateLimiter(3, clock=lambda: t[0])      # 3 a minute: one every 20 s at most
    for _ in range(3):
        assert lim.allowed()
        lim.take()
        t[0] += 19.9
        assert not lim.allowed()
        t[0] += 0.1
    assert t[0] == pytest.approx(60.0) and lim.allowed()
    assert all(RateLimiter(0).allowed() for _ in range(100))
    short = RateLimiter(2, clock=lambda: t[0], window_s=5.0)
    t[0] = 100.0
    short.take()
    t[0] = 102.4
    assert not short.allowed()                    # 2 per 5 s: 2.5 s apart
    t[0] = 102.5
    assert short.allowed()
    short.take()
    t[0] = 104.9
    assert not short.allowed()
    t[0] = 105.0  # the first event left the 5 s window, the last is 2.5 s old
    assert short.allowed()


def test_queue_evicts_lowest_priority_not_oldest(tmp_path):
    q = OperatorQueue(tmp_path, max_pending=3)
    ids = {p: q.push(frame(textured(i), i), dets([0.5]), priority=p)
           for i, p in enumerate([0.9, 0.2, 0.5])}
    assert [it["id"] for it in q.pending()] == [ids[0.9], ids[0.5], ids[0.2]]
    assert q.push(frame(textured(7), 7), dets([0.5]), priority=0.1) is None   # lower than all
    new = q.push(frame(textured(8), 8), dets([0.5]), priority=0.7)
    kept = [it["id"] for it in q.pending()]
    assert kept == [ids[0.9], new, ids[0.5]]                  # 0.2 went, the oldest stayed
    with pytest.raises(Exception, match="dropped for frames of higher priority"):
        q.image_path(ids[0.2])


def test_aged_priority_halves_every_half_life():
    from edgecl.runtime.labels.queue import aged_priority

    assert aged_priority(0.8, 1000.0, 1000.0, 3600) == 0.8
    assert aged_priority(0.8, 1000.0, 4600.0, 3600) == pytest.approx(0.4)
    assert aged_priority(0.8, 1000.0, 8200.0, 3600) == pytest.approx(0.2)
    assert aged_priority(0.8, 1000.0, 500.0, 3600) == 0.8      # the clock went back: no wait
    assert aged_priority(0.8, 1000.0, 9e9, 0) == 0.8           # 0: never ages


def test_a_queue_filled_hours_ago_ages_so_what_the_device_sees_now_comes_first(tmp_path):
    """Before: a queue filled while nobody answered kept its frames (chosen by the model of
    hours ago) ahead of every new one, and refused new frames of lower first priority."""
    now = [1_000_000.0]
    q = OperatorQueue(tmp_path, max_pending=2, priority_half_life_s=3600,
                      clock=lambda: now[0], monotonic=lambda: now[0])
    old_high = q.push(frame(textured(1), 1), dets([0.5]), priority=0.9)
    old_low = q.push(frame(textured(2), 2), dets([0.5]), priority=0.5)
    now[0] += 7200                                            # 0.9 -> 0.225, 0.5 -> 0.125
    fresh = q.push(frame(textured(3), 3), dets([0.5]), priority=0.3)
    assert fresh is not None                                  # 0.3 beats 0.125: old_low goes
    assert [it["id"] for it in q.pending()] == [fresh, old_high]
    assert it_priority(q, old_high) == 0.9                   # the recorded priority is shown
    assert q.push(frame(textured(4), 4), dets([0.5]), priority=0.2) is None   # below 0.225
    with pytest.raises(Exception, match="dropped for frames of higher priority"):
        q.image_path(old_low)
    same_now = OperatorQueue(tmp_path, max_pending=2, clock=lambda: now[0])  # 0: no ageing
    assert [it["id"] for it in same_now.pending()] == [old_high, fresh]


def test_an_item_stamped_in_the_future_is_counted_as_queued_now_and_ages(tmp_path):
    """Before: an item queued while the clock was years ahead never aged (a wait before its
    stamp counts as none), so it kept the top of the queue and was never evicted."""
    now, mono = [1_800_000_000.0], [100.0]
    q = OperatorQueue(tmp_path, max_pending=5, priority_half_life_s=3600, clock=lambda: now[0],
                      monotonic=lambda: mono[0], boot="boot-1")
    ahead = q.push(frame(textured(1), 1), dets([0.5]), priority=0.9)
    q.push(frame(textured(2), 2), dets([0.5]), priority=0.5)
    now[0], mono[0] = now[0] - 1 * 365 * 86400, 5.0            # the clock is set right; a reboot
    fixed = OperatorQueue(tmp_path, max_pending=5, priority_half_life_s=3600,
                          clock=lambda: now[0], monotonic=lambda: mono[0], boot="boot-2")
    assert {it["created_s"] for it in fixed.pending()} == {now[0]}
    now[0] += 7200
    mono[0] += 7200
    items = fixed.pending()
    assert [(it["priority"], it["priority_now"]) for it in items] == [(0.9, 0.225), (0.5, 0.125)]
    assert fixed.item(ahead)["priority_now"] == 0.225


def test_a_clock_set_after_boot_is_no_wait_and_evicts_nothing(tmp_path):
    """A board without a battery boots at 1970 and queues frames; NTP then sets the date.
    Before: every item had waited 56 years (priority now 0.00), lost its order, and the next
    20 frames evicted them all. Now an item of this boot waits on the monotonic clock; an item
    of an earlier boot queued before the clock was set counts as queued at the next start."""
    wall, mono = [100.0], [50.0]                               # 1970, 50 s after boot
    q = OperatorQueue(tmp_path, max_pending=3, priority_half_life_s=3600,
                      clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-1")
    kept = [q.push(frame(textured(k), k), dets([0.5]), priority=p)
            for k, p in ((1, 0.9), (2, 0.5), (3, 0.7))]
    wall[0], mono[0] = 1_800_000_000.0, 60.0                   # NTP, 10 s later
    assert [(it["priority"], it["priority_now"]) for it in q.pending()] == [
        (0.9, pytest.approx(0.9, abs=0.01)), (0.7, pytest.approx(0.7, abs=0.01)),
        (0.5, pytest.approx(0.5, abs=0.01))]
    assert q.push(frame(textured(4), 4), dets([0.5]), priority=0.3) is None  # below all three
    assert {it["id"] for it in q.pending()} == set(kept)
    rebooted = OperatorQueue(tmp_path, max_pending=3, priority_half_life_s=3600,
                             clock=lambda: wall[0], monotonic=lambda: 5.0, boot="boot-2")
    assert {it["created_s"] for it in rebooted.pending()} == {1_800_000_000.0}
    assert [it["priority_now"] for it in rebooted.pending()] == [0.9, 0.7, 0.5]


def test_items_queued_before_a_reboot_keep_their_priority_when_ntp_sets_the_clock(tmp_path):
    """A board without a battery: frames queued on 2026-12-07, a reboot, a start at 1970, then
    NTP sets the date while the runtime runs. Before: the start counted the items as queued at
    1970 on the wall clock, NTP then made them 56 years old (priority now 0.00), and the next
    frames, of lower priority, evicted every one of them (logged nowhere). Now they are adopted
    into the new boot at its start and wait on its monotonic clock."""
    wall, mono = [1_796_601_600.0], [3_000.0]                  # 2026-12-07, boot 1
    q = OperatorQueue(tmp_path, max_pending=3, priority_half_life_s=3600,
                      clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-1")
    kept = [q.push(frame(textured(k), k), dets([0.5]), priority=p)
            for k, p in ((1, 0.9), (2, 1.0), (3, 0.95))]
    wall[0], mono[0] = 60.0, 5.0                               # reboot: 1970, no battery
    after = OperatorQueue(tmp_path, max_pending=3, priority_half_life_s=3600,
                          clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-2")
    wall[0], mono[0] = 1_796_605_200.0, 15.0                   # NTP, 10 s later
    assert [it["priority_now"] for it in after.pending()] == [
        pytest.approx(1.0, abs=0.01), pytest.approx(0.95, abs=0.01), pytest.approx(0.9, abs=0.01)]
    for k, p in ((4, 0.7), (5, 0.63), (6, 0.76)):
        assert after.push(frame(textured(k), k), dets([0.5]), priority=p) is None
    assert {it["id"] for it in after.pending()} == set(kept)
    # the 1970 start kept their stamps; at a later boot, with the clock set, each brings its
    # wait since it was queued: 3 hours, 3 half-lives (1.0, 0.95, 0.9 -> 0.125, 0.11875, 0.1125)
    wall[0], mono[0] = wall[0] + 7200, 100.0                   # boot 3, two hours later
    third = OperatorQueue(tmp_path, max_pending=3, priority_half_life_s=3600,
                          clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-3")
    assert {it["created_s"] for it in third.pending()} == {1_796_601_600.0}
    assert [it["priority_now"] for it in third.pending()] == pytest.approx([0.125, 0.11875,
                                                                             0.1125], abs=1e-4)


def test_an_item_stamped_in_this_boots_monotonic_future_is_adopted_and_ages(tmp_path):
    """Before: an item of this boot whose monotonic stamp read 1e308 (a damaged file) never
    aged, and kept the top of the queue for good."""
    import json

    wall, mono = [1_796_601_600.0], [100.0]
    q = OperatorQueue(tmp_path, max_pending=5, priority_half_life_s=3600,
                      clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-1")
    item = q.push(frame(textured(1), 1), dets([0.5]), priority=0.8)
    path = tmp_path / "pending" / f"{item}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "created_mono_s": 1e308}))
    wall[0], mono[0] = wall[0] + 3600, mono[0] + 3600
    again = OperatorQueue(tmp_path, max_pending=5, priority_half_life_s=3600,
                          clock=lambda: wall[0], monotonic=lambda: mono[0], boot="boot-1")
    assert again.item(item)["priority_now"] == pytest.approx(0.4, abs=0.01)  # an hour: halved


def it_priority(q, item_id):
    return next(it["priority"] for it in q.pending() if it["id"] == item_id)


def test_failing_policy_scores_zero_and_is_counted(caplog):
    def broken(image):
        raise RuntimeError("previous model unloaded")

    cfg = LabelsConfig(selection=only(disagreement=1.0, uncertain=1.0))
    sel = Selector(cfg, previous_detector=broken)
    for _ in range(3):
        cand = sel.score(frame(), dets([0.45]), sel.embed(IMG))
    assert cand.reasons == {"uncertain": 1.0} and sel.policy_errors == {"disagreement": 3}
    assert caplog.text.count("previous model unloaded") == 1


def memory_at(root, *seeds, capacity=100):
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    m = ReplayMemory(root, MemoryConfig(capacity=capacity, holdout_fraction=0.0, seed=3))
    box = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
    ids = [m.add(Sample(textured(s), box, task="stream")) for s in seeds]
    return m, ids


def test_novelty_compares_with_what_memory_holds_imports_from_another_process_included(tmp_path):
    cfg = LabelsConfig(novel_distance=0.2)
    mem, _ = memory_at(tmp_path / "m", 1)
    now = [0.0]
    view = MemoryEmbeddings(mem, refresh_s=10.0, monotonic=lambda: now[0])
    view.refresh(force=True)
    held, other = textured(1), textured(2)
    assert novel_score(frame(held), dets([]), ctx(cfg, held, memory=view)) < 0.01
    far = embedding_distance(thumbnail_embedding(held), thumbnail_embedding(other))
    assert novel_score(frame(other), dets([]), ctx(cfg, other, memory=view)) == pytest.approx(
        min(1.0, far / 0.2), abs=1e-3)
    importer, _ = memory_at(tmp_path / "m", 2)                      # `labels import` elsewhere
    importer.close()
    now[0] = 5.0                                                    # not checked again yet
    assert novel_score(frame(other), dets([]), ctx(cfg, other, memory=view)) > 0.5
    now[0] = 10.0
    assert novel_score(frame(other), dets([]), ctx(cfg, other, memory=view)) < 0.01
    assert len(view) == 2
    mem.close()


def test_novelty_forgets_an_evicted_sample(tmp_path):
    mem, ids = memory_at(tmp_path / "m", 1, 2)
    mem.close()
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory

    with ReplayMemory(tmp_path / "m", MemoryConfig(capacity=1, holdout_fraction=0.0)) as small:
        view = MemoryEmbeddings(small)
        view.refresh(force=True)
        (kept,) = small.ids()
        gone = 2 if kept == ids[0] else 1
        assert view.ids.tolist() == [kept]
        assert view.nearest(thumbnail_embedding(textured(gone))) > 0.15
        assert view.nearest(thumbnail_embedding(textured(3 - gone))) < 0.01


def test_an_unreadable_memory_keeps_the_last_view_with_one_warning(tmp_path, caplog):
    from edgecl.errors import StorageError

    mem, _ = memory_at(tmp_path / "m", 1)
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)

    def broken():
        raise StorageError("cannot read the memory index: disk I/O error")

    mem.change_signature = broken
    for _ in range(3):
        assert view.nearest(thumbnail_embedding(textured(1))) < 0.01
    assert caplog.text.count("novelty: cannot read the replay memory") == 1
    assert view.read_errors == 3  # before: logged once, never counted
    mem.close()


def test_the_field_sink_compares_novelty_with_the_memory(tmp_path):
    from edgecl.config import load_config
    from edgecl.runtime.labels import MemorySink

    mem, _ = memory_at(tmp_path / "state" / "memory", 1, 2)
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "labels.mode=field"])
    sink = MemorySink.from_config(cfg, memory=mem)
    assert len(sink.selector.memory) == 2
    cand = sink.selector.score(frame(textured(1)), dets([]), sink.selector.embed(textured(1)))
    assert cand.reasons.get("novel", 0.0) < 0.01                  # float16 on disk
    new = sink.selector.score(frame(textured(7)), dets([]), sink.selector.embed(textured(7)))
    assert new.reasons["novel"] > 0.5
    off = load_config(None, [f"state_dir={tmp_path / 'state'}", "labels.mode=field",
                             "labels.selection.novel=0"])
    assert MemorySink.from_config(off, memory=mem).selector.memory is None
    mem.close()


class CountingMemory:
    """A replay memory whose embedding reads are counted (rows read, ``after_id`` asked)."""

    def __init__(self, memory):
        self.memory = memory
        self.reads: list[tuple[int, int]] = []

    def change_signature(self):
        return self.memory.change_signature()

    def ids(self):
        return self.memory.ids()

    def embeddings(self, after_id=0):
        ids, matrix = self.memory.embeddings(after_id=after_id)
        self.reads.append((after_id, len(ids)))
        return ids, matrix


def test_an_update_reads_only_the_samples_stored_since_the_last_one(tmp_path):
    mem, ids = memory_at(tmp_path / "m", 1, 2, 3)
    counting = CountingMemory(mem)
    view = MemoryEmbeddings(counting, refresh_s=0.0)
    assert view.refresh(force=True) and counting.reads == [(0, 3)]
    new = mem.add(Sample(textured(4), BOX, task="stream"))
    assert view.refresh() and counting.reads[-1] == (ids[-1], 1)
    assert view.ids.tolist() == [*ids, new]
    assert view.nearest(thumbnail_embedding(textured(4))) < 0.01
    assert not view.refresh() and len(counting.reads) == 2      # unchanged: nothing read
    mem.close()


def test_an_unreadable_image_is_tried_once_not_at_every_update(tmp_path, monkeypatch):
    import sqlite3

    from edgecl.continual.memory import store

    mem, ids = memory_at(tmp_path / "m", 1, 2)
    mem.image_path(ids[0]).write_bytes(b"not a jpeg")
    db = sqlite3.connect(tmp_path / "m" / "index.sqlite")
    db.execute("UPDATE samples SET embedding = NULL")
    db.commit()
    db.close()
    tried = []
    real = store.read_image
    monkeypatch.setattr(store, "read_image", lambda path: tried.append(path) or real(path))
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)
    assert view.ids.tolist() == [ids[1]] and len(tried) == 2
    for s in (3, 4, 5):                                  # the memory changes, update by update
        mem.add(Sample(textured(s), BOX, task="stream"))
        assert view.refresh()
    assert len(tried) == 2 and len(view) == 4
    mem.close()


def test_incremental_updates_match_a_full_read_through_adds_and_evictions(tmp_path, monkeypatch):
    from edgecl.runtime.labels import selection

    monkeypatch.setattr(selection, "COMPACT_MIN_ROWS", 2)     # reclaim evicted rows early
    mem, _ = memory_at(tmp_path / "m", *range(1, 7), capacity=6)
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)
    for s in range(7, 25):                               # every add evicts one sample
        mem.add(Sample(textured(s), BOX, task="stream"))
        if s % 3 == 0:
            view.refresh()
    view.refresh()
    want_ids, want = mem.embeddings()
    assert view.ids.tolist() == want_ids.tolist() == mem.ids() and len(view) == 6
    for s in range(1, 25):
        emb = thumbnail_embedding(textured(s))
        full = float(np.sqrt(np.mean((want - emb) ** 2, axis=1)).min())
        assert view.nearest(emb) == pytest.approx(full, abs=1e-4)
    mem.close()


def test_a_memory_replaced_by_one_with_lower_ids_is_read_again_in_full(tmp_path):
    root = tmp_path / "m"
    mem, _ = memory_at(root, 1, 2, 3)
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)
    root.rename(tmp_path / "old")
    other, _ = memory_at(root, 9)                        # restored from elsewhere: id 1 again
    other.close()
    assert view.refresh() and view.ids.tolist() == [1]
    assert view.nearest(thumbnail_embedding(textured(9))) < 0.01
    assert view.nearest(thumbnail_embedding(textured(1))) > 0.15
    mem.close()


def test_any_fault_of_an_update_keeps_the_view_with_one_warning_and_the_sink_starts(
        tmp_path, caplog):
    import sqlite3

    from edgecl.config import load_config
    from edgecl.runtime.labels import MemorySink

    mem, _ = memory_at(tmp_path / "state" / "memory", 1)
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)

    def raw_fault():
        raise sqlite3.OperationalError("database disk image is malformed")

    mem.ids = raw_fault                                  # not a one-line memory error
    mem.add(Sample(textured(2), BOX, task="stream"))
    for _ in range(3):
        assert view.nearest(thumbnail_embedding(textured(1))) < 0.01
    assert caplog.text.count("novelty: cannot read the replay memory (OperationalError") == 1

    def bug(*args, **kwargs):
        raise ValueError("unexpected")

    mem.embeddings = bug
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "labels.mode=field"])
    sink = MemorySink.from_config(cfg, memory=mem)       # the start-up read fails: no novelty
    assert len(sink.selector.memory) == 0                # from memory, labelling goes on
    cand = sink.selector.score(frame(textured(1)), dets([]), sink.selector.embed(textured(1)))
    assert "novel" in cand.reasons and sink.selector.policy_errors == {}
    assert sink.stats()["counts"]["novelty_read_errors"] == 1  # on /metrics and /healthz
    mem.close()


def test_a_memory_replaced_by_one_with_higher_ids_is_read_again_in_full(tmp_path):
    root = tmp_path / "m"
    mem, _ = memory_at(root, 1, 2)
    view = MemoryEmbeddings(mem, refresh_s=0.0)
    view.refresh(force=True)
    root.rename(tmp_path / "old")
    other, ids = memory_at(root, 5, 6, 7, 8)             # ids 1..4: 1 and 2 are other scenes
    other.close()
    assert view.refresh() and view.ids.tolist() == ids
    assert view.nearest(thumbnail_embedding(textured(1))) > 0.15
    assert view.nearest(thumbnail_embedding(textured(5))) < 0.01
    mem.close()


def test_the_ring_computes_a_frames_distances_once_until_it_changes(monkeypatch):
    from edgecl.runtime.labels import selection

    calls = []
    real = selection.distances_to
    monkeypatch.setattr(selection, "distances_to", lambda m, e: calls.append(1) or real(m, e))
    ring = NoveltyRing(4)
    ring.add(thumbnail_embedding(IMG), 0.0)
    emb = thumbnail_embedding(textured(3))
    novel, dup = ring.nearest(emb), ring.nearest(emb, since_s=0.0)  # novelty, then duplicates
    assert novel == dup > 0.1 and len(calls) == 1
    ring.add(emb, 1.0)
    assert ring.nearest(emb) == 0.0 and len(calls) == 2
    assert ring.nearest(thumbnail_embedding(textured(3))) == 0.0 and len(calls) == 3  # new array


def test_a_frame_the_random_policy_draws_is_queued_whatever_its_priority():
    """With the shipped weights (random 0.1) and labels.min_priority 0.1, a drawn frame's
    priority (0.1 x a score in (0, 1]) fell below the threshold: random alone never queued a
    frame, and the 'small unbiased share' the README promises was none (a user's 300 new
    frames with novelty off: 0 queued)."""
    cfg = LabelsConfig(selection=SelectionConfig(uncertain=0.0, novel=0.0, disagreement=0.0,
                                                 forgetting=0.0, random=0.1),
                       random_share=0.5, min_priority=0.1, max_per_minute=0, dedup_window_s=0,
                       seed=3)
    sel = Selector(cfg)
    outcomes = [sel.consider(frame(), dets([]), sel.embed(IMG)) for _ in range(400)]
    chosen = [cand for cand, why in outcomes if why == "selected"]
    assert 150 < len(chosen) < 250  # about the share
    assert all(c.priority <= 0.1 and set(c.reasons) == {"random"} for c in chosen)
    assert {why for cand, why in outcomes if cand is None} == {"not_selected"}


def test_the_shifted_duplicate_check_compares_only_the_nearest_held_frames(monkeypatch):
    from edgecl.runtime.labels import selection

    ring = NoveltyRing(512)
    scene = smooth_scene(0)
    ring.add(Selector(LabelsConfig()).embed(scene[0:384, 0:480]), 0.0)
    for seed in range(1, 200):                              # many other places seen since
        ring.add(Selector(LabelsConfig()).embed(smooth_scene(seed)[0:384, 0:480]), 1.0)
    moved = Selector(LabelsConfig()).embed(scene[10:394, 50:530])
    calls = []
    real = selection.shifted_distances
    monkeypatch.setattr(selection, "shifted_distances",
                        lambda rows, emb: calls.append(len(rows)) or real(rows, emb))
    assert ring.nearest_shifted(moved, below=0.03) < 0.03
    assert ring.nearest_shifted(moved, since_s=0.5, below=0.03) > 0.03  # seen before the window
    assert calls and max(calls) <= selection.SHIFT_CANDIDATES
