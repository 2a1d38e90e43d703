"""Which class names a runtime gives the device's class registry at start."""

import json

import pytest

from edgecl.config import load_config
from edgecl.data.scenario import make_scenario
from edgecl.errors import ConfigError
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.app import RunOptions, Runtime

IMGSZ = 64


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return make_scenario(tmp_path_factory.mktemp("scn"), tasks=2, images_per_task=8, imgsz=IMGSZ, seed=2)


def run(state, uri, model, *extra):
    cfg = load_config(None, [f"state_dir={state}", f"model.imgsz={IMGSZ}", "learner.enabled=false",
                             "runtime.warmup_runs=1", *extra])
    return Runtime(cfg, RunOptions(source_uri=uri, model=model, max_frames=2, quiet=True)).run()


def test_a_fresh_yaml_model_does_not_name_classes_but_the_labelled_source_does(tmp_path, scenario):
    run(tmp_path / "state", f"tasks://{scenario}", "yolo11n.yaml")
    names = ClassRegistry(tmp_path / "state").names()
    assert names == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}


def test_a_renamed_class_does_not_stop_the_next_start(tmp_path, scenario, caplog):
    import cv2
    import numpy as np

    from edgecl.bench.demo import initial_model
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    init = initial_model(scenario, tmp_path / "init.pt", IMGSZ)
    run(state, f"tasks://{scenario}?task=t1", str(init))
    registry = Registry(state / "models")
    registry.promote(registry.add(init))
    ClassRegistry(state).rename("truck", "lorry")
    camera = tmp_path / "camera"
    camera.mkdir()
    for i in range(2):
        cv2.imwrite(str(camera / f"{i}.jpg"), np.full((48, 64, 3), 90 + i, np.uint8))
    report = run(state, f"dir://{camera}", None)  # the current version still says 'truck'
    assert report.frames == 2 and ClassRegistry(state).names()[1] == "lorry"
    # the dataset's labels still call id 1 'truck': its boxes are the class, renamed (before,
    # the start was refused, and a device streaming its labelled folder never came back)
    report = run(state, f"tasks://{scenario}?task=t1", None)
    four = {0: "car", 1: "lorry", 2: "person", 3: "bicycle"}
    assert report.frames == 2 and ClassRegistry(state).names() == four
    assert ("class id 1 is 'truck', which this device renamed 'lorry': its boxes are read as "
            "'lorry'") in caplog.text
    # the device's own model file, made before the rename, is given again: before, refused as
    # naming id 1 'truck'; it is the same class
    report = run(state, f"dir://{camera}", str(init))
    assert report.frames == 2 and ClassRegistry(state).names()[1] == "lorry"
    # a name the rename freed is still another class's under another id
    ClassRegistry(state).rename("lorry", "van")
    ClassRegistry(state).add(["truck"])
    report = run(state, f"tasks://{scenario}?task=t1", None)
    assert report.frames == 2 and ClassRegistry(state).names() == {**four, 1: "van", 4: "truck"}


def test_a_conflicting_source_is_refused_before_anything_is_written(tmp_path, scenario):
    state = tmp_path / "state"
    state.mkdir()
    (state / "classes.json").write_text(json.dumps(
        {"format": 1, "classes": [{"id": 0, "name": "boat", "first_seen": "2026-01-01T00:00:00+00:00"}]}))
    with pytest.raises(ConfigError) as err:
        run(state, f"tasks://{scenario}", "yolo11n.yaml")
    assert "class id 0 is 'car'" in str(err.value) and "'boat'" in str(err.value)
    assert ClassRegistry(state).names() == {0: "boat"}


