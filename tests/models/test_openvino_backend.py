"""OpenVINO backend: parity with onnxruntime on the same image, and odd files refused in one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from edgecl.errors import ModelLoadError
from edgecl.models.backends import backend_class, load_backend
from edgecl.models.base import InferenceOptions

pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")

IMGSZ = 64
NAMES = {0: "car", 1: "truck", 2: "drone"}


def varied_model():
    """A tiny untrained YOLO11n whose scores vary over an image (no ties for NMS to break by
    float noise): BatchNorm statistics estimated on random images, class logits scaled down."""
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(3, names=NAMES)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, IMGSZ, IMGSZ))
        for seq in model.model[-1].cv3:
            seq[-1].weight.mul_(0.1)
            seq[-1].bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny untrained YOLO11n exported to ONNX and to an OpenVINO IR (same weights)."""
    from edgecl.models.export import export_onnx
    from edgecl.models.export_openvino import export_openvino

    torch.set_num_threads(1)
    model = varied_model()
    out = tmp_path_factory.mktemp("ov")
    onnx = export_onnx(model, out / "model.onnx", imgsz=IMGSZ, names=NAMES)
    xml = export_openvino(model, out / "openvino", imgsz=IMGSZ, names=NAMES)
    return onnx, xml


def _image(seed=0, shape=(48, 80, 3)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def test_xml_suffix_selects_openvino():
    from edgecl.models.openvino_backend import OpenVinoBackend

    assert backend_class("a/model.XML") is OpenVinoBackend


def test_ir_written_as_a_pair_with_metadata(exported):
    _, xml = exported
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]
    assert not [p for p in xml.parent.parent.iterdir() if p.name.startswith(".")]  # no temp left
    backend = load_backend(xml, InferenceOptions(threads=1), warmup_runs=1)
    meta = backend.meta
    assert meta.backend == "openvino" and meta.names == NAMES and meta.hw == (IMGSZ, IMGSZ)
    assert meta.batch == 1 and meta.input_dtype == "float32" and meta.extra["precision"] == "fp32"
    backend.close()


def test_parity_with_onnxruntime(exported):
    onnx, xml = exported
    opts = InferenceOptions(conf=0.25, iou=0.7, max_det=50, threads=1)
    a, b = load_backend(onnx, opts), load_backend(xml, opts)
    batch = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    np.testing.assert_allclose(b._forward(batch), a._forward(batch), rtol=1e-3, atol=1e-3)
    images = [_image(0), _image(1, (64, 64, 3))]
    for da, db in zip(a.infer(images), b.infer(images)):
        assert len(da) == len(db) > 0
        np.testing.assert_array_equal(da.classes, db.classes)
        np.testing.assert_allclose(db.scores, da.scores, atol=1e-3)
        np.testing.assert_allclose(db.boxes_xyxy, da.boxes_xyxy, atol=0.05)
    a.close()
    b.close()


def test_xml_without_its_bin_is_one_line_error(exported, tmp_path):
    _, xml = exported
    lone = tmp_path / "model.xml"
    lone.write_bytes(xml.read_bytes())
    with pytest.raises(ModelLoadError) as err:
        load_backend(lone)
    assert "model.bin" in str(err.value) and "\n" not in str(err.value)


def test_garbage_xml_is_one_line_error(tmp_path):
    xml = tmp_path / "model.xml"
    xml.write_text("<net><layers><garbage")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError) as err:
        load_backend(xml)
    text = str(err.value)
    assert text.startswith("cannot load OpenVINO model") and "\n" not in text


def test_missing_openvino_is_one_line_error(exported, monkeypatch):
    _, xml = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ModelLoadError) as err:
        load_backend(xml)
    assert "OpenVINO is not available" in str(err.value) and "\n" not in str(err.value)


def test_openvino_reason_keeps_the_cause_not_the_source_location():
    from edgecl.models.openvino_backend import openvino_reason

    unreadable = RuntimeError(
        'Exception from src/inference/src/cpp/core.cpp:84:\nException from src/inference/src/'
        'model_reader.cpp:148:\nUnable to read the model: "m.xml" Please check that model format: '
        '".xml" is supported and the model is correct. Available frontends: ir onnx \n\n')
    assert openvino_reason(unreadable) == ('Unable to read the model: "m.xml" Please check that '
                                           'model format: ".xml" is supported and the model is '
                                           'correct.; available frontends: ir onnx')
    truncated = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nCheck "
                             "'is_valid_weights_range(a, b, c)' failed at src/core/x.cpp:900:\n"
                             "Incorrect weights in bin file!\n\n")
    assert openvino_reason(truncated) == "Incorrect weights in bin file!"
    assert openvino_reason(RuntimeError("")) == "RuntimeError"


