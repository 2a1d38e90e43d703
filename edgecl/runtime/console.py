"""The runtime's side of the web console: the narrow callables (:class:`~edgecl.web.ConsoleHooks`)
built from the running parts, and the sink that keeps the latest annotated frame."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from edgecl.errors import EdgeclError

log = logging.getLogger(__name__)

CONSOLE_ROUNDS = 40
"""Newest promoted rounds in the Forgetting page's matrix and curves (``edgecl monitor report``
keeps every round in its CSV files): after weeks of rounds the whole history was megabytes per
request and a page thousands of rows tall."""


CONSOLE_COLUMNS = 20
"""Classes (or tasks) in the Forgetting page's matrix and curves, the most forgotten first (as
``edgecl monitor report``): with 300 classes the heatmap was a strip 10 px tall and the
curves' legend 1,850 px."""


def _most_forgotten(names: list, values: list[list], limit: int) -> list[int]:
    """Which columns to show: the ``limit`` most forgotten over the rows given
    (:func:`edgecl.continual.metrics.most_forgotten`), in their own order.

    Args:
        names: column names.
        values: rows of values (``None`` where not evaluated), one per column each.
        limit: most columns shown.

    Returns:
        Indices of the columns shown, ascending.
    """
    import numpy as np

    from edgecl.continual.metrics import forgetting, most_forgotten

    if len(names) <= limit:
        return list(range(len(names)))
    matrix = np.array([[np.nan if v is None else float(v) for v in row] for row in values],
                      dtype=np.float64).reshape(len(values), len(names))
    return most_forgotten(names, list(forgetting(matrix)), limit)


def unmeasured_classes(known: list[dict], measured) -> list[str]:
    """The device's classes that no round has measured yet (no round learnt them from training
    frames, or no held-out sample shows them), so that the Forgetting page says why they are
    missing from its matrix and curves.

    Args:
        known: the class registry's rows (:meth:`edgecl.models.classes.ClassRegistry.list`);
            a merged class is left out (it is measured as the class it now is).
        measured: the class names the metrics database holds AP of (any round).

    Returns:
        Names, by id; compared as the registry compares them (:func:`same_name_key`).
    """
    from edgecl.data.class_names import same_name_key

    seen = {same_name_key(name) for name in measured}
    return [str(row["name"]) for row in known
            if not row.get("merged_into") and same_name_key(row["name"]) not in seen]


def bounded_forgetting(matrix: dict, per_class_ap: dict[str, list],
                       limit: int = CONSOLE_COLUMNS) -> tuple[dict, dict[str, list]]:
    """The Forgetting page's matrix and per-class curves cut to ``limit`` columns each.

    Args:
        matrix: :meth:`edgecl.runtime.monitor.Monitor.accuracy_matrix`.
        per_class_ap: :meth:`edgecl.runtime.monitor.Monitor.per_class_ap_over_rounds`.
        limit: most columns (classes or tasks) and curves kept.

    Returns:
        ``(matrix, per_class_ap)``: the matrix with ``columns_total`` (its columns before the
        cut) and only the most forgotten columns; the curves of the most forgotten classes
        (``per_class_total`` in the matrix gives how many there were).
    """
    cols = list(matrix.get("columns", []))
    keep = _most_forgotten(cols, matrix.get("values", []), limit)
    names = list(per_class_ap)
    rounds = max(map(len, per_class_ap.values()), default=0)
    series = [[per_class_ap[n][i] if i < len(per_class_ap[n]) else None for n in names]
              for i in range(rounds)]
    curves = _most_forgotten(names, series, limit)
    out = {**matrix, "columns": [cols[j] for j in keep],
           "values": [[row[j] for j in keep] for row in matrix.get("values", [])],
           "columns_total": len(cols), "per_class_total": len(names)}
    return out, {names[j]: per_class_ap[names[j]] for j in curves}


