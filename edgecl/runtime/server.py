"""The console's HTTP server: uvicorn in one daemon thread, started and stopped by the runtime.

The app (:func:`edgecl.web.create_app`) only reads state through the runtime's hooks, so serving
never blocks the inference loop. Bounds: at most ``max_connections`` connections and requests at
once (uvicorn's ``limit_concurrency``; beyond it a request gets a 503 JSON error, logged once a
minute); at most ``max_per_client`` open connections from one client address and
:data:`OPEN_CONNECTIONS_FACTOR` times ``max_connections`` in all, counted as a connection is
accepted, before any TLS handshake (:class:`_CappedListener`: one over a cap is closed at once);
127.0.0.1 and ::1 (the watchdog's, :data:`WATCHDOG_ADDRESSES`) are exempt from the first and the
last bound (so no host on the LAN, with however many addresses, can turn ``/healthz`` into 503
for the watchdog) and may open :data:`HEALTH_RESERVE` more answered on ``/healthz`` alone (so no
process on the device holding its connections can either); a connection that has not sent a
complete request head within ``timeout_s`` seconds (idle after connecting, a header trickle, or
idle keep-alive) is closed, and a body must arrive within :data:`edgecl.web.app.BODY_TIMEOUT_S`.
A malformed request (or one framed by both ``Content-Length`` and ``Transfer-Encoding``) gets a
400 JSON error; uvicorn's per-request warnings and asyncio's out-of-file-descriptors error are
logged at most once a minute (:class:`_OncePerMinute`).

Binds 127.0.0.1 by default; :func:`check_bind` refuses any other address without a token, and
warns when the token would cross the network in clear text. With ``server.tls_cert`` and
``server.tls_key`` the console speaks HTTPS (uvicorn's TLS; the files are checked at start by
:func:`edgecl.tls.check_cert_and_key`).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time

from edgecl.errors import ConfigError
from edgecl.web import ConsoleHooks, create_app
from edgecl.web.app import client_address

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_ENV = "EDGECL_TOKEN"
MIN_TOKEN_CHARS = 16
"""A console token shorter than this draws a warning at start (off loopback)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Args:
        host: a bind address or ``localhost``.

    Returns:
        True for ``localhost``, 127.0.0.0/8 and ``::1``.
    """
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
"""A host name as RFC 1123 writes one (labels of letters, digits and inner hyphens)."""


def bind_host_problem(host: str) -> str | None:
    """Why ``server.host`` cannot be bound, or None: it is neither an IP address nor a host
    name (``127.0.0.1:8080``, a URL), or a name this device cannot resolve.

    Args:
        host: ``server.host`` (an empty value is left to the server: it binds every address).

    Returns:
        The reason, to follow ``server.host=VALUE:``.
    """
    text = host.strip()
    if not text:
        return None
    try:
        ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text)
        return None
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(text):
        port = " (the port goes in server.port)" if re.search(r":\d+$", text) else ""
        return f"not an IP address or a host name{port}"
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return f"this device cannot resolve that name ({why}); give one of its addresses"
    return None


def resolve_token(configured: str = "") -> str:
    """The console token: ``$EDGECL_TOKEN`` when set (keeps secrets out of YAML), else config.

    Args:
        configured: ``server.token`` from the config.

    Returns:
        The token, stripped; empty when none is set.
    """
    return (os.environ.get(TOKEN_ENV, "").strip() or (configured or "").strip())


def token_problem(token: str) -> str | None:
    """Why a console token cannot travel in an ``Authorization`` header, in words (``None``
    when it can): browsers send printable ASCII only, and a line break ends the header.

    Args:
        token: the resolved token (:func:`resolve_token`).
    """
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is None:
        return None
    return (f"holds {bad!r} (U+{ord(bad):04X}), which no browser sends in a header: use "
            f"printable ASCII (e.g. openssl rand -hex 16)")


def check_bind(host: str, token: str | None, tls_cert: str = "", tls_key: str = "") -> None:
    """Refuse to serve beyond loopback without a token, check the TLS files, and warn when the
    token would travel in clear text (called once at runtime start).

    Args:
        host: ``server.host``.
        token: the resolved token (:func:`resolve_token`).
        tls_cert: ``server.tls_cert`` (empty: HTTP).
        tls_key: ``server.tls_key``.

    Raises:
        ConfigError: ``host`` is no address this device can bind (:func:`bind_host_problem`),
            ``token`` cannot travel in a header (:func:`token_problem`), or ``host`` is not a
            loopback address while ``token`` is empty, or the TLS files are missing,
            not PEM, or not a certificate and its own key.
    """
    problem = bind_host_problem(host)
    if problem is not None:  # before: started, then "HTTP server not started" every 30 s
        raise ConfigError(f"server.host={host}: {problem}")
    token = (token or "").strip()
    problem = token_problem(token)
    if problem is not None:  # before: started, and no browser could ever send it
        raise ConfigError(f"the console token (server.token or ${TOKEN_ENV}) {problem}")
    if not is_loopback(host) and not token:
        raise ConfigError(f"server.host={host} is reachable from the network: set server.token "
                          f"or ${TOKEN_ENV} (or bind server.host=127.0.0.1)")
    if tls_cert.strip() or tls_key.strip():
        from edgecl.tls import check_cert_and_key

        check_cert_and_key("server.tls_cert", "server.tls_key", tls_cert.strip(), tls_key.strip())
    elif not is_loopback(host):
        log.warning("server.host=%s without TLS: the console token and every answer cross the "
                    "network in clear text; set server.tls_cert and server.tls_key (HTTPS)", host)
    if not is_loopback(host) and len(token) < MIN_TOKEN_CHARS:
        log.warning("the console token has %d characters: at 20 guesses a minute per client "
                    "address a short one is found; use %d or more (e.g. openssl rand -hex 16)",
                    len(token), MIN_TOKEN_CHARS)


def proxy_addresses(text: str) -> list[str]:
    """``server.trusted_proxies`` as uvicorn matches them: each address or network (host bits
    allowed: ``10.0.0.1/8`` is ``10.0.0.0/8``), an IPv4 one also as the IPv4-mapped IPv6 form
    an IPv4 client has on a dual-stack socket (``::ffff:127.0.0.1``).

    Args:
        text: comma-separated addresses or networks (checked by the config).
    """
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        net = ipaddress.ip_network(item, strict=False)
        single = net.num_addresses == 1 and "/" not in item
        out.append(str(net.network_address) if single else str(net))
        if net.version == 4:
            mapped = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
            out.append(str(mapped.network_address) if single else str(mapped))
    return out


def url_host(host: str) -> str:
    """A bind address as a URL writes it: an IPv6 address in brackets (``[::1]``)."""
    host = host.strip()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_host_names(extra: str = "") -> frozenset[str]:
    """The names a request's ``Host`` may give besides IP addresses (DNS-rebinding check, see
    :func:`edgecl.web.app.host_allowed`): ``localhost``, this machine's host name (also with
    ``.local``, as mDNS announces it) and ``extra`` (no DNS lookup: an offline device would
    wait for the resolver at every start).

    Args:
        extra: ``server.allowed_hosts``: comma-separated names (e.g. ``drone7.lab.example``).

    Returns:
        Lower-case names.
    """
    name = socket.gethostname().strip().lower().rstrip(".")
    names = {"localhost", name, f"{name}.local"}
    names |= {n.strip().lower().rstrip(".") for n in extra.split(",")}
    return frozenset(n for n in names if n)


class _OncePerMinute(logging.Filter):
    """Pass a repeated log record at most once a minute, with the count of those dropped since:
    a flood of refused or malformed requests must not flood the log.

    Args:
        message: the record's message (with ``prefix``: how it starts).
        every_s: the least seconds between two records passed.
        says: the text the passed record carries instead (``None``: ``message``).
        prefix: match records whose message starts with ``message`` (asyncio's carries the
            socket after it).

    A passed record loses its traceback (a client's doing, or a process short of file
    descriptors, is no fault of the code); an :class:`OSError` it carried is named in a few
    words instead.
    """

    def __init__(self, message: str, every_s: float = 60.0, says: str | None = None,
                 prefix: bool = False):
        super().__init__()
        self.message = message
        self.every_s = every_s
        self.says = says
        self.prefix = prefix
        self._last_s = float("-inf")
        self._dropped = 0

    def _matches(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return text.startswith(self.message) if self.prefix else text == self.message

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat within the minute."""
        if not self._matches(record):
            return True
        now = time.monotonic()
        if now - self._last_s < self.every_s:
            self._dropped += 1
            return False
        text = self.says or self.message
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno is not None:
            text += f" ({errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror})"
        if self._dropped:
            text += f" ({self._dropped} more in the last minute)"
        record.msg, record.args = text, ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self._last_s, self._dropped = now, 0
        return True


