"""``edgecl bench perf``: pipeline fps vs the raw backend vs ultralytics' own predict."""

from __future__ import annotations

import argparse
import logging
import time


log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the perf benchmark's options."""
    p.add_argument("--model", required=True, help="model file (.onnx, .engine, .pt)")
    p.add_argument("--source", default="synthetic://?tasks=5&images_per_task=40&imgsz=160&seed=0",
                   help="frame source URI")
    p.add_argument("--frames", type=int, default=200, help="frames per measurement")
    p.add_argument("--imgsz", type=int, default=None, help="input size for .pt/.yaml models")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--skip-ultralytics", action="store_true",
                   help="do not measure ultralytics' predict")
    p.add_argument("--while-training", action="store_true",
                   help="also measure inference fps while a learning round trains")
    p.add_argument("--json", action="store_true", help="(kept for symmetry; output is JSON)")


def read_frames(uri: str, n: int) -> list:
    """Decode ``n`` frames from a source (looping it if it is shorter)."""
    from edgecl.runtime.sources import open_source

    frames = []
    while len(frames) < n:
        with open_source(uri) as source:
            before = len(frames)
            for frame in source:
                frames.append(frame)
                if len(frames) >= n:
                    break
            if len(frames) == before:
                raise RuntimeError(f"source {uri} produced no frames")
    return frames


class ReplaySource:
    """A frame source over already-decoded frames (decoding cost excluded)."""

    is_live = False

    def __init__(self, frames: list):
        self._frames = frames
        self._i = 0

    def read(self):
        """Return the next frame with a fresh timestamp, or ``None`` at the end."""
        import dataclasses

        if self._i >= len(self._frames):
            return None
        frame = dataclasses.replace(self._frames[self._i], ts_s=time.time())
        self._i += 1
        return frame


def raw_fps(backend, frames: list) -> float:
    """Frames per second of ``backend.infer`` called frame by frame on the main thread."""
    t0 = time.perf_counter()
    for frame in frames:
        backend.infer([frame.image])
    return len(frames) / (time.perf_counter() - t0)


def pipeline_run(backend, frames: list):
    """Run the full loop (capture -> inference -> sink threads) over the frames."""
    from edgecl.runtime.loop import InferenceLoop

    class CountSink:
        def write(self, result):
            pass

        def close(self):
            pass

    loop = InferenceLoop(ReplaySource(frames), backend, "bench", sinks=[CountSink()],
                         back_pressure="block")
    return loop.run()


def ultralytics_fps(model_path: str, frames: list, imgsz: int, conf: float) -> float | None:
    """Frames per second of ultralytics' ``predict(stream=True)`` on the same frames."""
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    try:
        model = YOLO(model_path, task="detect")
    except Exception as exc:  # ultralytics cannot open every file edgecl can (e.g. engines)
        log.warning("ultralytics could not load %s (%s); skipping its figure", model_path, exc)
        return None
    images = [f.image for f in frames]
    list(model.predict(images[:2], stream=True, imgsz=imgsz, conf=conf, verbose=False))
    t0 = time.perf_counter()
    for _ in model.predict(images, stream=True, imgsz=imgsz, conf=conf, verbose=False):
        pass
    return len(images) / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> int:
    """Run the perf benchmark and print one JSON object."""
    from edgecl.commands.common import print_json_line
    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions

    opts = InferenceOptions(threads=args.threads, imgsz=args.imgsz)
    backend = load_backend(args.model, opts, warmup_runs=5)
    frames = read_frames(args.source, args.frames)
    raw = raw_fps(backend, frames)
    report = pipeline_run(backend, frames)
    result = {"model": str(args.model), "backend": backend.meta.backend, "frames": len(frames),
              "imgsz": backend.meta.imgsz, "raw_fps": round(raw, 2),
              "pipeline_fps": report.fps, "ratio": round(report.fps / raw, 3),
              "latency_ms_p50": report.latency_ms_p50, "latency_ms_p95": report.latency_ms_p95,
              "infer_ms_p50": report.infer_ms_p50}
    if not args.skip_ultralytics:
        ufps = ultralytics_fps(args.model, frames, backend.meta.imgsz, opts.conf)
        result["ultralytics_fps"] = round(ufps, 2) if ufps else None
        result["vs_ultralytics"] = round(report.fps / ufps, 3) if ufps else None
    if args.while_training:
        from edgecl.bench.perf_training import fps_while_training

        result.update(fps_while_training(backend, frames, args))
    backend.close()
    print_json_line(result)
    return 0
