"""Labelling pipeline (ground truth, operator queue, pseudo-labels), the queue's answer API,
id confinement, storage pauses and crash consistency."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from labels_fakes import FakeClasses, FakeMemory, dets, result, textured

from edgecl.config import Config, LabelsConfig, SelectionConfig, ServerConfig
from edgecl.data.answers import valid_item_id
from edgecl.errors import ConflictError, LabelError, NotFoundError, StorageError
from edgecl.frames import Frame, LabelOrigin
from edgecl.runtime.labels import (LabelPipeline, MemorySink, OperatorQueue, PseudoLabeler,
                                   decide_labels, describe_labelling, learns_nothing)

IMG = textured(0)
GT = np.array([[0, 0.5, 0.5, 0.1, 0.1]], np.float32)
NO_SELECTION = SelectionConfig(uncertain=0, novel=0, disagreement=0, forgetting=0, random=0)


def frame(image=IMG, i=0, labels=None):
    return Frame(image, i, float(i), "cam://0", labels=labels)


def cfg_(**kw):
    return LabelsConfig(**kw)


# --- decisions ---------------------------------------------------------------------------------

def test_ground_truth_wins_in_every_mode_but_off():
    for mode in ("ground_truth", "pseudo", "field"):
        d = decide_labels(frame(labels=GT), dets([0.45]), cfg_(mode=mode))
        assert d.origin is LabelOrigin.GROUND_TRUTH and d.labels is GT
    assert decide_labels(frame(labels=GT), dets([0.9]), cfg_(mode="off")).labels is None


def test_ground_truth_mode_ignores_unlabelled_frames():
    d = decide_labels(frame(), dets([0.95]), cfg_(mode="ground_truth"))
    assert d.labels is None and not d.queue_for_operator and d.why == "unlabelled"


def test_pseudo_labels_from_confident_detections():
    cfg = cfg_(mode="pseudo", pseudo_conf=0.6, uncertain_low=0.3, uncertain_high=0.6)
    d = decide_labels(frame(), dets([0.9, 0.1]), cfg)
    # box 20..60 x 10..50 in a 200x100 image -> cx 0.2, cy 0.3, w 0.2, h 0.4
    assert d.origin is LabelOrigin.PSEUDO and not d.queue_for_operator
    np.testing.assert_allclose(d.labels, [[0, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)


def test_uncertain_detection_blocks_pseudo_and_goes_to_queue_in_field_mode():
    cfg = cfg_(mode="pseudo", uncertain_low=0.3, uncertain_high=0.6)
    d = decide_labels(frame(), dets([0.9, 0.45]), cfg)
    assert d.labels is None and d.why == "uncertain"
    d = decide_labels(frame(), dets([0.9, 0.45]), dataclasses.replace(cfg, mode="field"))
    assert d.queue_for_operator and d.candidate.reasons["uncertain"] == pytest.approx(1.0)


def test_field_mode_falls_back_to_pseudo_when_not_selected():
    cfg = cfg_(mode="field", selection=NO_SELECTION)
    d = decide_labels(frame(), dets([0.9]), cfg)
    assert d.origin is LabelOrigin.PSEUDO


def test_pseudo_per_class_thresholds_and_known_classes():
    table = {0: 0.8, 1: 0.95, 2: None}
    pl = PseudoLabeler(lambda: table, default_conf=0.7, uncertain_low=0.3, uncertain_high=0.6,
                       known_classes=lambda: {0, 1, 2, 3})
    assert pl.label(dets([0.85], classes=[0]), 200, 100)[1] == "pseudo"
    # class 1 at 0.9: above the band but under its threshold -> the whole frame is refused
    assert pl.label(dets([0.85, 0.9], classes=[0, 1]), 200, 100) == (None, "below_threshold")
    assert pl.label(dets([0.99], classes=[2]), 200, 100) == (None, "not_calibrated")
    assert pl.label(dets([0.75], classes=[3]), 200, 100)[1] == "pseudo"      # default 0.7
    assert pl.label(dets([0.99], classes=[7]), 200, 100) == (None, "unknown_class")
    assert pl.label(dets([0.1], classes=[0]), 200, 100) == (None, "no_detections")
    labels, why = pl.label(dets([0.85, 0.2], classes=[0, 5]), 200, 100)  # 0.2: noise, ignored
    assert why == "pseudo" and labels.shape == (1, 5)
    # a calibrated threshold under the band's top, or under labels.pseudo_conf, is lifted to
    # the higher of the two (before, labels.pseudo_conf bounded nothing a calibrator gave)
    assert PseudoLabeler({0: 0.1}, 0.5, 0.3, 0.6).threshold(0) == 0.6
    assert PseudoLabeler({0: 0.1, 1: 0.9}, 0.8, 0.3, 0.6).threshold(0) == 0.8
    assert PseudoLabeler({0: 0.1, 1: 0.9}, 0.8, 0.3, 0.6).threshold(1) == 0.9


def test_pipeline_pseudo_duplicates_and_rate_limit():
    now = [0.0]
    from edgecl.runtime.labels import Selector

    cfg = cfg_(mode="pseudo", pseudo_max_per_minute=1, dedup_window_s=60)
    pipe = LabelPipeline(cfg, Selector(cfg, clock=lambda: now[0], monotonic=lambda: now[0]))
    d = pipe.decide(frame(), dets([0.9]))
    assert d.why == "pseudo"
    pipe.selector.stored(d.embedding)
    pipe.selector.pseudo_limit.take()
    assert pipe.decide(frame(), dets([0.9])).why == "pseudo_duplicate"
    assert pipe.decide(frame(textured(3)), dets([0.9])).why == "pseudo_rate_limited"


def test_while_the_queue_takes_no_frame_no_frame_is_scored_and_only_a_pseudo_candidate_embedded():
    """Before: every camera frame paid for its embedding and every policy, also in the seconds
    between two frames the rate limit lets into the queue, when no score can change anything."""
    from edgecl.runtime.labels import Selector

    now = [0.0]
    cfg = cfg_(mode="field", max_per_minute=2, pseudo_max_per_minute=0,
               selection=SelectionConfig(uncertain=1.0, novel=1.0, disagreement=0, forgetting=0,
                                         random=0))
    sel = Selector(cfg, clock=lambda: now[0], monotonic=lambda: now[0])
    embedded, scored = [], []
    real_embed, real_score = sel.embed, sel.score
    sel.embed = lambda image: embedded.append(1) or real_embed(image)
    sel.score = lambda *a: scored.append(1) or real_score(*a)
    pipe = LabelPipeline(cfg, sel)
    first = pipe.decide(frame(), dets([0.45]))
    assert first.queue_for_operator and (len(embedded), len(scored)) == (1, 1)
    sel.queued(first.candidate)
    now[0] += 29.9                            # 2 a minute: the next one 30 s after the first
    d = pipe.decide(frame(textured(1)), dets([0.45]))
    assert (d.why, d.selection, d.embedding) == ("uncertain", "rate_limited", None)
    assert (len(embedded), len(scored)) == (1, 1)
    d = pipe.decide(frame(textured(2)), dets([0.9]))   # a pseudo-label needs its duplicate check
    assert (d.why, d.selection) == ("pseudo", "rate_limited") and d.embedding is not None
    assert (len(embedded), len(scored)) == (2, 1)
    now[0] += 0.1
    assert pipe.decide(frame(textured(3)), dets([0.45])).queue_for_operator
    assert (len(embedded), len(scored)) == (3, 2)


# --- the sink ----------------------------------------------------------------------------------

def make_sink(tmp_path, classes=None, **kw):
    cfg = cfg_(**kw)
    mem = FakeMemory()
    sink = MemorySink(mem, cfg, OperatorQueue(tmp_path / "labels", cfg.max_pending),
                      classes=classes or FakeClasses({0: "car", 1: "person"}))
    return sink, mem


def test_sink_stores_ground_truth_and_pseudo_with_origin_and_queues_selected(tmp_path):
    sink, mem = make_sink(tmp_path, mode="field", selection=SelectionConfig(
        uncertain=1.0, novel=0, disagreement=0, forgetting=0, random=0))
    sink.write(result(IMG, dets([0.9]), 0, labels=GT))
    sink.write(result(textured(1), dets([0.9]), 1))
    sink.write(result(textured(2), dets([0.45]), 2))
    assert [s.origin for s in mem.samples] == [LabelOrigin.GROUND_TRUTH, LabelOrigin.PSEUDO]
    assert mem.samples[1].task == "stream"
    pending = sink.queue.pending()
    assert len(pending) == 1 and pending[0]["proposed"][0]["class"] == "car"
    assert pending[0]["reasons"] == {"uncertain": 1.0}    # 0.45: the middle of [0.3, 0.6)
    counts = sink.stats()["counts"]
    assert counts["stored_ground_truth"] == 1 and counts["stored_pseudo"] == 1
    assert counts["queued_items"] == 1
    assert sink.take_counters() == (2, {0})


def test_a_held_out_sample_does_not_count_towards_the_next_round(tmp_path):
    """Before: a frame or an answer drawn for the held-out slice counted as new, and started a
    round that found nothing to learn (5 of 24 rounds of a field soak)."""
    sink, mem = make_sink(tmp_path, mode="ground_truth")
    real_records = mem.records

    def records(ids=None, held_out=None, task=None):  # sample 2 went to the held-out slice
        return [SimpleNamespace(**{**vars(r), "held_out": r.id == 2}) for r in real_records(ids)]

    mem.records = records
    for i in range(3):
        sink.write(result(textured(i), dets([0.9]), i, labels=GT))
    assert len(mem.samples) == 3
    assert sink.take_counters() == (2, {0})


@pytest.mark.parametrize("mode, labels", [("field", None), ("ground_truth", "gt")])
def test_a_frame_too_wide_for_jpeg_is_counted_not_raised(tmp_path, caplog, mode, labels):
    sink, mem = make_sink(tmp_path, mode=mode, selection=SelectionConfig(
        uncertain=1.0, novel=0, disagreement=0, forgetting=0, random=0))
    wide = np.zeros((2, 70000, 3), np.uint8)
    line_scan = np.array([[0, 0.5, 0.5, 0.1, 0.5]], np.float32)
    sink.write(result(wide, dets([0.45]), 0, labels=line_scan if labels else None))
    counts = sink.stats()["counts"]
    assert counts["refused_frame"] == 1 and "refused_label" not in counts
    assert mem.samples == [] and sink.queue.pending() == []
    assert "70000x2 pixels: a side is over JPEG's limit of 65500 pixels" in caplog.text
    # before: a 48x8 frame was stored, and every round then failed on it (ultralytics trains
    # no image with a side under 10 pixels)
    sink.write(result(np.full((8, 48, 3), 90, np.uint8), dets([0.45]), 0,
                      labels=line_scan if labels else None))
    assert sink.stats()["counts"]["refused_frame"] == 2 and mem.samples == []
    assert "48x8 pixels: a side is under 10 pixels" in caplog.text
    sink.write(result(textured(1), dets([0.45]), 1))  # the next frame goes on as usual
    assert sink.stats()["counts"].get("queued_items", 0) + len(mem.samples) == (
        1 if mode == "field" else 0)


def test_sink_refuses_class_ids_the_registry_does_not_know(tmp_path, caplog):
    sink, mem = make_sink(tmp_path, mode="ground_truth")
    stray = np.array([[79, 0.5, 0.5, 0.1, 0.1]], np.float32)
    sink.write(result(IMG, dets([]), 0, labels=stray))
    assert mem.samples == [] and sink.stats()["counts"]["refused_class"] == 1
    assert "class id 79" in caplog.text and len(caplog.records) == 1


def test_a_stream_naming_no_class_finds_the_class_an_import_kept_at_another_id(tmp_path, caplog):
    """Before: after an import gave a sparse unnamed dataset's class_20 the id 1, a dir://
    stream of such labels stored its id 1 as class_20 and refused its id 20."""
    classes = FakeClasses({0: "class_0", 1: "class_20", 2: "class_7"})
    sink, mem = make_sink(tmp_path, classes=classes, mode="ground_truth")
    sink.unnamed_labels = True
    rows = lambda *ids: np.array([[k, 0.5, 0.5, 0.1, 0.1] for k in ids], np.float32)  # noqa: E731
    sink.write(result(IMG, dets([]), 0, labels=rows(20, 0)))
    sink.write(result(textured(3), dets([]), 1, labels=rows(7)))
    assert [s.labels[:, 0].tolist() for s in mem.samples] == [[1, 0], [2]]
    sink.write(result(textured(4), dets([]), 2, labels=rows(1)))  # class_1: not on this device
    assert len(mem.samples) == 2 and sink.stats()["counts"]["refused_class"] == 1
    assert "class id 1 means class_1, which this device does not have (its id 1 is 'class_20'" \
        in caplog.text


def test_storage_fault_pauses_then_resumes(tmp_path, caplog):
    t = [0.0]
    sink, mem = make_sink(tmp_path, mode="ground_truth", storage_retry_s=10)
    sink.clock = lambda: t[0]
    mem.fail = StorageError("memory: no space left on device")
    sink.write(result(IMG, dets([]), 0, labels=GT))
    assert sink.paused_reason and "no space" in sink.paused_reason
    for i in range(5):                                 # no retry before 10 s: not hammered
        sink.write(result(IMG, dets([]), i, labels=GT))
    assert mem.attempts == 1 and sink.stats()["counts"]["not_stored"] == 6
    mem.fail = None
    t[0] = 11.0
    sink.write(result(IMG, dets([]), 7, labels=GT))
    assert sink.paused_reason is None and len(mem.samples) == 1
    assert "storing paused" in caplog.text and "storing resumed" in caplog.text


def test_queue_disk_fault_pauses_storing_too(tmp_path, monkeypatch):
    sink, mem = make_sink(tmp_path, mode="field", selection=SelectionConfig(
        uncertain=1.0, novel=0, disagreement=0, forgetting=0, random=0))

    def full(*a, **k):
        raise OSError(28, "No space left on device", "/card/state/labels/pending/f1.jpg")

    monkeypatch.setattr(sink.queue, "push", full)
    sink.write(result(IMG, dets([0.45]), 0))
    assert sink.paused_reason == ("storage fault: the disk refused it: No space left on device "
                                  "(/card/state/labels/pending/f1.jpg)")  # not "[Errno 28] ..."
    assert sink.stats()["counts"]["not_stored"] == 1


# --- the queue's answer API ----------------------------------------------------------------------

def queued(tmp_path, n=1, max_pending=10):
    q = OperatorQueue(tmp_path / "labels", max_pending)
    ids = [q.push(frame(textured(i), i), dets([0.5]), priority=0.5, reasons={"uncertain": 0.8},
                  names={0: "car"}) for i in range(n)]
    return q, ids


def test_pending_item_shape_and_image(tmp_path):
    q, (item_id,) = queued(tmp_path)
    (item,) = q.pending()
    assert set(item) >= {"id", "priority", "reasons", "width", "height", "created_s", "proposed"}
    assert item["proposed"] == [{"class": "car", "xyxy": [20.0, 10.0, 60.0, 50.0], "score": 0.5,
                                 "class_id": 0}]
    assert (item["width"], item["height"]) == (200, 100)
    assert q.image_path(item_id).is_file()


def test_answer_edits_boxes_adds_new_class_and_conflicts(tmp_path):
    q, (item_id,) = queued(tmp_path)
    mem, classes = FakeMemory(), FakeClasses({0: "car"})
    boxes = [{"class": "car", "xyxy": [22, 12, 58, 50]},
             {"class": "drone", "xyxy": [100, 0, 200, 100]}]
    out = q.answer(item_id, boxes, mem, classes)
    assert out == {"id": item_id, "sample": 1, "boxes": 2, "classes_added": ["drone"],
                   "similar_classes": {}, "former_names": {}, "class_ids": [0, 1]}
    (sample,) = mem.samples
    assert sample.origin is LabelOrigin.OPERATOR and sample.source == f"operator:{item_id}"
    np.testing.assert_allclose(sample.labels,
                               [[0, 0.2, 0.31, 0.18, 0.38], [1, 0.75, 0.5, 0.5, 1.0]], atol=1e-5)
    assert classes.names() == {0: "car", 1: "drone"} and q.pending() == []
    with pytest.raises(ConflictError, match="already answered"):
        q.answer(item_id, [], mem, classes)
    with pytest.raises(ConflictError):
        q.skip(item_id)
    # before: 'labels show' of an answered item said only 'already answered'
    with pytest.raises(ConflictError, match=rf"^label item '{item_id}' was already answered "
                                            r"\(its boxes: 'edgecl labels answered', or the "
                                            r"console's Answered tab\)$"):
        q.item(item_id)


def test_a_new_class_is_taught_after_an_import_named_the_memory_s_classes(tmp_path):
    from edgecl.continual.memory import ReplayMemory
    from edgecl.models.classes import ClassRegistry

    q, ids = queued(tmp_path, 2)
    classes = ClassRegistry(tmp_path)
    classes.add(["car"])
    # an import stores the registry's names in the memory, and they bound the ids it accepts:
    # before, the answer below failed with "class 1 exceeds the class count 1"
    with ReplayMemory(tmp_path / "memory", names=classes.names()) as mem:
        out = q.answer(ids[0], [{"class": "Forklift", "xyxy": [1, 1, 30, 30]},
                                {"class": "forklift", "xyxy": [40, 1, 90, 30]}], mem, classes)
        assert out["classes_added"] == ["Forklift"] and out["class_ids"] == [1]
        out = q.answer(ids[1], [{"class": "FORKLIFT", "xyxy": [1, 1, 30, 30]},
                                {"class": "CAR", "xyxy": [40, 1, 90, 30]}], mem, classes)
        assert out["classes_added"] == [] and out["class_ids"] == [0, 1]
        assert mem.class_names() == classes.names() == {0: "car", 1: "Forklift"}
        assert mem.stats()["per_class"] == {"0": 1, "1": 2}


def test_empty_answer_is_a_negative_sample_and_skip_stores_nothing(tmp_path):
    q, (a, b) = queued(tmp_path, 2)
    mem = FakeMemory()
    q.answer(a, [], mem, FakeClasses())
    assert mem.samples[0].labels.shape == (0, 5) and mem.samples[0].origin is LabelOrigin.OPERATOR
    assert q.skip(b) == {"id": b, "skipped": True} and len(mem.samples) == 1
    with pytest.raises(ConflictError, match="already skipped"):
        q.answer(b, [], mem, FakeClasses())


def test_a_full_disk_answer_or_skip_is_one_line_and_the_item_stays_pending(tmp_path,
                                                                          monkeypatch, caplog):
    import errno

    from edgecl.runtime.labels import queue as queue_module

    q, (a, b) = queued(tmp_path, 2)
    mem = FakeMemory()
    real = queue_module.atomic_write_json

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queue_module, "atomic_write_json", full)
    with pytest.raises(StorageError) as err:
        q.skip(b)
    assert str(err.value) == (f"cannot record that {b} was skipped; it stays pending: No space "
                              f"left on device ({q._answered_path})")
    with pytest.raises(StorageError, match=f"cannot record that {a} was answered"):
        q.answer(a, [], mem, FakeClasses())
    assert {m["id"] for m in q.pending()} == {a, b} and len(mem.samples) == 1
    monkeypatch.setattr(queue_module, "atomic_write_json", real)
    q.answer(a, [], mem, FakeClasses())                  # room again: not stored twice
    assert len(mem.samples) == 1 and [m["id"] for m in q.pending()] == [b]

    def recent_full(path, data, **kw):
        if path.name.startswith("recent"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(queue_module, "atomic_write_json", recent_full)
    c = q.push(frame(textured(5), 5), dets([0.5]), priority=0.5, reasons={"novel": 1.0},
               embedding=np.zeros(256, np.float32), names={0: "car"})
    assert q.skip(b)["skipped"] and q.skip(c)["skipped"]  # near-duplicate memory: best effort
    assert q.pending() == []
    assert "recent answered frames not kept" in caplog.text


@pytest.mark.parametrize("boxes, match", [
    ([{"class": "car", "xyxy": [0, 0, 250, 50]}], "outside the 200x100 frame"),
    ([{"class": "car", "xyxy": [50, 10, 40, 50]}], "x2 must exceed x1"),
    ([{"class": "car", "xyxy": [1, 2, 3]}], "4 finite numbers"),
    ([{"class": "car", "xyxy": [1, 2, 3, float("nan")]}], "4 finite numbers"),
    ([{"class": "", "xyxy": [1, 2, 3, 4]}], "class name is empty"),
    ([{"class": "ok", "xyxy": [1, 2, 3, 4]}, {"class": "a\nb", "xyxy": [1, 2, 3, 4]}],
     "control characters"),
    ([{"xyxy": [1, 2, 3, 4]}], "'class' and 'xyxy'"),
    ({"class": "car"}, "JSON list"),
    ([{"class": "car", "xyxy": [1, 1, 2, 2]}] * 1001, "at most 1000"),
    ([{"class": f"new{k}", "xyxy": [1, 1, 2, 2]} for k in range(11)],
     "box 10: more than 10 new class names in one answer"),
    ([{"class": "car\u200b", "xyxy": [1, 1, 2, 2]}], "invisible or direction-changing"),
])
def test_bad_boxes_change_nothing(tmp_path, boxes, match):
    q, (item_id,) = queued(tmp_path)
    mem, classes = FakeMemory(), FakeClasses()
    with pytest.raises(LabelError, match=match):
        q.answer(item_id, boxes, mem, classes)
    assert mem.samples == [] and len(q.pending()) == 1 and classes.names() == {0: "car"}


def test_unknown_class_refused_when_new_classes_not_allowed(tmp_path):
    q, (item_id,) = queued(tmp_path)
    with pytest.raises(LabelError, match="unknown class 'bus'"):
        q.answer(item_id, [{"class": "bus", "xyxy": [1, 1, 9, 9]}], FakeMemory(), FakeClasses(),
                 allow_new_classes=False)


def test_box_overshoot_within_a_pixel_is_clipped(tmp_path):
    q, (item_id,) = queued(tmp_path)
    mem = FakeMemory()
    q.answer(item_id, [{"class": "car", "xyxy": [-0.5, 0, 200.4, 100]}], mem, FakeClasses())
    np.testing.assert_allclose(mem.samples[0].labels, [[0, 0.5, 0.5, 1.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("bad", ["../../../outside/x", "a/b", "", ".hidden", "x" * 65, "a\x00b",
                                 "..", 42, None])
def test_ids_are_validated_before_any_path(tmp_path, bad):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_text("{}")
    (outside / "x.jpg").write_bytes(b"x")
    q, _ = queued(tmp_path)
    for call in (lambda: q.skip(bad), lambda: q.image_path(bad), lambda: q.item(bad),
                 lambda: q.answer(bad, [], FakeMemory(), FakeClasses())):
        with pytest.raises(NotFoundError):
            call()
    assert (outside / "x.json").exists() and (outside / "x.jpg").exists()
    with pytest.raises(NotFoundError):
        valid_item_id(bad)
    assert valid_item_id("00000000000000000001-abc123") == "00000000000000000001-abc123"


def test_an_id_starting_with_a_dash_is_refused_with_the_rule_it_breaks():
    """Before: '-1' was refused with 'an id is 1-64 letters, digits, '-' or '_'', which it is."""
    with pytest.raises(NotFoundError, match=r"^no label item '-1': an id is 1-64 letters, digits, "
                                            r"'-' or '_', starting with a letter or digit"):
        valid_item_id("-1")


def test_unknown_id_is_not_found(tmp_path):
    q, _ = queued(tmp_path)
    with pytest.raises(NotFoundError, match="no label item 'nope'"):
        q.skip("nope")


def test_malformed_items_are_skipped_with_one_line(tmp_path, caplog):
    q, (good,) = queued(tmp_path)
    pend = tmp_path / "labels" / "pending"
    (pend / "broken.json").write_text("{not json")
    (pend / "nokeys.json").write_text(json.dumps({"id": "nokeys"}))
    (pend / "wrongid.json").write_text(json.dumps({"id": "other", "width": 4, "height": 4}))
    (pend / "list.json").write_text("[]")
    meta = json.loads((pend / f"{good}.json").read_text())
    damaged = {"reasons": {"novel": "high"}, "proposed": [{"class": "x", "xyxy": ["a", 1, 2, 3]}],
               "priority": 10 ** 400, "created_s": [1], "task": [1]}
    for n, (key, value) in enumerate(damaged.items()):
        (pend / f"d{n}.json").write_text(json.dumps(dict(meta, id=f"d{n}", **{key: value})))
    (pend / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert [i["id"] for i in q.pending()] == [good]
    assert [i["id"] for i in q.pending()] == [good]
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 10                                  # once per file, not per call
    said = "".join(m.getMessage() for m in warnings)  # the command runs as printed
    assert f"(edgecl labels skip --state-dir={tmp_path} nokeys sets it aside)" in said
    with pytest.raises(NotFoundError, match="malformed on disk and cannot be answered"):
        q.item("nokeys")
    with pytest.raises(NotFoundError, match="malformed"):
        q.answer("nokeys", [], FakeMemory(), FakeClasses())


def test_an_item_whose_record_gives_another_size_than_its_image_is_not_stored(tmp_path):
    """Before: a record saying 640x480 beside a 200x100 frame stored the operator's box scaled
    to the wrong size ([5, 5, 30, 30] became [0.5, 0.67, 3, 4]), and 'memory verify' said ok."""
    q, (good,) = queued(tmp_path)
    path = tmp_path / "labels" / "pending" / f"{good}.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), width=640, height=480)))
    memory = FakeMemory()
    with pytest.raises(NotFoundError, match=f"label item '{good}' is malformed on disk"):
        q.answer(good, [{"class": "car", "xyxy": [5, 5, 30, 30]}], memory, FakeClasses())
    assert memory.samples == []
    assert q.pending() == []  # not offered: nobody labels it for nothing
    assert q.skip(good)["set_aside"]  # skipped as malformed: its files are kept aside


def test_skipping_a_malformed_item_sets_its_files_aside_and_records_the_skip(tmp_path):
    """Before: a malformed item could be neither answered nor skipped, and every command and
    every start of the runtime warned about it again, for the device's life."""
    q, (good,) = queued(tmp_path)
    pend = tmp_path / "labels" / "pending"
    (pend / "bad.json").write_text(json.dumps({"id": "bad"}))
    (pend / "bad.jpg").write_bytes(b"frame bytes")
    out = q.skip("bad")
    aside = tmp_path / "labels" / "malformed"
    assert out == {"id": "bad", "skipped": True, "set_aside": str(aside)}
    assert sorted(p.name for p in aside.iterdir()) == ["bad.jpg", "bad.json"]
    assert (aside / "bad.jpg").read_bytes() == b"frame bytes"          # nothing is deleted
    assert sorted(p.name for p in pend.iterdir()) == sorted([f"{good}.json", f"{good}.jpg"])
    with pytest.raises(ConflictError, match="already skipped"):
        q.skip("bad")
    with pytest.raises(NotFoundError, match="no label item 'gone'"):
        q.skip("gone")
    assert [i["id"] for i in q.pending()] == [good]


