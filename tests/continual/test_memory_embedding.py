"""The thumbnail embedding each stored sample keeps, for the novelty policy."""

import sqlite3

import numpy as np
import pytest

from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory.embedding import (
    EMBEDDING_BLOB_BYTES,
    embedding_distance,
    embedding_from_blob,
    embedding_to_blob,
    thumbnail_embedding,
)
from edgecl.data.images import read_image
from edgecl.errors import EdgeclError

BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)


def cfg(**kw):
    return MemoryConfig(**{**dict(capacity=1000, max_bytes=64 * 2**20, holdout_fraction=0.0,
                                  policy="reservoir", seed=3), **kw})


def write_old_memory(root, n):
    """A memory as the release before embeddings wrote it: ids 1..n, no embedding stored."""
    with ReplayMemory(root, cfg()) as m:
        for s in range(1, n + 1):
            m.add(Sample(scene(s), BOX, task="t0"))
    db = sqlite3.connect(root / "index.sqlite")
    db.execute("UPDATE samples SET embedding = NULL")
    db.commit()
    db.close()


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))


def test_blob_round_trip_and_damaged_values():
    emb = thumbnail_embedding(scene(1))
    blob = embedding_to_blob(emb)
    assert len(blob) == EMBEDDING_BLOB_BYTES == 512
    assert np.abs(embedding_from_blob(blob) - emb).max() < 1e-3     # float16 on disk
    assert embedding_from_blob(blob[:-2]) is None
    assert embedding_from_blob(None) is None and embedding_from_blob("x" * 512) is None
    nan = np.full(256, np.nan, np.float32)
    assert embedding_from_blob(embedding_to_blob(nan)) is None


def test_add_stores_the_embedding_of_the_image_as_given(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        ids = [m.add(Sample(scene(s), BOX, task="t0")) for s in (1, 2)]
        got_ids, matrix = m.embeddings()
    assert got_ids.tolist() == ids and matrix.shape == (2, 256) and matrix.dtype == np.float32
    for row, s in zip(matrix, (1, 2)):
        assert embedding_distance(row, thumbnail_embedding(scene(s))) < 1e-3


def test_an_old_memory_gets_embeddings_from_its_images_once(tmp_path):
    root = tmp_path / "m"
    write_old_memory(root, 3)
    with ReplayMemory(root, cfg()) as m:
        ids, matrix = m.embeddings()
        assert ids.tolist() == [1, 2, 3]
        want = [thumbnail_embedding(read_image(m.image_path(i))) for i in (1, 2, 3)]
        assert np.abs(matrix - np.stack(want)).max() == 0.0
    stored = sqlite3.connect(root / "index.sqlite").execute(
        "SELECT id, embedding FROM samples ORDER BY id").fetchall()
    assert [i for i, _ in stored] == [1, 2, 3]
    assert all(len(blob) == EMBEDDING_BLOB_BYTES for _, blob in stored)


def test_a_damaged_embedding_is_computed_again_and_an_unreadable_image_left_out(tmp_path):
    root = tmp_path / "m"
    with ReplayMemory(root, cfg()) as m:
        ids = [m.add(Sample(scene(s), BOX, task="t0")) for s in (1, 2, 3)]
        m.image_path(ids[2]).write_bytes(b"not a jpeg")
    db = sqlite3.connect(root / "index.sqlite")
    db.execute("UPDATE samples SET embedding = ? WHERE id IN (?, ?)", (b"\x00" * 7, ids[1], ids[2]))
    db.commit()
    db.close()
    with ReplayMemory(root, cfg(), verify_on_open=False) as m:
        got, matrix = m.embeddings()
        assert got.tolist() == ids[:2]
        assert embedding_distance(matrix[1], thumbnail_embedding(scene(2))) < 0.01


def test_a_read_only_memory_computes_but_stores_nothing(tmp_path):
    root = tmp_path / "m"
    write_old_memory(root, 2)
    with ReplayMemory(root, cfg(), read_only=True) as m:
        ids, matrix = m.embeddings()
        assert ids.tolist() == [1, 2] and np.isfinite(matrix).all()
    stored = sqlite3.connect(root / "index.sqlite").execute(
        "SELECT embedding FROM samples").fetchall()
    assert stored == [(None,), (None,)]


def test_a_full_disk_while_storing_embeddings_still_returns_them(tmp_path, monkeypatch, caplog):
    root = tmp_path / "m"
    write_old_memory(root, 2)
    with ReplayMemory(root, cfg()) as m:
        def full(values):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(m._db, "set_embeddings", full)
        ids, matrix = m.embeddings()
        assert ids.tolist() == [1, 2] and matrix.shape == (2, 256)
    assert "computed again next time" in caplog.text


def test_change_signature_follows_adds_and_removals(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        assert m.change_signature() == (0, 0)
        first = m.add(Sample(scene(1), BOX, task="t0"))
        m.add(Sample(scene(2), BOX, task="t0"))
        assert m.change_signature() == (2, 2)
    with ReplayMemory(tmp_path / "m", cfg(capacity=1)) as m:   # a smaller bound evicts one
        assert m.change_signature() == (1, 2) and len(m.ids()) == 1
        assert m.embeddings()[0].tolist() == m.ids() and set(m.ids()) <= {first, 2}


def test_the_index_read_failing_is_one_storage_error(tmp_path, monkeypatch):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        def broken():
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(m._db, "embeddings", broken)
        with pytest.raises(EdgeclError) as err:
            m.embeddings()
        assert "memory index" in str(err.value)
