"""Label origin per sample: stored, counted, migrated; pseudo labels are never held out."""

import sqlite3

import cv2
import numpy as np
import pytest

from edgecl.config import MemoryConfig
from edgecl.continual.memory import MemorySnapshot, ReplayMemory, Sample
from edgecl.continual.memory.admission import draws_held_out
from edgecl.errors import ReplayMemoryError
from edgecl.frames import Frame, LabelOrigin

BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
ALL_ZERO = {"ground_truth": 0, "operator": 0, "import": 0, "pseudo": 0}


def cfg(**kw):
    base = dict(capacity=1000, max_bytes=64 * 2**20, holdout_fraction=0.0, policy="reservoir",
                seed=3)
    base.update(kw)
    return MemoryConfig(**base)


def sample(i, origin=LabelOrigin.GROUND_TRUTH, task="t0"):
    return Sample(np.full((16, 16, 3), i % 250, np.uint8), BOX, task=task, source=f"s{i}",
                  origin=origin)


def test_origin_is_stored_counted_and_returned(tmp_path):
    plan = [LabelOrigin.GROUND_TRUTH] * 2 + [LabelOrigin.OPERATOR] + [LabelOrigin.PSEUDO] * 3
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        ids = [m.add(sample(i, origin)) for i, origin in enumerate(plan)]
        assert m.stats()["per_origin"] == {"ground_truth": 2, "operator": 1, "import": 0,
                                           "pseudo": 3}
        assert [r.origin for r in m.records()] == plan
        assert [s.origin for s in m.get(ids)] == plan
        assert m.records()[0].origin is LabelOrigin.GROUND_TRUTH
        snap = m.snapshot()
    assert [r.origin for r in MemorySnapshot.load(snap.path).rows] == plan
    with ReplayMemory(tmp_path / "m", cfg()) as m:  # persisted in the index
        assert m.stats()["per_origin"]["pseudo"] == 3
        stored = sqlite3.connect(m.root / "index.sqlite").execute(
            "SELECT origin FROM samples ORDER BY id").fetchall()
    assert [o for (o,) in stored] == ["ground_truth"] * 2 + ["operator"] + ["pseudo"] * 3


def test_an_origin_a_rebuild_could_not_tell_is_counted_as_unknown(tmp_path):
    """A row rebuilt from its files alone has origin 'unknown' (memory.rebuild): it is treated
    as pseudo (replayed, never evaluated on), but memory stats counted it as pseudo, so an
    operator's lost answer looked like the model's own label."""
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        for i, origin in enumerate([LabelOrigin.OPERATOR, LabelOrigin.PSEUDO, LabelOrigin.IMPORT]):
            m.add(sample(i, origin))
    with sqlite3.connect(tmp_path / "m" / "index.sqlite") as db:
        db.execute("UPDATE samples SET origin = 'unknown' WHERE id IN (1, 3)")
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        assert m.stats()["per_origin"] == {"ground_truth": 0, "operator": 0, "import": 0,
                                           "pseudo": 1, "unknown": 2}
        assert [r.origin for r in m.records()] == [LabelOrigin.PSEUDO] * 3


def test_empty_memory_counts_every_origin_as_zero(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        assert m.stats()["per_origin"] == ALL_ZERO


def test_origin_given_as_text_and_from_frame(tmp_path):
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 1, 0.0, "cam", labels=BOX, task="t")
    assert Sample.from_frame(frame).origin is LabelOrigin.GROUND_TRUTH
    assert Sample.from_frame(frame, origin="import").origin is LabelOrigin.IMPORT
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        sid = m.add(Sample(frame.image, BOX, task="t", origin="operator"))
        assert m.records([sid])[0].origin is LabelOrigin.OPERATOR
        with pytest.raises(ReplayMemoryError, match="unknown label origin 'robot'"):
            m.add(Sample(frame.image, BOX, task="t", origin="robot"))
        assert m.ids() == [sid]