class LiveViewSink:
    """Loop sink keeping the latest frames for the Live page, at most ``max_hz`` a second.

    Each kept frame is a :class:`~edgecl.web.frame.LiveFrame`: the JPEG with the boxes drawn
    (no text: OpenCV's font has ASCII only) and the boxes' labels, under one sequence number,
    so the page draws the names as text in any script on the very picture they belong to. The
    newest :data:`KEPT_FRAMES` are kept: the page reads the labels first, then asks for the
    JPEG of that ``seq``, which a newer frame must not replace in between.

    Encoding runs in the sink thread, never on the inference thread, and only when a frame is
    due, so a viewer costs at most ``max_hz`` encodes a second (plus, only for API clients that
    ask for it, one encode per frame with the labels burnt in).

    Args:
        names: ``callable() -> {class id: name}`` (the runtime's display names).
        max_hz: most encodes per second.
        calibrate: optional ``callable(Detections) -> Detections`` giving calibrated scores.
    """

    KEPT_FRAMES = 8
    """Frames kept for ``/api/frame.jpg?seq=n`` (1.6 s at 5 Hz: a slow link's round trip)."""

    def __init__(self, names: Callable[[], dict], max_hz: float = 5.0, calibrate=None):
        self.names = names
        self.period_s = 1.0 / max_hz
        self.calibrate = calibrate
        self._frames: deque = deque(maxlen=self.KEPT_FRAMES)
        self._seq = 0
        self._last_s = float("-inf")
        self._lock = threading.Lock()

    def write(self, result) -> None:
        """Encode the frame when one is due."""
        now = time.monotonic()
        if now - self._last_s < self.period_s:
            return
        self._last_s = now
        from edgecl.web.frame import render_frame

        detections = result.detections
        if self.calibrate is not None:
            detections = self.calibrate(detections)
        self._seq += 1  # only this thread writes
        frame = render_frame(result.frame.image, detections, self.names(), self._seq)
        raw = result.detections.scores
        if len(raw) == len(frame.boxes):  # the detector's own, as --out and the queue give it
            for box, score in zip(frame.boxes, raw):
                box["raw_score"] = round(float(score), 4)
        with self._lock:
            if self._frames:
                self._frames[-1].drop_canvas()  # only the newest is drawn on for API clients
            self._frames.append(frame)

    def frame(self, seq: int | None = None):
        """A kept frame: the newest, or the one numbered ``seq``.

        Args:
            seq: the wanted frame's sequence number; ``None``: the newest.

        Returns:
            The :class:`~edgecl.web.frame.LiveFrame`, or ``None`` before the first frame and
            for a ``seq`` no longer (or never) kept.
        """
        with self._lock:
            if not self._frames:
                return None
            if seq is None:
                return self._frames[-1]
            return next((f for f in reversed(self._frames) if f.seq == seq), None)

    def latest(self) -> bytes | None:
        """The latest JPEG with names and scores burnt in (``None`` before the first frame)."""
        frame = self.frame()
        return frame.labelled_jpeg() if frame is not None else None

    def close(self) -> None:
        """Nothing to release."""


# What the console and ``edgecl models list`` call each serving engine. The CPU ones are the
# manifest's ``serve_engine`` names (see edgecl.continual.cpu_engines.ENGINE_FILES).
ENGINE_LABELS = {
    "openvino-int8": "OpenVINO INT8",
    "openvino": "OpenVINO FP32",
    "onnx-int8": "ONNX Runtime INT8",
    "onnx": "ONNX Runtime FP32",
    "tensorrt": "TensorRT",
    "pt": "PyTorch",
}
# A version exported before CPU engines were chosen (no ``serve_engine``): named by the suffix of
# the file it serves; its precision is not recorded, so none is claimed.
_SUFFIX_ENGINES = {".engine": ("tensorrt", "TensorRT"), ".onnx": ("onnx", "ONNX Runtime"),
                   ".xml": ("openvino", "OpenVINO"), ".pt": ("pt", "PyTorch")}
# Statuses whose model does not serve and is not exported (a rejected version keeps model.pt only).
NOT_SERVING = ("rejected", "pruned", "corrupt")


def int8_gate(manifest: dict) -> dict | None:
    """The INT8 gate's record of a version, as the console and ``models list --json`` show it.

    Args:
        manifest: the version's manifest.

    Returns:
        ``{"accepted", "reason", "refused"}`` (``refused``: the gate measured the INT8 engine and
        turned it down, as opposed to it not being built), or ``None`` where the manifest has no
        ``int8`` record (a version from before the gate, or a rejected one).
    """
    record = manifest.get("int8")
    if not isinstance(record, dict):
        return None
    accepted = record.get("accepted") is True
    return {"accepted": accepted, "reason": str(record.get("reason") or ""),
            "refused": not accepted and isinstance(record.get("drops"), dict)}


