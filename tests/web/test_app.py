"""The console's HTTP API on a fake runtime: routes, token, bounds, id checks, error mapping."""

import json
import logging

import pytest
from fastapi.testclient import TestClient

from edgecl.web import ConsoleHooks, create_app
from edgecl.web.app import MAX_BODY_BYTES, AuthThrottle, check_id
from edgecl.errors import NotFoundError, StorageError

TOKEN = "s3cret-token"


@pytest.fixture()
def client(fake):
    return TestClient(create_app(fake.hooks()), raise_server_exceptions=False)


@pytest.fixture()
def locked(fake):
    return TestClient(create_app(fake.hooks(), token=TOKEN, auth_throttle=AuthThrottle(limit=1000)),
                      raise_server_exceptions=False)


def test_read_routes(client, fake):
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert b"edgecl_fps 29.5" in metrics.content
    live = client.get("/api/live").json()
    assert live["fps"] == 29.5 and live["memory"]["capacity"] == 1000
    frame = client.get("/api/frame.jpg")
    assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert [m["version"] for m in client.get("/api/models").json()] == ["v0003", "v0002", "v0001"]
    pending = client.get("/api/labels/pending").json()
    assert pending[0]["id"] == "f0000" and pending[0]["reasons"]["uncertain"] == 0.8
    image = client.get("/api/labels/f0000/image")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    assert client.get("/api/classes").json()[1]["name"] == "car"
    assert client.get("/api/forgetting").json()["matrix"]["columns"][0] == "person"
    assert "/api/labels/{item_id}" in client.get("/openapi.json").json()["paths"]
    assert client.get("/api/auth").json() == {"token_required": False}


