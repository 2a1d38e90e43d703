"""onnxruntime backend for ``.onnx`` models (CPU; CUDA/TensorRT providers when present)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np

from edgecl.errors import ModelLoadError
from edgecl.models.base import (DETECTION_ONLY, MAX_IMAGE_SIDE, Backend, ModelMeta,
                                check_export_metadata, misnamed_model_hint, one_line, sha256_file)

log = logging.getLogger(__name__)

# Preferred order: the first available wins for each node.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def providers_problem(requested: str, available: list[str] | None = None) -> str | None:
    """Why ``model.providers`` names a provider this onnxruntime lacks, in words (``None``
    when every one is there, or for ``auto``). The runtime asks at start whatever serves then:
    a learnt version serves ONNX, so a value only torch reads (``cpu``, a typo) failed at the
    first swap, and at every start after it.

    Args:
        requested: ``auto`` or a comma list such as ``CUDAExecutionProvider,CPUExecutionProvider``.
        available: what this onnxruntime build offers (default: asked of onnxruntime).
    """
    if requested.strip() in ("", "auto"):
        return None
    if available is None:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    wanted = [p.strip() for p in requested.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if not wanted:
        return f"names no provider; use auto or some of {', '.join(available)}"
    if not missing:
        return None
    hint = next((f" (did you mean {a}?)" for a in available
                 if a.lower().startswith(missing[0].lower())), "")
    return (f"onnxruntime has no {', '.join(missing)}{hint}; this build has "
            f"{', '.join(available)} (or use auto)")


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """Pick onnxruntime execution providers.

    Args:
        requested: ``auto`` or a comma list such as ``CUDAExecutionProvider,CPUExecutionProvider``.
        available: what this onnxruntime build offers.

    Returns:
        Providers to pass to the session, always ending with the CPU provider.

    Raises:
        ModelLoadError: a requested provider is not available.
    """
    problem = providers_problem(requested, available)
    if problem is not None:
        raise ModelLoadError(f"model.providers={requested}: {problem}")
    if requested.strip() in ("", "auto"):
        wanted = [p for p in PROVIDER_ORDER if p in available]
    else:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


# onnxruntime element type -> numpy dtype name of the inputs a YOLO export can have.
INPUT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def read_onnx_metadata(custom: dict[str, str], input_shape: list, path: Path,
                       fallback_imgsz: int | None = None) -> tuple[dict, tuple[int, int]]:
    """Read class names and the input ``(height, width)`` from the file (ultralytics metadata).

    Static input dims win; a dynamic one is taken from the ``imgsz`` metadata (ultralytics
    writes ``[h, w]``), else from ``fallback_imgsz``.

    Args:
        custom: the model's ``custom_metadata_map``.
        input_shape: shape of the first input (``[N, 3, H, W]``; entries may be symbolic).
        path: model path, for error messages.
        fallback_imgsz: square side to use for a dynamic input without metadata.

    Returns:
        ``(names, (height, width))``.

    Raises:
        ModelLoadError: unreadable metadata, not an NCHW 3-channel image input, or a dynamic
            size with nothing to fill it.
    """
    names = {}
    if "names" in custom:
        try:
            names = {int(k): str(v) for k, v in ast.literal_eval(custom["names"]).items()}
        except (ValueError, SyntaxError, AttributeError, TypeError, OverflowError, MemoryError,
                RecursionError) as exc:
            raise ModelLoadError(f"{path}: unreadable 'names' metadata ({exc})") from None
    if len(input_shape) != 4 or input_shape[1] not in (3, "3"):
        raise ModelLoadError(f"{path}: input shape {input_shape} is not an image batch (N, 3, H, W)")
    meta_hw: list = []
    if "imgsz" in custom:
        try:
            value = ast.literal_eval(custom["imgsz"])
            meta_hw = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value, value])]
        except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError):
            raise ModelLoadError(f"{path}: unreadable 'imgsz' metadata {custom['imgsz']!r}") from None
        if len(meta_hw) == 1:
            meta_hw = meta_hw * 2
        if len(meta_hw) != 2 or not all(0 < v <= MAX_IMAGE_SIDE for v in meta_hw):
            raise ModelLoadError(f"{path}: unreadable 'imgsz' metadata {custom['imgsz'][:40]!r}")
    hw = []
    for axis, dim in ((0, input_shape[2]), (1, input_shape[3])):
        if isinstance(dim, int) and dim > 0:
            hw.append(dim)
        elif len(meta_hw) == 2:
            hw.append(meta_hw[axis])
        elif fallback_imgsz:
            hw.append(int(fallback_imgsz))
        else:
            raise ModelLoadError(f"{path}: input size is dynamic and no 'imgsz' metadata is present")
    if min(hw) <= 0 or hw[0] % 32 or hw[1] % 32:
        raise ModelLoadError(f"{path}: input size {hw[0]}x{hw[1]} is not a positive multiple of the stride 32")
    return names, (int(hw[0]), int(hw[1]))


MAX_PROTOBUF_BYTES = 2**31 - 1
"""The largest ONNX file protobuf can write in one piece."""


def _external_data_problem(path: Path) -> str:
    """``": its weights file X (external data) is a named pipe (FIFO), not a regular file"``
    where a weights file the model names is no regular file, else ``""`` (also where the model
    cannot be read: the caller says why)."""
    from edgecl.input_files import regular_file_problem

    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises many unrelated types for a file it cannot parse
        log.debug("%s: external data not looked at (%s)", path, exc)
        return ""
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        special = regular_file_problem(path.parent / location) if location else None
        if special:
            return f": its weights file {location} (external data) is {special}"
    return ""


def embed_external_data(path: str | Path, out: str | Path) -> bool:
    """Write to ``out`` the ONNX model ``path`` with its external data files embedded.

    An ONNX model saved with ``save_as_external_data`` keeps its weights in files beside it
    (``model.onnx.data``) that a copy of the ``.onnx`` alone does not carry; the registry
    stages one self-contained file instead.

    Args:
        path: the ``.onnx`` file (already loaded once by onnxruntime: its data files exist).
        out: where to write the self-contained copy (only when there is external data).

    Returns:
        True when the model had external data and ``out`` was written; False otherwise.

    Raises:
        ModelLoadError: the model and its data are too large for one file (2 GiB).
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    tensors = [*proto.graph.initializer,
               *(a.t for n in proto.graph.node for a in n.attribute if a.HasField("t"))]
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        return False
    onnx.load_external_data_for_model(proto, str(Path(path).parent))
    if proto.ByteSize() > MAX_PROTOBUF_BYTES:
        raise ModelLoadError(f"{path}: its weights, held in external data files, make a model "
                             f"over 2 GiB, which one ONNX file cannot hold")
    Path(out).write_bytes(proto.SerializeToString())
    return True


