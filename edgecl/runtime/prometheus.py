"""Prometheus exposition of the device, in a private registry (never the process-global one).

Two collectors, both read at scrape time:

The monitor's (:meth:`Monitor.summary`, what the metrics database holds). Per task:
``edgecl_map50_95{task=...}``, ``edgecl_forgetting{task=...}``. Per class (held-out AP50-95 of
the latest promoted version, and its forgetting over the promoted rounds):
``edgecl_class_ap50_95{class="car"}``, ``edgecl_class_forgetting{class="car"}``.
``edgecl_acc``, ``edgecl_bwt`` and ``edgecl_mean_forgetting`` come from the class view when
frames carry no task (see :mod:`edgecl.runtime.monitor`); ``edgecl_fps``,
``edgecl_latency_ms_p50`` and the memory's size are the runtime's figures as last recorded
(every 10 s). ``edgecl_monitor_up`` is 0 when the database cannot be read.

The running process's (only when a ``vitals`` callable is given: ``edgecl run`` passes
:meth:`edgecl.runtime.app.Runtime.vitals`), so a fleet's dashboards see each device live:

- ``edgecl_runtime_up`` (1; 0 when the callable raised: the fault is logged, counted in
  ``edgecl_runtime_scrape_errors_total`` and the scrape answers all the same),
  ``edgecl_uptime_seconds``, ``edgecl_model_info{version=...}`` and ``edgecl_model_version``
  (the version the loop serves now; without a runtime, the monitor's collector gives the one
  its last runtime sample named);
- ``edgecl_health_status{status="ok|degraded|stuck"}`` (1 for the status ``/healthz`` gives, 0
  for the others) and ``edgecl_stage_status{stage="capture",state="ok|idle|..."}`` per stage;
- frames: ``edgecl_frames_captured_total`` (taken from the source: ``rate()`` of it is what the
  camera delivers), ``edgecl_frames_processed_total`` (inferred),
  ``edgecl_frames_dropped_total`` (captured but never inferred: back-pressure dropped the
  oldest frame while inference lagged), ``edgecl_source_frames_skipped_total`` (unreadable
  images), ``edgecl_source_reconnects_total``, ``edgecl_processed_frames_per_second`` (the
  last 5 s), ``edgecl_inference_frames_per_second`` (what the model can take: 1 / mean
  inference time), ``edgecl_model_swaps_total``, ``edgecl_model_refusals_total``;
- sinks: ``edgecl_sink_results_dropped_total{sink=...}`` (results a stalled sink never got),
  ``edgecl_sink_errors_total{sink=...}``;
- storing: ``edgecl_storing_paused`` (1 while a storage fault pauses storing),
  ``edgecl_detect_only`` (1 while the state directory cannot be written and the run only
  detects: :func:`edgecl.runtime.app.detect_only_options`),
  ``edgecl_labelling_events_total{event=...}`` (the labelling pipeline's counts: stored,
  queued, not stored, refused ...), ``edgecl_operator_queue_items``;
- learning: ``edgecl_learner_state{state="idle|training|backoff|waiting_for_room"}``,
  ``edgecl_learner_enabled``, ``edgecl_learner_round`` (the device's round number, as ``models``
  and the Forgetting page count rounds: it goes on across restarts; the running one while
  training, else the newest finished round the state directory records, whichever process ran
  it: a round ``edgecl learn`` ran beside the runtime counts, see :class:`DiskRound`),
  ``edgecl_learner_rounds_total`` (rounds finished since this start),
  ``edgecl_learner_round_progress_ratio`` (0..1, while training),
  ``edgecl_learner_apply_errors_total``, ``edgecl_supervisor_step_errors_total``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from edgecl.errors import StorageError
from edgecl.runtime.monitor import Monitor, MonitorError

LOG = logging.getLogger(__name__)


def version_number(version: str | None) -> float:
    """Numeric part of a version name (``v0012`` -> 12.0); NaN when there is none.

    Args:
        version: version name.

    Returns:
        The trailing integer as a float, or NaN.
    """
    match = re.search(r"(\d+)$", version or "")
    return float(match.group(1)) if match else float("nan")


_GAUGES = (
    ("edgecl_acc", "acc", "Mean box mAP50-95 over the tasks seen (latest promoted version)"),
    ("edgecl_bwt", "bwt", "Backward transfer of box mAP50-95 (negative: forgetting)"),
    ("edgecl_mean_forgetting", "mean_forgetting", "Mean forgetting over earlier tasks"),
    ("edgecl_dece", "dece", "Detection expected calibration error of the latest promoted version"),
    ("edgecl_dece_calibrated", "dece_calibrated",
     "D-ECE after post-hoc calibration (cross-fitted) of the latest promoted version"),
    ("edgecl_fps", "inference_fps", "Inference rate: frames per second the model can take (a "
                                    "camera may deliver fewer)"),
    ("edgecl_latency_ms_p50", "latency_ms_p50", "Median latency from frame capture to its "
                                                "detections in milliseconds (waiting, "
                                                "pre-processing, inference and NMS)"),
    ("edgecl_memory_bytes", "memory_bytes", "Bytes held by the replay memory"),
    ("edgecl_memory_samples", "memory_samples", "Samples held by the replay memory"),
)


def _with_volume_state(message: str, state_dir) -> str:
    """``message`` with the cause SQLite's 'unable to open database file' does not name: the
    state directory's volume mounted read-only."""
    if state_dir is None or "read-only" in message:
        return message
    from edgecl.runtime.volume import volume_read_only

    try:
        read_only = volume_read_only(state_dir)
    except OSError:
        return message
    return f"{message} (the state directory's volume is read-only)" if read_only else message


