"""``edgecl labels answer ID --boxes FILE`` with bad files: read by the rule the console's API uses,
one error line naming the file, exit 2, the item still pending and nothing stored."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.continual.memory import ReplayMemory
from edgecl.frames import Detections, Frame
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from labels_fakes import textured  # noqa: E402

CAR = {"class": "car", "xyxy": [20, 10, 60, 50]}


@pytest.fixture()
def state(tmp_path):
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    dets = Detections(np.array([[20, 10, 60, 50]], np.float32), np.array([0.5], np.float32),
                      np.array([0]))
    item = OperatorQueue(state / "labels").push(Frame(textured(0), 0, 0.0, "cam://0"), dets,
                                                priority=0.5, reasons={"uncertain": 0.9},
                                                names={0: "car"})
    return state, item


def answer(capsys, state, content: bytes):
    root, item = state
    boxes = root.parent / "boxes.json"
    boxes.write_bytes(content)
    code = main(["labels", "answer", item, "--boxes", str(boxes), "--state-dir", str(root)])
    out = capsys.readouterr()
    return code, out.out, out.err, str(boxes)


def stored(root) -> int:
    if not (root / "memory").exists():
        return 0
    with ReplayMemory(root / "memory") as memory:
        return len(memory.records())


@pytest.mark.parametrize("content, match", [
    (b'{"skip": true, "skip": false}', "is not usable JSON: key 'skip' given twice in one object"),
    (b'[{"class": "car", "class": "boat", "xyxy": [20, 10, 60, 50]}]', "key 'class' given twice"),
    (json.dumps({"boxes": [CAR], "skip": True}).encode(), ': "skip": true with 1 box(es)'),
    (json.dumps([CAR]).encode("utf-16"), "looks like UTF-16 text: send it as UTF-8"),
    (b'[{"class": "car", "xyxy": [NaN, 10, 60, 50]}]', "NaN is not a JSON number"),
    (b"", "is empty"),
    (json.dumps([dict(CAR, score="high")]).encode(), "box 0: score must be a finite number or null"),
    (json.dumps([dict(CAR, xyxy=[20, 10, 999, 50])]).encode(),
     ": box 0: [20.0, 10.0, 999.0, 50.0] lies partly outside the 200x100 frame"),
])
def test_a_bad_boxes_file_is_one_line_naming_it_and_changes_nothing(state, capsys, content,
                                                                   match):
    """Before: a key given twice took its last value (``{"skip": true, "skip": false}`` stored
    the frame as "nothing here", a box's second "class" replaced its first), skip true beside
    boxes skipped the item, a UTF-16 file read as "'utf-8' codec can't decode byte 0xff", and
    a box outside the frame did not name the file."""
    root, item = state
    code, _, err, path = answer(capsys, state, content)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: boxes file {path}") and match in err, err
    assert [p["id"] for p in OperatorQueue(root / "labels").pending()] == [item]
    assert stored(root) == 0


def test_a_utf8_bom_file_and_duplicate_boxes_are_taken(state, capsys):
    """A file saved by an editor that writes a byte-order mark is read; the same box twice is
    stored once."""
    root, _ = state
    content = b"\xef\xbb\xbf" + json.dumps([CAR, CAR, dict(CAR, **{"class": "Car"})]).encode()
    code, out, err, _ = answer(capsys, state, content)
    assert code == 0 and "with 1 box(es)" in out, err
    assert stored(root) == 1


def test_a_boxes_file_that_is_a_device_or_a_pipe_is_refused_unread(state, capsys, tmp_path):
    """Before: --boxes /dev/zero read without limit (24 GB resident, then the kernel's OOM
    kill), later up to a 2 MiB bound ("is over 2 MiB"), and a named pipe was waited on for
    ever; the bound is now the server's for the same answer (1 MiB)."""
    import os

    root, item = state
    code = main(["labels", "answer", item, "--boxes", "/dev/zero", "--state-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err == ("error: boxes file /dev/zero: a device, not a regular file (a "
                                 "boxes file must be one)\n")
    os.mkfifo(tmp_path / "boxes.json")
    code = main(["labels", "answer", item, "--boxes", str(tmp_path / "boxes.json"),
                 "--state-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: boxes file {tmp_path / 'boxes.json'}: a named pipe "
                                 f"(FIFO), not a regular file (a boxes file must be one)\n")