def test_an_ir_is_added_to_the_registry_with_its_weights_and_served(exported, tmp_path):
    from edgecl.errors import RegistryError
    from edgecl.models.registry import Registry

    _, xml = exported
    reg = Registry(tmp_path / "models")
    version = reg.add(xml)
    assert sorted(reg.manifest(version)["files"]) == ["model.bin", "model.xml"]
    assert reg.model_path(version) == reg.root / version / "model.xml"
    assert reg.verify(version) == []
    lone = tmp_path / "lone" / "model.xml"
    lone.parent.mkdir()
    lone.write_bytes(xml.read_bytes())
    with pytest.raises(RegistryError, match="weights model.bin are missing"):
        reg.add(lone, check=False)
    assert reg.versions() == [version]


def _tiny_ir(tmp_path, name, in_shape, *, reshape_to=None, rt=None):
    """A tiny detector-shaped IR: one 1x1 stride-32 convolution to 6 channels (2 classes),
    flattened to (N, 6, anchors) or reshaped to the fixed ``reshape_to``."""
    import openvino as ov
    from openvino import opset13 as ops

    param = ops.parameter(in_shape, ov.Type.f32, name="images")
    weights = ops.constant(np.random.default_rng(0).random((6, 3, 1, 1), dtype=np.float32))
    conv = ops.convolution(param, weights, [32, 32], [0, 0], [0, 0], [1, 1])
    target = reshape_to if reshape_to is not None else [0, 6, -1]
    out = ops.reshape(conv, ops.constant(np.array(target, np.int64)), reshape_to is None)
    model = ov.Model([out], [param], "tiny")
    for keys, value in (rt or {}).items():
        model.set_rt_info(value, list(keys))
    xml = tmp_path / name / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def test_dynamic_input_that_cannot_take_the_size_is_one_line_error(tmp_path):
    xml = _tiny_ir(tmp_path, "hard", [1, 3, -1, -1], reshape_to=[1, 6, 4],
                   rt={("edgecl", "imgsz"): "[128, 128]"})
    with pytest.raises(ModelLoadError) as err:
        load_backend(xml)
    text = str(err.value)
    assert "cannot set its dynamic input to 1x3x128x128" in text and "\n" not in text


def test_ultralytics_ir_without_its_metadata_yaml_keeps_its_class_names(tmp_path):
    """An ultralytics IR staged into a registry version travels without its metadata.yaml;
    the names then come from the labels ultralytics writes into rt_info."""
    rt = {("model_info", "model_type"): "YOLO", ("model_info", "labels"): ["car", "traffic_light"]}
    xml = _tiny_ir(tmp_path, "ultra", [1, 3, 64, 64], rt=rt)
    backend = load_backend(xml, InferenceOptions(threads=1), warmup_runs=1)
    assert backend.meta.names == {0: "car", 1: "traffic_light"}
    backend.close()
    plain = _tiny_ir(tmp_path, "plain", [1, 3, 64, 64])
    assert load_backend(plain).meta.names == {0: "0", 1: "1"}


def test_an_ultralytics_ir_is_added_with_its_metadata_yaml(tmp_path):
    """Names with spaces survive only in metadata.yaml (rt_info turns them into '_')."""
    from edgecl.models.registry import Registry

    rt = {("model_info", "model_type"): "YOLO", ("model_info", "labels"): ["car", "traffic_light"]}
    xml = _tiny_ir(tmp_path, "ultra", [1, 3, 64, 64], rt=rt)
    (xml.parent / "metadata.yaml").write_text("task: detect\nimgsz: [64, 64]\n"
                                              "names: {0: car, 1: traffic light}\n")
    reg = Registry(tmp_path / "state" / "models")
    version = reg.add(xml, opts=InferenceOptions(threads=1))
    assert sorted(reg.manifest(version)["files"]) == ["metadata.yaml", "model.bin", "model.xml"]
    assert reg.manifest(version)["classes"] == {"0": "car", "1": "traffic light"}
    backend = load_backend(reg.model_path(version, verify=True), InferenceOptions(threads=1))
    assert backend.meta.names == {0: "car", 1: "traffic light"}
    backend.close()


