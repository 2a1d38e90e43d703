"""ReplayMemory storage: layout, bounds, held-out slice, snapshots, verify/repair, bad input."""

import errno
import os
import sqlite3

import cv2
import numpy as np
import pytest

from edgecl import atomic
from edgecl.config import Config, MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample, memory_from_config, overhead_reserve_bytes
from edgecl.errors import LabelError, ReplayMemoryError, StorageError
from edgecl.frames import Frame

BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)


def sample(value=100, labels=BOX, task="t0", size=32, source="cam"):
    return Sample(np.full((size, size, 3), value, np.uint8), labels, task=task, source=source,
                  ts_s=1.5)


def noise_sample(seed, size=32, task="t0"):
    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Sample(img, BOX, task=task, source=f"noise{seed}")


def cfg(**kw):
    base = dict(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.0, policy="reservoir")
    base.update(kw)
    return MemoryConfig(**base)


@pytest.fixture()
def mem(tmp_path):
    m = ReplayMemory(tmp_path / "memory", cfg(), names={0: "car", 1: "drone"})
    yield m
    m.close()


def test_layout_follows_ultralytics_convention(mem):
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.data.utils import img2label_paths

    sid = mem.add(sample())
    img, lbl = mem.image_path(sid), mem.label_path(sid)
    assert img.parent == mem.root / "images" and img.suffix == ".jpg"
    assert img2label_paths([str(img)]) == [str(lbl)]
    assert lbl.read_text() == "1 0.500000 0.500000 0.250000 0.500000\n"
    cols = {r[1] for r in sqlite3.connect(mem.root / "index.sqlite").execute(
        "PRAGMA table_info(samples)")}
    assert {"id", "task", "classes", "source", "ts_s", "bytes", "held_out", "recall_baseline",
            "last_recall", "last_loss", "times_replayed"} <= cols
    mode = sqlite3.connect(mem.root / "index.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_image_is_jpeg_at_configured_quality(tmp_path):
    s = noise_sample(1)
    for quality in (30, 95):
        with ReplayMemory(tmp_path / f"q{quality}", cfg(jpeg_quality=quality)) as m:
            sid = m.add(s)
            ok, expected = cv2.imencode(".jpg", s.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert m.image_path(sid).read_bytes() == expected.tobytes()


def test_get_roundtrip(mem):
    labels = np.array([[0, .1, .2, .05, .1], [1, .9, .8, .2, .3]], np.float32)
    sid = mem.add(sample(labels=labels, task="cars"))
    (got,) = mem.get([sid])
    np.testing.assert_allclose(got.labels, labels, atol=1e-6)
    assert (got.task, got.classes, got.held_out, got.source) == ("cars", (0, 1), False, "cam")
    assert got.recall_baseline is None and got.times_replayed == 0 and got.ts_s == 1.5
    assert got.load_image().shape == (32, 32, 3)
    assert mem.image_paths([sid]) == [got.image_path]


def test_get_unknown_id_is_a_clear_error(mem):
    with pytest.raises(ReplayMemoryError, match=r"no sample id\(s\) \[42\]"):
        mem.get([42])


def test_capacity_holds_after_every_add(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(capacity=8)) as m:
        for i in range(40):
            m.add(sample(i))
            assert len(m) <= 8
        assert len(m) == 8 and m.stats()["seen"] == 40
        assert len(list((m.root / "images").iterdir())) == 8


def test_byte_bound_holds_and_evicts_first(tmp_path):
    from edgecl.bench.memory_bench import du_bytes

    with ReplayMemory(tmp_path / "probe", cfg()) as probe:
        per_sample = probe.records([probe.add(noise_sample(0))])[0].bytes
    max_bytes = overhead_reserve_bytes(50) + int(3.5 * per_sample)
    with ReplayMemory(tmp_path / "m", cfg(capacity=50, max_bytes=max_bytes)) as m:
        for i in range(20):
            m.add(noise_sample(0))
            assert m.stats()["bytes"] <= m.sample_budget_bytes
            assert du_bytes(m.root) <= max_bytes
        assert len(m) == 3


def test_sample_bigger_than_budget_is_refused(tmp_path):
    max_bytes = overhead_reserve_bytes(5) + 6 * 4096  # room for a few small samples
    with ReplayMemory(tmp_path / "m", cfg(capacity=5, max_bytes=max_bytes)) as m:
        small = m.add(sample())
        with pytest.raises(ReplayMemoryError, match="more than the memory's sample budget"):
            m.add(noise_sample(3, size=256))
        assert m.ids() == [small] and m.get([small])[0].load_image().shape == (32, 32, 3)
        assert len(list((m.root / "images").iterdir())) == 1


def test_restart_keeps_everything(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(capacity=5)) as m:
        for i in range(12):
            m.add(sample(i))
        before, stats = m.ids(), m.stats()
    with ReplayMemory(tmp_path / "m", cfg(capacity=5)) as m:
        assert m.ids() == before and m.stats() == stats
        assert m.last_verify.ok and m.last_verify.problems_found == 0
        m.add(sample(99))
        assert len(m) == 5 and m.stats()["seen"] == 13


def test_smaller_bounds_on_reopen_evict(tmp_path, caplog):
    with ReplayMemory(tmp_path / "m", cfg(capacity=10)) as m:
        for i in range(10):
            m.add(sample(i))
    with ReplayMemory(tmp_path / "m", cfg(capacity=4)) as m:
        assert len(m) == 4 and len(m.last_verify.bound_evictions) == 6
        assert len(list((m.root / "images").iterdir())) == 4
    # said as what it is, not as damage repaired
    assert (f"replay memory {tmp_path / 'm'}: 6 sample(s) evicted at start (10 training "
            f"samples exceed the 4 training slots (memory.capacity 4); pseudo-labelled ones "
            f"first, operator answers last); 4 kept") in caplog.text
    assert "repaired" not in caplog.text


def test_smaller_bounds_on_reopen_free_the_evicted_files_at_once(tmp_path):
    """Before: the snapshots of past rounds held hard links to the evicted samples' files for
    two more rounds: a team lowering memory.max_bytes on a full card got nothing back."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=10)) as m:
        for i in range(10):
            m.add(sample(i))
        m.snapshot()
        m.add(sample(10))
        m.snapshot()
        images = {p.name for p in (m.root / "images").iterdir()}
    with ReplayMemory(tmp_path / "m", cfg(capacity=4)) as m:
        kept = {p.name for p in (m.root / "images").iterdir()}
        assert len(kept) == 4 and kept < images
        (snap,) = [p for p in (m.root / "snapshots").iterdir() if not p.name.startswith(".")]
        assert {p.name for p in (snap / "images").iterdir()} == kept  # the newest: what is kept
        evicted = {(m.root / "images" / name) for name in images - kept}
        assert not any(p.exists() for p in evicted)
        linked = {(snap / "images" / name).stat().st_ino for name in kept}
        assert {(m.root / "images" / name).stat().st_ino for name in kept} == linked
        assert m.verify(repair=False).ok
    with ReplayMemory(tmp_path / "m", cfg(capacity=4)) as m:  # nothing more evicted: kept as is
        assert [p.name for p in (m.root / "snapshots").iterdir()] == [snap.name]


def test_smaller_bounds_on_reopen_evict_pseudo_labels_first(tmp_path):
    """Before: lowering memory.capacity dropped a person's answers as readily as
    pseudo-labels. 3 operator + 3 pseudo samples of one class, reopened with room for 4."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=10)) as m:
        for i in range(6):
            m.add(Sample(np.full((32, 32, 3), i * 20, np.uint8), BOX, task="stream",
                         source=f"cam{i}", origin="operator" if i % 2 else "pseudo"))
    with ReplayMemory(tmp_path / "m", cfg(capacity=4)) as m:
        origins = sorted(r.origin.value for r in m.records())
        assert origins == ["operator", "operator", "operator", "pseudo"]
    with ReplayMemory(tmp_path / "m", cfg(capacity=2)) as m:  # only human labels left to go
        assert [r.origin.value for r in m.records()] == ["operator", "operator"]


def test_a_full_memory_keeps_a_persons_answers_over_a_labelled_streams_frames(tmp_path):
    """Before: the stream's frames evicted answers at random (in a soak, 7 of 11 answers at
    capacity 40 were gone within a minute). 3 answers, then 40 frames of a labelled stream of
    the same class at capacity 8: every answer is still stored."""
    with ReplayMemory(tmp_path / "m", cfg(capacity=8, policy="class_balanced")) as m:
        answers = [m.add(Sample(np.full((32, 32, 3), 7 * i, np.uint8), BOX, task="stream",
                                source=f"answer{i}", origin="operator")) for i in range(3)]
        for i in range(40):
            m.add(Sample(np.full((32, 32, 3), 100 + i, np.uint8), BOX, task="stream",
                         source=f"cam{i}", origin="ground_truth"))
        assert set(answers) <= set(m.ids())
        assert m.stats()["per_origin"]["operator"] == 3


def test_held_out_slice_is_deterministic_and_never_for_training(tmp_path):
    flags = []
    for run in ("a", "b"):
        with ReplayMemory(tmp_path / run, cfg(capacity=1000, holdout_fraction=0.2, seed=5)) as m:
            for i in range(200):
                m.add(sample(i % 250, task=f"t{i // 100}"))
            flags.append([r.held_out for r in m.records()])
            held = m.ids(held_out=True)
            assert not set(held) & set(m.ids(held_out=False))
            per_task = m.stats()["per_task_held_out"]
    assert flags[0] == flags[1]
    assert 8 <= per_task["t0"] <= 35 and 8 <= per_task["t1"] <= 35  # ~20% of 100 each
    with ReplayMemory(tmp_path / "c", cfg(capacity=1000, holdout_fraction=0.2, seed=6)) as m:
        for i in range(200):
            m.add(sample(i % 250, task=f"t{i // 100}"))
        assert [r.held_out for r in m.records()] != flags[0]


def test_held_out_blocks_come_in_every_group_at_random_positions():
    from edgecl.continual.memory.admission import draws_held_out
    from edgecl.frames import LabelOrigin as O

    def held(t_s, fraction=0.2, origin=O.OPERATOR, n=1, block_s=10.0, seed=3):
        return draws_held_out(seed, "stream", n, origin, t_s, block_s, fraction)

    # 10 s blocks: 10.0 s and 19.9 s are block 1, 20.0 s block 2 (floor(t / 10))
    assert held(10.0) == held(19.9) and held(10.0, origin=O.GROUND_TRUTH) == held(19.9)
    # fraction 0.2: groups of ceil(1 / 0.2) = 5 blocks, exactly one held out in each group
    flags = [held(b * 10.0 + 5.0) for b in range(100)]
    assert [sum(flags[g:g + 5]) for g in range(0, 100, 5)] == [1] * 20
    assert len({flags[g:g + 5].index(True) for g in range(0, 100, 5)}) > 1  # not one position
    # fraction 0.3: groups of 4 blocks holding 1 or 2 (0.3 x 4 = 1.2): 30 of 100 blocks
    flags = [held(b * 10.0 + 5.0, 0.3) for b in range(100)]
    assert sum(flags) == 30 and {sum(flags[g:g + 4]) for g in range(0, 100, 4)} <= {1, 2}
    # labels that come at a regular interval (every 5th block, the group length) are held out
    # about a fifth of the time, for every seed, not always or never
    for seed in range(4):
        share = sum(held(b * 10.0 + 5.0, seed=seed) for b in range(0, 2000, 5)) / 400
        assert 0.12 < share < 0.28
    # an imported folder, a block length of 0, a capture time that is no number and one beyond
    # float precision for the block length: drawn per offer, in groups of 5 consecutive offers
    # with exactly one held out in each (so a folder of 5 images already has one)
    per_offer = [held(15.0, origin=O.IMPORT, n=n) for n in range(1, 41)]
    assert [sum(per_offer[g:g + 5]) for g in range(0, 40, 5)] == [1] * 8
    assert len({per_offer[g:g + 5].index(True) for g in range(0, 40, 5)}) > 1
    assert [held(float("nan"), n=n) for n in range(1, 41)] == per_offer
    assert [held(1e300, n=n) for n in range(1, 41)] == per_offer
    assert [held(15.0, n=n, block_s=0.0) for n in range(1, 41)] == per_offer
    assert per_offer != [held(b * 10.0 + 5.0) for b in range(40)]  # its own draws, not blocks'
    for seed in range(20):  # any seed: the first 10 imports at 10 % hold one out
        assert sum(held(15.0, 0.1, O.IMPORT, n, seed=seed) for n in range(1, 11)) == 1


def test_frames_of_one_time_block_are_held_out_or_trained_on_together(tmp_path):
    # 300 streamed frames at 10 fps in 2 s blocks (20 frames each, 15 blocks), 1000 slots: a
    # block is held out as a whole; with a per-frame draw (block 0) the same stream mixes.
    def flags(block_s, origin="ground_truth"):
        config = cfg(capacity=1000, holdout_fraction=0.3, seed=2, holdout_block_s=block_s)
        with ReplayMemory(tmp_path / f"{block_s}-{origin}", config) as m:
            for i in range(300):
                img = np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)
                m.add(Sample(img, BOX, task="stream", source=f"cam{i}", ts_s=1000.0 + i / 10,
                             origin=origin))
            return [r.held_out for r in sorted(m.records(), key=lambda r: r.ts_s)]

    blocked = flags(2.0)
    blocks = [blocked[i:i + 20] for i in range(0, 300, 20)]
    assert all(len(set(b)) == 1 for b in blocks)
    # 30 %: groups of 4 blocks (blocks 500-503, 504-507, ...) hold 1 or 2 each; the 15 blocks
    # are 3 whole groups and 3 blocks of a 4th
    assert 3 <= sum(b[0] for b in blocks) <= 8
    per_frame = flags(0.0)
    assert any(len(set(per_frame[i:i + 20])) == 2 for i in range(0, 300, 20))
    imported = flags(2.0, origin="import")  # an import's clock says nothing about the scene
    assert any(len(set(imported[i:i + 20])) == 2 for i in range(0, 300, 20))


def test_held_out_quota_is_shared_between_tasks(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(capacity=20, holdout_fraction=0.5, seed=1)) as m:
        for i in range(300):
            m.add(sample(i % 250, task=f"t{i // 100}"))
        held = m.stats()["per_task_held_out"]
        assert m.holdout_capacity == 10 and sum(held.values()) <= 10
        assert all(n <= 10 // 3 for n in held.values()) and set(held) == {"t0", "t1", "t2"}
        assert len(m.ids(held_out=False)) <= m.train_capacity and len(m) <= 20


def test_held_out_shares_of_a_deployment_are_per_class(tmp_path):
    # a camera (one task for the device's life): 400 car frames fill the 20 held-out slots,
    # then a person is taught on 40 frames, 8 of which are drawn for the held-out slice (one in
    # every 5 offers). One reservoir over the stream would keep about 20 x 8 / 88 ~ 2 of them;
    # class-balanced, each person draw evicts a car while the person has fewer rows: 8 and 12.
    from edgecl.continual.memory.admission import draws_held_out
    from edgecl.frames import LabelOrigin

    car = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
    person = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
    with ReplayMemory(tmp_path / "m", cfg(capacity=100, holdout_fraction=0.2, seed=4,
                                          policy="class_balanced")) as m:
        for i in range(440):
            m.add(sample(i % 250, labels=car if i < 400 else person, task="stream"))
        held = [r.classes for r in m.records(held_out=True)]
        draws = sum(draws_held_out(4, "stream", n, LabelOrigin.GROUND_TRUTH, 1.5, 0.0, 0.2)
                    for n in range(401, 441))
        assert m.holdout_capacity == 20 and draws == 8
        assert held.count((1,)) == 8 and held.count((0,)) == 12
        assert m.verify().problems_found == 0


def test_more_classes_than_held_out_slots_keep_the_slice_full(tmp_path):
    # 15 classes taught one after another, 10 held-out slots: every slot stays filled, no class
    # holds two while another holds none, and the last class taught has its slot
    with ReplayMemory(tmp_path / "m", cfg(capacity=100, holdout_fraction=0.1, seed=0,
                                          policy="class_balanced")) as m:
        full = False
        for i in range(1500):
            labels = np.array([[i // 100, 0.5, 0.5, 0.25, 0.5]], np.float32)
            m.add(sample(i % 250, labels=labels, task="stream"))
            n_held = len(m.ids(held_out=True))
            full = full or n_held == 10
            assert n_held == 10 or not full  # once full, never emptied (rounds need it)
        held = [r.classes[0] for r in m.records(held_out=True)]
        assert len(held) == 10 and max(held.count(c) for c in set(held)) == 1 and 14 in held
        assert m.verify().problems_found == 0


def test_snapshot_is_immutable_and_survives_evictions(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(capacity=4), keep_snapshots=2) as m:
        for i in range(4):
            m.add(sample(i * 10))
        snap = m.snapshot()
        for i in range(40):
            m.add(sample(200))
        assert len(snap) == 4 and set(snap.ids()) - set(m.ids())  # some were evicted
        for s in snap.get(snap.ids()):
            assert s.load_image().shape == (32, 32, 3) and s.labels.shape == (1, 5)
        lines = snap.list_file().read_text().split()
        assert sorted(lines) == sorted(str(p) for p in snap.image_paths(snap.ids()))
        m.snapshot()
        m.snapshot()
        assert not snap.path.exists()  # pruned: only the 2 newest are kept
        assert len([p for p in (m.root / "snapshots").iterdir()]) == 2


def test_a_snapshot_taken_after_the_clock_went_back_is_kept(tmp_path, monkeypatch):
    # a board without a battery-backed clock reboots to 1970 with 2026 snapshots on disk
    import time

    from edgecl.continual.memory import snapshot as snapshot_mod

    with ReplayMemory(tmp_path / "m", cfg(), keep_snapshots=2) as m:
        m.add(sample(10))
        # an older release's ids (wall-clock stamps) and two of this release, from 2026
        (m.root / "snapshots" / "20261130T090000.000000001-abcdef").mkdir()
        first, second = m.snapshot(), m.snapshot()
        assert first.snapshot_id.startswith("0000000001-")
        assert second.snapshot_id.startswith("0000000002-")
        epoch = time.gmtime(0)
        monkeypatch.setattr(snapshot_mod.time, "gmtime", lambda *a: epoch)
        after = m.snapshot()
        assert after.snapshot_id.startswith("0000000003-19700101T000000Z-")
        assert after.path.is_dir() and after.get(after.ids())[0].load_image().shape == (32, 32, 3)
        kept = sorted(p.name for p in (m.root / "snapshots").iterdir())
        assert kept == sorted([second.snapshot_id, after.snapshot_id])


def test_prune_never_removes_the_protected_snapshot(tmp_path):
    from edgecl.continual.memory.snapshot import prune_snapshots, snapshot_order

    snaps = tmp_path / "snapshots"
    for name in ("0000000002-b", "0000000003-c", "20261130T0900-x", "0000000001-a"):
        (snaps / name).mkdir(parents=True)
    assert [n for n in sorted((p.name for p in snaps.iterdir()), key=snapshot_order)] == [
        "20261130T0900-x", "0000000001-a", "0000000002-b", "0000000003-c"]
    assert prune_snapshots(tmp_path, 1, protect="0000000001-a") == ["20261130T0900-x",
                                                                   "0000000002-b"]
    assert sorted(p.name for p in snaps.iterdir()) == ["0000000001-a", "0000000003-c"]


def test_a_snapshot_another_live_process_reads_is_not_pruned(tmp_path):
    """Before: 'memory export' run twice while a round trained pruned the round's snapshot
    under it ("cannot read label file .../snapshots/.../labels/00000044.txt"). A process marks
    the snapshot it reads; one marked by a live process other than the pruning one is kept, and
    a process's newer snapshot releases its older one."""
    import subprocess
    import sys

    from edgecl.continual.memory.snapshot import IN_USE_PREFIX

    with ReplayMemory(tmp_path / "m", cfg(), keep_snapshots=1) as m:
        m.add(sample(10))
        round_snap = m.snapshot()
        assert (round_snap.path / f"{IN_USE_PREFIX}{os.getpid()}").exists()
        reader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (round_snap.path / f"{IN_USE_PREFIX}{os.getpid()}").rename(
                round_snap.path / f"{IN_USE_PREFIX}{reader.pid}")  # as the round's process
            for _ in range(2):  # two exports
                export_snap = m.snapshot()
            assert round_snap.path.is_dir() and export_snap.path.is_dir()
        finally:
            reader.kill()
            reader.wait()
        m.snapshot()  # its reader is gone: pruned as any other
        assert not round_snap.path.exists()
        assert len([p for p in (m.root / "snapshots").iterdir()]) == 1


def test_snapshot_feeds_an_ultralytics_dataset(tmp_path):
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.data.dataset import YOLODataset

    with ReplayMemory(tmp_path / "m", cfg(), names={0: "car", 1: "drone"}) as m:
        for i in range(3):
            m.add(sample(i * 40))
        snap = m.snapshot()
    ds = YOLODataset(img_path=str(snap.list_file()), imgsz=64, augment=False,
                     data={"names": snap.names, "nc": 2, "channels": 3}, task="detect")
    assert len(ds) == 3
    assert ds.labels[0]["cls"].ravel().tolist() == [1.0]


def test_verify_repairs_orphans_and_missing_files(mem):
    ids = [mem.add(sample(i)) for i in range(3)]
    mem.image_path(ids[1]).unlink()
    (mem.root / "images" / "00009999.jpg").write_bytes(b"x")
    (mem.root / "labels" / ".00000007.txt.abc.tmp").write_bytes(b"x")
    (mem.root / "snapshots" / ".tmp-123").mkdir()
    check = mem.verify(repair=False)
    assert not check.ok and check.missing_rows == (ids[1],) and len(mem) == 3
    fixed = mem.verify(repair=True)
    assert fixed.ok and fixed.missing_rows == (ids[1],)
    assert len(fixed.temp_files) == 1 and len(fixed.stale_snapshot_dirs) == 1
    assert mem.ids() == [ids[0], ids[2]]
    assert sorted(p.name for p in (mem.root / "images").iterdir()) == \
        [mem.image_path(ids[0]).name, mem.image_path(ids[2]).name]
    assert sorted(p.name for p in (mem.root / "labels").iterdir()) == \
        [mem.label_path(ids[0]).name, mem.label_path(ids[2]).name]
    assert mem.verify().problems_found == 0


def test_quick_verify_finds_a_truncated_jpeg_and_drops_its_sample(mem):
    ids = [mem.add(noise_sample(i)) for i in range(3)]
    data = mem.image_path(ids[0]).read_bytes()
    assert mem.records([ids[0]])[0].image_bytes == len(data)
    mem.image_path(ids[0]).write_bytes(data[: len(data) // 2])
    check = mem.verify(repair=False, deep=False)
    expected = f"row {ids[0]}: image {mem.image_path(ids[0]).name} has {len(data) // 2} bytes, " \
               f"{len(data)} were stored"
    assert check.corrupt_rows == (ids[0],) and check.details == (expected,)
    assert not check.ok and expected in check.unrepaired and mem.ids() == ids
    fixed = mem.verify(repair=True, deep=False)
    assert fixed.ok and fixed.corrupt_rows == (ids[0],)
    assert mem.ids() == ids[1:] and not mem.image_path(ids[0]).exists()
    assert not mem.label_path(ids[0]).exists()
    assert mem.verify(repair=False, deep=True).problems_found == 0


def test_quick_verify_finds_missing_end_marker_at_the_recorded_size(mem):
    sid = mem.add(noise_sample(4))
    data = bytearray(mem.image_path(sid).read_bytes())
    data[-2:] = b"\x00\x00"  # same length, no end-of-image marker
    mem.image_path(sid).write_bytes(bytes(data))
    report = mem.verify(repair=True, deep=False)
    assert report.corrupt_rows == (sid,) and "end marker" in report.details[0]
    assert mem.ids() == []


def test_deep_verify_finds_undecodable_image_and_bad_label(mem):
    ids = [mem.add(noise_sample(i)) for i in range(3)]
    data = mem.image_path(ids[0]).read_bytes()
    garbage = data[:2] + bytes(len(data) - 4) + data[-2:]  # size and markers intact
    mem.image_path(ids[0]).write_bytes(garbage)
    mem.label_path(ids[1]).write_text("0 0.5 0.5\n")
    quick = mem.verify(repair=True, deep=False)  # labels are parsed by every check
    assert quick.corrupt_rows == (ids[1],) and ":1: 3 values" in quick.details[0]
    report = mem.verify(repair=True, deep=True)  # images are decoded by the deep one only
    assert report.corrupt_rows == (ids[0],) and report.ok
    assert "does not decode" in report.details[0]
    assert mem.ids() == [ids[2]]
    assert sorted(p.name for p in (mem.root / "images").iterdir()) == [mem.image_path(ids[2]).name]
    assert mem.verify(repair=False, deep=True).problems_found == 0
    assert mem.add(noise_sample(9)) is not None


def test_verify_reports_what_it_cannot_repair(mem, monkeypatch):
    mem.add(sample())
    (mem.root / "images" / "stray.jpg").write_bytes(b"x")

    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.unlink", refuse)
    report = mem.verify(repair=True)
    assert not report.ok and "stray.jpg" in report.unrepaired[0]


def test_metric_columns(mem):
    a, b = mem.add(sample(1)), mem.add(sample(2))
    assert mem.set_recall_baseline([a, b], [0.9, 0.8]) == 2
    mem.update_recall([a], [0.4])
    mem.update_loss([a, b], [1.5, float("nan")])
    mem.record_replay([a, a, b])
    ra, rb = mem.records([a, b])
    assert (ra.recall_baseline, ra.last_recall, ra.last_loss, ra.times_replayed) == (0.9, 0.4, 1.5, 2)
    assert (rb.recall_baseline, rb.last_recall, rb.last_loss, rb.times_replayed) == (0.8, None, None, 1)
    with pytest.raises(ReplayMemoryError, match="2 ids but 1 values"):
        mem.update_recall([a, b], [0.1])


def test_stats(mem):
    mem.add(sample(labels=np.array([[0, .5, .5, .1, .1], [1, .2, .2, .1, .1]]), task="a"))
    mem.add(sample(labels=np.array([[1, .5, .5, .1, .1]]), task="b"))
    mem.add(sample(labels=np.zeros((0, 5)), task="b"))
    st = mem.stats()
    assert st["samples"] == 3 and st["per_class"] == {"0": 1, "1": 2}
    assert st["per_task"] == {"a": 1, "b": 2} and st["bytes"] == sum(r.bytes for r in mem.records())
    assert st["names"] == {"0": "car", "1": "drone"}


def test_memory_from_config(tmp_path):
    m = memory_from_config(Config(state_dir=str(tmp_path / "state")))
    assert m.root == tmp_path / "state" / "memory" and (m.root / "index.sqlite").is_file()
    m.close()


BAD_LABELS = [
    (np.array([[0, .5, .5, .1]]), r"shape \(1, 4\)"),
    (np.array([[0, .5, np.nan, .1, .1]]), "label row 0: non-finite"),
    (np.array([[0, 1.2, .5, .1, .1]]), "label row 0: coordinates .* exceed 1"),
    (np.array([[0, .5, .5, -.1, .1]]), "label row 0: negative coordinate"),
    (np.array([[-1, .5, .5, .1, .1]]), r"class -1 is not an integer >= 0"),
    (np.array([[0.5, .5, .5, .1, .1]]), r"class 0.5 is not an integer >= 0"),
    (np.array([[0, .5, .5, .1, .1], [2, .5, .5, .1, .1]]),
     r"label row 1: class 2 exceeds the class count 2"),
    ("garbage", "not numeric rows"),
    (None, "labels are None"),
]


@pytest.mark.parametrize("labels, message", BAD_LABELS)
def test_bad_labels_are_refused_and_nothing_is_lost(mem, labels, message):
    keep = mem.add(sample())
    with pytest.raises(LabelError, match=message) as info:
        mem.add(sample(labels=labels, source="cam7/frame12.jpg"))
    text = str(info.value)
    assert "\n" not in text and "cam7/frame12.jpg" in text
    assert mem.ids() == [keep] and mem.get([keep])[0].labels.shape == (1, 5)


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 0, 3), np.uint8), r"empty image \(size 0"),
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8, 4), np.uint8), "not \\(H, W\\)"),
    (None, "expected a numpy array"),
])
def test_bad_images_are_refused(mem, image, message):
    keep = mem.add(sample())
    with pytest.raises(ReplayMemoryError, match=message):
        mem.add(Sample(image, BOX, task="t0", source="cam"))
    assert mem.ids() == [keep]