WEBSOCKET_REFUSED = ("a WebSocket upgrade was refused: the console serves no WebSocket "
                     "(answered as plain HTTP)")
UPGRADE_REFUSED = ("a protocol upgrade was refused: the console speaks HTTP/1.1 alone "
                   "(answered as plain HTTP)")
OUT_OF_FILES = ("the console could not accept connections: the process ran out of file "
                "descriptors (each open connection holds one; see server.max_connections, "
                "server.max_per_client and ulimit -n)")
_THROTTLED_LOGS = (
    ("uvicorn.error", "Exceeded concurrency limit.", None, False),
    ("uvicorn.error", "Invalid HTTP request received.",
     "Invalid HTTP request received (answered 400).", False),
    ("uvicorn.error", WEBSOCKET_REFUSED, None, False),
    ("uvicorn.error", UPGRADE_REFUSED, None, False),
    # asyncio logs it with a traceback at every try (about one a second per listener): 12 MB
    # of log in 25 s under a flood of connections
    ("asyncio", "socket.accept() out of system resource", OUT_OF_FILES, True),
)
"""(logger, message, text said instead, prefix match) of the records :class:`_OncePerMinute`
throttles."""


def _throttle_logs() -> None:
    """Put a :class:`_OncePerMinute` on each record of :data:`_THROTTLED_LOGS` (once a process)."""
    for name, message, says, prefix in _THROTTLED_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OncePerMinute) and f.message == message
                   for f in logger.filters):
            logger.addFilter(_OncePerMinute(message, says=says, prefix=prefix))


