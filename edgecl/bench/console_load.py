"""``edgecl bench console``: does the web console slow detection down? (issue 9, point 4)

The full device runtime (:class:`edgecl.runtime.app.Runtime`: loop, labelling pipeline in
``field`` mode, memory, web console on 127.0.0.1) runs a tiny detector on an unlabelled, unpaced
synthetic stream (:class:`ObjectSource`: one big object a frame), so the loop runs as fast as the
machine allows and any cost of the server shows as lost frames. While it runs, phases alternate:

* ``idle``: nobody talks to the server;
* ``load``: :func:`edgecl.web.load.run_load` sends a bounded number of API requests (default 500)
  from 8 threads on 127.0.0.1;
* ``viewer``: one live viewer, polling ``/api/frame.jpg`` at the Live page's rate (4 Hz) and
  ``/api/live`` once a second, like ``live.js``.

Pipeline fps of a phase = frames the loop finished in it / its wall time. The load and viewer
ratios compare each phase with the mean of the idle phases of the same run (``idle, load, idle,
viewer, idle`` repeated), so a machine whose speed drifts (other processes, thermal) biases both
sides alike. Targets: load >= 0.9 x idle with no error, viewer >= 0.95 x idle.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from edgecl.arguments import print_json_line
from edgecl.config import SourceConfig
from edgecl.runtime.sources.base import FrameSource, RawFrame
from edgecl.stop_signals import raise_stop

log = logging.getLogger(__name__)

LOAD_TARGET = 0.9
VIEWER_TARGET = 0.95
OBJECT_BGR = (0, 140, 255)
"""Colour of :class:`ObjectSource`'s object (BGR orange): nothing else in its frames has it."""


