"""Post-training INT8 (NNCF on OpenVINO, onnxruntime static QDQ): the decode stays in float."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl.models.backends import load_backend
from edgecl.models.base import InferenceOptions
from edgecl.models.export_openvino import ExportError
from edgecl.models.quantize import onnx_decode_nodes, openvino_decode_ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import draw_dataset  # noqa: E402

IMGSZ = 64
NAMES = {0: "car", 1: "truck", 2: "drone"}


def test_openvino_decode_ops_keep_head_math_and_dfl_not_branch_convs():
    ops = [
        ("Convolution", "__module.model.0.conv/aten::_convolution/Convolution"),
        ("Convolution", "__module.model.23.cv2.0.0.conv/aten::_convolution/Convolution"),
        ("Swish", "__module.model.23.cv3.2.1.1.act/aten::silu/Swish_3"),
        ("Convolution", "__module.model.23.cv3.0.2/aten::_convolution/Convolution"),
        ("Concat", "__module.model.23/aten::cat/Concat"),
        ("Softmax", "__module.model.23.dfl/aten::softmax/Softmax"),
        ("Convolution", "__module.model.23.dfl.conv/aten::_convolution/Convolution"),
        ("Subtract", "__module.model.23/aten::sub/Subtract"),
        ("Multiply", "__module.model.23/aten::mul/Multiply"),
        ("Sigmoid", "__module.model.23/aten::sigmoid/Sigmoid"),
        ("Concat", "__module.model.23/aten::cat/Concat_3"),
    ]
    assert openvino_decode_ops(ops) == [
        "__module.model.23/aten::cat/Concat",
        "__module.model.23.dfl/aten::softmax/Softmax",
        "__module.model.23.dfl.conv/aten::_convolution/Convolution",
        "__module.model.23/aten::sub/Subtract",
        "__module.model.23/aten::mul/Multiply",
        "__module.model.23/aten::sigmoid/Sigmoid",
        "__module.model.23/aten::cat/Concat_3",
    ]


def test_onnx_decode_nodes_keep_head_math_and_dfl_not_branch_convs():
    nodes = [
        ("Conv", "/model.0/conv/Conv"),
        ("Conv", "/model.23/cv2.0/cv2.0.0/conv/Conv"),
        ("Conv", "/model.23/cv3.1/cv3.1.2/Conv"),
        ("Reshape", "/model.23/Reshape"),
        ("Softmax", "/model.23/dfl/Softmax"),
        ("Conv", "/model.23/dfl/conv/Conv"),
        ("Div", "/model.23/Div_1"),
        ("Sigmoid", "/model.23/Sigmoid"),
        ("Concat", "/model.23/Concat_3"),
    ]
    assert onnx_decode_nodes(nodes) == ["/model.23/Reshape", "/model.23/dfl/Softmax",
                                        "/model.23/dfl/conv/Conv", "/model.23/Div_1",
                                        "/model.23/Sigmoid", "/model.23/Concat_3"]


def test_no_detect_head_is_refused():
    with pytest.raises(ExportError, match="not a YOLO Detect head"):
        openvino_decode_ops([("Convolution", "a/b")])
    with pytest.raises(ExportError, match="not a YOLO Detect head"):
        onnx_decode_nodes([("Conv", "/model.0/conv/Conv")])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny YOLO11n exported to ONNX (and OpenVINO when installed) + calibration images."""
    from edgecl.models.export import export_onnx
    from edgecl.ultra import build_detection_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("q")
    model = build_detection_model(3, names=NAMES)
    images = draw_dataset(out / "data", 4, size=IMGSZ, classes=(0, 1, 2))
    return model, export_onnx(model, out / "model.onnx", imgsz=IMGSZ, names=NAMES), images, out


def test_onnx_static_int8_keeps_decode_in_float_and_metadata(tiny):
    import onnx

    from edgecl.models.quantize import quantize_onnx

    _, onnx_path, images, out = tiny
    stats = {}
    dest = quantize_onnx(onnx_path, out / "model-int8.onnx", images, stats=stats)
    assert stats["calibration_images"] == 4 and stats["quantize_s"] > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left
    proto = onnx.load(str(dest))
    kinds = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds
    dq_outputs = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    kept = set(onnx_decode_nodes([(n.op_type, n.name) for n in onnx.load(str(onnx_path)).graph.node]))
    for node in proto.graph.node:
        if node.name in kept:
            assert not dq_outputs & set(node.input), f"{node.name} was quantised"
    backend = load_backend(dest, InferenceOptions(threads=1), warmup_runs=1)
    assert backend.meta.names == NAMES and backend.meta.hw == (IMGSZ, IMGSZ)


def test_no_calibration_image_is_refused(tiny, tmp_path):
    from edgecl.models.quantize import quantize_onnx

    with pytest.raises(ExportError, match="at least one image"):
        quantize_onnx(tiny[1], tmp_path / "x.onnx", [])