def test_a_queue_on_a_read_only_mount_is_listed(tmp_path, monkeypatch):
    """Before: 'edgecl labels pending' on a state directory mounted read-only failed with
    "Read-only file system: .../labels/lock" (the lock file was opened for writing to list)."""
    import errno

    from edgecl.runtime.labels import queue as queue_mod

    q, (good,) = queued(tmp_path)
    (tmp_path / "labels" / "pending" / "left.tmp").write_bytes(b"")   # a kill's leftover
    os.utime(tmp_path / "labels" / "pending" / "left.tmp", (1, 1))
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    def read_only_unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(queue_mod, "open", read_only_open, raising=False)
    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    ro = OperatorQueue(tmp_path / "labels", 10)
    assert [i["id"] for i in ro.pending()] == [good] and ro.item(good)["id"] == good
    (tmp_path / "labels" / "lock").rename(tmp_path / "labels" / "lock.gone")  # never made there
    assert [i["id"] for i in OperatorQueue(tmp_path / "labels", 10).pending()] == [good]


def test_a_read_only_state_directory_without_a_queue_lists_an_empty_one(tmp_path, monkeypatch):
    """Before: 'edgecl labels pending' and 'labels answered' on a read-only copy of a device
    that never queued a frame failed with "Read-only file system: .../labels"."""
    import errno

    def read_only_mkdir(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    q = OperatorQueue(tmp_path / "labels", 10)
    assert q.pending() == [] and q._answered() == []
    assert not (tmp_path / "labels").exists()


def test_a_damaged_answered_record_is_kept_aside_before_a_new_one_starts(tmp_path, caplog):
    """Before: a damaged answered.json was overwritten by the next answer with nothing kept,
    unlike every other file of the state directory a repair replaces."""
    q, (first, second) = queued(tmp_path, 2)
    record = tmp_path / "labels" / "answered.json"
    record.write_bytes(b'[{"id": "x", "act')
    q.skip(first)
    (kept,) = (tmp_path / "labels").glob("answered.json.corrupt-*")
    assert kept.read_bytes() == b'[{"id": "x", "act'
    assert [e["id"] for e in json.loads(record.read_text())] == [first]
    assert f"starting a new one; the damaged file is kept as {kept.name}" in caplog.text


def test_an_answered_record_this_user_may_not_read_is_refused_not_replaced(tmp_path,
                                                                          monkeypatch):
    """Before: 'unreadable (Permission denied); starting a new one', the record moved aside and
    replaced by one holding only the next answer."""
    import errno

    from edgecl.errors import StorageError

    q, (first, _second) = queued(tmp_path, 2)
    record = tmp_path / "labels" / "answered.json"
    record.write_text('[{"id": "x", "action": "skipped"}]')
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self == record:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(StorageError, match="a permission problem, not damage"):
        q.skip(first)
    monkeypatch.undo()
    assert json.loads(record.read_text()) == [{"id": "x", "action": "skipped"}]
    assert not list((tmp_path / "labels").glob("answered.json.corrupt-*"))


def test_queue_survives_restart_and_answered_record_is_bounded(tmp_path):
    q, ids = queued(tmp_path, 3)
    q2 = OperatorQueue(tmp_path / "labels", 10, answered_keep=2)
    assert sorted(i["id"] for i in q2.pending()) == sorted(ids)
    for item_id in ids:
        q2.skip(item_id)
    record = json.loads((tmp_path / "labels" / "answered.json").read_text())
    assert [e["id"] for e in record] == ids[1:]
    with pytest.raises(NotFoundError):
        q2.skip(ids[0])                      # forgotten: too old to say "already answered"


def test_answered_frames_still_suppress_near_duplicates_after_a_restart(tmp_path):
    from edgecl.runtime.labels import queue as queue_mod

    q = OperatorQueue(tmp_path / "labels", 10)
    embedding = np.linspace(0, 1, 256, dtype=np.float32)
    item = q.push(frame(textured(1), 1), dets([0.5]), priority=0.5, embedding=embedding)
    other = q.push(frame(textured(2), 2), dets([0.5]), priority=0.4)  # no embedding recorded
    passed = q.push(frame(textured(3), 3), dets([0.5]), priority=0.3, embedding=embedding * 0.5)
    q.answer(item, [], FakeMemory(), FakeClasses())
    q.answer(other, [], FakeMemory(), FakeClasses())
    q.skip(passed)  # a frame a person passed on is not offered again right after a restart
    # before: a restart seeded the selector from pending items only, so the same picture
    # was queued again within seconds of its answer
    (created_s, emb), (_, skipped) = OperatorQueue(tmp_path / "labels", 10).embeddings()
    np.testing.assert_allclose(emb, embedding, atol=1e-4)
    np.testing.assert_allclose(skipped, embedding * 0.5, atol=1e-4)
    assert abs(created_s - time.time()) < 60
    for i in range(queue_mod.RECENT_KEEP + 5):  # bounded
        q._remember_embedding({"id": f"x{i}", "created_s": 1.0, "embedding": [0.0] * 5})
    assert len(OperatorQueue(tmp_path / "labels", 10).embeddings()) == queue_mod.RECENT_KEEP
    sink = MemorySink(FakeMemory(), LabelsConfig(mode="field"),
                      OperatorQueue(tmp_path / "labels", 10))
    assert len(sink.selector.ring) == 0  # entries of another length are not fed to the selector


def test_answer_after_interrupted_answer_does_not_store_twice(tmp_path):
    q, (item_id,) = queued(tmp_path)
    mem, classes = FakeMemory(), FakeClasses()
    q._record = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)   # "killed" here
    with pytest.raises(KeyboardInterrupt):
        q.answer(item_id, [{"class": "car", "xyxy": [1, 1, 9, 9]}], mem, classes)
    q = OperatorQueue(tmp_path / "labels", 10)
    assert len(q.pending()) == 1 and len(mem.samples) == 1
    assert q.answer(item_id, [{"class": "car", "xyxy": [1, 1, 9, 9]}], mem, classes)["sample"] == 1
    assert len(mem.samples) == 1 and q.pending() == []


