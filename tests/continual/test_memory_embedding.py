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
        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(m._db, "embeddings", broken)
        with pytest.raises(EdgeclError) as err:
            m.embeddings()
        assert "memory index" in str(err.value)


def test_values_outside_minus_one_to_one_count_as_damaged_and_are_computed_again(tmp_path):
    root = tmp_path / "m"
    with ReplayMemory(root, cfg()) as m:
        first = m.add(Sample(scene(1), BOX, task="t0"))
    huge = np.full(256, 65504.0, np.float32)            # finite float16, but no thumbnail's
    assert embedding_from_blob(embedding_to_blob(huge)) is None
    db = sqlite3.connect(root / "index.sqlite")
    db.execute("UPDATE samples SET embedding = ?", (embedding_to_blob(huge),))
    db.commit()
    db.close()
    with ReplayMemory(root, cfg()) as m:
        ids, matrix = m.embeddings()
    assert ids.tolist() == [first] and np.abs(matrix).max() <= 1.0
    assert embedding_distance(matrix[0], thumbnail_embedding(scene(1))) < 0.01


def test_the_index_reads_a_value_of_another_size_or_type_as_missing_inside_sqlite(tmp_path):
    root = tmp_path / "m"
    with ReplayMemory(root, cfg()) as m:
        ids = [m.add(Sample(scene(s), BOX, task="t0")) for s in (1, 2, 3, 4)]
    db = sqlite3.connect(root / "index.sqlite")
    db.execute("UPDATE samples SET embedding = zeroblob(5000000) WHERE id = ?", (ids[0],))
    db.execute("UPDATE samples SET embedding = ? WHERE id = ?", ("x" * 512, ids[1]))
    db.execute("UPDATE samples SET embedding = 12345 WHERE id = ?", (ids[2],))
    db.commit()
    db.close()
    with ReplayMemory(root, cfg(), verify_on_open=False) as m, m._db.read():
        rows = [row for chunk in m._db.embeddings(chunk=3) for row in chunk]
    assert [i for i, _ in rows] == ids
    assert [blob for _, blob in rows[:3]] == [None, None, None]  # the 5 MB value never read
    assert len(rows[3][1]) == EMBEDDING_BLOB_BYTES


