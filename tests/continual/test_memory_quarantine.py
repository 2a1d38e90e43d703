"""Damaged samples go to ``memory/quarantine/<id>/`` instead of being deleted: what is left of
their files, their index row, the reason; named in the open warning and by ``memory verify``;
bounded; safe against a kill at any step."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.frames import LabelOrigin

HERE = Path(__file__).parent
BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
BOX_TEXT = "1 0.500000 0.500000 0.250000 0.500000\n"


def cfg(**kw):
    base = dict(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.0, policy="reservoir")
    base.update(kw)
    return MemoryConfig(**base)


def sample(seed, labels=BOX, origin=LabelOrigin.GROUND_TRUTH):
    img = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return Sample(img, labels, task="t0", source=f"cam{seed}.jpg", ts_s=1.5, origin=origin)


@pytest.fixture()
def mem(tmp_path):
    m = ReplayMemory(tmp_path / "memory", cfg(), names={0: "car", 1: "forklift"})
    yield m
    m.close()


def zero_fill(path: Path) -> bytes:
    """Overwrite a file with zeros of the same length (what a torn write on an SD card leaves)."""
    data = bytes(path.stat().st_size)
    path.write_bytes(data)
    return data


def folder(mem, sid) -> Path:
    return mem.root / "quarantine" / f"{sid:08d}"


def entry(mem, sid) -> dict:
    return json.loads((folder(mem, sid) / "sample.json").read_text())


def test_a_zero_filled_image_is_quarantined_with_its_intact_label(mem):
    ids = [mem.add(sample(i)) for i in range(2)]
    sid = mem.add(sample(9, origin=LabelOrigin.OPERATOR))
    image = mem.image_path(sid)
    damaged = zero_fill(image)
    check = mem.verify(repair=False)
    assert check.corrupt_rows == (sid,) and not folder(mem, sid).exists() and image.exists()
    report = mem.verify(repair=True)
    assert report.ok and report.corrupt_rows == (sid,) and mem.ids() == ids
    where = folder(mem, sid)
    assert sorted(p.name for p in where.iterdir()) == \
        [f"{sid:08d}.jpg", f"{sid:08d}.txt", "sample.json"]
    assert (where / f"{sid:08d}.jpg").read_bytes() == damaged
    assert (where / f"{sid:08d}.txt").read_text() == BOX_TEXT  # the operator's label, intact
    assert not image.exists() and not mem.label_path(sid).exists()
    meta = entry(mem, sid)
    reason = f"image {sid:08d}.jpg is not a complete JPEG (start/end marker missing)"
    assert {k: meta[k] for k in ("id", "origin", "source", "classes", "task", "kind", "reason",
                                 "damaged_file", "seq")} == {
        "id": sid, "origin": "operator", "source": "cam9.jpg", "classes": [1], "task": "t0",
        "kind": "corrupt", "reason": reason, "damaged_file": f"{sid:08d}.jpg", "seq": 1}
    line = f"sample {sid} (operator labels, source 'cam9.jpg'): {reason}; kept in {where}"
    assert report.quarantined == (line,)
    assert report.details == (f"row {sid}: {reason}; files kept in {where}",)
    assert f"1 damaged sample(s) quarantined: {line}" in report.summary()
    assert mem.verify(repair=False, deep=True).problems_found == 0


def test_a_truncated_label_is_quarantined_with_its_intact_image(mem):
    sid = mem.add(sample(3, origin=LabelOrigin.IMPORT))
    image_bytes = mem.image_path(sid).read_bytes()
    mem.label_path(sid).write_text(BOX_TEXT[:14])  # "1 0.500000 0.5": a row cut short
    # the check every open runs finds it (before: only the deep check did, and every learning
    # round failed on it until 'memory verify' was run by hand)
    report = mem.verify(repair=True, deep=False)
    assert report.corrupt_rows == (sid,) and mem.ids() == []
    assert (folder(mem, sid) / f"{sid:08d}.jpg").read_bytes() == image_bytes
    assert (folder(mem, sid) / f"{sid:08d}.txt").read_text() == BOX_TEXT[:14]
    meta = entry(mem, sid)
    assert meta["origin"] == "import" and meta["damaged_file"] == f"{sid:08d}.txt"
    assert ":1: 3 values" in meta["reason"] and "(import labels" in report.quarantined[0]


def test_an_emptied_label_of_a_labelled_sample_is_damage(mem):
    negative = mem.add(sample(1, labels=np.zeros((0, 5), np.float32)))
    sid = mem.add(sample(2, origin=LabelOrigin.OPERATOR))
    assert mem.label_path(negative).stat().st_size == 0  # a "nothing here" sample: healthy
    mem.label_path(sid).write_bytes(b"")
    why = f"row {sid}: label {sid:08d}.txt is empty, the index recorded classes [1]"
    for deep in (False, True):
        check = mem.verify(repair=False, deep=deep)
        assert check.corrupt_rows == (sid,) and check.details == (why,) and not check.ok
    report = mem.verify(repair=True, deep=False)  # the check run on open finds it too
    assert report.corrupt_rows == (sid,) and mem.ids() == [negative]
    assert entry(mem, sid)["classes"] == [1] and entry(mem, sid)["kind"] == "corrupt"
    assert (folder(mem, sid) / f"{sid:08d}.txt").read_bytes() == b""
    assert (folder(mem, sid) / f"{sid:08d}.jpg").stat().st_size > 0


def test_a_class_less_or_other_class_label_is_found_by_every_check(mem):
    ids = [mem.add(sample(i)) for i in range(3)]
    mem.label_path(ids[0]).write_text("\n\n")                 # no row at all
    mem.label_path(ids[1]).write_text(BOX_TEXT.replace("1 ", "0 ", 1))  # class 0, not 1
    mem.label_path(ids[2]).write_bytes(b"\xff\xfe garbage")  # not UTF-8
    for deep in (False, True):
        check = mem.verify(repair=False, deep=deep)
        assert check.corrupt_rows == tuple(ids) and check.details[:2] == (
            f"row {ids[0]}: label {ids[0]:08d}.txt holds classes [], the index recorded [1]",
            f"row {ids[1]}: label {ids[1]:08d}.txt holds classes [0], the index recorded [1]")
        assert "not UTF-8" in check.details[2]
    mem.verify(repair=True, deep=False)
    assert mem.ids() == [] and all(folder(mem, i).is_dir() for i in ids)


def test_a_missing_image_keeps_the_label(mem):
    sid = mem.add(sample(4, origin=LabelOrigin.PSEUDO))
    mem.image_path(sid).unlink()
    report = mem.verify(repair=True)
    assert report.missing_rows == (sid,) and mem.ids() == []
    assert sorted(p.name for p in folder(mem, sid).iterdir()) == [f"{sid:08d}.txt", "sample.json"]
    meta = entry(mem, sid)
    assert (meta["kind"], meta["damaged_file"], meta["origin"]) == \
        ("missing", f"{sid:08d}.jpg", "pseudo")


def test_a_damaged_index_row_keeps_its_files_and_raw_values(tmp_path):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as m:
        ids = [m.add(sample(i, origin=LabelOrigin.OPERATOR)) for i in range(2)]
        label = m.label_path(ids[1]).read_bytes()
    conn = sqlite3.connect(root / "index.sqlite")
    conn.execute("UPDATE samples SET classes = 'garbage' WHERE id = ?", (ids[1],))
    conn.commit()
    conn.close()
    with ReplayMemory(root, cfg()) as m:
        assert m.last_verify.corrupt_rows == (ids[1],) and m.ids() == [ids[0]]
        where = folder(m, ids[1])
        assert (where / f"{ids[1]:08d}.txt").read_bytes() == label
        meta = entry(m, ids[1])
        assert (meta["id"], meta["classes"], meta["origin"], meta["source"]) == \
            (ids[1], "garbage", "operator", "cam1.jpg")
        assert meta["damaged_file"] == "index row"


def test_the_open_warning_names_a_few_quarantined_samples_then_a_count(tmp_path, caplog):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as m:
        ids = [m.add(sample(i, origin=LabelOrigin.OPERATOR)) for i in range(6)]
        for sid in ids[1:]:
            zero_fill(m.image_path(sid))
    with caplog.at_level(logging.WARNING, logger="edgecl.continual.memory.store"):
        with ReplayMemory(root, cfg()) as m:
            assert m.ids() == ids[:1]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "checked on open and repaired" in warning and "5 corrupt" in warning
    assert "5 damaged sample(s) quarantined: " in warning and "; and 2 more" in warning
    for sid in ids[1:4]:
        assert (f"sample {sid} (operator labels, source 'cam{sid - 1}.jpg'): image {sid:08d}.jpg"
                f" is not a complete JPEG") in warning
        assert f"kept in {root / 'quarantine' / f'{sid:08d}'}" in warning
    assert f"sample {ids[4]} (" not in warning  # beyond the first three: counted only
    assert sorted(p.name for p in (root / "quarantine").iterdir()) == \
        [f"{sid:08d}" for sid in ids[1:]]


def test_memory_verify_names_the_quarantined_sample(tmp_path, capsys):
    state = tmp_path / "state"
    with ReplayMemory(state / "memory", cfg(), names={0: "car", 1: "forklift"}) as m:
        m.add(sample(0))
        sid = m.add(sample(1, origin=LabelOrigin.OPERATOR))
        m.label_path(sid).write_bytes(b"")
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    where = state / "memory" / "quarantine" / f"{sid:08d}"
    assert f"dropped: row {sid}: label {sid:08d}.txt is empty" in out
    assert f"files kept in {where}" in out and "1 corrupt" in out
    assert (f"1 damaged sample(s) quarantined: sample {sid} (operator labels, source 'cam1.jpg'):"
            f" label {sid:08d}.txt is empty, the index recorded classes [1]; kept in {where}") in out


def test_the_quarantine_keeps_the_newest_samples(mem, monkeypatch):
    from edgecl.continual.memory import quarantine as q

    monkeypatch.setattr(q, "QUARANTINE_KEEP", 2)
    ids = [mem.add(sample(i)) for i in range(4)]
    pruned = []
    for sid in ids[:3]:  # damaged one at a time: quarantined in id order, oldest first
        zero_fill(mem.image_path(sid))
        pruned.append(mem.verify(repair=True).quarantine_pruned)
    assert pruned == [(), (), (ids[0],)]
    assert sorted(p.name for p in (mem.root / "quarantine").iterdir()) == \
        [f"{ids[1]:08d}", f"{ids[2]:08d}"]
    assert [entry(mem, i)["seq"] for i in ids[1:3]] == [2, 3]
    assert mem.ids() == [ids[3]]


def test_the_quarantine_bytes_are_bounded_and_the_newest_is_kept(mem, monkeypatch):
    from edgecl.continual.memory import quarantine as q

    # a budget of 1 byte (max_bytes // max_bytes): every quarantined sample but the newest goes
    monkeypatch.setattr(q, "QUARANTINE_SHARE", mem.cfg.max_bytes)
    ids = [mem.add(sample(i)) for i in range(4)]
    for sid in ids[:3]:
        zero_fill(mem.image_path(sid))
    report = mem.verify(repair=True)
    assert report.corrupt_rows == tuple(ids[:3]) and report.quarantine_pruned == tuple(ids[:2])
    assert "2 older quarantined sample(s) deleted over the quarantine's bound" in report.summary()
    assert [p.name for p in (mem.root / "quarantine").iterdir()] == [f"{ids[2]:08d}"]
    assert mem.ids() == [ids[3]] and mem.stats()["bytes"] == mem.records()[0].bytes


def test_a_failed_move_keeps_the_sample_and_says_so(mem, monkeypatch):
    from edgecl.continual.memory import quarantine as q

    sid = mem.add(sample(5, origin=LabelOrigin.OPERATOR))
    zero_fill(mem.image_path(sid))

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(q, "_move", refuse)
    report = mem.verify(repair=True)
    assert not report.ok and mem.ids() == [sid] and report.quarantined == ()
    assert mem.image_path(sid).exists() and mem.label_path(sid).read_text() == BOX_TEXT
    assert f"row {sid}: image {sid:08d}.jpg is not a complete JPEG" in report.unrepaired[0]
    assert "could not be moved to the quarantine (Permission denied" in report.unrepaired[0]
    monkeypatch.undo()
    assert mem.verify(repair=True).ok and mem.ids() == []
    assert (folder(mem, sid) / f"{sid:08d}.txt").read_text() == BOX_TEXT


def test_leftovers_of_an_interrupted_prune_or_entry_write_are_removed(mem):
    sid = mem.add(sample(6))
    zero_fill(mem.image_path(sid))
    mem.verify(repair=True)
    trash = mem.root / "quarantine" / ".trash-00000099"
    trash.mkdir()
    (trash / "00000099.jpg").write_bytes(b"x")
    temp = folder(mem, sid) / ".sample.json.abc123.tmp"
    temp.write_text("{")
    check = mem.verify(repair=False)
    assert check.temp_files == (str(temp),) and check.stale_snapshot_dirs == (str(trash),)
    assert mem.verify(repair=True).ok and not trash.exists() and not temp.exists()
    assert sorted(p.name for p in folder(mem, sid).iterdir()) == \
        [f"{sid:08d}.jpg", f"{sid:08d}.txt", "sample.json"]


CRASHER = """
import os, sys
from edgecl.continual.memory import ReplayMemory, quarantine, index
from edgecl.config import MemoryConfig
root, point = sys.argv[1], sys.argv[2]
calls = []
def die(*args, **kwargs):
    os._exit(137)
