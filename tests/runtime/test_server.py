"""The console server thread: binds loopback, refuses a taken port, bounds connections, stops fast."""

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgecl.errors import ConfigError
from edgecl.runtime.server import (HEALTH_RESERVE, StatusServer, check_bind, is_loopback,
                                   resolve_token)
from edgecl.web import ConsoleHooks, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from console_fakes import FakeConsole  # noqa: E402


@pytest.fixture()
def fake(tmp_path):
    return FakeConsole(tmp_path / "queue", items=1)


def serve(fake, **kwargs) -> StatusServer:
    server = StatusServer(create_app(fake.hooks(), token=kwargs.pop("token", None)), "127.0.0.1", 0,
                          **kwargs)
    server.start()
    return server


def get(server, path, method="GET", headers=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method,
                                 headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def status_of(server, path, **kwargs) -> int:
    try:
        return get(server, path, **kwargs)[0]
    except urllib.error.HTTPError as err:
        return err.code


def test_serves_api_metrics_and_pages(fake):
    server = serve(fake)
    try:
        assert server.host == "127.0.0.1" and server.port > 0 and server.alive
        assert json.loads(get(server, "/healthz")[1])["status"] == "ok"
        assert b"edgecl_fps" in get(server, "/metrics")[1]
        assert b"<nav" in get(server, "/label")[1]
        assert status_of(server, "/nope") == 404
    finally:
        server.stop()
    assert not server.alive


def test_token_over_real_http(fake):
    server = serve(fake, token="tok")
    try:
        assert status_of(server, "/api/live") == 401
        assert status_of(server, "/api/live", headers={"Authorization": "Bearer tok"}) == 200
    finally:
        server.stop()


def test_taken_port_raises_oserror(fake):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        server = StatusServer(create_app(fake.hooks()), "127.0.0.1", holder.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
        assert not server.alive
    finally:
        holder.close()


def test_stop_is_prompt_with_an_open_keepalive_connection(fake):
    server = serve(fake, timeout_s=30)
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in conn.recv(4096)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3.0
    conn.close()


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_idle_or_trickling_connection_is_closed(fake, sent):
    server = serve(fake, timeout_s=0.5)
    try:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        conn.sendall(sent)
        started = time.monotonic()
        assert conn.recv(4096) == b""  # closed by the server, no answer to a half request
        assert time.monotonic() - started < 3.0
        conn.close()
    finally:
        server.stop()


def test_connection_cap_spares_the_watchdogs_address(fake):
    """Before: a host with several addresses (127.0.0.2-6 here; aliases, an IPv6 /64 on a LAN)
    held the whole cap, 16 connections each, and /healthz answered 503 to the watchdog."""
    server = serve(fake, max_connections=3, timeout_s=10)
    try:
        idle = _fill_the_cap_from_other_addresses(server)
        assert _health_from(server, "127.0.0.5").startswith(b"HTTP/1.1 503")
        assert _health_from(server, "127.0.0.1").startswith(b"HTTP/1.1 200")
        for conn in idle:
            conn.close()
        time.sleep(0.3)
        assert _health_from(server, "127.0.0.5").startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def _fill_the_cap_from_other_addresses(server, n: int = 3) -> list:
    """Open ``n`` idle connections from 127.0.0.2, 127.0.0.3 ... (the cap of a server made with
    ``max_connections=n``); returns them."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                     source_address=(f"127.0.0.{2 + k}", 0)) for k in range(n)]
    time.sleep(0.2)
    return idle


def _health_from(server, source_ip: str) -> bytes:
    health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    return _request_from(server.port, source_ip, health)


def test_over_long_and_traversal_ids_over_real_http(fake):
    server = serve(fake)
    try:
        # an id that cannot name an item is one that names none: 404, as for an unknown one
        assert status_of(server, "/api/labels/" + "a" * 5000 + "/image") == 404
        assert status_of(server, "/api/labels/" + "a" * 20000 + "/image") in (404, 414, 431)
        assert status_of(server, "/api/labels/..%2F..%2Fetc%2Fpasswd/image") == 404
        assert status_of(server, "/api/labels/%2E%2E/image") == 404
        assert status_of(server, "/healthz") == 200  # still serving
    finally:
        server.stop()


def test_check_bind(monkeypatch):
    import socket

    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.7", 0))]
        if host == "robot.local" else resolve(host, *a, **k)))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, "")
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.20", "robot.local"):
        with pytest.raises(ConfigError, match="server.token"):
            check_bind(host, "")
        with pytest.raises(ConfigError):
            check_bind(host, "   ")
        check_bind(host, "tok")


def test_a_host_no_device_can_bind_is_refused_before_the_start():
    """Before: 'server.host: 127.0.0.1:8080' or an unknown name passed the checks; the runtime
    ran without its console, logging "HTTP server not started ... (Name or service not known)"
    every 30 s, and exited 0."""
    for host, why in (("127.0.0.1:8080", "not an IP address or a host name (the port goes in "
                                         "server.port)"),
                      ("http://robot7", "not an IP address or a host name"),
                      ("nosuch.invalid", "this device cannot resolve that name (")):
        with pytest.raises(ConfigError) as caught:
            check_bind(host, "a-token-of-twenty-chars!")
        assert str(caught.value).startswith(f"server.host={host}: {why}")


@pytest.mark.parametrize("token, shown", [("tökén-twenty-chars!!", "'ö' (U+00F6)"),
                                          ("ab\ncd-twenty-chars!!", "'\\n' (U+000A)"),
                                          ("tab\there-twenty-chars", "'\\t' (U+0009)")])
def test_a_console_token_no_browser_can_send_is_refused_at_start(token, shown):
    """Before: the runtime started, and no browser (nor the health check) could send it."""
    with pytest.raises(ConfigError) as caught:
        check_bind("127.0.0.1", token)
    assert str(caught.value) == (f"the console token (server.token or $EDGECL_TOKEN) holds "
                                 f"{shown}, which no browser sends in a header: use printable "
                                 f"ASCII (e.g. openssl rand -hex 16)")
    check_bind("127.0.0.1", "a token with spaces and ~!@#$%")


def test_resolve_token(monkeypatch):
    monkeypatch.delenv("EDGECL_TOKEN", raising=False)
    assert resolve_token("") == ""
    assert resolve_token(" cfg ") == "cfg"
    monkeypatch.setenv("EDGECL_TOKEN", "env")
    assert resolve_token("cfg") == "env"


def test_console_hooks_are_served_as_they_are_given():
    server = StatusServer(ConsoleHooks(health=lambda: {"status": "ok"}, metrics=lambda: b"m 1\n",
                                       models=lambda: [{"version": "v0001"}]), port=0)
    server.start()
    try:
        assert json.loads(get(server, "/api/models")[1]) == [{"version": "v0001"}]
    finally:
        server.stop()


def _request_from(port: int, source_ip: str, raw: bytes, timeout_s: float = 5.0) -> bytes:
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout_s,
                                    source_address=(source_ip, 0))
    data = b""
    try:
        conn.sendall(raw)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:  # closed by the server without an answer
        return data
    except TimeoutError:  # answered; the connection stays open until the server's deadline
        return data
    finally:
        conn.close()


def test_one_client_cannot_take_every_connection_slot(fake):
    server = serve(fake, max_connections=10, max_per_client=2, timeout_s=10)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        assert _request_from(server.port, "127.0.0.2", health).startswith(b"HTTP/1.1 200")
        # the watchdog's address: a third answers /healthz alone (before: closed unanswered,
        # so 16 idle connections of any local process failed the container's health check)
        assert _request_from(server.port, "127.0.0.1", health).startswith(b"HTTP/1.1 200")
        # asked with keep-alive, the spare slot still closes after its answer
        kept = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answer = _request_from(server.port, "127.0.0.1", kept, timeout_s=3.0)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()
        pages = b"GET /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        refused = _request_from(server.port, "127.0.0.1", pages)
        assert refused.startswith(b"HTTP/1.1 503") and b"only /healthz is answered" in refused
        reserve = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
                   for _ in range(HEALTH_RESERVE)]
        time.sleep(0.2)
        assert _request_from(server.port, "127.0.0.1", health) == b""  # beyond it: closed
        for conn in reserve:
            conn.close()
        for conn in held:
            conn.close()
        time.sleep(0.3)
        assert _request_from(server.port, "127.0.0.1", health).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def test_a_body_that_does_not_arrive_in_time_is_408(fake, monkeypatch):
    from edgecl.web import app as web_app

    monkeypatch.setattr(web_app, "BODY_TIMEOUT_S", 0.5)
    server = serve(fake, timeout_s=10)
    try:
        started = time.monotonic()
        slow = (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        reply = _request_from(server.port, "127.0.0.1", slow, timeout_s=1.5)
        assert reply.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in reply
        assert time.monotonic() - started < 3.0
        assert fake.answers == []
    finally:
        server.stop()


def test_the_concurrency_warning_is_logged_once_a_minute(caplog):
    import logging

    from edgecl.runtime.server import _OncePerMinute

    logger = logging.getLogger("edgecl.test.flood")
    flood = _OncePerMinute("Exceeded concurrency limit.")
    logger.addFilter(flood)
    with caplog.at_level(logging.WARNING, logger="edgecl.test.flood"):
        for _ in range(500):
            logger.warning("Exceeded concurrency limit.")
        logger.warning("something else")
        flood._last_s -= 61.0
        logger.warning("Exceeded concurrency limit.")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Exceeded concurrency limit.", "something else",
                     "Exceeded concurrency limit. (499 more in the last minute)"]


def test_allowed_host_names_include_this_machine_and_the_configured_ones():
    from edgecl.runtime.server import allowed_host_names

    names = allowed_host_names(" Drone7.lab.example. , ,other ")
    host = socket.gethostname().lower()
    assert {"localhost", host, f"{host}.local", "drone7.lab.example", "other"} <= names
    assert "" not in names


def make_cert(folder: Path, name: str = "console") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (it makes the test certificates)")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_the_console_speaks_https_with_the_given_certificate(fake, tmp_path):
    import ssl

    cert, key = make_cert(tmp_path)
    server = serve(fake, token="tok", tls_cert=str(cert), tls_key=str(key))
    try:
        assert server.scheme == "https"
        context = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(f"https://127.0.0.1:{server.port}/api/live",
                                     headers={"Authorization": "Bearer tok"})
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            assert resp.status == 200 and "fps" in json.loads(resp.read())
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            get(server, "/healthz")                   # plain HTTP on the TLS port gets nothing
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://127.0.0.1:{server.port}/healthz", timeout=5,
                                   context=ssl.create_default_context())   # not a trusted CA
    finally:
        server.stop()


def test_check_bind_checks_the_tls_files_and_warns_about_clear_text(tmp_path, caplog):
    cert, key = make_cert(tmp_path)
    other_cert, other_key = make_cert(tmp_path, "other")
    check_bind("0.0.0.0", "a" * 16, str(cert), str(key))
    assert caplog.text == ""
    check_bind("0.0.0.0", "tok", str(cert), str(key))
    assert "the console token has 3 characters" in caplog.text and "clear text" not in caplog.text
    check_bind("0.0.0.0", "a" * 16)
    assert "server.host=0.0.0.0 without TLS" in caplog.text
    caplog.clear()
    check_bind("127.0.0.1", "")
    assert caplog.text == ""
    for pair, fragment in [((cert, other_key), "not a certificate and its own unencrypted"),
                           ((tmp_path / "missing.pem", key), "certificate file not found"),
                           ((cert, tmp_path / "missing.key"), "private key file not found"),
                           ((tmp_path, key), "certificate file is not a file"),
                           ((key, key), "not a PEM file holding a certificate"),
                           ((cert, cert), "not a PEM file holding a private key")]:
        with pytest.raises(ConfigError, match=fragment) as err:
            check_bind("0.0.0.0", "tok", str(pair[0]), str(pair[1]))
        assert "\n" not in str(err.value)


def test_an_encrypted_key_is_refused_without_asking_for_a_password(tmp_path):
    import subprocess

    cert, key = make_cert(tmp_path)
    locked = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:pw",
                    "-out", str(locked)], check=True, capture_output=True)
    with pytest.raises(ConfigError, match="is an encrypted private key; a device starts "
                                          "unattended"):
        check_bind("0.0.0.0", "tok", str(cert), str(locked))
    traditional = tmp_path / "traditional.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-traditional", "-aes256", "-passout",
                    "pass:pw", "-out", str(traditional)], check=True, capture_output=True)
    with pytest.raises(ConfigError, match="is an encrypted private key"):
        check_bind("0.0.0.0", "tok", str(cert), str(traditional))


def test_a_tls_connection_that_never_starts_its_handshake_is_closed(fake, tmp_path):
    """The caps live in the HTTP protocol, which a TLS connection reaches only after its
    handshake: a raw connection that never sent one was held for asyncio's 60 s."""
    cert, key = make_cert(tmp_path)
    server = serve(fake, tls_cert=str(cert), tls_key=str(key), timeout_s=0.5)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        started = time.monotonic()
        assert silent.recv(1) == b""                       # closed by the server
        assert time.monotonic() - started < 5.0
        silent.close()
    finally:
        server.stop()


def _wrong_tokens_refused(server, forwarded_for) -> list[int]:
    return [status_of(server, "/api/live", headers={"Authorization": "Bearer wrong",
                                                    "X-Forwarded-For": ip})
            for ip in forwarded_for]


def test_a_forwarded_address_counts_only_from_a_trusted_proxy(fake):
    """Before: uvicorn trusted X-Forwarded-For from 127.0.0.1 by default, so any process on the
    device gave itself a new address for each wrong token and was never throttled."""
    from edgecl.web.app import AuthThrottle

    def serve_throttled(**kwargs):
        server = StatusServer(create_app(fake.hooks(), token="t" * 20,
                                         auth_throttle=AuthThrottle(limit=3)),
                              "127.0.0.1", 0, **kwargs)
        server.start()
        return server

    server = serve_throttled()
    try:
        codes = _wrong_tokens_refused(server, [f"10.9.0.{i}" for i in range(6)])
        assert codes == [401, 401, 401, 429, 429, 429], "one client: its socket address"
    finally:
        server.stop()
    proxied = serve_throttled(trusted_proxies="127.0.0.1")
    try:  # behind a proxy on the device, each forwarded client has its own count
        assert _wrong_tokens_refused(proxied, [f"10.9.0.{i}" for i in range(6)]) == [401] * 6
    finally:
        proxied.stop()


def test_trusted_proxies_must_be_addresses(tmp_path):
    from edgecl.config import load_config

    assert load_config(None, ["server.trusted_proxies=127.0.0.1, 10.0.0.0/8"]).server.trusted_proxies
    with pytest.raises(ConfigError, match="'server.trusted_proxies' .*'proxy.lan' is not an IP "
                                          "address or network"):
        load_config(None, ["server.trusted_proxies=127.0.0.1,proxy.lan"])


def test_an_ipv6_host_is_typed_as_is_and_logged_in_brackets(fake, caplog):
    """Before: server.host=:: was read as a YAML mapping and refused, and the console's URL
    was logged as http://::1:PORT/."""
    import logging

    from edgecl.config import load_config
    from edgecl.runtime.server import url_host

    assert load_config(None, ["server.host=::"]).server.host == "::"
    assert load_config(None, ["server.host='::1'"]).server.host == "::1"
    assert (url_host("::1"), url_host("[::1]"), url_host("127.0.0.1")) == ("[::1]", "[::1]",
                                                                           "127.0.0.1")
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    caplog.set_level(logging.INFO, logger="edgecl.runtime.server")
    server = StatusServer(create_app(fake.hooks()), "::1", 0)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"::1 cannot be bound here: {exc}")
    try:
        assert f"console on http://[::1]:{server.port}/ (healthz, metrics, api, pages)" in caplog.messages
    finally:
        server.stop()


def test_on_a_dual_stack_socket_an_ipv4_client_is_its_ipv4_address(fake):
    """Before: with server.host '::' an IPv4 client's address was ::ffff:127.0.0.1, so the
    watchdog's 127.0.0.1 was not exempt from the connection cap (its /healthz got 503), and a
    proxy on 127.0.0.1 listed in server.trusted_proxies was not trusted."""
    from edgecl.runtime.server import client_address, proxy_addresses

    assert client_address("::ffff:127.0.0.1") == "127.0.0.1" and client_address("::1") == "::1"
    assert proxy_addresses("127.0.0.1, 10.0.0.1/8") == ["127.0.0.1", "::ffff:7f00:1",
                                                        "10.0.0.0/8", "::ffff:a00:0/104"]
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    server = StatusServer(create_app(fake.hooks()), "::", 0, max_connections=3, timeout_s=10)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"'::' cannot be bound here: {exc}")
    idle = _fill_the_cap_from_other_addresses(server)
    try:
        assert _health_from(server, "127.0.0.5").startswith(b"HTTP/1.1 503")
        assert _health_from(server, "127.0.0.1").startswith(b"HTTP/1.1 200")
    finally:
        for conn in idle:
            conn.close()
        server.stop()


