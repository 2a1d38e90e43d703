"""Model files as ultralytics exports them: fixed batch, rectangular input, float16 input, bad files.

Every input shape and element type is read from the file and adapted to (or refused with one
line). Tiny YOLO11n models (random weights, 2 classes) are exported with ultralytics' own
Exporter, exactly as a user would with ``yolo export``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl.errors import ModelLoadError
from edgecl.models.backends import load_backend
from edgecl.models.base import InferenceOptions, ModelMeta, letterbox_batch, postprocess
from edgecl.ultra import build_detection_model

NAMES = {0: "car", 1: "drone"}
LOW_CONF = InferenceOptions(conf=1e-4, iou=0.7, max_det=5, threads=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = build_detection_model(2, names=dict(NAMES))
    net.task = "detect"
    return net


def export(model, out_dir: Path, name: str, **overrides) -> Path:
    """Export with ultralytics' Exporter (as ``yolo export format=onnx ...`` does)."""
    from ultralytics.engine.exporter import Exporter

    with tempfile.TemporaryDirectory() as tmp:
        model.pt_path = str(Path(tmp) / "model.pt")
        args = dict(format="onnx", device="cpu", simplify=False, batch=1, imgsz=64)
        args.update(overrides)
        produced = Path(Exporter(overrides=args)(model=model))
        target = out_dir / name
        target.write_bytes(produced.read_bytes())
    return target


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {
        "batch4": export(model, out, "batch4.onnx", batch=4),
        "rect": export(model, out, "rect.onnx", imgsz=(160, 256)),
        "dynamic": export(model, out, "dynamic.onnx", dynamic=True),
    }


def _frames(n: int, h: int = 120, w: int = 200) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _same(a, b):
    assert len(a) == len(b)
    for da, db in zip(a, b):
        np.testing.assert_allclose(da.boxes_xyxy, db.boxes_xyxy, atol=1e-2)
        np.testing.assert_allclose(da.scores, db.scores, atol=1e-4)
        assert da.classes.tolist() == db.classes.tolist()


def test_fixed_batch_4_is_padded_and_only_real_outputs_kept(exported):
    fixed = load_backend(exported["batch4"], LOW_CONF, warmup_runs=1)
    dyn = load_backend(exported["dynamic"], LOW_CONF)
    assert (fixed.meta.batch, fixed.meta.hw, fixed.meta.input_dtype) == (4, (64, 64), "float32")
    assert dyn.meta.batch is None
    frames = _frames(5)
    got = fixed.infer(frames)
    assert len(got) == 5
    assert sum(len(d) for d in got) > 0
    _same(got, dyn.infer(frames))
    _same(fixed.infer(frames[:1]), dyn.infer(frames[:1]))


def test_rectangular_input_gets_a_rectangular_letterbox(exported, model):
    rect = load_backend(exported["rect"], LOW_CONF, warmup_runs=1)
    assert rect.meta.hw == (160, 256) and rect.meta.imgsz == 256 and rect.meta.batch == 1
    assert rect.meta.input_info() == {"hw": [160, 256], "batch": 1, "dtype": "float32"}
    frames = _frames(2, h=320, w=512)
    batch = letterbox_batch(frames, (160, 256))
    assert batch.shape == (2, 3, 160, 256)
    got = rect.infer(frames)
    model.eval()
    with torch.no_grad():
        raw = model(torch.from_numpy(batch))[0].numpy()
    _same(got, postprocess(raw, [f.shape[:2] for f in frames], (160, 256), 2, LOW_CONF))


def test_rectangular_boxes_map_back_to_original_pixels():
    raw = np.zeros((2, 5, 1), np.float32)
    raw[:, :4, 0] = (128, 80, 64, 32)  # xywh in the 160x256 letterboxed input
    raw[:, 4, 0] = 0.9
    one, two = postprocess(raw, [(320, 512), (100, 400)], (160, 256), 1, InferenceOptions())
    np.testing.assert_allclose(one.boxes_xyxy, [[192, 128, 320, 192]], atol=1e-3)
    # gain min(160/100, 256/400) = 0.64, vertical padding (160 - 64) / 2 = 48
    np.testing.assert_allclose(two.boxes_xyxy, [[150, 25, 250, 75]], atol=1e-3)


