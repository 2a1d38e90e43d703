"""Post-training INT8 quantisation of exported detectors, with the box decoding kept in float.

Two quantisers, both static (activation ranges calibrated on real images):

* :func:`quantize_openvino`: NNCF's ``nncf.quantize`` on an OpenVINO IR (mixed preset:
  symmetric weights, asymmetric activations), fast bias correction on.
* :func:`quantize_onnx`: onnxruntime's ``quantize_static`` to a QDQ ONNX model (uint8
  activations, int8 per-channel weights), for comparison and for devices without OpenVINO.

Only the convolutional part of the network is quantised. The Detect head's decode part, i.e.
the DFL (softmax over box bins and its fixed convolution), the anchor and stride arithmetic, the
final concatenations and the class sigmoid, stays in float through an ignored scope: quantising it
would round box coordinates (pixels up to the input size) to 256 levels and clip scores.
The branch convolutions of the head (``cv2`` / ``cv3``) are quantised like the backbone.
The ops to keep are found by name in the exported graph (:func:`openvino_decode_ops`,
:func:`onnx_decode_nodes`); ultralytics' exporter picks the same ops for its own OpenVINO INT8.

Calibration images are letterboxed as the backends letterbox them (same function), lazily, so
that a few hundred images never sit in memory at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecl.atomic import fsync_dir, new_file_mode, temp_file_for
from edgecl.models.export_openvino import ExportError, require_openvino, save_ir, set_ir_metadata

LOG = logging.getLogger(__name__)


def openvino_decode_ops(ops: Sequence[tuple[str, str]]) -> list[str]:
    """Names of the OpenVINO ops that make up a YOLO Detect head's decode part.

    The head is the scope of the last ``Sigmoid`` (``__module.model.23`` for YOLO11n): its own
    ops (``__module.model.23/aten::...``: anchor/stride math, concatenations, the sigmoid) and
    those of its DFL (``__module.model.23.dfl...``); its ``cv2``/``cv3`` convolutions are not.

    Args:
        ops: ``(type name, friendly name)`` of every op, in graph order.

    Returns:
        The friendly names to keep in float.

    Raises:
        ExportError: no ``Sigmoid`` op: not a YOLO detection head.
    """
    sigmoids = [name for kind, name in ops if kind == "Sigmoid"]
    if not sigmoids:
        raise ExportError("no Sigmoid op in the model: not a YOLO Detect head, cannot keep its "
                          "decoding in float")
    head = sigmoids[-1].split("/", 1)[0]
    keep = []
    for kind, name in ops:
        scope = name.split("/", 1)[0]
        if scope == head or scope.startswith(f"{head}.dfl"):
            keep.append(name)
    return keep


def onnx_decode_nodes(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """Names of the ONNX nodes that make up a YOLO Detect head's decode part.

    ultralytics' ONNX export names nodes by module path: ``/model.23/Sigmoid``,
    ``/model.23/dfl/conv/Conv``, ``/model.23/cv2.0/cv2.0.0/conv/Conv``. The head is the module of
    the last ``Sigmoid``; its direct nodes and its ``dfl`` are kept in float, its ``cv2``/``cv3``
    branches are not. (The other ``Sigmoid`` nodes belong to SiLU activations and are quantised.)

    Args:
        nodes: ``(op type, node name)`` of every node, in graph order.

    Returns:
        The node names to keep in float.

    Raises:
        ExportError: no ``Sigmoid`` node with a module path: not a YOLO detection head.
    """
    sigmoids = [name for kind, name in nodes if kind == "Sigmoid" and name.count("/") >= 2]
    if not sigmoids:
        raise ExportError("no Sigmoid node in the ONNX model: not a YOLO Detect head, cannot keep "
                          "its decoding in float")
    head = sigmoids[-1].split("/")[1]
    keep = []
    for kind, name in nodes:
        parts = name.split("/")
        if len(parts) >= 3 and parts[1] == head and (len(parts) == 3 or parts[2] == "dfl"):
            keep.append(name)
    return keep


class _Letterboxed:
    """Calibration images as letterboxed (1, 3, h, w) float32 batches, read lazily.

    An image that cannot be read is replaced by a grey frame (counted in ``unreadable``).
    """

    def __init__(self, paths: Sequence[str | Path], hw: tuple[int, int]):
        self.paths = [str(p) for p in paths]
        self.hw = hw
        self.unreadable = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        return iter(self.paths)

    def transform(self, path: str) -> np.ndarray:
        """Read and letterbox one image: (1, 3, h, w) float32 in 0..1."""
        from edgecl.data.images import ImageError, read_image
        from edgecl.models.base import letterbox_batch

        try:
            image = read_image(path)
        except ImageError as exc:
            self.unreadable += 1
            LOG.warning("calibration image skipped (grey frame instead): %s", exc)
            image = np.full((*self.hw, 3), 114, np.uint8)
        return letterbox_batch([image], self.hw)


def _check_images(paths: Sequence) -> None:
    if not paths:
        raise ExportError("INT8 calibration needs at least one image; the replay memory gave none")


def quantize_openvino(fp32_xml: str | os.PathLike, dest_dir: str | os.PathLike,
                      calibration_images: Sequence[str | Path], *, fast_bias_correction: bool = True,
                      stats: dict | None = None) -> Path:
    """Quantise an FP32 OpenVINO IR to INT8 with NNCF, the decode part kept in float.

    Args:
        fp32_xml: the FP32 IR's ``model.xml`` (its ``.bin`` beside it; not modified).
        dest_dir: folder receiving the INT8 ``model.xml`` + ``model.bin`` (see :func:`save_ir`).
        calibration_images: image files (any size; letterboxed to the IR's input).
        fast_bias_correction: NNCF's fast bias correction (one extra pass over the images).
        stats: optional dict that receives ``quantize_s``, ``calibration_images`` and
            ``kept_float_ops``.

    Returns:
        Path of the INT8 ``model.xml``.

    Raises:
        ExportError: ``openvino`` or ``nncf`` missing, no calibration image, an unreadable IR, or
            a model without a YOLO Detect head; NNCF's own failure in one line.
    """
    start = time.monotonic()
    _check_images(calibration_images)
    require_openvino()
    nncf = require_nncf()
    from edgecl.models.base import one_line
    from edgecl.models.openvino_backend import shared_core

    try:
        model = shared_core().read_model(str(fp32_xml))
    except Exception as exc:  # OpenVINO raises RuntimeError and others for bad IR files
        raise ExportError(f"cannot read OpenVINO model {fp32_xml}: {one_line(exc)}") from None
    shape = model.inputs[0].get_partial_shape()
    if not shape.is_static:
        raise ExportError(f"{fp32_xml}: INT8 calibration needs a static input shape, got {shape}")
    hw = (shape[2].get_length(), shape[3].get_length())
    keep = openvino_decode_ops([(op.get_type_name(), op.get_friendly_name())
                                for op in model.get_ordered_ops()])
    data = _Letterboxed(calibration_images, hw)
    try:
        with contextlib.redirect_stdout(sys.stderr), _progress_bars_on_a_terminal_only():
            quantized = nncf.quantize(model, nncf.Dataset(data, data.transform),
                                      preset=nncf.QuantizationPreset.MIXED, subset_size=len(data),
                                      fast_bias_correction=fast_bias_correction,
                                      ignored_scope=nncf.IgnoredScope(names=keep))
    except Exception as exc:  # NNCF raises many unrelated types
        raise ExportError(f"NNCF INT8 quantisation failed: {one_line(exc)}") from None
    set_ir_metadata(quantized, {"precision": "int8", "int8_calibration_images": len(data)})
    xml = save_ir(quantized, dest_dir)
    _report("OpenVINO IR", xml, start, data, keep, stats)
    return xml


@contextlib.contextmanager
def _progress_bars_on_a_terminal_only():
    """NNCF draws its progress bars with rich's shared console (on stdout, which the caller
    sends to stderr); when stderr is not a terminal (a service's log, a learner process) each
    bar became a log line of box-drawing characters. There they are silenced for the block:
    the INT8 log line that follows gives the time taken."""
    import rich

    console = rich.get_console()
    was_quiet = console.quiet
    console.quiet = was_quiet or not _stderr_is_a_terminal()
    try:
        yield
    finally:
        console.quiet = was_quiet


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def _report(kind: str, path: Path, start: float, data, keep: list, stats: dict | None) -> None:
    """Log a finished quantisation and fill ``stats`` (seconds, images, float-kept ops)."""
    elapsed = time.monotonic() - start
    if stats is not None:
        stats.update({"quantize_s": elapsed, "calibration_images": len(data),
                      "unreadable_images": data.unreadable, "kept_float_ops": len(keep)})
    LOG.info("INT8 %s %s in %.2f s (%d calibration images)", kind, path, elapsed, len(data))


def require_nncf():
    """Import ``nncf`` or raise a one-line :class:`ExportError`.

    Returns:
        The ``nncf`` module.

    Raises:
        ExportError: ``nncf`` is not installed (or fails to import).
    """
    from edgecl.models.base import one_line
    from edgecl.ultra import telemetry_declined

    # importing nncf imports torch's C++ extension helper, which logs "No CUDA runtime is
    # found, using CUDA_HOME=..." on every machine without CUDA (every CPU device)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        with telemetry_declined():
            import nncf
    except ImportError as exc:
        raise ExportError(f"NNCF is not available ({one_line(exc)}); pip install nncf") from None
    nncf.set_log_level(logging.WARNING)  # its INFO lines list every op it leaves alone
    return nncf


def nncf_available() -> bool:
    """True when ``nncf`` (and ``openvino``) import."""
    try:
        require_openvino()
        require_nncf()
    except ExportError:
        return False
    return True


def onnx_quantization_available() -> bool:
    """True when ``onnxruntime.quantization`` imports."""
    from edgecl.ultra import ensure_offline

    ensure_offline()  # before onnxruntime's import: its telemetry off
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_onnx(fp32_onnx: str | os.PathLike, dest: str | os.PathLike,
                  calibration_images: Sequence[str | Path], *, stats: dict | None = None) -> Path:
    """Quantise an FP32 ONNX detector to a static QDQ INT8 model with onnxruntime.

    uint8 activations (MinMax calibration), int8 per-channel weights; the decode nodes stay in
    float and so do their inputs (no Q/DQ on a convolution's output unless a quantised node reads
    it; measured: same speed). The file is written beside ``dest`` and renamed onto it after an fsync; the ONNX
    metadata (class names, input size) is kept.

    Args:
        fp32_onnx: the FP32 ``.onnx`` (not modified).
        dest: destination ``.onnx``.
        calibration_images: image files (any size; letterboxed to the model's input).
        stats: optional dict that receives ``quantize_s`` and ``calibration_images``.

    Returns:
        The destination path.

    Raises:
        ExportError: no calibration image, an unreadable model or onnxruntime's failure (one line).
    """
    start = time.monotonic()
    _check_images(calibration_images)
    import onnx

    from edgecl.ultra import ensure_offline

    ensure_offline()  # before onnxruntime's import: its telemetry off
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgecl.models.base import one_line

    try:
        proto = onnx.load(str(fp32_onnx))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for bad files
        raise ExportError(f"cannot read ONNX model {fp32_onnx}: {one_line(exc)}") from None
    inp = proto.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims[2:]) <= 0:
        raise ExportError(f"{fp32_onnx}: INT8 calibration needs a static (1, 3, h, w) input, got {dims}")
    keep = onnx_decode_nodes([(n.op_type, n.name) for n in proto.graph.node])
    data = _Letterboxed(calibration_images, (dims[2], dims[3]))

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches to onnxruntime's calibrator."""

        def __init__(self):
            self._paths = iter(data)

        def get_next(self):
            """The next ``{input name: (1, 3, h, w) float32}`` feed, or None at the end."""
            path = next(self._paths, None)
            return None if path is None else {inp.name: data.transform(path)}

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(dest, ".tmp.onnx")
    os.fchmod(fd, new_file_mode())
    os.close(fd)
    try:
        with _quiet_root_advice():
            quantize_static(str(fp32_onnx), tmp, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, nodes_to_exclude=keep,
                            # a Conv's output gets Q/DQ only where a quantised node reads it, so
                            # the head's last convolutions hand the decode float logits
                            extra_options={"OpTypesToExcludeOutputQuantization": ["Conv"]})
        _keep_metadata(proto, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime's quantiser raises many unrelated types
        raise ExportError(f"onnxruntime INT8 quantisation failed: {one_line(exc)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _report("ONNX", dest, start, data, keep, stats)
    return dest


class _DropAdvice(logging.Filter):
    """Drops onnxruntime's "consider pre-processing" advice (measured: no speed difference)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the advice line, True for every other record."""
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_root_advice():
    """While quantising, filter onnxruntime's advice lines off the root logger's handlers."""
    root = logging.getLogger()
    drop = _DropAdvice()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _keep_metadata(source, path: str) -> None:
    """Copy the FP32 model's metadata (names, imgsz, ...) into the quantised file, adding
    ``precision: int8``."""
    import onnx

    proto = onnx.load(path)
    have = {p.key for p in proto.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key="precision", value="int8")
    onnx.save(proto, path)