WATCHDOG_ADDRESSES = frozenset({"127.0.0.1", "::1"})
"""Client addresses exempt from the server-wide connection cap (still held to their own
``max_per_client``): the device's watchdog and the container's HEALTHCHECK poll ``/healthz``
from there. Before, a host with several addresses (aliases, any IPv6 host's /64) filled the
cap 16 connections each, and ``/healthz`` answered 503 to the watchdog."""


HEALTH_RESERVE = 4
"""Connections a watchdog address may open beyond its ``max_per_client``, answered only on
``/healthz`` (any other path: 503). Before, 16 idle keep-alive connections of any process on the
device made the next one close unanswered, and the container's HEALTHCHECK failed."""

_HEALTH_PATH = "/healthz"

OPEN_CONNECTIONS_FACTOR = 4
"""Open connections accepted in all (watchdog addresses not counted), as a multiple of
``max_connections``: room for idle keep-alive connections and TLS handshakes under way, while
a flood of connections from many addresses stays far from the process's file descriptors."""
_REFUSED_PER_ACCEPT = 256
"""Connections over a cap one ``accept()`` closes before it gives the event loop back."""


class _ConnectionCounts:
    """Open connections per client address (:func:`client_address`) and in all, counted from
    accept to close.

    Args:
        max_per_client: connections one address may hold (0: no bound); a watchdog address
            (:data:`WATCHDOG_ADDRESSES`) :data:`HEALTH_RESERVE` more.
        max_total: connections all other addresses may hold together (0: no bound).
    """

    def __init__(self, max_per_client: int, max_total: int):
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.per_client: dict[str, int] = {}
        self.total = 0
        self._lock = threading.Lock()

    def admit(self, key: str) -> bool:
        """Count one more connection from ``key``, or refuse it (False) over a cap."""
        watchdog = key in WATCHDOG_ADDRESSES
        with self._lock:
            count = self.per_client.get(key, 0)
            bound = self.max_per_client + (HEALTH_RESERVE if watchdog else 0)
            if ((self.max_per_client and count >= bound)
                    or (not watchdog and self.max_total and self.total >= self.max_total)):
                return False
            self.per_client[key] = count + 1
            self.total += 0 if watchdog else 1
            return True

    def release(self, key: str) -> None:
        """Count one connection from ``key`` closed."""
        with self._lock:
            left = self.per_client.get(key, 0) - 1
            if left > 0:
                self.per_client[key] = left
            else:
                self.per_client.pop(key, None)
            if key not in WATCHDOG_ADDRESSES:
                self.total = max(0, self.total - 1)


class _CountedConnection(socket.socket):
    """An accepted connection that releases its count once when closed (asyncio's transports
    close their socket when a connection ends, a TLS handshake timeout included)."""

    _release = None

    def close(self) -> None:
        """Close the socket and release its count (once)."""
        release, self._release = self._release, None
        try:
            super().close()
        finally:
            if release is not None:
                release()