def _float16_input(src: Path, dst: Path) -> Path:
    """The same graph with a float16 input (a Cast to float32 in front), as a half export has."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(src))
    graph = proto.graph
    name = graph.input[0].name
    for node in graph.node:
        for i, value in enumerate(node.input):
            if value == name:
                node.input[i] = name + "_f32"
    graph.node.insert(0, helper.make_node("Cast", [name], [name + "_f32"], to=TensorProto.FLOAT))
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(proto, str(dst))
    return dst


def test_float16_input_is_fed_float16(exported, tmp_path):
    half = load_backend(_float16_input(exported["dynamic"], tmp_path / "half.onnx"), LOW_CONF, warmup_runs=1)
    assert half.meta.input_dtype == "float16"
    full = load_backend(exported["dynamic"], LOW_CONF)
    frames = _frames(2)
    got, want = half.infer(frames), full.infer(frames)
    assert len(got) == 2
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)


def _tiny_graph(path: Path, *, out_shape, elem=None, in_shape=(1, 3, 64, 64), metadata=None) -> Path:
    """A hand-made ONNX graph: images -> Cast -> ReduceMean -> Expand to ``out_shape``."""
    import onnx
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT if elem is None else elem
    shape = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], list(out_shape))
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Expand", ["m", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", elem, list(in_shape))],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out_shape))],
                              initializer=[shape])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    for key, value in (metadata or {}).items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("case,match", [
    ("garbage", "cannot load ONNX model"),
    ("truncated", "cannot load ONNX model"),
    ("text", "cannot load ONNX model"),
    ("classifier", r"output shape \[1, 10\] is not a YOLO detection head"),
    ("end2end", "end-to-end"),
    ("uint8", r"input element type tensor\(uint8\) is not supported"),
    ("grey", r"not an image batch \(N, 3, H, W\)"),
    ("segment", r"a segmentation model \(task 'segment' in its metadata\); edgecl runs object "
                r"detection models \(ultralytics DetectionModel: YOLOv5u/v8/v9/v10/11/12/26\)$"),
    ("class_mismatch", "output has 3 class channels but the metadata names 2 classes"),
])
def test_bad_onnx_files_are_refused_with_one_line(case, match, exported, tmp_path):
    from onnx import TensorProto

    path = tmp_path / f"{case}.onnx"
    if case == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "truncated":
        path.write_bytes(exported["dynamic"].read_bytes()[:50_000])
    elif case == "text":
        path.write_text("this is not a model\n")
    elif case == "classifier":
        _tiny_graph(path, out_shape=(1, 10))
    elif case == "end2end":
        _tiny_graph(path, out_shape=(1, 300, 6))
    elif case == "uint8":
        _tiny_graph(path, out_shape=(1, 6, 84), elem=TensorProto.UINT8)
    elif case == "grey":
        _tiny_graph(path, out_shape=(1, 6, 84), in_shape=(1, 1, 64, 64))
    elif case == "segment":
        _tiny_graph(path, out_shape=(1, 6, 84), metadata={"task": "segment"})
    else:
        _tiny_graph(path, out_shape=(1, 7, 84), metadata={"names": str(NAMES)})
    with pytest.raises(ModelLoadError, match=match) as info:
        load_backend(path, warmup_runs=1)
    assert "\n" not in str(info.value)


def test_model_that_fails_at_run_time_is_refused_at_warmup(tmp_path):
    """A graph that loads but cannot run (mismatched static shapes) fails warm-up with one line."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 6, 84])
    nodes = [helper.make_node("Reshape", ["images", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                         [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 84])],
                              initializer=[shape])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelLoadError, match="fails on a test frame") as info:
        load_backend(tmp_path / "m.onnx", warmup_runs=1)
    assert "\n" not in str(info.value)


def test_square_meta_defaults_stay_compatible():
    meta = ModelMeta(path="x", backend="fake", names={0: "a"}, imgsz=64)
    assert meta.hw == (64, 64) and meta.batch is None and meta.input_dtype == "float32"


