"""The field console: a FastAPI app over :class:`~edgecl.web.hooks.ConsoleHooks`.

Routes (JSON unless said otherwise; every error is ``{"error": "one line"}``):

* ``GET /healthz`` (503 when a stage is stuck), ``GET /metrics`` (Prometheus text; every
  ``GET`` route also answers ``HEAD``, as uptime checks send it),
  ``GET /openapi.json`` (the API's schema; the CDN-based Swagger page is not served, the
  console's offline ``/api-docs`` page lists the routes instead);
* ``GET /api/live``, ``GET /api/frame.jpg`` (204 before the first frame; names burnt in,
  ASCII only, unless ``labels=0``; ``seq=n``: that kept frame), ``GET /api/live/detections``
  (the frame's labels as JSON text, any script, with the ``seq`` of its JPEG),
  ``GET /api/models``, ``POST /api/models/{version}/promote``, ``POST /api/models/rollback``,
  ``GET /api/labels/pending`` (``console=ID``: each item says whether another console has it
  open, :mod:`edgecl.web.leases`), ``POST /api/labels/{id}/open?console=ID``,
  ``GET /api/labels/{id}/image``, ``POST /api/labels/{id}``,
  ``GET /api/labels/answered`` (``limit=n``: the latest n, at most :data:`MAX_ANSWERS`),
  ``POST /api/labels/{id}/correct``,
  ``POST /api/labels/{id}/withdraw``,
  ``GET /api/classes``, ``GET /api/forgetting``, ``GET /api/auth`` (whether a token is needed);
  ``/api/models`` and ``/api/forgetting`` send an ``ETag`` and answer a poll whose
  ``If-None-Match`` names it with 304 and no body;
* pages: ``/`` (Live), ``/label``, ``/models``, ``/forgetting``, ``/api-docs`` and their assets
  under ``/static`` (shipped in the package, no CDN).

Security: state changes are POST only; request bodies are bounded (:data:`MAX_BODY_BYTES`, 413)
and must arrive within :data:`BODY_TIMEOUT_S` (408; a slow body would hold a connection slot);
ids are checked before any hook sees them (a label item id by the queue's rule, a model version
against :data:`ID_PATTERN`; one that cannot name anything is a 404, as an unknown one is); with
a token every request except the static page shells, their assets and ``/api/auth`` needs
``Authorization: Bearer TOKEN`` (401 with ``WWW-Authenticate: Bearer`` otherwise; compared in
constant time; a client address that sent :data:`AUTH_FAILURES_PER_MINUTE` wrong or missing
tokens within a minute gets 429 with ``Retry-After`` until the oldest of them is a minute old,
so a token cannot be guessed at the server's full speed; every client named by no IP address
counts as one, :data:`NON_IP_CLIENT`). An answer to an unknown or answered item is refused (404,
409) before its boxes are read. Against other web pages open in the
operator's browser: a POST whose ``Origin`` (or ``Sec-Fetch-Site``) says it comes from another
site is refused (403: a bodyless cross-site POST needs no CORS preflight, so without this check
any page could roll the served model back), and with ``allowed_hosts`` a request whose ``Host``
is not the device's is refused (421: DNS rebinding, a foreign name resolved to the device). Every
response forbids framing (clickjacking of the promote and rollback buttons) and scripts other
than the console's own files (:data:`CONTENT_SECURITY_POLICY`). A hook that raises
anything else than an :class:`~edgecl.errors.EdgeclError` is logged and counted and answered
with a 500 JSON body; the server and the detection loop go on. A full disk (or a state
directory that cannot be written) is the device's fault, not the request's: it is answered 507
with the one line naming what could not be written where, logged as one line and counted, and
the same request succeeds once there is room. An answer sent while the runtime stops is 503
(nothing stored: send it again once it runs).

Statuses of a request the device understood but refuses: 404 an id that names nothing, 409 a
state that forbids it (an item already answered), 415 a body not sent as UTF-8 JSON, and 422
(:data:`INVALID_CONTENT`) a body whose content is not valid, whatever finds the fault: bytes that
are not JSON, JSON that is not an answer, or boxes the item's frame refuses (inverted, empty,
outside the frame); its one line names what and where (``box 2: ...``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import mimetypes
import re
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecl.data.answers import (MAX_ANSWER_BYTES, decode_answer, parse_answer, shown,
                                 valid_item_id)
from edgecl.errors import (ConflictError, EdgeclError, LabelError, NotFoundError, StorageError,
                           UnavailableError, storage_fault)
from edgecl.web.hooks import ConsoleHooks
from edgecl.web.leases import OpenItems

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = MAX_ANSWER_BYTES
"""Largest accepted request body (bytes); larger ones get 413 before any hook runs. The largest
is an answer (:data:`~edgecl.data.answers.MAX_ANSWER_BYTES`); a 2 MiB body of 700,000 empty
objects took 140 ms of the interpreter to refuse, and a dozen clients sending them cut detection
from 5 to 1 fps (the parse now runs off the event loop, on half as much at most)."""
BODY_TIMEOUT_S = 10.0
"""Seconds a request body may take to arrive whole (408 after): a client trickling its body
would otherwise hold one of the server's connection slots for as long as it likes."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INSUFFICIENT_STORAGE = 507
"""HTTP status of a request the device could not store (its disk is full): retry later."""
INVALID_CONTENT = 422
"""HTTP status of a well-formed request whose content is invalid (FastAPI's own for a body its
schema refuses): every malformed answer body, whether the fault is in its bytes, its JSON or
its boxes against the item's frame (a :class:`~edgecl.errors.LabelError`)."""
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Scripts only from the console's own files: should a name a device shows (a class, a file,
an alert) ever reach the page as markup, no inline script or event handler in it could run.
Inline styles stay allowed (bars and charts set their sizes); images include the ``blob:`` URLs
the pages make of frames fetched with the token."""
SECURITY_HEADERS = ((b"x-frame-options", b"DENY"),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cross-origin-resource-policy", b"same-origin"))
"""On every response. ``Cross-Origin-Resource-Policy``: another site's page open in the
operator's browser could show the live frame and queued frames of a console without a token in
an ``<img>``; the browser now refuses them to it."""
CONSOLE_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
"""A Label page's console id (:mod:`edgecl.web.leases`): random, made by the page."""
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Model versions: 1..128 safe characters, no separator, no leading dot, dash or underscore
(label item ids follow the queue's stricter rule, :func:`edgecl.data.answers.valid_item_id`)."""
ANSWER_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "boxes": {"type": "array", "maxItems": 1000, "default": [], "items": {
            "type": "object", "additionalProperties": False, "required": ["class", "xyxy"],
            "properties": {"class": {"type": "string", "minLength": 1, "maxLength": 100},
                           "xyxy": {"type": "array", "items": {"type": "number"},
                                    "minItems": 4, "maxItems": 4},
                           "score": {"type": ["number", "null"]}}}},
        "skip": {"type": "boolean", "default": False}}}
