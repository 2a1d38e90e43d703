"""Build TensorRT engines from ONNX on the device, cached by what invalidates them.

The build itself is ultralytics' (``ultralytics.utils.export.engine.onnx2engine``, what
``yolo export format=engine`` runs and ultralytics tests on Jetsons): TensorRT 8.x / 10.x builder
flags, TensorRT 11 strongly typed networks through ModelOpt, INT8 calibration with the head's
sigmoids kept in FP32. edgecl adds only what is ours: the cache key and the engine cache, the
precision decision recorded in the header, INT8 calibration images from the replay memory
(letterboxed like inference), checks of the ONNX input before TensorRT starts, and the
stale-engine header (see :mod:`edgecl.models.engine_file`).
"""

from __future__ import annotations

import ast
import logging
import os
import tempfile
from pathlib import Path

from edgecl.atomic import atomic_copy, atomic_write_bytes
from edgecl.errors import ModelLoadError
from edgecl.models.base import letterbox_batch, one_line, sha256_file
from edgecl.models.engine_file import (BUILD_HINT, EngineBuildError, check_build_args,
                                       cuda_device_identity, encode_engine_file, engine_cache_key,
                                       import_tensorrt, make_engine_header, read_engine_header,
                                       tensorrt_available, tensorrt_logger)
from edgecl.ultra import ensure_offline

__all__ = ["DEFAULT_ENGINE_CACHE_ENTRIES", "MIN_INT8_CALIBRATION_IMAGES", "CalibrationBatches",
           "EngineBuildError", "UltralyticsCalibrationData", "build_engine", "engine_cache_key",
           "prune_engine_cache", "resolve_precision", "reuse_cached_engine", "tensorrt_available"]

log = logging.getLogger(__name__)

# INT8 with a handful of calibration images collapses mAP (ultralytics' Orin Nano benchmark);
# the replay memory holds hundreds of representative frames, so demand at least this many.
MIN_INT8_CALIBRATION_IMAGES = 100
# Engines kept in the cache (a few per model precision/batch the device switches between).
DEFAULT_ENGINE_CACHE_ENTRIES = 4