def test_a_checkpoint_given_with_model_names_the_classes_and_is_recorded_with_them(tmp_path):
    """A run with --model FILE.pt seeds the classes and records the file with them: a later
    round with neither a version nor model.path refuses to train from scratch over it (before,
    a YOLO11n from scratch was promoted over the team's checkpoint, with one warning)."""
    import cv2
    import numpy as np

    from edgecl.continual.round import scratch_problem
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car", 1: "truck"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "team.pt",
                         meta={"names": names, "imgsz": IMGSZ})
    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "0.jpg"), np.full((48, 64, 3), 90, np.uint8))
    state = tmp_path / "state"
    run(state, f"dir://{camera}", str(pt))
    assert ClassRegistry(state).seeding_checkpoint() == str(pt.absolute())
    cfg = load_config(None, [f"state_dir={state}"])
    assert scratch_problem(cfg).startswith(
        f"no round trains from scratch here: this device's classes came from the checkpoint "
        f"{pt.absolute()}")
    assert scratch_problem(load_config(None, [f"state_dir={state}", f"model.path={pt}"])) is None
    assert scratch_problem(load_config(None, [f"state_dir={state}",
                                              "model.path=yolo11n.yaml"])) is None
    from edgecl.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as err:  # a later start given no model: named
        run(state, f"dir://{camera}", None)
    assert str(err.value).startswith(f"no model: this device's classes came from the checkpoint "
                                     f"{pt.absolute()}; pass --model {pt.absolute()}")


def test_a_checkpoint_streaming_a_labelled_folder_is_recorded_with_its_classes(tmp_path,
                                                                                scenario):
    """Before: a labelled stream's data.yaml named the classes first, the checkpoint added none,
    so it was not recorded, and a later 'edgecl learn' trained a YOLO11n from scratch over it."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car", 1: "truck"}  # the scenario's first two classes, with its ids
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "team.pt",
                         meta={"names": names, "imgsz": IMGSZ})
    state = tmp_path / "state"
    run(state, f"tasks://{scenario}", str(pt))
    classes = ClassRegistry(state)
    assert classes.names() == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}
    assert classes.seeding_checkpoint() == str(pt.absolute())


def test_a_model_disagreeing_with_the_labelled_source_is_refused_before_anything_is_written(
        tmp_path, scenario):
    """The dataset's labels (car, truck, person, bicycle) and a checkpoint trained on other
    ids: the start is refused, and the registry of a fresh state directory stays empty (before,
    the source's names were written first)."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car", 1: "bicycle"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": IMGSZ})
    state = tmp_path / "state"
    with pytest.raises(ConfigError) as err:
        run(state, f"tasks://{scenario}", str(pt))
    assert str(err.value).startswith(f"the model yours.pt: class id 1 is 'bicycle', but the "
                                     f"labels of tasks://{scenario} give 'truck' there")
    assert ClassRegistry(state).names() == {}


def test_a_pretrained_model_added_to_the_registry_names_the_first_classes(tmp_path, scenario,
                                                                          capsys):
    import cv2
    import numpy as np

    from edgecl.bench.demo import initial_model
    from edgecl.cli import main

    state = tmp_path / "state"
    init = initial_model(scenario, tmp_path / "init.pt", IMGSZ)
    assert main(["models", "add", str(init), "--promote", "--state-dir", str(state),
                 f"model.imgsz={IMGSZ}"]) == 0
    # the registry takes the model's ids at once (before: at the next run only, so labels
    # imported in between were numbered afresh and the head's rows renamed)
    assert ClassRegistry(state).names() == {0: "car", 1: "truck"}
    camera = tmp_path / "camera"
    camera.mkdir()
    for i in range(2):
        cv2.imwrite(str(camera / f"{i}.jpg"), np.full((48, 64, 3), 90 + i, np.uint8))
    report = run(state, f"dir://{camera}", None)  # no --model: the registry's version serves
    assert report.frames == 2
    assert ClassRegistry(state).names() == {0: "car", 1: "truck"}  # before: none, and the
    # operator queue proposed classes by number


def test_models_add_refuses_a_model_whose_ids_name_other_classes(tmp_path, capsys):
    from edgecl.cli import main
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.models.registry import Registry
    from edgecl.ultra import build_detection_model

    state = tmp_path / "state"
    ClassRegistry(state).add(["car", "truck"])
    pt = save_checkpoint(build_detection_model(2, names={0: "boat", 1: "truck"}),
                         tmp_path / "other.pt", meta={"imgsz": IMGSZ})
    capsys.readouterr()
    assert main(["models", "add", str(pt), "--promote", "--state-dir", str(state),
                 f"model.imgsz={IMGSZ}"]) == 2  # before: served with boats named 'car'
    err = capsys.readouterr().err
    assert "class id 0 is 'boat', but this device's class registry has 'car' there" in err
    assert err.count("\n") == 1
    registry = Registry(state / "models")
    assert registry.current() is None and registry.versions() == []  # nothing staged


def test_a_staged_models_new_classes_join_the_registry_when_it_is_promoted(tmp_path, capsys):
    """Before: 'models add' of a candidate (staged only, for a trial) added its new classes to
    the device's registry for good; and a version staged by an add killed before it seeded the
    registry was promoted later (add again, 'models promote') with the registry left empty, so
    a later import numbered the classes afresh: the model's car was the registry's person."""
    from edgecl.cli import main
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.models.registry import Registry
    from edgecl.ultra import build_detection_model

    def checkpoint(name, names):
        return save_checkpoint(build_detection_model(len(names), names=names),
                               tmp_path / name, meta={"imgsz": IMGSZ})

    state = tmp_path / "state"
    first = checkpoint("first.pt", {0: "car", 1: "truck"})
    assert main(["models", "add", str(first), "--state-dir", str(state),
                 f"model.imgsz={IMGSZ}"]) == 0  # the first model names the device's classes
    assert ClassRegistry(state).names() == {0: "car", 1: "truck"}
    capsys.readouterr()
    trial = checkpoint("trial.pt", {0: "car", 1: "truck", 2: "boat"})
    assert main(["models", "add", str(trial), "--state-dir", str(state),
                 f"model.imgsz={IMGSZ}"]) == 0
    assert "class registry unchanged: 1 class(es) of the model (boat) join it when it is " \
           "promoted" in capsys.readouterr().out
    assert ClassRegistry(state).names() == {0: "car", 1: "truck"}
    assert main(["models", "promote", "v0002", "--state-dir", str(state)]) == 0
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "boat"}

    killed = tmp_path / "killed"  # staged, then killed before the registry was written
    version = Registry(killed / "models").add(first)
    assert ClassRegistry(killed).names() == {}
    assert main(["models", "add", str(first), "--promote", "--state-dir", str(killed),
                 f"model.imgsz={IMGSZ}"]) == 0
    assert Registry(killed / "models").current() == version
    assert ClassRegistry(killed).names() == {0: "car", 1: "truck"}

    other = tmp_path / "other"  # a registry that names the ids otherwise: nothing promoted
    Registry(other / "models").add(first)
    ClassRegistry(other).add(["truck"])
    capsys.readouterr()
    assert main(["models", "promote", "v0001", "--state-dir", str(other)]) == 2
    assert "class id 0 is 'truck' in the class registry but 'car' in the checkpoint" in \
        capsys.readouterr().err
    assert Registry(other / "models").current() is None


