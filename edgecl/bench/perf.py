"""``edgecl bench perf``: pipeline fps vs the raw backend vs ultralytics' own predict."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


log = logging.getLogger(__name__)
DEFAULT_SOURCE = "synthetic://?tasks=5&images_per_task=40&imgsz=160&seed=0"
# options of the pipeline measurement that --backends does not use, with their defaults
PIPELINE_ONLY = {"source": DEFAULT_SOURCE, "skip_ultralytics": False, "while_training": False,
                 "selection": False}
MAX_DECODED_BYTES = 256 << 20
"""Decoded frames a measurement holds at most (256 MiB: 270 frames of 640x512, 1,300 of
320x320); more frames measured repeat them."""

MAX_FRAMES = 1_000_000
"""The most frames ``bench perf --frames`` measures (a figure given by mistake would run for
days)."""


def frame_count(text: str) -> int:
    """argparse type: frames to measure, 1 to :data:`MAX_FRAMES`.

    Raises:
        argparse.ArgumentTypeError: not an integer, or outside that range.
    """
    from edgecl.arguments import positive_int

    value = positive_int(text)
    if value > MAX_FRAMES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_FRAMES} frames, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the perf benchmark's options."""
    from edgecl.arguments import image_size, positive_int, thread_count

    p.add_argument("--model", default=None,
                   help="model file (.onnx, .engine, .xml, .pt); required without --backends")
    p.add_argument("--source", default=DEFAULT_SOURCE, help="frame source URI (not with --backends)")
    p.add_argument("--frames", type=frame_count, default=200,
                   help=f"frames per measurement (1 to {MAX_FRAMES:,}; decoded once, at most "
                        f"{MAX_DECODED_BYTES >> 20} MiB of them held: more frames repeat them)")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="input size for a .yaml model or a .pt checkpoint that records none "
                        "(a model file's own size wins); with --backends, the size every engine "
                        "is exported at (default: the --model checkpoint's own, else 320)")
    p.add_argument("--threads", type=thread_count, default=2, help="inference threads")
    p.add_argument("--skip-ultralytics", action="store_true",
                   help="do not measure ultralytics' predict")
    p.add_argument("--while-training", action="store_true",
                   help="also measure inference fps while a learning round trains")
    p.add_argument("--repeats", type=positive_int, default=3, help="interleaved repetitions (medians kept)")
    p.add_argument("--selection", action="store_true",
                   help="also measure pipeline fps with the field labelling pipeline on vs off")
    p.add_argument("--json", action="store_true",
                   help="one JSON line (always JSON without --backends)")
    from edgecl.bench.perf_backends import add_backend_arguments

    add_backend_arguments(p)


def read_frames(uri: str, n: int, max_bytes: int = MAX_DECODED_BYTES) -> list:
    """``n`` frames of a source, decoded once: a source shorter than ``n`` is read once and its
    frames repeated, and so are the frames decoded once they hold ``max_bytes`` (before, 3,000
    frames of 640x512 held 3.6 GB, and ``--frames 20000`` would not fit in memory).

    Args:
        uri: the source (``dir://``, ``file://``, ...).
        n: frames wanted.
        max_bytes: decoded pixels held at most.

    Returns:
        ``n`` frames (repeats are the same objects).

    Raises:
        SourceError: the source yields no frame (empty, or nothing in it decodes).
    """
    from edgecl.errors import SourceError
    from edgecl.runtime.sources import open_source

    frames, held_bytes = [], 0
    with open_source(uri) as source:
        for frame in source:
            frames.append(frame)
            held_bytes += frame.image.nbytes
            if len(frames) >= n or held_bytes >= max_bytes:
                break
    if not frames:
        raise SourceError(f"source {uri} produced no frame to measure with (empty, or no frame "
                          f"in it decodes)")
    if len(frames) < n:
        log.info("measuring %d frames on the %d decoded ones (%.0f MiB), repeated", n,
                 len(frames), held_bytes / 2**20)
        frames = [frames[i % len(frames)] for i in range(n)]
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
        frame = dataclasses.replace(self._frames[self._i], ts_s=time.time(),
                                    captured_mono_s=time.monotonic())
        self._i += 1
        return frame


def raw_fps(backend, frames: list) -> float:
    """Frames per second of ``backend.infer`` called frame by frame on the main thread."""
    t0 = time.perf_counter()
    for frame in frames:
        backend.infer([frame.image])
    return len(frames) / (time.perf_counter() - t0)


