"""TensorRT path: cache key, engine file format, stale-engine refusal, builder checks.

Everything above the ``jetson`` section runs on any machine (no TensorRT needed). The
``jetson`` tests build and run real engines and skip where TensorRT is not installed.
"""

import hashlib
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.errors import ModelLoadError
from edgecl.models import engine_file as ef
from edgecl.models import tensorrt_build as tb
from edgecl.models.tensorrt_backend import TensorRTBackend

KEY_ARGS = dict(precision="fp16", imgsz=160, batch=1, device_name="Orin sm_87", trt_version="10.3.0")


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx-bytes-v1")
    return path


def _engine_bytes(header: dict | None = None, plan: bytes = b"PLAN" * 16) -> bytes:
    header = header if header is not None else _header(plan=plan)
    return ef.encode_engine_file(header, plan)


def _header(plan: bytes = b"PLAN" * 16, key: str = "k1", trt_version: str = "10.3.0",
            device: str = "Orin sm_87") -> dict:
    return ef.make_engine_header(names={0: "car", 1: "drone"}, imgsz=160, batch=1, cache_key=key,
                                 onnx_sha256="ab" * 32, precision="fp16", requested_precision="fp16",
                                 trt_version=trt_version, device=device, engine_bytes=plan)


# ---------------------------------------------------------------- cache key

def test_cache_key_is_stable_and_hex(fake_onnx):
    first = tb.engine_cache_key(fake_onnx, **KEY_ARGS)
    assert first == tb.engine_cache_key(fake_onnx, **KEY_ARGS)
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize("field,value", [("precision", "int8"), ("precision", "fp32"), ("imgsz", 320),
                                         ("batch", 2), ("device_name", "Orin sm_72"),
                                         ("trt_version", "8.5.2.2")])
def test_cache_key_changes_with_each_field(fake_onnx, field, value):
    assert tb.engine_cache_key(fake_onnx, **{**KEY_ARGS, field: value}) != tb.engine_cache_key(fake_onnx, **KEY_ARGS)


def test_cache_key_follows_onnx_content_not_its_name(fake_onnx, tmp_path):
    before = tb.engine_cache_key(fake_onnx, **KEY_ARGS)
    copy = tmp_path / "elsewhere.onnx"
    copy.write_bytes(fake_onnx.read_bytes())
    assert tb.engine_cache_key(copy, **KEY_ARGS) == before
    fake_onnx.write_bytes(b"onnx-bytes-v2")
    assert tb.engine_cache_key(fake_onnx, **KEY_ARGS) != before


@pytest.mark.parametrize("field,value,match", [("precision", "fp8", "unknown engine precision"),
                                               ("imgsz", 100, "multiple of 32"), ("batch", 0, "batch")])
def test_cache_key_rejects_bad_arguments(fake_onnx, field, value, match):
    with pytest.raises(tb.EngineBuildError, match=match):
        tb.engine_cache_key(fake_onnx, **{**KEY_ARGS, field: value})


def test_cache_key_needs_tensorrt_to_know_its_version(fake_onnx, no_tensorrt):
    with pytest.raises(tb.EngineBuildError, match="TensorRT is not installed"):
        tb.engine_cache_key(fake_onnx, **{**KEY_ARGS, "trt_version": None})
    with pytest.raises(tb.EngineBuildError, match="ONNX model not found"):
        tb.engine_cache_key(fake_onnx.with_name("missing.onnx"), **KEY_ARGS)


# ---------------------------------------------------------------- engine file format

def test_header_round_trip_and_byte_layout():
    plan = bytes(range(256)) * 4
    header = _header(plan=plan)
    data = ef.encode_engine_file(header, plan)
    blob = json.dumps(header, sort_keys=True).encode()
    assert data[:4] == len(blob).to_bytes(4, "little") and data[4:4 + len(blob)] == blob
    assert data[4 + len(blob):] == plan
    decoded, engine = ef.decode_engine_file(data)
    assert decoded == header and engine == plan
    assert decoded["edgecl"]["engine_sha256"] == hashlib.sha256(plan).hexdigest()
    assert ef.header_names(decoded) == {0: "car", 1: "drone"} and ef.header_imgsz(decoded) == 160


def test_our_engine_header_is_readable_by_ultralytics(tmp_path):
    from ultralytics.nn.backends.base import BaseBackend

    path = tmp_path / "model.engine"
    plan = b"\x00PLAN" * 10
    path.write_bytes(_engine_bytes(plan=plan))
    offset, meta = BaseBackend.engine_header(path)
    assert path.read_bytes()[offset:] == plan
    assert meta["names"] == {"0": "car", "1": "drone"} and meta["imgsz"] == [160, 160]