def test_an_answer_given_again_after_a_cut_short_one_is_what_is_kept(tmp_path):
    """Before: a second answer to an item whose first answer was stored but not taken off the
    queue (a kill in between) said 'answered -> memory sample N' and kept the first boxes."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.models.classes import ClassRegistry

    q, (item_id,) = queued(tmp_path)
    classes = ClassRegistry(tmp_path)
    with ReplayMemory(tmp_path / "memory", MemoryConfig(capacity=10, holdout_fraction=0.0)) as mem:
        real_record = q._record
        q._record = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)   # "killed" here
        with pytest.raises(KeyboardInterrupt):
            q.answer(item_id, [{"class": "car", "xyxy": [20, 10, 60, 50]}], mem, classes)
        q._record = real_record
        again = q.answer(item_id, [{"class": "person", "xyxy": [100, 20, 150, 90]}], mem, classes)
        (stored,) = mem.get(mem.ids())
        assert again["sample"] == stored.id and again["class_ids"] == [1]
        np.testing.assert_allclose(stored.labels, [[1, 125 / 200, 55 / 100, 50 / 200, 70 / 100]],
                                   atol=1e-5)
        assert q.pending() == [] and stored.origin is LabelOrigin.OPERATOR


def test_recover_finishes_interrupted_answers(tmp_path):
    q, (a, b) = queued(tmp_path, 2)
    mem = FakeMemory()
    mem.samples.append(SimpleSample(f"operator:{a}"))
    assert q.recover(mem) == 1
    assert [i["id"] for i in q.pending()] == [b]
    with pytest.raises(ConflictError):
        q.skip(a)


class SimpleSample:
    def __init__(self, source):
        self.source = source
        self.origin = LabelOrigin.OPERATOR


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from labels_fakes import FakeClasses
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.runtime.labels import OperatorQueue

    class KillAfterAdd(ReplayMemory):
        def add(self, sample):
            out = super().add(sample)
            if {kill_after_add!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

    class KillInRegistry(FakeClasses):
        def id_for(self, name, create=True):
            os.kill(os.getpid(), signal.SIGKILL)

    mem = KillAfterAdd({mem!r}, MemoryConfig(capacity=50, holdout_fraction=0.1))
    q = OperatorQueue({labels!r}, 10)
    classes = KillInRegistry() if {kill_in_registry!r} else FakeClasses()
    q.answer(sys.argv[1], [{{"class": "{cls}", "xyxy": [1, 1, 50, 40]}}], mem, classes)
""")