"""The answer body as documented in ``/openapi.json`` (documentation only: answers are read by
:func:`edgecl.data.answers.parse_answer`, the rule ``edgecl labels answer`` uses too)."""
JSON_TYPES = frozenset({"application/json"})
PAGES = {"/": "live.html", "/live": "live.html", "/label": "label.html",
         "/models": "models.html", "/forgetting": "forgetting.html", "/api-docs": "api.html"}
PUBLIC_PATHS = frozenset({*PAGES, "/favicon.ico", "/api/auth"})
"""Paths served without a token: page shells and assets carry no device data."""
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEALTH_PATH = "/healthz"
STATUS_ONLY = "edgecl_status_only"
"""A request scope's state key: the health check of an address refused for wrong tokens, which
gets the status alone (:class:`AuthThrottle`)."""
AUTH_FAILURES_PER_MINUTE = 20
"""Wrong or missing tokens one client address may send in a minute before it gets 429."""
MAX_ANSWERS = 50
"""Answers ``GET /api/labels/answered`` lists at most (its ``limit``: fewer)."""
AUTH_TRACKED_CLIENTS = 4096
"""Client addresses whose recent token failures are remembered (the least recent go first)."""


def check_id(value: str, what: str = "model version") -> str:
    """Validate an id taken from a URL before it reaches a hook (and any path).

    An id that cannot name anything is answered as one that names nothing (404), so that a
    client sees one rule: ``-1`` and ``a.b`` are both "no such ...".

    Args:
        value: the id as received.
        what: what it should name, for the message (``"model version"``).

    Returns:
        ``value`` unchanged.

    Raises:
        NotFoundError: (HTTP 404) empty, longer than 128 characters, or with a character outside
            ``[A-Za-z0-9_.-]``, a leading ``.``, ``-`` or ``_``, or a ``..``; the one-line
            message names the id.
    """
    if not ID_PATTERN.fullmatch(value) or ".." in value:
        raise NotFoundError(f"no {what} {shown(value)}: 1-128 characters of A-Z a-z 0-9 _ . -, "
                            f"starting with a letter or digit")
    return value


READ_ONLY_LABEL_PATHS = ("pending", "answered")
"""``/api/labels/<name>`` routes that are read only: a POST there is a 405, not an answer to
an item of that name."""


def _error(status: int, message: str, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class AuthThrottle:
    """Counts wrong or missing tokens per client address in a sliding window.

    Args:
        limit: failures allowed per window; the next request from that address is refused
            until the oldest failure leaves the window.
        window_s: the window, seconds.
        clock: monotonic seconds clock (injectable for tests).
        max_clients: addresses remembered at most (the least recently failing are forgotten,
            so a flood of spoofed addresses costs bounded memory).
    """

    def __init__(self, limit: int = AUTH_FAILURES_PER_MINUTE, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_clients: int = AUTH_TRACKED_CLIENTS):
        self.limit = int(limit)
        self.window_s = float(window_s)
        self.clock = clock
        self.max_clients = int(max_clients)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.refused = 0

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        horizon = self.clock() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after_s(self, client: str) -> float:
        """Seconds until ``client`` may try a token again (0.0: now)."""
        times = self._recent(client)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - self.clock())

    def failed(self, client: str) -> None:
        """Record one wrong or missing token from ``client``."""
        times = self._recent(client)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.limit)
        times.append(self.clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)


