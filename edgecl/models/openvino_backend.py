"""OpenVINO backend for ``.xml`` models (an OpenVINO IR: ``model.xml`` + ``model.bin`` beside it).

The IR is what :func:`edgecl.models.export_openvino.export_openvino` writes (FP32, or INT8 after
:func:`edgecl.models.quantize.quantize_openvino`); ultralytics' own ``format="openvino"`` exports
load too (their ``metadata.yaml`` beside the ``.xml`` gives the class names). Letterbox and NMS
are the shared ones of :mod:`edgecl.models.base`, so the outputs match the ONNX backend's.

Inference runs on the CPU plugin with ``threads`` threads, one stream, the latency hint, and
``INFERENCE_PRECISION_HINT=f32``: OpenVINO would otherwise run FP32 layers in bfloat16 on CPUs
that have it (AVX512-BF16, AMX), which is faster but no longer the FP32 model the accuracy gate
measured. Threads are not pinned to cores (``ENABLE_CPU_PINNING=False``): the capture and sink
threads and the learner process share those cores, and on the 2-core reference machine, shared
with other work, pinned inference ran at 142 fps against 175-190 unpinned (YOLO11n, 160 px). ``openvino`` is imported only when a model is loaded.

Every OpenVINO model of the process is read and compiled by one ``Core`` (:func:`shared_core`),
kept until the process ends. OpenVINO's CPU plugin gives a thread that compiles a model its own
alternate signal stack (``sigaltstack``, memory it maps) and unmaps that memory when the plugin
is destroyed, from whichever thread drops its last reference. With a ``Core`` per model, a hot
swap dropped the old model's plugin in the loader or inference thread while the main thread's
signal stack still pointed into it, and the next SIGTERM (a systemd or docker stop) ended the
process with a segmentation fault (exit 139) instead of a clean stop.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgecl.errors import ModelLoadError, yaml_problem
from edgecl.models.base import Backend, ModelMeta, check_export_metadata, one_line, sha256_file
from edgecl.models.onnx_backend import (built_in_score_threshold, check_detect_output,
                                        read_onnx_metadata, refuse_extra_outputs)

# rt_info section of an IR where edgecl records its metadata (same keys as the ONNX metadata).
RT_SECTION = "edgecl"
RT_KEYS = ("names", "imgsz", "stride", "task", "precision", "edgecl_version", "edgecl_ider_folded")
# OpenVINO element type name -> numpy dtype name of the inputs a YOLO export can have.
INPUT_DTYPES = {"f32": "float32", "f16": "float16"}
INSTALL_HINT = "pip install openvino (or serve the .onnx model)"
_CORE = None
_CORE_LOCK = threading.Lock()


def import_openvino():
    """Import the ``openvino`` package or raise a one-line error.

    Returns:
        The ``openvino`` module.

    Raises:
        ModelLoadError: ``openvino`` is not installed (or cannot be imported here).
    """
    from edgecl.ultra import telemetry_declined

    try:
        with telemetry_declined():
            import openvino
    except ImportError as exc:
        raise ModelLoadError(f"OpenVINO is not available ({one_line(exc)}); {INSTALL_HINT}") from None
    return openvino


def shared_core():
    """The process's one OpenVINO ``Core``, created on first use and never dropped (see the
    module docstring: a ``Core`` dropped by another thread than the one that compiled with it
    leaves that thread's signal stack unmapped).

    Returns:
        ``openvino.Core``.

    Raises:
        ModelLoadError: ``openvino`` is not installed.
    """
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = import_openvino().Core()
        return _CORE


def openvino_reason(exc: BaseException, max_chars: int = 200) -> str:
    """The line of an OpenVINO exception that says what is wrong.

    OpenVINO's messages start with ``Exception from <source file>:<line>:`` and ``Check '...'
    failed at ...`` lines; the cause (``Unable to read the model ...``, ``Incorrect weights in
    bin file!``) comes last.

    Args:
        exc: the exception.
        max_chars: longest text kept.

    Returns:
        The last line that is not source-location noise (the first line when all are).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    text = (useful or lines or [type(exc).__name__])[-1]
    text = text.replace(" Available frontends:", "; available frontends:")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def openvino_available() -> bool:
    """True when the ``openvino`` package imports."""
    try:
        import_openvino()
    except ModelLoadError:
        return False
    return True


