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
from edgecl.models.base import (Backend, InferenceOptions, ModelMeta, check_export_metadata,
                                sha256_file)
from edgecl.models.engine_file import (LOAD_HINT, check_engine_compatible, cuda_device_identity,
                                       header_hw, header_names, import_tensorrt, read_engine_file,
                                       tensorrt_logger)
from edgecl.models.onnx_backend import refuse_extra_outputs

PREFERRED_OUTPUT = "output0"


@dataclass
class EngineIO:
    """Device buffers bound to an execution context.

    Buffers are allocated once at the largest batch the engine accepts; a dynamic-batch engine
    then binds each call's ACTUAL batch (``set_input_shape``) and uses the leading rows of the
    same buffers (a leading-row slice keeps the buffer's address), so a one-frame call runs a
    batch of one, not the profile's maximum.

    Attributes:
        tensors: tensor name -> torch CUDA tensor, in binding order (largest batch).
        input_name: the image input.
        output_name: the raw head output ``(N, 4 + nc, A)``.
        tensor_api: True for the name-based API (``execute_async_v3``), False for bindings.
        min_batch: smallest batch the engine accepts (its profile minimum; the batch when static).
        max_batch: largest batch (its profile maximum; the batch when static).
        dynamic: the batch dimension is dynamic (bound per call).
        bound_batch: the batch currently bound in the execution context.
        input_index: binding index of the input (bindings API only).
    """

    tensors: dict = field(default_factory=dict)
    input_name: str = ""
    output_name: str = ""
    tensor_api: bool = True
    min_batch: int = 1
    max_batch: int = 1
    dynamic: bool = False
    bound_batch: int = 0
    input_index: int = 0

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
    _name_io(io, inputs, [n for n in names if n not in inputs])
    shape = tuple(engine.get_tensor_shape(io.input_name))
    if -1 in shape:
        first = _set_batch_range(io, engine.get_tensor_profile_shape(io.input_name, 0), shape)
        context.set_input_shape(io.input_name, first)
    else:
        io.min_batch = io.max_batch = io.bound_batch = int(shape[0])
    for name in names:
        dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
        io.tensors[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=device)
        context.set_tensor_address(name, int(io.tensors[name].data_ptr()))
    return io


def _set_batch_range(io: EngineIO, profile: tuple, shape: tuple) -> tuple:
    """Record a dynamic input's batch range; return the shape to allocate and bind first.

    A dynamic image size is bound once, to the profile's optimum (the ``imgsz`` the engine was
    built for, as ultralytics' ``onnx2engine`` sets it); only the batch changes per call.
    """
    lo, opt, hi = (tuple(int(d) for d in s) for s in profile)
    io.dynamic = shape[0] == -1 and lo[0] != hi[0]
    io.min_batch, io.max_batch = lo[0], hi[0]
    io.bound_batch = io.max_batch
    return (hi[0], *(o if d == -1 else d for d, o in zip(shape[1:], opt[1:])))


def _bind_legacy_api(trt, engine, context, device) -> EngineIO:
    """Allocate buffers with the bindings API (TensorRT < 8.5)."""
    import torch

    io = EngineIO(tensor_api=False)
    count = engine.num_bindings
    names = [engine.get_binding_name(i) for i in range(count)]
    inputs = [names[i] for i in range(count) if engine.binding_is_input(i)]
    _name_io(io, inputs, [n for n in names if n not in inputs])
    io.input_index = names.index(io.input_name)
    shape = tuple(engine.get_binding_shape(io.input_index))
    if -1 in shape:
        first = _set_batch_range(io, engine.get_profile_shape(0, io.input_index), shape)
        context.set_binding_shape(io.input_index, first)
    else:
        io.min_batch = io.max_batch = io.bound_batch = int(shape[0])
    for i, name in enumerate(names):
        dtype = _torch_dtype(trt, engine.get_binding_dtype(i))
        io.tensors[name] = torch.empty(tuple(context.get_binding_shape(i)), dtype=dtype, device=device)
    return io


