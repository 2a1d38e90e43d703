"""A fleet keeps the architecture of the model it starts from (a YOLOv8 start stays a YOLOv8,
through the saved global model, a restarted server and the devices), refuses a start it cannot
fine-tune (an end-to-end head) in one line, and refuses weights of another architecture with a
named reason instead of an internal error."""

import numpy as np
import pytest

from edgecl.continual.federated import is_class_row_key
from edgecl.errors import EdgeclError
from edgecl.fleet.store import GlobalStore
from edgecl.fleet.weights import (
    ArchitectureMismatch,
    arch_label,
    build_model,
    global_from_checkpoint,
    head_problem,
    model_arch,
    model_arrays,
    same_arch,
)
from edgecl.models.checkpoint import save_checkpoint
from edgecl.ultra import build_detection_model

NAMES = {0: "car", 1: "person"}


@pytest.fixture(scope="module")
def v8_checkpoint(tmp_path_factory):
    """A freshly built yolov8n (2 classes) saved as a checkpoint, as a user's would be."""
    model = build_detection_model(2, cfg="yolov8n.yaml", names=dict(NAMES))
    path = tmp_path_factory.mktemp("ckpt") / "yolov8n_2.pt"
    save_checkpoint(model, path, meta={"names": dict(NAMES)})
    return path, model


def test_a_yolov8_start_keeps_its_architecture_through_the_saved_global_model(v8_checkpoint, tmp_path):
    path, original = v8_checkpoint
    arrays, names, arch = global_from_checkpoint(path)
    assert names == ["car", "person"] and arch["yaml_file"] == "yolov8n.yaml"
    assert not same_arch(arch, None) and head_problem(arch) is None
    store = GlobalStore(tmp_path / "fleet")
    store.save(1, arrays, names, arch)
    rnd, loaded, loaded_names, loaded_arch = store.load(with_arch=True)
    assert rnd == 1 and loaded_arch == arch and len(store.load()) == 3  # load() keeps its shape
    # a device rebuilds it with its own class ids; a class it adds gets a fresh row
    model = build_model(loaded, loaded_names, {0: "person", 1: "car", 2: "truck"}, arch=loaded_arch)
    assert type(model.model[-1]).__name__ == "Detect" and same_arch(model_arch(model), arch)
    out = model_arrays(model)
    assert set(out) == set(model_arrays(original))
    shared = [k for k in arrays if not is_class_row_key(k)]
    assert all(np.array_equal(out[k], arrays[k]) for k in shared)
    row = next(k for k in arrays if is_class_row_key(k) and k.endswith(".bias"))
    np.testing.assert_array_equal(out[row][:2], arrays[row][[1, 0]])
    with pytest.raises(ArchitectureMismatch, match="do not fit a yolo11n.yaml model"):
        build_model(loaded, loaded_names, dict(NAMES))  # before: an "internal error" ValueError


def test_a_restarted_server_sends_the_devices_the_saved_architecture(v8_checkpoint, tmp_path):
    pytest.importorskip("flwr")
    from edgecl.config import FleetConfig
    from edgecl.fleet import wire
    from edgecl.fleet.strategy import RefusedReply, check_architecture, make_strategy

    arrays, names, arch = global_from_checkpoint(v8_checkpoint[0])
    store = GlobalStore(tmp_path / "fleet")
    store.save(2, arrays, names, arch)
    strategy = make_strategy(FleetConfig(min_devices=1), store)  # resumes from the store
    config = strategy._config(3, list(arrays))
    assert wire.loads(config["arch"])["yaml_file"] == "yolov8n.yaml"
    assert strategy.arch == arch and strategy.offset == 2
    yolo11 = model_arrays(build_model({}, [], dict(NAMES)))
    with pytest.raises(RefusedReply, match="not in the fleet's yolov8n.yaml model"):
        check_architecture(yolo11, arrays, arch)  # a device that ran another architecture
    check_architecture(dict(arrays), arrays, arch)  # its own: fine


def test_an_end_to_end_start_keeps_its_head_and_another_task_is_refused(tmp_path):
    """A YOLO26 start (end-to-end head) keeps its architecture, as the fine-tuner trains such
    heads; a yaml whose head is not a detection head is refused in one line, before any
    process or output folder exists."""
    model = build_detection_model(2, cfg="yolo26n.yaml", names=dict(NAMES))
    path = save_checkpoint(model, tmp_path / "yolo26n.pt", meta={"names": dict(NAMES)})
    arrays, names, arch = global_from_checkpoint(path)
    assert names == list(NAMES.values()) and arch_label(arch) == "yolo26n.yaml"
    assert head_problem(arch) is None and any("one2one_cv3" in k for k in arrays)
    pose = dict(model_arch(model), head=[*model_arch(model)["head"][:-1], [[16, 19, 22], 1, "Pose", [2]]])
    assert head_problem(pose) == ("is not a plain detection model (its head is Pose): fleet rounds "
                                  "fine-tune YOLO detectors; start from a YOLOv5u, v8, v9, v10, 11, "
                                  "12 or 26 detection checkpoint")
    store = GlobalStore(tmp_path / "fleet")  # a global model saved with such an architecture
    store.save(1, {"w": np.zeros(2, np.float32)}, ["car"], pose)  # stops the server at start
    pytest.importorskip("flwr")
    from edgecl.config import FleetConfig
    from edgecl.fleet.strategy import make_strategy

    with pytest.raises(EdgeclError, match=r"\(round 1, yolo26n.yaml\) is not a plain detection"):
        make_strategy(FleetConfig(), store)


def test_an_80_class_head_keeps_its_width_when_a_class_joins():
    """Ultralytics widens the class branch with the class count it is built for (80 classes: 80
    channels, not 64): a device adding an 81st class must not rebuild it 81 wide."""
    coco = {i: f"c{i}" for i in range(80)}
    arrays = model_arrays(build_model({}, [], coco))
    model = build_model(arrays, list(coco.values()), {**coco, 80: "forklift"})
    out = model_arrays(model)
    row = "model.23.cv3.0.2.weight"
    assert out[row].shape == (81, 80, 1, 1) and model.model[-1].nc == 81
    np.testing.assert_array_equal(out[row][:80], arrays[row])
    assert all(np.array_equal(out[k], v) for k, v in arrays.items() if not is_class_row_key(k))


def test_a_device_rejects_weights_of_another_architecture_in_one_line(v8_checkpoint, tmp_path):
    pytest.importorskip("flwr")
    from edgecl.config import load_config
    from edgecl.fleet.device import FleetDevice

    arrays, names, _ = global_from_checkpoint(v8_checkpoint[0])
    cfg = load_config(None, [f"state_dir={tmp_path}"])
    out = FleetDevice(cfg).adopt(arrays, names, 4)  # no architecture sent: yolo11n assumed
    assert out.status == "rejected" and out.version == ""
    assert out.reason.startswith("the weights do not fit a yolo11n.yaml model: ")
    assert "\n" not in out.reason
