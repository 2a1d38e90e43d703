"""The ``.engine`` file format, the engine cache key and the stale-engine check.

An engine file is a small JSON header followed by TensorRT's serialized engine::

    [4 bytes: header length, little-endian signed int32][header: UTF-8 JSON][serialized engine]

This is the layout ultralytics writes, so its ``.engine`` exports load here and ours load
there. Our header adds an ``edgecl`` section (cache key, TensorRT version, device, precision,
sha256 of the engine bytes) that lets a loader refuse stale or damaged engines before handing
them to TensorRT. Nothing in this module needs TensorRT; the runtime identity helpers import it
lazily.
"""

from __future__ import annotations

import hashlib
import json
import types
from functools import lru_cache
from pathlib import Path

from edgecl.errors import EdgeclError, ModelLoadError
from edgecl.models.base import sha256_file

# Bump when the header layout or the meaning of a cache-key field changes: every cached
# engine built under an older format then gets a new key and is rebuilt.
ENGINE_FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
HEADER_LENGTH_BYTES = 4
BUILD_HINT = "TensorRT engines are built on the Jetson that runs them; use the .onnx model on this machine"
LOAD_HINT = "use the .onnx model on this machine"


class EngineBuildError(EdgeclError):
    """A TensorRT engine cannot be built (bad input, missing TensorRT, failed build)."""


