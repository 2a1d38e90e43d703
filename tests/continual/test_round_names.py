"""A round names its candidate's classes by the class registry, not by the parent's head."""

from pathlib import Path
from types import SimpleNamespace

from edgecl.continual.round import _load_parent
from edgecl.models.checkpoint import load_checkpoint, save_checkpoint
from edgecl.ultra import build_detection_model


def test_a_class_renamed_since_the_parent_carries_its_new_name(tmp_path):
    names = {0: "car", 1: "forklift"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "parent.pt",
                         meta={"names": names, "imgsz": 64})
    ctx = SimpleNamespace(parent_version="v0001", base_checkpoint=None,
                          registry=SimpleNamespace(file_path=lambda version, name: pt,
                                                   manifest=lambda version: {"parent": None}),
                          names={0: "car", 1: "lift_truck"})  # 'edgecl classes rename' since
    model, got = _load_parent(ctx)
    # before: the candidate kept 'forklift', the device showed it, an operator typed it, and
    # the registry grew a second class of that name
    assert got == {0: "car", 1: "lift_truck"} and model.names == got
    assert load_checkpoint(pt)[1]["names"] in (names, {"0": "car", "1": "forklift"})


def test_a_pretrained_start_whose_ids_name_other_classes_is_refused_in_one_line(tmp_path, caplog):
    """Labels imported before the user's checkpoint was given: the registry numbered Car 0,
    OtherVehicle 1, ...; the checkpoint's id 1 is 'person'. Its head row would have been
    renamed 'OtherVehicle' and promoted so; now the round names the disagreement instead."""
    import pytest

    from edgecl.errors import ConfigError

    names = {0: "Car", 1: "person", 2: "Bicycle"}
    pt = save_checkpoint(build_detection_model(3, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": 64})
    ctx = SimpleNamespace(parent_version=None, base_checkpoint=pt, registry=None,
                          names={0: "Car", 1: "OtherVehicle", 2: "Bicycle", 3: "person"},
                          cfg=SimpleNamespace(learner=SimpleNamespace(imgsz=64),
                                              state_dir=tmp_path))
    with pytest.raises(ConfigError) as err:
        _load_parent(ctx)
    assert str(err.value) == (
        f"model.path {pt}: class id 1 is 'person', but this device's class registry has "
        f"'OtherVehicle' there and 'person' as id 3; a checkpoint's classes keep their ids, so "
        f"give it to a new state directory first ('edgecl models add --promote yours.pt'), then "
        f"import the labels, which map classes by name")
    # before: where the current version holds only an exported engine, the same checkpoint
    # (model.path) was trained and promoted with its rows renamed, unchecked
    from edgecl.errors import RegistryError

    def engine_only(version, name):
        raise RegistryError(f"{version} has no {name}")

    engine = SimpleNamespace(**vars(ctx))
    engine.parent_version = "v0001"
    engine.registry = SimpleNamespace(file_path=engine_only, manifest=lambda v: {"parent": None})
    with pytest.raises(ConfigError) as err_engine:
        _load_parent(engine)
    assert str(err_engine.value) == str(err.value)
    ctx.names = {0: "Car", 1: "person"}  # agreeing ids, one class the checkpoint adds: fine
    assert _load_parent(ctx)[1] == names
    engine.names = ctx.names
    assert _load_parent(engine)[1] == names
    ctx.cfg.learner.imgsz = 160  # trained at 64 px: the round says it now serves 160 px
    with caplog.at_level("WARNING", logger="edgecl.continual.round"):
        _load_parent(ctx)
    assert any("was trained at 64 px; this round trains and exports at learner.imgsz=160 px"
               in r.getMessage() for r in caplog.records)


def test_learner_settings_the_model_cannot_take_are_refused_at_start(tmp_path):
    """IDER on a YOLO26 start, and freeze_layers past the current version's layers, failed
    every round (run) or after the round had started (learn); now one line at start."""
    import pytest

    from edgecl.config import load_config
    from edgecl.continual.round import check_start_model
    from edgecl.errors import ConfigError
    from edgecl.models.registry import Registry

    names = {0: "car"}
    e2e = save_checkpoint(build_detection_model(1, cfg="yolo26n.yaml", names=names),
                          tmp_path / "yolo26n.pt", meta={"names": names, "imgsz": 64})
    state = tmp_path / "state"
    cfg = load_config(None, [f"state_dir={state}", f"model.path={e2e}", "ider.enabled=true"])
    with pytest.raises(ConfigError, match="yolo26n.pt has an end-to-end head .* set ider.enabled: false"):
        check_start_model(cfg)
    check_start_model(load_config(None, [f"state_dir={state}", f"model.path={e2e}"]))
    pt = save_checkpoint(build_detection_model(1, names=names), tmp_path / "v11.pt",
                         meta={"names": names, "imgsz": 64})
    registry = Registry(state / "models")
    registry.promote(registry.add(pt))
    check_start_model(load_config(None, [f"state_dir={state}", "learner.freeze_layers=23"]))
    with pytest.raises(ConfigError, match=r"learner.freeze_layers=24 must be in 0..23 for "):
        check_start_model(load_config(None, [f"state_dir={state}", "learner.freeze_layers=24"]))


def test_a_start_from_scratch_is_warned_of_unless_model_path_asks_for_it(tmp_path, caplog):
    """The built-in demo's first round started with a WARNING that it learnt from scratch, which
    it does on purpose; a device whose checkpoint was not given as model.path is still warned."""
    import dataclasses
    import logging

    from edgecl.config import load_config

    untrained = save_checkpoint(build_detection_model(1, names={0: "car"}), tmp_path / "u.pt",
                                meta={"names": {0: "car"}, "imgsz": 64, "untrained": True})
    levels = []
    for path in ("", "yolo11n.yaml", str(untrained)):
        cfg = load_config()
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=path))
        snapshot = SimpleNamespace(records=lambda: [SimpleNamespace(classes=(0,))])
        ctx = SimpleNamespace(parent_version=None, base_checkpoint=None, registry=None,
                              names={0: "car"}, cfg=cfg, snapshot=snapshot)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgecl.continual.round"):
            _load_parent(ctx)
        levels.append([r.levelname for r in caplog.records if "starts from" in r.getMessage()])
    assert levels == [["WARNING"], ["INFO"], ["INFO"]]