def _checked_server(fake, tmp_path, monkeypatch):
    """The health check module, a console server with a token, and a config naming both."""
    from edgecl.runtime import healthcheck

    monkeypatch.delenv("EDGECL_TOKEN", raising=False)
    monkeypatch.delenv(healthcheck.URL_ENV, raising=False)
    server = serve(fake, token="a-long-console-token")
    config = tmp_path / "edgecl.yaml"
    config.write_text(f"server:\n  enabled: true\n  port: {server.port}\n"
                      f"  token: a-long-console-token\n")
    return healthcheck, server, config


def test_the_health_check_uses_the_configs_token_and_port(fake, tmp_path, monkeypatch):
    """Before, Dockerfile.jetson's check sent $EDGECL_TOKEN only: a token written in the YAML
    made every check a 401 and the container 'unhealthy'."""
    from types import SimpleNamespace

    healthcheck, server, config = _checked_server(fake, tmp_path, monkeypatch)
    try:
        assert healthcheck.main([str(config)]) == 0
        config.write_text(f"server:\n  port: {server.port}\n")  # the console off
        assert healthcheck.check(str(config)) == (
            f"{config} has server.enabled: false, so the runtime serves no /healthz (set it to "
            f"true, or give the address in $EDGECL_HEALTH_URL)")
        config.write_text(f"server:\n  enabled: true\n  port: {server.port}\n")
        assert healthcheck.check(str(config)).startswith(
            f"http://127.0.0.1:{server.port}/healthz answered 401")
        monkeypatch.setenv("EDGECL_TOKEN", "a-long-console-token")  # as the runtime reads it
        assert healthcheck.check(str(config)) is None
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a container's proxy setting
        assert healthcheck.check(str(config)) is None
    finally:
        server.stop()
    assert "did not answer" in healthcheck.check(str(config))
    config.write_text("server:\n  prot: 1\n")
    assert healthcheck.check(str(config)).startswith("cannot read the configuration: ")
    section = SimpleNamespace(host="0.0.0.0", port=8765, tls_cert="")
    assert healthcheck.health_url(section) == "http://127.0.0.1:8765/healthz"
    section = SimpleNamespace(host="fd00::5", port=9000, tls_cert="cert.pem")
    assert healthcheck.health_url(section) == "https://[fd00::5]:9000/healthz"


