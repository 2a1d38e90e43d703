"""``GET /api/labels/answered``, ``POST /api/labels/ID/correct`` and ``POST /api/labels/ID/withdraw``:
a wrong answer is put right over HTTP, with the real operator queue, replay memory and class
registry behind the hooks (as the runtime builds them)."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))

from labels_fakes import dets, textured  # noqa: E402

from edgecl.continual.memory import ReplayMemory  # noqa: E402
from edgecl.frames import Frame  # noqa: E402
from edgecl.models.classes import ClassRegistry  # noqa: E402
from edgecl.runtime.labels import OperatorQueue  # noqa: E402
from edgecl.web import ConsoleHooks, create_app  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture()
def device(tmp_path):
    """``(client, memory, [item ids])``: two 200x100 frames answered with one ``car`` box."""
    classes = ClassRegistry(tmp_path)
    classes.seed({0: "car"})
    queue = OperatorQueue(tmp_path / "labels")
    memory = ReplayMemory(tmp_path / "memory", names={0: "car"})
    items = [queue.push(Frame(textured(i), i, float(i), "cam://0"), dets([0.5]), priority=0.5,
                        names={0: "car"}) for i in range(2)]
    for item in items:
        queue.answer(item, [{"class": "car", "xyxy": [20, 10, 60, 50]}], memory, classes)
    app = create_app(ConsoleHooks(
        health=lambda: {"status": "ok"}, label_image=queue.image_path,
        answers=lambda: queue.answers(memory, classes),
        answered_image=lambda i: queue.answered_image_path(i, memory),
        correct=lambda i, boxes: queue.correct(i, boxes, memory, classes),
        withdraw=lambda i: queue.withdraw(i, memory)))
    yield TestClient(app, raise_server_exceptions=False), memory, items
    memory.close()


def test_answered_lists_answers_and_serves_their_stored_images(device):
    client, memory, items = device
    response = client.get("/api/labels/answered")
    assert response.status_code == 200
    listed = response.json()
    assert [a["id"] for a in listed] == items[::-1] and [a["sample"] for a in listed] == [2, 1]
    assert listed[0]["boxes"] == [{"class": "car", "xyxy": [20.0, 10.0, 60.0, 50.0]}]
    image = client.get(f"/api/labels/{items[0]}/image")
    assert image.status_code == 200 and image.content == memory.image_path(1).read_bytes()
    decoded = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (100, 200, 3)


def test_correct_replaces_the_boxes_and_withdraw_removes_the_sample(device):
    client, memory, items = device
    body = {"boxes": [{"class": "van", "xyxy": [30, 20, 90, 70]}]}
    response = client.post(f"/api/labels/{items[1]}/correct", content=json.dumps(body),
                           headers=JSON)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["replaced"] == 2 and out["sample"] == 3 and out["classes_added"] == ["van"]
    np.testing.assert_allclose(memory.get([3])[0].labels,
                               [[1, 60 / 200, 45 / 100, 60 / 200, 50 / 100]], atol=1e-5)
    first = client.get("/api/labels/answered").json()[0]
    assert first["id"] == items[1] and first["corrected"] == 1
    assert first["boxes"] == [{"class": "van", "xyxy": [30.0, 20.0, 90.0, 70.0]}]
    response = client.post(f"/api/labels/{items[0]}/withdraw")
    assert response.status_code == 200 and response.json()["sample"] == 1
    assert memory.ids() == [3]
    assert [a["id"] for a in client.get("/api/labels/answered").json()] == [items[1]]


def test_a_correction_that_changes_nothing_keeps_its_sample(device):
    """Before: saving an answer again as it was gave it a new sample id each time ("sample":
    34, "replaced": 32, then 35 and 34), counted as new data towards the next round."""
    client, memory, items = device
    body = {"boxes": [{"class": "car", "xyxy": [20.4, 10, 60, 50.3]}]}  # as stored (rounding)
    response = client.post(f"/api/labels/{items[0]}/correct", content=json.dumps(body),
                           headers=JSON)
    assert response.status_code == 200, response.text
    out = response.json()
    assert (out["sample"], out["replaced"], out["unchanged"], out["boxes"]) == (1, None, True, 1)
    assert memory.ids() == [1, 2]
    entry = next(a for a in client.get("/api/labels/answered").json() if a["id"] == items[0])
    assert entry["sample"] == 1 and not entry.get("corrected")
    moved = {"boxes": [{"class": "car", "xyxy": [21, 10, 60, 50]}]}  # a 1 px nudge: a correction
    out = client.post(f"/api/labels/{items[0]}/correct", content=json.dumps(moved),
                      headers=JSON).json()
    assert out["replaced"] == 1 and out["sample"] == 3 and "unchanged" not in out


@pytest.mark.parametrize("body, status, words", [
    ({"boxes": [{"class": "car", "xyxy": [60, 10, 20, 50]}]}, 422, ["box 0:", "x2 must exceed"]),
    ({"boxes": [{"class": "car", "xyxy": [150, 10, 260, 50]}]}, 422,
     ["outside the 200x100 frame"]),
    ({"skip": True}, 422, ["a correction gives boxes", "/withdraw"]),
    ({"boxes": "car"}, 422, ["boxes"]),
    ({"skip": False}, 422, ['needs "boxes"']),  # before: stored as "nothing here"
])
def test_a_bad_correction_is_one_line_and_changes_nothing(device, body, status, words):
    client, memory, items = device
    response = client.post(f"/api/labels/{items[0]}/correct", content=json.dumps(body),
                           headers=JSON)
    error = response.json()["error"]
    assert response.status_code == status and "\n" not in error
    assert all(w in error for w in words), error
    assert memory.ids() == [1, 2]


def test_ids_that_name_no_answer_are_404_or_409(device, tmp_path):
    client, _memory, items = device
    car = json.dumps({"boxes": []})
    assert client.post("/api/labels/nope/correct", content=car, headers=JSON).status_code == 404
    assert client.post("/api/labels/nope/withdraw").status_code == 404
    assert client.post("/api/labels/..%2Fx/withdraw").status_code == 404
    assert client.post(f"/api/labels/{items[0]}/withdraw").status_code == 200
    again = client.post(f"/api/labels/{items[0]}/withdraw")
    assert again.status_code == 409 and "withdrawn" in again.json()["error"]
    assert client.get(f"/api/labels/{items[0]}/image").status_code == 409
    late = client.post(f"/api/labels/{items[0]}/correct", content=car, headers=JSON)
    assert late.status_code == 409
    wrong_type = client.post(f"/api/labels/{items[1]}/correct", content=car,
                             headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415


def test_a_correction_looks_its_item_up_before_reading_its_boxes(device, monkeypatch):
    """An unknown or withdrawn item is 404 / 409 before the body is read (before: every box was
    parsed first; 1,000 boxes of long names cost most of a second of the interpreter)."""
    from edgecl.web import app as app_mod

    client, _memory, items = device
    parsed = []
    real = app_mod._parse_answer_body
    monkeypatch.setattr(app_mod, "_parse_answer_body",
                        lambda *a, **k: parsed.append(1) or real(*a, **k))
    bad = b'{"boxes": "not boxes"}'
    assert client.post("/api/labels/nope/correct", content=bad, headers=JSON).status_code == 404
    assert client.post(f"/api/labels/{items[0]}/withdraw").status_code == 200
    late = client.post(f"/api/labels/{items[0]}/correct", content=bad, headers=JSON)
    assert late.status_code == 409 and "withdrawn" in late.json()["error"]
    assert parsed == []
    shown = client.post(f"/api/labels/{items[1]}/correct", content=bad, headers=JSON)
    assert shown.status_code == 422 and parsed == [1]


def test_a_runtime_without_corrections_says_so():
    client = TestClient(create_app(ConsoleHooks(health=lambda: {"status": "ok"})),
                        raise_server_exceptions=False)
    response = client.post("/api/labels/f0001/withdraw")
    assert response.status_code == 404 and "not available" in response.json()["error"]
    assert client.get("/api/labels/answered").json() == []