def read_ir_metadata(ov_model, xml_path: Path) -> dict[str, str]:
    """Metadata of an IR as strings, like an ONNX ``custom_metadata_map``.

    edgecl's exports carry it in the model's ``rt_info`` under ``edgecl``; ultralytics' exports
    write a ``metadata.yaml`` beside the ``.xml`` instead, which is read when the former is absent.
    Without either (an ultralytics IR copied without its ``metadata.yaml``, e.g. into a registry
    version), the class names come from ultralytics' ``rt_info`` entry ``model_info/labels``.

    Args:
        ov_model: the ``openvino.Model`` read from ``xml_path``.
        xml_path: the ``.xml`` file, for the ``metadata.yaml`` beside it and error messages.

    Returns:
        Key -> value (``names`` as a Python dict literal, ``imgsz`` as ``[h, w]`` ...); may be empty.

    Raises:
        ModelLoadError: an unreadable ``metadata.yaml``.
    """
    custom = {}
    for key in RT_KEYS:
        if ov_model.has_rt_info([RT_SECTION, key]):
            custom[key] = str(ov_model.get_rt_info([RT_SECTION, key]).astype(str))
    if custom:
        return custom
    yaml_path = xml_path.parent / "metadata.yaml"
    if not yaml_path.is_file():
        return _ultralytics_rt_labels(ov_model)
    import yaml

    from edgecl.input_files import read_data_file

    try:
        data = yaml.safe_load(read_data_file(yaml_path, "a model's metadata.yaml")) or {}
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{yaml_path}: unreadable metadata{yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{yaml_path}: unreadable metadata "
                             f"({getattr(exc, 'strerror', None) or one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{yaml_path}: metadata is not a mapping")
    for key in ("names", "imgsz", "stride", "task", "head"):
        if key in data:
            custom[key] = repr(data[key]) if key in ("names", "imgsz") else str(data[key])
    return custom


def _ultralytics_rt_labels(ov_model) -> dict[str, str]:
    """Class names from the ``rt_info`` entry ``model_info/labels`` that ultralytics' exporter
    writes for a YOLO model: one space-separated string (its exporter turns spaces inside a name
    into ``_``). Empty when absent or not from a YOLO export."""
    if not (ov_model.has_rt_info(["model_info", "labels"])
            and ov_model.has_rt_info(["model_info", "model_type"])):
        return {}
    if str(ov_model.get_rt_info(["model_info", "model_type"]).astype(str)) != "YOLO":
        return {}
    labels = str(ov_model.get_rt_info(["model_info", "labels"]).astype(str)).split()
    return {"names": repr(dict(enumerate(labels)))} if labels else {}


def _shape(partial_shape) -> list:
    """A partial shape as a list: ints for static dims, ``"?"`` for dynamic ones."""
    return [d.get_length() if d.is_static else "?" for d in partial_shape]


