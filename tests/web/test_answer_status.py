"""``POST /api/labels/ID`` answers every malformed answer body with one status, 422, and a
one-line ``{"error": ...}`` naming what is wrong and where (which box), whether the fault is
found in the body alone (types, keys, names, JSON) or against the item's frame (a box inverted,
empty or outside the frame): the real operator queue stands behind the hook here, so the
frame checks of :func:`edgecl.data.answers.boxes_to_labels` run as on a device. 404 (no such
item), 409 (already answered) and 415 (not sent as JSON) keep their meaning."""

import json
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))

from labels_fakes import FakeClasses, FakeMemory, dets, textured  # noqa: E402

from edgecl.frames import Frame  # noqa: E402
from edgecl.runtime.labels import OperatorQueue  # noqa: E402
from edgecl.web import ConsoleHooks, create_app  # noqa: E402

JSON = {"content-type": "application/json"}
CAR = {"class": "car", "xyxy": [20, 10, 60, 50]}  # inside the 200x100 frame of the item


@pytest.fixture()
def device(tmp_path):
    """``(client, queue, item id, memory)``: a queue holding one 200x100 frame, answered
    through the app as the runtime's hook answers it."""
    queue = OperatorQueue(tmp_path / "labels")
    item = queue.push(Frame(textured(0), 0, 0.0, "cam://0"), dets([0.5]), priority=0.5,
                      reasons={"uncertain": 0.8}, names={0: "car"})
    memory, classes = FakeMemory(), FakeClasses({0: "car"})

    def answer(item_id, boxes, skip):
        return queue.skip(item_id) if skip else queue.answer(item_id, boxes, memory, classes)

    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"}, answer=answer))
    return TestClient(app, raise_server_exceptions=False), queue, item, memory


def post(client, item: str, body: bytes, headers=JSON) -> tuple[int, str | None]:
    response = client.post(f"/api/labels/{item}", content=body, headers=headers)
    if response.status_code == 200:
        return 200, None
    data = response.json()
    assert set(data) == {"error"} and "\n" not in data["error"], data
    return response.status_code, data["error"]


def boxes(*items) -> bytes:
    return json.dumps({"boxes": list(items)}).encode()