def test_pt_checkpoint_and_yaml_load_and_warm(model, tmp_path):
    from edgecl.models.checkpoint import save_checkpoint

    pt = save_checkpoint(model, tmp_path / "m.pt", meta={"names": NAMES, "imgsz": 64})
    backend = load_backend(pt, LOW_CONF, warmup_runs=1)
    assert backend.meta.names == NAMES and backend.meta.hw == (64, 64)
    yaml_backend = load_backend("yolo11n.yaml", InferenceOptions(imgsz=64, threads=1), warmup_runs=1)
    assert yaml_backend.meta.hw == (64, 64)
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_backend(tmp_path / "bad.pt")


def test_end_to_end_rows_are_thresholded_sorted_and_mapped_back():
    raw = np.zeros((1, 4, 6), np.float32)
    raw[0, 0] = (96, 64, 160, 96, 0.5, 1)   # letterboxed 160x256 pixels
    raw[0, 1] = (0, 0, 32, 32, 0.9, 0)
    raw[0, 2] = (0, 0, 8, 8, 0.1, 0)       # below conf
    (det,) = postprocess(raw, [(320, 512)], (160, 256), 2, InferenceOptions(conf=0.25, max_det=5))
    assert det.scores.tolist() == pytest.approx([0.9, 0.5]) and det.classes.tolist() == [0, 1]
    np.testing.assert_allclose(det.boxes_xyxy, [[0, 0, 64, 64], [192, 128, 320, 192]], atol=1e-3)
    (top,) = postprocess(raw, [(320, 512)], (160, 256), 2, InferenceOptions(conf=0.25, max_det=1))
    assert top.scores.tolist() == pytest.approx([0.9])


def test_yolo26_end_to_end_export_loads_and_detects(tmp_path):
    torch.manual_seed(0)
    net = build_detection_model(2, cfg="yolo26n.yaml", names=dict(NAMES))
    net.task = "detect"
    path = export(net, tmp_path, "e2e.onnx", end2end=True)
    backend = load_backend(path, LOW_CONF, warmup_runs=1)
    assert backend.meta.names == NAMES
    (det,) = backend.infer(_frames(1))
    assert len(det) == 5 and (np.diff(det.scores) <= 0).all()
    assert det.boxes_xyxy.min() >= 0 and det.boxes_xyxy[:, [0, 2]].max() <= 200
    assert set(det.classes.tolist()) <= {0, 1}


@pytest.mark.parametrize("custom, match", [
    ({"imgsz": "1e999"}, "unreadable 'imgsz'"),
    ({"imgsz": "[64, 10**9]"}, "unreadable 'imgsz'"),
    ({"imgsz": str(10 ** 9)}, "unreadable 'imgsz'"),
    ({"names": '{1e999: "a"}'}, "unreadable 'names'"),
    ({"names": "-" * 200000 + "1"}, "unreadable 'names'"),
    ({"names": "[" * 100000 + "]" * 100000}, "unreadable 'names'"),
])
def test_odd_onnx_metadata_is_one_line(custom, match):
    from edgecl.models.onnx_backend import read_onnx_metadata

    with pytest.raises(ModelLoadError, match=match):  # before: OverflowError, MemoryError
        read_onnx_metadata(custom, [1, 3, "h", "w"], "m.onnx", None)


def test_nms_runs_on_one_torch_thread_and_leaves_the_count_as_it_was(monkeypatch):
    """NMS of a frame is too small to share between threads (waking the pool's other threads
    cost ~10 ms per frame on a busy CPU): it runs on one, and the caller's count comes back."""
    import torch
    import ultralytics.utils.nms as nms_module

    seen = []
    real = nms_module.non_max_suppression

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(nms_module, "non_max_suppression", spy)
    raw = np.zeros((1, 5, 21), np.float32)
    raw[0, :4, 0], raw[0, 4, 0] = (50, 40, 20, 10), 0.9
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (det,) = postprocess(raw, [(160, 256)], (160, 256), 1, InferenceOptions())
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(det.scores) == 1 and det.scores[0] == pytest.approx(0.9)


# --- exports of other kinds of models: the same one line as a .pt checkpoint of that kind -------

DETECTION_ONLY = ("edgecl runs object detection models "
                  "(ultralytics DetectionModel: YOLOv5u/v8/v9/v10/11/12/26)")