class OpenVinoBackend(Backend):
    """Runs an OpenVINO IR (FP32 or INT8) on the CPU.

    The input's shape and element type are read from the IR (a fixed batch is filled chunk by
    chunk, as for ONNX); class names and the input size from its metadata.
    """

    name = "openvino"
    suffixes = (".xml",)

    def __init__(self, opts=None):
        super().__init__(opts)
        self._request = None
        self._compiled = None
        self._zeroed: str | None = None

    def _load(self, path: Path) -> ModelMeta:
        ov = import_openvino()
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise ModelLoadError(f"cannot load OpenVINO model {path}: its weights {bin_path.name} "
                                 "are missing beside it")
        core = shared_core()
        try:
            model = core.read_model(str(path), str(bin_path))
        except Exception as exc:  # OpenVINO raises RuntimeError and others for bad IR files
            raise ModelLoadError(f"cannot load OpenVINO model {path}: {openvino_reason(exc)}") from None
        if len(model.inputs) != 1 or not model.outputs:
            raise ModelLoadError(f"{path}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                 "expected one image input and a detection output")
        inp = model.inputs[0]
        etype = inp.get_element_type().get_type_name()
        dtype = INPUT_DTYPES.get(etype)
        if dtype is None:
            raise ModelLoadError(f"{path}: input element type {etype} is not supported "
                                 f"(expected one of {', '.join(INPUT_DTYPES)})")
        custom = read_ir_metadata(model, path)
        check_export_metadata(custom, path)
        refuse_extra_outputs([f"{next(iter(sorted(o.get_names())), f'output{i}')} "
                              f"{_shape(o.get_partial_shape())}"
                              for i, o in enumerate(model.outputs)], path)
        in_shape = _shape(inp.get_partial_shape())
        names, hw = read_onnx_metadata(custom, in_shape, path, self.opts.imgsz)
        if not inp.get_partial_shape().is_static:
            batch0 = in_shape[0] if isinstance(in_shape[0], int) else 1
            try:
                model.reshape([batch0, 3, hw[0], hw[1]])
            except Exception as exc:  # shape inference fails with RuntimeError and others
                raise ModelLoadError(f"{path}: cannot set its dynamic input to {batch0}x3x{hw[0]}x{hw[1]} "
                                     f"({openvino_reason(exc)}); export it with a fixed input size "
                                     "or give the right 'imgsz' metadata") from None
        out_shape = _shape(model.outputs[0].get_partial_shape())
        names = check_detect_output(out_shape, names, path)
        floor = built_in_score_threshold(_greater_constants(model)) if out_shape[2:] == [6] else None
        config = {"INFERENCE_NUM_THREADS": max(1, int(self.opts.threads)),
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
        try:
            compiled = core.compile_model(model, "CPU", config)
            request = compiled.create_infer_request()
        except Exception as exc:  # compilation errors come as RuntimeError and others
            raise ModelLoadError(f"cannot compile OpenVINO model {path}: {openvino_reason(exc)}") from None
        batch = in_shape[0] if isinstance(in_shape[0], int) and in_shape[0] > 0 else None
        self._compiled, self._request = compiled, request
        self._zeroed = _zeroed_kernel_name(model)
        precision = custom.get("precision") or ("int8" if _has_fake_quantize(model) else "fp32")
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=max(hw),
                         sha256=sha256_file(path), input_hw=hw, batch=batch, input_dtype=dtype,
                         extra={"device": "CPU", "precision": precision,
                                "bin_sha256": sha256_file(bin_path),
                                "openvino_version": str(ov.__version__),
                                **({"nms_score_threshold": floor} if floor is not None else {})})

    def _zeroed_weight(self) -> str | None:
        return self._zeroed  # looked at in _load, on the model read there

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        out = self._request.get_output_tensor(0).data
        return np.array(out, dtype=np.float32, copy=True)  # the request reuses its buffer

    def close(self) -> None:
        """Drop the compiled model and its infer request."""
        self._request = None
        self._compiled = None
        super().close()


def _zeroed_kernel_name(model) -> str | None:
    """:func:`edgecl.models.checkpoint.zeroed_kernel` over an IR's convolution kernels."""
    from edgecl.models.checkpoint import zeroed_kernel

    kernels = (_kernel_constant(op) for op in model.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "GroupConvolution"))
    return zeroed_kernel((k.get_friendly_name(), k.get_data()) for k in kernels if k is not None)


def _kernel_constant(conv):
    """The constant holding a convolution's kernel: its weights input, through the
    ``Convert`` of an FP16 IR and the ``Multiply``/``Subtract``/``FakeQuantize`` of an INT8 one
    (their first input); None where it is computed otherwise. (A folded bias, a zero-filled
    ``[1, C, 1, 1]`` constant in an untrained model, is no kernel.)"""
    node = conv.input_value(1).get_node()
    for _ in range(8):
        kind = node.get_type_name()
        if kind == "Constant":
            return node if len(node.get_output_shape(0)) == 4 else None
        if kind not in ("Convert", "Multiply", "Subtract", "FakeQuantize", "Reshape"):
            return None
        node = node.input_value(0).get_node()
    return None


def _greater_constants(model) -> list[float]:
    """The scalar float constants that the ``Greater`` ops of an IR compare with (see
    :func:`edgecl.models.onnx_backend.built_in_score_threshold`)."""
    values = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Greater" or op.get_input_size() != 2:
            continue
        const = op.input_value(1).get_node()
        while const.get_type_name() == "Convert" and const.get_input_size() == 1:
            const = const.input_value(0).get_node()  # a float16 IR converts its constants
        if const.get_type_name() == "Constant":
            data = np.asarray(const.get_data())
            if data.size == 1 and data.dtype.kind == "f":
                values.append(float(data.reshape(-1)[0]))
    return values


def _has_fake_quantize(model) -> bool:
    """True when an IR holds quantisation nodes (an INT8 model without edgecl metadata)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())

