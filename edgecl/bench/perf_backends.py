"""``edgecl bench perf --backends``: CPU engines side by side (speed and held-out accuracy).

One run exports one checkpoint to every requested engine and measures each the same way:

* ``onnx``: onnxruntime FP32 (the baseline of ``ratio``);
* ``openvino``: OpenVINO FP32 IR (``INFERENCE_PRECISION_HINT=f32``);
* ``openvino-int8``: NNCF post-training INT8 of that IR;
* ``onnx-int8``: onnxruntime static QDQ INT8 of the ONNX model.

INT8 engines are calibrated on up to ``--calibration-images`` training images spread over
classes (:func:`edgecl.continual.int8_calibration.spread_over_classes`), the Detect head's
decode kept in float. Per engine:

* ``fps``: frames per second of ``backend.infer([frame])`` frame by frame on one thread
  (letterbox + network + NMS, what the inference loop calls), ``--threads`` inference threads,
  at the runtime's thresholds; medians of ``--repeats`` passes over ``--frames`` frames, the
  engines taking turns every 20 frames within a pass (:func:`interleaved_pass`);
* ``latency_ms_p50``: median time of one ``infer`` call;
* ``map50_95``: held-out (test split) mAP50-95 with edgecl's evaluator (conf 0.001, 300 boxes);
* ``ratio``: the median over passes of the engine's fps / onnxruntime FP32's fps in the same
  pass (``ratio_runs``: each pass's).

The INT8 gate (:func:`edgecl.continual.int8_gate.judge_int8`) is applied to each INT8 engine
against its FP32 original, and ``serve`` names the engine a version would serve (the first of
:data:`edgecl.continual.cpu_engines.SERVE_ORDER` measured here that passed).

With no ``--model`` the built-in scenario is written (``--cache-dir``) and a YOLO11n trained on
every task's training images first (``--train-steps``, cached), so the run needs nothing else.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.bench.trained_model import cache_key
from edgecl.errors import ConfigError

BACKEND_NAMES = ("onnx", "openvino", "openvino-int8", "onnx-int8")
DEFAULT_IMGSZ = 320
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "edgecl" / "bench-perf"
# FP32 original of each INT8 engine (what the gate compares it with).
FP32_OF = {"openvino-int8": "openvino", "onnx-int8": "onnx"}
# the options only --backends uses, with their defaults
BACKENDS_ONLY = {"data": "scenario", "train_steps": 300, "images_per_task": 150,
                 "calibration_images": None, "cache_dir": str(DEFAULT_CACHE_DIR)}


def add_backend_arguments(p) -> None:
    """Add the ``--backends`` options to ``edgecl bench perf``'s parser."""
    from edgecl.arguments import positive_int

    p.add_argument("--backends", default=None,
                   help=f"compare CPU engines: comma list of {', '.join(BACKEND_NAMES)} "
                        "(--model: a .pt checkpoint, or none: trained on the built-in scenario)")
    p.add_argument("--data", default=BACKENDS_ONLY["data"],
                   help="with --backends: tasks.yaml whose test split scores mAP, or 'scenario'")
    p.add_argument("--train-steps", type=positive_int, default=BACKENDS_ONLY["train_steps"],
                   help="with --backends and no --model: training steps of the scenario model (cached)")
    p.add_argument("--images-per-task", type=positive_int, default=BACKENDS_ONLY["images_per_task"],
                   help="with --backends: images per task of the built-in scenario")
    p.add_argument("--calibration-images", type=positive_int,
                   default=BACKENDS_ONLY["calibration_images"],
                   help="with --backends: INT8 calibration images (default export.int8_calibration_images)")
    p.add_argument("--cache-dir", default=BACKENDS_ONLY["cache_dir"],
                   help="with --backends: where the scenario, its model and the exports are kept")


def parse_backends(text: str) -> list[str]:
    """Parse ``--backends``.

    Args:
        text: comma list, e.g. ``onnx,openvino-int8``.

    Returns:
        The names, in order, without duplicates.

    Raises:
        ConfigError: an unknown name or an empty list.
    """
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BACKEND_NAMES]
    if not names:
        raise ConfigError(f"--backends: no backend named; choose from {', '.join(BACKEND_NAMES)}")
    if unknown:
        raise ConfigError(f"--backends: unknown backend(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(BACKEND_NAMES)}")
    return names


def progress_line(line: str) -> None:
    """Print one ``[bench perf]`` progress line on stderr (a plain line: it reads the same in a
    terminal and in a log)."""
    print(f"[bench perf] {line}", file=sys.stderr, flush=True)