def serving_engine(registry, info) -> dict:
    """Which inference engine serves a version: the file :meth:`Registry.model_path` picks.

    A TensorRT ``.engine`` wins over the manifest's ``serve`` entry, and an OpenVINO IR gives way
    to the ONNX model where ``openvino`` is missing, exactly as the loop loads it.

    Args:
        registry: the :class:`~edgecl.models.registry.Registry`.
        info: the version's :class:`~edgecl.models.registry.VersionInfo`.

    Returns:
        ``{"engine", "engine_label", "engine_file"}``: the engine's name (``openvino-int8``,
        ``openvino``, ``onnx-int8``, ``onnx``, ``tensorrt``, ``pt``), what to show
        (``OpenVINO INT8``, ``TensorRT FP16``, ...) and the registry file name; all ``None`` for
        a version that does not serve (rejected, pruned, corrupt) or has no usable model file.
    """
    from edgecl.errors import RegistryError

    none = {"engine": None, "engine_label": None, "engine_file": None}
    if info.status in NOT_SERVING:
        return none
    try:
        path = registry.model_path(info.version)
    except RegistryError:
        return none
    name = path.relative_to(registry.root / info.version).as_posix()
    manifest = info.manifest
    chosen = manifest.get("serve_engine")
    if path.suffix == ".engine":
        engine, label = "tensorrt", "TensorRT"
        precision = str(manifest.get("precision") or "").lower()
        if precision in ("fp32", "fp16", "int8"):
            label += " " + precision.upper()
    else:
        engine = None
        if chosen in ENGINE_LABELS:  # exported with a CPU engine choice: names follow ENGINE_FILES
            from edgecl.continual.cpu_engines import ENGINE_FILES

            engine = next((key for key, file in ENGINE_FILES.items() if file == name), None)
        if engine is not None:
            label = ENGINE_LABELS[engine]
        else:
            engine, label = _SUFFIX_ENGINES.get(path.suffix, (path.suffix.lstrip("."), name))
    return {"engine": engine, "engine_label": label, "engine_file": name}


NAME_KEYED_METRICS = ("per_class_map50_95", "gate_drops", "gate_steps", "gate_recall_steps",
                      "class_ap50_95", "class_forgetting")
"""Manifest metrics keyed by class name (the names the version's classes had then, or, for
the monitor's ``class_*`` figures, when the round was recorded)."""


def metrics_named_now(metrics: dict, manifest: dict, names_now: dict[int, str],
                      former: dict[int, list[str]] | None = None) -> dict:
    """A version's metrics with its per-class figures under the classes' names now
    (:func:`edgecl.models.classes.named_now`; ``not_gated`` likewise).

    Args:
        metrics: the manifest's ``metrics``.
        manifest: the version's manifest (its ``classes``: id -> name then).
        names_now: class id -> name now (empty: as recorded).
        former: class id -> names renames took from it (see ``named_now``).

    Returns:
        A copy of ``metrics``.
    """
    from edgecl.models.classes import named_now

    then = manifest.get("classes")
    if not names_now or not isinstance(then, dict) or not isinstance(metrics, dict):
        return metrics
    out = dict(metrics)
    for key in NAME_KEYED_METRICS:
        if isinstance(out.get(key), dict):
            out[key] = named_now(out[key], then, names_now, former)
    if isinstance(out.get("not_gated"), list):
        out["not_gated"] = [n for n, _ in named_now({str(n): 0 for n in out["not_gated"]}, then,
                                                    names_now, former).items()]
    return out


def registry_names_now(state_dir) -> tuple[dict[int, str], dict[int, list[str]]]:
    """The class registry's names (a class merged into another under its target's name: its
    figures are the target's now) and former names, or ``({}, {})`` where it cannot be read
    (views then show the names each version recorded)."""
    from edgecl.models.classes import ClassRegistry

    try:
        registry = ClassRegistry(state_dir)
        names = registry.names()
        names.update({cid: names[target] for cid, target in registry.merged().items()
                      if target in names})
        return names, registry.former_names()
    except (EdgeclError, OSError) as exc:
        log.debug("versions keep the class names they recorded: %s", exc)
        return {}, {}


def _lacking(names: dict[int, str], head: int, serving: int) -> list[str]:
    """The names of ids ``head..serving-1`` that no id under ``head`` gives: a class merged
    into one the head has (named as its target by :func:`registry_names_now`) is detected."""
    detected = {names.get(cid) for cid in range(head)}
    return list(dict.fromkeys(names[cid] for cid in range(head, serving)
                              if cid in names and names[cid] not in detected))


