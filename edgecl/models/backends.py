"""Choose an inference backend by model file suffix."""

from __future__ import annotations

import importlib
from pathlib import Path

from edgecl.errors import ModelLoadError
from edgecl.models.base import Backend, InferenceOptions, folder_given

# INVARIANT: every supported suffix maps to exactly one backend class ("module:Class").
BACKENDS: dict[str, str] = {
    ".onnx": "edgecl.models.onnx_backend:OnnxBackend",
    ".engine": "edgecl.models.tensorrt_backend:TensorRTBackend",
    ".xml": "edgecl.models.openvino_backend:OpenVinoBackend",
    ".pt": "edgecl.models.torch_backend:TorchBackend",
    ".yaml": "edgecl.models.torch_backend:TorchBackend",
    ".yml": "edgecl.models.torch_backend:TorchBackend",
}


def backend_class(path: str | Path) -> type[Backend]:
    """Return the backend class for a model path.

    Args:
        path: model file.

    Returns:
        The :class:`Backend` subclass handling its suffix.

    Raises:
        ModelLoadError: a folder, or an unsupported suffix.
    """
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        raise ModelLoadError(folder_given(Path(path)))
    if suffix not in BACKENDS:
        raise ModelLoadError(f"unsupported model file {path}: expected one of "
                             f"{', '.join(sorted(BACKENDS))}")
    module_name, cls_name = BACKENDS[suffix].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def load_backend(path: str | Path, opts: InferenceOptions | None = None, warmup_runs: int = 0) -> Backend:
    """Load a model with the backend its suffix selects, optionally warmed up.

    Args:
        path: model file (``.onnx``, ``.engine``, ``.xml`` with its ``.bin``, ``.pt``, ``.yaml``).
        opts: inference thresholds and threads.
        warmup_runs: dummy passes to run after loading.

    Returns:
        A loaded backend.

    Raises:
        ModelLoadError: missing, corrupt or unsupported model.
    """
    backend = backend_class(path)(opts)
    backend.load(path)
    if warmup_runs:
        backend.warmup(warmup_runs)
    return backend