@pytest.mark.parametrize("metadata, what", [
    ({"task": "pose"}, "a pose model (task 'pose' in its metadata)"),
    ({"task": "obb"}, "an oriented-box (OBB) model (task 'obb' in its metadata)"),
    ({"task": "classify"}, "a classification model (task 'classify' in its metadata)"),
    ({"task": "detect", "head": "RTDETRDecoder"},  # RT-DETR exports say task 'detect'
     "an RT-DETR transformer detector (head 'RTDETRDecoder' in its metadata)"),
])
def test_onnx_of_another_task_is_refused_like_a_checkpoint(tmp_path, metadata, what, run_edgecl):
    path = _tiny_graph(tmp_path / "m.onnx", out_shape=(1, 300, 6), metadata=metadata)
    with pytest.raises(ModelLoadError) as info:
        load_backend(path)
    assert str(info.value) == f"cannot load {path}: {what}; {DETECTION_ONLY}"
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", path])
    assert (code, err) == (2, f"error: cannot load {path}: {what}; {DETECTION_ONLY}\n")


def test_ultralytics_onnx_export_of_a_pose_model_is_refused(tmp_path, run_edgecl):
    """An ONNX file exported by ultralytics' own Exporter from a (tiny) pose model."""
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(0)
    pose = PoseModel("yolo11n-pose.yaml", nc=1, verbose=False)
    pose.names, pose.task = {0: "person"}, "pose"
    path = export(pose, tmp_path, "pose.onnx")
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", path])
    assert (code, err) == (2, f"error: cannot load {path}: a pose model (task 'pose' in its "
                              f"metadata); {DETECTION_ONLY}\n")


def test_a_segmentation_onnx_without_its_metadata_is_refused_not_served(tmp_path, monkeypatch):
    """Before: with its metadata stripped, a segmentation export's first output (4 + nc + 32
    mask coefficients) was read as a detector of nc + 32 classes and served."""
    import onnx
    from ultralytics import YOLO

    from edgecl.ultra import ensure_offline

    ensure_offline()
    monkeypatch.chdir(tmp_path)  # the export lands in the working folder
    exported = YOLO("yolo11n-seg.yaml").export(format="onnx", imgsz=64, verbose=False)
    stripped = onnx.load(exported)
    del stripped.metadata_props[:]
    onnx.save(stripped, tmp_path / "seg.onnx")
    with pytest.raises(ModelLoadError) as err:
        load_backend(tmp_path / "seg.onnx", InferenceOptions())
    assert str(err.value) == (
        f"{tmp_path / 'seg.onnx'}: 2 outputs (output0 [1, 116, 84], output1 [1, 32, 16, 16]): a "
        f"segmentation model's mask prototypes or another kind of model; edgecl serves object "
        f"detectors, whose export has one output")


@pytest.mark.parametrize("yaml_name", ["yolo11n-pose.yaml", "yolo11n-obb.yaml"])
def test_a_pose_or_obb_onnx_without_its_metadata_is_refused_not_served(tmp_path, monkeypatch,
                                                                        yaml_name):
    """Before: with its metadata stripped (a graph tool drops it), a pose export was served as
    a detector of 131 classes, an OBB one of 81: keypoint and angle channels read as classes.
    A detector's export stripped alike still loads."""
    import onnx
    from ultralytics import YOLO

    from edgecl.ultra import ensure_offline

    ensure_offline()
    monkeypatch.chdir(tmp_path)  # the export lands in the working folder
    for name, yaml in (("other.onnx", yaml_name), ("detector.onnx", "yolo11n.yaml")):
        stripped = onnx.load(YOLO(yaml).export(format="onnx", imgsz=64, verbose=False))
        del stripped.metadata_props[:]
        onnx.save(stripped, tmp_path / name)
    with pytest.raises(ModelLoadError) as err:
        load_backend(tmp_path / "other.onnx", InferenceOptions())
    assert str(err.value) == (
        f"{tmp_path / 'other.onnx'}: a pose or OBB model (its head has a keypoint or angle "
        f"branch beside the boxes and classes), its export's metadata stripped; {DETECTION_ONLY}")
    assert len(load_backend(tmp_path / "detector.onnx", InferenceOptions(imgsz=64)).meta.names) == 80