def object_frame(rng: np.random.Generator, width: int, height: int,
                 spread: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """One synthetic camera frame: a grey, slightly noisy background with one big orange box.

    Args:
        rng: random generator (position, size, noise).
        width: frame width in pixels.
        height: frame height in pixels.
        spread: how far the box may wander from the centre, as a share of the free room
            (1: anywhere in the frame; 0: always centred).

    Returns:
        ``(image, xyxy)``: BGR uint8 (height, width, 3) and the object's box in pixels
        ``[x1, y1, x2, y2]`` (float, exclusive right/bottom edge).
    """
    base = int(rng.integers(70, 130))
    image = np.full((height, width, 3), base, np.uint8)
    image += rng.integers(0, 12, size=image.shape, dtype=np.uint8)
    bw = int(rng.integers(int(0.35 * width), int(0.6 * width) + 1))
    bh = int(rng.integers(int(0.35 * height), int(0.6 * height) + 1))
    x1 = int(round((width - bw) * (0.5 + spread * (rng.random() - 0.5))))
    y1 = int(round((height - bh) * (0.5 + spread * (rng.random() - 0.5))))
    image[y1:y1 + bh, x1:x1 + bw] = OBJECT_BGR
    edge = max(2, min(bw, bh) // 12)
    image[y1:y1 + bh, x1:x1 + edge] = (0, 70, 140)
    image[y1:y1 + bh, x1 + bw - edge:x1 + bw] = (0, 70, 140)
    return image, [float(x1), float(y1), float(x1 + bw), float(y1 + bh)]


def object_box(image: np.ndarray) -> list[float] | None:
    """Find :class:`ObjectSource`'s object in a (possibly JPEG-decoded) frame by its colour.

    Args:
        image: BGR uint8 (H, W, 3).

    Returns:
        ``[x1, y1, x2, y2]`` in pixels (exclusive right/bottom edge), or ``None`` when absent.
    """
    b, g, r = (image[..., i].astype(np.int16) for i in range(3))
    mask = (r - b > 90) & (r > 120)
    ys, xs = np.nonzero(mask)
    if xs.size < 16:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


class ObjectSource(FrameSource):
    """An unlabelled camera-like stream: each frame shows one big object at a random place.

    Frames carry no labels and no task (as a camera's), so in ``labels.mode: field`` the
    selection policies queue some of them for an operator. Pass the source to
    :meth:`edgecl.runtime.app.Runtime.build` (it has no URI scheme).

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        fps: delivery rate (0: as fast as read; > 0 paces it like a camera and makes it live).
        frames: frames to deliver (``None``: until closed).
        seed: random seed of the frames.
        spread: how far the object wanders from the centre (see :func:`object_frame`).
        cfg: source settings.
    """

    def __init__(self, width: int = 160, height: int = 120, fps: float = 0.0,
                 frames: int | None = None, seed: int = 0, spread: float = 1.0,
                 cfg: SourceConfig | None = None):
        super().__init__(f"object://?width={width}&height={height}&fps={fps}&seed={seed}", cfg)
        self.width, self.height = width, height
        self.fps = fps
        self.is_live = fps > 0
        self.frames = frames
        self.seed = seed
        self.spread = spread
        self.labelled = False
        self._rng = np.random.default_rng(seed)
        self._delivered = 0
        self._due_s = 0.0

    def _open(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._delivered = 0
        self._due_s = time.monotonic()

    def _next(self) -> RawFrame | None:
        if self._closing.is_set() or (self.frames is not None and self._delivered >= self.frames):
            return None
        if self.fps > 0:
            self._due_s += 1.0 / self.fps
            wait_s = self._due_s - time.monotonic()
            if wait_s > 0 and self._closing.wait(wait_s):
                return None
            if wait_s <= 0:
                self._due_s = time.monotonic()
        image, _box = object_frame(self._rng, self.width, self.height, self.spread)
        self._delivered += 1
        return RawFrame(image, None, None, f"object-{self._delivered - 1:06d}")


def tiny_model(out: Path, names: dict[int, str], imgsz: int = 64, onnx: bool = False) -> Path:
    """Save an untrained YOLO11n detector (the stream needs a model; nothing is downloaded).

    Args:
        out: destination ``.pt`` (an ``.onnx`` beside it when ``onnx``).
        names: class id -> name of its head.
        imgsz: input size recorded in the checkpoint (and of the ONNX export).
        onnx: also export it to ONNX and return that file.

    Returns:
        The model file to serve.
    """
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    model = build_detection_model(len(names), names=dict(names))
    path = save_checkpoint(model, out, meta={"names": dict(names), "imgsz": imgsz, "parent": None,
                                                "untrained": True})
    if not onnx:
        return path
    from edgecl.models.export import export_onnx

    return export_onnx(model, Path(out).with_suffix(".onnx"), imgsz=imgsz, names=dict(names))


class Viewer:
    """One live viewer in a thread: ``/api/frame.jpg`` at ``hz`` and ``/api/live`` every second.

    Args:
        base_url: the console's base URL.
        hz: frame polls per second (the Live page: 4).
        timeout_s: per-request timeout in seconds.
    """

    def __init__(self, base_url: str, hz: float = 4.0, timeout_s: float = 5.0):
        self.base = base_url.rstrip("/")
        self.period_s = 1.0 / hz
        self.timeout_s = timeout_s
        self.requests = 0
        self.errors = 0
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgecl-viewer", daemon=True)

    def _get(self, path: str) -> bytes | None:
        self.requests += 1
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout_s) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            self.errors += 1
            log.warning("viewer: GET %s failed: %s", path, exc)
            return None

    def _run(self) -> None:
        next_live_s = 0.0
        due_s = time.monotonic()
        while not self._stop.is_set():
            if self._get("/api/frame.jpg"):
                self.frames += 1
            if time.monotonic() >= next_live_s:
                self._get("/api/live")
                next_live_s = time.monotonic() + 1.0
            due_s += self.period_s
            self._stop.wait(max(0.0, due_s - time.monotonic()))

    def start(self) -> "Viewer":
        """Start polling."""
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop polling.

        Returns:
            ``{"requests", "errors", "frames"}`` (frames: non-empty JPEGs received).
        """
        self._stop.set()
        self._thread.join(10.0)
        return {"requests": self.requests, "errors": self.errors, "frames": self.frames}


def bench_config(state_dir: Path, imgsz: int):
    """The configuration of the measurement: tiny model, console on a free loopback port,
    field labelling on (as shipped), learner off (a round would compete for the CPU).

    Args:
        state_dir: the state directory.
        imgsz: model input size.

    Returns:
        The validated :class:`~edgecl.config.Config`.
    """
    from edgecl.config import load_config

    return load_config(None, [
        f"state_dir={state_dir}", f"model.imgsz={imgsz}", "model.threads=1",
        "runtime.warmup_runs=1", "learner.enabled=false", "labels.mode=field",
        "server.enabled=true", "server.host=127.0.0.1", "server.port=0",
        "export.tensorrt='off'"])


class MeasurementError(RuntimeError):
    """The measurement failed or gave no figures (a client failed, the runtime ended early)."""


class Stopped(Exception):
    """The measurement was asked to stop (Ctrl-C, or the runtime ended) before it finished."""


def _check(stop: threading.Event | None) -> None:
    """Raise :class:`Stopped` when ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise Stopped


def _pause(stop: threading.Event | None, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile (then raise :class:`Stopped`)."""
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Stopped


def wait_for_server(runtime, timeout_s: float = 60.0, stop: threading.Event | None = None) -> str:
    """Wait until the runtime's console listens and the loop has done a frame.

    Args:
        runtime: the runtime being started.
        timeout_s: longest wait in seconds.
        stop: set to give up at once.

    Returns:
        The base URL, e.g. ``http://127.0.0.1:40123``.

    Raises:
        TimeoutError: not up within ``timeout_s``.
        Stopped: ``stop`` was set.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server, loop = runtime.server, runtime.loop
        if server is not None and server.port and loop is not None and loop.frames_done > 0:
            return f"http://127.0.0.1:{server.port}"
        _pause(stop, 0.05)
    raise TimeoutError(f"the runtime's console did not start within {timeout_s:.0f} s")


LOAD_CLIENT = """import json, sys
from edgecl.web.load import run_load
print("start", flush=True)
report = run_load(sys.argv[1], requests=int(sys.argv[2]), threads=int(sys.argv[3]))
print(json.dumps(report), flush=True)
"""
VIEWER_CLIENT = """import json, sys, time
from edgecl.bench.console_load import Viewer
print("start", flush=True)
viewer = Viewer(sys.argv[1], float(sys.argv[2])).start()
time.sleep(float(sys.argv[3]))
print(json.dumps(viewer.stop()), flush=True)
"""


def run_client(runtime, code: str, *args: object, timeout_s: float = 300.0,
               stop: threading.Event | None = None) -> tuple[dict, int, float]:
    """Run a client (load or viewer) in its own Python process and count the loop's frames
    from the moment it is ready (imports done) until it has finished.

    A separate process, as a browser or a laptop would be: the clients' threads do not compete
    with the runtime for this interpreter's GIL, only for the CPU.

    Args:
        runtime: the running runtime.
        code: the client's source (prints ``start``, then one JSON line).
        *args: its command-line arguments.
        timeout_s: longest the client may run.
        stop: set to end the client at once (checked every 0.1 s).

    Returns:
        ``(client's JSON, frames done meanwhile, seconds)``.

    Raises:
        RuntimeError: the client failed, printed no result or ran past ``timeout_s``.
        Stopped: ``stop`` was set (the client is killed).
    """
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()  # "start", or "" when the client died first
        f0, t0 = runtime.loop.frames_done, time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while True:
            _check(stop)
            try:
                out, err = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"client still running after {timeout_s:g} s") from None
        frames, seconds = runtime.loop.frames_done - f0, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in out.splitlines() if line.strip()]
    if first != "start" or proc.returncode != 0 or not lines:
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"client exited with {proc.returncode}: {tail[0]}")
    return json.loads(lines[-1]), frames, seconds


