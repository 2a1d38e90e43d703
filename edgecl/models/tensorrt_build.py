"""Build TensorRT engines from ONNX on the device: FP32/FP16/INT8, cached by what invalidates them.

Works with TensorRT 8.x (JetPack 5) and 10.x (JetPack 6). INT8 uses implicit quantization
with an entropy calibrator fed from replay-memory images; TensorRT releases without precision
builder flags (strongly typed only) build FP32 engines and refuse FP16/INT8 with a clear error.
Device buffers are torch CUDA tensors (torch ships with JetPack), so no pycuda is needed.
"""

from __future__ import annotations

import ast
import logging
import re
import types
from functools import lru_cache
from pathlib import Path

from edgecl.atomic import atomic_copy, atomic_write_bytes
from edgecl.errors import ModelLoadError
from edgecl.models.base import letterbox_batch, sha256_file
from edgecl.models.engine_file import (BUILD_HINT, EngineBuildError, check_build_args,
                                       cuda_device_identity, encode_engine_file, engine_cache_key,
                                       import_tensorrt, make_engine_header, read_engine_header,
                                       tensorrt_available, tensorrt_logger)

__all__ = ["MIN_INT8_CALIBRATION_IMAGES", "CalibrationBatches", "EngineBuildError", "build_engine",
           "engine_cache_key", "make_memory_calibrator", "resolve_precision", "reuse_cached_engine",
           "tensorrt_available"]

log = logging.getLogger(__name__)

# INT8 with a handful of calibration images collapses mAP (ultralytics' Orin Nano benchmark);
# the replay memory holds hundreds of representative frames, so demand at least this many.
MIN_INT8_CALIBRATION_IMAGES = 100


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


