"""The field console: a FastAPI app over :class:`~edgecl.web.hooks.ConsoleHooks`.

Routes (JSON unless said otherwise; every error is ``{"error": "one line"}``):

* ``GET /healthz`` (503 when a stage is stuck), ``GET /metrics`` (Prometheus text),
  ``GET /openapi.json`` (the API's schema; the CDN-based Swagger page is not served, the
  console's offline ``/api-docs`` page lists the routes instead);
* ``GET /api/live``, ``GET /api/frame.jpg`` (204 before the first frame),
  ``GET /api/models``, ``POST /api/models/{version}/promote``, ``POST /api/models/rollback``,
  ``GET /api/labels/pending``, ``GET /api/labels/{id}/image``, ``POST /api/labels/{id}``,
  ``GET /api/classes``, ``GET /api/forgetting``, ``GET /api/auth`` (whether a token is needed);
* pages: ``/`` (Live), ``/label``, ``/models``, ``/forgetting``, ``/api-docs`` and their assets
  under ``/static`` (shipped in the package, no CDN).

Security: state changes are POST only; request bodies are bounded (:data:`MAX_BODY_BYTES`, 413);
ids are checked against :data:`ID_PATTERN` before any hook sees them; with a token every request
except the static page shells, their assets and ``/api/auth`` needs ``Authorization: Bearer
TOKEN`` (401 otherwise; compared in constant time). A hook that raises anything else than an
:class:`~edgecl.errors.EdgeclError` is logged and counted and answered with a 500 JSON body; the
server and the detection loop go on.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecl.errors import ConflictError, EdgeclError, NotFoundError
from edgecl.web.hooks import ConsoleHooks

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest accepted request body (bytes); larger ones get 413 before any hook runs."""
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Queue item ids and model versions: 1..128 safe characters, no separator, no leading dot."""
MAX_BOXES = 1000
MAX_CLASS_NAME = 64
PAGES = {"/": "live.html", "/live": "live.html", "/label": "label.html",
         "/models": "models.html", "/forgetting": "forgetting.html", "/api-docs": "api.html"}
PUBLIC_PATHS = frozenset({*PAGES, "/favicon.ico", "/api/auth"})
"""Paths served without a token: page shells and assets carry no device data."""
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def check_id(value: str, what: str = "id") -> str:
    """Validate an id taken from a URL before it reaches a hook (and any path).

    Args:
        value: the id as received.
        what: its name in the error message.

    Returns:
        ``value`` unchanged.

    Raises:
        EdgeclError: (HTTP 400) empty, longer than 128 characters, or with a character outside
            ``[A-Za-z0-9_.-]``, a leading dot or a ``..``.
    """
    if not ID_PATTERN.fullmatch(value) or ".." in value:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise EdgeclError(f"invalid {what} {shown!r}: 1-128 characters of A-Z a-z 0-9 _ . -")
    return value


class BoxIn(BaseModel):
    """One box of an operator's answer, in pixels of the original frame."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    cls: str = Field(alias="class", min_length=1, max_length=MAX_CLASS_NAME)
    xyxy: Annotated[list[Annotated[float, Field(allow_inf_nan=False, strict=True)]],  # "1" refused
                    Field(min_length=4, max_length=4)]

    @field_validator("cls")
    @classmethod
    def _clean_name(cls, value: str) -> str:
        name = value.strip()
        if not name or any(ord(c) < 32 or c in "/\\" for c in name):
            raise ValueError("class name must be printable, without / or \\")
        return name