def test_the_health_check_passes_while_another_local_client_is_refused_for_wrong_tokens(
        fake, tmp_path, monkeypatch):
    """Before: a client on the device sending a stale token (a scraper, a script) got
    127.0.0.1 refused with 429 for a minute, the health check's right token included: the
    container was marked unhealthy and restarted, again each time that client came back. Now
    the refused address's /healthz gets the status alone (no token compared): ok, or 503."""
    healthcheck, server, config = _checked_server(fake, tmp_path, monkeypatch)
    try:
        for _ in range(25):
            status_of(server, "/api/status", headers={"Authorization": "Bearer stale"})
        assert status_of(server, "/api/status",
                         headers={"Authorization": "Bearer a-long-console-token"}) == 429
        status, body = get(server, "/healthz", headers={"Authorization": "Bearer guess"})
        assert status == 200 and json.loads(body) == {"status": "ok"}  # no token compared
        assert healthcheck.main([str(config)]) == 0
        fake.health_status = "stuck"  # a hung device is still restarted
        assert healthcheck.check(str(config)) == (
            f'http://127.0.0.1:{server.port}/healthz answered 503: {{"status": "stuck"}}')
    finally:
        server.stop()


def test_the_health_check_knows_another_program_on_the_port(tmp_path, monkeypatch):
    """A program holding the console's port (the runtime then runs without its server) answered
    /healthz with 200, and the check said healthy."""
    import http.server
    import threading

    from edgecl.runtime import healthcheck

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>ok</html>")

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv(healthcheck.URL_ENV, raising=False)
        config = tmp_path / "edgecl.yaml"
        config.write_text(f"server:\n  enabled: true\n  port: {other.server_address[1]}\n")
        assert healthcheck.check(str(config)).endswith(
            "answered, but not as edgecl does (no JSON status): another program there?")
    finally:
        other.shutdown()