def test_ultralytics_style_header_is_read():
    meta = json.dumps({"names": {"0": "person"}, "imgsz": [320, 320], "batch": 1}).encode()
    data = len(meta).to_bytes(4, "little", signed=True) + meta + b"ENGINE"
    header, engine = ef.decode_engine_file(data)
    assert engine == b"ENGINE" and ef.header_names(header) == {0: "person"} and ef.header_imgsz(header) == 320
    ef.check_engine_compatible(header, trt_version="10.3.0", device="Orin sm_87")


def test_bare_plan_without_header_is_passed_through():
    plan = b"\xff\xff\xff\x7f" + b"not a json header"
    assert ef.decode_engine_file(plan) == ({}, plan)


@pytest.mark.parametrize("mutate", [lambda d: d[:-5], lambda d: d[:-1] + b"X", lambda d: d[:3]])
def test_damaged_engine_file_is_refused(tmp_path, mutate):
    path = tmp_path / "model.engine"
    path.write_bytes(mutate(_engine_bytes()))
    with pytest.raises(ModelLoadError, match="corrupt TensorRT engine"):
        ef.read_engine_file(path)


def test_header_only_file_is_refused():
    blob = json.dumps({"names": {}}).encode()
    with pytest.raises(ModelLoadError, match="no engine bytes"):
        ef.decode_engine_file(len(blob).to_bytes(4, "little") + blob)


def test_non_square_header_is_refused():
    with pytest.raises(ModelLoadError, match="not square"):
        ef.header_imgsz({"imgsz": [320, 640]})


# ---------------------------------------------------------------- stale engines

def test_matching_engine_is_accepted():
    ef.check_engine_compatible(_header(), trt_version="10.3.0", device="Orin sm_87", source="m.engine")


def test_engine_from_other_tensorrt_version_is_stale():
    with pytest.raises(ModelLoadError, match=r"stale .*m\.engine.*TensorRT 8\.5\.2\.2.*10\.3\.0.*rebuild"):
        ef.check_engine_compatible(_header(trt_version="8.5.2.2"), trt_version="10.3.0",
                                   device="Orin sm_87", source="m.engine")


def test_engine_from_other_device_is_stale():
    with pytest.raises(ModelLoadError, match=r"stale .*Xavier sm_72.*Orin sm_87"):
        ef.check_engine_compatible(_header(device="Xavier sm_72"), trt_version="10.3.0", device="Orin sm_87")


def test_backend_without_tensorrt_says_what_to_do(tmp_path, no_tensorrt):
    path = tmp_path / "model.engine"
    path.write_bytes(_engine_bytes())
    backend = TensorRTBackend()
    assert backend.name == "tensorrt" and backend.suffixes == (".engine",)
    with pytest.raises(ModelLoadError) as info:
        backend.load(path)
    assert str(info.value) == (f"cannot load {path}: TensorRT is not installed; use the .onnx "
                               f"model on this machine")  # before: the file unnamed
    assert not tb.tensorrt_available()


def test_suffix_selects_tensorrt_backend(tmp_path, no_tensorrt):
    from edgecl.models.backends import load_backend

    path = tmp_path / "model.engine"
    path.write_bytes(_engine_bytes())
    with pytest.raises(ModelLoadError, match="TensorRT is not installed"):
        load_backend(path)


# ---------------------------------------------------------------- builder checks (no TensorRT)

@pytest.mark.parametrize("requested,fp16,int8,flags,expected", [
    ("fp32", False, False, False, "fp32"), ("fp16", True, True, True, "fp16"),
    ("fp16", False, True, True, "fp32"), ("int8", True, True, True, "int8")])
def test_resolve_precision(requested, fp16, int8, flags, expected):
    assert tb.resolve_precision(requested, fast_fp16=fp16, fast_int8=int8, has_precision_flags=flags) == expected


@pytest.mark.parametrize("requested,int8,flags,match", [("int8", False, True, "no fast INT8"),
                                                         ("fp16", True, False, "strongly typed")])
def test_resolve_precision_refusals(requested, int8, flags, match):
    with pytest.raises(tb.EngineBuildError, match=match):
        tb.resolve_precision(requested, fast_fp16=True, fast_int8=int8, has_precision_flags=flags)


def _touch_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.jpg" for i in range(count)]
    for p in paths:
        p.write_bytes(b"x")
    return paths