def _name_io(io: EngineIO, inputs: list[str], outputs: list[str]) -> None:
    """Pick the image input and the detection output."""
    if len(inputs) != 1 or not outputs:
        raise ModelLoadError(f"engine has inputs {inputs} and outputs {outputs}; "
                             "expected one image input and a detection output")
    refuse_extra_outputs(outputs, "engine")
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
        try:
            trt = import_tensorrt(ModelLoadError, LOAD_HINT)
        except ModelLoadError as exc:  # named: the engine may be one of several files given
            raise ModelLoadError(f"cannot load {path}: {exc}") from None
        header, plan = read_engine_file(path)
        check_export_metadata(header, path)
        device = cuda_device_identity(ModelLoadError, self._device_index)
        check_engine_compatible(header, trt_version=trt.__version__, device=device, source=str(path))
        try:
            self._open_engine(trt, plan, path)
            names, hw = self._check_shapes(header, path)
        except ModelLoadError:
            self.close()
            raise
        info = header.get("edgecl", {})
        dtype = str(self._io.input.dtype).replace("torch.", "")
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=max(hw), sha256=sha256_file(path),
                         input_hw=hw, input_dtype=dtype,
                         extra={"precision": info.get("precision", "unknown"), "trt_version": trt.__version__,
                                "device": device, "cache_key": info.get("cache_key", ""),
                                "batch": self._io.max_batch, "min_batch": self._io.min_batch,
                                "dynamic_batch": self._io.dynamic,
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

    def _check_shapes(self, header: dict, path: Path) -> tuple[dict[int, str], tuple[int, int]]:
        """Return ``(names, (height, width))`` after checking them against the engine's I/O shapes."""
        in_shape = tuple(self._io.input.shape)
        out_shape = tuple(self._io.output.shape)
        if len(in_shape) != 4 or in_shape[1] != 3 or len(out_shape) != 3 or out_shape[1] <= 4:
            raise ModelLoadError(f"{path}: input {in_shape} / output {out_shape} are not a YOLO detector "
                                 "with an (N, 3, H, W) input and a raw (N, 4+nc, anchors) output")
        hw = header_hw(header) or (int(in_shape[2]), int(in_shape[3]))
        names = header_names(header, str(path)) or {i: str(i) for i in range(out_shape[1] - 4)}
        if tuple(hw) != tuple(in_shape[2:]) or out_shape[1] != 4 + len(names):
            raise ModelLoadError(f"{path}: header says input {hw[0]}x{hw[1]} and {len(names)} classes but the "
                                 f"engine has input {in_shape} and output {out_shape}")
        return names, (int(hw[0]), int(hw[1]))

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run chunks of at most the engine's largest batch; pad only below its smallest batch."""
        io = self._io
        outputs = []
        for start in range(0, batch.shape[0], io.max_batch):
            chunk = batch[start:start + io.max_batch]
            real = chunk.shape[0]
            if real < io.min_batch:
                pad = np.zeros((io.min_batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self._run(chunk)[:real])
        return np.concatenate(outputs, axis=0)

    def _bind_batch(self, n: int) -> None:
        """Bind batch ``n`` in the execution context (dynamic engines; a no-op when already bound)."""
        io = self._io
        if n == io.bound_batch:
            return
        if not io.dynamic or not io.min_batch <= n <= io.max_batch:
            raise ValueError(f"batch {n} is outside the engine's batch range {io.min_batch}..{io.max_batch}")
        shape = (n, *tuple(io.input.shape)[1:])
        if io.tensor_api:
            ok = self._context.set_input_shape(io.input_name, shape)
        else:
            ok = self._context.set_binding_shape(io.input_index, shape)
        if ok is False:
            raise RuntimeError(f"TensorRT refused input shape {shape}")
        io.bound_batch = n

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """Run one batch (bound at its actual size) and return the detection output on the host."""
        import torch

        io = self._io
        n = int(chunk.shape[0])
        if tuple(chunk.shape[1:]) != tuple(io.input.shape)[1:]:
            raise ValueError(f"batch shape {chunk.shape} does not match the engine input {tuple(io.input.shape)}")
        self._bind_batch(n)
        with torch.cuda.device(self._device_index), torch.cuda.stream(self._stream):
            io.input[:n].copy_(torch.from_numpy(np.ascontiguousarray(chunk)))
            if io.tensor_api:
                ok = self._context.execute_async_v3(self._stream.cuda_stream)
            else:
                self._stream.synchronize()
                ok = self._context.execute_v2([int(t.data_ptr()) for t in io.tensors.values()])
            result = io.output[:n].to(device="cpu", dtype=torch.float32, copy=True)
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