def prune_engine_cache(cache_dir: Path, max_entries: int = DEFAULT_ENGINE_CACHE_ENTRIES,
                       protect: Path | None = None) -> dict:
    """Bound the engine cache to its ``max_entries`` most recently used engines (LRU by mtime).

    A reused engine has its mtime refreshed (:func:`reuse_cached_engine`), so the least recently
    used go first; each goes with its ``<key>.calib`` INT8 calibration cache where an older
    build left one. ``protect`` (the engine just built) is never removed: after the wall clock
    went back, its mtime is the oldest of all.

    Args:
        cache_dir: the cache folder (``<key>.engine`` files); may be missing.
        max_entries: engines to keep (>= 0).
        protect: an engine file kept whatever its mtime (it counts towards ``max_entries``).

    Returns:
        ``{"kept": n, "removed": n, "freed_bytes": n}``.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return {"kept": 0, "removed": 0, "freed_bytes": 0}
    keep = Path(protect).name if protect is not None else None
    engines = sorted((p for p in cache_dir.glob("*.engine") if p.is_file()),
                     key=lambda p: (p.name == keep, p.stat().st_mtime), reverse=True)
    doomed = engines[max(0, int(max_entries)):]
    freed = 0
    for engine in doomed:
        for path in (engine, engine.with_suffix(".calib")):
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    if doomed:
        log.info("engine cache %s: removed %d least recently used engines", cache_dir, len(doomed))
    return {"kept": len(engines) - len(doomed), "removed": len(doomed), "freed_bytes": freed}


class CalibrationBatches:
    """Letterboxed float32 NCHW batches read from image files, for INT8 calibration.

    Unreadable images are skipped and counted in ``skipped``; a trailing partial batch is
    dropped because the engine's batch size is static.

    Args:
        image_paths: image files (replay-memory frames).
        batch: images per batch (the engine's batch size).
        imgsz: square network input side.
    """

    def __init__(self, image_paths: list[Path], *, batch: int, imgsz: int):
        self.image_paths = [Path(p) for p in image_paths]
        self.batch = int(batch)
        self.imgsz = int(imgsz)
        self.skipped = 0

    def __len__(self) -> int:
        """Return the number of full batches if every image is readable."""
        return len(self.image_paths) // self.batch

    def __iter__(self):
        """Yield ``(batch, 3, imgsz, imgsz)`` float32 arrays in 0..1 (RGB)."""
        import cv2

        pending = []
        for path in self.image_paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped += 1
                continue
            pending.append(image)
            if len(pending) == self.batch:
                yield letterbox_batch(pending, self.imgsz)
                pending = []


class UltralyticsCalibrationData:
    """:class:`CalibrationBatches` in the form ultralytics' INT8 calibrator reads.

    ``onnx2engine`` reads ``batch_size`` and iterates dicts whose ``img`` is an NCHW RGB tensor
    in 0..255 (it divides by 255 itself), as its dataloaders yield.

    Args:
        batches: letterboxed calibration batches (0..1).
    """

    def __init__(self, batches: CalibrationBatches):
        self.batches = batches
        self.batch_size = batches.batch

    def __len__(self) -> int:
        """Number of full batches."""
        return len(self.batches)

    def __iter__(self):
        """Yield ``{"img": float32 tensor (batch, 3, imgsz, imgsz) in 0..255}``."""
        import torch

        for batch in self.batches:
            yield {"img": torch.from_numpy(batch * 255.0)}


def resolve_precision(requested: str, *, fast_fp16: bool, fast_int8: bool, has_precision_flags: bool) -> str:
    """Decide which precision to build, given what the platform offers.

    Args:
        requested: ``fp32``, ``fp16`` or ``int8``.
        fast_fp16: the GPU has fast FP16 (``builder.platform_has_fast_fp16``).
        fast_int8: the GPU has fast INT8 (``builder.platform_has_fast_int8``).
        has_precision_flags: TensorRT still has the FP16/INT8 builder flags (< 11).

    Returns:
        The precision to build: ``requested``, or ``fp32`` when FP16 is not fast here.

    Raises:
        EngineBuildError: INT8 is not available, or this TensorRT is strongly typed only.
    """
    if requested == "fp32":
        return "fp32"
    if not has_precision_flags:
        raise EngineBuildError(f"this TensorRT builds strongly typed networks only; {requested} "
                               "needs TensorRT 8.x or 10.x, or use precision fp32")
    if requested == "int8" and not fast_int8:
        raise EngineBuildError("this GPU has no fast INT8; use precision fp16")
    if requested == "fp16" and not fast_fp16:
        log.warning("this GPU has no fast FP16; building an FP32 engine instead")
        return "fp32"
    return requested


def reuse_cached_engine(engine_path: Path, cache_dir: Path | None, cache_key: str) -> bool:
    """Reuse an engine with the same cache key: ``engine_path`` itself or ``cache_dir/<key>.engine``.

    Args:
        engine_path: where the engine must end up.
        cache_dir: engine cache folder, or ``None``.
        cache_key: :func:`engine_cache_key` of the wanted engine.

    Returns:
        True when ``engine_path`` now holds a matching engine (nothing to build).
    """
    engine_path = Path(engine_path)
    if _cached_key(engine_path) == cache_key:
        return True
    if cache_dir is None:
        return False
    cached = Path(cache_dir) / f"{cache_key}.engine"
    if _cached_key(cached) != cache_key:
        return False
    atomic_copy(cached, engine_path)
    os.utime(cached)  # LRU: prune_engine_cache keeps the most recently used
    log.info("reused cached TensorRT engine %s", cached)
    return True


def _cached_key(path: Path) -> str | None:
    """Return the cache key in an engine file's header; ``None`` if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return read_engine_header(path).get("edgecl", {}).get("cache_key")
    except ModelLoadError:
        return None


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp16", imgsz: int,
                 workspace_mb: int = 1024, calibration_images: list[Path] | None = None,
                 cache_dir: Path | None = None, names: dict[int, str] | None = None, batch: int = 1,
                 cache_entries: int = DEFAULT_ENGINE_CACHE_ENTRIES) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for an ONNX detector.

    Args:
        onnx_path: ONNX model exported from the detector.
        engine_path: destination ``.engine`` file (written atomically, header + engine).
        precision: ``fp16`` (FP32 where FP16 is not fast), ``int8`` or ``fp32``.
        imgsz: square input side; must match a static ONNX input (a dynamic one gets a profile).
        workspace_mb: TensorRT builder workspace limit.
        calibration_images: INT8 only: at least :data:`MIN_INT8_CALIBRATION_IMAGES` images.
        cache_dir: engine cache folder (``<key>.engine``); ``None``: no cache.
        names: class names; default: the ONNX metadata, else ``{i: "i"}``.
        batch: batch size (the profile maximum for a dynamic ONNX input).
        cache_entries: engines the cache keeps (LRU, see :func:`prune_engine_cache`).

    Returns:
        ``engine_path``.

    Raises:
        EngineBuildError: bad input, TensorRT missing, unsupported precision, failed build.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    check_build_args(precision, imgsz, batch)
    _check_calibration_images(precision, calibration_images)
    onnx_names, input_shape, nc = _onnx_io(onnx_path)
    _check_onnx_input(onnx_path, input_shape, imgsz=imgsz, batch=batch)
    trt = import_tensorrt(EngineBuildError, BUILD_HINT)
    device = cuda_device_identity(EngineBuildError)
    key = engine_cache_key(onnx_path, precision=precision, imgsz=imgsz, batch=batch,
                           device_name=device, trt_version=trt.__version__)
    if reuse_cached_engine(engine_path, cache_dir, key):
        return engine_path
    plan, built_precision = _build_plan(trt, onnx_path, precision=precision, imgsz=imgsz, batch=batch,
                                        workspace_mb=workspace_mb, calibration_images=calibration_images,
                                        dynamic=-1 in input_shape, work_dir=engine_path.parent)
    header = make_engine_header(names=names or onnx_names or {i: str(i) for i in range(nc or 0)}, imgsz=imgsz,
                                batch=batch, cache_key=key, onnx_sha256=sha256_file(onnx_path),
                                precision=built_precision, requested_precision=precision,
                                trt_version=trt.__version__, device=device, engine_bytes=plan)
    data = encode_engine_file(header, plan)
    atomic_write_bytes(engine_path, data)
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{key}.engine"
        atomic_write_bytes(cached, data)
        prune_engine_cache(Path(cache_dir), cache_entries, protect=cached)
    log.info("built %s TensorRT engine %s (%d bytes)", built_precision, engine_path, len(data))
    return engine_path


