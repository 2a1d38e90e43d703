"""A tiny learning round exports the CPU engines, gates the INT8 one and records what serves."""

from __future__ import annotations

import time

import pytest
import torch

from edgecl.config import load_config
from edgecl.continual.cpu_engines import ENGINE_FILES
from edgecl.continual.round import run_round
from edgecl.models.registry import Registry

IMGSZ = 64


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from edgecl.data.scenario import make_scenario

    return make_scenario(tmp_path_factory.mktemp("scn"), tasks=1, images_per_task=40, imgsz=IMGSZ,
                         seed=1)


def fill_memory(cfg, yaml_path):
    """Put a scenario's images (train + test, the memory picks held-out ones) into the memory."""
    from edgecl.continual.memory import Sample, memory_from_config
    from edgecl.data.images import read_image
    from edgecl.data.labels import label_path_for, read_yolo_labels
    from edgecl.data.task_sources import load_task_source

    taskset = load_task_source(yaml_path)
    memory = memory_from_config(cfg, dict(taskset.names))
    try:
        for task in taskset.tasks:
            for path in [*task.train, *task.test]:
                labels = read_yolo_labels(label_path_for(path)).labels
                memory.add(Sample(image=read_image(path), labels=labels, task=task.name,
                                  source=str(path)))
    finally:
        memory.close()


def tiny_round(state, scenario, *extra):
    cfg = load_config(None, [f"state_dir={state}", f"model.imgsz={IMGSZ}", f"learner.imgsz={IMGSZ}",
                             "learner.first_round_max_steps=2", "learner.batch=4",
                             "learner.bn_recalibration_batches=1", "memory.holdout_fraction=0.3",
                             "export.tensorrt=off", "export.int8_calibration_images=8", *extra])
    fill_memory(cfg, scenario)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run_round(cfg, reason="test")
    return result, time.perf_counter() - t0


def test_round_exports_openvino_and_records_what_serves(tmp_path, scenario):
    pytest.importorskip("openvino", reason="openvino is not installed")
    pytest.importorskip("nncf", reason="nncf is not installed")
    result, _ = tiny_round(tmp_path / "state", scenario)
    assert result.status.value == "staged", result.reason
    registry = Registry(tmp_path / "state" / "models")
    manifest = registry.manifest(result.version)
    files = set(manifest["files"])
    assert {"model.onnx", "openvino/model.xml", "openvino/model.bin"} <= files
    int8 = manifest["int8"]
    assert int8["engine"] == "openvino-int8" and isinstance(int8["accepted"], bool) and int8["reason"]
    assert int8["calibration_images"] == 8 and int8["held_out_images"] > 0
    if int8["accepted"]:
        assert manifest["serve"] == ENGINE_FILES["openvino-int8"]
        assert {"openvino-int8/model.xml", "openvino-int8/model.bin"} <= files
    else:  # an untrained 2-step model may well lose a class: FP32 serves, the reason says why
        assert manifest["serve"] == ENGINE_FILES["openvino"] and "openvino-int8/model.xml" not in files
        assert "class" in int8["reason"] or "no held-out" in int8["reason"]
    assert manifest["serve"] in files and manifest["serve_engine"] in ENGINE_FILES
    assert set(manifest["cpu_export_s"]) >= {"openvino", "quantize", "int8_gate"}
    assert registry.verify(result.version) == []
    assert registry.model_path(result.version) == registry.root / result.version / manifest["serve"]
    assert registry.model_path(result.version, (".onnx", ".pt")).name == "model.onnx"
    assert (tmp_path / "state" / "models" / result.version / "openvino" / "model.bin").is_file()
    from edgecl.models.backends import load_backend

    backend = load_backend(registry.model_path(result.version), warmup_runs=1)
    assert backend.meta.backend == "openvino" and backend.meta.hw == (IMGSZ, IMGSZ)
    backend.close()


def test_round_with_openvino_off_quantises_onnx(tmp_path, scenario, caplog):
    with caplog.at_level("INFO", logger="edgecl.continual.cpu_engines"):
        result, _ = tiny_round(tmp_path / "state", scenario, "export.openvino=off",
                               "export.int8_max_drop=1.0")
    manifest = Registry(tmp_path / "state" / "models").manifest(result.version)
    assert manifest["openvino"] == "not exported (export.openvino: off)"
    assert manifest["int8"]["engine"] == "onnx-int8" and manifest["int8"]["accepted"]
    assert manifest["serve"] == "model-int8.onnx" and "model-int8.onnx" in manifest["files"]
    # one line says what serves and the gate's verdict (before: the verdict twice, two lines)
    lines = [r.getMessage() for r in caplog.records if "INT8" in r.getMessage()]
    assert lines == [f"CPU engine served: model-int8.onnx; INT8 (onnx-int8): accepted by the gate: "
                     f"{manifest['int8']['reason']}"]