def test_pseudo_samples_are_never_held_out(tmp_path):
    # holdout_fraction 0.5, capacity 1000: 500 held-out and 500 training slots, so nothing
    # is evicted and every offer is kept; a pseudo sample drawn for the held-out slice joins
    # the training slots instead.
    with ReplayMemory(tmp_path / "m", cfg(holdout_fraction=0.5)) as m:
        for i in range(100):
            m.add(sample(i, LabelOrigin.PSEUDO))
        assert len(m) == 100 and m.ids(held_out=True) == []
        assert len(m.ids(held_out=False)) == 100
        assert m.stats()["held_out"] == 0 and m.stats()["per_task_held_out"] == {}
        for i in range(100, 200):
            m.add(sample(i, LabelOrigin.OPERATOR))
        held = m.ids(held_out=True)
        assert 25 <= len(held) <= 75  # about half of the 100 human-verified samples
        assert {r.origin for r in m.records(held)} == {LabelOrigin.OPERATOR}
        assert min(held) > 100  # ids 1..100 are the pseudo ones
        snap = m.snapshot()
        assert snap.ids(held_out=True) == held
        assert not {r.origin for r in snap.records(held_out=True)} & {LabelOrigin.PSEUDO}
        assert "\n".join(str(p) for p in snap.image_paths(held)) + "\n" == \
            snap.list_file(held_out=True).read_text()


@pytest.mark.parametrize("policy", ["class_balanced", "reservoir"])
def test_an_operator_answer_is_never_declined_by_a_full_memory(tmp_path, policy):
    # 10 slots filled by 200 ground-truth frames of class 0: a reservoir keeps the 201st with
    # p = 10/201 and CBRS a class-0 frame with p = 10/200; an operator answer is always kept
    with ReplayMemory(tmp_path / "m", cfg(capacity=10, policy=policy)) as m:
        for i in range(200):
            m.add(sample(i))
        assert len(m) == 10
        kept = [m.add(sample(200 + k, LabelOrigin.OPERATOR)) for k in range(5)]
        assert None not in kept and len(m) == 10
        assert m.stats()["per_origin"]["operator"] == 5
        declined = sum(m.add(sample(300 + k)) is None for k in range(20))
        assert declined >= 15  # ground truth is still sampled by the policy


@pytest.mark.parametrize("task", ["t0", "stream"])
def test_an_operator_answer_drawn_for_a_full_held_out_slice_is_kept(tmp_path, task):
    """Before: an answer drawn for a full held-out slice met the reservoir (or, without tasks,
    the class-balanced draw) and was declined in 4 answers of 230 on a device, while the
    console said "saved"; now it takes the place of a held-out sample."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=20, holdout_fraction=0.5)) as m:
        for i in range(200):
            m.add(sample(i, task=task))
        held_before = len(m.ids(held_out=True))
        kept = [m.add(sample(200 + k, LabelOrigin.OPERATOR, task=task)) for k in range(30)]
        assert None not in kept
        held = [r for r in m.records() if r.held_out]
        assert len(held) == held_before and any(r.origin is LabelOrigin.OPERATOR for r in held)


@pytest.mark.parametrize("memory_seed", [3, 4, 5])
def test_a_named_tasks_held_out_slice_keeps_a_rare_classs_last_sample(tmp_path, memory_seed):
    """Before: a named task's held-out victim was any of its rows, so later draws and answers
    took a rare class's only held-out sample (the gate then had no measure of that class).
    100 frames of class 0 (one of class 1, drawn held out), then 30 answers of class 0, with 10
    held-out slots: the class-1 sample stays held out."""
    first_held = next(n for n in range(1, 100) if draws_held_out(
        memory_seed, "t0", n, LabelOrigin.GROUND_TRUTH, None, 0.0, 0.5))
    rare = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
    with ReplayMemory(tmp_path / "m", cfg(capacity=20, holdout_fraction=0.5,
                                          seed=memory_seed)) as m:
        for n in range(1, 101):
            boxes = rare if n == first_held else BOX
            m.add(Sample(np.full((16, 16, 3), n, np.uint8), boxes, task="t0", source=f"s{n}"))
        for k in range(30):
            m.add(sample(200 + k, LabelOrigin.OPERATOR))
        held = [r for r in m.records() if r.held_out]
        assert len(held) == 10
        assert [r.source for r in held if 1 in r.classes] == [f"s{first_held}"]


@pytest.mark.parametrize("task", ["t0", "stream"])
def test_the_held_out_slice_gives_up_a_persons_answers_last(tmp_path, task):
    """Found attacking the training slots' fix: 10 answers, then 300 frames of a labelled
    stream of the same class (capacity 20, half held out): every held-out answer was evicted."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=20, holdout_fraction=0.5,
                                          policy="class_balanced")) as m:
        for k in range(10):
            m.add(sample(k, LabelOrigin.OPERATOR, task=task))
        held_answers = {r.id for r in m.records() if r.held_out}
        assert held_answers
        for k in range(300):
            m.add(sample(100 + k, task=task))
        assert held_answers <= set(m.ids(held_out=True))
        assert m.stats()["per_origin"]["operator"] == 10