@pytest.mark.parametrize("metadata, what", [
    ("task: pose\n", "a pose model (task 'pose' in its metadata)"),
    ("task: segment\n", "a segmentation model (task 'segment' in its metadata)"),
    ("task: detect\nhead: RTDETRDecoder\n",
     "an RT-DETR transformer detector (head 'RTDETRDecoder' in its metadata)"),
])
def test_an_ultralytics_ir_of_another_task_is_refused_like_a_checkpoint(tmp_path, metadata, what,
                                                                         run_edgecl):
    """ultralytics' metadata.yaml names the task and head: the same line as ONNX and .pt."""
    xml = _tiny_ir(tmp_path, "other", [1, 3, 64, 64])
    (xml.parent / "metadata.yaml").write_text(metadata + "imgsz: [64, 64]\nnames: {0: a, 1: b}\n")
    expected = (f"cannot load {xml}: {what}; edgecl runs object detection models "
                "(ultralytics DetectionModel: YOLOv5u/v8/v9/v10/11/12/26)")
    with pytest.raises(ModelLoadError) as info:
        load_backend(xml)
    assert str(info.value) == expected
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", xml])
    assert (code, err) == (2, f"error: {expected}\n")


SWAP_THEN_STOP = """
import gc, os, signal, sys, threading
from edgecl.models.backends import load_backend
stopped = []
signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
held = {"old": load_backend(sys.argv[1])}           # the version served first: main thread
def swap():                                         # the loader swaps, the old version goes
    held["new"] = load_backend(sys.argv[1])
    held.pop("old").close()
    gc.collect()
worker = threading.Thread(target=swap)
worker.start()
worker.join()
os.kill(os.getpid(), signal.SIGTERM)                 # systemd / docker stop
print("stopped cleanly", stopped, flush=True)
"""


def test_a_stop_after_a_hot_swap_is_clean(exported):
    """A Core per model, dropped by the thread that swapped it out, left the main thread's
    alternate signal stack unmapped: the stop's SIGTERM then segfaulted (exit 139)."""
    import subprocess

    _, xml = exported
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", SWAP_THEN_STOP, str(xml)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done.returncode, done.stderr[-500:])
        assert "stopped cleanly [15]" in done.stdout


def test_one_core_serves_the_process():
    from edgecl.models.openvino_backend import shared_core

    assert shared_core() is shared_core()


def test_a_kernel_of_zeros_is_refused_and_a_fresh_models_zero_biases_are_not(tmp_path):
    """Weights a card fault zero-filled leave finite outputs and no detection; an untrained
    model's export (BatchNorm at its start: every folded bias a zero [1, C, 1, 1] constant) is
    no such fault. (A wholly zero-filled model.bin fails to load already: its shape constants
    are zeros too.)"""
    from edgecl.models.export_openvino import export_openvino
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(3, names=NAMES).eval()
    fresh = export_openvino(model, tmp_path / "fresh", imgsz=IMGSZ, names=NAMES)
    load_backend(fresh, warmup_runs=1).close()  # loads: zero biases are no damage
    with torch.no_grad():
        model.model[2].cv1.conv.weight.zero_()
    zeroed = export_openvino(model, tmp_path / "zeroed", imgsz=IMGSZ, names=NAMES)
    with pytest.raises(ModelLoadError, match=r"its weights are zero-filled \(every value of "
                                             r".* is 0\): the file is damaged"):
        load_backend(zeroed, warmup_runs=1)


def test_models_add_refuses_a_giant_metadata_yaml_beside_an_ir_before_copying_it(exported,
                                                                                 tmp_path):
    """Before: a 50 GB sparse metadata.yaml beside model.xml was copied into the version: a
    killed run left 24 GB of zeros in the staging folder."""
    import shutil

    from edgecl.errors import RegistryError
    from edgecl.models.registry import Registry

    ir = tmp_path / "ir"
    shutil.copytree(exported[1].parent, ir)
    with open(ir / "metadata.yaml", "wb") as fh:
        fh.truncate(50 * 1024 ** 3)
    reg = Registry(tmp_path / "state" / "models")
    with pytest.raises(RegistryError, match=r"metadata.yaml beside it is 50.0 GiB, more than a "
                                            r"metadata file can be \(16.0 MiB\)"):
        reg.add(ir / "model.xml")
    assert reg.versions() == []