def refuse_extra_outputs(outputs: list[str], path) -> None:
    """Refuse a model with more than one output: an ultralytics detector's export has one; a
    segmentation model's adds its mask prototypes, and its first output's mask coefficients
    would be read as classes (a file whose metadata would have said so was stripped of it).

    Args:
        outputs: the outputs, each as ``"name [shape]"`` (or its name alone).
        path: the model file, for the message.

    Raises:
        ModelLoadError: more than one output, naming them.
    """
    if len(outputs) > 1:
        raise ModelLoadError(f"{path}: {len(outputs)} outputs ({', '.join(outputs[:3])}): a "
                             f"segmentation model's mask prototypes or another kind of model; "
                             f"edgecl serves object detectors, whose export has one output")


def built_in_score_threshold(thresholds: list[float]) -> float | None:
    """The score threshold of NMS built into an exported model, from its graph's comparisons.

    ultralytics' ``nms=True`` export keeps the boxes whose class score is above the ``conf`` it
    was exported with (``score > conf``: one ``Greater`` node with a scalar constant, 0.25 by
    default); a lower ``model.conf``, and a labels' uncertain band below it, find nothing more.

    Args:
        thresholds: the scalar constants that the graph's ``Greater`` nodes compare with.

    Returns:
        The threshold (to 6 significant digits: the float32 constant as it was written) when
        exactly one such comparison has one in (0, 1), else None.
    """
    found = [t for t in thresholds if 0.0 < t < 1.0]
    # the graph holds float32: 0.4 reads 0.40000000596, and model.conf=0.4 was "below" it
    return float(f"{found[0]:.6g}") if len(found) == 1 else None


