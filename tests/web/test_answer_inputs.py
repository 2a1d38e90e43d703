"""``POST /api/labels/ID`` with bad input: read by the rule ``edgecl labels answer`` uses, every
fault a one-line JSON error with its status (415 not sent as UTF-8 JSON, 422 not JSON or not an
answer), no hook run, and the same request done right still works."""

import json

import pytest
from fastapi.testclient import TestClient

from edgecl.errors import LabelError, UnavailableError
from edgecl.data.answers import parse_answer
from edgecl.web import ConsoleHooks, create_app

JSON = {"content-type": "application/json"}
CAR = {"class": "car", "xyxy": [1, 2, 30, 40]}


@pytest.fixture()
def calls():
    return []


@pytest.fixture()
def client(calls):
    def answer(item_id, boxes, skip):
        calls.append((item_id, boxes, skip))
        return {"id": item_id}

    return TestClient(create_app(ConsoleHooks(health=lambda: {"status": "ok"}, answer=answer)),
                      raise_server_exceptions=False)


def post(client, body: bytes, headers=JSON):
    response = client.post("/api/labels/f0001", content=body, headers=headers)
    error = response.json().get("error") if response.status_code != 200 else None
    assert error is None or "\n" not in error
    return response.status_code, error


@pytest.mark.parametrize("body, headers, status, message", [
    (b'{"boxes": []}', {"content-type": "text/plain"}, 415, "(UTF-8; got text/plain)"),
    (b'{"boxes": []}', {}, 415, "got no Content-Type"),
    ('{"boxes": []}'.encode("utf-16"), {"content-type": "application/json; charset=utf-16"}, 415,
     "got application/json; charset=utf-16"),
    ('{"boxes": []}'.encode("utf-16"), JSON, 422, "request body looks like UTF-16 text"),
    (b'{"boxes": [{"class": "\xff", "xyxy": [1, 1, 5, 5]}]}', JSON, 422,
     "request body is not UTF-8 text (byte 0xff at offset 22)"),
    (b"", JSON, 422, "request body is empty"),
    (b'{"boxes": [}', JSON, 422, "request body is not JSON: Expecting value at line 1 column 12"),
    (b'{"boxes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON, 422, "nested too deeply"),
    (b'{"boxes": [{"class": "car", "xyxy": [1, 2, 3, ' + b"9" * 5000 + b"]}]}", JSON, 422,
     "Exceeds the limit (4300 digits)"),
    (b'{"boxes": [{"class": "car", "xyxy": [NaN, 2, 30, 40]}]}', JSON, 422,
     "NaN is not a JSON number"),
    (b"[]", JSON, 422, 'invalid answer: expected a JSON object {"boxes": [...], "skip": false}, '
                       "got a list"),
    (b'"car"', JSON, 422, "got a string"),
    (json.dumps({"boxes": [CAR], "skip": True}).encode(), JSON, 422, '"skip": true with 1 box(es)'),
    (json.dumps({"boxes": [dict(CAR, **{"class": "car\u202e"})]}).encode(), JSON, 422,
     "invisible or direction-changing character (U+202E)"),
    (json.dumps({"boxes": [dict(CAR, **{"class": "   "})]}).encode(), JSON, 422,
     "box 0: class name is empty"),
    (json.dumps({"boxes": [dict(CAR, **{"class": "x" * 101})]}).encode(), JSON, 422,
     "is longer than 100 characters"),
])
def test_bad_bodies_get_their_status_and_one_line(client, calls, body, headers, status, message):
    """Before: a wrong Content-Type was 422, a UTF-16 body was answered as if UTF-8, nesting or
    invalid UTF-8 read 'There was an error parsing the body', skip true beside boxes dropped the
    boxes silently (200), and a direction-changing class name was 400 after the hook ran."""
    got_status, error = post(client, body, headers)
    assert (got_status, message in (error or "")) == (status, True), error
    assert calls == []
    assert post(client, b'{"boxes": []}') == (200, None)  # the same request done right works


@pytest.mark.parametrize("answer", [
    {"boxes": [dict(CAR, xyxy=["1", 2, 30, 40])]},
    {"boxes": [dict(CAR, score="high")]},
    {"boxes": [CAR], "note": "x"},
    {"boxes": [CAR] * 1001},
    {"skip": "yes"},
    {},
])
def test_the_api_and_the_cli_refuse_with_the_same_words(client, calls, answer):
    with pytest.raises(LabelError) as cli:
        parse_answer(answer)
    status, error = post(client, json.dumps(answer).encode())
    assert status == 422 and error.endswith(str(cli.value).replace("a list of boxes or ",
                                                                   "a JSON object "))
    assert calls == []


def test_class_names_the_registry_takes_are_taken_over_http_too(client, calls):
    """Before: the API refused '/' and names over 64 characters that imports and the CLI take, so
    an imported class such as 'person/rider' could not be named (or accepted) on the console."""
    boxes = [dict(CAR, **{"class": "person/rider"}), dict(CAR, **{"class": "y" * 100})]
    assert post(client, json.dumps({"boxes": boxes}).encode()) == (200, None)
    assert [b["class"] for b in calls[0][1]] == ["person/rider", "y" * 100]


def test_an_answer_while_the_runtime_stops_is_503():
    def stopping(item_id, boxes, skip):
        raise UnavailableError(f"label item '{item_id}' not answered: the runtime is stopping")

    client = TestClient(create_app(ConsoleHooks(health=lambda: {"status": "ok"}, answer=stopping)))
    response = client.post("/api/labels/f0001", json={"boxes": [CAR]})
    assert response.status_code == 503 and "runtime is stopping" in response.json()["error"]


def test_boxes_the_frame_refuses_say_it_is_the_answer(calls):
    def refuse(item_id, boxes, skip):
        raise LabelError("box 0: x2 must exceed x1 and y2 exceed y1, got [5.0, 5.0, 1.0, 1.0]")

    client = TestClient(create_app(ConsoleHooks(health=lambda: {"status": "ok"}, answer=refuse)))
    response = client.post("/api/labels/f0001", json={"boxes": [dict(CAR, xyxy=[5, 5, 1, 1])]})
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid answer: box 0: x2 must exceed x1")


def test_a_path_that_names_no_route_is_named_in_the_404(client):
    response = client.post("/api/labels/a/b", json={"boxes": []})
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found: POST /api/labels/a/b"


def test_the_schema_still_documents_the_answer_body(client):
    op = client.get("/openapi.json").json()["paths"]["/api/labels/{item_id}"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"boxes", "skip"}