def load_data(data: str, cache_dir: Path, imgsz: int, images_per_task: int):
    """The dataset: the built-in scenario (written once per size) or a ``tasks.yaml``.

    Returns:
        The :class:`edgecl.data.tasks.TaskSet`.
    """
    from edgecl.data.scenario import make_scenario
    from edgecl.data.task_sources import load_task_source
    from edgecl.data.tasks import refuse_trained_test_images

    if data == "scenario":
        out = cache_dir / f"scenario-{imgsz}-{images_per_task}"
        if not (out / "tasks.yaml").is_file():
            make_scenario(out, tasks=2, images_per_task=images_per_task, imgsz=imgsz, seed=0)
        return load_task_source(out / "tasks.yaml")
    return refuse_trained_test_images(load_task_source(data))


def train_model(taskset, cfg, cache_dir: Path, steps: int, threads: int) -> Path:
    """Train (or reuse) a YOLO11n on every task's training images at ``cfg.learner.imgsz``.

    Args:
        taskset: the dataset.
        cfg: configuration (learner settings).
        cache_dir: where the checkpoint is cached (keyed by data and settings).
        steps: optimiser steps.
        threads: torch threads.

    Returns:
        The checkpoint path.
    """
    from edgecl.bench.trained_model import cached_trained_model

    images = [p for task in taskset.tasks for p in task.train]
    path = Path(taskset.path)
    # what it trains on, said as given (before: 'on the scenario' for a user's tasks.yaml too)
    what = ("on the scenario" if path.parent.parent == cache_dir
            and path.parent.name.startswith("scenario-") else f"on {path}")
    return cached_trained_model(images, dict(taskset.names), cfg.learner, cache_dir, steps=steps,
                                prefix="model", key_parts=(str(path.resolve()),),
                                threads=threads, progress=progress_line, what=what)


def calibration_paths(taskset, limit: int) -> list[Path]:
    """Up to ``limit`` training images spread over classes (the round's rule)."""
    from edgecl.continual.int8_calibration import spread_over_classes
    from edgecl.data.labels import label_path_for, read_yolo_labels

    images = [Path(p) for task in taskset.tasks for p in task.train]
    items = []
    for path in images:
        labels = read_yolo_labels(label_path_for(path)).labels
        items.append((path, sorted({int(c) for c in labels[:, 0]})))
    return spread_over_classes(items, limit)