def test_every_backend_refuses_a_model_with_more_than_one_output(tmp_path):
    """The rule the ONNX, OpenVINO and TensorRT backends share (a segmentation engine's second
    output holds its mask prototypes); tested here without TensorRT, which this machine lacks."""
    from types import SimpleNamespace

    from edgecl.models.onnx_backend import refuse_extra_outputs
    from edgecl.models.tensorrt_backend import _name_io

    refuse_extra_outputs(["output0 [1, 84, 8400]"], tmp_path / "m.onnx")  # a detector: fine
    with pytest.raises(ModelLoadError, match=r"^engine: 2 outputs \(output0, output1\): a "
                                             r"segmentation model's mask prototypes"):
        _name_io(SimpleNamespace(), ["images"], ["output0", "output1"])
    io = SimpleNamespace()
    _name_io(io, ["images"], ["output0"])
    assert (io.input_name, io.output_name) == ("images", "output0")


def test_a_folder_given_as_the_model_says_so_and_names_the_model_inside(tmp_path, run_edgecl):
    """Before: 'model file not found' for a folder that is there (an ultralytics OpenVINO export
    is a folder), and 'models add' named the file twice in one line."""
    export = tmp_path / "best_openvino_model"
    export.mkdir()
    (export / "best.xml").write_text("<net/>")
    with pytest.raises(ModelLoadError) as err:
        load_backend(export, InferenceOptions())
    assert str(err.value) == (f"{export} is a folder, not a model file: give the model file in "
                              f"it ({export / 'best.xml'})")
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", export])
    assert (code, err) == (2, f"error: cannot add: {export} is a folder, not a model file: give "
                              f"the model file in it ({export / 'best.xml'})\n")
    (tmp_path / "bad.pt").write_bytes(b"x")
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", tmp_path / "bad.pt"])
    assert code == 2 and err.count(str(tmp_path / "bad.pt")) == 1 and err.startswith("error: cannot add: ")


