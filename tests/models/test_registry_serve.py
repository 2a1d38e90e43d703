"""Registry.model_path serves the manifest's ``serve`` choice (a TensorRT engine still first)."""

from edgecl.models.registry import MODEL_PREFERENCE, Registry


def _files(tmp_path, names):
    out = {}
    for name in names:
        path = tmp_path / "src" / name.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        out[name] = path
    return out


def test_serve_entry_wins_over_suffix_order(tmp_path):
    reg = Registry(tmp_path / "models")
    files = _files(tmp_path, ["model.pt", "model.onnx", "openvino/model.xml", "openvino/model.bin",
                              "openvino-int8/model.xml", "openvino-int8/model.bin"])
    v = reg.stage(files, {"serve": "openvino-int8/model.xml"})
    assert reg.model_path(v) == reg.root / v / "openvino-int8" / "model.xml"
    assert reg.model_path(v, (".onnx", ".pt")) == reg.root / v / "model.onnx"  # .xml not wanted


def test_engine_still_first_and_no_serve_keeps_the_old_order(tmp_path):
    reg = Registry(tmp_path / "models")
    files = _files(tmp_path, ["model.onnx", "model.engine", "openvino/model.xml", "openvino/model.bin"])
    v = reg.stage(files, {"serve": "openvino/model.xml"})
    assert reg.model_path(v).name == "model.engine"
    plain = reg.stage(_files(tmp_path, ["model.onnx", "model.pt"]), {})
    assert reg.model_path(plain).name == "model.onnx"
    assert MODEL_PREFERENCE[0] == ".engine"


def test_serve_naming_a_file_the_version_lacks_is_ignored(tmp_path):
    reg = Registry(tmp_path / "models")
    v = reg.stage(_files(tmp_path, ["model.onnx"]), {"serve": "openvino-int8/model.xml"})
    assert reg.model_path(v).name == "model.onnx"


def test_watcher_prefers_what_the_registry_prefers(tmp_path):
    from edgecl.models.base import InferenceOptions
    from edgecl.runtime.watcher import ModelWatcher

    watcher = ModelWatcher(Registry(tmp_path / "models"), InferenceOptions(), None)
    assert watcher.prefer == MODEL_PREFERENCE and ".xml" in watcher.prefer


def test_an_ir_is_not_served_where_openvino_is_missing(tmp_path, monkeypatch):
    import importlib.util

    reg = Registry(tmp_path / "models")
    files = _files(tmp_path, ["model.pt", "model.onnx", "openvino-int8/model.xml",
                              "openvino-int8/model.bin"])
    v = reg.stage(files, {"serve": "openvino-int8/model.xml"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    assert reg.model_path(v) == reg.root / v / "model.onnx"