def engine_cache_key(onnx_path: str | Path, *, precision: str, imgsz: int, batch: int,
                     device_name: str | None = None, trt_version: str | None = None) -> str:
    """Return the cache key of the engine built from an ONNX file under given conditions.

    The key covers everything that invalidates an engine: the ONNX file's content, the
    TensorRT version, the GPU, the precision, the input size, the batch size and this
    module's file-format version.

    Args:
        onnx_path: the ONNX model.
        precision: ``fp32``, ``fp16`` or ``int8`` (as requested).
        imgsz: square input side in pixels.
        batch: static batch size of the engine.
        device_name: GPU identity; ``None`` asks the running machine (needs CUDA).
        trt_version: TensorRT version string; ``None`` asks the installed TensorRT.

    Returns:
        Hex sha256 digest.

    Raises:
        EngineBuildError: bad argument, missing ONNX file, or a ``None`` identity that this
            machine cannot provide (no TensorRT or no CUDA device).
    """
    check_build_args(precision, imgsz, batch)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX model not found: {onnx_path}")
    if trt_version is None:
        trt_version = import_tensorrt(EngineBuildError, BUILD_HINT).__version__
    if device_name is None:
        device_name = cuda_device_identity(EngineBuildError)
    fields = {
        "format": ENGINE_FORMAT_VERSION,
        "onnx_sha256": sha256_file(onnx_path),
        "trt_version": str(trt_version),
        "device": str(device_name),
        "precision": precision,
        "imgsz": int(imgsz),
        "batch": int(batch),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def check_build_args(precision: str, imgsz: int, batch: int) -> None:
    """Check engine build arguments.

    Args:
        precision: ``fp32``, ``fp16`` or ``int8``.
        imgsz: square input side (a positive multiple of the stride, 32).
        batch: static batch size (>= 1).

    Raises:
        EngineBuildError: an argument is out of range.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown engine precision {precision!r}: expected one of "
                               f"{', '.join(PRECISIONS)}")
    if int(imgsz) <= 0 or int(imgsz) % 32:
        raise EngineBuildError(f"engine imgsz must be a positive multiple of 32, got {imgsz}")
    if int(batch) < 1:
        raise EngineBuildError(f"engine batch must be >= 1, got {batch}")


def make_engine_header(*, names: dict[int, str], imgsz: int, batch: int, cache_key: str,
                       onnx_sha256: str, precision: str, requested_precision: str,
                       trt_version: str, device: str, engine_bytes: bytes) -> dict:
    """Build the JSON header stored in front of a serialized engine.

    The top-level keys follow ultralytics' engine metadata (``task``, ``stride``, ``batch``,
    ``imgsz`` as ``[h, w]``, ``names``); ours live under ``edgecl``.

    Args:
        names: class index -> name.
        imgsz: square input side.
        batch: static batch size.
        cache_key: :func:`engine_cache_key` of this build.
        onnx_sha256: digest of the source ONNX file.
        precision: precision actually built (may be ``fp32`` after an FP16 fallback).
        requested_precision: precision asked for (part of the cache key).
        trt_version: TensorRT version that built it.
        device: GPU identity that built it.
        engine_bytes: the serialized engine (its sha256 is recorded).

    Returns:
        The header dictionary.
    """
    return {
        "description": "edgecl TensorRT engine",
        "task": "detect",
        "stride": 32,
        "batch": int(batch),
        "imgsz": [int(imgsz), int(imgsz)],
        "names": {str(int(k)): str(v) for k, v in names.items()},
        "edgecl": {
            "format": ENGINE_FORMAT_VERSION,
            "cache_key": cache_key,
            "onnx_sha256": onnx_sha256,
            "precision": precision,
            "requested_precision": requested_precision,
            "trt_version": str(trt_version),
            "device": str(device),
            "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        },
    }


def encode_engine_file(header: dict, engine_bytes: bytes) -> bytes:
    """Serialize a header and an engine into the ``.engine`` file layout.

    Args:
        header: JSON-serialisable metadata.
        engine_bytes: TensorRT's serialized engine.

    Returns:
        The complete file contents.
    """
    blob = json.dumps(header, sort_keys=True).encode("utf-8")
    return len(blob).to_bytes(HEADER_LENGTH_BYTES, byteorder="little", signed=True) + blob + bytes(engine_bytes)


def decode_engine_file(data: bytes, source: str = "<bytes>") -> tuple[dict, bytes]:
    """Split ``.engine`` file contents into header and serialized engine.

    A file without a readable JSON header is treated as a bare TensorRT plan (``trtexec``
    output) and returned with an empty header; TensorRT itself then validates it.

    Args:
        data: file contents.
        source: file name for error messages.

    Returns:
        ``(header, engine_bytes)``.

    Raises:
        ModelLoadError: the file is empty, or the engine bytes do not match the digest the
            header records (a truncated or damaged copy).
    """
    if len(data) <= HEADER_LENGTH_BYTES:
        raise ModelLoadError(f"corrupt TensorRT engine {source}: only {len(data)} bytes")
    header, engine = _split_header(data)
    if not engine:
        raise ModelLoadError(f"corrupt TensorRT engine {source}: header but no engine bytes")
    expected = header.get("edgecl", {}).get("engine_sha256")
    if expected and hashlib.sha256(engine).hexdigest() != expected:
        raise ModelLoadError(f"corrupt TensorRT engine {source}: engine bytes do not match the "
                             "digest in its header (truncated or damaged copy); rebuild it")
    return header, engine


def _split_header(data: bytes) -> tuple[dict, bytes]:
    """Return ``(header, engine)``; ``({}, data)`` when no JSON header is present."""
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], byteorder="little", signed=True)
    end = HEADER_LENGTH_BYTES + length
    if 0 < length <= len(data) - HEADER_LENGTH_BYTES:
        try:
            header = json.loads(data[HEADER_LENGTH_BYTES:end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            header = None
        if isinstance(header, dict):
            return header, data[end:]
    return {}, data


def read_engine_file(path: str | Path) -> tuple[dict, bytes]:
    """Read an ``.engine`` file (see :func:`decode_engine_file`).

    Args:
        path: the engine file.

    Returns:
        ``(header, engine_bytes)``.

    Raises:
        ModelLoadError: missing, unreadable or corrupt file.
    """
    from edgecl.input_files import MAX_MODEL_BYTES, read_input_bytes

    try:
        data = read_input_bytes(path, MAX_MODEL_BYTES, "a model file")
    except OSError as exc:
        raise ModelLoadError(f"cannot read TensorRT engine {path}: {exc.strerror or exc}") from None
    return decode_engine_file(data, str(path))


def read_engine_header(path: str | Path) -> dict:
    """Return the header of an ``.engine`` file (``{}`` for a bare TensorRT plan).

    Args:
        path: the engine file.

    Returns:
        The header dictionary.

    Raises:
        ModelLoadError: missing, unreadable or corrupt file.
    """
    return read_engine_file(path)[0]


def check_engine_compatible(header: dict, *, trt_version: str, device: str, source: str = "") -> None:
    """Refuse an engine built by another TensorRT version or on another GPU.

    Engines are not portable across TensorRT versions or devices; a stale one must be
    rebuilt from its ONNX model, never reused. Headers without our ``edgecl`` section
    (ultralytics exports, bare plans) carry nothing to compare: TensorRT's own check at
    deserialization then decides.

    Args:
        header: the engine's header.
        trt_version: TensorRT version running here.
        device: GPU identity of this machine (:func:`cuda_device_identity`).
        source: file name for error messages.

    Raises:
        ModelLoadError: the engine is stale.
    """
    info = header.get("edgecl") or {}
    built_trt = info.get("trt_version")
    built_device = info.get("device")
    if built_trt and built_trt != str(trt_version):
        raise ModelLoadError(f"stale TensorRT engine {source}: built with TensorRT {built_trt}, "
                             f"this machine runs {trt_version}; rebuild it from the .onnx model")
    if built_device and built_device != str(device):
        raise ModelLoadError(f"stale TensorRT engine {source}: built on {built_device!r}, this "
                             f"machine has {device!r}; rebuild it from the .onnx model")


def header_names(header: dict, source: str = "the engine") -> dict[int, str]:
    """Return the class names stored in a header (``{}`` when absent).

    Args:
        header: the engine's header.
        source: the engine file, for the message.

    Returns:
        Class index -> name.

    Raises:
        ModelLoadError: the names are neither a list nor an id -> name map (a header written
            by hand: ``{"a": "person"}`` was an internal error).
    """
    names = header.get("names") or {}
    try:
        pairs = list(enumerate(names)) if isinstance(names, list) else [
            (int(k), v) for k, v in names.items()]
    except (AttributeError, TypeError, ValueError):
        pairs = None
    if pairs is None or not all(isinstance(v, str) for _, v in pairs):  # null -> class 'None'
        raise ModelLoadError(f"{source}: its header's class names are neither a list nor a map "
                             f"of class id -> name (text)")
    return dict(pairs)


def header_imgsz(header: dict) -> int | None:
    """Return the square input side stored in a header, ``None`` when absent.

    Args:
        header: the engine's header (``imgsz`` as an int or as ``[h, w]``).

    Returns:
        The side in pixels, or ``None``.

    Raises:
        ModelLoadError: a non-square size.
    """
    imgsz = header.get("imgsz")
    if imgsz is None:
        return None
    if isinstance(imgsz, (list, tuple)):
        if len(set(imgsz)) != 1:
            raise ModelLoadError(f"engine input size {imgsz} is not square; edgecl needs square inputs")
        imgsz = imgsz[0]
    return int(imgsz)


def header_hw(header: dict) -> tuple[int, int] | None:
    """Return the input ``(height, width)`` stored in a header, ``None`` when absent.

    Args:
        header: the engine's header (``imgsz`` as an int or as ``[h, w]``, ultralytics' layout).

    Returns:
        ``(height, width)`` in pixels, or ``None``.
    """
    imgsz = header.get("imgsz")
    if imgsz is None:
        return None
    if isinstance(imgsz, (list, tuple)):
        return (int(imgsz[0]), int(imgsz[-1]))
    return (int(imgsz), int(imgsz))


def import_tensorrt(error_cls: type[EdgeclError], hint: str) -> types.ModuleType:
    """Import the ``tensorrt`` Python bindings or raise a one-line error.

    Args:
        error_cls: the :class:`EdgeclError` subclass to raise.
        hint: what to do instead, appended to the message.

    Returns:
        The ``tensorrt`` module.

    Raises:
        EdgeclError: (of ``error_cls``) TensorRT is not importable here.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise error_cls(f"TensorRT is not installed; {hint}") from exc
    return tensorrt


def tensorrt_available() -> bool:
    """Return whether the TensorRT Python bindings import on this machine."""
    try:
        import_tensorrt(EdgeclError, "")
    except EdgeclError:
        return False
    return True


def cuda_device_identity(error_cls: type[EdgeclError], index: int = 0) -> str:
    """Return the GPU identity engines are tied to: name and compute capability.

    Args:
        error_cls: the :class:`EdgeclError` subclass to raise.
        index: CUDA device index.

    Returns:
        For example ``"Orin sm_87"``.

    Raises:
        EdgeclError: (of ``error_cls``) no CUDA device is visible.
    """
    import torch

    if not torch.cuda.is_available():
        raise error_cls("no CUDA device is visible to torch; TensorRT engines need a CUDA GPU")
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"


@lru_cache(maxsize=1)
def tensorrt_logger():
    """Return the one TensorRT logger of this process (it must outlive every engine)."""
    trt = import_tensorrt(EdgeclError, LOAD_HINT)
    return trt.Logger(trt.Logger.WARNING)
