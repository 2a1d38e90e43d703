"""The local HTTP server: health, metrics, API, operator actions; binds loopback."""

import json
import urllib.error
import urllib.request

import pytest

from edgecl.runtime.server import Routes, StatusServer


@pytest.fixture()
def server():
    actions = []

    def act(item, action):
        if item == "missing":
            raise KeyError(item)
        actions.append((item, action))
        return {"id": item, "action": action}

    srv = StatusServer(Routes(health=lambda: {"status": "ok", "frames": 3},
                              metrics=lambda: b"edgecl_fps 12.5\n",
                              models=lambda: [{"version": "v0001"}],
                              pending=lambda: [{"id": "a"}], label_action=act), port=0)
    srv.start()
    srv.actions = actions
    yield srv
    srv.stop()


def get(srv, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


def test_endpoints(server):
    assert server.host == "127.0.0.1"
    assert json.loads(get(server, "/healthz")[1]) == {"status": "ok", "frames": 3}
    assert get(server, "/metrics")[1] == b"edgecl_fps 12.5\n"
    assert json.loads(get(server, "/api/models")[1]) == [{"version": "v0001"}]
    assert b"<title>edgecl</title>" in get(server, "/")[1]
    status, body = get(server, "/api/labels/a/accept", "POST")
    assert status == 200 and server.actions == [("a", "accept")]


def test_unknown_paths_are_404(server):
    for path, method in (("/nope", "GET"), ("/api/labels/missing/accept", "POST")):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(server, path, method)
        assert info.value.code == 404