def test_an_operator_answer_drawn_for_a_task_with_no_held_out_slot_trains_instead(tmp_path):
    """Before: with more tasks than held-out slots (2 slots, 3 tasks: each task's share is 0),
    an answer drawn for the held-out slice was declined: 5 of 40 on a device."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=10, holdout_fraction=0.2)) as m:
        for k in range(3):
            m.add(sample(k, task=f"t{k}"))
        kept = [m.add(sample(100 + k, LabelOrigin.OPERATOR, task=f"t{k % 3}")) for k in range(40)]
        assert None not in kept
        assert m.stats()["per_origin"]["operator"] > 0


def test_same_stream_draws_the_same_held_out_positions_for_human_labels(tmp_path):
    flags = {}
    for origin in (LabelOrigin.GROUND_TRUTH, LabelOrigin.IMPORT):
        with ReplayMemory(tmp_path / origin.value, cfg(holdout_fraction=0.3)) as m:
            for i in range(60):
                m.add(sample(i, origin))
            flags[origin] = [r.held_out for r in m.records()]
    assert flags[LabelOrigin.GROUND_TRUTH] == flags[LabelOrigin.IMPORT]
    assert any(flags[LabelOrigin.IMPORT])


def test_a_pseudo_row_flagged_held_out_by_hand_is_never_evaluated(tmp_path):
    root = tmp_path / "m"
    with ReplayMemory(root, cfg(holdout_fraction=0.5)) as m:
        a = m.add(sample(1, LabelOrigin.PSEUDO))
        b = m.add(sample(2, LabelOrigin.GROUND_TRUTH))
    with sqlite3.connect(root / "index.sqlite") as db:
        db.execute("UPDATE samples SET held_out = 1")
    with ReplayMemory(root, cfg(holdout_fraction=0.5)) as m:
        assert m.ids(held_out=True) == [b] and m.ids(held_out=False) == [a]
        assert [r.held_out for r in m.records([a, b])] == [False, True]
        snap = m.snapshot()
        assert snap.ids(held_out=True) == [b] and snap.ids(held_out=False) == [a]


OLD_SCHEMA = """
CREATE TABLE samples(
    id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL, classes TEXT NOT NULL,
    primary_class INTEGER NOT NULL, source TEXT NOT NULL, ts_s REAL NOT NULL,
    bytes INTEGER NOT NULL, held_out INTEGER NOT NULL, recall_baseline REAL, last_recall REAL,
    last_loss REAL, times_replayed INTEGER NOT NULL DEFAULT 0, width INTEGER NOT NULL,
    height INTEGER NOT NULL);