def model_rows(registry, names_now: tuple[dict, dict] | None = None,
               class_ap: Callable[[str], dict] | None = None) -> list[dict]:
    """Registry versions for the Models page, newest first.

    Returns:
        Dicts with ``version, status`` (``current`` for the serving version), ``current,
        created, reason, per_class_ap, dece, size_bytes, parent, origin``, the serving engine
        (``engine, engine_label, engine_file``: :func:`serving_engine`), ``int8`` (the INT8
        gate's ``accepted, reason, refused``, or ``None``: :func:`int8_gate`) and
        ``rollback_target`` (True on the version a rollback goes back to), ``not_detected``
        (the classes the serving version detects and this one does not). Per-class figures,
        in ``per_class_ap`` and in ``metrics``, are under the classes' names now
        (``names_now``: the registry's names and former names, as
        :func:`registry_names_now` gives them; default the class registry's beside the
        registry). A version no round made (a team's checkpoint added with ``edgecl models
        add``) records no AP of its own; ``class_ap`` (version -> class name -> AP50-95: the
        metrics database's :meth:`~edgecl.runtime.monitor.Monitor.class_ap`) gives the one a
        round measured when it started from it, with ``ap_note`` saying so.
    """
    from edgecl.models.registry import added_by_person

    names, former = names_now if names_now is not None else registry_names_now(
        Path(registry.root).parent)
    rows = []
    target = registry.rollback_target()
    infos = registry.list()
    serving = next((i.manifest.get("classes") for i in infos if i.current), None)
    serving_n = len(serving) if isinstance(serving, (dict, list)) else 0
    for info in reversed(infos):
        manifest = info.manifest
        metrics = metrics_named_now(info.metrics or {}, manifest, names, former)
        size = 0
        for name in info.files:
            path = registry.root / info.version / name
            if path.is_file():
                size += path.stat().st_size
        per_class = metrics.get("per_class_map50_95") or {}
        ap_note = None
        if not per_class and class_ap is not None and added_by_person(manifest):
            try:
                per_class = {k: v for k, v in class_ap(info.version).items() if v is not None}
            except (EdgeclError, OSError, sqlite3.Error) as exc:
                log.debug("no measured AP of %s: %s", info.version, exc)
            ap_note = "measured on the held-out set when a round started from it" if per_class \
                else None
        calibration = manifest.get("calibration") or {}
        known = manifest.get("classes")
        # by id: the classes the serving version detects and this one's head lacks, which
        # serving it would stop detecting (the page names them before a promotion or a
        # rollback to it: before, nothing did)
        not_detected = (_lacking(names, len(known), serving_n)
                        if isinstance(known, (dict, list)) and known else [])
        # the page marks the serving row by status "current" (the registry says "promoted")
        rows.append(dict(info.to_json(), metrics=metrics,
                         status="current" if info.current else info.status,
                         per_class_ap=per_class or metrics.get("per_task_map50_95") or {},
                         ap_note=ap_note, not_detected=not_detected,
                         dece=metrics.get("dece"), dece_calibrated=calibration.get("dece_after"),
                         size_bytes=size, parent=manifest.get("parent"),
                         origin=manifest.get("origin") or manifest.get("trigger", ""),
                         **serving_engine(registry, info), int8=int8_gate(manifest),
                         rollback_target=info.version == target))
    return rows


def detect_only_console_hooks(runtime):
    """The console's callables for a run that only detects (its state directory cannot be
    written: :func:`~edgecl.runtime.app.detect_only_options`): the Live page, ``/healthz`` and
    ``/metrics`` of the running process. What reads or changes the state directory (labels,
    answers, classes, models, promotion, forgetting) answers 503 with why (the Label page
    shows it in place of its queue): the condition passes, as the runtime starts again in full
    by itself (before, a change answered 404 'not available on this runtime', a route that
    does not exist to a client).

    Args:
        runtime: the detect-only :class:`~edgecl.runtime.app.Runtime`.

    Returns:
        The :class:`~edgecl.web.ConsoleHooks`.
    """
    from edgecl.errors import UnavailableError
    from edgecl.runtime.prometheus import PrometheusExporter
    from edgecl.runtime.versions import TimedCache
    from edgecl.web import ConsoleHooks

    def unavailable(*_args, **_kwargs):
        raise UnavailableError(runtime.detect_only_alert())

    exporter = PrometheusExporter(None, vitals=runtime.vitals)
    view = runtime.live_view
    return ConsoleHooks(health=runtime.health, live=runtime.live,
                        metrics=TimedCache(exporter.render, ttl_s=1.0, default=b""),
                        latest_jpeg=view.latest, live_frame=view.frame, pending=unavailable,
                        answers=unavailable, classes=unavailable, models=unavailable,
                        forgetting=unavailable, promote=unavailable, rollback=unavailable,
                        label_image=unavailable, answer=unavailable,
                        answered_image=unavailable, correct=unavailable, withdraw=unavailable)