@pytest.mark.parametrize("window", ["after_memory_add", "in_class_registry"])
def test_kill9_during_answer_leaves_memory_and_queue_consistent(tmp_path, window):
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory

    q, (item_id,) = queued(tmp_path)
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), mem=str(tmp_path / "memory"),
                                labels=str(tmp_path / "labels"),
                                kill_after_add=window == "after_memory_add",
                                kill_in_registry=window == "in_class_registry",
                                cls="car" if window == "after_memory_add" else "drone")
    proc = subprocess.run([sys.executable, "-c", script, item_id], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    mem = ReplayMemory(tmp_path / "memory", MemoryConfig(capacity=50, holdout_fraction=0.1))
    try:
        report = mem.verify(repair=False, deep=True)
        assert not (report.missing_rows or report.corrupt_rows or report.unrepaired)
        stored = [r for r in mem.records() if r.source == f"operator:{item_id}"]
        assert len(stored) == (1 if window == "after_memory_add" else 0)
        q = OperatorQueue(tmp_path / "labels", 10)
        q.recover(mem)
        if window == "after_memory_add":
            assert q.pending() == []
            with pytest.raises(ConflictError):
                q.answer(item_id, [], mem, FakeClasses())
        else:
            assert len(q.pending()) == 1
            out = q.answer(item_id, [{"class": "car", "xyxy": [1, 1, 50, 40]}], mem, FakeClasses())
            assert out["sample"] is not None
        assert len([r for r in mem.records() if r.source == f"operator:{item_id}"]) == 1
    finally:
        mem.close()


# --- start-up message ----------------------------------------------------------------------------

def test_describe_labelling_says_how_labels_come():
    cfg = Config(labels=LabelsConfig(mode="ground_truth"), state_dir="/s")
    line = describe_labelling(cfg, source_is_labelled=False)
    assert "nothing will be stored and nothing learnt" in line and "labels.mode: field" in line
    assert learns_nothing(cfg, False) and not learns_nothing(cfg, True)
    assert learns_nothing(Config(labels=LabelsConfig(mode="off")), True)
    assert not learns_nothing(Config(labels=LabelsConfig(mode="field")), False)
    assert "\n" not in line
    assert "ground truth" in describe_labelling(cfg, source_is_labelled=True)
    field = Config(labels=LabelsConfig(mode="field"), state_dir="/s",
                   server=ServerConfig(enabled=True, host="0.0.0.0", port=8765))
    line = describe_labelling(field, source_is_labelled=False)
    assert "http://0.0.0.0:8765/" in line and "edgecl labels import" in line
    assert "pseudo-labels" in line and "precision 0.9" in line and "pending" in line
    assert "nothing will be learnt" in describe_labelling(Config(labels=LabelsConfig(mode="off")),
                                                          True)
    # server.port 0: before, "the console page http://127.0.0.1:0/", where nothing answers
    any_port = Config(labels=LabelsConfig(mode="field"), state_dir="/s",
                      server=ServerConfig(enabled=True, port=0))
    line = describe_labelling(any_port, source_is_labelled=False)
    assert ":0/" not in line and "on a port chosen at start: see the 'console on' line" in line


def test_unknown_mode_is_refused():
    with pytest.raises(Exception, match="labels.mode 'bogus'"):
        LabelPipeline(cfg_(mode="bogus"))


def test_sink_answer_counts_operator_samples_for_the_learner(tmp_path):
    sink, mem = make_sink(tmp_path, mode="field", selection=SelectionConfig(
        uncertain=1.0, novel=0, disagreement=0, forgetting=0, random=0))
    sink.write(result(IMG, dets([0.45]), 0))
    (item,) = sink.queue.pending()
    assert sink.take_counters() == (0, set())
    out = sink.answer(item["id"], [{"class": "bike", "xyxy": [1, 1, 30, 30]}])
    assert out["classes_added"] == ["bike"] and mem.samples[0].origin is LabelOrigin.OPERATOR
    assert sink.take_counters() == (1, {2})
    assert sink.stats()["counts"]["stored_operator"] == 1


def test_from_config_field_loop_with_real_memory_and_registry(tmp_path):
    from edgecl.config import MemoryConfig
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car"})
    cfg = Config(state_dir=str(tmp_path), memory=MemoryConfig(capacity=50, holdout_fraction=0.2),
                 labels=LabelsConfig(mode="field", max_per_minute=0))
    sink = MemorySink.from_config(cfg, classes=ClassRegistry(tmp_path), thresholds=lambda: {0: 0.8})
    try:
        sink.write(result(textured(0), dets([0.45]), 0))          # uncertain -> queue
        sink.write(result(textured(1), dets([0.9]), 1))           # novel -> queue
        sink.selector.weights = {}                                # selection off: pseudo path
        sink.write(result(textured(2), dets([0.9]), 2))
        sink.write(result(textured(3), dets([0.7]), 3))           # under class 0's 0.8: refused
        pending = sink.queue.pending()
        assert len(pending) == 2 and pending[0]["reasons"].get("novel") == 1.0
        sink.answer(pending[0]["id"], [{"class": "truck", "xyxy": [0, 0, 100, 50]}])
        sink.skip(pending[1]["id"])
        per_origin = sink.memory.stats()["per_origin"]
        assert per_origin["pseudo"] == 1 and per_origin["operator"] == 1
        assert ClassRegistry(tmp_path).names() == {0: "car", 1: "truck"}
        assert sink.stats()["counts"]["below_threshold"] == 1
    finally:
        sink.close()
    reopened = MemorySink.from_config(cfg, classes=ClassRegistry(tmp_path))
    try:
        # the answered and the skipped frames still count for near-duplicates
        assert reopened.queue.pending() == [] and len(reopened.selector.ring) == 2
    finally:
        reopened.close()


def test_accept_stores_proposed_boxes_with_the_state_registry(tmp_path):
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car"})
    q, (item_id,) = queued(tmp_path)
    mem = FakeMemory()
    assert q.accept(item_id, mem)["boxes"] == 1
    np.testing.assert_allclose(mem.samples[0].labels, [[0, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)


def test_an_answer_to_an_item_whose_frame_was_cut_stores_nothing(tmp_path):
    """A card fault cut a queued frame's JPEG in half: OpenCV decoded it with grey fill and the
    answer stored that frame as an operator sample."""
    q, (item_id,) = queued(tmp_path)
    path = q.image_path(item_id)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    mem, classes = FakeMemory(), FakeClasses({0: "car"})
    with pytest.raises(NotFoundError, match=rf"label item '{item_id}' is malformed on disk"):
        q.answer(item_id, [{"class": "car", "xyxy": [22, 12, 58, 50]}], mem, classes)
    assert mem.samples == []


@pytest.mark.parametrize("damage", ["cut", "garbage", "missing"])
def test_an_item_whose_image_is_damaged_is_not_offered_and_skip_keeps_its_files(tmp_path, damage):
    """Before: it was listed, every answer was refused, and 'labels skip' deleted its files."""
    q, (item_id,) = queued(tmp_path)
    path = q.image_path(item_id)
    data = path.read_bytes()
    if damage == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.unlink()
    assert q.pending() == []
    out = q.skip(item_id)
    aside = tmp_path / "labels" / "malformed"
    assert out["set_aside"] == str(aside)
    assert (aside / f"{item_id}.json").is_file()
    assert damage == "missing" or (aside / f"{item_id}.jpg").is_file()


def test_a_box_takes_the_keys_the_console_api_takes():
    from edgecl.data.answers import boxes_to_labels

    rows, new = boxes_to_labels([{"class": "car", "xyxy": [20, 10, 60, 50], "score": 0.4}],
                                200, 100, {"car": 0})
    np.testing.assert_allclose(rows, [[0, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)
    assert new == []
    with pytest.raises(LabelError, match=r"box 0: unknown key\(s\) 'bogus', 'clas'"):
        boxes_to_labels([{"class": "car", "xyxy": [20, 10, 60, 50], "bogus": 1, "clas": "x"}],
                        200, 100, {"car": 0})


def test_accepting_an_item_that_proposes_no_box_is_refused_and_stores_nothing(tmp_path):
    """Before a first model every item reads '[no boxes]': accepting items in bulk stored each
    frame as 'nothing to label here', teaching its objects as background."""
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car"})
    q = OperatorQueue(tmp_path / "labels", 10)
    item_id = q.push(frame(textured(3), 3), dets([]), priority=0.5, reasons={"novel": 1.0},
                     names={0: "car"})
    mem = FakeMemory()
    with pytest.raises(LabelError, match=rf"item {item_id} proposes no box.*empty list") as err:
        q.accept(item_id, mem)
    # the command runs as printed (before, without --state-dir it acted on ./state)
    assert f"(edgecl labels answer --state-dir={tmp_path} {item_id} --boxes FILE with FILE " \
           f"holding [])" in str(err.value)
    assert mem.samples == [] and [i["id"] for i in q.pending()] == [item_id]
    # said on purpose, it is stored
    assert q.answer(item_id, [], mem, ClassRegistry(tmp_path))["boxes"] == 0
    assert len(mem.samples) == 1


def test_leftovers_of_a_kill_are_cleaned_also_when_the_clock_went_back(tmp_path):
    import os

    q, (item_id,) = queued(tmp_path)
    folder = tmp_path / "labels"
    stale, future, fresh = (folder / "pending" / f"{k}.json.tmp" for k in "xyz")
    for path in (stale, future, fresh):
        path.write_text("{}")
    now = time.time()
    os.utime(stale, (now - 3600, now - 3600))
    os.utime(future, (now + 86400 * 365, now + 86400 * 365))  # written before the clock went back
    OperatorQueue(folder, 10)._clean_orphans()
    assert not stale.exists() and not future.exists()
    assert fresh.exists()  # maybe another process's write in progress
    assert [i["id"] for i in OperatorQueue(folder, 10).pending()] == [item_id]


def test_a_sample_the_sink_is_storing_is_never_counted_as_another_writers(tmp_path):
    # the supervisor reads the memory's ids while the sink's add has committed but not yet
    # returned: before, that id was counted as an import and the round trigger counted it twice
    import threading

    from edgecl.config import load_config
    from edgecl.runtime.learner import LearnerSupervisor

    committed, release = threading.Event(), threading.Event()

    class SlowMemory(FakeMemory):
        def add(self, sample):
            sample_id = super().add(sample)
            committed.set()
            release.wait(5)  # between the commit and the return
            return sample_id

        def records(self, ids=None, held_out=None, task=None):
            return [SimpleNamespace(id=i, classes=(0,), held_out=False) for i in (ids or [])]

    memory = SlowMemory()
    sink = MemorySink(memory, LabelsConfig(mode="ground_truth"),
                      OperatorQueue(tmp_path / "labels", 10), classes=FakeClasses())
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_interval_s=0"])
    sup = LearnerSupervisor(cfg, SimpleNamespace(current=lambda: None), memory_sink=sink)
    counted = []
    sup._count_new = lambda n, classes: counted.append(n)
    writer = threading.Thread(target=sink.write, args=(result(IMG, dets([]), 0, labels=GT),))
    writer.start()
    assert committed.wait(5)
    threading.Timer(0.3, release.set).start()  # the supervisor's look waits for the sink
    sup._count_other_writers()
    writer.join(5)
    assert counted == [] and sink.stats()["counts"]["stored_ground_truth"] == 1


def test_the_start_line_says_when_the_pseudo_label_floor_is_the_uncertain_band():
    from edgecl.config import load_config
    from edgecl.runtime.labels import describe_labelling

    cfg = load_config(None, ["labels.mode=field", "labels.pseudo_conf=0.4",
                             "labels.uncertain_high=0.7"])
    assert ("labels.pseudo_conf 0.4 is below labels.uncertain_high 0.7, so no threshold is "
            "below 0.7") in describe_labelling(cfg, False)
    assert "below labels.uncertain_high" not in describe_labelling(load_config(None, []), False)


def test_the_runtime_sink_records_the_device_memory_settings(tmp_path):
    from edgecl.config import load_config
    from edgecl.continual.memory.store import recorded_memory_config

    cfg = load_config(None, [f"state_dir={tmp_path}", "labels.mode=field", "memory.capacity=321"])
    sink = MemorySink.from_config(cfg)
    sink.memory.close()
    assert recorded_memory_config(tmp_path / "memory") == cfg.memory


def test_held_out_samples_stored_elsewhere_do_not_count_towards_a_round(tmp_path):
    """A round learns only training samples; an import's held-out samples above the last learnt
    id read at start as '1 sample(s) stored outside the runtime (labels import or answer) count
    towards the next round', and the round that followed learnt none of them."""
    from edgecl.config import load_config
    from edgecl.runtime.learner import LearnerSupervisor

    class Imported(FakeMemory):
        def ids(self, held_out=None):
            return [1, 2, 3]

        def records(self, ids=None, held_out=None, task=None):
            return [SimpleNamespace(id=i, classes=(i,), held_out=i == 2) for i in (ids or [])]

    sink = MemorySink(Imported(), LabelsConfig(mode="ground_truth"),
                      OperatorQueue(tmp_path / "labels", 10), classes=FakeClasses())
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_interval_s=0"])
    sup = LearnerSupervisor(cfg, SimpleNamespace(current=lambda: None), memory_sink=sink)
    counted = []
    sup._count_new = lambda n, classes: counted.append((n, sorted(classes)))
    sup._count_other_writers()
    assert counted == [(2, [1, 3])]


def test_skip_after_a_cut_short_answer_finishes_the_answer_and_says_how_to_take_it_back(
        tmp_path, capsys):
    """Before: 'labels skip' of an item whose answer was stored before a kill said 'skipped':
    the sample stayed in memory and no labels command could take it back."""
    from edgecl.cli import main
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.models.classes import ClassRegistry

    state = tmp_path / "state"
    q, (item_id,) = queued(state)
    classes = ClassRegistry(state)
    with ReplayMemory(state / "memory", MemoryConfig(capacity=10, holdout_fraction=0.0)) as mem:
        q._record = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)   # "killed" here
        with pytest.raises(KeyboardInterrupt):
            q.answer(item_id, [{"class": "car", "xyxy": [20, 10, 60, 50]}], mem, classes)
    code = main(["labels", "skip", item_id, "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 2 and "already answered" in err
    assert main(["labels", "withdraw", item_id, "--state-dir", str(state)]) == 0
    with ReplayMemory(state / "memory") as mem:
        assert mem.ids() == []


def test_a_withdrawn_or_corrected_answer_counts_once_towards_the_next_round(tmp_path):
    """Before: an answer then withdrawn still counted towards learner.trigger_new_samples (a
    round started with one sample fewer than its threshold, or only to be skipped), and a
    correction counted its sample a second time."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car"})
    q, ids = queued(tmp_path, n=3)
    with ReplayMemory(tmp_path / "memory", MemoryConfig(capacity=50, holdout_fraction=0.0),
                      names={0: "car"}) as mem:
        sink = MemorySink(mem, cfg_(mode="field"), q, classes=ClassRegistry(tmp_path))
        box = [{"class": "car", "xyxy": [20, 10, 60, 50]}]
        for item_id in ids:
            sink.answer(item_id, box)
        sink.withdraw(ids[0])
        sink.correct(ids[1], [{"class": "car", "xyxy": [22, 12, 60, 50]}])
        assert sink.take_counters() == (2, {0})
        sink.withdraw(ids[2])  # counted by the round that took the counters: nothing to undo
        assert sink.take_counters() == (0, set())


def test_an_item_answered_while_it_is_read_is_not_called_malformed(tmp_path, monkeypatch, caplog):
    """Before: a reader that found an item's record, and then not its image (an answer took
    both off the queue in between), warned that the item was malformed and to skip it."""
    from edgecl.runtime.labels import queue as queue_mod

    q, (item_id,) = queued(tmp_path)
    real = queue_mod._image_problem

    def answered_meanwhile(image_path, meta):
        q._remove(item_id)
        return real(image_path, meta)

    monkeypatch.setattr(queue_mod, "_image_problem", answered_meanwhile)
    with caplog.at_level("WARNING"):
        assert q._read_meta(q.dir / f"{item_id}.json") is None
    assert "malformed" not in caplog.text


def test_two_near_identical_new_names_in_one_answer_are_pointed_out(tmp_path):
    """Before: one answer naming 'Truk' and 'truck', both new, made two classes without a
    word; a typo of an existing class was pointed out, one of the answer's own was not."""
    q, (item_id,) = queued(tmp_path)
    mem, classes = FakeMemory(), FakeClasses({0: "car"})
    boxes = [{"class": "truck", "xyxy": [22, 12, 58, 50]},
             {"class": "Truk", "xyxy": [100, 0, 200, 100]}]
    out = q.answer(item_id, boxes, mem, classes)
    assert out["classes_added"] == ["truck", "Truk"]
    assert out["similar_classes"] == {"Truk": "truck"}


def test_a_round_another_process_ran_restarts_the_trigger_counts(tmp_path, caplog):
    """Before: 'edgecl learn' run beside the runtime learnt 87 samples, and the runtime's
    counter kept them: 16 more answers started a new_samples round at its threshold of 100."""
    from edgecl.config import load_config
    from edgecl.continual.round_state import LearnerState, save_state
    from edgecl.runtime.learner import LearnerSupervisor

    stored = list(range(1, 121))  # ids 1-120; 7 and 110 held out

    class Imported(FakeMemory):
        def ids(self, held_out=None):
            return list(stored)

        def records(self, ids=None, held_out=None, task=None):
            rows = [SimpleNamespace(id=i, classes=(5 if i > 115 else 0,), held_out=i in (7, 110))
                    for i in (stored if ids is None else ids)]
            return [r for r in rows if held_out is None or r.held_out == held_out]

    sink = MemorySink(Imported(), LabelsConfig(mode="ground_truth"),
                      OperatorQueue(tmp_path / "labels", 10), classes=FakeClasses())
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_interval_s=0",
                             "learner.trigger_new_samples=100"])
    registry = SimpleNamespace(current=lambda: "v0001",
                               manifest=lambda v: {"names": {"0": "car", "5": "boat"}})
    sup = LearnerSupervisor(cfg, registry, memory_sink=sink, known_classes=[0])
    sup._count_other_writers()
    assert (sup.state.new_samples, sup.state.new_classes) == (118, True)
    save_state(tmp_path, LearnerState(round=1, last_sample_id=100))  # 'edgecl learn' ran
    sup._next_scan_s = 0.0
    with caplog.at_level("INFO", logger="edgecl.runtime.learner"):
        sup._count_other_writers()
    assert (sup.state.new_samples, sup.state.new_classes, sup.last_round) == (19, False, 1)
    assert 5 in sup.known_classes  # the version that round made serves boat
    assert ("round 1 ran in another process ('edgecl learn'): 19 stored sample(s) it did not "
            "learn count towards the next round") in caplog.text
    sup._next_scan_s = 0.0
    sup._count_other_writers()  # the same round is not counted again
    assert sup.state.new_samples == 19


class _StoredIds(FakeMemory):
    """A memory holding the sample ids of a list the test extends (class 0 each)."""

    def __init__(self, stored: list, held_out=()):
        super().__init__()
        self.stored, self.held = stored, set(held_out)

    def ids(self, held_out=None):
        return list(self.stored)

    def change_signature(self):
        return len(self.stored), self.stored[-1]

    def records(self, ids=None, held_out=None, task=None):
        rows = [SimpleNamespace(id=i, classes=(0,), held_out=i in self.held)
                for i in (self.stored if ids is None else ids)]
        return [r for r in rows if held_out is None or r.held_out == held_out]


def test_a_rollback_while_running_counts_the_samples_it_unlearnt(tmp_path, caplog):
    """Before: after 'models rollback' (or the console's) moved the progress from id 94 back
    to 68, the running runtime started no round for the 21 training samples that became
    unlearnt (trigger 8) until it was restarted, which started one at once."""
    from edgecl.config import load_config
    from edgecl.continual.round_state import LearnerState, save_state
    from edgecl.runtime.learner import LearnerSupervisor

    stored = list(range(1, 95))  # ids 1-94; 70, 80, 90 and 93 held out
    save_state(tmp_path, LearnerState(round=3, last_sample_id=94))
    sink = MemorySink(_StoredIds(stored, held_out=(70, 80, 90, 93)),
                      LabelsConfig(mode="ground_truth"), OperatorQueue(tmp_path / "labels", 10),
                      classes=FakeClasses())
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_interval_s=0",
                             "learner.trigger_new_samples=8"])
    registry = SimpleNamespace(current=lambda: "v0002", manifest=lambda v: {"names": {"0": "car"}})
    sup = LearnerSupervisor(cfg, registry, memory_sink=sink, known_classes=[0])
    sup._count_other_writers()
    assert sup.state.new_samples == 0  # everything learnt
    save_state(tmp_path, LearnerState(round=3, last_sample_id=68))  # rolled back to v0002
    sup._next_scan_s = 0.0
    with caplog.at_level("INFO", logger="edgecl.runtime.learner"):
        sup._count_other_writers()
    # ids 69-94 less the 4 held out: 22 (the round number did not change)
    assert (sup.state.new_samples, sup.last_round) == (22, 3)
    assert ("the learner's progress is now what v0002 learnt (a rollback or a promotion): 22 "
            "stored training sample(s) it did not learn count towards the next "
            "round") in caplog.text
    sup._next_scan_s = 0.0
    sup._count_other_writers()  # the same move is not counted again
    assert sup.state.new_samples == 22


def test_samples_a_round_took_are_not_said_later_as_counting_towards_the_next(tmp_path, caplog,
                                                                             monkeypatch):
    """Before: '13 training sample(s) stored by another process ... count towards the next
    round' was logged after a round had started on 9 of them (4 were left)."""
    from edgecl.config import load_config
    from edgecl.continual.round_state import LearnerState, save_state
    from edgecl.runtime import learner as learner_mod
    from edgecl.runtime.learner import LearnerSupervisor

    stored = list(range(1, 11))
    save_state(tmp_path, LearnerState(round=1, last_sample_id=10))
    sink = MemorySink(_StoredIds(stored), LabelsConfig(mode="ground_truth"),
                      OperatorQueue(tmp_path / "labels", 10), classes=FakeClasses())
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_interval_s=0"])
    registry = SimpleNamespace(current=lambda: "v0001", manifest=lambda v: {"names": {"0": "car"}})
    sup = LearnerSupervisor(cfg, registry, memory_sink=sink, known_classes=[0])
    clock = [1000.0]
    monkeypatch.setattr(learner_mod.time, "monotonic", lambda: clock[0])
    sup._count_other_writers()  # the first look: nothing new
    stored.extend(range(11, 20))  # 9 answers on the command line
    clock[0] += 10
    sup._next_scan_s = 0.0
    sup._count_other_writers()  # counted, said later (at most once a minute)
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: None)
    monkeypatch.setattr(sup, "upgraded_on_disk", lambda: False)
    sup.start_round("new_samples")  # learns ids up to 19
    stored.extend(range(20, 24))  # 4 more
    clock[0] += learner_mod.OTHER_WRITERS_SAY_EVERY_S
    sup._next_scan_s = 0.0
    with caplog.at_level("INFO", logger="edgecl.runtime.learner"):
        sup._count_other_writers()
    assert sup.state.new_samples == 4
    assert "4 training sample(s) stored by another process" in caplog.text
    assert "13 training sample(s)" not in caplog.text


