"""onnxruntime backend for ``.onnx`` models (CPU; CUDA/TensorRT providers when present)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np

from edgecl.errors import ModelLoadError
from edgecl.models.base import Backend, ModelMeta, sha256_file

log = logging.getLogger(__name__)

# Preferred order: the first available wins for each node.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


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
    if requested in ("", "auto"):
        wanted = [p for p in PROVIDER_ORDER if p in available]
    else:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ModelLoadError(f"onnxruntime provider(s) {missing} not available; "
                                 f"this build has {available}")
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


def read_onnx_metadata(custom: dict[str, str], input_shape: list, path: Path) -> tuple[dict, int]:
    """Read class names and image size from ultralytics-style ONNX metadata.

    Args:
        custom: the model's ``custom_metadata_map``.
        input_shape: shape of the first input (``[N, 3, H, W]``; entries may be symbolic).
        path: model path, for error messages.

    Returns:
        ``(names, imgsz)``.

    Raises:
        ModelLoadError: metadata missing and not inferable.
    """
    names = {}
    if "names" in custom:
        try:
            names = {int(k): str(v) for k, v in ast.literal_eval(custom["names"]).items()}
        except (ValueError, SyntaxError, AttributeError) as exc:
            raise ModelLoadError(f"{path}: unreadable 'names' metadata ({exc})") from None
    imgsz = input_shape[-1] if isinstance(input_shape[-1], int) else None
    if imgsz is None and "imgsz" in custom:
        imgsz = int(ast.literal_eval(custom["imgsz"])[-1])
    if imgsz is None:
        raise ModelLoadError(f"{path}: input size is dynamic and no 'imgsz' metadata is present")
    return names, int(imgsz)


class OnnxBackend(Backend):
    """Runs an exported ONNX detector with onnxruntime."""

    name = "onnxruntime"
    suffixes = (".onnx",)

    def __init__(self, opts=None):
        super().__init__(opts)
        self._session = None
        self._input_name = ""
        self._fixed_batch: int | None = None

    def _load(self, path: Path) -> ModelMeta:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, self.opts.threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = choose_providers(self.opts.providers, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load ONNX model {path}: {first}") from None
        inp = session.get_inputs()[0]
        custom = session.get_modelmeta().custom_metadata_map
        names, imgsz = read_onnx_metadata(custom, list(inp.shape), path)
        out_shape = session.get_outputs()[0].shape
        if not names and isinstance(out_shape[1], int):
            names = {i: str(i) for i in range(out_shape[1] - 4)}
        self._session = session
        self._input_name = inp.name
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=imgsz,
                         sha256=sha256_file(path),
                         extra={"providers": session.get_providers()})

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch == 1 and batch.shape[0] > 1:
            outs = [self._session.run(None, {self._input_name: batch[i:i + 1]})[0]
                    for i in range(batch.shape[0])]
            return np.concatenate(outs, axis=0)
        return self._session.run(None, {self._input_name: batch})[0]

    def close(self) -> None:
        """Drop the onnxruntime session."""
        self._session = None
        super().close()
