"""TensorRT glue exercised against a minimal stand-in ``tensorrt`` module (no GPU needed).

The stand-in mimics the few TensorRT 10 calls made while building (by ultralytics'
``onnx2engine``, which edgecl delegates the build to) and while binding, so these tests pin the
control flow: precision decision, builder flags, optimisation profile, header contents, cache
reuse and LRU bound, buffer binding, binding of the actual batch. The real API is exercised by
the ``jetson`` tests in test_tensorrt.py.
"""

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from edgecl.models import engine_file as ef
from edgecl.models import tensorrt_backend as tbk
from edgecl.models import tensorrt_build as tb


class FakeNetwork:
    def __init__(self, input_shape, nc):
        self.num_inputs, self.num_outputs, self.num_layers = 1, 1, 0
        self._input = SimpleNamespace(name="images", shape=input_shape, dtype="float32")
        self._output = SimpleNamespace(name="output0", shape=(input_shape[0], 4 + nc, 84), dtype="float32")

    def get_input(self, i):
        return self._input

    def get_output(self, i):
        return self._output


class FakeBuilder:
    builds = 0
    fast_fp16 = True

    def __init__(self, logger):
        self.platform_has_fast_fp16 = FakeBuilder.fast_fp16
        self.platform_has_fast_int8 = True
        self.network_flags = None

    def create_network(self, flags):
        self.network_flags = flags
        return FakeNetwork(FakeTRT.input_shape, nc=2)

    def create_builder_config(self):
        FakeTRT.last_config = SimpleNamespace(flags=set(), pools={}, profiles=[])
        config = FakeTRT.last_config
        config.set_flag = config.flags.add
        config.set_memory_pool_limit = config.pools.__setitem__
        config.add_optimization_profile = config.profiles.append
        return config

    def create_optimization_profile(self):
        profile = SimpleNamespace(shapes={})
        profile.set_shape = lambda name, min, opt, max: profile.shapes.__setitem__(name, (min, opt, max))
        return profile

    def build_serialized_network(self, network, config):
        FakeBuilder.builds += 1
        return b"SERIALIZED-PLAN"


class FakeTRT(types.ModuleType):
    input_shape = (1, 3, 64, 64)
    last_config = None


class FakeLogger:
    WARNING, INFO, VERBOSE = 2, 3, 4

    def __init__(self, level):
        self.min_severity = level


def _fake_trt() -> FakeTRT:
    trt = FakeTRT("tensorrt")
    trt.__version__ = "10.3.0"
    trt.Logger = FakeLogger
    trt.Builder = FakeBuilder
    trt.OnnxParser = lambda network, logger: SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: np.dtype(dtype).type
    return trt