CREATE INDEX samples_by_task ON samples(held_out, task, id);
CREATE INDEX samples_by_class ON samples(held_out, primary_class, id);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def write_old_memory(root, n=3, held=(2,)):
    """A memory as the release before ``origin`` wrote it: ids 1..n, held-out ids ``held``."""
    for sub in ("images", "labels", "snapshots"):
        (root / sub).mkdir(parents=True)
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(OLD_SCHEMA)
    for i in range(1, n + 1):
        ok, jpg = cv2.imencode(".jpg", np.full((16, 16, 3), 40 * i, np.uint8))
        (root / "images" / f"{i:08d}.jpg").write_bytes(jpg.tobytes())
        (root / "labels" / f"{i:08d}.txt").write_text("0 0.500000 0.500000 0.250000 0.500000\n")
        db.execute("INSERT INTO samples(task, classes, primary_class, source, ts_s, bytes, "
                   "held_out, width, height) VALUES('t0', '[0]', 0, ?, 1.0, 8192, ?, 16, 16)",
                   (f"old{i}", int(i in held)))
    db.execute("INSERT INTO counters VALUES('frames/all', ?), ('frames/task:t0', ?)", (n, n))
    db.commit()
    db.close()


def test_an_index_without_origin_is_migrated_to_ground_truth(tmp_path):
    root = tmp_path / "m"
    write_old_memory(root)
    with ReplayMemory(root, cfg(holdout_fraction=0.5)) as m:
        assert m.last_verify.ok and m.last_verify.problems_found == 0
        assert m.ids() == [1, 2, 3] and m.ids(held_out=True) == [2]
        records = m.records()
        assert [r.origin for r in records] == [LabelOrigin.GROUND_TRUTH] * 3
        assert [r.image_bytes for r in records] == [None, None, None]
        assert m.stats()["per_origin"] == {**ALL_ZERO, "ground_truth": 3}
        assert m.stats()["seen"] == 3
        new = m.add(sample(9, LabelOrigin.PSEUDO))
        assert new == 4 and m.records([new])[0].origin is LabelOrigin.PSEUDO
        assert m.verify(repair=False, deep=True).problems_found == 0
    cols = [r[1] for r in sqlite3.connect(root / "index.sqlite").execute(
        "PRAGMA table_info(samples)")]
    assert cols[-4:] == ["origin", "image_bytes", "content_hash", "embedding"]
    with ReplayMemory(root, cfg(holdout_fraction=0.5)) as m:  # migrating twice is harmless
        assert m.stats()["per_origin"] == {**ALL_ZERO, "ground_truth": 3, "pseudo": 1}


def test_an_old_snapshot_without_origin_loads_as_ground_truth(tmp_path):
    import json

    with ReplayMemory(tmp_path / "m", cfg()) as m:
        m.add(sample(1, LabelOrigin.OPERATOR))
        snap = m.snapshot()
    data = json.loads((snap.path / "records.json").read_text())
    for rec in data["records"]:
        del rec["origin"], rec["image_bytes"]
    (snap.path / "records.json").write_text(json.dumps(data))
    (old,) = MemorySnapshot.load(snap.path).rows
    assert old.origin is LabelOrigin.GROUND_TRUTH and old.image_bytes is None


def _copy(i, origin, digest="ab" * 16):
    return Sample(np.full((16, 16, 3), i, np.uint8), BOX, task="t0", source=f"s{i}",
                  origin=origin, content_hash=digest)


def test_verified_labels_replace_a_pseudo_labelled_copy_of_the_same_image(tmp_path):
    """Before: an image stored with pseudo-labels made a person's labels for it (an import, an
    answer) a duplicate, so the pseudo-labels won."""
    from edgecl.continual.memory import DuplicateSampleError, held_copy

    with ReplayMemory(tmp_path / "m", cfg(capacity=2)) as m:
        other = m.add(_copy(9, LabelOrigin.GROUND_TRUTH, digest="cd" * 16))
        pseudo = m.add(_copy(1, LabelOrigin.PSEUDO))
        assert held_copy(m, "ab" * 16, LabelOrigin.IMPORT) is None        # it would replace
        assert held_copy(m, "ab" * 16, LabelOrigin.PSEUDO) == pseudo      # a duplicate
        imported = m.add(_copy(1, LabelOrigin.IMPORT))
        assert m.ids() == [other, imported]               # the full memory evicted nothing else
        assert not m.image_path(pseudo).exists() and not m.label_path(pseudo).exists()
        assert m.stats()["per_origin"]["pseudo"] == 0
        for origin in (LabelOrigin.PSEUDO, LabelOrigin.OPERATOR, LabelOrigin.IMPORT):
            with pytest.raises(DuplicateSampleError, match=f"already in memory as sample {imported}"):
                m.add(_copy(1, origin))                   # verified labels are never replaced
        assert held_copy(m, "ab" * 16, LabelOrigin.OPERATOR) == imported
        assert held_copy(m, None, LabelOrigin.OPERATOR) is None
    assert held_copy(object(), "ab" * 16, LabelOrigin.OPERATOR) is None   # no content index


