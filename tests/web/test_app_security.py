"""The console against other web pages in the operator's browser and hostile clients: cross-site
POSTs, DNS rebinding, framing, answers that say nothing or say it twice."""

import pytest
from fastapi.testclient import TestClient

from edgecl.web import create_app
from edgecl.web.app import (AUTH_FAILURES_PER_MINUTE, NON_IP_CLIENT, AuthThrottle, cross_site,
                            host_allowed, origin_names)

DEVICE = frozenset({"localhost", "drone7", "drone7.local"})


@pytest.fixture()
def client(fake):
    return TestClient(create_app(fake.hooks(), allowed_hosts=DEVICE | {"testserver"}),
                      raise_server_exceptions=False)


def scope(**headers):
    return {"headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_cross_site_reasons_by_hand():
    assert cross_site(scope(host="127.0.0.1:8765", origin="http://127.0.0.1:8765")) is None
    assert cross_site(scope(host="127.0.0.1:8765")) is None  # curl, the CLI: no Origin
    assert cross_site(scope(host="127.0.0.1:8765", sec_fetch_site="same-origin")) is None
    assert cross_site(scope(host="127.0.0.1:8765", sec_fetch_site="none")) is None
    assert cross_site(scope(host="127.0.0.1:8765", origin="http://evil.example")) == (
        "cross-site request from http://evil.example (Host: 127.0.0.1:8765; behind a reverse "
        "proxy, pass the Host header on or list the origin in server.allowed_origins)")
    proxy = origin_names(" https://Drone7.lab.example/ ,, http://10.0.0.7:8080")
    assert proxy == {"https://drone7.lab.example", "http://10.0.0.7:8080"}
    assert cross_site(scope(host="127.0.0.1:8765", origin="https://drone7.lab.example"),
                      proxy) is None
    assert cross_site(scope(host="127.0.0.1:8765", origin="https://drone7.lab.example:444"),
                      proxy) is not None                             # another port: another origin
    # same host, other port: another site as far as the browser's origin goes
    assert cross_site(scope(host="127.0.0.1:8765", origin="http://127.0.0.1:18999")) is not None
    assert cross_site(scope(host="127.0.0.1:8765", origin="null")) is not None  # sandboxed page
    assert cross_site(scope(host="127.0.0.1:8765", sec_fetch_site="cross-site")) is not None
    assert cross_site(scope(host="127.0.0.1:8765", sec_fetch_site="same-site")) is not None


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:8765", True), ("[::1]:8765", True), ("192.168.1.40", True), ("[::1]", True),
    ("localhost:8765", True), ("Drone7.local.", True), ("drone7", True),
    ("attacker.rebind.example:8765", False), ("127.0.0.1.nip.io", False), (None, True),
    # before: read as the IP address 127.0.0.1 (a URL's user part), or its port ignored
    ("127.0.0.1:1@evil.example", False), ("127.0.0.1:80@evil.example:80", False),
    ("127.0.0.1:http", False), ("drone7:", False), ("127.0.0.1 evil.example", False),
    ("[::1]evil.example", False), ("", False)])
def test_host_allowed_by_hand(host, allowed):
    assert host_allowed(host, DEVICE) is allowed


def test_a_cross_site_post_changes_nothing(client, fake):
    for path in ("/api/models/rollback", "/api/models/v0002/promote"):
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"},
                        {"origin": "null", "content-type": "text/plain"}):
            response = client.post(path, headers=headers)
            assert response.status_code == 403, (path, headers)
            assert "refused" in response.json()["error"]
    assert fake.promoted == []
    answer = client.post("/api/labels/f0000", json={"boxes": []},
                         headers={"origin": "http://evil.example"})
    assert answer.status_code == 403 and fake.answers == []
    # the console itself (same origin) and tools without an Origin go through
    same = client.post("/api/models/v0001/promote", headers={"origin": "http://testserver"})
    assert same.status_code == 200 and fake.promoted == ["v0001"]
    assert client.post("/api/labels/f0000", json={"boxes": []}).status_code == 200