def onnx_greater_constants(proto) -> list[float]:
    """The scalar float constants (initializers or ``Constant`` nodes) that the ``Greater``
    nodes of an ONNX graph compare with (see :func:`built_in_score_threshold`)."""
    from onnx import numpy_helper

    consts = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            consts.update({node.output[0]: a.t for a in node.attribute if a.name == "value"})
    values = []
    for node in proto.graph.node:
        tensor = consts.get(node.input[1]) if node.op_type == "Greater" and len(node.input) == 2 else None
        if tensor is not None:
            value = numpy_helper.to_array(tensor)
            if value.size == 1 and value.dtype.kind == "f":
                values.append(float(value.reshape(-1)[0]))
    return values


def stripped_head_kind(path: str | Path) -> str | None:
    """What an ultralytics ONNX export without its metadata is, when its head is no detector's.

    A pose or OBB head adds a branch (``cv4``: keypoints, angles) beside the boxes (``cv2``),
    classes (``cv3``) and ``dfl`` of a Detect head, and exports to one output like a detector's:
    its extra channels were read as 131 (pose) or 81 (OBB) classes. Node names as
    ``torch.onnx.export`` writes them (``/model.23/cv4.0/...``).

    Args:
        path: the ``.onnx`` file.

    Returns:
        ``"a pose or OBB model (...)"``, or ``None`` (a detector, or a graph without such names).
    """
    import re

    import onnx

    layers: dict[str, set[str]] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        match = re.match(r"/model\.(\d+)/([A-Za-z0-9_]+)", node.name)
        if match:
            layers.setdefault(match.group(1), set()).add(match.group(2))
    if any({"dfl", "cv4"} <= parts for parts in layers.values()):
        return ("a pose or OBB model (its head has a keypoint or angle branch beside the boxes "
                "and classes)")
    return None


def check_detect_output(out_shape: list, names: dict, path: Path) -> dict:
    """Check that the first output is a YOLO detection output.

    Either a raw head ``(N, 4 + nc, anchors)`` or end-to-end rows ``(N, max_det, 6)`` (NMS
    inside the model; see :func:`edgecl.models.base.postprocess`).

    Args:
        out_shape: shape of the first output (entries may be symbolic).
        names: class names from the metadata (may be empty).
        path: model path, for error messages.

    Returns:
        The class names (``{i: "i"}`` filled in when the file has none).

    Raises:
        ModelLoadError: another kind of output (classifier, segmenter, ...), or an end-to-end
            output without class names, with the reason.
    """
    if len(out_shape) != 3:
        raise ModelLoadError(f"{path}: output shape {out_shape} is not a YOLO detection head "
                             "(N, 4 + classes, anchors)")
    channels, anchors = out_shape[1], out_shape[2]
    if anchors == 6:  # a raw head has >= 21 anchors; (N, max_det, 6) is boxes+score+class after NMS
        if not names:
            raise ModelLoadError(f"{path}: end-to-end output {out_shape} without 'names' metadata; "
                                 "cannot tell the classes (export it with ultralytics, or with nms=False)")
        return names
    if isinstance(channels, int):
        if channels <= 4:
            raise ModelLoadError(f"{path}: output shape {out_shape} is not a YOLO detection head "
                                 "(N, 4 + classes, anchors)")
        if names and channels != 4 + len(names):
            raise ModelLoadError(f"{path}: output has {channels - 4} class channels but the metadata "
                                 f"names {len(names)} classes (a segmentation or pose model?)")
        if not names:
            names = {i: str(i) for i in range(channels - 4)}
    if not names:
        raise ModelLoadError(f"{path}: neither class names nor a static output shape; cannot tell the classes")
    return names