class _CappedListener(socket.socket):
    """A listening socket whose ``accept()`` applies the connection caps
    (:class:`_ConnectionCounts`) before anything reads a byte: a connection over a cap is closed
    at once and the next one taken, so neither TLS handshakes nor idle connections from one host
    can take the process's file descriptors. asyncio's selector loop calls ``accept()`` on this
    very object."""

    counts: _ConnectionCounts | None = None

    def accept(self):
        """The next connection within the caps, as ``(socket, address)``.

        Raises:
            BlockingIOError: no connection waits (or only refused ones did, up to
                :data:`_REFUSED_PER_ACCEPT`), as the base ``accept`` of a non-blocking socket.
            OSError: the system's (``EMFILE``: out of file descriptors).
        """
        for _ in range(_REFUSED_PER_ACCEPT):
            fd, address = self._accept()
            conn = _CountedConnection(self.family, self.type, self.proto, fileno=fd)
            key = client_address(str(address[0])) if isinstance(address, tuple) else ""
            counts = self.counts
            if counts is None or counts.admit(key):
                if counts is not None:
                    conn._release = lambda: counts.release(key)
                if socket.getdefaulttimeout() is None and self.gettimeout():
                    conn.setblocking(True)
                return conn, address
            conn.close()
        raise BlockingIOError(errno.EAGAIN, "connections over the caps refused; more wait")


def _health_only(app, max_per_client: int):
    """The ASGI ``app`` answering ``/healthz`` alone; any other request gets a 503 JSON error
    naming the bound; the connection closes after either (a keep-alive health poller would
    otherwise hold the spare slot)."""
    body, headers = _json_error(f"too many connections from this address (more than "
                                f"{max_per_client} open): only /healthz is answered on this one; "
                                f"close idle connections and ask again")

    async def health_only(scope, receive, send):
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        if scope.get("path") == _HEALTH_PATH:
            async def closing(message):  # a spare slot is not kept open by keep-alive
                if message.get("type") == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
                await send(message)

            await app(scope, receive, closing)
            return
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return health_only