def pipeline_run(backend, frames: list, sinks=None):
    """Run the full loop (capture -> inference -> sink threads) over the frames.

    Args:
        backend: loaded inference backend.
        frames: decoded frames.
        sinks: the loop's sinks (default: one that does nothing).

    Returns:
        The loop's report.
    """
    from edgecl.runtime.loop import InferenceLoop

    class CountSink:
        def write(self, result):
            pass

        def close(self):
            pass

    loop = InferenceLoop(ReplaySource(frames), backend, "bench", sinks=sinks or [CountSink()],
                         back_pressure="block")
    return loop.run()


def selection_fps(backend, frames: list, repeats: int) -> dict:
    """Pipeline fps on unlabelled frames with the field labelling pipeline (selection policies,
    operator queue, pseudo-labels, replay memory on a scratch state directory) vs without it.

    Returns:
        ``pipeline_fps_selection_off``, ``pipeline_fps_selection_on`` (medians of interleaved
        runs) and ``selection_ratio`` (on / off; the target is >= 0.95).
    """
    import dataclasses
    import tempfile

    from edgecl.config import load_config
    from edgecl.models.classes import ClassRegistry
    from edgecl.runtime.labels import MemorySink

    unlabelled = [dataclasses.replace(f, labels=None, task=None) for f in frames]
    names = backend.meta.names
    off, on = [], []
    for _ in range(max(1, repeats)):
        off.append(pipeline_run(backend, unlabelled).fps)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(None, [f"state_dir={tmp}", "labels.mode=field"])
            classes = ClassRegistry(tmp)
            classes.seed(names)
            sink = MemorySink.from_config(cfg, classes=classes, known_classes=lambda: set(names))
            on.append(pipeline_run(backend, unlabelled, sinks=[sink]).fps)
    out = {"pipeline_fps_selection_off": round(_median(off), 2),
           "pipeline_fps_selection_on": round(_median(on), 2)}
    out["selection_ratio"] = round(out["pipeline_fps_selection_on"]
                                   / max(out["pipeline_fps_selection_off"], 1e-9), 3)
    return out


# files ultralytics' YOLO() opens by themselves (an OpenVINO IR needs its *_openvino_model/ folder)
ULTRALYTICS_FILE_SUFFIXES = (".pt", ".onnx", ".engine", ".yaml", ".yml")


def load_ultralytics(model_path: str):
    """Load a model with ultralytics' own ``YOLO`` class (``None`` if it cannot)."""
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    if Path(model_path).suffix.lower() not in ULTRALYTICS_FILE_SUFFIXES:
        log.warning("ultralytics does not load a %s file on its own; skipping its figure",
                    Path(model_path).suffix)
        return None
    try:
        return YOLO(model_path, task="detect")
    except Exception as exc:  # ultralytics cannot open every file edgecl can (e.g. engines)
        log.warning("ultralytics could not load %s (%s); skipping its figure", model_path, exc)
        return None


def ultralytics_stream_fps(model, frames: list, imgsz: int, conf: float) -> float:
    """Frames per second of ``predict(frame, stream=True)`` called frame by frame, as a
    camera loop calls it."""
    images = [f.image for f in frames]
    t0 = time.perf_counter()
    for image in images:
        for _ in model.predict(image, stream=True, imgsz=imgsz, conf=conf, verbose=False):
            pass
    return len(images) / (time.perf_counter() - t0)


def ultralytics_batch_fps(model, frames: list, imgsz: int, conf: float) -> float:
    """Frames per second of one ``predict(list_of_frames, stream=True)`` call (all frames
    known in advance: an offline upper bound, not possible on a live camera)."""
    images = [f.image for f in frames]
    t0 = time.perf_counter()
    for _ in model.predict(images, stream=True, imgsz=imgsz, conf=conf, verbose=False):
        pass
    return len(images) / (time.perf_counter() - t0)