def test_a_foreign_host_name_is_refused_reads_included(client, fake):
    for method, path in (("GET", "/api/labels/pending"), ("GET", "/api/frame.jpg"),
                         ("POST", "/api/models/rollback")):
        response = client.request(method, path, headers={"host": "attacker.rebind.example:8765"})
        assert response.status_code == 421, path
    assert client.get("/api/live", headers={"host": "drone7.local:8765"}).status_code == 200
    assert client.get("/api/live", headers={"host": "10.0.0.7:8765"}).status_code == 200


def test_every_response_forbids_framing_and_foreign_scripts(client):
    """Before: the policy was ``frame-ancestors 'none'`` only, so markup in a name shown by a
    page would have run its inline script or event handler; now scripts come from the console's
    own files only."""
    for path in ("/", "/label", "/api/live", "/static/console.js", "/nope"):
        response = client.get(path)
        assert response.headers["x-frame-options"] == "DENY", path
        policy = {d.split()[0]: d.split()[1:] for d in
                  response.headers["content-security-policy"].split("; ")}
        assert policy["frame-ancestors"] == ["'none'"], path
        assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"], path
    refused = client.post("/api/models/rollback", headers={"origin": "http://evil.example"})
    assert refused.headers["x-frame-options"] == "DENY"


def test_an_answer_must_say_boxes_or_skip_once(client, fake):
    empty = client.post("/api/labels/f0000", json={})
    assert empty.status_code == 422 and '"boxes"' in empty.json()["error"]
    twice = client.post("/api/labels/f0000", content=b'{"skip": true, "skip": false}',
                        headers={"content-type": "application/json"})
    assert twice.status_code == 422 and "'skip' given twice" in twice.json()["error"]
    nested = client.post("/api/labels/f0000", headers={"content-type": "application/json"},
                         content=b'{"boxes": [{"class": "car", "class": "boat", '
                                 b'"xyxy": [1, 1, 5, 5]}]}')
    assert nested.status_code == 422 and "'class' given twice" in nested.json()["error"]
    assert fake.answers == []


def test_a_post_to_a_public_page_is_refused_without_reading_its_body(client):
    response = client.post("/api/auth", content=b"x" * 1000)
    assert response.status_code == 405


def test_uptime_checks_may_send_head(client, fake):
    assert client.head("/healthz").status_code == 200
    assert client.head("/metrics").status_code == 200
    fake.health_status = "stuck"
    assert client.head("/healthz").status_code == 503
    for page in ("/", "/label"):  # before: 405, so a check of the console page failed
        response = client.head(page)
        assert response.status_code == 200 and response.content == b""
        assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/api/live", "/api/models", "/api/frame.jpg",
                                  "/api/labels/f0000/image", "/api/labels/pending",
                                  "/static/console.js", "/openapi.json"])
def test_every_get_route_answers_head_with_its_headers_and_no_body(client, path):
    """Before: HEAD on an API route was 405 (only /healthz, /metrics and the pages had one)."""
    got, head = client.get(path), client.head(path)
    assert got.status_code == 200 and head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))


@pytest.mark.parametrize("method,path,allow", [("PUT", "/", "GET, HEAD"),
                                               ("PUT", "/static/console.js", "GET, HEAD"),
                                               ("OPTIONS", "/static/console.js", "GET, HEAD"),
                                               ("OPTIONS", "/api/live", "GET, HEAD"),
                                               ("POST", "/api/auth", "GET, HEAD"),
                                               ("PUT", "/api/models", "GET, HEAD"),
                                               ("DELETE", "/api/labels/f0000", "POST"),
                                               ("POST", "/openapi.json", "GET, HEAD")])
def test_a_405_says_which_methods_are_allowed(client, method, path, allow):
    """Before: a write to a page or asset was 405 without an Allow header (RFC 9110 15.5.6
    requires one), and an API route's listed GET but not the HEAD it answers; the schema's
    said 'HEAD, GET', and a page's body was worded otherwise than every other 405's."""
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allow
    assert response.json() == {"error": f"Method Not Allowed: {method} {path}"}


def test_the_schema_builds_without_duplicate_operation_ids(client, recwarn):
    assert client.get("/openapi.json").status_code == 200
    assert not [w for w in recwarn if "Duplicate Operation ID" in str(w.message)]