def test_int8_refuses_tiny_calibration_set(tmp_path, fake_onnx, no_tensorrt):
    images = _touch_images(tmp_path / "calib", tb.MIN_INT8_CALIBRATION_IMAGES - 1)
    with pytest.raises(tb.EngineBuildError, match=r"at least 100 calibration images, got 99"):
        tb.build_engine(fake_onnx, tmp_path / "m.engine", precision="int8", imgsz=160, calibration_images=images)
    with pytest.raises(tb.EngineBuildError, match="got 0"):
        tb.build_engine(fake_onnx, tmp_path / "m.engine", precision="int8", imgsz=160)


def test_build_without_tensorrt_is_a_clear_error(tmp_path, tiny_onnx, no_tensorrt):
    images = _touch_images(tmp_path / "calib", tb.MIN_INT8_CALIBRATION_IMAGES)
    with pytest.raises(tb.EngineBuildError, match="TensorRT is not installed; TensorRT engines are built on"):
        tb.build_engine(tiny_onnx, tmp_path / "m.engine", precision="int8", imgsz=64, calibration_images=images)
    assert not (tmp_path / "m.engine").exists()


def test_build_checks_onnx_before_tensorrt(tmp_path, tiny_onnx, no_tensorrt):
    with pytest.raises(tb.EngineBuildError, match="ONNX input is 64 px but imgsz=96"):
        tb.build_engine(tiny_onnx, tmp_path / "m.engine", imgsz=96)
    with pytest.raises(tb.EngineBuildError, match="ONNX model not found"):
        tb.build_engine(tmp_path / "absent.onnx", tmp_path / "m.engine", imgsz=64)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(tb.EngineBuildError, match="unreadable ONNX model"):
        tb.build_engine(bad, tmp_path / "m.engine", imgsz=64)


def test_reuse_cached_engine(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    target = tmp_path / "v0002" / "model.engine"
    assert not tb.reuse_cached_engine(target, cache, "k1")
    (cache / "k1.engine").write_bytes(_engine_bytes(_header(key="k1")))
    (cache / "k2.engine").write_bytes(_engine_bytes(_header(key="other")))
    (cache / "k3.engine").write_bytes(_engine_bytes(_header(key="k3"))[:-3])
    assert not tb.reuse_cached_engine(target, cache, "k2")
    assert not tb.reuse_cached_engine(target, cache, "k3")
    assert not target.exists()
    assert tb.reuse_cached_engine(target, cache, "k1")
    assert target.read_bytes() == (cache / "k1.engine").read_bytes()
    assert tb.reuse_cached_engine(target, None, "k1")
    assert not tb.reuse_cached_engine(target, None, "k9")


def test_calibration_batches_letterbox_and_skip(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(48, 64), (64, 48), (32, 32), (64, 64), (20, 60)]):
        image = np.zeros((h, w, 3), np.uint8)
        image[:, :] = (0, 0, 255)  # pure red in BGR
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    batches = tb.CalibrationBatches([paths[0], broken, *paths[1:]], batch=2, imgsz=64)
    assert len(batches) == 3
    out = list(batches)
    assert len(out) == 2 and batches.skipped == 1
    for arr in out:
        assert arr.shape == (2, 3, 64, 64) and arr.dtype == np.float32
        assert arr[:, 0, 32, 32].tolist() == [1.0, 1.0]  # red lands in channel 0 (RGB)
        assert arr[:, 2, 32, 32].tolist() == [0.0, 0.0]
        assert 0.0 <= arr.min() and arr.max() <= 1.0


# ---------------------------------------------------------------- jetson: real engines

def _export_tiny_onnx(path: Path, imgsz: int, nc: int = 2) -> Path:
    """Export a freshly initialised YOLO11n (raw head output) to ONNX with names metadata."""
    import onnx
    import torch
    from ultralytics.nn.modules import Detect

    from edgecl.ultra import build_detection_model

    torch.set_num_threads(1)
    model = build_detection_model(nc=nc, names={i: f"c{i}" for i in range(nc)})
    for module in model.modules():
        if isinstance(module, Detect):
            module.export, module.format = True, "onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated
        torch.onnx.export(model, torch.zeros(1, 3, imgsz, imgsz), str(path), opset_version=17,
                          input_names=["images"], output_names=["output0"], dynamo=False)
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="names", value=str(model.names))
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return _export_tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", imgsz=64)


@pytest.fixture
def trt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine; runs on a Jetson")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible; runs on a Jetson")
    return trt


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        frame = np.full((72, 96, 3), 114, np.uint8)
        x, y = rng.integers(0, 60), rng.integers(0, 40)
        frame[y:y + 30, x:x + 30] = rng.integers(0, 255, 3)
        frames.append(frame)
    return frames


