"""TensorRT backend for ``.engine`` files (Jetson: TensorRT 8.x on JetPack 5, 10.x on JetPack 6).

The engine's header is checked before TensorRT sees the plan: an engine built by another
TensorRT version or on another GPU is refused as stale (never reused), a damaged one as corrupt.
I/O uses TensorRT's name-based tensor API with ``execute_async_v3`` where present (8.5+) and
the older bindings API with ``execute_v2`` otherwise. Device buffers are torch CUDA tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecl.errors import ModelLoadError
from edgecl.models.base import Backend, InferenceOptions, ModelMeta, sha256_file
from edgecl.models.engine_file import (LOAD_HINT, check_engine_compatible, cuda_device_identity,
                                       header_imgsz, header_names, import_tensorrt, read_engine_file,
                                       tensorrt_logger)

PREFERRED_OUTPUT = "output0"


@dataclass
class EngineIO:
    """Device buffers bound to an execution context.

    Attributes:
        tensors: tensor name -> torch CUDA tensor, in binding order.
        input_name: the image input.
        output_name: the raw head output ``(N, 4 + nc, A)``.
        tensor_api: True for the name-based API (``execute_async_v3``), False for bindings.
    """

    tensors: dict = field(default_factory=dict)
    input_name: str = ""
    output_name: str = ""
    tensor_api: bool = True

    @property
    def input(self):
        """The input tensor."""
        return self.tensors[self.input_name]

    @property
    def output(self):
        """The detection output tensor."""
        return self.tensors[self.output_name]


def _torch_dtype(trt, trt_dtype):
    """Map a TensorRT data type to the torch dtype of the same layout."""
    import torch

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(trt_dtype))).dtype


def _bind_tensor_api(trt, engine, context, device) -> EngineIO:
    """Allocate buffers with the name-based API (TensorRT >= 8.5)."""
    import torch

    io = EngineIO(tensor_api=True)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        if -1 in tuple(engine.get_tensor_shape(name)):
            context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, 0)[2]))
    for name in names:
        shape = tuple(context.get_tensor_shape(name))
        dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
        io.tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        context.set_tensor_address(name, int(io.tensors[name].data_ptr()))
    _name_io(io, inputs, [n for n in names if n not in inputs])
    return io


def _bind_legacy_api(trt, engine, context, device) -> EngineIO:
    """Allocate buffers with the bindings API (TensorRT < 8.5)."""
    import torch

    io = EngineIO(tensor_api=False)
    count = engine.num_bindings
    inputs = [engine.get_binding_name(i) for i in range(count) if engine.binding_is_input(i)]
    for i in range(count):
        if engine.binding_is_input(i) and -1 in tuple(engine.get_binding_shape(i)):
            context.set_binding_shape(i, tuple(engine.get_profile_shape(0, i)[2]))
    for i in range(count):
        name = engine.get_binding_name(i)
        dtype = _torch_dtype(trt, engine.get_binding_dtype(i))
        io.tensors[name] = torch.empty(tuple(context.get_binding_shape(i)), dtype=dtype, device=device)
    _name_io(io, inputs, [n for n in io.tensors if n not in inputs])
    return io


def _name_io(io: EngineIO, inputs: list[str], outputs: list[str]) -> None:
    """Pick the image input and the detection output."""
    if len(inputs) != 1 or not outputs:
        raise ModelLoadError(f"engine has inputs {inputs} and outputs {outputs}; "
                             "expected one image input and a detection output")
    io.input_name = inputs[0]
    io.output_name = PREFERRED_OUTPUT if PREFERRED_OUTPUT in outputs else outputs[0]


class TensorRTBackend(Backend):
    """Runs a TensorRT ``.engine`` detector on the CUDA device.

    Args:
        opts: post-processing thresholds.
        device_index: CUDA device the engine runs on.
    """

    name = "tensorrt"
    suffixes = (".engine",)

    def __init__(self, opts: InferenceOptions | None = None, device_index: int = 0):
        super().__init__(opts)
        self._device_index = int(device_index)
        self._runtime = None
        self._engine = None
        self._context = None
        self._stream = None
        self._io: EngineIO | None = None

    def _load(self, path: Path) -> ModelMeta:
        trt = import_tensorrt(ModelLoadError, LOAD_HINT)
        header, plan = read_engine_file(path)
        device = cuda_device_identity(ModelLoadError, self._device_index)
        check_engine_compatible(header, trt_version=trt.__version__, device=device, source=str(path))
        try:
            self._open_engine(trt, plan, path)
            names, imgsz = self._check_shapes(header, path)
        except ModelLoadError:
            self.close()
            raise
        info = header.get("edgecl", {})
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=imgsz, sha256=sha256_file(path),
                         extra={"precision": info.get("precision", "unknown"), "trt_version": trt.__version__,
                                "device": device, "cache_key": info.get("cache_key", ""),
                                "batch": int(self._io.input.shape[0]),
                                "io_api": "tensors" if self._io.tensor_api else "bindings"})

    def _open_engine(self, trt, plan: bytes, path: Path) -> None:
        """Deserialize the plan, create the execution context and bind device buffers."""
        import torch

        with torch.cuda.device(self._device_index):
            self._deserialize(trt, plan, path)
            bind = _bind_tensor_api if hasattr(self._context, "execute_async_v3") else _bind_legacy_api
            self._io = bind(trt, self._engine, self._context, torch.device("cuda", self._device_index))
            self._stream = torch.cuda.Stream(self._device_index)

    def _deserialize(self, trt, plan: bytes, path: Path) -> None:
        """Deserialize the plan and create an execution context, or raise ModelLoadError."""
        self._runtime = trt.Runtime(tensorrt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            self._runtime = None
            raise ModelLoadError(f"TensorRT cannot deserialize {path}: stale (built by another TensorRT "
                                 "or GPU) or corrupt; rebuild it from the .onnx model")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            self._engine = self._runtime = None
            raise ModelLoadError(f"TensorRT cannot create an execution context for {path} (out of GPU memory?)")

    def _check_shapes(self, header: dict, path: Path) -> tuple[dict[int, str], int]:
        """Return ``(names, imgsz)`` after checking them against the engine's I/O shapes."""
        in_shape = tuple(self._io.input.shape)
        out_shape = tuple(self._io.output.shape)
        if len(in_shape) != 4 or in_shape[2] != in_shape[3] or len(out_shape) != 3:
            raise ModelLoadError(f"{path}: input {in_shape} / output {out_shape} are not a square-input "
                                 "YOLO detector with raw (N, 4+nc, anchors) output")
        imgsz = header_imgsz(header) or int(in_shape[-1])
        names = header_names(header) or {i: str(i) for i in range(out_shape[1] - 4)}
        if imgsz != in_shape[-1] or out_shape[1] != 4 + len(names):
            raise ModelLoadError(f"{path}: header says imgsz {imgsz} and {len(names)} classes but the engine "
                                 f"has input {in_shape} and output {out_shape}")
        return names, imgsz

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        engine_batch = int(self._io.input.shape[0])
        outputs = []
        for start in range(0, batch.shape[0], engine_batch):
            chunk = batch[start:start + engine_batch]
            real = chunk.shape[0]
            if real < engine_batch:
                pad = np.zeros((engine_batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self._run(chunk)[:real])
        return np.concatenate(outputs, axis=0)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """Run one engine-sized batch and return the detection output on the host."""
        import torch

        io = self._io
        if tuple(chunk.shape) != tuple(io.input.shape):
            raise ValueError(f"batch shape {chunk.shape} does not match the engine input {tuple(io.input.shape)}")
        with torch.cuda.device(self._device_index), torch.cuda.stream(self._stream):
            io.input.copy_(torch.from_numpy(np.ascontiguousarray(chunk)))
            if io.tensor_api:
                ok = self._context.execute_async_v3(self._stream.cuda_stream)
            else:
                self._stream.synchronize()
                ok = self._context.execute_v2([int(t.data_ptr()) for t in io.tensors.values()])
            result = io.output.float().cpu()
            self._stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT inference failed (see the TensorRT log)")
        return result.numpy()

    def close(self) -> None:
        """Release the execution context, the engine, the runtime and the device buffers."""
        # INVARIANT: released in reverse order of creation (context, engine, runtime).
        self._context = None
        self._engine = None
        self._runtime = None
        self._io = None
        self._stream = None
        super().close()