def measure(runtime, base: str, *, requests: int = 500, threads: int = 8, phase_s: float = 3.0,
            viewer_hz: float = 4.0, repeats: int = 3, warmup_s: float = 2.0,
            stop: threading.Event | None = None) -> dict:
    """Alternate idle, load and viewer phases on a running runtime and compare their fps.

    Args:
        runtime: a running :class:`~edgecl.runtime.app.Runtime` (its console serving).
        base: the console's base URL.
        requests: API requests of each load phase.
        threads: client threads of each load phase.
        phase_s: seconds of each idle and viewer phase.
        viewer_hz: frame polls per second of the viewer.
        repeats: how many ``idle, load, idle, viewer`` cycles (a final idle phase closes them).
        warmup_s: seconds to let the loop settle first.
        stop: set to abandon the measurement (checked at least every 0.1 s).

    Returns:
        ``{"idle_fps", "load_fps", "viewer_fps" (means over the phases of each kind),
        "load_ratio", "viewer_ratio" (median over the cycles of the phase's fps / the mean of
        the idle phases just before and after it, robust to a machine whose speed drifts), "load"
        (the load reports summed: requests, errors, error_kinds; p50_ms, p95_ms of the last,
        max_ms of all, rps mean), "viewer" ({"requests", "errors", "frames"}), "phases"
        ([{"phase", "fps", "seconds"}])}``.

    Raises:
        RuntimeError: a client process failed.
        Stopped: ``stop`` was set.
    """
    _pause(stop, warmup_s)
    phases: list[dict] = []

    def record(name: str, frames: int, seconds: float) -> None:
        phases.append({"phase": name, "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
                       "seconds": round(seconds, 2)})

    def idle() -> None:
        f0, t0 = runtime.loop.frames_done, time.perf_counter()
        _pause(stop, phase_s)
        record("idle", runtime.loop.frames_done - f0, time.perf_counter() - t0)

    loads, views = [], []
    for _ in range(repeats):
        idle()
        report, frames, seconds = run_client(runtime, LOAD_CLIENT, base, requests, threads,
                                             stop=stop)
        record("load", frames, seconds)
        loads.append(report)
        idle()
        report, frames, seconds = run_client(runtime, VIEWER_CLIENT, base, viewer_hz, phase_s,
                                             stop=stop)
        record("viewer", frames, seconds)
        views.append(report)
    idle()

    def mean(name: str) -> float:
        values = [p["fps"] for p in phases if p["phase"] == name]
        return float(np.mean(values)) if values else 0.0

    def paired(name: str) -> float | None:
        # each load/viewer phase against the mean of the idle phases just before and after it
        ratios = []
        for i, p in enumerate(phases):
            if p["phase"] == name:
                idle_fps = (phases[i - 1]["fps"] + phases[i + 1]["fps"]) / 2
                if idle_fps > 0:
                    ratios.append(p["fps"] / idle_fps)
        return round(float(np.median(ratios)), 3) if ratios else None

    idle_fps, load_fps, viewer_fps = mean("idle"), mean("load"), mean("viewer")
    error_kinds: dict = {}
    for report in loads:
        for kind, n in report["error_kinds"].items():
            error_kinds[kind] = error_kinds.get(kind, 0) + n
    load = {"requests": sum(r["requests"] for r in loads), "threads": threads,
            "errors": sum(r["errors"] for r in loads), "error_kinds": error_kinds,
            "p50_ms": loads[-1]["p50_ms"], "p95_ms": loads[-1]["p95_ms"],
            "max_ms": max(r["max_ms"] for r in loads),
            "rps": round(float(np.mean([r["rps"] for r in loads])), 1)}
    viewer = {k: sum(v[k] for v in views) for k in ("requests", "errors", "frames")}
    return {"idle_fps": round(idle_fps, 2), "load_fps": round(load_fps, 2),
            "viewer_fps": round(viewer_fps, 2), "load_ratio": paired("load"),
            "viewer_ratio": paired("viewer"),
            # a ratio is not load_fps / idle_fps: a busy machine's speed drifts over a run, so
            # each phase is set against the idle phases just around it (said here: before, a
            # reader who divided the printed figures found another number)
            "ratio_basis": "median over the cycles of a phase's fps / the mean fps of the idle "
                           "phases just before and after it (idle_fps is the mean of all idle "
                           "phases)",
            "load": load, "viewer": viewer, "phases": phases}