BAD_BODIES = [
    # against the frame (found by the queue, behind the hook)
    ("inverted x", boxes(CAR, dict(CAR, xyxy=[60, 10, 20, 50])),
     ["box 1:", "x2 must exceed x1", "swapped"]),
    ("inverted y", boxes(dict(CAR, xyxy=[20, 50, 60, 10])), ["box 0:", "y2 < y1"]),
    ("zero width", boxes(dict(CAR, xyxy=[20, 10, 20, 50])), ["box 0:", "zero width"]),
    ("zero area", boxes(dict(CAR, xyxy=[20, 10, 20, 10])), ["box 0:", "zero width and height"]),
    ("partly outside", boxes(dict(CAR, xyxy=[140, 40, 230, 60])),
     ["box 0:", "lies partly outside the 200x100 frame"]),
    ("entirely outside", boxes(CAR, CAR, dict(CAR, xyxy=[300, 300, 400, 400])),
     ["box 2:", "lies entirely outside the 200x100 frame"]),
    ("under a pixel", boxes(dict(CAR, xyxy=[0.1, 0.1, 0.2, 0.2])),
     ["box 0:", "under one pixel", "normalised"]),
    ("too many new classes", boxes(*[dict(CAR, **{"class": f"new{k}"}) for k in range(11)]),
     ["box 10:", "more than 10 new class names"]),
    # in the body alone
    ("NaN", b'{"boxes": [{"class": "car", "xyxy": [20, 10, 60, 50]}, '
            b'{"class": "car", "xyxy": [NaN, 10, 60, 50]}]}',
     ["NaN is not a JSON number", "box 1", "xyxy[0]"]),
    ("Infinity", b'{"boxes": [{"class": "car", "xyxy": [20, 10, -Infinity, 50]}]}',
     ["-Infinity is not a JSON number", "box 0", "xyxy[2]"]),
    ("overflowing number", b'{"boxes": [{"class": "car", "xyxy": [20, 10, 1e999, 50]}]}',
     ["box 0: xyxy must be 4 finite numbers"]),
    ("huge integer", b'{"boxes": [{"class": "car", "xyxy": [20, 10, ' + b"9" * 5000 + b", 50]}]}",
     ["Exceeds the limit (4300 digits)", "box 0", "xyxy[2]"]),
    ("coordinate as text", boxes(dict(CAR, xyxy=["20", 10, 60, 50])),
     ["box 0: xyxy must be 4 finite numbers"]),
    ("three coordinates", boxes(dict(CAR, xyxy=[20, 10, 60])), ["box 0: xyxy must be 4"]),
    ("class as a number", boxes(dict(CAR, **{"class": 5})), ["box 0: class name must be text"]),
    ("score as text", boxes(dict(CAR, score="high")), ["box 0: score must be a finite number"]),
    ("box not an object", boxes(CAR, 5), ["box 1: must be an object"]),
    ("unknown box key", boxes(dict(CAR, colour="red")), ["box 0: unknown key(s) 'colour'"]),
    ("unknown answer key", json.dumps({"boxes": [], "note": "x"}).encode(),
     ["unknown key(s) 'note'"]),
    ("boxes not a list", json.dumps({"boxes": "car"}).encode(), ["boxes must be a JSON list"]),
    ("skip not a boolean", json.dumps({"skip": "yes"}).encode(), ["'skip' must be true or false"]),
    ("empty class name", boxes(CAR, dict(CAR, **{"class": "  "})),
     ["box 1: class name is empty"]),
    ("class name too long", boxes(dict(CAR, **{"class": "x" * 101})),
     ["box 0: class name", "longer than 100 characters"]),
    ("invisible class name", boxes(dict(CAR, **{"class": "car\u200b"})),
     ["box 0:", "invisible or direction-changing"]),
    ("too many boxes", boxes(*[CAR] * 1001), ["1001 boxes: at most 1000 per frame"]),
    ("not JSON", b'{"boxes": [}', ["request body is not JSON", "line 1 column 12"]),
    ("empty body", b"", ["request body is empty"]),
    ("not UTF-8", b'{"boxes": [{"class": "\xff", "xyxy": [1, 1, 5, 5]}]}',
     ["request body is not UTF-8 text (byte 0xff at offset 22)"]),
    ("UTF-16", '{"boxes": []}'.encode("utf-16"), ["request body looks like UTF-16"]),
    ("a key twice", b'{"skip": true, "skip": false}', ["key 'skip' given twice"]),
    ("skip false without boxes", b'{"skip": false}', ['needs "boxes"', '"nothing here"']),
    ("nested too deeply", b'{"boxes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     ["nested too deeply"]),
    ("a list", boxes(CAR)[len(b'{"boxes": '):-1], ['expected a JSON object', "got a list"]),
    ("a string", b'"car"', ["expected a JSON object", "got a string"]),
    ("null", b"null", ["expected a JSON object", "got null"]),
    ("a number", b"3", ["expected a JSON object", "got a number"]),
    ("an empty object", b"{}", ['an answer needs "boxes"']),
    ("skip beside boxes", json.dumps({"boxes": [CAR], "skip": True}).encode(),
     ['"skip": true with 1 box(es)']),
]


@pytest.mark.parametrize("body, words", [case[1:] for case in BAD_BODIES],
                         ids=[case[0] for case in BAD_BODIES])
def test_every_malformed_answer_is_422_with_one_line_naming_what_and_where(device, body, words):
    """Before: an inverted, empty or outside box (found against the frame) and a body that was
    not JSON were 400 while wrong types, keys and names were 422; a NaN did not say which box."""
    client, queue, item, memory = device
    status, error = post(client, item, body)
    assert status == 422, (status, error)
    assert all(word in error for word in words), error
    assert error.startswith(("invalid answer: ", "invalid request: ")), error
    assert memory.samples == [] and [p["id"] for p in queue.pending()] == [item], "nothing stored"


def test_the_statuses_that_are_not_about_the_content_keep_their_meaning(device):
    client, queue, item, memory = device
    assert post(client, item, b'{"boxes": []}', {"content-type": "text/plain"})[0] == 415
    status, error = post(client, "f9999", boxes(CAR))
    assert status == 404 and "no label item 'f9999'" in error
    assert post(client, item, boxes(CAR)) == (200, None)  # the same item answered right
    status, error = post(client, item, boxes(CAR))
    assert status == 409 and "already" in error
    assert len(memory.samples) == 1