def test_openvino_int8_keeps_decode_in_float(tiny):
    pytest.importorskip("openvino", reason="openvino is not installed")
    pytest.importorskip("nncf", reason="nncf is not installed")
    import openvino as ov

    from edgecl.models.export_openvino import export_openvino
    from edgecl.models.quantize import quantize_openvino

    model, _, images, out = tiny
    xml = export_openvino(model, out / "openvino", imgsz=IMGSZ, names=NAMES)
    stats = {}
    int8 = quantize_openvino(xml, out / "openvino-int8", images, stats=stats)
    assert sorted(p.name for p in int8.parent.iterdir()) == ["model.bin", "model.xml"]
    assert stats["calibration_images"] == 4 and stats["kept_float_ops"] > 10
    graph = ov.Core().read_model(str(int8))
    ops = graph.get_ordered_ops()
    kept = set(openvino_decode_ops([(op.get_type_name(), op.get_friendly_name()) for op in ops]))
    fake_quant = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    assert fake_quant
    for fq in fake_quant:
        for target in fq.output(0).get_target_inputs():
            consumer = target.get_node().get_friendly_name()
            assert consumer not in kept, f"{consumer} was quantised"
    backend = load_backend(int8, InferenceOptions(threads=1), warmup_runs=1)
    assert backend.meta.extra["precision"] == "int8" and backend.meta.names == NAMES
    assert len(backend.infer([np.full((50, 70, 3), 128, np.uint8)])) == 1


def test_save_ir_replaces_a_folder_whole(tiny):
    pytest.importorskip("openvino", reason="openvino is not installed")
    import openvino as ov

    from edgecl.models.export_openvino import save_ir

    xml = tiny[3] / "openvino" / "model.xml"
    if not xml.is_file():
        pytest.skip("needs the IR of test_openvino_int8_keeps_decode_in_float")
    dest = tiny[3] / "copy"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    out = save_ir(ov.Core().read_model(str(xml)), dest)
    assert out == dest / "model.xml"
    assert sorted(p.name for p in dest.iterdir()) == ["model.bin", "model.xml"]
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_save_ir_on_a_full_disk_is_one_line_export_error(tmp_path, monkeypatch):
    """OpenVINO's writer reports a full disk as RuntimeError('basic_ios::clear: iostream error'),
    which the round's containment (ExportError, OSError) did not catch: the round failed."""
    ov = pytest.importorskip("openvino", reason="openvino is not installed")
    from openvino import opset13 as ops

    from edgecl.models.export_openvino import save_ir

    param = ops.parameter([1, 3, 32, 32], ov.Type.f32, name="images")
    model = ov.Model([ops.relu(param)], [param], "tiny")
    dest = tmp_path / "openvino"
    dest.mkdir()
    (dest / "model.xml").write_text("the previous IR")

    def full_disk(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1:\nbasic_ios::clear: "
                           "iostream error\n")

    monkeypatch.setattr(ov, "save_model", full_disk)
    with pytest.raises(ExportError) as err:
        save_ir(model, dest)
    text = str(err.value)
    assert "basic_ios::clear" in text and "disk full" in text and "\n" not in text
    assert (dest / "model.xml").read_text() == "the previous IR"  # nothing stored is lost
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_learner_log_gets_no_library_noise_from_the_cpu_engines(tmp_path):
    """What a round's log showed (stderr not a terminal): torch's jit.trace deprecation twice
    from OpenVINO's converter, torch's 'No CUDA runtime is found' from importing NNCF on every
    CPU machine, and NNCF's progress bars drawn as lines of box characters."""
    import subprocess

    pytest.importorskip("nncf", reason="nncf is not installed")
    script = tmp_path / "export.py"
    script.write_text(f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from synthetic_yolo import draw_dataset
from edgecl.models.export_openvino import export_openvino
from edgecl.models.quantize import quantize_openvino
from edgecl.ultra import build_detection_model
images = draw_dataset(Path({str(tmp_path / "data")!r}), 3, size={IMGSZ}, classes=(0, 1))
xml = export_openvino(build_detection_model(2), {str(tmp_path / "fp32")!r}, imgsz={IMGSZ})
quantize_openvino(xml, {str(tmp_path / "int8")!r}, images)
print("done")
""")
    with open(tmp_path / "stderr.txt", "w") as err:  # a file, as a service's log is
        proc = subprocess.run([sys.executable, "-W", "default", str(script)], stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=300, env={**__import__("os").environ,
                                                                       "YOLO_OFFLINE": "1"})
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0 and proc.stdout.strip() == "done", stderr
    for noise in ("torch.jit.trace", "No CUDA runtime", "\u2501", "Statistics collection"):
        assert noise not in stderr, stderr
    assert (tmp_path / "int8" / "model.xml").is_file()