def _tiny_onnx(path, input_shape):
    """A real ONNX file with ultralytics-style names metadata: images -> (N, 6, 84)."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch" if d == -1 else d for d in input_shape]
    out_dims = [dims[0], 6, 84]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [6, 84])
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Expand", ["m", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_dims)],
                              initializer=[shape])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    proto.metadata_props.add(key="names", value=str({0: "car", 1: "drone"}))
    onnx.save(proto, str(path))
    return path


@pytest.fixture
def fake_trt(monkeypatch):
    from ultralytics.utils.export import engine as ultra_engine

    trt = _fake_trt()
    FakeTRT.input_shape = (1, 3, 64, 64)
    FakeBuilder.builds = 0
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "cuda_device_identity", lambda error_cls: "Orin sm_87")
    ef.tensorrt_logger.cache_clear()
    ultra_engine.get_tensorrt_logger.cache_clear()
    yield trt
    ef.tensorrt_logger.cache_clear()
    ultra_engine.get_tensorrt_logger.cache_clear()


@pytest.fixture
def onnx_file(tmp_path):
    return _tiny_onnx(tmp_path / "model.onnx", (1, 3, 64, 64))


def test_build_writes_header_and_engine_then_reuses_the_cache(fake_trt, onnx_file, tmp_path):
    cache = tmp_path / "cache"
    engine = tb.build_engine(onnx_file, tmp_path / "v1" / "model.engine", precision="fp16", imgsz=64,
                             workspace_mb=256, cache_dir=cache)
    header, plan = ef.read_engine_file(engine)
    assert plan == b"SERIALIZED-PLAN"
    info = header["edgecl"]
    assert (info["precision"], info["trt_version"], info["device"]) == ("fp16", "10.3.0", "Orin sm_87")
    assert info["cache_key"] == tb.engine_cache_key(onnx_file, precision="fp16", imgsz=64, batch=1,
                                                    device_name="Orin sm_87", trt_version="10.3.0")
    assert header["names"] == {"0": "car", "1": "drone"} and header["imgsz"] == [64, 64]
    assert FakeTRT.last_config.flags == {"FP16"}
    assert FakeTRT.last_config.pools == {"workspace": 256 * 1024 * 1024}
    assert FakeTRT.last_config.profiles == []  # static ONNX input: no profile
    assert (cache / f"{info['cache_key']}.engine").read_bytes() == engine.read_bytes()
    again = tb.build_engine(onnx_file, tmp_path / "v2" / "model.engine", precision="fp16", imgsz=64,
                            cache_dir=cache)
    assert FakeBuilder.builds == 1 and again.read_bytes() == engine.read_bytes()
    tb.build_engine(onnx_file, tmp_path / "v2" / "model.engine", precision="fp32", imgsz=64, cache_dir=cache)
    assert FakeBuilder.builds == 2 and FakeTRT.last_config.flags == set()


def test_the_cache_keeps_its_most_recently_used_engines(fake_trt, onnx_file, tmp_path):
    cache = tmp_path / "cache"
    for precision in ("fp32", "fp16"):
        tb.build_engine(onnx_file, tmp_path / f"{precision}.engine", precision=precision, imgsz=64,
                        cache_dir=cache, cache_entries=1)
    kept = [p.name for p in cache.iterdir()]
    assert kept == [f"{ef.read_engine_header(tmp_path / 'fp16.engine')['edgecl']['cache_key']}.engine"]


def test_the_engine_just_built_stays_cached_after_the_clock_went_back(fake_trt, onnx_file,
                                                                      tmp_path, monkeypatch):
    import os

    cache = tmp_path / "cache"
    tb.build_engine(onnx_file, tmp_path / "fp32.engine", precision="fp32", imgsz=64,
                    cache_dir=cache, cache_entries=1)
    (old,) = cache.iterdir()
    os.utime(old, (2_000_000_000, 2_000_000_000))  # used in 2033, before the clock went back
    tb.build_engine(onnx_file, tmp_path / "fp16.engine", precision="fp16", imgsz=64,
                    cache_dir=cache, cache_entries=1)
    kept = [p.name for p in cache.iterdir()]
    assert kept == [f"{ef.read_engine_header(tmp_path / 'fp16.engine')['edgecl']['cache_key']}.engine"]


def test_build_falls_back_to_fp32_without_fast_fp16(fake_trt, onnx_file, tmp_path, monkeypatch):
    monkeypatch.setattr(FakeBuilder, "fast_fp16", False)
    engine = tb.build_engine(onnx_file, tmp_path / "m.engine", precision="fp16", imgsz=64)
    info = ef.read_engine_header(engine)["edgecl"]
    assert (info["precision"], info["requested_precision"]) == ("fp32", "fp16")
    assert FakeTRT.last_config.flags == set()


def test_dynamic_onnx_input_gets_ultralytics_profile(fake_trt, tmp_path):
    dynamic = _tiny_onnx(tmp_path / "dyn.onnx", (-1, 3, 64, 64))
    FakeTRT.input_shape = (-1, 3, 64, 64)
    tb.build_engine(dynamic, tmp_path / "m.engine", precision="fp32", imgsz=64, batch=2)
    (profile,) = FakeTRT.last_config.profiles
    assert profile.shapes == {"images": ((1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64))}


def test_static_onnx_input_of_another_batch_is_refused(fake_trt, onnx_file, tmp_path):
    with pytest.raises(tb.EngineBuildError, match=r"is \(1, 3, 64, 64\); expected \(2, 3, 64, 64\)"):
        tb.build_engine(onnx_file, tmp_path / "m.engine", precision="fp32", imgsz=64, batch=2)
    assert not (tmp_path / "m.engine").exists() and FakeBuilder.builds == 0


def test_a_failed_build_is_one_line(fake_trt, onnx_file, tmp_path, monkeypatch):
    monkeypatch.setattr(FakeBuilder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(tb.EngineBuildError, match="TensorRT failed to build an engine from .*: RuntimeError"):
        tb.build_engine(onnx_file, tmp_path / "m.engine", precision="fp32", imgsz=64)
    assert not (tmp_path / "m.engine").exists()


class FakeEngine:
    """Name-based I/O of a dynamic-batch engine whose profile maximum is batch 2."""

    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["images", "output0"][i]

    def get_tensor_mode(self, name):
        return "in" if name == "images" else "out"

    def get_tensor_shape(self, name):
        return (-1, 3, 64, 64) if name == "images" else (-1, 6, 84)

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64)]

    def get_tensor_dtype(self, name):
        return "float16" if name == "images" else "float32"


class FakeContext:
    def __init__(self):
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        return self.shapes.get(name, (2, 6, 84))

    def set_tensor_address(self, name, address):
        self.addresses[name] = address


def test_dynamic_image_size_is_bound_to_the_profile_optimum():
    import torch

    class SpatialEngine(FakeEngine):
        def get_tensor_shape(self, name):
            return (-1, 3, -1, -1) if name == "images" else (-1, 6, -1)

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3, 32, 32), (4, 3, 64, 96), (4, 3, 128, 192)]

    context = FakeContext()
    io = tbk._bind_tensor_api(_fake_trt(), SpatialEngine(), context, torch.device("cpu"))
    assert context.shapes == {"images": (4, 3, 64, 96)} and tuple(io.input.shape) == (4, 3, 64, 96)
    assert (io.dynamic, io.min_batch, io.max_batch) == (True, 1, 4)


def test_tensor_api_binding_allocates_every_io_tensor():
    import torch

    context = FakeContext()
    io = tbk._bind_tensor_api(_fake_trt(), FakeEngine(), context, torch.device("cpu"))
    assert (io.input_name, io.output_name, io.tensor_api) == ("images", "output0", True)
    assert context.shapes == {"images": (2, 3, 64, 64)}
    assert (io.dynamic, io.min_batch, io.max_batch, io.bound_batch) == (True, 1, 2, 2)
    assert tuple(io.input.shape) == (2, 3, 64, 64) and io.input.dtype == torch.float16
    assert tuple(io.output.shape) == (2, 6, 84) and io.output.dtype == torch.float32
    assert context.addresses == {n: t.data_ptr() for n, t in io.tensors.items()}


def test_static_engine_pads_the_last_chunk_to_the_engine_batch(monkeypatch):
    import torch

    backend = tbk.TensorRTBackend()
    backend._io = tbk.EngineIO(tensors={"images": torch.zeros(2, 3, 4, 4), "output0": torch.zeros(2, 6, 5)},
                               input_name="images", output_name="output0", min_batch=2, max_batch=2,
                               bound_batch=2)
    seen = []

    def fake_run(chunk):
        seen.append(chunk.copy())
        return chunk[:, :1, 0, :1].repeat(6, axis=1).repeat(5, axis=2)

    monkeypatch.setattr(backend, "_run", fake_run)
    batch = np.stack([np.full((3, 4, 4), v, np.float32) for v in (1.0, 2.0, 3.0)])
    out = backend._forward(batch)
    assert [c.shape[0] for c in seen] == [2, 2] and seen[1][1].max() == 0.0
    assert out.shape == (3, 6, 5) and out[:, 0, 0].tolist() == [1.0, 2.0, 3.0]


class RecordingContext(FakeContext):
    """Execution context that runs a fake network: output row i = 10 * mean of input row i."""

    def __init__(self, io_holder):
        super().__init__()
        self.io_holder = io_holder
        self.executed = []

    def set_input_shape(self, name, shape):
        super().set_input_shape(name, shape)
        return True

    def execute_async_v3(self, stream):
        io = self.io_holder()
        n = self.shapes["images"][0]
        self.executed.append(n)
        io.output[:n] = io.input[:n].float().mean(dim=(1, 2, 3)).reshape(n, 1, 1) * 10
        return True


def _dynamic_backend(monkeypatch, max_batch=4):
    import contextlib

    import torch

    backend = tbk.TensorRTBackend()
    backend._io = tbk.EngineIO(tensors={"images": torch.zeros(max_batch, 3, 4, 4, dtype=torch.float16),
                                        "output0": torch.zeros(max_batch, 6, 5)},
                               input_name="images", output_name="output0", min_batch=1, max_batch=max_batch,
                               dynamic=True, bound_batch=max_batch)
    backend._context = RecordingContext(lambda: backend._io)
    backend._stream = SimpleNamespace(cuda_stream=0, synchronize=lambda: None)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    return backend


def test_dynamic_engine_binds_the_actual_batch_not_the_profile_maximum(monkeypatch):
    backend = _dynamic_backend(monkeypatch)
    frames = np.stack([np.full((3, 4, 4), v, np.float32) for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)])
    one = backend._forward(frames[:1])
    assert backend._context.executed == [1] and backend._context.shapes == {"images": (1, 3, 4, 4)}
    assert one.shape == (1, 6, 5) and one[0, 0, 0] == 10.0
    three = backend._forward(frames[:3])
    assert backend._context.executed[-1] == 3 and backend._context.shapes["images"] == (3, 3, 4, 4)
    assert three[:, 0, 0].tolist() == [10.0, 20.0, 30.0]
    six = backend._forward(frames)  # more than the maximum: a full chunk of 4, then the real 2
    assert backend._context.executed[-2:] == [4, 2]
    assert six[:, 0, 0].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_binding_outside_the_profile_is_refused(monkeypatch):
    backend = _dynamic_backend(monkeypatch, max_batch=2)
    with pytest.raises(ValueError, match="outside the engine's batch range 1..2"):
        backend._bind_batch(3)


def test_an_ultralytics_engine_of_another_task_is_refused_like_a_checkpoint(fake_trt, tmp_path):
    """ultralytics' engine header names the task (and head), as its ONNX metadata does."""
    from edgecl.errors import ModelLoadError
    from edgecl.models.backends import load_backend

    path = tmp_path / "pose.engine"
    path.write_bytes(ef.encode_engine_file({"task": "pose", "imgsz": [64, 64], "batch": 1,
                                            "names": {"0": "person"}}, b"plan"))
    with pytest.raises(ModelLoadError) as info:
        load_backend(path)
    assert str(info.value) == (f"cannot load {path}: a pose model (task 'pose' in its metadata); "
                               "edgecl runs object detection models (ultralytics DetectionModel: "
                               "YOLOv5u/v8/v9/v10/11/12/26)")