def test_the_health_check_is_one_line_for_a_port_that_speaks_no_http(tmp_path, monkeypatch):
    """Before: an ssh server on the port gave http.client's BadStatusLine traceback."""
    import socket
    import threading

    from edgecl.runtime import healthcheck

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"SSH-2.0-OpenSSH_8.9\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    monkeypatch.delenv(healthcheck.URL_ENV, raising=False)
    config = tmp_path / "edgecl.yaml"
    config.write_text(f"server:\n  enabled: true\n  port: {listener.getsockname()[1]}\n")
    try:
        assert healthcheck.check(str(config)).endswith("(not HTTP): another program there?")
    finally:
        listener.close()


@pytest.mark.parametrize("url, why", [
    ("not a url", "holds a blank or a control character (no URL does)"),
    ("localhost/healthz", "is not an http(s)://HOST:PORT/healthz address"),
    ("file:///etc/passwd", "is not an http(s)://HOST:PORT/healthz address"),
    ("http://[::1/healthz", "is no URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:99999/healthz", "is no URL (Port out of range 0-65535)"),
    ("http://127.0.0.1:0/healthz", "names port 0"),
    # before: sent, and 'X-Injected: 1 answered, but not as edgecl does ... another program'
    ("http://127.0.0.1:1/healthz\r\nX-Injected: 1", "holds a blank or a control character (no URL does)"),
    ("http://127.0.0.1:1/heal th", "holds a blank or a control character (no URL does)"),
    # before: 'did not answer: Name or service not known', the password printed
    ("http://user:pw@127.0.0.1:1/healthz",
     "holds a user name or password (the console takes a token: server.token)"),
])
def test_the_health_check_says_a_bad_address_in_one_line(tmp_path, monkeypatch, url, why):
    """Before: 'not a url' and a broken IPv6 address printed tracebacks, port 99999 was
    'Connection refused', and file:///etc/passwd was read as an answer."""
    from edgecl.runtime import healthcheck

    monkeypatch.setenv(healthcheck.URL_ENV, url)
    config = tmp_path / "edgecl.yaml"
    config.write_text("server:\n  enabled: true\n")
    shown = url.replace(":pw@", ":***@")
    assert healthcheck.check(str(config)) == f"$EDGECL_HEALTH_URL={shown!r} {why}"