def test_a_frame_over_the_memorys_sample_budget_is_counted_as_such(tmp_path, caplog):
    """Before: a 4K frame over memory.max_bytes' budget for one sample was counted as
    'refused_label', beside the loop's 'refused_labels' (bad label rows): its labels were fine."""
    from edgecl.errors import SampleTooLargeError

    sink, mem = make_sink(tmp_path, mode="ground_truth")

    def too_large(sample):
        raise SampleTooLargeError("frame 0: needs 5873664 bytes on disk, more than the memory's "
                                  "sample budget of 1036256 bytes (memory.max_bytes=2097152)")

    mem.add = too_large
    sink.write(result(IMG, dets([0.9]), 0, labels=GT))
    counts = sink.stats()["counts"]
    assert counts["frame_too_large"] == 1 and "refused_label" not in counts
    assert "more than the memory's sample budget" in caplog.text


def test_recover_with_a_read_only_pending_folder_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    """Before: a read-only 'labels/pending' (a mount over part of the state directory) after a
    half-finished answer stopped the runtime at start with "[Errno 30] Read-only file system"
    and nothing saying what it was doing."""
    import errno
    import logging

    q, (a, b) = queued(tmp_path, 2)
    mem = FakeMemory()
    mem.samples.append(SimpleSample(f"operator:{a}"))
    real_unlink = Path.unlink

    def read_only(path, missing_ok=False):
        if path.parent == q.dir:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.WARNING, logger="edgecl"):
        assert q.recover(mem) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cannot take label item {a} off the queue: Read-only file system" in line
    assert "memory sample 1 holds it" in line
    assert sorted(i["id"] for i in q.pending()) == sorted([a, b])
    with pytest.raises(StorageError, match=f"cannot take label item {a} off the queue"):
        q.skip(a)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert q.recover(mem) == 1 and [i["id"] for i in q.pending()] == [b]