def build_console_hooks(runtime):
    """The console's callables for a built :class:`~edgecl.runtime.app.Runtime`.

    Args:
        runtime: the runtime (state directory in use: registry, memory sink, monitor).

    Returns:
        The :class:`~edgecl.web.ConsoleHooks`.
    """
    from edgecl.runtime.labels.queue import with_current_names
    from edgecl.runtime.prometheus import PrometheusExporter
    from edgecl.runtime.promote import promote_version, rollback_version
    from edgecl.runtime.versions import TimedCache
    from edgecl.web import ConsoleHooks

    # the running process's figures (frames, drops, learner, health) are read at each scrape;
    # a fault there is contained by the exporter (edgecl_runtime_up 0), never a failed scrape
    exporter = PrometheusExporter(runtime.monitor, vitals=runtime.vitals)
    sink = runtime.memory_sink
    state_dir = runtime.cfg.state_dir

    def promote(version: str, expected: str | None = None) -> dict:
        previous: list = []
        promote_version(state_dir, version, expected_current=expected, previous=previous)
        # the log says a person did it (before: only "loaded and warmed; swapping"), and what
        # it replaced as read under the registry's lock (two at once both logged 'was' wrong)
        log.info("console: %s promoted by an operator (was %s)", version, previous[0] or "none")
        return {"current": version, "previous": previous[0]}

    def rollback(expected: str | None = None) -> dict:
        before = runtime.registry.current()
        version = rollback_version(state_dir, runtime.registry, expected)
        log.info("console: rolled back by an operator from %s to %s", before or "none", version)
        return {"current": version}

    def answer(item_id: str, boxes: list, skip: bool) -> dict:
        from edgecl.data.answers import check_skip

        try:
            return sink.skip(item_id) if check_skip(skip) else sink.answer(item_id, boxes)
        finally:
            pending_cached.invalidate()
            answers_cached.invalidate()
            classes_cached.invalidate()

    def correct(item_id: str, boxes: list) -> dict:
        try:
            return sink.correct(item_id, boxes)
        finally:
            answers_cached.invalidate()
            classes_cached.invalidate()

    def withdraw(item_id: str) -> dict:
        try:
            return sink.withdraw(item_id)
        finally:
            answers_cached.invalidate()
            classes_cached.invalidate()

    def classes() -> list[dict]:
        stats = sink.memory_stats()
        return runtime.classes.list(sample_counts=stats.get("per_class", {}))

    def forgetting() -> dict:
        monitor = runtime.monitor
        curves = monitor.per_class_ap_over_rounds(last=CONSOLE_ROUNDS)
        matrix, per_class_ap = bounded_forgetting(
            monitor.accuracy_matrix(last=CONSOLE_ROUNDS), curves)
        summary = monitor.summary()
        return {"matrix": matrix, "per_class_ap": per_class_ap,
                "unmeasured": unmeasured_classes(runtime.classes.list(), curves),
                "reliability": monitor.reliability(runtime.registry.current()),
                "summary": {k: summary.get(k) for k in ("model_version", "round", "kind", "acc",
                                                        "bwt", "mean_forgetting")}}

    # INVARIANT: the heaviest reads are cached briefly, so a busy console or scraper costs the
    # 2-core device a bounded share of CPU instead of one database walk per request
    metrics = TimedCache(exporter.render, ttl_s=1.0, default=b"")
    empty = {"matrix": {"rows": [], "columns": [], "values": []}, "per_class_ap": {},
             "unmeasured": [], "reliability": {"bins": [], "protocol": {}}, "summary": {}}
    forgetting_cached = TimedCache(forgetting, ttl_s=2.0, default=empty)
    # the queue (one file per item) and the class list (a memory walk) are read by every open
    # Label page and any client that loops on them: at most once a second, fresh after an answer
    pending_cached = TimedCache(
        lambda: with_current_names(sink.queue.pending(), runtime.classes.names_now()),
        ttl_s=1.0, default=[])
    classes_cached = TimedCache(classes, ttl_s=1.0, default=[])
    answers_cached = TimedCache(sink.answers, ttl_s=1.0, default=[])
    return ConsoleHooks(
        health=runtime.health, metrics=metrics, live=runtime.live,
        latest_jpeg=runtime.live_view.latest if runtime.live_view else (lambda: None),
        live_frame=runtime.live_view.frame if runtime.live_view else (lambda seq=None: None),
        models=lambda: model_rows(runtime.registry, class_ap=runtime.monitor.class_ap
                                  if runtime.monitor is not None else None),
        promote=promote, rollback=rollback,
        pending=pending_cached, label_image=sink.queue.image_path, answer=answer,
        answers=answers_cached, answered_image=sink.answered_image, correct=correct,
        withdraw=withdraw, classes=classes_cached, forgetting=forgetting_cached)