def test_the_health_check_takes_one_argument(capsys):
    from edgecl.runtime import healthcheck

    assert healthcheck.main(["a.yaml", "extra"]) == 1
    assert capsys.readouterr().err == ("unhealthy: one argument is taken (the config file), got "
                                       "2: a.yaml extra\n")


def test_the_health_check_says_a_token_no_header_can_carry(tmp_path, monkeypatch, capsys):
    """Before: a UnicodeEncodeError (or 'Invalid header value') traceback."""
    from edgecl.runtime import healthcheck

    monkeypatch.delenv(healthcheck.URL_ENV, raising=False)
    monkeypatch.setenv("EDGECL_TOKEN", "tökén✓")
    config = tmp_path / "edgecl.yaml"
    config.write_text("server:\n  enabled: true\n")
    assert healthcheck.main([str(config)]) == 1
    assert capsys.readouterr().err == (
        "unhealthy: the console token (server.token or $EDGECL_TOKEN) holds 'ö' (U+00F6), which "
        "no browser sends in a header: use printable ASCII (e.g. openssl rand -hex 16)\n")


def test_the_health_check_says_another_servers_error_page_in_one_line(tmp_path, monkeypatch):
    """Before: a plain HTTP server's 404 page was printed whole, over many lines."""
    import http.server
    import threading

    from edgecl.runtime import healthcheck

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's hook
            body = b"<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<title>Error</title>\n" + b"x" * 400
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(healthcheck.URL_ENV, f"http://127.0.0.1:{server.server_port}/healthz")
        config = tmp_path / "edgecl.yaml"
        config.write_text("server:\n  enabled: true\n")
        said = healthcheck.check(str(config))
    finally:
        server.shutdown()
    assert "\n" not in said and said.endswith("...")
    assert said.startswith(f"http://127.0.0.1:{server.server_port}/healthz answered 404: "
                           f"<!DOCTYPE HTML> <html lang=\"en\"> <head> <title>Error</title> x")