def test_labels_follow_the_project_rule_when_stored(mem):
    overshoot = np.array([[0, .5, .5, .1, .1], [1, 0.995, .5, .02, .1], [0, .5, .5, .1, .1]])
    sid = mem.add(sample(labels=overshoot))
    (got,) = mem.get([sid])
    # the overshooting box (x 0.985..1.005) is clipped to 0.985..1.0; the duplicate row goes
    np.testing.assert_allclose(got.labels, [[0, .5, .5, .1, .1], [1, .9925, .5, .015, .1]],
                               atol=1e-6)
    second_line = mem.label_path(sid).read_text().splitlines()[1]
    assert second_line == "1 0.992500 0.500000 0.015000 0.100000"


def test_disk_full_refuses_the_sample_and_keeps_the_rest(mem, monkeypatch):
    keep = [mem.add(sample(i)) for i in range(3)]
    real = atomic.atomic_write_bytes
    calls = []

    def full_on_label(path, data, **kw):
        calls.append(path)
        if str(path).endswith(".txt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, **kw)

    monkeypatch.setattr(atomic, "atomic_write_bytes", full_on_label)
    with pytest.raises(StorageError, match="No space left on device") as info:
        mem.add(sample(77))
    assert "\n" not in str(info.value) and len(calls) == 2
    monkeypatch.setattr(atomic, "atomic_write_bytes", real)
    assert mem.ids() == keep
    assert len(list((mem.root / "images").iterdir())) == 3
    assert mem.verify(deep=True).problems_found == 0
    assert mem.add(sample(78)) is not None


def test_task_must_be_named(mem):
    with pytest.raises(ReplayMemoryError, match="task must be a non-empty string"):
        mem.add(Sample(np.zeros((4, 4, 3), np.uint8), BOX, task=""))


def test_sample_from_unlabelled_frame():
    frame = Frame(np.zeros((4, 4, 3), np.uint8), frame_id=3, ts_s=0.0, source="rtsp://x")
    with pytest.raises(LabelError, match="frame 3 from rtsp://x has no labels"):
        Sample.from_frame(frame)
    labelled = Frame(np.zeros((4, 4, 3), np.uint8), 4, 2.0, "s", labels=BOX, task="t")
    assert Sample.from_frame(labelled).task == "t"
    # a camera frame carries no task: it joins the deployment's one task, as every other path
    # that stores frames does (the round and the gate treat that task as "no tasks")
    untasked = Frame(np.zeros((4, 4, 3), np.uint8), 5, 3.0, "s", labels=BOX)
    assert Sample.from_frame(untasked).task == "stream"


def test_config_errors(tmp_path):
    with pytest.raises(ReplayMemoryError, match="leaves no room"):
        ReplayMemory(tmp_path / "m", cfg(max_bytes=1000))
    with pytest.raises(ReplayMemoryError, match="jpeg_quality"):
        ReplayMemory(tmp_path / "m", cfg(jpeg_quality=0))


def test_damaged_index_is_a_clear_error(tmp_path):
    root = tmp_path / "m"
    with ReplayMemory(root, cfg()) as m:
        m.add(sample())
    (root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for leftover in ("index.sqlite-wal", "index.sqlite-shm"):
        (root / leftover).unlink(missing_ok=True)
    with pytest.raises(ReplayMemoryError, match=r"memory index is unusable: .*index\.sqlite"):
        ReplayMemory(root, cfg())


def test_held_out_samples_trimmed_for_a_new_task_are_said(tmp_path, caplog):
    with ReplayMemory(tmp_path / "m", cfg(capacity=50, holdout_fraction=0.4)) as m:
        for i in range(60):
            m.add(sample(value=i, task="t0", source=f"a{i}"))
        held = len(m.ids(held_out=True))
        assert held == 20                                   # the task's 20 slots are full
        caplog.clear()
        m.add(sample(value=200, task="t1", source="b0"))    # two tasks share them: 10 each
        assert len(m.ids(held_out=True, task="t0")) == 10
    assert "held-out samples of task 't0' trimmed from 20 to 10 (its share of 20" in caplog.text


def _plan(units, fraction, seed, first_index=0):
    from collections import Counter

    from edgecl.continual.memory.admission import plan_import_held_out

    return plan_import_held_out([(frames, Counter(classes)) for frames, classes in units],
                                fraction, seed, "stream", first_index)


@pytest.mark.parametrize("seed", range(12))
def test_an_import_plan_holds_out_a_class_of_two_blocks_and_keeps_one_for_training(seed):
    """Before: the draw over blocks was blind to classes: of 50 windows of 174 consecutive
    hit-uav-dev frames, 23 had a class of 10 frames or more with no held-out frame. Here
    (the pattern of one such window) Bicycle lies in two blocks, one of them Car's only
    block: Bicycle's other block is held out, Car's trains, and Person keeps its share."""
    units = [(10, {"Person": 10})] * 10 + [(9, {"Person": 3, "Car": 4, "Bicycle": 5}),
                                           (10, {"Person": 10, "Bicycle": 5})]
    held = _plan(units, 0.1, seed)
    assert held[10] is False and held[11] is True
    assert 1 <= sum(held) <= 2  # the class-blind draw's one unit in ten, or Bicycle's instead


@pytest.mark.parametrize("seed", range(12))
def test_an_import_plan_gives_a_class_drawn_whole_a_block_back(seed):
    """A class whose only block the draw held out is learnt, not measured: with one block in
    two held out (fraction 0.5), two one-block classes both train."""
    assert _plan([(10, {"A": 10}), (10, {"B": 10})], 0.5, seed) == [False, False]


def test_an_import_plan_without_classes_is_the_position_draw():
    """Without label classes (a reader that cannot tell) the plan is the draw by position:
    one unit in every ten for 0.1, going on from ``first_index``."""
    from edgecl.continual.memory.admission import _stratified_draw

    for first in (0, 7):
        plan = _plan([(1, {})] * 40, 0.1, 3, first)
        assert plan == [_stratified_draw(3, "stream", first + j, 0.1, "/sample") for j in range(40)]
        assert sum(plan) == 4
    assert _plan([(1, {"A": 1})] * 5, 0.0, 3) == [False] * 5
    assert _plan([], 0.1, 3) == []


@pytest.mark.parametrize("seed", range(12))
def test_an_import_plan_keeps_the_held_out_share_when_it_adds_a_class_block(seed):
    """A class block the plan holds out sends a drawn block that no class needs back to
    training: 20 blocks of A and 2 blocks showing B (fraction 0.1) hold out 2 units, as the
    draw does, one of them B's."""
    units = [(10, {"A": 10})] * 20 + [(10, {"A": 5, "B": 5})] * 2
    drawn = _plan([(10, {})] * 22, 0.1, seed)
    held = _plan(units, 0.1, seed)
    assert held[20] != held[21]
    assert sum(held) == sum(drawn)


@pytest.mark.parametrize("seed", range(12))
def test_an_import_plan_holds_out_the_lighter_block_of_a_rare_class(seed):
    """Before: a rare class's block that the draw held out stayed held out, whatever its size:
    6 of a class's 10 images (hit-uav-dev's Car in one window), 4 left to learn from. Now the
    class keeps one held block, the one nearest its share: the 4-frame block."""
    units = [(10, {"Person": 10})] * 18 + [(6, {"Car": 6}), (4, {"Car": 4})]
    held = _plan(units, 0.1, seed)
    assert held[18:] == [False, True]


def test_an_import_plan_counts_what_the_memory_holds():
    """Small imports, each below the threshold, counted together: a class the memory trains
    on is held out from this import's one block of it (before: never, over 14 imports of 5
    frames); a class the memory holds out already gets none here; a class drawn whole here
    but trained on in the memory is not given back."""
    from collections import Counter

    from edgecl.continual.memory.admission import plan_import_held_out

    def plan(units, prior):
        return plan_import_held_out([(n, Counter(c)) for n, c in units], 0.1, 0, "stream", 0,
                                    prior)

    one = [(5, {"Bicycle": 5})]
    assert plan(one, {"Bicycle": (10, 0)}) == [True]
    assert plan(one, {"Bicycle": (3, 0)}) == [False]  # 8 in all: none due yet
    assert plan(one, {"Bicycle": (10, 2)}) == [False]  # measured already
    assert plan(one, {}) == [False]  # its only images: learnt first
    drawn = [_stratified for _stratified in _plan([(1, {})] * 20, 0.1, 0)]
    first = drawn.index(True)
    units = [(1, {"Person": 1})] * 20
    units[first] = (1, {"Person": 1, "Kayak": 1})
    assert plan(units, {"Kayak": (4, 0)})[first] is True  # kept held: kayak trains in memory
    assert plan(units, {})[first] is False  # given back: its only image