def export_engines(pt: Path, names_wanted: list[str], out: Path, imgsz: int, calib: list[Path]) -> tuple[dict, dict]:
    """Export a checkpoint to the requested engines.

    Returns:
        ``(paths, seconds)``: engine name -> file, and engine name -> export/quantise seconds.

    Raises:
        ExportError: an engine cannot be built (e.g. ``openvino`` missing), in one line.
    """
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.models.export import export_onnx
    from edgecl.models.export_openvino import export_openvino
    from edgecl.models.quantize import quantize_onnx, quantize_openvino

    model, meta = load_checkpoint(pt)
    names = {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
    paths: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    need = set(names_wanted) | {FP32_OF[n] for n in names_wanted if n in FP32_OF}
    for name in ("onnx", "openvino", "openvino-int8", "onnx-int8"):
        if name not in need:
            continue
        t0 = time.perf_counter()
        if name == "onnx":
            paths[name] = export_onnx(model, out / "model.onnx", imgsz=imgsz, names=names)
        elif name == "openvino":
            paths[name] = export_openvino(model, out / "openvino", imgsz=imgsz, names=names)
        elif name == "openvino-int8":
            paths[name] = quantize_openvino(paths["openvino"], out / "openvino-int8", calib)
        else:
            paths[name] = quantize_onnx(paths["onnx"], out / "model-int8.onnx", calib)
        seconds[name] = round(time.perf_counter() - t0, 2)
        progress_line(f"{name}: built in {seconds[name]} s")
    return paths, seconds


# Frames each engine runs before the next one takes over, within a repeat. A shared or
# throttled CPU drifts within seconds (every engine 1.5x slower for a while, then fast again);
# engines that take turns every few frames see the same drift, so their ratio holds.
INTERLEAVE_FRAMES = 20


def interleaved_pass(backends: dict, order: list[str], images: list,
                     block: int = INTERLEAVE_FRAMES) -> dict[str, list[float]]:
    """One pass of every engine over the images, taking turns every ``block`` frames.

    Each block is run by every engine in turn, the order reversed on every other block, so that
    a drift in the machine's speed within the pass falls on every engine alike.

    Args:
        backends: engine name -> loaded backend (``infer([image])`` is timed).
        order: engine names, in the order the first block runs them.
        images: BGR frames; each engine sees each once.
        block: frames per turn (at least 1).

    Returns:
        Engine name -> seconds of each ``infer`` call, in frame order.
    """
    times: dict[str, list[float]] = {name: [] for name in order}
    step = max(1, int(block))
    for index, start in enumerate(range(0, len(images), step)):
        chunk = images[start:start + step]
        for name in order if index % 2 == 0 else order[::-1]:
            backend = backends[name]
            for image in chunk:
                t = time.perf_counter()
                backend.infer([image])
                times[name].append(time.perf_counter() - t)
    return times


def measure_engines(paths: dict, order: list[str], frames: list, held_out: list[Path], *,
                    threads: int, conf: float, iou: float, repeats: int) -> list[dict]:
    """Speed (interleaved passes, medians) and held-out accuracy of each engine.

    Each repeat is one :func:`interleaved_pass` over the frames; an engine's ``fps`` in a pass is
    its frames over the summed time of its calls.

    Returns:
        One row per engine: ``name``, ``file``, ``fps``, ``latency_ms_p50``, ``map50_95``,
        ``per_class_map50_95`` (class id -> value) and ``ratio`` (None without ``onnx``).
    """
    from edgecl.continual.evaluate import evaluate_model
    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions

    serve_opts = InferenceOptions(conf=conf, iou=iou, threads=threads)
    eval_opts = InferenceOptions(conf=0.001, iou=iou, max_det=300, threads=threads)
    backends = {name: load_backend(paths[name], serve_opts, warmup_runs=5) for name in order}
    fps: dict[str, list[float]] = {n: [] for n in order}
    p50: dict[str, list[float]] = {n: [] for n in order}
    try:
        for i in range(max(1, repeats)):
            times = interleaved_pass(backends, order, frames)
            for name in order:
                fps[name].append(len(times[name]) / sum(times[name]))
                p50[name].append(statistics.median(times[name]) * 1000.0)
            progress_line(f"repeat {i + 1}: " + ", ".join(f"{n} {fps[n][-1]:.1f} fps" for n in order))
    finally:
        for backend in backends.values():
            backend.close()
    rows = []
    for name in order:
        backend = load_backend(paths[name], eval_opts)
        try:
            result = evaluate_model(backend, held_out)
        finally:
            backend.close()
        rows.append({"name": name, "file": str(paths[name]),
                     "fps": round(statistics.median(fps[name]), 2),
                     "latency_ms_p50": round(statistics.median(p50[name]), 3),
                     "map50_95": round(result.map50_95, 4),
                     "per_class_map50_95": {int(c): round(v, 4)
                                            for c, v in result.per_class_ap50_95.items()},
                     "fps_runs": [round(v, 2) for v in fps[name]]})
    for row in rows:
        paired = paired_ratios(fps[row["name"]], fps["onnx"]) if "onnx" in fps else []
        row["ratio"] = round(statistics.median(paired), 3) if paired else None
        row["ratio_runs"] = [round(v, 3) for v in paired]
    return rows


def paired_ratios(fps: list[float], base_fps: list[float]) -> list[float]:
    """Each pass's fps over the baseline's fps in the same pass.

    Engines of one pass took turns over the same seconds (:func:`interleaved_pass`), so the
    ratio within a pass is free of the drift between passes; ``ratio`` is their median.

    Args:
        fps: an engine's fps per pass.
        base_fps: onnxruntime FP32's fps in the same passes.

    Returns:
        One ratio per pass (passes where the baseline ran no frame are left out).
    """
    return [f / b for f, b in zip(fps, base_fps) if b > 0]


def gate_and_serve(rows: list[dict], max_drop: float, names: dict[int, str]) -> tuple[dict, str | None]:
    """Apply the INT8 gate to each INT8 row against its FP32 original; pick what would serve.

    Returns:
        ``(gate, serve)``: INT8 engine -> ``{accepted, reason}``, and the first engine of
        :data:`edgecl.continual.cpu_engines.SERVE_ORDER` measured here that may serve.
    """
    from edgecl.continual.cpu_engines import SERVE_ORDER
    from edgecl.continual.int8_gate import judge_int8

    by_name = {r["name"]: r for r in rows}
    gate = {}
    for name, fp32 in FP32_OF.items():
        if name in by_name and fp32 in by_name:
            verdict = judge_int8(by_name[fp32]["per_class_map50_95"],
                                 by_name[name]["per_class_map50_95"], max_drop, names)
            gate[name] = {"accepted": verdict.accepted, "reason": verdict.reason}
    serve = next((n for n in SERVE_ORDER if n in by_name
                  and (n not in FP32_OF or gate.get(n, {}).get("accepted"))), None)
    return gate, serve


def run_backends(args) -> dict:
    """Run the comparison and return its JSON-ready result (see the module docstring).

    Raises:
        ConfigError: bad arguments (unknown backend, a non-``.pt`` model, no held-out image).
        ExportError: an engine cannot be built here (e.g. ``openvino`` missing).
    """
    import torch

    from edgecl.config import load_config
    from edgecl.data.images import read_image
    from edgecl.models.checkpoint import load_checkpoint, longer_side
    from edgecl.ultra import ensure_offline

    ensure_offline()
    order = parse_backends(args.backends)
    meta: dict = {}
    if args.model:
        pt = Path(args.model)
        if pt.suffix != ".pt":
            raise ConfigError(f"--backends exports every engine from a PyTorch checkpoint; "
                              f"--model {pt} is not a .pt file")
        meta = load_checkpoint(pt)[1]
    # the size the checkpoint was trained at, unless --imgsz says otherwise
    imgsz = int(args.imgsz or longer_side(meta.get("imgsz")) or DEFAULT_IMGSZ)
    cfg = load_config(None, [f"learner.imgsz={imgsz}", f"model.imgsz={imgsz}"])
    cache_dir = Path(args.cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    taskset = load_data(args.data, cache_dir, imgsz, args.images_per_task)
    if args.model:
        names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
        if names != dict(taskset.names):
            # mAP on another dataset's classes would be scored as 0 for every class
            raise ConfigError(f"--model {pt} detects {sorted(names.values())}, but {args.data} "
                              f"labels {sorted(taskset.names.values())} (same ids and names "
                              f"needed to score it)")
    else:
        pt = train_model(taskset, cfg, cache_dir, args.train_steps, args.threads)
    held_out = [Path(p) for task in taskset.tasks for p in task.test]
    if not held_out:
        raise ConfigError(f"--backends: {args.data} has no test images to score mAP on")
    limit = args.calibration_images or cfg.export.int8_calibration_images
    calib = calibration_paths(taskset, limit)
    out = cache_dir / "exports" / cache_key(str(pt.resolve()), pt.stat().st_mtime, imgsz, limit)
    paths, export_s = export_engines(pt, order, out, imgsz, calib)
    pool = [*held_out, *[Path(p) for task in taskset.tasks for p in task.train]]
    frames = [read_image(pool[i % len(pool)]) for i in range(max(1, args.frames))]
    torch.set_num_threads(args.threads)
    rows = measure_engines(paths, order, frames, held_out, threads=args.threads,
                           conf=cfg.model.conf, iou=cfg.model.iou, repeats=args.repeats)
    gate, serve = gate_and_serve(rows, cfg.export.int8_max_drop, dict(taskset.names))
    return {"benchmark": "perf --backends", "model": str(pt), "data": args.data, "imgsz": imgsz,
            "threads": args.threads, "frames": len(frames), "repeats": max(1, args.repeats),
            "held_out_images": len(held_out), "calibration_images": len(calib),
            "backends": [{k: v for k, v in r.items() if k != "per_class_map50_95"} for r in rows],
            "per_class_map50_95": {r["name"]: {taskset.names.get(c, str(c)): v
                                               for c, v in r["per_class_map50_95"].items()}
                                   for r in rows},
            "int8_gate": gate, "int8_max_drop": cfg.export.int8_max_drop, "serve": serve,
            "build_s": export_s}


def format_table(result: dict) -> str:
    """The result as a small text table, the gate's decisions and what serves.

    Args:
        result: what :func:`run_backends` returns.

    Returns:
        Lines of text (no trailing newline).
    """
    lines = [f"{'name':<14} {'fps':>8} {'p50 ms':>8} {'mAP50-95':>9} {'ratio':>6}"]
    for row in result["backends"]:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"{row['name']:<14} {row['fps']:>8.1f} {row['latency_ms_p50']:>8.2f} "
                     f"{row['map50_95']:>9.4f} {ratio:>6}")
    for name, verdict in result["int8_gate"].items():
        lines.append(f"INT8 gate {name}: {'accepted' if verdict['accepted'] else 'refused'}: "
                     f"{verdict['reason']}")
    lines.append(f"serves: {result['serve']}  ({result['imgsz']} px, {result['threads']} threads, "
                 f"{result['frames']} frames x {result['repeats']} repeats)")
    return "\n".join(lines)


def run(args) -> int:
    """Run ``edgecl bench perf --backends`` and print a table (one JSON line with ``--json``)."""
    result = run_backends(args)
    if args.json:
        print_json_line(result)
    else:
        print(format_table(result), flush=True)
    return 0