@pytest.mark.parametrize("path", ["/api/models", "/api/forgetting"])
def test_a_polled_route_sends_its_rows_once_until_they_change(client, fake, path):
    """Before: the Models page fetched every version's row every 5 s (68 KB at 38 rounds, up
    to 100 pruned versions more on a device weeks old) though nothing had changed."""
    first = client.get(path)
    tag = first.headers["etag"]
    assert first.status_code == 200 and tag.startswith('"') and first.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    listed = client.get(path, headers={"If-None-Match": f'"other", {tag}'})
    assert listed.status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.post("/api/models/v0001/promote").status_code == 200  # the rows change
    if path == "/api/models":
        changed = client.get(path, headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.headers["etag"] != tag
        assert changed.json()[-1]["status"] == "current"


def test_pages_and_assets_are_served_from_the_package(client):
    for path in ("/", "/live", "/label", "/models", "/forgetting", "/api-docs"):
        page = client.get(path)
        assert page.status_code == 200 and "<nav" in page.text, path
        assert "http://" not in page.text and "https://" not in page.text, path  # no CDN
    for asset in ("/static/console.js", "/static/console.css", "/favicon.ico"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/docs").status_code == 404  # Swagger UI needs a CDN: not served


def test_health_stuck_is_503(client, fake):
    fake.health_status = "stuck"
    assert client.get("/healthz").status_code == 503
    fake.health_status = "degraded"
    assert client.get("/healthz").status_code == 200


def test_no_frame_yet_is_204():
    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"}))
    response = TestClient(app).get("/api/frame.jpg")
    assert response.status_code == 204 and response.content == b""


def test_answer_reaches_the_runtime(client, fake):
    body = {"boxes": [{"class": "forklift", "xyxy": [10, 20, 110, 220]}], "skip": False}
    response = client.post("/api/labels/f0001", json=body)
    assert response.status_code == 200, response.text
    assert fake.answers == [{"id": "f0001", "boxes": [{"class": "forklift",
                                                        "xyxy": [10.0, 20.0, 110.0, 220.0]}],
                             "skip": False}]
    assert client.post("/api/labels/f0002", json={"boxes": []}).status_code == 200  # nothing here
    assert client.post("/api/labels/f0000", json={"skip": True}).json()["stored"] is False


def test_proposed_boxes_can_be_posted_back_with_their_scores(client, fake):
    """A client that sends back the boxes GET /api/labels/pending proposed, 'score' included,
    got a 422 ('Extra inputs are not permitted'), while 'edgecl labels answer' took them."""
    body = {"boxes": [{"class": "Car", "xyxy": [255, 183, 305, 247], "score": 0.33}], "skip": False}
    response = client.post("/api/labels/f0001", json=body)
    assert response.status_code == 200, response.text
    assert fake.answers[-1]["boxes"] == [{"class": "Car", "xyxy": [255.0, 183.0, 305.0, 247.0]}]


def test_error_mapping(client):
    assert client.post("/api/labels/nope", json={"boxes": []}).status_code == 404
    assert client.get("/api/labels/nope/image").status_code == 404
    assert client.post("/api/labels/f0000", json={"boxes": []}).status_code == 200
    again = client.post("/api/labels/f0000", json={"boxes": []})
    assert again.status_code == 409 and "already answered" in again.json()["error"]
    bad = client.post("/api/labels/f0001", json={"boxes": [{"class": "car", "xyxy": [5, 5, 1, 1]}]})
    assert bad.status_code == 422 and "empty box" in bad.json()["error"]
    assert client.post("/api/models/v0002/promote").status_code == 409
    assert client.post("/api/models/v0042/promote").status_code == 404
    assert client.post("/api/models/v0001/promote").json() == {"current": "v0001"}
    assert client.post("/api/models/rollback").json() == {"current": "v0002"}


@pytest.mark.parametrize("body", [
    {"boxes": [{"class": "car", "xyxy": [1, 2, 3]}]},
    {"boxes": [{"class": "", "xyxy": [1, 2, 3, 4]}]},
    {"boxes": [{"class": "car\u202e", "xyxy": [1, 2, 3, 4]}]},
    {"boxes": [{"class": "x" * 101, "xyxy": [1, 2, 3, 4]}]},
    {"boxes": [{"class": "car", "xyxy": [1, 2, 3, "x"]}]},
    {"boxes": "car"},
    {"boxes": [], "extra": 1},
    {"boxes": [{"class": "car", "xyxy": [1, 2, 3, 4], "bogus": 1}]},
    {"boxes": [{"class": "car", "xyxy": [1, 2, 3, 4], "score": "high"}]},
])
def test_bad_bodies_are_4xx_json(client, fake, body):
    response = client.post("/api/labels/f0000", json=body)
    assert 400 <= response.status_code < 500 and "error" in response.json()
    assert fake.answers == []


def test_non_json_and_nan_bodies(client, fake):
    response = client.post("/api/labels/f0000", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and "error" in response.json()
    nan = b'{"boxes": [{"class": "car", "xyxy": [NaN, 1, 2, 3]}]}'
    response = client.post("/api/labels/f0000", content=nan,
                           headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and fake.answers == []


def test_state_changes_are_post_only(client, fake):
    assert client.get("/api/models/v0001/promote").status_code == 405
    assert client.get("/api/models/rollback").status_code == 405
    assert client.put("/api/labels/f0000", json={"boxes": []}).status_code == 405
    assert fake.promoted == [] and fake.answers == []


def test_the_largest_answer_fits_and_a_flood_of_objects_does_not(client, fake):
    """Before: bodies of up to 2 MiB were parsed (700,000 empty objects took 140 ms of the
    interpreter each), and a dozen clients sending them cut detection from 5 to 1 fps."""
    from edgecl.data.answers import MAX_BOXES
    from edgecl.data.class_names import MAX_NAME_CHARS

    largest = json.dumps({"boxes": [{"class": "\u884c" * MAX_NAME_CHARS,  # escaped: 6 bytes each
                                     "xyxy": [1.23456789012345, 2.3456789012345,
                                              101.23456789012345, 102.3456789012345]}] * MAX_BOXES,
                          "skip": False})
    assert len(largest) < MAX_BODY_BYTES
    response = client.post("/api/labels/f0000", content=largest,
                           headers={"content-type": "application/json"})
    assert response.status_code != 413, "a real answer is never too large"
    flood = b'{"boxes": [' + b"{}," * 400_000 + b"{}]}"  # 1.2 MB
    response = client.post("/api/labels/f0000", content=flood,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_body_over_the_bound_is_413(client, fake):
    big = b'{"boxes": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/api/labels/f0000", content=big,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "error" in response.json()

    def chunks():
        for _ in range(3):
            yield b"x" * (MAX_BODY_BYTES // 2)

    streamed = client.post("/api/labels/f0000", content=chunks(),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert fake.answers == []


@pytest.mark.parametrize("item_id", ["..", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", ".hidden",
                                     "a..b", "x" * 129, "a%00b", "a b", "%5C..%5Cx"])
def test_traversal_and_bad_ids_are_refused(client, fake, item_id):
    for method, path in (("get", f"/api/labels/{item_id}/image"),
                         ("post", f"/api/labels/{item_id}"),
                         ("post", f"/api/models/{item_id}/promote")):
        response = getattr(client, method)(path, **({"json": {"boxes": []}} if method == "post" else {}))
        assert response.status_code in (404, 405), (path, response.status_code)
        assert "error" in response.json()
    assert fake.answers == [] and fake.promoted == []


@pytest.mark.parametrize("item_id, shown", [
    ("-1", "-1"), ("a.b", "a.b"), (".x", ".x"), ("a%20b", "a b"), ("%E2%82%AC", "€"),
    ("_x", "_x"), ("x" * 65, "x" * 30), ("f9999", "f9999")])
def test_an_id_that_names_no_item_is_one_404_naming_it(client, fake, item_id, shown):
    """Before: ``-1`` (or ``.x``, ``a b``) was a 400 from the web layer's id check while ``a.b``
    passed it and was a 404 from the queue. Now malformed or unknown, it is "no such item"."""
    for method, path, what in (("get", f"/api/labels/{item_id}/image", "label item"),
                               ("post", f"/api/labels/{item_id}", "label item"),
                               ("post", f"/api/models/{item_id}/promote", "model version")):
        response = getattr(client, method)(path, **({"json": {"boxes": []}} if method == "post" else {}))
        assert response.status_code == 404, (path, response.status_code, response.text)
        error = response.json()["error"]
        assert shown in error and "\n" not in error, (path, error)
        if item_id != "f9999":  # the fake names an unknown item (not a version) its own way
            assert error.startswith(f"no {what} "), (path, error)
    assert fake.answers == [] and fake.promoted == []


def test_check_id():
    from edgecl.data.answers import valid_item_id

    assert check_id("v0001") == "v0001"
    assert check_id("a" * 128)
    for bad in ("", "..", "../x", "a/b", ".x", "-1", "a" * 129, "é"):
        with pytest.raises(NotFoundError, match="no model version"):
            check_id(bad)
    assert valid_item_id("0179-2c7c51") == "0179-2c7c51"
    for bad in ("a.b", "-1", "x" * 65, "../x"):
        with pytest.raises(NotFoundError, match="no label item"):
            valid_item_id(bad)


def test_token_required_everywhere_but_page_shells(locked):
    for path in ("/healthz", "/metrics", "/api/live", "/api/models", "/api/frame.jpg",
                 "/api/labels/pending", "/openapi.json"):
        assert locked.get(path).status_code == 401, path
        wrong = locked.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"], path
        assert locked.get(path, headers={"Authorization": TOKEN}).status_code == 401, path
        ok = locked.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, path
    assert locked.post("/api/models/rollback").status_code == 401
    assert locked.get("/api/auth").json() == {"token_required": True}
    for path in ("/", "/label", "/static/console.js"):
        assert locked.get(path).status_code == 200, path


def test_hook_fault_is_contained(client, fake, caplog):
    fake.fail_live = True
    with caplog.at_level(logging.ERROR, logger="edgecl.web.app"):
        response = client.get("/api/live")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (logged on the device)"}
    assert "boom" not in response.text and "Traceback" not in response.text
    assert "boom" in caplog.text
    assert client.app.state.counters["faults"] == 1
    assert client.get("/healthz").status_code == 200  # the server goes on


def test_missing_hooks_are_404():
    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"}))
    client = TestClient(app)
    assert client.post("/api/models/rollback").status_code == 404
    assert client.post("/api/labels/a1", json={"boxes": []}).status_code == 404
    assert client.get("/api/forgetting").json()["matrix"]["values"] == []


def test_nan_in_hook_output_becomes_null():
    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"},
                                  live=lambda: {"fps": float("nan"), "x": [float("inf")]}))
    assert TestClient(app).get("/api/live").json() == {"fps": None, "x": [None]}


def test_browser_lookup_says_why_it_skips(monkeypatch):
    import console_browser

    monkeypatch.setattr(console_browser, "CHROMIUM_CANDIDATES", ("/nonexistent/chromium",))
    monkeypatch.setattr(console_browser.shutil, "which", lambda name: None)
    monkeypatch.delenv("EDGECL_CHROMIUM", raising=False)
    reason = console_browser.find_browser()
    assert isinstance(reason, str) and "apt-get install chromium chromium-driver" in reason


@pytest.mark.parametrize("fault", [
    StorageError(
        "cannot store sample from operator:f0000 (task 'stream'): No space left on device "
        "(/card/state/memory/images/00000002.jpg); nothing stored was lost"),
    OSError(28, "No space left on device", "/card/state/labels/.answered.json.x.tmp")],
    ids=["StorageError", "OSError"])
def test_a_full_disk_is_507_in_one_line_and_the_same_answer_works_once_there_is_room(
        fake, monkeypatch, caplog, fault):
    """Before: a StorageError was a 400 (the client's fault: not worth sending again) and a raw
    OSError (the queue's skip on a full card) a 500 with a traceback in the log."""
    answer = fake.answer
    full = {"on": True}

    def answer_on_a_card(item_id, boxes, skip):
        if full["on"]:
            raise fault
        return answer(item_id, boxes, skip)

    monkeypatch.setattr(fake, "answer", answer_on_a_card)
    client = TestClient(create_app(fake.hooks()), raise_server_exceptions=False)
    response = client.post("/api/labels/f0000", json={"boxes": [], "skip": True})
    assert response.status_code == 507
    error = response.json()["error"]
    assert "No space left on device" in error and "/card/state/" in error and "\n" not in error
    assert "Traceback" not in caplog.text
    full["on"] = False
    assert client.post("/api/labels/f0000", json={"boxes": [], "skip": True}).status_code == 200


def test_an_os_error_that_is_not_a_full_disk_is_still_a_500(fake, monkeypatch):
    def broken(item_id, boxes, skip):
        raise IsADirectoryError(21, "Is a directory", "/card/state/labels")

    monkeypatch.setattr(fake, "answer", broken)
    client = TestClient(create_app(fake.hooks()), raise_server_exceptions=False)
    response = client.post("/api/labels/f0000", json={"boxes": [], "skip": True})
    assert response.status_code == 500 and response.json()["error"].startswith("internal error")


def test_live_labels_come_as_text_with_the_seq_of_their_jpeg(client, fake):
    """Before: the Live page had only ``/api/frame.jpg``, names burnt in with OpenCV's ASCII font
    (``自行车`` drawn as ``???``). Now ``/api/live/detections`` gives each name exactly as
    registered with the frame's ``seq``, and ``/api/frame.jpg?seq=`` that very frame's JPEG."""
    import cv2
    import numpy as np

    names = {0: "自行车", 1: "دراجة هوائية", 2: "🚲 bike"}
    fake.publish_frame([(0, 60, 250, 200, 330, 0.91), (1, 400, 200, 450, 330, 0.5),
                        (2, 300, 40, 380, 120, 0.42)], names)
    labels = client.get("/api/live/detections")
    assert labels.status_code == 200 and labels.headers["cache-control"] == "no-store"
    data = labels.json()
    assert [b["name"] for b in data["boxes"]] == ["自行车", "دراجة هوائية", "🚲 bike"]
    assert data["boxes"][0]["xyxy"] == [60.0, 250.0, 200.0, 330.0]
    assert data["boxes"][0]["color_index"] == 0 and data["boxes"][2]["score"] == 0.42
    seq = data["seq"]
    frame = client.get(f"/api/frame.jpg?seq={seq}&labels=0")
    assert frame.status_code == 200 and frame.headers["x-frame-seq"] == str(seq)
    assert frame.content == fake.live_frame(seq).jpeg
    picture = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == (data["height"], data["width"]) == (480, 640)

    newer = fake.publish_frame()  # a newer frame between the labels and the picture
    again = client.get(f"/api/frame.jpg?seq={seq}&labels=0")
    assert again.headers["x-frame-seq"] == str(seq) and again.content == frame.content
    assert client.get(f"/api/live/detections?seq={seq}").json() == data
    assert client.get("/api/live/detections").json()["seq"] == newer.seq == seq + 1
    gone = client.get("/api/frame.jpg?seq=999")
    assert gone.status_code == 404 and "is not kept (only the newest few are" in gone.json()["error"]
    assert client.get("/api/live/detections?seq=999").status_code == 404
    assert client.get("/api/frame.jpg?labels=maybe").status_code == 422

    # an API client fetching the JPEG alone still gets the labels burnt in, as before
    plain = client.get("/api/frame.jpg")
    assert plain.headers["x-frame-seq"] == str(newer.seq)
    assert plain.content == newer.labelled_jpeg() != newer.jpeg
    spec = client.get("/openapi.json").json()["paths"]
    assert {p["name"] for p in spec["/api/frame.jpg"]["get"]["parameters"]} == {"seq", "labels"}
    assert "/api/live/detections" in spec


def test_a_runtime_without_numbered_frames_keeps_its_jpeg():
    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"}, latest_jpeg=lambda: b"\xff\xd8jpeg"))
    client = TestClient(app)
    assert client.get("/api/live/detections").json() == {"seq": None, "width": 0, "height": 0,
                                                         "boxes": []}
    frame = client.get("/api/frame.jpg")
    assert frame.content == b"\xff\xd8jpeg" and "x-frame-seq" not in frame.headers


def test_a_405_says_which_methods_are_allowed(client):
    """Before: the JSON error handler dropped the Allow header that RFC 9110 requires."""
    response = client.put("/api/labels/f0000", json={"boxes": []})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"].startswith("Method Not Allowed: PUT /api/labels/f0000")
    for path in ("/api/labels/pending", "/api/labels/answered"):  # before: 404 'no label item'
        response = client.post(path, json={"boxes": []})
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD", path
        assert response.json()["error"] == f"Method Not Allowed: POST {path}"


def test_several_ranges_get_the_whole_file_and_other_sites_cannot_embed(client):
    """Before: 2,000 ranges of a small image came back as a multipart response 30 times its
    size, and another site's page could show the console's frames in an <img>."""
    whole = client.get("/static/console.js")
    ranges = "bytes=" + ",".join(f"{k}-{k}" for k in range(2000))
    response = client.get("/static/console.js", headers={"Range": ranges})
    assert response.status_code == 200 and response.content == whole.content
    single = client.get("/static/console.js", headers={"Range": "bytes=0-9"})
    assert single.status_code == 206 and single.content == whole.content[:10]
    assert whole.headers["cross-origin-resource-policy"] == "same-origin"


def test_the_api_page_states_the_body_bound_the_server_holds(client):
    """Before: the API page said 413 above 2 MiB while the server refused above 1 MiB."""
    from edgecl.web.app import MAX_BODY_BYTES

    page = client.get("/api-docs").text
    assert f"413 body over {MAX_BODY_BYTES // 2**20} MiB" in page


def test_an_image_asked_for_while_its_item_is_answered_is_the_answered_image(tmp_path):
    """Before: the Label page preloading an item's image while another operator answered it
    got a 500 or a cut-off body (the file was streamed as the answer moved it), or a 404."""
    from edgecl.errors import ConflictError

    stored = tmp_path / "sample.jpg"
    stored.write_bytes(b"\xff\xd8stored\xff\xd9")
    looked_up = []

    def label_image(item_id):
        looked_up.append(item_id)
        if len(looked_up) == 1:  # found pending, then answered before it is read
            return tmp_path / "gone.jpg"
        raise ConflictError(f"label item '{item_id}' was already answered")

    app = create_app(ConsoleHooks(health=lambda: {"status": "ok"}, label_image=label_image,
                                  answered_image=lambda item_id: stored))
    got = TestClient(app).get("/api/labels/a1/image")
    assert got.status_code == 200 and got.content == stored.read_bytes()
    assert got.headers["content-type"] == "image/jpeg" and len(looked_up) == 2
    stored.unlink()  # and its sample evicted meanwhile: one 404, not a 500
    looked_up.clear()
    got = TestClient(app).get("/api/labels/a1/image")
    assert got.status_code == 404 and got.json() == {"error": "no image for item a1"}


def _long_boxes(count: int, bad_last: bool = False) -> list[dict]:
    """``count`` boxes with 99-character CJK class names (the last inverted with ``bad_last``)."""
    boxes = [{"class": "".join(chr(0x4E00 + (i * 7 + k) % 20000) for k in range(99)),
              "xyxy": [1.5, 2.5, 100.25, 200.75]} for i in range(count)]
    if bad_last:
        boxes[-1]["xyxy"] = "not four numbers"
    return boxes


def test_an_unknown_or_answered_item_is_refused_before_its_boxes_are_read(client, fake,
                                                                         monkeypatch):
    """Before: the boxes were read first (1,000 long names: most of a second of the
    interpreter), then 404 or 409; a body whose boxes were bad was even a 422."""
    from edgecl.web import app as web_app

    read = []
    parse = web_app.parse_answer
    monkeypatch.setattr(web_app, "parse_answer", lambda *a, **k: read.append(1) or parse(*a, **k))
    assert client.post("/api/labels/f0000", json={"boxes": []}).status_code == 200
    read.clear()
    body = {"boxes": _long_boxes(1000, bad_last=True)}
    unknown = client.post("/api/labels/nosuch1", json=body)
    assert unknown.status_code == 404 and unknown.json() == {"error": "no queued item nosuch1"}
    answered = client.post("/api/labels/f0000", json=body)
    assert answered.status_code == 409
    assert answered.json() == {"error": "label item 'f0000' was already answered"}
    assert read == []
    # a queued item's answer is read as before: the bad box named, nothing stored
    bad = client.post("/api/labels/f0001", json=body)
    assert bad.status_code == 422 and bad.json()["error"].startswith("invalid answer: box 999: ")
    assert client.post("/api/labels/f0001", json={"boxes": _long_boxes(3)}).status_code == 200
    assert [a["id"] for a in fake.answers] == ["f0000", "f0001"]


def test_a_skip_still_reaches_the_runtime_for_an_item_it_cannot_show(client, fake):
    """A queued item whose image cannot be read can only be skipped: the look-up's 404 does
    not stop the skip (the runtime sets a malformed item aside)."""
    fake.broken_images.add("f0001")
    assert client.post("/api/labels/f0001", json={"boxes": []}).status_code == 404
    assert client.post("/api/labels/f0001", json={"skip": True}).status_code == 200
    assert fake.answers == [{"id": "f0001", "boxes": [], "skip": True}]


def test_answered_lists_at_most_the_limit_asked(client, fake):
    """Before: always up to 50 answers with all their boxes, while the Label page shows 20."""
    for item in ("f0000", "f0001", "f0002"):
        assert client.post(f"/api/labels/{item}", json={"boxes": [
            {"class": "car", "xyxy": [1, 1, 50, 50]}]}).status_code == 200
    assert [a["id"] for a in client.get("/api/labels/answered").json()] == ["f0002", "f0001",
                                                                          "f0000"]
    assert [a["id"] for a in client.get("/api/labels/answered?limit=2").json()] == ["f0002",
                                                                                  "f0001"]
    assert len(client.get("/api/labels/answered?limit=50").json()) == 3
    for bad in ("0", "51", "abc", "-1"):
        response = client.get(f"/api/labels/answered?limit={bad}")
        assert response.status_code == 422, bad
        assert response.json()["error"].startswith("invalid request: query.limit: "), bad


def test_the_label_page_asks_for_the_answers_it_shows():
    from edgecl.web.app import STATIC_DIR

    script = (STATIC_DIR / "label.js").read_text()
    assert "const MAX_ANSWERED = 20;" in script
    assert 'EC.getJSON(`/api/labels/answered?limit=${MAX_ANSWERED}`)' in script