def _closed_at_once(conn, within_s: float = 2.0) -> bool:
    """Whether the server closed ``conn`` without waiting (True), or holds it (False)."""
    conn.settimeout(within_s)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _tls_health_from(server, cert, source_ip: str) -> bytes:
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                   source_address=(source_ip, 0))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def test_connections_that_never_start_a_tls_handshake_are_capped_per_client(fake, tmp_path):
    """Before: the per-client cap lived in the HTTP protocol, which sees a TLS connection only
    after its handshake: one host opening connections that never started one held a file
    descriptor each for the handshake timeout, thousands of them, and the camera, the metrics
    database and accept() itself failed with 'Too many open files'."""
    cert, key = make_cert(tmp_path)
    server = serve(fake, tls_cert=str(cert), tls_key=str(key), max_per_client=2, timeout_s=5)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                     source_address=("127.0.0.2", 0)) for _ in range(2)]
    extra = []
    try:
        extra = [socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                          source_address=("127.0.0.2", 0)) for _ in range(5)]
        assert [_closed_at_once(conn) for conn in extra] == [True] * 5
        assert [_closed_at_once(conn, 0.3) for conn in held] == [False, False]  # in handshake
        assert _tls_health_from(server, cert, "127.0.0.1").startswith(b"HTTP/1.1 200")
        assert _tls_health_from(server, cert, "127.0.0.3").startswith(b"HTTP/1.1 200")
        for conn in held:
            conn.close()
        time.sleep(0.3)
        # the closed connections' count is released: the address is served again
        assert _tls_health_from(server, cert, "127.0.0.2").startswith(b"HTTP/1.1 200")
    finally:
        for conn in held + extra:
            conn.close()
        server.stop()


