"""Assembles the device runtime: source, backend, loop, hot swap, memory, learner, server."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecl.config import Config
from edgecl.errors import ModelLoadError

log = logging.getLogger(__name__)


def inference_options(cfg: Config):
    """Build backend options from the config's model section."""
    from edgecl.models.base import InferenceOptions

    m = cfg.model
    return InferenceOptions(conf=m.conf, iou=m.iou, max_det=m.max_det, threads=m.threads,
                            providers=m.providers, imgsz=m.imgsz)


def resolve_model(cfg: Config, explicit: str | None, registry) -> tuple[Path, str]:
    """Decide which model file the loop starts with.

    Args:
        cfg: configuration.
        explicit: ``--model`` value, if given.
        registry: the state directory's registry, or ``None``.

    Returns:
        ``(path, version_label)``.

    Raises:
        ModelLoadError: no model anywhere.
    """
    if explicit:
        return Path(explicit), f"file:{Path(explicit).name}"
    if registry is not None and registry.current():
        version = registry.current()
        return registry.model_path(version), version
    if cfg.model.path:
        return Path(cfg.model.path), f"file:{Path(cfg.model.path).name}"
    raise ModelLoadError("no model: pass --model PATH, set model.path, or add and promote one "
                         "with 'edgecl models add PATH' and 'edgecl models promote VERSION'")


