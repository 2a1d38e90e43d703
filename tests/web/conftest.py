"""Fixtures of the console tests: a fake runtime, the app served on 127.0.0.1, a headless browser."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from console_browser import find_browser, make_driver  # noqa: E402
from console_fakes import FakeConsole  # noqa: E402


@pytest.fixture()
def fake(tmp_path):
    """A fresh fake runtime behind the console hooks."""
    return FakeConsole(tmp_path / "queue")


@pytest.fixture()
def console_server(fake):
    """The console app's :class:`~edgecl.runtime.server.StatusServer` on a free 127.0.0.1 port
    (a test may stop it, and start another on its port, to play a runtime restart)."""
    from edgecl.runtime.server import StatusServer
    from edgecl.web import create_app

    server = StatusServer(create_app(fake.hooks()), "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def served(console_server, fake):
    """The console app on a free 127.0.0.1 port: yields ``(base_url, fake)``."""
    return f"http://127.0.0.1:{console_server.port}", fake


@pytest.fixture()
def browser(tmp_path_factory):
    """Headless Chromium (fresh profile, console log on); skips with the reason when absent."""
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    driver = make_driver(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()