def test_a_timed_out_handshake_releases_its_count(fake, tmp_path):
    cert, key = make_cert(tmp_path)
    server = serve(fake, tls_cert=str(cert), tls_key=str(key), max_per_client=1, timeout_s=0.5)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                          source_address=("127.0.0.2", 0))
        assert silent.recv(1) == b""                    # the handshake timed out: closed
        silent.close()
        time.sleep(0.2)
        assert _tls_health_from(server, cert, "127.0.0.2").startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def test_open_connections_are_bounded_in_all_but_for_the_watchdog(fake):
    """Many addresses (an IPv6 host's /64) each within its own cap: at most 4 x
    max_connections are held open; the watchdog's address is not counted."""
    server = serve(fake, max_connections=1, max_per_client=2, timeout_s=10)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                     source_address=(f"127.0.0.{2 + k}", 0)) for k in range(4)]
    try:
        time.sleep(0.2)
        over = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                        source_address=("127.0.0.9", 0))
        assert _closed_at_once(over)
        over.close()
        assert _health_from(server, "127.0.0.1").startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()
        server.stop()


def _reply(raw: bytes) -> tuple[bytes, dict, dict]:
    """The status line, the lower-case headers and the JSON body of a raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    return status, headers, json.loads(body)


@pytest.mark.parametrize("raw, why", [
    (b"GARBAGE\r\n\r\n", "illegal request line"),
    (b"GET /healthz HTTP/1.1\r\n\r\n", "Missing mandatory Host: header"),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Found multiple Host: headers"),
    (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
     "bad Content-Length"),
    (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
     "bad Content-Length"),
    (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\n",
     "conflicting Content-Length headers"),
    (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     "illegal chunk header"),
    ("GET /é HTTP/1.1\r\nHost: a\r\n\r\n".encode(), "illegal request line"),
    # before: read as chunked and answered; a proxy in front may have read the Content-Length
    (b"POST /api/labels/f0000 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
     b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"d\r\n{\"boxes\": []}\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding given"),
])
def test_a_malformed_request_gets_a_one_line_json_400(fake, raw, why):
    """Before: uvicorn's '400 text/plain Invalid HTTP request received.'"""
    server = serve(fake)
    try:
        status, headers, body = _reply(_request_from(server.port, "127.0.0.1", raw))
        assert status == b"HTTP/1.1 400 Bad Request"
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"connection"] == b"close"
        assert body == {"error": f"invalid HTTP request: {why}"}
        assert fake.answers == []
    finally:
        server.stop()