def test_round_with_cpu_engines_off_serves_onnx(tmp_path, scenario):
    result, _ = tiny_round(tmp_path / "state", scenario, "export.openvino=off", "export.cpu_int8=off")
    manifest = Registry(tmp_path / "state" / "models").manifest(result.version)
    assert manifest["serve"] == "model.onnx" and manifest["int8"]["accepted"] is False
    assert "export.cpu_int8: off" in manifest["int8"]["reason"]
    assert set(manifest["files"]) >= {"model.pt", "model.onnx"}
    assert not any("openvino" in name or "int8" in name for name in manifest["files"])


def test_where_a_tensorrt_engine_serves_auto_builds_no_cpu_engine(tmp_path):
    """Before: on a Jetson (openvino and nncf install there too) every round exported OpenVINO
    and quantised it with NNCF, on the board's CPU, for engines that never served. Decided on
    the engine the round did build: TensorRT that imports but builds nothing (no GPU visible,
    a build that failed) leaves the CPU engines as they were."""
    from types import SimpleNamespace

    from edgecl.continual import cpu_engines

    snapshot = SimpleNamespace(ids=lambda held_out: list(range(20)))
    cfg = load_config(None, [f"state_dir={tmp_path}"])
    files, meta = cpu_engines.export_cpu_engines(cfg, None, {0: "car"}, tmp_path / "model.onnx",
                                                 tmp_path, snapshot, engine_built=True)
    assert files == {} and meta["serve"] == "model.onnx"
    assert meta["openvino"] == "not exported (a TensorRT engine serves this version)"
    assert meta["int8"]["reason"] == "not built (a TensorRT engine serves this version)"


def test_a_round_whose_tensorrt_build_fails_still_exports_the_cpu_engines(tmp_path, scenario,
                                                                          monkeypatch):
    from edgecl.continual import round as round_mod

    seen = []

    def failed(ctx, onnx, names):
        seen.append(onnx)
        return None, {"engine": "build failed: no CUDA device is visible to torch"}

    monkeypatch.setattr(round_mod, "_maybe_engine", failed)
    result, _ = tiny_round(tmp_path / "state", scenario, "export.cpu_int8=off")
    manifest = Registry(tmp_path / "state" / "models").manifest(result.version)
    assert seen  # asked for, and it failed
    assert manifest["engine"].startswith("build failed")
    assert manifest["openvino"] in ("exported", "not exported (openvino not installed)")


def test_an_int8_engine_failing_at_inference_leaves_fp32_serving(tmp_path, scenario, monkeypatch):
    from edgecl.continual import cpu_engines

    real = cpu_engines.per_class_map

    def failing(path, *args, **kwargs):
        if "int8" in str(path):
            raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cpu_engines, "per_class_map", failing)
    result, _ = tiny_round(tmp_path / "state", scenario, "export.openvino=off")
    assert result.status.value == "staged", result.reason
    manifest = Registry(tmp_path / "state" / "models").manifest(result.version)
    assert manifest["int8"]["accepted"] is False and manifest["serve"] == "model.onnx"
    assert manifest["int8"]["reason"].startswith("evaluation failed: RuntimeError: Exception from")


def test_an_explicit_on_that_cannot_apply_is_refused_at_start(monkeypatch):
    from edgecl.config import load_config
    from edgecl.continual.cpu_engines import check_export_settings
    from edgecl.errors import ConfigError
    from edgecl.models import openvino_backend, quantize

    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    monkeypatch.setattr(quantize, "onnx_quantization_available", lambda: False)
    with pytest.raises(ConfigError, match="export.openvino is 'on' but the openvino package"):
        check_export_settings(load_config(None, ["export.openvino=on"]))
    with pytest.raises(ConfigError, match="export.cpu_int8 is 'on' but onnxruntime.quantization"):
        check_export_settings(load_config(None, ["export.cpu_int8=on"]))
    check_export_settings(load_config(None, []))  # auto adapts: nothing to refuse


def test_int8_gate_refuses_a_score_that_is_not_a_number():
    """A NaN drop compares False with every bound: a NaN FP32 score (or an infinite INT8 one)
    must refuse the INT8 engine, not pass it unmeasured."""
    from edgecl.continual.int8_gate import judge_int8

    names = {0: "car", 1: "truck"}
    verdict = judge_int8({0: 0.5, 1: float("nan")}, {0: 0.5, 1: 0.4}, 0.01, names)
    assert not verdict.accepted and verdict.reason.startswith("class truck: FP32 mAP50-95 is nan")
    assert not judge_int8({0: 0.5}, {0: float("inf")}, 0.01, names).accepted
    assert not judge_int8({0: 0.5}, {0: 0.5}, float("nan"), names).accepted
    assert judge_int8({0: 0.5}, {0: 0.495}, 0.01, names).accepted
