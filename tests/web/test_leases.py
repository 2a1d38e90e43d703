"""Which frame each Label page has open: the first to open a frame keeps it, claims expire,
and the API marks frames open on another console."""

import pytest
from fastapi.testclient import TestClient

from edgecl.web import create_app
from edgecl.web.leases import OpenItems

A, B, C = "console-aaaa", "console-bbbb", "console-cccc"


def items(clock_s):
    return OpenItems(lease_s=30.0, clock=lambda: clock_s[0], max_consoles=3)


def test_the_first_console_to_open_a_frame_keeps_it():
    now = [100.0]
    opened = items(now)
    assert opened.open("f1", A) is False
    now[0] += 1
    assert opened.open("f1", B) is True          # A was first
    assert opened.open("f1", A) is False         # renewing keeps A first
    assert opened.open_elsewhere(A) == set()
    assert opened.open_elsewhere(B) == {"f1"}
    assert opened.open_elsewhere(C) == {"f1"}
    assert opened.open_elsewhere(None) == {"f1"}
    opened.open("f2", A)                         # A moves on: one frame per console
    assert opened.open_elsewhere(B) == {"f2"}    # B now holds f1 first
    assert opened.open_elsewhere(A) == {"f1"}


def test_claims_expire_after_the_lease_and_go_when_answered():
    now = [0.0]
    opened = items(now)
    opened.open("f1", A)
    now[0] = 29.0
    opened.open("f2", B)
    assert opened.open_elsewhere(C) == {"f1", "f2"}
    now[0] = 30.5                                # A last renewed 30.5 s ago
    assert opened.open_elsewhere(C) == {"f2"}
    assert opened.open("f1", B) is False         # free again
    opened.close("f1")
    assert opened.open_elsewhere(C) == set()


def test_a_flood_of_console_ids_never_takes_a_frame_from_an_operator_at_work():
    """Before: past the bound the least recently seen console was forgotten, so a burst of
    new ids wiped the claim of an operator labelling a frame (who renews it every 4 s), and
    the next console to open that frame was told it was free."""
    now = [0.0]
    opened = items(now)
    assert opened.open("f0", A) is False
    for k in range(10):
        now[0] += 1
        assert opened.open(f"f{k + 1}", f"console-{k:04d}") is False
        assert opened.open("f0", A) is False  # A renews while the burst goes on
    assert opened.open_elsewhere(None) == {"f0", "f1", "f2"}
    assert opened.open("f0", B) is True  # still A's
    assert opened.open("f0", A) is False
    now[0] += 31  # the burst's claims lapse; A's too, not renewed since
    assert opened.open("f5", B) is False and opened.open_elsewhere(None) == {"f5"}


@pytest.fixture()
def client(fake):
    return TestClient(create_app(fake.hooks()), raise_server_exceptions=False)


def test_the_queue_marks_frames_open_on_another_console(client, fake):
    assert client.post(f"/api/labels/f0000/open?console={A}").json() == \
        {"id": "f0000", "open_elsewhere": False}
    assert client.post(f"/api/labels/f0000/open?console={B}").json()["open_elsewhere"] is True
    mine = {i["id"]: i["open_elsewhere"] for i in client.get(f"/api/labels/pending?console={A}").json()}
    theirs = {i["id"]: i["open_elsewhere"] for i in client.get(f"/api/labels/pending?console={B}").json()}
    anyone = {i["id"]: i["open_elsewhere"] for i in client.get("/api/labels/pending").json()}
    assert mine["f0000"] is False and theirs["f0000"] is True and anyone["f0000"] is True
    assert not any(v for k, v in theirs.items() if k != "f0000")
    box = {"class": "car", "xyxy": [10, 10, 50, 50]}
    assert client.post("/api/labels/f0000", json={"boxes": [box], "skip": False}).status_code == 200
    assert not any(i["open_elsewhere"] for i in client.get(f"/api/labels/pending?console={B}").json())


@pytest.mark.parametrize("query, status", [
    ("", 422), ("?console=short", 422), ("?console=" + "x" * 65, 422),
    ("?console=bad%20console", 422), ("?console=console-%2F..%2Fetc", 422),
])
def test_a_bad_console_id_is_a_one_line_422(client, query, status):
    reply = client.post("/api/labels/f0000/open" + query)
    assert reply.status_code == status and "console" in reply.json()["error"]
    assert "\n" not in reply.json()["error"]
    bad = client.get("/api/labels/pending" + (query or "?console="))
    assert bad.status_code == 422 and "console" in bad.json()["error"]


def test_opening_a_frame_not_in_the_queue_is_404(client):
    reply = client.post(f"/api/labels/f9999/open?console={A}")
    assert reply.status_code == 404 and "f9999" in reply.json()["error"]
    assert client.post(f"/api/labels/..%2Fx/open?console={A}").status_code == 404
