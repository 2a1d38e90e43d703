"""What the field console may read and change: narrow callables the runtime hands to the app.

The web layer owns no threads and no state. Every page and API route calls exactly one of these
callables; the runtime (``edgecl.runtime``) builds them from its loop, memory, registry, operator
queue and monitor. Each callable must be cheap and must not block the inference loop (read a
snapshot, take a short lock). Errors are raised as :mod:`edgecl.errors` types and mapped to HTTP
status codes by :func:`edgecl.web.app.create_app`:

* :class:`~edgecl.errors.NotFoundError` -> 404
* :class:`~edgecl.errors.ConflictError` -> 409
* :class:`~edgecl.errors.LabelError` (boxes or class names that are not valid) -> 422
* :class:`~edgecl.errors.RegistryError`, any other :class:`~edgecl.errors.EdgeclError` -> 400
* anything else -> 500 (logged and counted, never a traceback to the client).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from edgecl.web.frame import LiveFrame


def _empty_list() -> list:
    return []


def _no_frame() -> bytes | None:
    return None


def _no_live_frame(seq: int | None = None) -> LiveFrame | None:
    return None


def _empty_metrics() -> bytes:
    return b""


def _empty_live() -> dict:
    return {}


def _empty_forgetting() -> dict:
    return {"matrix": {"rows": [], "columns": [], "values": []}, "per_class_ap": {},
            "reliability": {"bins": [], "protocol": {}}}


@dataclass(frozen=True)
class ConsoleHooks:
    """The callables behind the console's routes (all run on the server thread).

    Attributes:
        health: ``() -> dict`` with ``"status"``: ``"ok" | "degraded" | "stuck"`` and per-stage
            detail; ``/healthz`` answers 503 when the status is ``"stuck"``.
        metrics: ``() -> bytes``, Prometheus text exposition format 0.0.4.
        live: ``() -> dict`` with ``fps`` (float), ``latency_ms_p50``, ``latency_ms_p95`` (float,
            milliseconds), ``model_version`` (str), ``memory`` (``{"samples", "capacity",
            "bytes", "max_bytes"}``), ``learner`` (``{"state": "idle" | "training" |
            "backoff" | "waiting_for_room" | "waiting_for_model" | "waiting_for_held_out" |
            "waiting_for_import", "round": int, "progress": 0..1 or None}``), ``alerts`` (list of one-line
            strings).
        latest_jpeg: ``() -> bytes | None``, the latest frame as JPEG with boxes, class names
            and scores burnt in (OpenCV's font: ASCII only, other scripts show as ``?``);
            ``None`` before the first frame. Served by ``GET /api/frame.jpg`` when
            ``live_frame`` has no frame (a runtime that does not provide it).
        live_frame: ``(seq=None) -> LiveFrame | None``, a frame the runtime keeps for the Live
            page (:class:`~edgecl.web.frame.LiveFrame`: ``seq``, ``width``, ``height``,
            ``jpeg`` with the boxes drawn but no text, ``boxes`` with each ``name``, ``score``,
            ``xyxy`` in the JPEG's pixels and ``color_index``, ``labelled_jpeg()``): the newest,
            or the one numbered ``seq``; ``None`` before the first frame and for a ``seq`` no
            longer kept. The runtime encodes a few frames a second, off the inference thread,
            and keeps the last few, so that the page reads a frame's labels and then fetches
            that very frame's JPEG.
        models: ``() -> list[dict]``, each with ``version``, ``status``, ``reason`` (the gate's
            verdict), ``per_class_ap`` (``{name: ap}``), ``dece``, ``size_bytes``, ``created``
            (ISO 8601 or epoch seconds), newest first.
        promote: ``(version, expected=None) -> dict``, make ``version`` current (with
            ``expected``, only while that version is current and is not ``version``: else
            a ConflictError); the dict names ``current`` and ``previous``.
        rollback: ``(expected=None) -> dict``, make the previous current version current
            again (with ``expected``, only from that version).
        pending: ``() -> list[dict]``, the operator queue by priority, each with ``id``,
            ``priority``, ``reasons`` (``{policy: score}``), ``width``, ``height`` (pixels) and
            ``proposed`` (``[{"class": name, "xyxy": [x1, y1, x2, y2], "score": s}]``).
        label_image: ``(id) -> Path``, the queued frame's image file (JPEG or PNG).
        answer: ``(id, boxes, skip) -> dict``; ``boxes`` is ``[{"class": name, "xyxy":
            [x1, y1, x2, y2]}]`` in pixels of the original frame (empty: "nothing here"),
            ``skip`` drops the item without a label.
        answers: ``() -> list[dict]``, the latest answers still in memory, newest first, each
            with ``id``, ``sample``, ``held_out``, ``corrected`` (times), ``width``,
            ``height`` and the stored ``boxes`` (``[{"class": name, "xyxy": [...]}]``).
        answered_image: ``(id) -> Path``, an answered item's image as the memory stores it.
        correct: ``(id, boxes) -> dict``, replace an answered item's boxes.
        withdraw: ``(id) -> dict``, take an answer back (its sample leaves the memory).
        classes: ``() -> list[dict]``, each ``{"id", "name", "samples", "first_seen"}``.
        forgetting: ``() -> dict`` with ``matrix`` (``{"rows": [round labels], "columns":
            [class or task names], "values": [[ap | None]]}``), ``per_class_ap`` (``{name: [ap
            per round]}``) and ``reliability`` (``{"bins": [{"lo", "hi", "confidence",
            "precision", "count"}], "protocol": {...}}``) of the current version.
    """

    health: Callable[[], dict]
    metrics: Callable[[], bytes] = _empty_metrics
    live: Callable[[], dict] = _empty_live
    latest_jpeg: Callable[[], bytes | None] = _no_frame
    models: Callable[[], list[dict]] = _empty_list
    promote: Callable[..., dict] | None = None
    rollback: Callable[..., dict] | None = None
    pending: Callable[[], list[dict]] = _empty_list
    label_image: Callable[[str], Path] | None = None
    answer: Callable[[str, list[dict], bool], dict] | None = None
    answers: Callable[[], list[dict]] = _empty_list
    answered_image: Callable[[str], Path] | None = None
    correct: Callable[[str, list[dict]], dict] | None = None
    withdraw: Callable[[str], dict] | None = None
    classes: Callable[[], list[dict]] = _empty_list
    forgetting: Callable[[], dict] = _empty_forgetting
    live_frame: Callable[..., LiveFrame | None] = _no_live_frame