def test_a_pretrained_start_fits_a_device_that_renamed_its_class_since(tmp_path):
    """Before: after 'classes rename car auto' every round on the checkpoint the device started
    from (model.path) failed: "class id 0 is 'car', but this device's class registry has 'auto'
    there", while the runtime's own check let the start pass."""
    from edgecl.models.classes import ClassRegistry

    names = {0: "car", 1: "person"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": 64})
    registry = ClassRegistry(tmp_path)
    registry.seed(names)
    registry.rename("car", "auto")
    ctx = SimpleNamespace(parent_version=None, base_checkpoint=pt, registry=None,
                          names=registry.names(),
                          cfg=SimpleNamespace(learner=SimpleNamespace(imgsz=64), state_dir=tmp_path))
    assert _load_parent(ctx)[1] == {0: "auto", 1: "person"}


def test_a_first_round_never_trains_its_own_model_in_place_of_the_one_given(tmp_path):
    """Before: with model.path (or 'run --model') naming an ONNX or OpenVINO export, a folder
    or a mistyped path, the first round trained a YOLO11n from scratch and the gate, with no
    earlier model to compare, promoted it over the model the user gave."""
    import dataclasses

    import pytest

    from edgecl.config import load_config
    from edgecl.continual.round import start_model_problem, unlearnable_current
    from edgecl.errors import EdgeclError

    (tmp_path / "two.onnx").write_bytes(b"onnx")
    (tmp_path / "two_openvino_model").mkdir()
    cases = {
        "typo.pt": f"model.path {tmp_path / 'typo.pt'}: no such file",
        "two.onnx": (f"the model {tmp_path / 'two.onnx'} is no .pt checkpoint (an exported "
                     f"engine?), which no round can fine-tune; set model.path to the "
                     f"ultralytics .pt checkpoint it was exported from (the engine serves all "
                     f"the same), or to yolo11n.yaml to learn a model of its own from scratch"),
        "~/two.pt": f"model.path {Path.home() / 'two.pt'}: no such file",  # ~ expanded
        "two_openvino_model": (f"the model {tmp_path / 'two_openvino_model'} is a folder; a "
                               f"round learns on top of an ultralytics .pt checkpoint: set "
                               f"model.path to one")}
    import os

    os.mkfifo(tmp_path / "fifo.pt")  # before: "no checkpoint": trained from scratch, promoted
    (tmp_path / "dev.pt").symlink_to("/dev/null")
    (tmp_path / "loop.pt").symlink_to("loop.pt")
    for odd in ("fifo.pt", "dev.pt"):
        cases[odd] = (f"model.path {tmp_path / odd}: not a regular file (a FIFO, a device or a "
                      f"socket); set it to the ultralytics .pt checkpoint file itself")
    cases["loop.pt"] = (f"model.path {tmp_path / 'loop.pt'} is a symbolic link that loops "
                        f"(following it never ends at a file or folder)")
    empty = SimpleNamespace(current=lambda: None)
    for name, said in cases.items():
        cfg = load_config(None, [f"model.path={name if name.startswith('~') else tmp_path / name}"])
        assert start_model_problem(cfg) == said
        assert unlearnable_current(cfg, empty) == said  # 'edgecl run' warns at start
        ctx = SimpleNamespace(parent_version=None, base_checkpoint=None, registry=None,
                              names={0: "car"}, cfg=cfg,
                              snapshot=SimpleNamespace(records=lambda: []))
        with pytest.raises(EdgeclError, match="model"):
            _load_parent(ctx)
    cfg = load_config()
    for path in ("", "yolo11n.yaml"):  # a start of its own, as asked
        assert start_model_problem(dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, path=path))) is None