def _json_error(message: str, *extra: tuple[bytes, bytes]
                ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of a one-line JSON error that closes the connection, with the
    ``extra`` headers before ``Connection``."""
    body = json.dumps({"error": message}).encode()
    return body, [(b"content-type", b"application/json"),
                  (b"content-length", str(len(body)).encode()), *extra,
                  (b"connection", b"close")]


def _json_response(status: int, reason: bytes, message: str) -> list:
    """The h11 events of a one-line JSON error that closes the connection."""
    import h11

    body, headers = _json_error(message, (b"cache-control", b"no-store"),
                                (b"x-content-type-options", b"nosniff"))
    return [h11.Response(status_code=status, reason=reason, headers=headers),
            h11.Data(data=body), h11.EndOfMessage()]


def _strict_connection_class():
    """h11's server connection refusing a request framed twice, and keeping why it refused."""
    import h11

    class StrictConnection(h11.Connection):
        """An ``h11.Connection`` that also refuses a request carrying both ``Content-Length``
        and ``Transfer-Encoding`` (read as chunked, it would be read otherwise by a proxy in
        front: request smuggling; RFC 9112 6.3 lets a server refuse it)."""

        refused_because = ""

        def next_event(self):  # noqa: D102 - h11's
            try:
                event = super().next_event()
            except h11.RemoteProtocolError as exc:
                self.refused_because = str(exc).split(": bytearray(", 1)[0][:120]
                raise
            if isinstance(event, h11.Request):
                names = {name.lower() for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    self.refused_because = "both Content-Length and Transfer-Encoding given"
                    raise h11.RemoteProtocolError(self.refused_because, error_status_hint=400)
            return event

    return StrictConnection


def _timed_protocol(timeout_s: float, max_per_client: int = 0):
    """An h11 protocol class that closes a connection without a request head in ``timeout_s``
    and answers a watchdog address's connections beyond its ``max_per_client`` (its
    :data:`HEALTH_RESERVE`, which :class:`_CappedListener` admits) on ``/healthz`` alone; its
    errors (a malformed request, the server-wide concurrency cap) are one-line JSON."""
    import h11
    from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_per_client: dict[str, int] = {}
    strict_connection = _strict_connection_class()

    class TimedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol plus a request-head deadline, a watchdog reserve and JSON
        errors."""

        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            self.conn = strict_connection(
                h11.SERVER, config.h11_max_incomplete_event_size
                if config.h11_max_incomplete_event_size is not None
                else DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
            # the concurrency cap is applied here (uvicorn's answers text/plain)
            self._concurrency_limit, self.limit_concurrency = self.limit_concurrency, None

        def connection_made(self, transport) -> None:  # noqa: D102 - asyncio protocol hook
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            self._client_key = client_address(str(peer[0])) if isinstance(peer, tuple) and peer else ""
            count = open_per_client.get(self._client_key, 0) + 1
            open_per_client[self._client_key] = count
            # the listening socket refused any connection over the caps as it accepted it
            # (_CappedListener): beyond max_per_client here is a watchdog's reserve
            if (max_per_client and self._client_key in WATCHDOG_ADDRESSES
                    and count > max_per_client):
                self.app = _health_only(self.app, max_per_client)
            if self._client_key in WATCHDOG_ADDRESSES:
                self._concurrency_limit = None  # within its own max_per_client, never a 503
            else:
                self.app = self._bounded(self.app)
            self._arm_head_deadline()

        def connection_lost(self, exc) -> None:  # noqa: D102 - asyncio protocol hook
            key = getattr(self, "_client_key", None)
            if key is not None:
                left = open_per_client.get(key, 1) - 1
                if left > 0:
                    open_per_client[key] = left
                else:
                    open_per_client.pop(key, None)
                self._client_key = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:  # noqa: D102 - uvicorn hook
            super().on_response_complete()
            self._arm_head_deadline()

        def send_400_response(self, msg: str) -> None:
            """Answer a malformed request with a 400 JSON error naming the fault, and close."""
            why = self.conn.refused_because or "malformed request"
            for event in _json_response(400, b"Bad Request", f"invalid HTTP request: {why}"):
                self.transport.write(self.conn.send(event))
            self.transport.close()

        def _unsupported_upgrade_warning(self) -> None:
            """One line (throttled, :data:`_THROTTLED_LOGS`) instead of uvicorn's advice to
            install a WebSocket library."""
            upgrade = self._get_upgrade()
            self.logger.warning(WEBSOCKET_REFUSED if upgrade == b"websocket" else UPGRADE_REFUSED)

        def _bounded(self, app):
            """``app`` behind the server-wide cap: beyond ``limit_concurrency`` connections or
            requests at once, a 503 JSON error (uvicorn's check, its answer in JSON)."""
            async def bounded(scope, receive, send):
                limit = self._concurrency_limit
                # this request's task is in self.tasks already: uvicorn counted before adding it
                if (scope.get("type") == "http" and limit is not None
                        and (len(self.connections) >= limit or len(self.tasks) > limit)):
                    self.logger.warning("Exceeded concurrency limit.")
                    body, headers = _json_error(
                        f"the console is serving as many connections and requests as it takes "
                        f"({limit}): try again shortly", (b"cache-control", b"no-store"),
                        (b"retry-after", b"1"))
                    await send({"type": "http.response.start", "status": 503,
                                "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
                await app(scope, receive, send)

            return bounded

        def _arm_head_deadline(self) -> None:
            waiting_after = self.cycle

            def expire() -> None:
                if self.cycle is waiting_after and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(timeout_s, expire)

    return TimedH11Protocol


def _handshake_bounded(server_class, timeout_s: float):
    """A uvicorn ``Server`` whose TLS listener drops a connection that has not finished its
    handshake within ``timeout_s`` (asyncio's default is 60 s).

    Why: the idle timeout lives in the HTTP protocol, which sees a TLS connection only once its
    handshake is done; a raw connection that never starts one was held for a minute (the
    connection caps apply at accept time: :class:`_CappedListener`). Needs the standard asyncio
    loop (its ``create_server`` is patched on the running loop instance while uvicorn starts).
    """

    class HandshakeBoundedServer(server_class):
        """uvicorn's server with the TLS handshake bounded (see :func:`_handshake_bounded`)."""

        async def startup(self, sockets=None):
            """uvicorn's start-up, its TLS listeners created with ``ssl_handshake_timeout``."""
            import asyncio

            loop = asyncio.get_running_loop()
            create = loop.create_server

            async def create_server(*args, **kwargs):
                if kwargs.get("ssl") is not None:
                    kwargs["ssl_handshake_timeout"] = timeout_s
                return await create(*args, **kwargs)

            loop.create_server = create_server
            try:
                await super().startup(sockets=sockets)
            finally:
                del loop.create_server

    return HandshakeBoundedServer


class StatusServer:
    """uvicorn serving one ASGI app in a daemon thread.

    Args:
        app: the ASGI app (:func:`edgecl.web.create_app`, which sets the token), or
            :class:`~edgecl.web.ConsoleHooks` served without a token.
        host: bind address (127.0.0.1 by default: not reachable from the network).
        port: TCP port (0 picks a free one; read :attr:`port` after :meth:`start`).
        max_connections: cap on open connections and in-flight requests (uvicorn
            ``limit_concurrency``; a request beyond it is answered 503); connections beyond
            :data:`OPEN_CONNECTIONS_FACTOR` times it (watchdog addresses not counted) are closed
            as they are accepted.
        timeout_s: seconds a connection may stay without sending a complete request head
            (after connecting or between keep-alive requests) before it is closed.
        max_per_client: open connections one client address may hold, TLS handshakes under
            way included (further ones are closed as they are accepted; 0: no bound).
        tls_cert: certificate (chain) file, PEM: serve HTTPS (with ``tls_key``); empty: HTTP.
        tls_key: its unencrypted private key file, PEM.
        trusted_proxies: ``server.trusted_proxies``: comma-separated addresses (or networks)
            of reverse proxies whose ``X-Forwarded-For`` names the client; empty: no proxy
            header is trusted and a client is the address it connects from. (uvicorn trusted
            one from 127.0.0.1 by default: any process on the device could then give itself
            a new address for each wrong token and pass the guess throttle, or have another
            address locked out.)
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8765, *,
                 max_connections: int = 64, timeout_s: float = 5.0, max_per_client: int = 16,
                 tls_cert: str = "", tls_key: str = "", trusted_proxies: str = ""):
        self.app = create_app(app) if isinstance(app, ConsoleHooks) else app
        self.tls_cert = tls_cert.strip()
        self.tls_key = tls_key.strip()
        self.trusted_proxies = proxy_addresses(trusted_proxies)
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.max_per_client = max_per_client
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """True while the server thread runs and accepts connections (for the watchdog)."""
        return bool(self._thread and self._thread.is_alive() and self._server
                    and self._server.started)

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self.host.strip("[]"), self.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = _CappedListener(family, kind, proto)
        sock.counts = _ConnectionCounts(self.max_per_client,
                                        OPEN_CONNECTIONS_FACTOR * self.max_connections)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock

    def start(self, ready_timeout_s: float = 10.0) -> None:
        """Bind, then serve in a daemon thread; returns once the server accepts connections.

        Args:
            ready_timeout_s: how long to wait for uvicorn's start-up.

        Raises:
            OSError: the port is taken, the address is invalid, or the server did not start.
        """
        import uvicorn

        sock = self._bind()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none",
                                http=_timed_protocol(self.timeout_s, self.max_per_client),
                                limit_concurrency=self.max_connections,
                                proxy_headers=bool(self.trusted_proxies),
                                forwarded_allow_ips=self.trusted_proxies or None,
                                timeout_keep_alive=self.timeout_s, timeout_graceful_shutdown=2,
                                ssl_certfile=self.tls_cert or None,
                                ssl_keyfile=self.tls_key or None,
                                # the connection caps live in the listening socket's accept()
                                # (_CappedListener), which asyncio's selector loop calls on the
                                # socket given; uvloop accepts on its own, past them
                                loop="asyncio")
        self._server = server = (_handshake_bounded(uvicorn.Server, self.timeout_s)(config)
                                 if self.tls_cert else uvicorn.Server(config))
        _throttle_logs()

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except Exception:  # noqa: BLE001 - the server thread must not take the runtime down
                log.exception("console server thread ended with an error")
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="edgecl-http", daemon=True)
        self._thread.start()
        deadline_s = time.monotonic() + ready_timeout_s
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline_s:
            time.sleep(0.02)
        if not server.started:
            self.stop()
            raise OSError(f"console server did not start on {self.host}:{self.port}")
        log.info("console on %s://%s:%d/ (healthz, metrics, api, pages)", self.scheme,
                 url_host(self.host), self.port)

    @property
    def scheme(self) -> str:
        """``https`` with TLS files, else ``http``."""
        return "https" if self.tls_cert else "http"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: close idle connections, give in-flight requests up to 2 s (idempotent).

        Args:
            timeout_s: how long to wait for the server thread.
        """
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout_s)
                if self._thread.is_alive():
                    log.warning("console server thread did not stop within %.0f s", 2 * timeout_s)
        self._thread = None
        self._server = None
