"""The operator queue and very wide frames: JPEG's 65500-pixel side limit is a one-line refusal."""

import numpy as np
import pytest

from edgecl.errors import LabelError
from edgecl.frames import Detections, Frame
from edgecl.runtime.labels.queue import OperatorQueue


def _dets() -> Detections:
    return Detections(np.array([[0, 0, 10, 2]], np.float32), np.array([0.5], np.float32),
                      np.array([0], np.int64))


@pytest.mark.parametrize("shape", [(2, 70000, 3), (65501, 2, 3)])
def test_a_frame_over_jpegs_side_limit_is_refused_in_one_line(tmp_path, shape):
    queue = OperatorQueue(tmp_path / "labels", 10)
    frame = Frame(np.zeros(shape, np.uint8), 7, 0.0, "dir://scans")
    width, height = shape[1], shape[0]
    with pytest.raises(LabelError) as info:
        queue.push(frame, _dets(), priority=1.0)
    assert str(info.value) == (f"frame 7 from dir://scans: not queued, cannot be stored as JPEG "
                               f"({width}x{height} pixels: a side is over JPEG's limit of 65500 "
                               f"pixels)")
    assert queue.pending() == [] and not list((tmp_path / "labels").rglob("*.jpg"))


def test_a_frame_at_jpegs_side_limit_is_queued(tmp_path):
    queue = OperatorQueue(tmp_path / "labels", 10)
    item_id = queue.push(Frame(np.zeros((2, 65500, 3), np.uint8), 1, 0.0, "cam"), _dets())
    assert item_id is not None and queue.item(item_id)["width"] == 65500


def test_pending_items_are_parsed_once_until_their_file_changes(tmp_path, monkeypatch):
    """The console's live status reads the queue every second: 200 items were parsed each time
    (27 ms a call in a field soak). An item replaced on disk is read again."""
    import json

    import numpy as np

    from edgecl.atomic import atomic_write_json
    from edgecl.frames import Detections, Frame

    queue = OperatorQueue(tmp_path / "labels", 10)
    dets = Detections(np.array([[1, 1, 5, 5]], np.float32), np.array([0.5], np.float32),
                      np.array([0]))
    ids = [queue.push(Frame(np.full((8, 8, 3), i, np.uint8), i, float(i), "cam"), dets,
                      priority=0.1 * (i + 1)) for i in range(3)]
    parsed = []
    real = queue._read_meta
    monkeypatch.setattr(queue, "_read_meta", lambda path: parsed.append(path.name) or real(path))
    assert len(queue.pending()) == 3 and len(parsed) <= 3  # (pushes read the others already)
    parsed.clear()
    assert len(queue.pending()) == 3 and parsed == []
    assert len(OperatorQueue(tmp_path / "labels", 10).pending()) == 3  # another process: reads
    path = tmp_path / "labels" / "pending" / f"{ids[0]}.json"
    meta = json.loads(path.read_text())
    atomic_write_json(path, dict(meta, priority=0.95))
    assert queue.pending()[0]["id"] == ids[0] and queue.pending()[0]["priority"] == 0.95
    assert parsed == [f"{ids[0]}.json"]


def test_an_item_whose_image_is_deleted_or_damaged_after_it_was_read_is_no_longer_listed(
        tmp_path):
    """Before: an item's record, once read, was listed from the cache while only its record
    was unchanged: an image deleted or overwritten later stayed in the console's queue (which
    could not show it), while 'edgecl labels pending' (a fresh read) left it out."""
    queue = OperatorQueue(tmp_path / "labels", 10)
    ids = [queue.push(Frame(np.full((8, 8, 3), 40 * i, np.uint8), i, float(i), "cam"), _dets(),
                      priority=0.1 * (i + 1)) for i in range(3)]
    assert len(queue.pending()) == 3
    pending = tmp_path / "labels" / "pending"
    (pending / f"{ids[0]}.jpg").unlink()
    (pending / f"{ids[1]}.jpg").write_bytes(b"garbage\n")
    assert [item["id"] for item in queue.pending()] == [ids[2]]


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_queue_whose_state_directory_went_away_queues_nothing_at_the_old_path(tmp_path, how):
    """Before: a frame queued after the state directory was moved (or deleted) made
    STATE/labels/pending again at the old path and wrote the item there, in a new, empty state
    directory; a queue folder deleted inside its state directory is still made again."""
    import shutil

    state = tmp_path / "state"
    queue = OperatorQueue(state / "labels", 10)
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 1, 0.0, "cam")
    shutil.rmtree(state / "labels")
    assert queue.push(frame, _dets()) is not None
    if how == "moved":
        state.rename(tmp_path / "elsewhere")
    else:
        shutil.rmtree(state)
    with pytest.raises(FileNotFoundError, match="moved, replaced or deleted since it was opened"):
        queue.push(Frame(np.ones((8, 8, 3), np.uint8), 2, 0.0, "cam"), _dets())
    assert not state.exists()
    if how == "moved":
        assert len(OperatorQueue(tmp_path / "elsewhere" / "labels", 10).pending()) == 1