def run_console_load(work: Path, *, imgsz: int = 64, backend: str = "onnx", requests: int = 500,
                     threads: int = 8, phase_s: float = 3.0, viewer_hz: float = 4.0,
                     repeats: int = 3, warmup_s: float = 2.0, source_fps: float = 0.0) -> dict:
    """Build a tiny device in ``work``, run it, measure (see :func:`measure`), stop it.

    The runtime runs on the calling thread (it installs signal handlers); the measurement runs
    in a helper thread and stops the loop when done.

    Args:
        work: folder for the model and the state directory.
        imgsz: model input size.
        backend: ``onnx`` (exported once) or ``torch`` (the ``.pt`` checkpoint).
        requests: API requests per load phase.
        threads: client threads per load phase.
        phase_s: seconds per idle/viewer phase.
        viewer_hz: frame polls per second of the viewer.
        repeats: measurement cycles.
        warmup_s: settling time before the first phase.
        source_fps: camera rate of the stream (0: unpaced, the loop's full capacity, which
            shows every cost of the server; 30: a camera, where only a loop that can no longer
            keep up loses frames).

    Returns:
        :func:`measure`'s figures plus ``imgsz``, ``backend``, ``source_fps``, ``frames``,
        ``targets`` and ``ok`` (no load error, both ratios at or above their targets).

    Raises:
        EdgeclError: the runtime could not start; MeasurementError: the measurement failed or
        gave no figures; KeyboardInterrupt: Ctrl-C stopped the runtime; SigtermExit: SIGTERM.
    """
    from edgecl.runtime.app import RunOptions, Runtime

    model = tiny_model(work / "tiny.pt", {0: "object"}, imgsz, onnx=backend == "onnx")
    cfg = bench_config(work / "state", imgsz)
    source = ObjectSource(width=160, height=120, fps=source_fps)
    runtime = Runtime(cfg, RunOptions(source_uri=source.uri, model=str(model), quiet=True))
    runtime.build(source=source)
    result: dict = {}
    stop = threading.Event()

    def drive() -> None:
        try:
            base = wait_for_server(runtime, stop=stop)
            result.update(measure(runtime, base, requests=requests, threads=threads,
                                  phase_s=phase_s, viewer_hz=viewer_hz, repeats=repeats,
                                  warmup_s=warmup_s, stop=stop))
        except Stopped:
            pass  # the caller knows why: Ctrl-C, or the loop ended on its own
        except Exception as exc:  # reported to the caller after the loop stopped
            result["failure"] = f"{type(exc).__name__}: {exc}"
        finally:
            runtime.loop.request_stop()

    driver = threading.Thread(target=drive, name="edgecl-bench-console", daemon=True)
    driver.start()
    try:
        report = runtime.run()
    finally:
        stop.set()  # the loop has ended: whatever the driver still does is moot
        driver.join(5.0)
    if runtime.interrupted:
        raise_stop(runtime.stop_signal)  # the command line exits 130 (Ctrl-C) or 143
    if "failure" in result:
        raise MeasurementError(f"bench console: {result['failure']}")
    if driver.is_alive() or "load" not in result:
        raise MeasurementError(f"bench console: the runtime stopped after {report.frames} frames, "
                           f"before the measurement finished")
    ok = (result["load"]["errors"] == 0 and result["viewer"]["errors"] == 0
          and (result["load_ratio"] or 0) >= LOAD_TARGET
          and (result["viewer_ratio"] or 0) >= VIEWER_TARGET)
    return dict(result, imgsz=imgsz, backend=backend, source_fps=source_fps, frames=report.frames,
                targets={"load_ratio": LOAD_TARGET, "viewer_ratio": VIEWER_TARGET}, ok=ok)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the console benchmark's options."""
    from edgecl.arguments import (finite_non_negative_float, finite_positive_float, image_size,
                                  positive_int, thread_count)

    p.add_argument("--requests", type=positive_int, default=500, help="API requests per load phase")
    p.add_argument("--threads", type=thread_count, default=8, help="client threads per load phase")
    p.add_argument("--phase-s", type=finite_positive_float, default=3.0,
                   help="seconds per idle/viewer phase")
    p.add_argument("--viewer-hz", type=finite_positive_float, default=4.0,
                   help="live viewer frame polls per second")
    p.add_argument("--repeats", type=positive_int, default=3, help="idle/load/idle/viewer cycles")
    p.add_argument("--source-fps", type=finite_non_negative_float, default=0.0,
                   help="camera rate of the synthetic stream (0: unpaced, the loop's capacity)")
    p.add_argument("--imgsz", type=image_size, default=64, help="model input size (a multiple of 32)")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx",
                   help="tiny model file type (default onnx)")
    p.add_argument("--work-dir", help="where the model and the state go (default: a temporary "
                                      "folder, removed at the end)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures.

    Returns:
        0 when the targets are met, 1 otherwise (the figures are printed either way) or when
        the measurement failed (one line on stderr, no figures).

    Raises:
        ConfigError: ``--work-dir`` holds the state of an earlier run.
        KeyboardInterrupt: Ctrl-C (the command line exits 130); SigtermExit: SIGTERM (143).
    """
    kwargs = dict(imgsz=args.imgsz, backend=args.backend, requests=args.requests,
                  threads=args.threads, phase_s=args.phase_s, viewer_hz=args.viewer_hz,
                  repeats=args.repeats, source_fps=args.source_fps)
    if args.work_dir:
        from edgecl.bench.soak import check_work_dir

        check_work_dir(Path(args.work_dir), "bench console")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="edgecl-console-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        summary = run_console_load(work, **kwargs)
    except MeasurementError as exc:
        print(exc, file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print_json_line(summary)
    else:
        load = summary["load"]
        print(f"idle {summary['idle_fps']:.1f} fps | {args.repeats} x {args.requests} requests "
              f"from {load['threads']} threads: {summary['load_fps']:.1f} fps "
              f"(x{summary['load_ratio']}, target >= {LOAD_TARGET}), {load['errors']} errors, "
              f"p95 {load['p95_ms']} ms | live viewer at {args.viewer_hz:g} Hz: "
              f"{summary['viewer_fps']:.1f} fps (x{summary['viewer_ratio']}, target >= "
              f"{VIEWER_TARGET}) | {'ok' if summary['ok'] else 'BELOW TARGET'}",
              file=sys.stdout, flush=True)
    return 0 if summary["ok"] else 1
