"""The bounded console load: every request answered, figures reported."""

import pytest

from edgecl.web.load import run_load


def test_load_on_the_served_console(served):
    base, _fake = served
    report = run_load(base, requests=120, threads=8)
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] == 120 and report["rps"] > 0
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["max_ms"]


def test_load_counts_refusals(fake):
    from edgecl.runtime.server import StatusServer
    from edgecl.web import create_app

    server = StatusServer(create_app(fake.hooks(), token="t"), "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert run_load(base, requests=10, threads=2)["error_kinds"] == {"HTTP 401": 10}
        assert run_load(base, requests=10, threads=2, token="t")["errors"] == 0
    finally:
        server.stop()


def test_load_bounds():
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:1", requests=0)