def test_with_model_conf_above_the_band_the_labels_still_see_the_band(tmp_path):
    """Before: at model.conf 0.6 the detector dropped every detection under 0.6, so a frame whose
    doubtful object scored 0.45 beside a confident one was pseudo-labelled, and the doubtful
    object taught as background. Now the detector runs at labels.uncertain_low for the labels
    sink, which reads ``labelling``; the other sinks get the detections at model.conf."""
    from edgecl.config import ModelConfig
    from edgecl.runtime.labels import labelling_conf

    def config(mode, conf, low=0.3):
        return Config(model=ModelConfig(conf=conf), labels=LabelsConfig(
            mode=mode, uncertain_low=low, uncertain_high=max(low + 0.1, 0.6)))

    assert labelling_conf(config("pseudo", 0.6)) == 0.3
    assert labelling_conf(config("field", 0.6)) == 0.3
    assert labelling_conf(config("pseudo", 0.25)) is None       # the band lies above model.conf
    assert labelling_conf(config("pseudo", 0.3)) is None
    assert labelling_conf(config("ground_truth", 0.6)) is None  # no band in use
    sink, mem = make_sink(tmp_path, mode="pseudo", pseudo_conf=0.6)
    shown, every = dets([0.9]), dets([0.9, 0.45], box=(20, 10, 60, 50))
    sink.write(result(textured(1), shown, 1, labelling=every))
    assert mem.samples == [] and sink.stats()["counts"]["uncertain"] == 1
    sink.write(result(textured(2), shown, 2))  # without a band below model.conf: as before
    assert [s.origin for s in mem.samples] == [LabelOrigin.PSEUDO]