def test_the_server_wide_cap_answers_in_json(fake):
    """Before: uvicorn's '503 text/plain Service Unavailable'."""
    server = serve(fake, max_connections=1, timeout_s=10)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                    source_address=("127.0.0.2", 0))
    try:
        time.sleep(0.2)
        status, headers, body = _reply(_health_from(server, "127.0.0.3"))
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert headers[b"content-type"] == b"application/json"
        assert body == {"error": "the console is serving as many connections and requests as "
                                 "it takes (1): try again shortly"}
    finally:
        idle.close()
        server.stop()


def _fresh_log_throttles() -> None:
    """Forget what the server's log throttles passed (they live as long as the process)."""
    import logging

    from edgecl.runtime.server import _THROTTLED_LOGS, _OncePerMinute

    for name in {entry[0] for entry in _THROTTLED_LOGS}:
        for found in logging.getLogger(name).filters:
            if isinstance(found, _OncePerMinute):
                found._last_s, found._dropped = float("-inf"), 0


def test_malformed_requests_and_websocket_upgrades_are_logged_once_a_minute(fake, caplog):
    """Before: one line per malformed request (500 requests, 500 lines), and per WebSocket
    upgrade uvicorn's advice to pip install a WebSocket library."""
    import logging

    from edgecl.runtime.server import WEBSOCKET_REFUSED

    server = serve(fake)
    _fresh_log_throttles()
    caplog.set_level(logging.WARNING)
    upgrade = (b"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, close\r\n"
               b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    try:
        for _ in range(5):
            assert _request_from(server.port, "127.0.0.1", b"GARBAGE\r\n\r\n").startswith(
                b"HTTP/1.1 400")
            answer = _request_from(server.port, "127.0.0.1", upgrade)
            assert answer.startswith(b"HTTP/1.1 200")             # answered as plain HTTP
    finally:
        server.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
    assert said == ["Invalid HTTP request received (answered 400).", WEBSOCKET_REFUSED]
    assert "pip install" not in caplog.text


def test_running_out_of_file_descriptors_is_one_line_a_minute(caplog):
    """Before: asyncio logged 'socket.accept() out of system resource' with a traceback at
    every try: 12 MB of log in 25 s."""
    import asyncio
    import errno
    import logging

    from edgecl.runtime.server import OUT_OF_FILES, _THROTTLED_LOGS, _throttle_logs

    _throttle_logs()
    _fresh_log_throttles()
    loop = asyncio.new_event_loop()
    listener = socket.socket()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(100):  # as asyncio's selector loop reports an accept() of EMFILE
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                    "socket": listener})
            throttle = next(f for f in logging.getLogger("asyncio").filters
                            if getattr(f, "message", "") == _THROTTLED_LOGS[-1][1])
            throttle._last_s -= 61.0
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files"), "socket": listener})
    finally:
        listener.close()
        loop.close()
    assert caplog.messages == [f"{OUT_OF_FILES} (EMFILE: Too many open files)",
                               f"{OUT_OF_FILES} (EMFILE: Too many open files) (99 more in the "
                               f"last minute)"]
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)


def test_forwarded_values_that_are_no_address_count_as_one_client(fake):
    """Before: behind a trusted proxy, X-Forwarded-For 'bad0', 'bad1' ... were a new client
    each, and passed the wrong-token throttle."""
    from edgecl.web.app import AuthThrottle

    server = StatusServer(create_app(fake.hooks(), token="t" * 20,
                                     auth_throttle=AuthThrottle(limit=3)),
                          "127.0.0.1", 0, trusted_proxies="127.0.0.1")
    server.start()
    try:
        codes = _wrong_tokens_refused(server, [f"bad{i}" for i in range(6)])
        assert codes == [401, 401, 401, 429, 429, 429]
        assert _wrong_tokens_refused(server, ["10.9.0.1"]) == [401]  # an address: its own count
    finally:
        server.stop()


def test_a_host_with_a_user_part_is_refused_over_real_http(fake):
    """Before: 'Host: 127.0.0.1:1@evil.example' was read as the IP address 127.0.0.1 (200)."""
    server = StatusServer(create_app(fake.hooks(), allowed_hosts=frozenset({"localhost"})),
                          "127.0.0.1", 0)
    server.start()
    try:
        for host, code in (("127.0.0.1:1@evil.example", b"421"), ("127.0.0.1:80", b"200"),
                           ("localhost", b"200")):
            raw = f"GET /api/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            assert _request_from(server.port, "127.0.0.1", raw).startswith(b"HTTP/1.1 " + code)
    finally:
        server.stop()