def test_an_onnx_with_external_weights_is_staged_as_one_file_that_serves(exported, tmp_path,
                                                                          run_edgecl):
    """Before: only the .onnx was copied into the version; its weights file stayed behind, and
    the promoted version could not load ("External data path validation failed")."""
    import onnx

    from edgecl.models.registry import Registry

    src = tmp_path / "user"
    src.mkdir()
    proto = onnx.load(str(exported["rect"]))
    onnx.save(proto, str(src / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    assert (src / "ext.onnx.data").stat().st_size > (src / "ext.onnx").stat().st_size
    state = tmp_path / "state"
    code, out, err = run_edgecl(["models", "add", "--state-dir", state, "--promote", src / "ext.onnx"])
    assert code == 0, err
    (src / "ext.onnx.data").unlink()  # the user's folder is gone: the version holds what it needs
    version = state / "models" / "v0001"
    assert sorted(Registry(state / "models").manifest("v0001")["files"]) == ["model.onnx"]
    staged = onnx.load(str(version / "model.onnx"), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in staged.graph.initializer)
    frame = _frames(1)[0]
    original = load_backend(exported["rect"], LOW_CONF).infer([frame])
    served = load_backend(version / "model.onnx", LOW_CONF).infer([frame])
    assert len(served[0].scores) > 0
    _same(original, served)
    code, out, err = run_edgecl(["models", "verify", "--state-dir", state, "--all"])
    assert code == 0, err
    with pytest.raises(ModelLoadError, match=r"^cannot load ONNX model .*ext.onnx: a weights file "
                                             r"it names \(external data\) is missing, or lies "
                                             r"outside its folder"):
        load_backend(src / "ext.onnx")  # its data file was removed above


def test_a_model_whose_weights_hold_nan_is_refused_before_it_serves(model, exported, tmp_path,
                                                                    run_edgecl):
    """Before: a checkpoint of NaN weights (a float16 overflow) was promoted and served; it
    detected nothing, and every round failed with 'nan_loss'."""
    import copy

    import onnx
    from onnx import numpy_helper

    from edgecl.models.checkpoint import save_checkpoint

    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    pt = save_checkpoint(broken, tmp_path / "nan.pt", meta={"names": dict(NAMES), "imgsz": 64})
    proto = onnx.load(str(exported["dynamic"]))
    first = proto.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(
        np.full_like(numpy_helper.to_array(first), np.inf), first.name))
    inf_onnx = tmp_path / "inf.onnx"
    onnx.save(proto, str(inf_onnx))
    saturated = copy.deepcopy(model)  # +inf in a class bias: the sigmoid makes it a finite 1
    with torch.no_grad():
        saturated.model[-1].cv3[0][-1].bias[0] = float("inf")
    inf_bias = save_checkpoint(saturated, tmp_path / "inf_bias.pt",
                               meta={"names": dict(NAMES), "imgsz": 64})
    for path, tensor in ((pt, "model.0.conv.weight"), (inf_onnx, first.name),
                         (inf_bias, "model.23.cv3.0.2.bias")):
        state = tmp_path / f"state-{path.stem}"
        code, out, err = run_edgecl(["models", "add", "--state-dir", state, "--promote", path])
        assert code == 2 and err.count("\n") == 1, err
        assert err == (f"error: cannot add: {path}: its weights hold NaN or infinity (in "
                       f"{tensor}): they are damaged (a float16 overflow in training, say)\n")
        assert not (state / "models" / "v0001").exists()
        with pytest.raises(ModelLoadError, match="NaN or infinity"):
            load_backend(path, LOW_CONF, warmup_runs=1)


def test_a_model_whose_weights_file_is_zero_filled_is_refused_before_it_serves(model, exported,
                                                                              tmp_path, run_edgecl):
    """Before: an ONNX model whose external data file a card fault zero-filled (same size) was
    staged ("staged v0001") and served: finite outputs, so the NaN check passed it, and it
    detected nothing."""
    import copy

    import onnx

    from edgecl.models.checkpoint import save_checkpoint

    src = tmp_path / "user"
    src.mkdir()
    onnx.save(onnx.load(str(exported["rect"])), str(src / "ext.onnx"), save_as_external_data=True,
              location="ext.onnx.data", size_threshold=0)
    data = src / "ext.onnx.data"
    size = data.stat().st_size
    data.write_bytes(b"")
    with open(data, "wb") as fh:
        fh.truncate(size)  # zeros, as a card fault leaves them
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for p in zeroed.parameters():
            p.zero_()
    pt = save_checkpoint(zeroed, tmp_path / "zero.pt", meta={"names": dict(NAMES), "imgsz": 64})
    for path in (src / "ext.onnx", pt):
        state = tmp_path / f"state-{path.stem}"
        code, out, err = run_edgecl(["models", "add", "--state-dir", state, path])
        assert code == 2 and err.count("\n") == 1, err
        assert "its weights are zero-filled (every value of " in err and "is 0): the file is " \
            "damaged" in err
        assert not (state / "models" / "v0001").exists()
    load_backend(exported["rect"], LOW_CONF, warmup_runs=1)  # a trained model passes


def test_zeroed_kernel_names_the_first_kernel_of_zeros_only():
    from edgecl.models.checkpoint import zeroed_kernel

    kernel = np.ones((4, 3, 3, 3), np.float32)
    assert zeroed_kernel([("a", kernel), ("b", np.zeros_like(kernel))]) == "b"
    assert zeroed_kernel([("int8", np.zeros((4, 3, 3, 3), np.int8))]) is None  # rounded to 0
    assert zeroed_kernel([("bias", np.zeros(64, np.float32)),  # not a kernel
                          ("tiny", np.zeros((1, 1, 2, 2), np.float32)),  # under 64 values
                          ("a", kernel)]) is None


def test_a_model_naming_a_class_twice_is_refused_without_advice_that_cannot_help(tmp_path,
                                                                               run_edgecl):
    """Before: '... car name more than one id; use a model trained with these class ids, or
    another --state-dir' (no other state directory takes a model that names car twice)."""
    path = _tiny_graph(tmp_path / "dup.onnx", out_shape=(1, 7, 84),
                       metadata={"names": str({0: "car", 1: "truck", 2: "car"})})
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    code, out, err = run_edgecl(["run", "--state-dir", tmp_path / "state", "--model", path,
                                 "--source", f"dir://{frames}", "server.enabled=false",
                                 "model.imgsz=64"])
    assert code == 2
    assert err == "error: the model dup.onnx: class names are not unique: car names ids 0 and 2\n"


def test_a_model_and_a_labelled_folder_that_disagree_on_a_new_device_are_named(tmp_path,
                                                                               run_edgecl):
    """Before: '... but this device's class registry has 'car' there ...; use a model trained
    with these class ids, or another --state-dir' on a device with no registry at all: the
    clash was with the folder's data.yaml, and no other state directory helps."""
    import cv2

    path = _tiny_graph(tmp_path / "m.onnx", out_shape=(1, 6, 84),
                       metadata={"names": str({0: "person", 1: "car"})})
    folder = tmp_path / "folder"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    cv2.imwrite(str(folder / "images" / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    (folder / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (folder / "data.yaml").write_text("train: images\nval: images\nnames: [car, person]\n")
    code, out, err = run_edgecl(["run", "--state-dir", tmp_path / "state", "--model", path,
                                 "--source", f"dir://{folder}", "server.enabled=false",
                                 "model.imgsz=64"])
    assert code == 2
    # the model first, then the folder by name (before: 'import the folder' alone, which gave
    # the folder's order the ids and locked the model out of the device for good)
    assert err == (f"error: the model m.onnx: class id 0 is 'person', but the labels of "
                   f"dir://{folder} give 'car' there and 'person' as id 1; give the device the "
                   f"model first ('edgecl models add {path} --promote --state-dir "
                   f"{tmp_path / 'state'}'), then import the folder with 'edgecl labels import' "
                   f"(it maps classes by name onto the model's ids), or use a model trained "
                   f"with these class ids\n")
    assert not (tmp_path / "state").exists()


def test_a_checkpoint_named_onnx_is_said_to_be_a_checkpoint(model, tmp_path):
    """Before: 'cannot load ONNX model x.onnx: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF ...'."""
    from edgecl.models.checkpoint import save_checkpoint

    pt = save_checkpoint(model, tmp_path / "m.pt", meta={"names": dict(NAMES), "imgsz": 64})
    misnamed = tmp_path / "model.onnx"
    misnamed.write_bytes(pt.read_bytes())
    with pytest.raises(ModelLoadError) as info:
        load_backend(misnamed)
    assert str(info.value) == (f"cannot load ONNX model {misnamed}; it is a PyTorch checkpoint "
                               f"(a zip archive): name it .pt")
    xml = tmp_path / "ir.onnx"
    xml.write_text('<?xml version="1.0"?>\n<net name="x"/>\n')
    with pytest.raises(ModelLoadError, match=r"; it is an XML file \(an OpenVINO model is named "
                                             r"\.xml, its weights \.bin\)$"):
        load_backend(xml)


@pytest.fixture(scope="module")
def nms_inside(model, tmp_path_factory):
    """An ONNX export with NMS inside (ultralytics' ``nms=True``) at conf 0.4."""
    return export(model, tmp_path_factory.mktemp("nms"), "nms.onnx", nms=True, conf=0.4)


def test_nms_built_into_an_export_names_its_score_threshold(nms_inside, caplog):
    """Before: a model exported with nms=True kept only scores above its export's conf, and a
    lower model.conf (or a labels' uncertain band below it) silently found nothing there."""
    backend = load_backend(nms_inside, InferenceOptions(conf=0.1, threads=1), warmup_runs=1)
    assert backend.meta.extra["nms_score_threshold"] == pytest.approx(0.4)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{nms_inside} runs NMS inside itself (exported with nms=True) and keeps only scores "
        f"above 0.4: model.conf=0.1 finds nothing more below that; export it with nms=False "
        f"to use a lower threshold"]
    assert backend.meta.extra["nms_score_threshold"] == 0.4, "as exported, not float32's 0.40000000596"
    for conf in (0.5, 0.4):
        caplog.clear()
        load_backend(nms_inside, InferenceOptions(conf=conf, threads=1), warmup_runs=1)
        assert not [r for r in caplog.records if r.levelname == "WARNING"], "at or above it: silent"


def test_a_raw_head_has_no_built_in_score_threshold(exported):
    assert "nms_score_threshold" not in load_backend(exported["dynamic"], LOW_CONF).meta.extra


def test_built_in_score_threshold_needs_exactly_one_comparison_in_0_1():
    from edgecl.models.onnx_backend import built_in_score_threshold

    assert built_in_score_threshold([0.25]) == 0.25
    assert built_in_score_threshold([0.0, 2.0, 0.4]) == 0.4
    assert built_in_score_threshold([]) is None
    assert built_in_score_threshold([0.3, 0.5]) is None, "two candidates: it cannot tell which"


def test_an_openvino_ir_with_nms_inside_names_its_score_threshold(nms_inside):
    import openvino as ov

    ir = ov.convert_model(str(nms_inside))
    ir.set_rt_info("YOLO", ["model_info", "model_type"])
    ir.set_rt_info(list(NAMES.values()), ["model_info", "labels"])
    xml = nms_inside.parent / "ir" / "model.xml"
    ov.save_model(ir, str(xml), compress_to_fp16=True)
    backend = load_backend(xml, InferenceOptions(conf=0.1, threads=1), warmup_runs=1)
    assert backend.meta.extra["nms_score_threshold"] == pytest.approx(0.4, abs=1e-3)


def test_a_model_yaml_that_cannot_be_parsed_is_said_with_its_line(tmp_path):
    """Before: "cannot build model from bad.yaml: ScannerError: while scanning for the next
    token", which names neither the line nor the tab."""
    from edgecl.errors import ModelLoadError
    from edgecl.models.backends import load_backend

    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 2\nbackbone:\n\t- [-1, 1, Conv, [16, 3, 2]]\n")
    with pytest.raises(ModelLoadError) as caught:
        load_backend(bad, InferenceOptions(imgsz=64, threads=1), warmup_runs=1)
    assert str(caught.value) == (f"cannot read the model yaml {bad} at line 3: found character "
                                 f"'\\t' that cannot start any token")


@pytest.mark.parametrize("name, says", [
    ("data.yaml", "is no ultralytics model yaml (no 'backbone' and 'head' layers: a dataset's "
                  "data.yaml?); give a detector's, e.g. yolo11n.yaml"),
    ("yolov8s-worldv2.yaml", "builds a WorldDetect head, not an object detector's Detect: "
                             "edgecl learns object detection models (e.g. yolo11n.yaml)"),
])
def test_a_yaml_that_builds_no_detector_is_said_so(tmp_path, name, says):
    """Before: ultralytics' own errors: "cannot build model from data.yaml: KeyError: 'backbone'"
    for a dataset's data.yaml given as --model, "TypeError: C2fAttn.forward() missing 1 required
    positional argument: 'guide'" for a YOLO-World yaml."""
    from edgecl.errors import ModelLoadError
    from edgecl.models.backends import load_backend

    path = name
    if name == "data.yaml":
        path = tmp_path / name
        path.write_text("names: [car]\ntrain: images\nval: images\n")
    with pytest.raises(ModelLoadError) as caught:
        load_backend(path, InferenceOptions(imgsz=64, threads=1), warmup_runs=1)
    assert str(caught.value) == f"{path} {says}"


@pytest.mark.parametrize("odd", ["fifo", "loop"])
def test_a_model_file_that_is_no_regular_file_says_what_it_is(tmp_path, run_edgecl, odd):
    """Before: 'checkpoint not found' / 'cannot add f.pt: file not found' for a FIFO that is
    there, or a link that loops."""
    import os

    from edgecl.models.checkpoint import load_checkpoint

    path = tmp_path / "best.pt"
    if odd == "fifo":
        os.mkfifo(path)
        why = f"{path} is not a regular file (a FIFO, a device or a socket)"
    else:
        path.symlink_to(path.name)
        why = f"{path} is a symbolic link that loops (following it never ends at a file or folder)"
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(path)
    assert str(err.value) == why
    with pytest.raises(ModelLoadError) as err:
        load_backend(path, InferenceOptions())
    assert str(err.value) == f"model file {why}"
    code, _, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", path])
    assert (code, err) == (2, f"error: cannot add: {why}\n")
    assert not (tmp_path / "s").exists()


def test_an_onnx_whose_weights_file_is_a_pipe_says_so(exported, tmp_path):
    """Before: 'a weights file it names (external data) is missing, or lies outside its folder'
    (or onnxruntime's own lines)."""
    import os

    import onnx

    onnx.save(onnx.load(str(exported["rect"])), str(tmp_path / "e.onnx"),
              save_as_external_data=True, location="e.onnx.data", size_threshold=0)
    (tmp_path / "e.onnx.data").unlink()
    os.mkfifo(tmp_path / "e.onnx.data")
    with pytest.raises(ModelLoadError, match=r"its weights file e.onnx.data \(external data\) is "
                                             r"a named pipe \(FIFO\), not a regular file$"):
        load_backend(tmp_path / "e.onnx")