def test_an_answer_stored_after_the_last_snapshot_keeps_its_origin_through_an_index_rebuild(
        tmp_path):
    """Before: an index rebuilt from the sample files brought the newest answer back as origin
    'unknown': it left the answered list, and 'labels withdraw' said its sample was 'evicted
    to make room, or removed' though it was still in memory (and trained on)."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.continual.memory.rebuild import rebuild_index
    from edgecl.models.classes import ClassRegistry

    state = tmp_path / "state"
    q, (item_id,) = queued(state, n=1)
    classes = ClassRegistry(state)
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.0),
                      names={}) as mem:
        sample = q.answer(item_id, [{"class": "car", "xyxy": [22, 12, 58, 50]}], mem,
                          classes)["sample"]
    (state / "memory" / "index.sqlite").write_bytes(b"\x00" * 4096)  # a card fault
    report = rebuild_index(state / "memory", state, provenance=q.answered_provenance())
    assert (report.from_files, report.from_answers) == (1, 1)
    assert "1 from the files only, 1 of them an operator's answers as their records say" in \
        report.summary()
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.0)) as mem:
        (record,) = mem.records()
        assert (record.id, record.origin, record.source) == (sample, LabelOrigin.OPERATOR,
                                                             f"operator:{item_id}")
        assert q.answered_sample(item_id, mem) == sample  # correctable, withdrawable again
        assert [a["id"] for a in q.answers(mem, classes)] == [item_id]