@lru_cache(maxsize=1)
def _memory_calibrator_class(trt: types.ModuleType) -> type:
    """Define the calibrator class once TensorRT is imported (its base lives in ``tensorrt``)."""

    class MemoryCalibrator(trt.IInt8EntropyCalibrator2):
        """Entropy calibrator fed from replay-memory images, with an on-disk cache."""

        def __init__(self, batches: CalibrationBatches, cache_path: Path):
            trt.IInt8EntropyCalibrator2.__init__(self)
            import torch

            self.batches = batches
            self.cache_path = Path(cache_path)
            self._iterator = iter(batches)
            # INVARIANT: the device buffer outlives every pointer handed to TensorRT.
            self._device_input = torch.empty((batches.batch, 3, batches.imgsz, batches.imgsz),
                                             dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return self.batches.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            import torch

            host = next(self._iterator, None)
            if host is None:
                return None
            self._device_input.copy_(torch.from_numpy(host))
            torch.cuda.current_stream().synchronize()
            return [int(self._device_input.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache_path.read_bytes() if self.cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(self.cache_path, bytes(cache))

    return MemoryCalibrator


def make_memory_calibrator(trt: types.ModuleType, batches: CalibrationBatches, cache_path: Path):
    """Create a ``MemoryCalibrator`` (a ``trt.IInt8EntropyCalibrator2``).

    Args:
        trt: the imported ``tensorrt`` module.
        batches: calibration batches.
        cache_path: calibration cache file, read if present and written after calibrating.

    Returns:
        The calibrator, ready for ``config.int8_calibrator``.
    """
    return _memory_calibrator_class(trt)(batches, cache_path)


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
                 cache_dir: Path | None = None, names: dict[int, str] | None = None, batch: int = 1) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for an ONNX detector.

    Args:
        onnx_path: ONNX model exported from the detector.
        engine_path: destination ``.engine`` file (written atomically, header + engine).
        precision: ``fp16`` (FP32 where FP16 is not fast), ``int8`` or ``fp32``.
        imgsz: square input side; must match a static ONNX input.
        workspace_mb: TensorRT builder workspace limit.
        calibration_images: INT8 only: at least :data:`MIN_INT8_CALIBRATION_IMAGES` images.
        cache_dir: engine cache folder (``<key>.engine``, ``<key>.calib``); ``None``: no cache.
        names: class names; default: the ONNX metadata, else ``{i: "i"}``.
        batch: static batch size.

    Returns:
        ``engine_path``.

    Raises:
        EngineBuildError: bad input, TensorRT missing, unsupported precision, failed build.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    check_build_args(precision, imgsz, batch)
    _check_calibration_images(precision, calibration_images)
    onnx_names, onnx_imgsz = _onnx_metadata(onnx_path)
    if onnx_imgsz is not None and onnx_imgsz != imgsz:
        raise EngineBuildError(f"{onnx_path}: ONNX input is {onnx_imgsz} px but imgsz={imgsz} was asked")
    trt = import_tensorrt(EngineBuildError, BUILD_HINT)
    device = cuda_device_identity(EngineBuildError)
    key = engine_cache_key(onnx_path, precision=precision, imgsz=imgsz, batch=batch,
                           device_name=device, trt_version=trt.__version__)
    if reuse_cached_engine(engine_path, cache_dir, key):
        return engine_path
    calib_cache = (Path(cache_dir) if cache_dir else engine_path.parent) / f"{key}.calib"
    plan, built_precision, nc = _build_plan(trt, onnx_path, precision=precision, imgsz=imgsz, batch=batch,
                                            workspace_mb=workspace_mb, calibration_images=calibration_images,
                                            calib_cache=calib_cache)
    header = make_engine_header(names=names or onnx_names or {i: str(i) for i in range(nc)}, imgsz=imgsz,
                                batch=batch, cache_key=key, onnx_sha256=sha256_file(onnx_path),
                                precision=built_precision, requested_precision=precision,
                                trt_version=trt.__version__, device=device, engine_bytes=plan)
    data = encode_engine_file(header, plan)
    atomic_write_bytes(engine_path, data)
    if cache_dir is not None:
        atomic_write_bytes(Path(cache_dir) / f"{key}.engine", data)
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


def _onnx_metadata(onnx_path: Path) -> tuple[dict[int, str], int | None]:
    """Return ``(names, static input side or None)`` of an ONNX model."""
    import onnx

    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx and protobuf raise several unrelated types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineBuildError(f"unreadable ONNX model {onnx_path}: {first}") from None
    custom = {p.key: p.value for p in model.metadata_props}
    try:
        names = {int(k): str(v) for k, v in ast.literal_eval(custom.get("names", "{}")).items()}
    except (ValueError, SyntaxError, AttributeError):
        raise EngineBuildError(f"{onnx_path}: unreadable 'names' metadata") from None
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    side = dims[-1].dim_value if len(dims) == 4 and dims[-1].HasField("dim_value") else None
    return names, side


def _build_plan(trt, onnx_path: Path, *, precision: str, imgsz: int, batch: int, workspace_mb: int,
                calibration_images: list[Path] | None, calib_cache: Path) -> tuple[bytes, str, int]:
    """Parse the ONNX file and build a serialized engine; return ``(plan, precision, nc)``."""
    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    trt_major = int(trt.__version__.split(".", 1)[0])
    # EXPLICIT_BATCH is the only mode (and the flag deprecated) from TensorRT 10 on.
    flags = 0 if trt_major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = str(parser.get_error(0)) if parser.num_errors else "unknown error"
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    _set_workspace(trt, config, workspace_mb)
    profile = _input_profile(trt, builder, network, imgsz=imgsz, batch=batch)
    if profile is not None:
        config.add_optimization_profile(profile)
    built = resolve_precision(precision, fast_fp16=getattr(builder, "platform_has_fast_fp16", True),
                              fast_int8=getattr(builder, "platform_has_fast_int8", True),
                              has_precision_flags=hasattr(trt.BuilderFlag, "FP16"))
    calibrator = None
    if built in ("fp16", "int8") and getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
    if built == "int8":
        calibrator = make_memory_calibrator(
            trt, CalibrationBatches(calibration_images or [], batch=batch, imgsz=imgsz), calib_cache)
        _enable_int8(trt, config, network, calibrator, profile, trt_major)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    if calibrator is not None and calibrator.batches.skipped:
        log.warning("INT8 calibration skipped %d unreadable images", calibrator.batches.skipped)
    nc = int(network.get_output(0).shape[1]) - 4
    return bytes(plan), built, nc


def _set_workspace(trt, config, workspace_mb: int) -> None:
    """Limit the builder workspace (``set_memory_pool_limit`` from 8.4; older attribute before)."""
    workspace_bytes = int(workspace_mb) * (1 << 20)
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes


def _input_profile(trt, builder, network, *, imgsz: int, batch: int):
    """Pin dynamic input dims to ``(batch, 3, imgsz, imgsz)``; check static ones. ``None`` if static."""
    wanted = (batch, 3, imgsz, imgsz)
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape:
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(tensor.name, wanted, wanted, wanted)
        elif shape != wanted:
            raise EngineBuildError(f"ONNX input {tensor.name!r} is {shape}; expected {wanted} "
                                   f"(imgsz={imgsz}, batch={batch})")
    return profile


def _enable_int8(trt, config, network, calibrator, profile, trt_major: int) -> None:
    """Turn on INT8 with the calibrator, keeping the detection head's precision-critical layers out."""
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = calibrator
    if profile is not None and trt_major < 10:
        config.set_calibration_profile(profile)
    if _keep_head_out_of_int8(trt, network):
        flag = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None) or trt.BuilderFlag.STRICT_TYPES
        config.set_flag(flag)


def _keep_head_out_of_int8(trt, network) -> int:
    """Keep the head's sigmoids in FP32 (score calibration) and its output convs in FP16.

    Returns:
        Number of constrained layers.
    """
    layer_names = [network.get_layer(i).name for i in range(network.num_layers)]
    indices = [int(m.group(1)) for n in layer_names if (m := re.search(r"/model\.(\d+)/", n))]
    head = f"/model.{max(indices)}/" if indices else None
    constrained = 0
    for i in range(network.num_layers if head else 0):
        layer = network.get_layer(i)
        if head not in layer.name:
            continue
        if layer.type == trt.LayerType.ACTIVATION and "sigmoid" in layer.name.lower():
            dtype = trt.float32
        elif layer.type == trt.LayerType.CONVOLUTION and (layer.name.endswith(".2/Conv") or "/dfl/" in layer.name):
            dtype = trt.float16
        else:
            continue
        layer.precision = dtype
        for j in range(layer.num_outputs):
            layer.set_output_type(j, dtype)
        constrained += 1
    return constrained