def test_labels_that_name_no_class_are_read_as_the_devices_classes_and_it_is_said(tmp_path,
                                                                                   caplog):
    """Before: a labelled folder without a data.yaml's names, streamed on a device with
    classes 'boat' and 'truck', had its class-0 boxes stored as boat, unsaid."""
    import cv2
    import numpy as np

    state = tmp_path / "state"
    ClassRegistry(state).add(["boat", "truck"])
    folder = tmp_path / "cam"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / "images" / f"{i}.jpg"), np.full((48, 64, 3), 90 + i, np.uint8))
        (folder / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    with caplog.at_level("WARNING"):
        report = run(state, f"dir://{folder}", "yolo11n.yaml")
    assert report.frames == 2
    assert ("name no class (no data.yaml names): their class ids are read as this device's "
            "classes (0 boat, 1 truck)") in caplog.text


def test_a_registry_that_cannot_be_written_is_a_storage_fault_not_a_class_mismatch(
        tmp_path, scenario, monkeypatch):
    """Before, a full card said 'cannot write the class registry ...: No space left on device;
    import the folder with 'edgecl labels import', which maps classes by name', which helps
    nothing: the fault is the room, not the ids."""
    from edgecl.errors import StorageError

    def full(self, names, checkpoint=None):
        raise StorageError(f"cannot write the class registry {self.path}: No space left on "
                           f"device")

    monkeypatch.setattr(ClassRegistry, "seed", full)
    with pytest.raises(StorageError) as err:
        run(tmp_path / "state", f"tasks://{scenario}", "yolo11n.yaml")
    assert str(err.value) == (
        f"the labels of tasks://{scenario}: cannot write the class registry "
        f"{tmp_path / 'state' / 'classes.json'}: No space left on device; free a few MiB on "
        f"the state directory's volume (or make it writable) and start again")