class AnswerIn(BaseModel):
    """An operator's answer: boxes (empty means "nothing here") or skip.

    ``skip`` must be a JSON boolean: ``"yes"``, ``"false"``, ``1`` or ``null`` are a 422 and
    change nothing (a lax parser would read ``"no"`` as false but ``"yes"`` as a skip).
    """

    model_config = ConfigDict(extra="forbid")
    boxes: Annotated[list[BoxIn], Field(max_length=MAX_BOXES)] = []
    skip: StrictBool = False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _status_for(exc: EdgeclError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 400


class _Guard:
    """Pure ASGI middleware: token check, body bound, and containment of any hook fault.

    The body (at most :data:`MAX_BODY_BYTES`, declared or streamed) is read before routing, so an
    oversized one is answered 413 without reaching FastAPI's parser or a hook.

    Args:
        app: the wrapped ASGI app.
        token: the bearer token, or None for no authentication.
        counters: dict whose ``"faults"`` entry counts contained 500s.
    """

    def __init__(self, app, token: str | None, counters: dict):
        self.app = app
        self.token = token.encode() if token else None
        self.counters = counters

    def _authorized(self, scope) -> bool:
        if self.token is None:
            return True
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'")(
                scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and not value.isdigit():
                await _error(400, "invalid Content-Length")(scope, receive, send)
                return
            if name == b"content-length" and int(value) > MAX_BODY_BYTES:
                await _error(413, f"request body over {MAX_BODY_BYTES} bytes")(scope, receive, send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _error(413, f"request body over {MAX_BODY_BYTES} bytes")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False
        started = False

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
            await send(message)

        try:
            await self.app(scope, replay_receive, tracking_send)
        except Exception:  # noqa: BLE001 - a hook fault must never reach the client or the loop
            self.counters["faults"] = self.counters.get("faults", 0) + 1
            log.exception("console: %s %s failed (contained; answered 500)", scope.get("method"),
                          scope.get("path"))
            if not started:
                await _error(500, "internal error (logged on the device)")(scope, receive, send)


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(_json_safe(value), default=str, allow_nan=False).encode()
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _need(hook, what: str):
    if hook is None:
        raise NotFoundError(f"{what} is not available on this runtime")
    return hook


def create_app(hooks: ConsoleHooks, token: str | None = None) -> FastAPI:
    """Build the console's ASGI app.

    Args:
        hooks: the runtime's callables (see :class:`~edgecl.web.hooks.ConsoleHooks`).
        token: bearer token every data request must carry; None or empty: no authentication
            (allowed on loopback only, see :func:`edgecl.runtime.server.check_bind`).

    Returns:
        A FastAPI app; ``app.state.counters["faults"]`` counts contained hook faults (500s).
    """
    app = FastAPI(title="edgecl field console", version="1", docs_url=None, redoc_url=None,
                  description="Live view, labelling, model promotion and forgetting of an edgecl "
                              "device. With a token, send `Authorization: Bearer TOKEN`.")
    counters: dict = {"faults": 0}
    app.state.counters = counters
    app.add_middleware(_Guard, token=token or None, counters=counters)

    @app.exception_handler(EdgeclError)
    async def _edgecl_error(_request: Request, exc: EdgeclError):
        return _error(_status_for(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"invalid request: {where or 'body'}: {first.get('msg', 'bad value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/healthz", tags=["ops"])
    def healthz() -> Response:
        """Runtime health with per-stage state; 503 when a stage is stuck."""
        health = hooks.health()
        return _json(health, 503 if health.get("status") == "stuck" else 200)

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

    @app.get("/api/frame.jpg", tags=["console"],
             responses={200: {"content": {"image/jpeg": {}}}, 204: {"description": "no frame yet"}})
    def frame() -> Response:
        """The latest frame with boxes and class names (JPEG); 204 before the first frame."""
        jpeg = hooks.latest_jpeg()
        if not jpeg:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/models", tags=["models"])
    def models() -> Response:
        """Model versions with status, gate verdict, per-class AP, D-ECE, size, created."""
        return _json(hooks.models())

    @app.post("/api/models/rollback", tags=["models"])
    def rollback() -> Response:
        """Make the previous current version current again."""
        return _json(_need(hooks.rollback, "rollback")())

    @app.post("/api/models/{version}/promote", tags=["models"])
    def promote(version: str) -> Response:
        """Make this version the current model (switched between two frames)."""
        return _json(_need(hooks.promote, "promotion")(check_id(version, "version")))

    @app.get("/api/labels/pending", tags=["labels"])
    def pending() -> Response:
        """The operator queue by priority, with why each frame was chosen."""
        return _json(hooks.pending())

    @app.get("/api/labels/{item_id}/image", tags=["labels"])
    def label_image(item_id: str) -> Response:
        """The queued frame's image."""
        path = Path(_need(hooks.label_image, "labelling")(check_id(item_id)))
        if not path.is_file():
            raise NotFoundError(f"no image for item {item_id}")
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    @app.post("/api/labels/{item_id}", tags=["labels"])
    def answer(item_id: str, body: AnswerIn) -> Response:
        """Answer a queued frame: boxes in original-frame pixels, none for "nothing here", or skip."""
        boxes = [{"class": b.cls, "xyxy": list(b.xyxy)} for b in body.boxes]
        return _json(_need(hooks.answer, "labelling")(check_id(item_id), boxes, body.skip))

    @app.get("/api/classes", tags=["labels"])
    def classes() -> Response:
        """Known classes with their sample counts."""
        return _json(hooks.classes())

    @app.get("/api/forgetting", tags=["models"])
    def forgetting() -> Response:
        """Accuracy matrix, per-class AP over rounds, reliability of the current version."""
        return _json(hooks.forgetting())

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
