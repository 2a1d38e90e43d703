"""Correcting and removing stored samples: ``ReplayMemory.relabel`` and ``ReplayMemory.remove``."""

import errno
import os

import numpy as np
import pytest

from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory.index import IndexDB
from edgecl.errors import LabelError, ReplayMemoryError, StorageError
from edgecl.frames import LabelOrigin

BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
FIXED = np.array([[1, 0.25, 0.75, 0.5, 0.5], [0, 0.5, 0.5, 0.1, 0.1]], np.float32)


def cfg(**kw):
    base = dict(capacity=100, max_bytes=64 * 2**20, holdout_fraction=0.0, policy="reservoir",
                seed=3)
    base.update(kw)
    return MemoryConfig(**base)


def sample(i, origin=LabelOrigin.OPERATOR):
    image = np.full((16, 24, 3), (i * 37) % 250, np.uint8)
    return Sample(image, BOX, task="stream", source=f"operator:item{i}", origin=origin,
                  content_hash=f"{i:016x}")


def files(memory):
    return sorted(p.name for sub in ("images", "labels") for p in (memory.root / sub).iterdir())


def test_relabel_gives_a_new_id_same_image_and_the_new_labels(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(), names={0: "car", 1: "truck"}) as m:
        first, second = m.add(sample(1)), m.add(sample(2))
        image_bytes = m.image_path(first).read_bytes()
        m.update_recall([first], [0.5])
        new = m.relabel(first, FIXED)
        assert new == 3 and m.ids() == [second, 3]  # the next id: learnt as new
        assert m.image_path(new).read_bytes() == image_bytes  # the stored JPEG, not re-encoded
        (rec,) = m.records([new])
        assert rec.classes == (0, 1) and rec.source == "operator:item1"
        assert (rec.width, rec.height) == (24, 16) and rec.last_recall is None
        assert rec.origin is LabelOrigin.OPERATOR
        np.testing.assert_allclose(m.get([new])[0].labels, FIXED)
        assert m.find_content(f"{1:016x}") == new  # the content hash moves with it
        assert files(m) == ["00000002.jpg", "00000002.txt", "00000003.jpg",
                            "00000003.txt"]
        assert m.verify(repair=False).ok
        assert m.stats()["per_class"] == {"0": 2, "1": 1}


def test_relabel_keeps_the_held_out_flag_and_makes_a_pseudo_label_verified(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg(holdout_fraction=0.5, holdout_block_s=0)) as m:
        ids = [m.add(sample(i)) for i in range(8)]
        held = [r.id for r in m.records() if r.held_out]
        assert held, "the memory held nothing out"
        new = m.relabel(held[0], FIXED)
        assert m.records([new])[0].held_out  # never trained on: stays an evaluation sample
        pseudo = m.add(sample(20, LabelOrigin.PSEUDO))
        new_pseudo = m.relabel(pseudo, FIXED[:1])
        assert m.records([new_pseudo])[0].origin is LabelOrigin.OPERATOR
        assert len(m) == len(ids) + 1


def test_relabel_refuses_unknown_ids_bad_rows_and_a_pseudo_origin(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        sid = m.add(sample(1))
        with pytest.raises(ReplayMemoryError, match="has no sample 9 "):
            m.relabel(9, FIXED)
        with pytest.raises(LabelError):
            m.relabel(sid, np.array([[0, 0.5, 0.5, 2.0, 0.5]], np.float32))
        with pytest.raises(ReplayMemoryError, match="not from the model"):
            m.relabel(sid, FIXED, LabelOrigin.PSEUDO)
        assert m.ids() == [sid] and files(m) == ["00000001.jpg", "00000001.txt"]


def test_a_full_disk_while_relabelling_keeps_the_old_sample(tmp_path, monkeypatch):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        sid = m.add(sample(1))
        real_insert = IndexDB.insert

        def full(self, values):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(IndexDB, "insert", full)
        with pytest.raises(StorageError, match="cannot relabel sample 1.*kept as it was"):
            m.relabel(sid, FIXED)
        monkeypatch.setattr(IndexDB, "insert", real_insert)
        assert m.ids() == [sid] and files(m) == ["00000001.jpg", "00000001.txt"]
        np.testing.assert_allclose(m.get([sid])[0].labels, BOX)
        assert m.verify(repair=False).ok


def test_a_file_left_by_a_killed_relabel_does_not_block_the_next(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        sid = m.add(sample(1))
        (m.root / "images" / "00000002.jpg").write_bytes(b"half")  # a kill before commit
        new = m.relabel(sid, FIXED)
        assert new == 2 and m.verify(repair=False).ok


def test_remove_is_all_or_nothing_and_leaves_a_consistent_memory(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        ids = [m.add(sample(i)) for i in range(3)]
        snap = m.snapshot()  # a round's training view keeps its own links
        with pytest.raises(ReplayMemoryError, match=r"no sample id\(s\) \[7\].*nothing was removed"):
            m.remove([ids[0], 7])
        assert m.ids() == ids
        assert m.remove([ids[0], ids[0], ids[2]]) == [ids[0], ids[2]]
        assert m.ids() == [ids[1]] and files(m) == ["00000002.jpg", "00000002.txt"]
        assert m.snapshot_copies(ids[0]) == 1 and m.snapshot_copies(ids[1]) == 1
        assert os.path.exists(snap.image_paths([ids[0]])[0])
        assert m.verify(repair=False).ok
        assert m.add(sample(0)) == 4  # removed content may be stored again; ids never reused


def test_remove_names_how_many_ids_are_not_stored(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        m.add(sample(1))
        with pytest.raises(ReplayMemoryError, match=r"\[2, 3, 4, 5, 6\] and 2 more"):
            m.remove(list(range(1, 9)))
        with pytest.raises(ReplayMemoryError, match=r"\[36893488147419103232\]"):
            m.remove([2**65])  # too large for the index: not stored, not an internal error
        assert m.ids() == [1]