def _check_calibration_images(precision: str, calibration_images: list[Path] | None) -> None:
    """Refuse INT8 without enough existing calibration images."""
    if precision != "int8":
        return
    found = [p for p in (calibration_images or []) if Path(p).is_file()]
    if len(found) < MIN_INT8_CALIBRATION_IMAGES:
        raise EngineBuildError(
            f"INT8 needs at least {MIN_INT8_CALIBRATION_IMAGES} calibration images, got {len(found)}: "
            "tiny calibration sets collapse mAP; let the replay memory fill up or use precision fp16")


def _onnx_io(onnx_path: Path) -> tuple[dict[int, str], tuple[int, ...], int | None]:
    """Return ``(names, input shape with -1 for dynamic dims, nc from a static output or None)``."""
    import onnx

    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx and protobuf raise several unrelated types for damaged files
        raise EngineBuildError(f"unreadable ONNX model {onnx_path}: {one_line(exc)}") from None
    custom = {p.key: p.value for p in model.metadata_props}
    try:
        names = {int(k): str(v) for k, v in ast.literal_eval(custom.get("names", "{}")).items()}
    except (ValueError, SyntaxError, AttributeError):
        raise EngineBuildError(f"{onnx_path}: unreadable 'names' metadata") from None

    def dims(value_info) -> tuple[int, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") else -1
                     for d in value_info.type.tensor_type.shape.dim)

    if not model.graph.input or not model.graph.output:
        raise EngineBuildError(f"{onnx_path}: the graph has no input or no output")
    out = dims(model.graph.output[0])
    nc = out[1] - 4 if len(out) == 3 and out[1] > 4 else None
    return names, dims(model.graph.input[0]), nc


def _check_onnx_input(onnx_path: Path, shape: tuple[int, ...], *, imgsz: int, batch: int) -> None:
    """Refuse an ONNX input whose static dims disagree with the engine asked for."""
    if len(shape) != 4:
        raise EngineBuildError(f"{onnx_path}: input shape {shape} is not an image batch (N, 3, H, W)")
    if shape[-1] != -1 and shape[-1] != imgsz:
        raise EngineBuildError(f"{onnx_path}: ONNX input is {shape[-1]} px but imgsz={imgsz} was asked")
    wanted = (batch, 3, imgsz, imgsz)
    if any(d not in (-1, w) for d, w in zip(shape, wanted)):
        shown = tuple("?" if d == -1 else d for d in shape)
        raise EngineBuildError(f"ONNX input of {onnx_path.name} is {shown}; expected {wanted} "
                               f"(imgsz={imgsz}, batch={batch})")


def _build_plan(trt, onnx_path: Path, *, precision: str, imgsz: int, batch: int, workspace_mb: int,
                calibration_images: list[Path] | None, dynamic: bool,
                work_dir: Path) -> tuple[bytes, str]:
    """Build a serialized engine with ultralytics' ``onnx2engine``; return ``(plan, precision built)``.

    A dynamic ONNX input gets ultralytics' optimisation profile (batch 1..``batch``, optimum
    ``(batch, 3, imgsz, imgsz)``); the backend binds each call's actual batch. The plan is
    written in a temporary folder in ``work_dir`` (the engine's own folder: a round's work
    folder, which the next round clears; the system temp folder kept a killed build's files).
    """
    ensure_offline()
    from ultralytics.utils.export.engine import onnx2engine

    probe = trt.Builder(tensorrt_logger())
    built = resolve_precision(precision, fast_fp16=getattr(probe, "platform_has_fast_fp16", True),
                              fast_int8=getattr(probe, "platform_has_fast_int8", True),
                              has_precision_flags=hasattr(trt.BuilderFlag, "FP16"))
    data = None
    if built == "int8":
        data = UltralyticsCalibrationData(CalibrationBatches(calibration_images or [], batch=batch, imgsz=imgsz))
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgecl-engine-", dir=work_dir) as tmp:
        try:
            produced = onnx2engine(str(onnx_path), Path(tmp) / "plan.engine", workspace=workspace_mb / 1024,
                                   quantize={"fp16": 16, "int8": 8}.get(built), dynamic=dynamic,
                                   shape=(batch, 3, imgsz, imgsz), dataset=data, metadata=None,
                                   prefix="TensorRT:")
        except Exception as exc:  # onnx2engine raises RuntimeError, ValueError and TensorRT's own types
            raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}: {one_line(exc)}") from None
        plan = Path(produced).read_bytes()
    if data is not None and data.batches.skipped:
        log.warning("INT8 calibration skipped %d unreadable images", data.batches.skipped)
    return plan, built