def test_a_json_body_sent_without_its_content_type_says_what_to_send(client, fake):
    response = client.post("/api/labels/f0000", content=b'{"boxes": []}',
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json()["error"] == ("invalid request: send the body as JSON with "
                                        "'Content-Type: application/json' (UTF-8; got "
                                        "application/x-www-form-urlencoded)")
    assert fake.answers == []


def test_auth_throttle_by_hand():
    now = [0.0]
    throttle = AuthThrottle(limit=3, window_s=60.0, clock=lambda: now[0], max_clients=2)
    for t in (0.0, 10.0, 20.0):
        now[0] = t
        assert throttle.retry_after_s("a") == 0.0
        throttle.failed("a")
    assert throttle.retry_after_s("a") == 40.0          # the failure at 0 s leaves at 60 s
    now[0] = 60.0
    assert throttle.retry_after_s("a") == 0.0           # two failures left in the window
    throttle.failed("b")
    throttle.failed("c")                                # a third address: "a" is forgotten
    assert throttle.retry_after_s("a") == 0.0 and sorted(throttle._failures) == ["b", "c"]


def test_a_guessed_token_is_refused_after_the_budget_even_when_right(fake):
    now = [100.0]
    throttle = AuthThrottle(clock=lambda: now[0])
    locked = TestClient(create_app(fake.hooks(), token="right", auth_throttle=throttle),
                        raise_server_exceptions=False)
    for i in range(AUTH_FAILURES_PER_MINUTE):
        assert locked.get("/api/live", headers={"Authorization": f"Bearer guess{i}"}
                          ).status_code == 401
    assert locked.get("/api/auth").status_code == 200            # public paths still answer
    right = locked.get("/api/live", headers={"Authorization": "Bearer right"})
    assert right.status_code == 429 and right.headers["retry-after"] == "60"
    # the test client's address, "testclient", is no IP address: it counts as every such one
    assert f"too many wrong or missing tokens from {NON_IP_CLIENT}" in right.json()["error"]
    now[0] = 130.0
    assert locked.post("/api/models/rollback").headers["retry-after"] == "30"
    now[0] = 160.0                                                # the first failures left
    assert locked.get("/api/live", headers={"Authorization": "Bearer right"}).status_code == 200
    assert throttle.refused == 2


def test_without_a_token_nothing_is_throttled(client):
    for _ in range(AUTH_FAILURES_PER_MINUTE + 5):
        assert client.get("/api/live", headers={"Authorization": "Bearer x"}).status_code == 200


def test_behind_a_proxy_that_rewrites_host_the_listed_origin_may_post(fake):
    proxied = {"host": "127.0.0.1:8765", "origin": "https://drone7.lab.example"}
    plain = TestClient(create_app(fake.hooks()), raise_server_exceptions=False)
    refused = plain.post("/api/models/v0001/promote", headers=proxied)
    assert refused.status_code == 403 and "server.allowed_origins" in refused.json()["error"]
    listed = TestClient(create_app(fake.hooks(),
                                   allowed_origins=origin_names("https://drone7.lab.example")),
                        raise_server_exceptions=False)
    assert listed.post("/api/models/v0001/promote", headers=proxied).status_code == 200
    assert listed.post("/api/models/v0001/promote",
                       headers={**proxied, "origin": "http://evil.example"}).status_code == 403
    assert fake.promoted == ["v0001"]


def test_a_401_names_the_bearer_scheme(fake):
    """Before: no WWW-Authenticate header (RFC 6750 3 asks for one)."""
    locked = TestClient(create_app(fake.hooks(), token="right", auth_throttle=AuthThrottle()),
                        raise_server_exceptions=False)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = locked.get("/api/live", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "www-authenticate" not in locked.get("/api/live", headers={
        "Authorization": "Bearer right"}).headers


def test_a_host_with_a_user_part_is_refused(client):
    response = client.get("/api/live", headers={"host": "127.0.0.1:1@evil.example"})
    assert response.status_code == 421 and response.json()["error"].startswith("unknown Host")