def _median(values: list[float]) -> float:
    return float(sorted(values)[len(values) // 2])


def _ultralytics_pt(args, frames: list, imgsz: int, conf: float, pipeline_fps: float) -> dict:
    """Ultralytics on the PyTorch checkpoint beside an exported model (``model.pt`` of a
    registry version): what a device runs without edgecl's exported engine."""
    pt = Path(args.model).with_suffix(".pt")
    if args.skip_ultralytics or Path(args.model).suffix == ".pt" or not pt.is_file():
        return {}
    ultra = load_ultralytics(str(pt))
    if ultra is None:
        return {}
    ultralytics_stream_fps(ultra, frames[:5], imgsz, conf)
    fps = _median([ultralytics_stream_fps(ultra, frames, imgsz, conf)
                   for _ in range(max(1, args.repeats))])
    return {"ultralytics_pt_fps": round(fps, 2), "vs_ultralytics_pt": round(pipeline_fps / fps, 3)}


def measure(backend, frames: list, args, imgsz: int, conf: float) -> dict:
    """Interleave the measurements ``args.repeats`` times and keep each one's median."""
    ultra = None if args.skip_ultralytics else load_ultralytics(args.model)
    if ultra is not None:
        ultralytics_stream_fps(ultra, frames[:5], imgsz, conf)
    from edgecl.bench.perf_backends import progress_line

    raw, pipe, p50, p95, infer, stream, batch = [], [], [], [], [], [], []
    repeats = max(1, args.repeats)
    for i in range(repeats):
        raw.append(raw_fps(backend, frames))
        report = pipeline_run(backend, frames)
        pipe.append(report.fps)
        p50.append(report.latency_ms_p50)
        p95.append(report.latency_ms_p95)
        infer.append(report.infer_ms_p50)
        if ultra is not None:
            stream.append(ultralytics_stream_fps(ultra, frames, imgsz, conf))
            batch.append(ultralytics_batch_fps(ultra, frames, imgsz, conf))
        progress_line(f"repeat {i + 1} of {repeats}: raw {raw[-1]:.1f} fps, pipeline {pipe[-1]:.1f} fps"
                      + (f", ultralytics {stream[-1]:.1f} fps" if stream else ""))
    out = {"raw_fps": round(_median(raw), 2), "pipeline_fps": round(_median(pipe), 2),
           "latency_ms_p50": _median(p50), "latency_ms_p95": _median(p95),
           "infer_ms_p50": _median(infer), "repeats": repeats}
    out["ratio"] = round(out["pipeline_fps"] / out["raw_fps"], 3)
    out.update(_ultralytics_pt(args, frames, imgsz, conf, out["pipeline_fps"]))
    if stream:
        out["ultralytics_fps"] = round(_median(stream), 2)
        out["ultralytics_batch_fps"] = round(_median(batch), 2)
        out["vs_ultralytics"] = round(out["pipeline_fps"] / out["ultralytics_fps"], 3)
    return out


def given_options(args: argparse.Namespace, defaults: dict) -> list[str]:
    """The options of ``defaults`` (destination -> default) that the command line gave
    (:class:`~edgecl.arguments.StoreOnce` records them; also one given its default value,
    ``--data scenario``) or that ``args`` sets otherwise, as flags (``train_steps`` ->
    ``--train-steps``)."""
    given = getattr(args, "_options_given", None) or {}
    return ["--" + dest.replace("_", "-") for dest, default in defaults.items()
            if dest in given or getattr(args, dest, default) != default]


def run(args: argparse.Namespace) -> int:
    """Run the perf benchmark and print one JSON object (``--backends``: see
    :mod:`edgecl.bench.perf_backends`)."""
    from edgecl.bench import perf_backends
    from edgecl.errors import ConfigError

    backends = getattr(args, "backends", None) is not None
    unused = given_options(args, PIPELINE_ONLY if backends else perf_backends.BACKENDS_ONLY)
    if unused:  # before: measured without them, as if they had been left out
        raise ConfigError(f"edgecl bench perf: {', '.join(unused)} "
                          f"{'do' if len(unused) > 1 else 'does'} not apply "
                          f"{'with' if backends else 'without'} --backends")
    if backends:
        return perf_backends.run(args)
    if not args.model:
        raise ConfigError("edgecl bench perf needs --model (or --backends to compare CPU engines)")
    from edgecl.arguments import print_json_line
    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions

    opts = InferenceOptions(threads=args.threads, imgsz=args.imgsz)
    frames = read_frames(args.source, args.frames)  # a bad source: said before the model loads
    backend = load_backend(args.model, opts, warmup_runs=5)
    if args.imgsz and backend.meta.imgsz != args.imgsz:  # before: taken without a word
        log.warning("--imgsz %d is not used: %s runs at its own input size %d", args.imgsz,
                    args.model, backend.meta.imgsz)
    result = {"model": str(args.model), "backend": backend.meta.backend, "frames": len(frames),
              "imgsz": backend.meta.imgsz, "threads": args.threads}
    result.update(measure(backend, frames, args, backend.meta.imgsz, opts.conf))
    if getattr(args, "selection", False):
        result.update(selection_fps(backend, frames, args.repeats))
    if args.while_training:
        from edgecl.bench.perf_training import fps_while_training

        imgsz = int(getattr(args, "imgsz", None) or backend.meta.imgsz)
        result.update(fps_while_training(lambda: raw_fps(backend, frames), imgsz))
    backend.close()
    print_json_line(result)
    return 0