class _SummaryCollector:
    """prometheus_client collector that reads :meth:`Monitor.summary` on every scrape."""

    def __init__(self, monitor: Monitor, serving_live: bool = False) -> None:
        self._monitor = monitor
        self._serving_live = serving_live  # the runtime's collector names the served version
        self._said = ""  # the last fault said at WARNING: a scrape every 15 s repeats it

    def collect(self):
        """Yield the metric families (an unreadable database yields ``edgecl_monitor_up 0``)."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            summary = self._monitor.summary()
        except (MonitorError, StorageError) as exc:
            message = _with_volume_state(str(exc), getattr(self._monitor, "state_dir", None))
            # once per distinct fault (before: one line per scrape, 240 an hour at 15 s)
            LOG.log(logging.WARNING if message != self._said else logging.DEBUG,
                    "metrics scrape: %s (edgecl_monitor_up is 0 until it can be read)", message)
            self._said = message
            yield GaugeMetricFamily("edgecl_monitor_up", "Metrics database readable", value=0)
            return
        if self._said:
            LOG.info("metrics scrape: the metrics database can be read again")
            self._said = ""
        yield GaugeMetricFamily("edgecl_monitor_up", "Metrics database readable", value=1)
        summary["dece_calibrated"] = (summary.get("calibration") or {}).get("dece_after")
        for name, key, doc in _GAUGES:
            if summary.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(summary[key]))
        for name, key, label, doc in (
                ("edgecl_forgetting", "forgetting", "task", "Forgetting per task"),
                ("edgecl_map50_95", "map50_95", "task", "Box mAP50-95 per task"),
                ("edgecl_class_ap50_95", "class_ap50_95", "class",
                 "Held-out box AP50-95 per class (latest promoted version)"),
                ("edgecl_class_forgetting", "class_forgetting", "class",
                 "Forgetting per class: best earlier AP50-95 minus latest")):
            family = GaugeMetricFamily(name, doc, labels=[label])
            for column, value in summary.get(key, {}).items():
                if value is not None:
                    family.add_metric([str(column)], float(value))
            yield family
        # what the loop serves (its last runtime sample), else the newest version measured: a
        # version promoted by hand ('models add --promote') has no round of its own, and the
        # gauge named the one before it
        if not self._serving_live:
            yield from model_families(summary.get("serving_version") or summary.get("model_version"))


def model_families(version: str | None) -> list:
    """``edgecl_model_version`` (a registry version's number) and ``edgecl_model{version=...}``
    for the version served, none for ``None``."""
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

    if version is None:
        return []
    out = []
    if re.fullmatch(r"v\d+", version):  # a file served ('file:best.pt') has no number
        out.append(GaugeMetricFamily("edgecl_model_version", "Numeric part of the served version",
                                     value=version_number(version)))
    out.append(InfoMetricFamily("edgecl_model", "Served model version", value={"version": version}))
    return out


HEALTH_STATES = ("ok", "degraded", "stuck")
"""Values of ``edgecl_health_status``'s ``status`` label (those of ``/healthz``)."""
STAGE_STATES = ("starting", "ok", "idle", "degraded", "stuck", "stopped")
"""Values of ``edgecl_stage_status``'s ``state`` label (:class:`~edgecl.runtime.watchdog.StageState`)."""
WAITING_STATES = ("waiting_for_room", "waiting_for_model", "waiting_for_held_out",
                  "waiting_for_import")
"""The learner's states while a round is due and waits (for room on the card, for a version it
can fine-tune, for a first held-out sample, for an import to finish), first that applies."""
LEARNER_STATES = ("idle", "training", "backoff", "off", *WAITING_STATES)
"""Values of ``edgecl_learner_state``'s ``state`` label."""

# (name, vitals key, help): counters (the ``_total`` suffix is prometheus_client's to add)
_RUNTIME_COUNTERS = (
    ("edgecl_frames_captured", "frames_captured",
     "Frames the capture thread took from the source (rate(): what the camera delivers)"),
    ("edgecl_frames_processed", "frames_processed", "Frames inferred"),
    ("edgecl_frames_dropped", "frames_dropped",
     "Frames captured but never inferred: back-pressure dropped the oldest while inference lagged"),
    ("edgecl_source_frames_skipped", "frames_skipped", "Unreadable images the source skipped"),
    ("edgecl_source_reconnects", "reconnects", "Times a live source reopened its camera or stream"),
    ("edgecl_model_swaps", "swaps", "Hot swaps to a newly promoted model version"),
    ("edgecl_model_refusals", "model_refusals",
     "Promoted model versions the runtime refused to load (it kept serving its model)"),
    ("edgecl_supervisor_step_errors", "step_errors",
     "Failures of the runtime's supervision steps (learner, fleet, metrics), contained"),
)
_RUNTIME_GAUGES = (
    ("edgecl_uptime_seconds", "uptime_s", "Seconds since this runtime started"),
    ("edgecl_processed_frames_per_second", "processed_fps",
     "Frames inferred per second over the last 5 s (at most what the camera delivers)"),
    ("edgecl_inference_frames_per_second", "inference_fps",
     "Frames per second the model can take: 1 / mean inference time of the last 50 frames"),
    ("edgecl_operator_queue_items", "queue_items", "Frames waiting in the operator's label queue"),
    ("edgecl_storing_paused", "storing_paused",
     "1 while a storage fault (a full disk) pauses storing frames, else 0"),
    ("edgecl_detect_only", "detect_only",
     "1 while the state directory cannot be written (a read-only or full card) and the runtime "
     "only detects: nothing stored, labelled or learnt"),
)


def _states(known, current: str) -> list[tuple[str, float]]:
    """``(state, 1.0 or 0.0)`` for each state: 1 for ``current`` (added when not ``known``)."""
    return [(state, 1.0 if state == current else 0.0)
            for state in (*known, *([] if current in known else [current]))]


def _state_set(name: str, doc: str, label: str, known, current: str):
    """A gauge per state of ``label``: 1 for ``current``, 0 for the others."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=[label])
    for state, value in _states(known, current):
        family.add_metric([state], value)
    return family


def _number(value) -> float | None:
    """A figure as a float (a bool as 0/1); None for None."""
    return None if value is None else float(value)


def runtime_families(vitals: Mapping) -> list:
    """The metric families of a running process's figures.

    Args:
        vitals: what :meth:`edgecl.runtime.app.Runtime.vitals` returns; every key is optional
            (a family whose figure is missing or None is left out): ``status``, ``stages``
            (``{stage: state}``), ``uptime_s``, ``frames_captured``, ``frames_processed``,
            ``frames_dropped``, ``frames_skipped``, ``reconnects``, ``swaps``, ``step_errors``,
            ``processed_fps``, ``inference_fps``, ``queue_items``, ``storing_paused``,
            ``detect_only``,
            ``labelling`` (``{event: count}``), ``sinks`` (``{name: {"dropped", "errors"}}``),
            ``learner`` (``{"enabled", "state", "round", "rounds", "progress",
            "apply_errors"}``), ``model_version`` (the version the loop serves now).

    Returns:
        prometheus_client metric families.

    Raises:
        Exception: whatever a malformed figure raises (the collector contains it).
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out: list = model_families(vitals.get("model_version"))
    if vitals.get("status") is not None:
        out.append(_state_set("edgecl_health_status", "1 for the runtime's health status "
                              "(/healthz), 0 for the others", "status", HEALTH_STATES,
                              str(vitals["status"])))
    stages = vitals.get("stages") or {}
    if stages:
        family = GaugeMetricFamily("edgecl_stage_status", "1 for each runtime stage's state "
                                   "(watchdog), 0 for the others", labels=["stage", "state"])
        for stage, current in sorted(stages.items()):
            for state, value in _states(STAGE_STATES, str(current)):
                family.add_metric([str(stage), state], value)
        out.append(family)
    for name, key, doc in _RUNTIME_GAUGES:
        if vitals.get(key) is not None:
            out.append(GaugeMetricFamily(name, doc, value=_number(vitals[key])))
    for name, key, doc in _RUNTIME_COUNTERS:
        if vitals.get(key) is not None:
            out.append(CounterMetricFamily(name, doc, value=_number(vitals[key])))
    sinks = vitals.get("sinks") or {}
    if sinks:
        dropped = CounterMetricFamily("edgecl_sink_results_dropped", "Results a sink never got "
                                      "(its queue stayed full: stalled or dead)", labels=["sink"])
        errors = CounterMetricFamily("edgecl_sink_errors", "Exceptions a sink raised (contained)",
                                     labels=["sink"])
        for sink, counts in sorted(sinks.items()):
            dropped.add_metric([str(sink)], _number(counts.get("dropped", 0)))
            errors.add_metric([str(sink)], _number(counts.get("errors", 0)))
        out += [dropped, errors]
    labelling = vitals.get("labelling")
    if labelling is not None:
        family = CounterMetricFamily("edgecl_labelling_events", "Frames the labelling pipeline "
                                     "stored, queued, did not store or refused, per event",
                                     labels=["event"])
        for event, count in sorted(labelling.items()):
            family.add_metric([str(event)], _number(count))
        out.append(family)
    out += _learner_families(vitals.get("learner"))
    return out


def _learner_families(learner: Mapping | None) -> list:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if not learner:
        return []
    out = [_state_set("edgecl_learner_state", "1 for the learner's state, 0 for the others",
                      "state", LEARNER_STATES, str(learner.get("state", "idle")))]
    for name, key, doc in (
            ("edgecl_learner_enabled", "enabled", "1 when rounds start by themselves "
                                                  "(learner.enabled)"),
            ("edgecl_learner_round", "round", "The device's round number (as the model versions "
                                              "and the Forgetting page count them, across "
                                              "restarts): the running round while training, else "
                                              "the newest finished, whichever process ran it"),
            ("edgecl_learner_round_progress_ratio", "progress", "Estimated progress of the "
                                                                "running round, 0 to 1")):
        if learner.get(key) is not None:
            out.append(GaugeMetricFamily(name, doc, value=_number(learner[key])))
    for name, key, doc in (
            ("edgecl_learner_rounds", "rounds", "Rounds finished (promoted or rejected) since "
                                                "this runtime started"),
            ("edgecl_learner_apply_errors", "apply_errors", "Failures to apply a round's result "
                                                            "(promotion, records), contained")):
        if learner.get(key) is not None:
            out.append(CounterMetricFamily(name, doc, value=_number(learner[key])))
    return out


ROUND_REREAD_S = 60.0
"""Seconds after which :class:`DiskRound` reads the learner's state again even though the file
looks unchanged (a file system whose times are coarser than two writes)."""


class DiskRound:
    """The number of the newest finished round the state directory records, whichever process
    ran it (the runtime's learner or ``edgecl learn`` beside it).

    Every round that finishes (staged or rejected, by any process) moves the learner's state
    ``STATE/learner/state.json`` to its number, written atomically
    (:func:`edgecl.continual.round_state.save_state`); the number never goes back (a rollback
    rewinds the learnt samples, not the round). A call costs one ``stat`` of that small file:
    it is read again only when it changed (inode, size, modification or change time) or
    :data:`ROUND_REREAD_S` after the last read.

    Args:
        state_dir: the state directory.
        clock: monotonic seconds (injectable for tests).

    Attributes:
        reads: times the file was read (not only looked at).
    """

    def __init__(self, state_dir: str | Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from edgecl.continual.round_state import state_path

        self.path = state_path(state_dir)
        self.clock = clock
        self.reads = 0
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._read_at_s = -float("inf")
        self._round: int | None = None

    def __call__(self) -> int | None:
        """The newest finished round's number, or None (no round yet, or the file unreadable:
        the running process's own count then stands)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:  # missing before the first round; the reason at debug level
            LOG.debug("metrics scrape: %s not read: %s", self.path, exc)
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            now_s = self.clock()
            if stamp != self._stamp or now_s - self._read_at_s >= ROUND_REREAD_S:
                self._round = self._read()
                self._stamp, self._read_at_s = stamp, now_s
            return self._round

    def _read(self) -> int | None:
        self.reads += 1
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:  # damaged: repaired by the learner
            LOG.debug("metrics scrape: %s unreadable: %s", self.path, exc)
            return None
        number = data.get("round") if isinstance(data, dict) else None
        if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
            return number
        return None


def with_disk_round(vitals: Mapping, newest: int | None) -> Mapping:
    """``vitals`` whose learner round is at least the newest round recorded on disk.

    While this runtime trains, its running round is newer than any finished one and stays; when
    idle, a round another process finished since (``edgecl learn``) is shown.

    Args:
        vitals: the running process's figures (see :func:`runtime_families`).
        newest: :class:`DiskRound`'s answer (None: nothing recorded or readable).

    Returns:
        ``vitals`` itself, or a copy with ``learner["round"]`` raised to ``newest``.
    """
    learner = vitals.get("learner")
    if not learner or newest is None:
        return vitals
    shown = learner.get("round")
    if shown is not None and float(shown) >= newest:
        return vitals
    return {**vitals, "learner": {**learner, "round": newest}}


class _RuntimeCollector:
    """prometheus_client collector that reads the running process's figures on every scrape.

    A fault of the callable, or a malformed figure, never fails the scrape: it is logged (once
    per distinct message, then at debug level), counted, and the scrape says
    ``edgecl_runtime_up 0`` with the monitor's metrics as usual.

    Args:
        vitals: ``callable() -> Mapping`` (see :func:`runtime_families`).
        disk_round: ``callable() -> int | None``, the newest round recorded on disk
            (:class:`DiskRound`); None: the process's own round only.
    """

    def __init__(self, vitals: Callable[[], Mapping],
                 disk_round: Callable[[], int | None] | None = None) -> None:
        self._vitals = vitals
        self._disk_round = disk_round
        self._lock = threading.Lock()
        self.errors = 0
        self._last_error = ""

    def collect(self):
        """Yield the runtime's metric families, or ``edgecl_runtime_up 0``."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            vitals = self._vitals()
            if self._disk_round is not None:
                vitals = with_disk_round(vitals, self._disk_round())
            families = runtime_families(vitals)
        except Exception as exc:  # a scrape never fails for the runtime: logged and counted
            families = None
            self._failed(exc)
        yield GaugeMetricFamily("edgecl_runtime_up", "1 when the running process's figures "
                                "were read for this scrape, 0 when reading them failed",
                                value=0.0 if families is None else 1.0)
        yield CounterMetricFamily("edgecl_runtime_scrape_errors", "Scrapes whose reading of the "
                                  "running process's figures failed", value=float(self.errors))
        yield from families or ()

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.errors += 1
            first = message != self._last_error
            self._last_error = message
        if first:
            LOG.warning("metrics scrape: the runtime's figures could not be read (%s); "
                        "edgecl_runtime_up is 0 until they can", message, exc_info=exc)
        else:
            LOG.debug("metrics scrape: the runtime's figures could not be read (%s)", message)


class PrometheusExporter:
    """Prometheus text exposition of a :class:`Monitor` and, optionally, of the running
    process, in a private registry.

    Args:
        monitor: the monitor to read at each scrape; None: the running process's figures only
            (a detect-only run, whose state directory cannot be written).
        vitals: ``callable() -> Mapping`` giving the running process's figures at each scrape
            (:meth:`edgecl.runtime.app.Runtime.vitals`; see :func:`runtime_families`);
            ``None`` (a tool without a runtime): only the monitor's metrics.
        state_dir: where rounds are recorded (:class:`DiskRound`: ``edgecl_learner_round``
            shows a round another process ran); default: the monitor's state directory.
    """

    def __init__(self, monitor: Monitor | None, vitals: Callable[[], Mapping] | None = None,
                 state_dir: str | Path | None = None) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        if monitor is not None:
            self.registry.register(_SummaryCollector(monitor, serving_live=vitals is not None))
        state_dir = state_dir if state_dir is not None else getattr(monitor, "state_dir", None)
        self.disk_round = DiskRound(state_dir) if state_dir is not None else None
        self.runtime_collector = (_RuntimeCollector(vitals, self.disk_round)
                                  if vitals is not None else None)
        if self.runtime_collector is not None:
            self.registry.register(self.runtime_collector)
        self.content_type: str = CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format.

        Returns:
            Bytes for a ``/metrics`` response body.
        """
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
