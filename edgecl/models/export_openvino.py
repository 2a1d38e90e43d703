"""OpenVINO IR export of a DetectionModel through ultralytics' Exporter, written crash-safely.

The IR is ultralytics' ``format="openvino"`` export (traced with torch, converted with
``openvino.convert_model``, FP32 weights) plus edgecl's metadata in the model's ``rt_info``
section ``edgecl`` (``names``, ``imgsz``, ``stride``, ``task``, ``precision``, ``edgecl_version``,
``edgecl_ider_folded``; what :class:`edgecl.models.openvino_backend.OpenVinoBackend` reads).

An IR is two files (``model.xml`` and ``model.bin``). :func:`save_ir` writes both into a temp
folder beside the destination, fsyncs them and renames the folder into place, so a reader (or a
crash) never sees an ``.xml`` without its ``.bin``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from edgecl.atomic import fsync_dir, new_file_mode, temp_dir_for
from edgecl.errors import EdgeclError, ModelLoadError
from edgecl.stop_signals import raise_if_stopping
from edgecl.ultra import ensure_offline, export_failure_unlogged

LOG = logging.getLogger(__name__)

IR_XML = "model.xml"
IR_BIN = "model.bin"


class ExportError(EdgeclError):
    """An OpenVINO export or an INT8 quantisation cannot be done (missing package, bad input)."""


def require_openvino():
    """Import ``openvino`` for an export, or raise a one-line :class:`ExportError`.

    Returns:
        The ``openvino`` module.

    Raises:
        ExportError: ``openvino`` is not installed.
    """
    from edgecl.models.openvino_backend import import_openvino

    try:
        return import_openvino()
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from None


def set_ir_metadata(ov_model, fields: dict) -> None:
    """Record metadata in an ``openvino.Model``'s ``rt_info`` section ``edgecl`` (as strings).

    Args:
        ov_model: the model (changed in place).
        fields: key -> value; dicts and lists are written as Python literals.
    """
    from edgecl.models.openvino_backend import RT_SECTION

    for key, value in fields.items():
        ov_model.set_rt_info(repr(value) if isinstance(value, (dict, list, tuple)) else str(value),
                             [RT_SECTION, key])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _save_model(ov, ov_model, tmp: Path, dest_dir: Path) -> None:
    """``openvino.save_model`` into ``tmp``, its failures (C++ exceptions surfacing as
    ``RuntimeError``, not ``OSError``) turned into one-line :class:`ExportError`."""
    from edgecl.models.openvino_backend import openvino_reason

    try:
        ov.save_model(ov_model, str(tmp / IR_XML), compress_to_fp16=False)
    except OSError:
        raise
    except Exception as exc:  # OpenVINO's writer raises RuntimeError for a full disk and others
        raise_if_stopping()  # a stop signal inside OpenVINO comes back as its RuntimeError
        raise ExportError(f"cannot write OpenVINO IR {dest_dir}: {openvino_reason(exc)} "
                          "(is the disk full?)") from None


def save_ir(ov_model, dest_dir: str | os.PathLike) -> Path:
    """Write an IR (``model.xml`` + ``model.bin``) into ``dest_dir``, both files or neither.

    The files are written and fsynced in a temp folder beside ``dest_dir``, which then replaces
    ``dest_dir`` by a rename (an older ``dest_dir`` is moved aside first and deleted after).

    Args:
        ov_model: the ``openvino.Model`` (FP32 weights kept as they are).
        dest_dir: destination folder (created; replaced when it exists).

    Returns:
        Path of ``dest_dir/model.xml``.

    Raises:
        ExportError: ``openvino`` is missing, or OpenVINO cannot write the files (a full disk:
            OpenVINO reports it as ``RuntimeError: basic_ios::clear``); nothing is left half-written.
        OSError: the folder cannot be created, synced or renamed (nothing is left half-written).
    """
    ov = require_openvino()
    dest_dir = Path(dest_dir)
    parent = dest_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(dest_dir, f".{dest_dir.name}.")
    old = parent / f".{dest_dir.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        os.chmod(tmp, new_file_mode(directory=True))
        _save_model(ov, ov_model, tmp, dest_dir)
        for name in (IR_XML, IR_BIN):
            _fsync_file(tmp / name)
        fsync_dir(tmp)
        if dest_dir.exists():
            os.replace(dest_dir, old)
        os.replace(tmp, dest_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return dest_dir / IR_XML


def export_openvino(model, dest_dir: str | os.PathLike, *, imgsz: int,
                    names: dict[int, str] | None = None, stats: dict | None = None) -> Path:
    """Export a DetectionModel to an FP32 OpenVINO IR (see :func:`save_ir`).

    Args:
        model: ultralytics DetectionModel, with or without IDER's adapter (not modified).
        dest_dir: destination folder; receives ``model.xml`` and ``model.bin``.
        imgsz: square input size in pixels (a multiple of the stride, 32).
        names: class names to record (default: ``model.names``).
        stats: optional dict that receives ``export_s`` (seconds).

    Returns:
        Path of the ``model.xml``.

    Raises:
        ExportError: ``openvino`` is missing, or ultralytics' Exporter fails (one line).
    """
    start = time.monotonic()
    require_openvino()
    ensure_offline()
    from ultralytics.engine.exporter import Exporter

    from edgecl import __version__
    from edgecl.models.base import one_line
    from edgecl.models.openvino_backend import shared_core
    from edgecl.models.export import _export_copy

    clone, folded = _export_copy(model, names)
    Path(dest_dir).parent.mkdir(parents=True, exist_ok=True)
    # beside the destination, not in the system temp folder (see export.export_onnx)
    with tempfile.TemporaryDirectory(prefix=".edgecl-export-ov-", dir=Path(dest_dir).parent) as tmp:
        clone.pt_path = str(Path(tmp) / "model.pt")  # the Exporter writes beside this path
        overrides = {"format": "openvino", "imgsz": imgsz, "dynamic": False, "batch": 1,
                     "device": "cpu", "half": False, "int8": False, "nms": False}
        try:
            with warnings.catch_warnings(), export_failure_unlogged():  # traced by the converter
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated",
                                        category=FutureWarning)
                produced = Path(Exporter(overrides=overrides)(model=clone))
            ov_model = shared_core().read_model(str(produced / IR_XML))
        except Exception as exc:  # the Exporter and OpenVINO raise many unrelated types
            raise_if_stopping()  # a stop signal inside OpenVINO comes back as its RuntimeError
            raise ExportError(f"OpenVINO export failed: {one_line(exc)}") from None
        set_ir_metadata(ov_model, {"names": {int(k): str(v) for k, v in clone.names.items()},
                                   "imgsz": [int(imgsz), int(imgsz)], "stride": 32,
                                   "task": "detect", "precision": "fp32",
                                   "edgecl_version": __version__, "edgecl_ider_folded": folded})
        xml = save_ir(ov_model, dest_dir)
    elapsed = time.monotonic() - start
    if stats is not None:
        stats.update({"export_s": elapsed, "ider_folded": folded})
    LOG.info("exported OpenVINO IR %s in %.2f s", xml, elapsed)
    return xml