def test_embeddings_after_an_id_reads_only_the_samples_stored_since(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        ids = [m.add(Sample(scene(s), BOX, task="t0")) for s in (1, 2, 3)]
        got, matrix = m.embeddings(after_id=ids[0])
        assert got.tolist() == ids[1:] and matrix.shape == (2, 256)
        assert embedding_distance(matrix[1], thumbnail_embedding(scene(3))) < 0.01
        assert m.embeddings(after_id=ids[-1])[0].tolist() == []


def test_an_older_memory_stores_its_computed_embeddings_in_batches_and_says_how_long(
        tmp_path, monkeypatch, caplog):
    from edgecl.continual.memory import store

    root = tmp_path / "m"
    write_old_memory(root, 5)
    monkeypatch.setattr(store, "EMBEDDING_STORE_BATCH", 2)
    monkeypatch.setattr(store, "EMBEDDING_LOG_MIN", 3)
    caplog.set_level("INFO")
    with ReplayMemory(root, cfg()) as m:
        batches = []
        real = m._db.set_embeddings
        monkeypatch.setattr(m._db, "set_embeddings",
                            lambda values: batches.append(len(values)) or real(values))
        assert m.embeddings()[0].tolist() == [1, 2, 3, 4, 5]
    assert batches == [2, 2, 1]        # a start stopped half-way keeps what it computed
    assert "computing the thumbnail embeddings of 5 stored samples" in caplog.text
    assert "5 thumbnail embeddings computed in" in caplog.text


def test_an_unreadable_image_is_left_out_with_one_warning_and_an_evicted_one_silently(
        tmp_path, caplog):
    root = tmp_path / "m"
    write_old_memory(root, 3)
    with ReplayMemory(root, cfg(), verify_on_open=False) as m:
        m.image_path(2).write_bytes(b"not a jpeg")
        m.image_path(3).unlink()                        # evicted by another process meanwhile
        ids, _ = m.embeddings()
    assert ids.tolist() == [1]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "1 stored image(s) cannot be read" in warnings[0].getMessage()
    assert "00000002" in warnings[0].getMessage()


def test_an_index_replaced_while_open_is_reopened_with_one_warning(tmp_path, caplog):
    root = tmp_path / "m"
    m = ReplayMemory(root, cfg(), names={0: "car"})
    m.add(Sample(scene(1), BOX, task="t0"))
    root.rename(tmp_path / "moved")
    with ReplayMemory(root, cfg()) as other:            # a memory restored from a copy
        other.add(Sample(scene(2), BOX, task="t0"))
        other.add(Sample(scene(3), BOX, task="t0"))
    assert m.change_signature() == (2, 2)               # reads the memory now there
    new = m.add(Sample(scene(4), BOX, task="t0"))
    assert new == 3 and len(m) == 3 and m.image_path(new).is_file()
    assert m.class_names() == {0: "car"}                # kept: the memory there had none
    m.close()
    assert caplog.text.count("was replaced or deleted while this process had it open") == 1
    with ReplayMemory(root, cfg()) as again:            # and the next start takes it as is
        assert again.ids() == [1, 2, 3] and again.last_verify.ok


def test_a_memory_deleted_while_open_starts_again_empty_and_the_next_start_works(tmp_path):
    import shutil

    root = tmp_path / "m"
    m = ReplayMemory(root, cfg())
    for s in (1, 2):
        m.add(Sample(scene(s), BOX, task="t0"))
    shutil.rmtree(root)
    assert m.add(Sample(scene(3), BOX, task="t0")) == 1
    assert m.ids() == [1] and m.change_signature() == (1, 1)
    m.close()
    with ReplayMemory(root, cfg()) as again:             # before: refused, 1 sample on disk
        assert again.ids() == [1]                         # but its index missing


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_memory_whose_state_directory_went_away_stores_nothing_at_the_old_path(tmp_path, how):
    """Before: the store made STATE/memory again at the old path and wrote the sample's files
    there, while its open index, moved with the state directory, took the row: the moved memory
    named a sample it did not hold, and the old path held files no index named."""
    import shutil

    from edgecl.errors import StorageError

    state = tmp_path / "state"
    m = ReplayMemory(state / "memory", cfg(), names={0: "car"})
    m.add(Sample(scene(1), BOX, task="t0"))
    if how == "moved":
        state.rename(tmp_path / "elsewhere")
    else:
        shutil.rmtree(state)
    with pytest.raises(StorageError, match=f"the folder holding the replay memory, {state}, was "
                                           f"moved, replaced or deleted since it was opened"):
        m.add(Sample(scene(2), BOX, task="t0"))
    assert not state.exists()
    state.mkdir()          # a new, empty state directory at the old path: not the memory's home
    with pytest.raises(StorageError, match="moved, replaced or deleted since it was opened"):
        m.add(Sample(scene(3), BOX, task="t0"))
    m.close()
    assert list(state.iterdir()) == []
    if how == "moved":
        with ReplayMemory(tmp_path / "elsewhere" / "memory", cfg()) as moved:
            assert moved.ids() == [1] and moved.last_verify.ok


def test_a_sample_folder_deleted_while_open_is_made_again(tmp_path):
    import shutil

    root = tmp_path / "m"
    m = ReplayMemory(root, cfg())
    m.add(Sample(scene(1), BOX, task="t0"))
    shutil.rmtree(root / "labels")
    assert m.add(Sample(scene(2), BOX, task="t0")) == 2
    assert m.label_path(2).is_file()
    m.close()


def test_a_lost_index_while_open_refuses_to_store_and_keeps_reading(tmp_path):
    from edgecl.errors import StorageError

    root = tmp_path / "m"
    m = ReplayMemory(root, cfg())
    m.add(Sample(scene(1), BOX, task="t0"))
    for path in root.glob("index.sqlite*"):
        path.unlink()
    with pytest.raises(StorageError, match="holds 1 samples on disk but its index"):
        m.add(Sample(scene(2), BOX, task="t0"))
    assert sorted(p.name for p in (root / "images").iterdir()) == ["00000001.jpg"]
    assert m.change_signature() == (1, 1)                # the index open is still read
    m.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_an_index_without_the_embedding_column_gets_them_from_its_images(tmp_path, read_only):
    root = tmp_path / "m"
    write_old_memory(root, 2)
    db = sqlite3.connect(root / "index.sqlite")         # as a release before the column wrote it
    db.execute("ALTER TABLE samples DROP COLUMN embedding")
    db.commit()
    db.close()
    with ReplayMemory(root, cfg(), read_only=read_only) as m:
        ids, matrix = m.embeddings()
    assert ids.tolist() == [1, 2]
    assert embedding_distance(matrix[1], thumbnail_embedding(scene(2))) < 0.01
    columns = [r[1] for r in sqlite3.connect(root / "index.sqlite").execute(
        "PRAGMA table_info(samples)")]
    assert ("embedding" in columns) is not read_only    # a read-only one is left as it was


def test_a_large_frame_is_subsampled_first_and_stays_close_to_the_full_average():
    import cv2

    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8), (15, 15), 5)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    full = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    full = (full - full.mean()).ravel()
    assert embedding_distance(thumbnail_embedding(frame), full) < 0.005
    small = frame[:120, :160]                       # shorter side under 128: not subsampled
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    exact = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    assert embedding_distance(thumbnail_embedding(small), (exact - exact.mean()).ravel()) < 0.002


def test_shifted_distance_finds_a_scene_moved_by_whole_cells_and_is_never_above_plain():
    from edgecl.continual.memory.embedding import distances_to, shifted_distances

    rng = np.random.default_rng(3)
    wide = rng.random((16, 18))                 # a scene two cells wider than the thumbnail
    a = wide[:, :16] - wide[:, :16].mean()
    b = wide[:, 1:17] - wide[:, 1:17].mean()    # the camera moved one cell to the right
    c = wide[:, 2:18] - wide[:, 2:18].mean()    # two cells
    other = rng.random((16, 16))
    other -= other.mean()
    rows = np.stack([b, c, other]).reshape(3, -1).astype(np.float32)
    emb = a.reshape(-1).astype(np.float32)
    plain = distances_to(rows, emb)
    shifted = shifted_distances(rows, emb)
    # over the overlap the two views are the same pixels: 0 at the right shift
    assert shifted[0] == pytest.approx(0.0, abs=1e-6) and shifted[1] == pytest.approx(0.0, abs=1e-6)
    assert plain[0] > 0.2 and plain[1] > 0.2   # uniform noise: about 0.41 apart when unaligned
    assert shifted[2] > 0.2                     # another scene stays far at every shift
    assert np.all(shifted <= plain + 1e-12)
    assert shifted_distances(rows, emb, max_shift_cells=0) == pytest.approx(plain)
    assert shifted_distances(rows, emb, max_shift_cells=1)[1] > 0.2  # two cells need two
    assert shifted_distances(np.zeros((0, 256), np.float32), emb).shape == (0,)