def test_more_tasks_than_held_out_slots_keep_the_held_out_slice(tmp_path):
    """Before: with 2 held-out slots and a third task, each task's share rounded to 0 and every
    add trimmed the held-out slice to nothing: rounds then waited for a held-out sample."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=20, holdout_fraction=0.1)) as m:
        for k in range(40):
            m.add(sample(k, task=f"t{k // 20}"))
        held = len(m.ids(held_out=True))
        assert held >= 1
        for k in range(10):
            m.add(sample(100 + k, task="t2"))
        assert 1 <= len(m.ids(held_out=True)) <= 2


def test_a_copy_another_process_stored_meanwhile_is_not_counted_as_seen(tmp_path):
    """Before: two imports of one folder at once counted 64 seen frames for its 40 images: a
    copy the other process committed between this one's check and its write transaction was
    refused there, after its offer had been counted (the stream counters steer admission)."""
    from edgecl.continual.memory import DuplicateSampleError

    with ReplayMemory(tmp_path / "m", cfg()) as first, ReplayMemory(tmp_path / "m", cfg()) as second:
        first.add(_copy(1, LabelOrigin.IMPORT, digest="ab" * 16))
        first.add(_copy(2, LabelOrigin.IMPORT, digest="cd" * 16))
        real = second._db.find_content
        calls = []

        def missed_once(digest):  # the check before the transaction ran before first's commit
            calls.append(digest)
            return None if len(calls) == 1 else real(digest)

        second._db.find_content = missed_once
        with pytest.raises(DuplicateSampleError, match="already in memory"):
            second.add(_copy(1, LabelOrigin.IMPORT, digest="ab" * 16))
        second._db.find_content = real
        second.add(_copy(3, LabelOrigin.IMPORT, digest="ef" * 16))
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        assert m.stats()["seen"] == 3 and len(m) == 3


def test_a_classs_first_answer_trains_whatever_its_block_drew(tmp_path):
    """Before: an operator's first answer naming a new class, drawn for the held-out slice,
    left the class nothing to learn: no round started and nothing said why. Now a class's
    first answer trains; its later answers are drawn as before."""
    new_class = np.array([[3, 0.5, 0.5, 0.25, 0.5]], np.float32)

    def drawn_held_out(n):  # the n-th offer of task t0 (block_s 0: drawn by position)
        return draws_held_out(3, "t0", n, LabelOrigin.OPERATOR, None, 0.0, 0.5)

    with ReplayMemory(tmp_path / "m", cfg(holdout_fraction=0.5)) as m:
        n = 0
        while n < 4 or not drawn_held_out(n + 1):  # class 0, until the next offer is held out
            n += 1
            m.add(sample(n, LabelOrigin.OPERATOR))
        assert m.stats()["held_out"] > 0
        offers = []
        for i in range(n + 1, n + 41):
            sid = m.add(Sample(np.full((16, 16, 3), i, np.uint8), new_class, task="t0",
                               source=f"s{i}", origin=LabelOrigin.OPERATOR))
            offers.append(m.records([sid])[0].held_out)
        assert offers[0] is False  # the first of class 3 trains, though drawn held out
        assert [drawn_held_out(k) for k in range(n + 2, n + 41)] == offers[1:]  # the rest: as drawn
        assert any(offers[1:])