class OnnxBackend(Backend):
    """Runs an exported ONNX detector with onnxruntime.

    The input's shape and element type are read from the file: a rectangular input gets a
    rectangular letterbox, a fixed batch is filled (and padded) chunk by chunk, a float16
    input is fed float16. Anything else is refused at load with the reason.
    """

    name = "onnxruntime"
    suffixes = (".onnx",)

    def __init__(self, opts=None):
        super().__init__(opts)
        self._session = None
        self._input_name = ""

    def _load(self, path: Path) -> ModelMeta:
        from edgecl.ultra import ensure_offline

        ensure_offline()  # before onnxruntime's import: its telemetry off
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, self.opts.threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = choose_providers(self.opts.providers, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            hint = misnamed_model_hint(path) or _external_data_problem(path)
            if not hint and "external data" in str(exc).lower():  # its file name was cut off
                hint = (": a weights file it names (external data) is missing, or lies outside "
                        "its folder (a symlink or '..' that leads out); keep it beside the model")
            raise ModelLoadError(f"cannot load ONNX model {path}{hint or ': ' + one_line(exc)}"
                                 ) from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(f"{path}: {len(inputs)} inputs and {len(outputs)} outputs; expected "
                                 "one image input and a detection output")
        inp = inputs[0]
        dtype = INPUT_DTYPES.get(inp.type)
        if dtype is None:
            raise ModelLoadError(f"{path}: input element type {inp.type} is not supported "
                                 f"(expected one of {', '.join(INPUT_DTYPES)})")
        custom = session.get_modelmeta().custom_metadata_map
        check_export_metadata(custom, path)
        refuse_extra_outputs([f"{o.name} {list(o.shape)}" for o in outputs], path)
        names, hw = read_onnx_metadata(custom, list(inp.shape), path, self.opts.imgsz)
        if not custom.get("task"):  # metadata stripped: the graph's head says what it is
            other = stripped_head_kind(path)
            if other:
                raise ModelLoadError(f"{path}: {other}, its export's metadata stripped; "
                                     f"{DETECTION_ONLY}")
        names = check_detect_output(list(outputs[0].shape), names, path)
        batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self._session = session
        self._input_name = inp.name
        extra = {"providers": session.get_providers()}
        if list(outputs[0].shape)[2:] == [6]:  # NMS inside: it may drop low scores itself
            import onnx

            floor = built_in_score_threshold(onnx_greater_constants(onnx.load(str(path))))
            if floor is not None:
                extra["nms_score_threshold"] = floor
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=max(hw),
                         sha256=sha256_file(path), input_hw=hw, batch=batch, input_dtype=dtype,
                         extra=extra)

    def _weight_faults(self) -> tuple[str | None, str | None]:
        import onnx
        from onnx import numpy_helper

        from edgecl.models.checkpoint import zeroed_kernel

        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
        proto = onnx.load(str(self.meta.path))  # ~20 ms for YOLO11n; loaded by onnxruntime already
        nonfinite = zeroed = None
        for tensor in proto.graph.initializer:  # one weight in memory at a time
            if tensor.data_type not in floats:
                continue
            array = numpy_helper.to_array(tensor)
            if nonfinite is None and not np.isfinite(array).all():
                nonfinite = tensor.name
            zeroed = zeroed or zeroed_kernel([(tensor.name, array)])
        return nonfinite, zeroed

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self._input_name: batch})[0]
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Drop the onnxruntime session."""
        self._session = None
        super().close()
