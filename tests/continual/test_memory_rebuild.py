"""Rebuilding a damaged or missing memory index from the sample files and the newest snapshot."""

import json
import sqlite3

import numpy as np
import pytest

from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory.rebuild import UNKNOWN_ORIGIN, rebuild_index
from edgecl.errors import ReplayMemoryError
from edgecl.frames import STREAM_TASK, LabelOrigin

BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
NAMES = {0: "car", 1: "drone"}


def make_memory(root):
    """Four samples in a snapshot (one operator-labelled, some held out), one added after."""
    cfg = MemoryConfig(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.5, seed=3,
                       policy="reservoir")
    with ReplayMemory(root, cfg, names=NAMES) as m:
        for i in range(4):
            origin = LabelOrigin.OPERATOR if i == 1 else LabelOrigin.IMPORT
            m.add(Sample(np.full((24, 32, 3), 30 * i, np.uint8), BOX, task=f"t{i % 2}",
                         source=f"cam{i}", ts_s=10.0 + i, origin=origin))
        snap = m.snapshot()
        late = m.add(Sample(np.full((24, 32, 3), 200, np.uint8),
                            np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="t9",
                            source="late", origin=LabelOrigin.OPERATOR))
        before = {r.id: r for r in m.records()}
    return snap, late, before


def zero_fill(path):
    data = path.read_bytes()
    path.write_bytes(b"\0" * len(data))
    return b"\0" * len(data)


def test_rebuild_restores_rows_from_snapshot_and_files(tmp_path):
    root = tmp_path / "state" / "memory"
    snap, late, before = make_memory(root)
    damaged = zero_fill(root / "index.sqlite")
    with pytest.raises(ReplayMemoryError, match="--rebuild-index"):
        ReplayMemory(root, verify_on_open=False)
    report = rebuild_index(root)
    assert (report.rows, report.from_snapshot, report.from_files) == (5, 4, 1)
    assert report.snapshot_id == snap.snapshot_id and not report.quarantined
    assert report.moved_aside.read_bytes() == damaged  # kept aside byte for byte
    assert report.moved_aside.name.startswith("index.sqlite.corrupt-")
    with ReplayMemory(root) as m:
        rows = {r.id: r for r in m.records()}
        assert m.class_names() == NAMES
        assert m.last_verify.ok and not m.last_verify.orphan_files
        for sid in range(1, 5):
            got, want = rows[sid], before[sid]
            assert (got.origin, got.source, got.held_out, got.task, got.classes, got.ts_s) == (
                want.origin, want.source, want.held_out, want.task, want.classes, want.ts_s)
        assert rows[2].origin is LabelOrigin.OPERATOR and rows[3].held_out
        new = rows[late]
        assert new.classes == (0,) and new.task == STREAM_TASK and not new.held_out
        assert new.origin is not LabelOrigin.OPERATOR and (new.width, new.height) == (32, 24)
        assert m.stats()["samples"] == 5
        assert m.add(Sample(np.full((24, 32, 3), 90, np.uint8), BOX, task="t0")) > late
    raw = sqlite3.connect(root / "index.sqlite").execute(
        "SELECT origin FROM samples WHERE id = ?", (late,)).fetchone()[0]
    assert raw == UNKNOWN_ORIGIN


def test_rebuild_of_a_missing_index_quarantines_unreadable_samples(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    for side in ("", "-wal", "-shm"):
        (root / f"index.sqlite{side}").unlink(missing_ok=True)
    (root / "labels" / "00000002.txt").write_text("not a label\n")
    with pytest.raises(ReplayMemoryError, match="--rebuild-index"):
        ReplayMemory(root)
    report = rebuild_index(root)
    assert report.moved_aside is None and report.rows == 4 and len(report.quarantined) == 1
    entry = json.loads((root / "quarantine" / "00000002" / "sample.json").read_text())
    assert entry["origin"] == "operator" and entry["source"] == "cam1"
    with ReplayMemory(root) as m:
        assert 2 not in m.ids() and len(m) == 4 and m.class_names() == NAMES


def test_rebuild_refuses_a_readable_index(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    data = (root / "index.sqlite").read_bytes()
    with pytest.raises(ReplayMemoryError, match="is readable; nothing to rebuild"):
        rebuild_index(root)
    assert (root / "index.sqlite").read_bytes() == data
    assert not list(root.glob("index.sqlite.corrupt-*"))


def test_class_names_from_the_registry_without_snapshot_names(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    for records in root.glob("snapshots/*/records.json"):
        data = json.loads(records.read_text())
        data["names"] = None
        records.write_text(json.dumps(data))
    (tmp_path / "state" / "classes.json").write_text(json.dumps({"format": 1, "classes": [
        {"id": 0, "name": "car", "first_seen": "2026-01-01T00:00:00+00:00"},
        {"id": 1, "name": "drone", "first_seen": "2026-01-01T00:00:00+00:00"}]}))
    zero_fill(root / "index.sqlite")
    report = rebuild_index(root)
    assert report.names_from == "classes.json"
    with ReplayMemory(root) as m:
        assert m.class_names() == NAMES