def _onnx_raw(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": batch[i:i + 1]})[0] for i in range(len(batch))])


@pytest.mark.jetson
@pytest.mark.parametrize("precision,box_atol,score_atol", [("fp32", 0.05, 1e-3), ("fp16", 1.0, 0.02)])
def test_engine_matches_onnxruntime(trt_gpu, tiny_onnx, tmp_path, precision, box_atol, score_atol):
    from edgecl.models.base import letterbox_batch

    engine = tb.build_engine(tiny_onnx, tmp_path / "m.engine", precision=precision, imgsz=64)
    header = ef.read_engine_header(engine)
    assert header["edgecl"]["trt_version"] == trt_gpu.__version__ and header["names"] == {"0": "c0", "1": "c1"}
    backend = TensorRTBackend().load(engine)
    assert backend.meta.names == {0: "c0", 1: "c1"} and backend.meta.imgsz == 64
    batch = letterbox_batch(_frames(3), 64)
    ours, ref = backend._forward(batch), _onnx_raw(tiny_onnx, batch)
    assert ours.shape == ref.shape == (3, 6, 84)
    np.testing.assert_allclose(ours[:, :4], ref[:, :4], atol=box_atol)
    np.testing.assert_allclose(ours[:, 4:], ref[:, 4:], atol=score_atol)
    assert len(backend.infer(_frames(3))) == 3
    backend.close()


@pytest.mark.jetson
def test_stale_engine_is_refused_on_device(trt_gpu, tiny_onnx, tmp_path):
    engine = tb.build_engine(tiny_onnx, tmp_path / "m.engine", precision="fp32", imgsz=64)
    header, plan = ef.read_engine_file(engine)
    header["edgecl"]["trt_version"] = "0.0.1"
    engine.write_bytes(ef.encode_engine_file(header, plan))
    with pytest.raises(ModelLoadError, match="stale TensorRT engine .*0.0.1"):
        TensorRTBackend().load(engine)


@pytest.mark.jetson
def test_engine_cache_is_reused(trt_gpu, tiny_onnx, tmp_path):
    cache = tmp_path / "cache"
    first = tb.build_engine(tiny_onnx, tmp_path / "a.engine", precision="fp32", imgsz=64, cache_dir=cache)
    key = ef.read_engine_header(first)["edgecl"]["cache_key"]
    assert (cache / f"{key}.engine").read_bytes() == first.read_bytes()
    second = tb.build_engine(tiny_onnx, tmp_path / "b.engine", precision="fp32", imgsz=64, cache_dir=cache)
    assert second.read_bytes() == first.read_bytes()


@pytest.mark.jetson
def test_int8_engine_with_memory_calibration(trt_gpu, tiny_onnx, tmp_path):
    images = []
    for i, frame in enumerate(_frames(tb.MIN_INT8_CALIBRATION_IMAGES, seed=1)):
        images.append(tmp_path / "memory" / f"{i:04d}.jpg")
        images[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(images[-1]), frame)
    cache = tmp_path / "cache"
    engine = tb.build_engine(tiny_onnx, tmp_path / "m.engine", precision="int8", imgsz=64,
                             calibration_images=images, cache_dir=cache)
    key = ef.read_engine_header(engine)["edgecl"]["cache_key"]
    assert (cache / f"{key}.engine").read_bytes() == engine.read_bytes()
    backend = TensorRTBackend().load(engine)
    assert backend.meta.extra["precision"] == "int8"
    assert len(backend.infer(_frames(2))) == 2


@pytest.mark.jetson
def test_dynamic_batch_engine_binds_the_actual_batch(trt_gpu, tmp_path):
    import onnx

    from edgecl.models.base import letterbox_batch

    dynamic = _export_tiny_onnx(tmp_path / "dyn.onnx", imgsz=64)
    proto = onnx.load(str(dynamic))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(proto, str(dynamic))
    engine = tb.build_engine(dynamic, tmp_path / "m.engine", precision="fp32", imgsz=64, batch=4)
    backend = TensorRTBackend().load(engine)
    assert (backend.meta.extra["batch"], backend.meta.extra["min_batch"], backend.meta.extra["dynamic_batch"]) == (
        4, 1, True)
    for count in (1, 3, 6):
        batch = letterbox_batch(_frames(count), 64)
        ours = backend._forward(batch)
        assert ours.shape == (count, 6, 84)
        np.testing.assert_allclose(ours, _onnx_raw(dynamic, batch), atol=0.05)
        assert backend._io.bound_batch == (count if count <= 4 else 2)
    backend.close()