if point.startswith("move"):  # die before the n-th file move
    real = quarantine._move
    def move(src, dst):
        calls.append(src)
        if len(calls) == int(point[4:]):
            die()
        real(src, dst)
    quarantine._move = move
elif point == "commit":  # both files moved, row deleted, transaction not committed
    index.IndexDB.delete = lambda self, sid: (os._exit(137) if sid else None)
ReplayMemory(root, MemoryConfig(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.0,
                                policy="reservoir"))
print("survived")
"""


@pytest.mark.parametrize("point", ["move1", "move2", "commit"])
def test_a_kill_while_quarantining_leaves_the_sample_or_its_quarantined_copy(tmp_path, point):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as m:
        keep = m.add(sample(0))
        sid = m.add(sample(1, origin=LabelOrigin.OPERATOR))
        damaged = zero_fill(m.image_path(sid))
        names = (m.image_path(sid).name, m.label_path(sid).name)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent.parent))
    done = subprocess.run([sys.executable, "-c", CRASHER, str(root), point], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 137, done.stderr
    where = root / "quarantine" / f"{sid:08d}"
    conn = sqlite3.connect(root / "index.sqlite")
    rows = [r[0] for r in conn.execute("SELECT id FROM samples ORDER BY id")]
    conn.close()
    assert rows == [keep, sid]  # killed before the commit: the row is still there
    for name, sub in zip(names, ("images", "labels")):  # each file in exactly one place
        assert (root / sub / name).exists() != (where / name).exists(), name
    assert json.loads((where / "sample.json").read_text())["id"] == sid  # written first
    with ReplayMemory(root, cfg()) as m:  # the next open completes the move
        assert m.ids() == [keep] and m.last_verify.ok
        assert (where / names[0]).read_bytes() == damaged
        assert (where / names[1]).read_text() == BOX_TEXT
        meta = json.loads((where / "sample.json").read_text())
        assert meta["kind"] == "corrupt" and "not a complete JPEG" in meta["reason"]
        assert "not a complete JPEG" in m.last_verify.quarantined[0]
        assert m.verify(repair=False, deep=True).problems_found == 0


@pytest.mark.parametrize("which", ["images/00000001.jpg", "labels/00000001.txt"])
def test_a_sample_file_this_user_may_not_read_is_refused_not_quarantined(tmp_path, monkeypatch,
                                                                        which):
    """Files copied in as another user (chmod 000 here, as a user without root's override).
    Before: 'image 00000001.jpg is unreadable: Permission denied', and the sample went to the
    quarantine at the next open, out of the memory."""
    import builtins
    import errno

    from edgecl.continual.memory import verify
    from edgecl.errors import StorageError

    root = tmp_path / "memory"
    with ReplayMemory(root, cfg(), names={0: "car", 1: "forklift"}) as m:
        ids = [m.add(sample(s)) for s in range(2)]
    locked = root / which

    def no_access(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(verify, "open", no_access, raising=False)
    with pytest.raises(StorageError) as info:
        ReplayMemory(root, cfg())
    assert str(info.value) == (
        f"cannot read {locked}: Permission denied (a permission problem, not damage: give the "
        f"user running edgecl read access to the replay memory's files; nothing was moved)")
    assert not (root / "quarantine").exists()
    monkeypatch.undo()
    with ReplayMemory(root, cfg()) as m:
        assert m.ids() == ids