def _status_for(exc: EdgeclError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StorageError):  # the device's disk, not the request: send it again later
        return INSUFFICIENT_STORAGE
    if isinstance(exc, UnavailableError):  # the runtime is stopping: send it again later
        return 503
    if isinstance(exc, LabelError):  # the request's content (boxes, names) is not valid
        return INVALID_CONTENT
    return 400


HOST_VALUE = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::[0-9]{1,5})?")
"""A ``Host`` value as RFC 9110 7.2 writes one (lower case): a name or an IPv4 address, or an
IPv6 address in brackets, then a numeric port or none."""


def _host_name(host: str) -> str | None:
    """The name part of a ``Host`` value (``[::1]:8765`` -> ``::1``, ``Dev.local.`` ->
    ``dev.local``), or ``None`` for a value of another form (``127.0.0.1:1@evil.example``)."""
    found = HOST_VALUE.fullmatch(host.strip().lower())
    if found is None:
        return None
    return found["v6"] if found["v6"] is not None else found["name"].rstrip(".")


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` names this device (DNS-rebinding check).

    An IP address is always allowed (a page that rebinds a foreign NAME to the device sends
    that name), as are the names in ``allowed``; either may be followed by ``:PORT``. A value
    of any other form is refused (``127.0.0.1:1@evil.example`` is no IP address).

    Args:
        host: the ``Host`` header (``None`` when absent: HTTP/1.0 tools, allowed).
        allowed: lower-case names (``localhost``, the device's host names, ``server.allowed_hosts``).

    Returns:
        True when the request may be served.
    """
    if host is None:
        return True
    name = _host_name(host)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in allowed


def origin_names(text: str) -> frozenset[str]:
    """Parse ``server.allowed_origins``.

    Args:
        text: comma-separated origins (``https://drone7.lab.example``, ``http://10.0.0.7:8080``).

    Returns:
        Lower-case ``scheme://host[:port]`` strings (empty entries dropped).
    """
    return frozenset(o.strip().lower().rstrip("/") for o in text.split(",") if o.strip())


def cross_site(scope, allowed_origins: frozenset[str] = frozenset()) -> str | None:
    """Why a state-changing request comes from another web site, or ``None``.

    Browsers send ``Origin`` with every cross-origin POST and ``Sec-Fetch-Site`` with every
    request; tools such as curl or the CLI send neither and are allowed (they carry the token
    when one is set). The page's own origin is the one whose host matches ``Host``; behind a
    reverse proxy that rewrites ``Host``, the origins the operators' browsers use are listed in
    ``allowed_origins``.

    Args:
        scope: the ASGI scope.
        allowed_origins: origins accepted whatever the ``Host`` (see :func:`origin_names`).

    Returns:
        A one-line reason, or ``None`` for a same-origin (or non-browser) request.
    """
    headers = Headers(scope=scope)
    origin, host = headers.get("origin"), headers.get("host")
    if origin is not None:
        parts = urlsplit(origin.strip())
        if origin.strip() == "null" or not parts.netloc:
            return f"request from an opaque origin ({origin.strip()[:40]!r})"
        if origin.strip().lower().rstrip("/") in allowed_origins:
            return None
        if host is None or parts.netloc.lower() != host.strip().lower():
            return (f"cross-site request from {origin.strip()[:80]} (Host: "
                    f"{(host or '').strip()[:80] or 'none'}; behind a reverse proxy, pass the "
                    f"Host header on or list the origin in server.allowed_origins)")
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"cross-site request (Sec-Fetch-Site: {site.strip()[:20]})"
    return None


NON_IP_CLIENT = "clients without an IP address"
"""The one client every request whose address is not an IP address counts as (the token
throttle's key): behind a trusted proxy, an ``X-Forwarded-For`` value such as ``bad0``, ``bad1``
... would otherwise be a new client each, and pass the throttle."""


def client_address(peer: str) -> str:
    """A client's address in one spelling, as the connection caps and the token throttle count
    it: an IPv4 client of a dual-stack socket (``::ffff:127.0.0.1``) is ``127.0.0.1``, an IPv6
    address is written compressed, and anything that is no IP address is
    :data:`NON_IP_CLIENT`.

    Args:
        peer: the address as the socket or a trusted proxy's header gives it.
    """
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return NON_IP_CLIENT
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _asked_for(method: str, path: str) -> str:
    """``METHOD PATH`` for a 404 or 405's one line: the path with control characters escaped,
    cut at 80 characters."""
    shown = repr(path)[1:-1]
    return f"{method} {shown if len(shown) <= 80 else shown[:80] + '...'}"


def _client(scope) -> str:
    """The client's address as the server saw it (:func:`client_address`), ``"unknown"`` when
    the server gives none."""
    client = scope.get("client")
    return client_address(str(client[0])) if client else "unknown"


class _Guard:
    """Pure ASGI middleware: host and origin checks, token check, body bound and deadline,
    security headers, and containment of any hook fault (module docstring).

    The body (at most :data:`MAX_BODY_BYTES`, declared or streamed) of a state-changing request
    is read before routing, so an oversized or slow one is answered 413 or 408 without reaching
    FastAPI's parser or a hook; a read request's body is not read.

    Args:
        app: the wrapped ASGI app.
        token: the bearer token, or None for no authentication.
        counters: dict whose ``"faults"`` entry counts contained 500s.
        allowed_hosts: the names a ``Host`` header may give (see :func:`host_allowed`);
            ``None``: any.
        throttle: the per-address count of token failures (a fresh :class:`AuthThrottle`
            when ``None``).
        allowed_origins: origins whose POSTs are accepted whatever the ``Host`` (a reverse
            proxy's public origin, see :func:`cross_site`).
    """

    def __init__(self, app, token: str | None, counters: dict,
                 allowed_hosts: frozenset[str] | None = None,
                 throttle: AuthThrottle | None = None,
                 allowed_origins: frozenset[str] = frozenset()):
        self.app = app
        self.allowed_origins = allowed_origins
        self.token = token.encode() if token else None
        self.counters = counters
        self.allowed_hosts = allowed_hosts
        self.throttle = throttle or AuthThrottle()
        self._throttle_logged_s = -math.inf

    def _needs_token(self, scope) -> bool:
        path = scope.get("path", "")
        return self.token is not None and not (path in PUBLIC_PATHS or path.startswith("/static/"))

    def _authorized(self, scope, headers: Headers) -> bool:
        if not self._needs_token(scope):
            return True
        value = headers.get("authorization")
        if value is None:
            return False
        scheme, _, given = value.encode("latin-1").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    def _throttled(self, scope) -> tuple[int, str, float] | None:
        """429 for a client address over its token-failure budget, else ``None``."""
        client = _client(scope)
        wait_s = self.throttle.retry_after_s(client)
        if wait_s <= 0:
            return None
        self.throttle.refused += 1
        now = time.monotonic()
        if now - self._throttle_logged_s >= 60.0:
            self._throttle_logged_s = now
            log.warning("console: %s sent %d wrong or missing tokens within %.0f s; requests "
                        "from there are refused for %.0f s (%d refused so far)", client,
                        self.throttle.limit, self.throttle.window_s, wait_s,
                        self.throttle.refused)
        return 429, (f"too many wrong or missing tokens from {client}: try again in "
                     f"{math.ceil(wait_s)} s"), wait_s

    def _refusal(self, scope) -> tuple | None:
        """The status and message (and, for 429, the seconds to wait) a request is refused
        with before routing, or ``None``."""
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and not host_allowed(headers.get("host"),
                                                               self.allowed_hosts):
            return 421, ("unknown Host: this device answers to its address, localhost or "
                         "server.allowed_hosts")
        method = scope.get("method", "GET")
        if method not in READ_METHODS:
            why = cross_site(scope, self.allowed_origins)
            if why:
                return 403, f"{why} refused: state changes come from this device's console only"
        if self._needs_token(scope):  # an address over its budget gets no token compared
            if (scope.get("path") == HEALTH_PATH and method in READ_METHODS
                    and self.throttle.retry_after_s(_client(scope)) > 0):
                # the address's health check shares it with the client sending wrong tokens:
                # it gets the status alone, whatever token it sends (none is compared), so a
                # stuck device still reads 503 and a healthy one is not restarted every minute
                scope.setdefault("state", {})[STATUS_ONLY] = True
                return None
            throttled = self._throttled(scope)
            if throttled is not None:
                return throttled
        if not self._authorized(scope, headers):
            self.throttle.failed(_client(scope))
            return 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'"
        path = scope.get("path", "")
        if method not in READ_METHODS and (path in PUBLIC_PATHS or path.startswith("/static/")):
            # worded as every other 405; no body read for public paths
            return 405, f"Method Not Allowed: {_asked_for(method, path)}"
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return 400, "invalid Content-Length"
        if declared is not None and int(declared) > MAX_BODY_BYTES:
            return 413, f"request body over {MAX_BODY_BYTES} bytes"
        return None

    async def _read_body(self, receive) -> tuple[bytes | None, tuple[int, str] | None]:
        """The whole body within :data:`BODY_TIMEOUT_S`, or the refusal (413, 408); ``(None,
        None)`` when the client went away."""
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TIMEOUT_S
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return None, (408, f"request body not received within {BODY_TIMEOUT_S:g} s")
            if message["type"] != "http.request":
                return None, None
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return None, (413, f"request body over {MAX_BODY_BYTES} bytes")
            if not message.get("more_body", False):
                return bytes(body), None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secure_send(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *SECURITY_HEADERS])
            await send(message)

        headers = scope.get("headers") or []
        if any(k == b"range" and b"," in v for k, v in headers):  # several ranges: the whole file
            scope = dict(scope, headers=[(k, v) for k, v in headers if k != b"range"])

        refusal = self._refusal(scope)
        if refusal is None and scope.get("method", "GET") not in READ_METHODS:
            body, refusal = await self._read_body(receive)
            if body is None and refusal is None:
                return
        else:
            body = None
        if refusal is not None:
            response = _error(*refusal)
            if response.status_code == 405:  # a public page or asset: read-only
                response.headers["Allow"] = "GET, HEAD"
            elif response.status_code == 401:  # the scheme expected (RFC 6750 3)
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, secure_send)
            return
        replayed = body is None
        started = False
        head = scope.get("method") == "HEAD"
        if head:  # every GET route answers HEAD with its headers (RFC 9110 9.3.2), no body
            scope = dict(scope, method="GET")

        async def replay_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            elif head and message.get("body"):
                message = dict(message, body=b"")
            await secure_send(message)

        try:
            await self.app(scope, replay_receive, tracking_send)
        except Exception:  # noqa: BLE001 - a hook fault must never reach the client or the loop
            self.counters["faults"] = self.counters.get("faults", 0) + 1
            log.exception("console: %s %s failed (contained; answered 500)", scope.get("method"),
                          scope.get("path"))
            if not started:
                await _error(500, "internal error (logged on the device)")(scope, receive,
                                                                            tracking_send)


def _image_file(path: Path) -> Response:
    """A label item's image, read whole before it is sent (a file streamed as it was answered,
    and moved, ended in a 500 or a cut-off body).

    Raises:
        OSError: the file is gone (or unreadable).
    """
    data = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})


def _json(value: Any, status: int = 200) -> Response:
    from edgecl.atomic import json_safe

    body = json.dumps(json_safe(value), default=str, allow_nan=False).encode()
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _json_unless_unchanged(request: Request, value: Any) -> Response:
    """``value`` as JSON with a strong ``ETag``; 304 with no body when the page has it already.

    A page that polls (the Models page every 5 s, the Forgetting page every 15 s) sends the
    ``ETag`` of what it shows as ``If-None-Match``: a device with a hundred versions then sends
    their rows once, not every few seconds over a drone's radio link (RFC 9110 section 13.1.2).
    """
    response = _json(value)
    tag = '"' + hashlib.blake2b(response.body, digest_size=16).hexdigest() + '"'
    sent = request.headers.get("if-none-match", "")
    if tag in (part.strip() for part in sent.split(",")):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": "no-cache"})
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "no-cache"
    return response


def _need(hook, what: str):
    if hook is None:
        raise NotFoundError(f"{what} is not available on this runtime")
    return hook


def _frame_not_kept(seq: int) -> NotFoundError:
    """The 404 of a live frame number the runtime no longer (or not yet) keeps."""
    return NotFoundError(f"live frame {seq} is not kept (only the newest few are; a later number "
                         "is not captured yet): ask for the newest")


def _queued_or_missing(hooks: ConsoleHooks, item_id: str) -> NotFoundError | None:
    """Look a label item up before its answer is parsed.

    Returns:
        ``None`` for a queued item (or when the runtime gives no look-up), the
        :class:`~edgecl.errors.NotFoundError` of one the queue does not hold as answerable
        (a skip may still set a malformed item aside: the caller decides).

    Raises:
        ConflictError: (409) the item was already answered or skipped.
    """
    if hooks.label_image is None:  # the answer hook says it all
        return None
    try:
        hooks.label_image(item_id)
    except NotFoundError as exc:
        return exc
    return None


def _parse_answer_body(raw: bytes, refused: NotFoundError | None) -> tuple[list, bool]:
    """Decode and read an answer's body (:func:`~edgecl.data.answers.decode_answer`,
    :func:`~edgecl.data.answers.parse_answer`); with ``refused``, raise it unless the body
    skips (the hook sets a malformed item aside), before any box is read.

    Raises:
        LabelError: the body is not an answer; its message starts with what failed.
        NotFoundError: ``refused``, for a body that does not skip.
    """
    try:
        data = decode_answer(raw, "request body")
    except LabelError as exc:
        raise LabelError(f"invalid request: {exc}") from None
    if refused is not None and not (isinstance(data, dict) and data.get("skip") is True):
        raise refused
    try:
        return parse_answer(data, allow_list=False)
    except LabelError as exc:
        raise LabelError(f"invalid answer: {exc}") from None


async def _read_answer_body(request: Request, refused: NotFoundError | None = None
                            ) -> tuple[list, bool] | Response:
    """An answer's body read by the rule ``edgecl labels answer`` uses, or the error response:
    415 for a body not sent as UTF-8 ``application/json``, 422 for one whose content is not an
    answer (:func:`~edgecl.data.answers.decode_answer`, :func:`~edgecl.data.answers.parse_answer`),
    and ``refused`` (a 404) for a body that does not skip.
    """
    kind, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.partition("charset=")[2].split(";")[0].strip().strip('"').lower()
    if kind.strip().lower() not in JSON_TYPES or charset not in ("", "utf-8", "utf8"):
        got = request.headers.get("content-type", "").strip()[:60] or "no Content-Type"
        return _error(415, f"invalid request: send the body as JSON with 'Content-Type: "
                           f"application/json' (UTF-8; got {got})")
    try:  # in a worker thread: a large body's parse kept the event loop from every other request
        return await asyncio.to_thread(_parse_answer_body, await request.body(), refused)
    except LabelError as exc:
        return _error(INVALID_CONTENT, str(exc))


def create_app(hooks: ConsoleHooks, token: str | None = None,
               allowed_hosts: frozenset[str] | None = None,
               auth_throttle: AuthThrottle | None = None,
               allowed_origins: frozenset[str] = frozenset(),
               open_items: OpenItems | None = None) -> FastAPI:
    """Build the console's ASGI app.

    Args:
        hooks: the runtime's callables (see :class:`~edgecl.web.hooks.ConsoleHooks`).
        token: bearer token every data request must carry; None or empty: no authentication
            (allowed on loopback only, see :func:`edgecl.runtime.server.check_bind`).
        allowed_hosts: lower-case host names a request's ``Host`` may give besides IP
            addresses (:func:`host_allowed`; the runtime passes
            :func:`edgecl.runtime.server.allowed_host_names`); ``None``: any.
        auth_throttle: the per-address count of token failures (default: a fresh
            :class:`AuthThrottle`, :data:`AUTH_FAILURES_PER_MINUTE` a minute).
        allowed_origins: origins whose POSTs are accepted whatever the request's ``Host``
            (``server.allowed_origins`` through :func:`origin_names`: a reverse proxy's public
            origin when the proxy rewrites ``Host``).
        open_items: which frame each Label page has open (default: a fresh
            :class:`~edgecl.web.leases.OpenItems`).

    Returns:
        A FastAPI app; ``app.state.counters["faults"]`` counts contained hook faults (500s),
        ``app.state.auth_throttle.refused`` the requests refused with 429.
    """
    app = FastAPI(title="edgecl field console", version="1", docs_url=None, redoc_url=None,
                  description="Live view, labelling, model promotion and forgetting of an edgecl "
                              "device. With a token, send `Authorization: Bearer TOKEN`.")
    counters: dict = {"faults": 0}
    app.state.counters = counters
    opened = open_items if open_items is not None else OpenItems()
    app.state.auth_throttle = auth_throttle or AuthThrottle()
    app.add_middleware(_Guard, token=token or None, counters=counters,
                       allowed_hosts=allowed_hosts, throttle=app.state.auth_throttle,
                       allowed_origins=allowed_origins)

    @app.exception_handler(EdgeclError)
    async def _edgecl_error(_request: Request, exc: EdgeclError):
        return _error(_status_for(exc), str(exc))

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        fault = storage_fault(exc, "the device cannot write its state directory")
        if fault is None:
            raise exc  # a fault of edgecl's own: the guard logs it and answers 500
        counters["faults"] = counters.get("faults", 0) + 1
        log.warning("console: %s %s refused: %s", request.method, request.url.path, fault)
        return _error(INSUFFICIENT_STORAGE, str(fault))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(INVALID_CONTENT,
                      f"invalid request: {where or 'body'}: {first.get('msg', 'bad value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code in (404, 405):  # no such route: say what was asked for
            message += f": {_asked_for(request.method, request.url.path)}"
        response = _error(exc.status_code, message)
        if exc.status_code == 405 and request.url.path.startswith("/static/"):
            response.headers["Allow"] = "GET, HEAD"  # the static files raise it without one
        if exc.headers and "allow" in {k.lower() for k in exc.headers}:  # a 405 says what is
            allowed = [m.strip() for k, v in exc.headers.items() if k.lower() == "allow"  # allowed
                       for m in v.split(",")]
            if "GET" in allowed and "HEAD" not in allowed:  # answered for every GET route
                allowed.append("HEAD")
            order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
            response.headers["Allow"] = ", ".join(sorted(
                dict.fromkeys(allowed), key=lambda m: order.index(m) if m in order else len(order)))
        return response

    @app.get(HEALTH_PATH, tags=["ops"])
    def healthz(request: Request) -> Response:
        """Runtime health with per-stage state; 503 when a stage is stuck. An address refused
        for wrong tokens gets `{"status"}` alone."""
        health = hooks.health()
        code = 503 if health.get("status") == "stuck" else 200
        if request.scope.get("state", {}).get(STATUS_ONLY):
            return _json({"status": health.get("status")}, code)
        return _json(health, code)

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(hooks.metrics(), media_type=METRICS_TYPE)

    @app.get("/api/auth", tags=["console"])
    def auth() -> Response:
        """Whether requests need a bearer token (answered without one)."""
        return _json({"token_required": bool(token)})

    @app.get("/api/live", tags=["console"])
    def live() -> Response:
        """fps, latency, model version, memory fill, learner state, alerts."""
        return _json(hooks.live())

    @app.get("/api/live/detections", tags=["console"],
             responses={404: {"description": "the frame numbered seq is no longer kept"}})
    def live_detections(seq: int | None = Query(
            None, ge=0, description="the frame's sequence number (default: the newest)")) -> Response:
        """The Live frame's labels as text: `{"seq", "width", "height", "boxes": [{"name", "score",
        "raw_score", "class_id", "color_index", "xyxy"}]}`, `xyxy` in pixels of
        `/api/frame.jpg?seq=` of the same `seq` (fetch that for the picture these labels belong
        to); `score` is the calibrated confidence the page shows (the serving version's
        post-hoc calibrator; the detector's score where it has none), `raw_score` the detector's
        own, as `--out` and the queue's proposed boxes give it; names exactly as registered, any
        script; `seq` null and no boxes before the first frame."""
        frame = hooks.live_frame(seq)
        if frame is None:
            if seq is not None:
                raise _frame_not_kept(seq)
            return _json({"seq": None, "width": 0, "height": 0, "boxes": []})
        return _json(frame.to_json())

    @app.get("/api/frame.jpg", tags=["console"],
             responses={200: {"content": {"image/jpeg": {}}}, 204: {"description": "no frame yet"},
                        404: {"description": "the frame numbered seq is no longer kept"}})
    def frame(seq: int | None = Query(None, ge=0, description="the frame's sequence number, as "
                                      "given by /api/live/detections (default: the newest)"),
              labels: bool = Query(True, description="burn names and scores into the JPEG "
                                   "(ASCII only); 0: boxes only, as the Live page asks")) -> Response:
        """The latest frame with boxes, names and scores (JPEG); 204 before the first frame.
        `labels=0`: boxes only (the Live page draws the names from /api/live/detections as text);
        `seq=n`: that frame (404 once no longer kept); header `X-Frame-Seq` numbers the frame."""
        kept = hooks.live_frame(seq)
        headers = {"Cache-Control": "no-store"}
        if kept is None:
            if seq is not None:
                raise _frame_not_kept(seq)
            jpeg = hooks.latest_jpeg()  # a runtime that keeps no numbered frames
            if not jpeg:
                return Response(status_code=204, headers=headers)
            return Response(jpeg, media_type="image/jpeg", headers=headers)
        headers["X-Frame-Seq"] = str(kept.seq)
        return Response(kept.labelled_jpeg() if labels else kept.jpeg, media_type="image/jpeg",
                        headers=headers)

    @app.get("/api/models", tags=["models"])
    def models(request: Request) -> Response:
        """Model versions with status, gate verdict, per-class AP, D-ECE, size, created.

        Sends an ``ETag``; a request whose ``If-None-Match`` names it gets 304 and no body."""
        return _json_unless_unchanged(request, hooks.models())

    @app.post("/api/models/rollback", tags=["models"])
    def rollback(expected: str | None = Query(
            None, alias="from", description="roll back only while this version is current "
            "(409 otherwise: a second click or a retried request rolls back once)")) -> Response:
        """Make the previous current version current again.

        ``?from=VERSION`` makes it conditional: 409 unless VERSION is current (a retried request
        would otherwise roll back a second time); 409 too when no earlier version is intact.
        """
        if expected is None:
            return _json(_need(hooks.rollback, "rollback")())
        return _json(_need(hooks.rollback, "rollback")(check_id(expected)))

    @app.post("/api/models/{version}/promote", tags=["models"])
    def promote(version: str, expected: str | None = Query(
            None, alias="from", description="promote only while this version is current (409 "
            "otherwise, and for the current version itself: of two promotions sent from one "
            "page, or a retried one, only the first switches)")) -> Response:
        """Make this version the current model (switched between two frames); the reply
        names the version it replaced (``previous``)."""
        hook = _need(hooks.promote, "promotion")
        if expected is None:
            return _json(hook(check_id(version)))
        return _json(hook(check_id(version), check_id(expected)))

    @app.get("/api/labels/pending", tags=["labels"])
    def pending(console: str | None = Query(
            None, pattern=CONSOLE_ID_PATTERN, description="the asking Label page's console id: "
            "each item's `open_elsewhere` then leaves out the frame this page holds")) -> Response:
        """The operator queue by priority, with why each frame was chosen; `open_elsewhere`:
        another Label page has the frame open (POST /api/labels/{id}/open)."""
        taken = opened.open_elsewhere(console)
        return _json([dict(item, open_elsewhere=item.get("id") in taken) for item in hooks.pending()])

    @app.post("/api/labels/{item_id}/open", tags=["labels"])
    def open_item(item_id: str, console: str = Query(
            ..., pattern=CONSOLE_ID_PATTERN, description="the Label page's console id, "
            "8-64 characters of A-Z a-z 0-9 _ -, the same while the page is open")) -> Response:
        """Say that this console shows a queued frame (again every few seconds while it does;
        a claim lasts 30 s). `open_elsewhere`: another console opened it first and still has
        it open. Advice for the consoles, not a lock; 404 for a frame not in the queue."""
        valid_item_id(item_id)
        if not any(item.get("id") == item_id for item in hooks.pending()):
            raise NotFoundError(f"no queued item {item_id}")
        return _json({"id": item_id, "open_elsewhere": opened.open(item_id, console)})

    @app.get("/api/labels/answered", tags=["labels"])
    def answered(limit: int = Query(
            MAX_ANSWERS, ge=1, le=MAX_ANSWERS, description="answers listed at most (the Label "
            "page asks for those it shows)")) -> Response:
        """The latest answers still in memory, newest first, with their stored boxes."""
        return _json(hooks.answers()[:limit])

    @app.get("/api/labels/{item_id}/image", tags=["labels"])
    def label_image(item_id: str) -> Response:
        """The queued frame's image; for an answered item, its image as the memory stores it."""
        valid_item_id(item_id)
        missing: EdgeclError = NotFoundError(f"no image for item {item_id}")
        for _ in range(2):  # an answer may take the item off the queue between look-up and read
            try:
                return _image_file(Path(_need(hooks.label_image, "labelling")(item_id)))
            except ConflictError:
                if hooks.answered_image is None:
                    raise
                try:
                    return _image_file(Path(hooks.answered_image(item_id)))
                except OSError:  # evicted or withdrawn meanwhile
                    raise missing from None
            except NotFoundError as exc:
                missing = exc
            except OSError:
                pass
        raise missing

    def answer_now(item_id: str, boxes: list, skip: bool) -> Response:
        result = _need(hooks.answer, "labelling")(item_id, boxes, skip)
        opened.close(item_id)
        return _json(result)

    @app.post("/api/labels/{item_id}", tags=["labels"], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": ANSWER_SCHEMA}}}})
    async def answer(item_id: str, request: Request) -> Response:
        """Answer a queued frame: boxes in original-frame pixels, none for "nothing here", or skip.

        Read by the rule ``edgecl labels answer`` uses (:func:`~edgecl.data.answers.
        decode_answer`, :func:`~edgecl.data.answers.parse_answer`): 415 for a body not sent as
        UTF-8 ``application/json``; 422 for every malformed body, with one line naming what and
        where: not JSON (or a key given twice, NaN, Infinity), JSON that is not an answer, or
        boxes the item's frame refuses (inverted, empty, outside it); 404 for an unknown item,
        409 for one already answered.
        """
        if item_id in READ_ONLY_LABEL_PATHS:  # /api/labels/pending: a list, not an item (a 404
            # "no label item 'pending'" had said otherwise)
            raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "GET"})
        valid_item_id(item_id)
        _need(hooks.answer, "labelling")
        # the item first: an unknown or answered one costs no parse of its boxes (1,000 boxes
        # of long names took most of a second of the interpreter)
        missing = await asyncio.to_thread(_queued_or_missing, hooks, item_id)
        read = await _read_answer_body(request, refused=missing)
        if isinstance(read, Response):
            return read
        boxes, skip = read
        try:  # the hook writes files and the memory: in a worker thread, as for sync routes
            return await asyncio.to_thread(answer_now, item_id, boxes, skip)
        except LabelError as exc:  # the boxes do not fit this item's frame or the registry
            return _error(INVALID_CONTENT, f"invalid answer: {exc}")

    def correct_now(item_id: str, boxes: list) -> Response:
        return _json(_need(hooks.correct, "correcting answers")(item_id, boxes))

    @app.post("/api/labels/{item_id}/correct", tags=["labels"], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": ANSWER_SCHEMA}}}})
    async def correct(item_id: str, request: Request) -> Response:
        """Replace an answered frame's boxes (a wrong answer put right): ``{"boxes": [...]}``.

        The body is read as an answer's (same statuses); ``"skip": true`` is refused (withdraw
        the answer instead). 404 for an unknown item, 409 for one not answered, skipped, or
        whose sample left the memory.
        """
        valid_item_id(item_id)
        _need(hooks.correct, "correcting answers")
        if hooks.answered_image is not None:  # 404 / 409 before any box is parsed, as answers
            await asyncio.to_thread(hooks.answered_image, item_id)
        read = await _read_answer_body(request)
        if isinstance(read, Response):
            return read
        boxes, skip = read
        if skip:
            return _error(INVALID_CONTENT, "invalid answer: a correction gives boxes ([] = "
                                           "nothing to label); to take the answer back, POST "
                                           f"/api/labels/{item_id}/withdraw")
        try:
            return await asyncio.to_thread(correct_now, item_id, boxes)
        except LabelError as exc:
            return _error(INVALID_CONTENT, f"invalid answer: {exc}")

    @app.post("/api/labels/{item_id}/withdraw", tags=["labels"])
    def withdraw(item_id: str) -> Response:
        """Take an answer back: its sample leaves the memory for good (no body)."""
        return _json(_need(hooks.withdraw, "withdrawing answers")(valid_item_id(item_id)))

    @app.get("/api/classes", tags=["labels"])
    def classes() -> Response:
        """Known classes with their sample counts."""
        return _json(hooks.classes())

    @app.get("/api/forgetting", tags=["models"])
    def forgetting(request: Request) -> Response:
        """Accuracy matrix, per-class AP over rounds, reliability of the current version.

        Sends an ``ETag``; a request whose ``If-None-Match`` names it gets 304 and no body."""
        return _json_unless_unchanged(request, hooks.forgetting())

    for route, page in PAGES.items():
        _add_page(app, route, page)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_page(app: FastAPI, route: str, page: str) -> None:
    path = STATIC_DIR / page

    @app.get(route, include_in_schema=False)
    def _page() -> Response:
        return FileResponse(path, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