def test_a_first_round_builds_the_model_yaml_it_was_given(tmp_path):
    """Before: every model yaml (``yolo11s.yaml``, a team's own file, a mistyped name) built a
    YOLO11n: a larger model asked for was silently the smallest."""
    import shutil

    import pytest

    import ultralytics

    from edgecl.config import load_config
    from edgecl.continual.round import start_model_problem
    from edgecl.errors import EdgeclError

    own = tmp_path / "our_net.yaml"
    shutil.copyfile(Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml", own)

    def parameters(model_path):
        cfg = load_config(None, [f"model.path={model_path}"])
        assert start_model_problem(cfg) is None
        ctx = SimpleNamespace(parent_version=None, base_checkpoint=None, registry=None,
                              names={0: "car", 1: "person"}, cfg=cfg,
                              snapshot=SimpleNamespace(records=lambda: [SimpleNamespace(
                                  classes=[0, 1])]))
        model, names = _load_parent(ctx)
        assert names == {0: "car", 1: "person"} and model.model[-1].nc == 2
        return sum(p.numel() for p in model.parameters())

    nano, small = parameters("yolo11n.yaml"), parameters("yolo11s.yaml")
    assert nano < 3_000_000 < 9_000_000 < small  # YOLO11n 2.6 M, YOLO11s 9.4 M parameters
    assert 2_900_000 < parameters(own) < 3_100_000  # YOLOv8n (its first scale), 3.0 M
    missing = load_config(None, [f"model.path={tmp_path / 'our_nett.yaml'}"])
    said = (f"model.path {tmp_path / 'our_nett.yaml'}: no such model yaml (neither a file nor "
            f"one of ultralytics' packaged models, such as yolo11n.yaml or yolo11s.yaml)")
    assert start_model_problem(missing) == said
    ctx = SimpleNamespace(parent_version=None, base_checkpoint=None, registry=None,
                          names={0: "car"}, cfg=missing, snapshot=SimpleNamespace(records=list))
    with pytest.raises(EdgeclError, match="no such model yaml"):
        _load_parent(ctx)

    dataset = tmp_path / "data.yaml"  # a dataset's yaml given as the model, a pose model, a typo
    dataset.write_text("path: .\ntrain: images\nnames: {0: car}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("backbone: [[-1, 1, Conv\n")
    for path, said in ((dataset, "is no ultralytics model yaml (no 'backbone' and 'head' layers: "
                                 "a dataset's data.yaml?); give a detector's, e.g. yolo11n.yaml"),
                       ("yolo11n-pose.yaml", "builds a Pose head, not an object detector's "
                                             "Detect: edgecl learns object detection models "
                                             "(e.g. yolo11n.yaml)"),
                       (broken, "cannot be read as a model yaml at line 2: expected ',' or ']', but "
                                "got '<stream end>'")):
        cfg = load_config(None, [f"model.path={path}"])
        assert start_model_problem(cfg) == f"model.path {path} {said}"  # before: every round
    assert start_model_problem(load_config(None, ["model.path=yolov10n.yaml"])) is None


def test_a_model_added_by_hand_is_warned_of_when_a_round_changes_its_size(tmp_path, caplog):
    """Before: only model.path's checkpoint was; a 128 px model staged with 'edgecl models add'
    was served at 160 px after the first round, unsaid."""
    import logging

    from edgecl.config import load_config

    names = {0: "car"}
    pt = save_checkpoint(build_detection_model(1, names=names), tmp_path / "v.pt",
                         meta={"names": names, "imgsz": 128})
    said = []
    for manifest in ({"classes": names}, {"parent": "v0001", "classes": names}):  # added, learnt
        ctx = SimpleNamespace(parent_version="v0002", base_checkpoint=None,
                              registry=SimpleNamespace(file_path=lambda version, name: pt,
                                                       manifest=lambda version, m=manifest: m),
                              names=names, cfg=load_config(None, ["learner.imgsz=160"]))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgecl.continual.round"):
            _load_parent(ctx)
        said.append([r.getMessage() for r in caplog.records])
    assert said == [["version v0002 (added with 'edgecl models add') was trained at 128 px; "
                     "this round trains and exports at learner.imgsz=160 px, and the device "
                     "serves that size from now on (set learner.imgsz: 128 to keep its size)"], []]


def test_a_p6_model_at_a_size_off_its_stride_is_refused_at_start(tmp_path):
    """Before: a P6 checkpoint (largest stride 64) with the default learner.imgsz=160 was
    accepted by 'run' and 'learn', and every round then failed."""
    import pytest

    from edgecl.config import load_config
    from edgecl.continual.round import check_start_model
    from edgecl.errors import ConfigError

    names = {0: "car"}
    p6 = save_checkpoint(build_detection_model(1, cfg="yolov8n-p6.yaml", names=names),
                         tmp_path / "p6.pt", meta={"names": names, "imgsz": 128})
    with pytest.raises(ConfigError) as err:
        check_start_model(load_config(None, [f"state_dir={tmp_path / 's'}", f"model.path={p6}"]))
    assert str(err.value) == ("learner.imgsz=160 is not a multiple of 64, the largest stride of "
                              "p6.pt (a P6 model): set learner.imgsz to 128 or 192")
    check_start_model(load_config(None, [f"state_dir={tmp_path / 's'}", f"model.path={p6}",
                                         "learner.imgsz=192"]))