@contextlib.contextmanager
def stop_on_signals(stop):
    """Route SIGINT and SIGTERM to ``stop()`` for the duration of the block."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        log.info("received %s; shutting down cleanly", signal.Signals(signum).name)
        stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_sinks(opts, names: dict) -> list:
    """Create the output sinks a run asks for (JSON lines, video, progress lines).

    Args:
        opts: object with ``out``, ``save_video`` and ``quiet`` attributes.
        names: class index -> name.

    Returns:
        The sinks.
    """
    from edgecl.runtime.sinks import JsonlSink, ProgressSink, VideoSink

    sinks = []
    if opts.out:
        sinks.append(JsonlSink(opts.out, names))
    if opts.save_video:
        sinks.append(VideoSink(opts.save_video, names=names))
    if not opts.quiet:
        sinks.append(ProgressSink(names=names))
    return sinks


@dataclass(frozen=True)
class RunOptions:
    """What one ``edgecl run`` (or the demo's streaming phase) asks for."""

    source_uri: str
    model: str | None = None
    max_frames: int | None = None
    out: str | None = None
    save_video: str | None = None
    quiet: bool = False
    use_state: bool = True
    sinks: tuple = field(default_factory=tuple)


class Runtime:
    """One running device: owns the loop and, with a state directory, registry, memory,
    learner supervisor, monitor and HTTP server.

    Args:
        cfg: configuration.
        opts: run options.
        on_round: callback for each finished learning round (the demo prints progress).
        supervise_hook: optional ``callable(runtime)`` run on every supervision tick.
    """

    def __init__(self, cfg: Config, opts: RunOptions, on_round=None, supervise_hook=None):
        self.cfg = cfg
        self.opts = opts
        self.on_round = on_round
        self.supervise_hook = supervise_hook
        self.registry = None
        self.memory_sink = None
        self.supervisor = None
        self.monitor = None
        self.server = None
        self.loop = None
        self.watcher = None
        self._last_runtime_record_s = 0.0
        self._started_s = time.monotonic()

    def _build_state_parts(self, names: dict) -> list:
        """Memory sink, monitor and learner supervisor (the registry is already open)."""
        from edgecl.runtime.labels import MemorySink
        from edgecl.runtime.learner import LearnerSupervisor
        from edgecl.runtime.monitor import Monitor

        self.memory_sink = MemorySink.from_config(self.cfg)
        self.monitor = Monitor(self.cfg.state_dir)
        self.supervisor = LearnerSupervisor(self.cfg, self.registry, self.memory_sink,
                                            known_classes=names.keys(), on_round=self.on_round)
        return [self.memory_sink]

    def build(self, source=None) -> None:
        """Open the model, the source and every part the options ask for.

        Args:
            source: an already-built frame source (default: open ``opts.source_uri``).

        Raises:
            EdgeclError: bad model, bad source URI, bad state directory.
        """
        from edgecl.models.backends import load_backend
        from edgecl.models.registry import Registry
        from edgecl.runtime.loop import InferenceLoop
        from edgecl.runtime.sources import open_source
        from edgecl.runtime.watcher import ModelWatcher

        cfg, opts = self.cfg, self.opts
        if opts.use_state:
            self.registry = Registry(Path(cfg.state_dir) / "models")
        path, version = resolve_model(cfg, opts.model, self.registry)
        infer_opts = inference_options(cfg)
        backend = load_backend(path, infer_opts, warmup_runs=cfg.runtime.warmup_runs)
        source = source or open_source(opts.source_uri, cfg.source)
        sinks = build_sinks(opts, backend.meta.names) + list(opts.sinks)
        if opts.use_state:
            sinks += self._build_state_parts(backend.meta.names)
            self.watcher = ModelWatcher(self.registry, infer_opts,
                                        self.registry.current() if not opts.model else None,
                                        poll_s=cfg.runtime.swap_poll_s,
                                        warmup_runs=cfg.runtime.warmup_runs)
        self.loop = InferenceLoop(source, backend, version, sinks=sinks,
                                  back_pressure=cfg.runtime.back_pressure, watcher=self.watcher,
                                  max_frames=opts.max_frames,
                                  sink_queue_size=cfg.runtime.sink_queue_size)

    def health(self) -> dict:
        """Status for ``/healthz``."""
        loop = self.loop
        return {"status": "ok", "model_version": loop.model_version if loop else None,
                "frames": loop.frames_done if loop else 0,
                "uptime_s": round(time.monotonic() - self._started_s, 1),
                "learner_busy": bool(self.supervisor and self.supervisor.busy),
                "rounds": len(self.supervisor.rounds) if self.supervisor else 0}

    def _start_server(self) -> None:
        if not (self.opts.use_state and self.cfg.server.enabled):
            return
        from edgecl.runtime.prometheus import PrometheusExporter
        from edgecl.runtime.server import Routes, StatusServer

        exporter = PrometheusExporter(self.monitor)
        queue = self.memory_sink.queue
        routes = Routes(health=self.health, metrics=exporter.render,
                        models=lambda: [v.to_json() for v in self.registry.list()],
                        pending=queue.list, label_action=self._label_action)
        self.server = StatusServer(routes, self.cfg.server.host, self.cfg.server.port)
        try:
            self.server.start()
        except OSError as exc:
            log.error("HTTP server not started on %s:%d (%s); detection goes on",
                      self.cfg.server.host, self.cfg.server.port, exc)
            self.server = None

    def _label_action(self, item_id: str, action: str) -> dict:
        queue = self.memory_sink.queue
        if action == "accept":
            return {"id": item_id, "sample": queue.accept(item_id, self.memory_sink.memory)}
        queue.reject(item_id)
        return {"id": item_id, "rejected": True}

    def supervise(self) -> None:
        """Periodic main-thread work: learning triggers and runtime metrics."""
        if self.supervisor is not None:
            self.supervisor.tick()
        if self.supervise_hook is not None:
            self.supervise_hook(self)
        now = time.monotonic()
        if self.monitor is not None and now - self._last_runtime_record_s >= 10.0:
            self._last_runtime_record_s = now
            self._record_runtime()

    def _record_runtime(self) -> None:
        stats = self.memory_sink.memory.stats() if self.memory_sink else {}
        self.monitor.record_runtime(fps=self.loop.current_fps(), latency_ms_p50=self.loop.latency_p50(),
                                    memory_bytes=stats.get("bytes", 0),
                                    memory_samples=stats.get("samples", 0),
                                    model_version=self.loop.model_version)

    def run(self, wait_for_learner: bool = False):
        """Run the loop until its end or a signal.

        Args:
            wait_for_learner: after the stream ends, let a running round finish (the demo).

        Returns:
            The loop's :class:`LoopReport`.
        """
        if self.loop is None:
            self.build()
        if self.watcher is not None:
            self.watcher.start()
        self._start_server()
        try:
            with stop_on_signals(self.loop.request_stop):
                log.info("running: source %s, model %s (Ctrl-C or SIGTERM stops cleanly)",
                         getattr(self.loop.source, "uri", "?"), self.loop.model_version)
                report = self.loop.run(supervise=self.supervise)
                if wait_for_learner and self.supervisor is not None:
                    self.supervisor.tick()
                    self.supervisor.wait()
        finally:
            self.close()
        return report

    def close(self) -> None:
        """Stop every part (idempotent)."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.loop is not None:
            self.loop.backend.close()
