"""A device's fleet fit adds FedProx's proximal term when ``fleet.proximal_mu`` is above 0, and
only once the global model knows classes (a fresh model's weights are no anchor)."""

import dataclasses

import pytest

pytest.importorskip("flwr")

from edgecl.data.scenario import make_scenario  # noqa: E402
from edgecl.data.task_sources import load_task_source  # noqa: E402
from edgecl.fleet.device import UNALIGNED, FleetDevice  # noqa: E402
from edgecl.fleet.simulate import SimSize, device_config, fill_memory  # noqa: E402
from edgecl.fleet.weights import initial_global  # noqa: E402


def test_fit_adds_the_proximal_term_after_the_first_round(tmp_path, monkeypatch):
    from edgecl.continual import finetune
    from edgecl.continual.proximal import ProximalHook

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=12, imgsz=64, seed=3)
    size = SimSize(imgsz=64, steps=2, first_steps=2, batch=4)
    cfg = device_config(None, tmp_path / "device", size, "127.0.0.1:1", "d0", 2, 2)
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, proximal_mu=0.01))
    taskset = load_task_source(yaml_path)
    assert fill_memory(cfg, taskset, taskset.tasks) > 0
    terms = []
    real_step = finetune._Loop.step

    def spy(self, batch):
        out = real_step(self, batch)
        terms.append([h for h in self.tuner.hooks if isinstance(h, ProximalHook)])
        return out

    monkeypatch.setattr(finetune._Loop, "step", spy)
    device = FleetDevice(cfg)
    first = device.fit(initial_global(0), [], 1)
    assert not first.skipped and terms and all(not hooks for hooks in terms)
    terms.clear()
    second = device.fit(first.arrays, first.names, 2)
    assert not second.skipped and terms and all(len(hooks) == 1 for hooks in terms)
    assert terms[-1][0].mu == 0.01 and terms[-1][0].last_terms["proximal"] > 0


def test_baselines_train_without_the_proximal_term(tmp_path):
    from edgecl.fleet.simulate import _baseline_config

    base = (None, ("fleet.proximal_mu=0.01", "fleet.restrict_class_loss=true"))
    args = (base, tmp_path, SimSize(), "127.0.0.1:1")
    device, joint = device_config(*args, "device0", 2, 1), _baseline_config(*args, "joint", 2, 1)
    assert device.fleet.proximal_mu == 0.01 and device.fleet.restrict_class_loss
    assert joint.fleet.proximal_mu == 0.0 and not joint.fleet.restrict_class_loss


def test_a_restricted_fit_trains_the_class_loss_of_the_held_classes_only(tmp_path, monkeypatch):
    from edgecl.continual import finetune
    from edgecl.continual.restricted import RestrictedClassLoss

    yaml_path = make_scenario(tmp_path / "scn", tasks=2, images_per_task=8, imgsz=64, seed=3)
    size = SimSize(imgsz=64, steps=1, first_steps=1, batch=4)
    cfg = device_config(None, tmp_path / "device", size, "127.0.0.1:1", "d0", 2, 2)
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, restrict_class_loss=True))
    taskset = load_task_source(yaml_path)
    assert fill_memory(cfg, taskset, taskset.tasks[1:]) > 0  # the second task's classes only
    seen = []
    real_step = finetune._Loop.step

    def spy(self, batch):
        seen.extend(h for h in self.tuner.hooks if isinstance(h, RestrictedClassLoss))
        return real_step(self, batch)

    monkeypatch.setattr(finetune._Loop, "step", spy)
    from edgecl.fleet.weights import model_arrays
    from edgecl.ultra import build_detection_model

    names = [taskset.names[c] for t in taskset.tasks for c in t.classes]  # first task's first
    global_model = build_detection_model(len(names), names=dict(enumerate(names)))
    fit = FleetDevice(cfg).fit(model_arrays(global_model), names, 2)
    assert not fit.skipped and seen
    held = sorted(fit.names.index(taskset.names[c]) for c in taskset.tasks[1].classes)
    assert seen[-1].class_ids == held and seen[-1].weights.flatten().sum() == len(held)
    # the update says which classes its samples show: only their rows join the fleet's average
    assert fit.held == [fit.names[i] for i in held]


def test_held_classes_are_read_from_the_samples_records():
    from types import SimpleNamespace

    from edgecl.fleet.device import held_classes

    records = [SimpleNamespace(classes=(0, 2)), SimpleNamespace(classes=()),
               SimpleNamespace(classes=(2,))]
    assert held_classes(records) == {0, 2}


def test_a_global_model_with_non_finite_weights_is_neither_adopted_nor_trained(tmp_path):
    import numpy as np

    from edgecl.config import load_config

    from edgecl.fleet.weights import build_model, model_arrays

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    arrays = {k: np.full_like(v, np.nan) for k, v in
              model_arrays(build_model({}, [], {0: "car"})).items()}  # a poisoned global model
    out = FleetDevice(cfg).adopt(arrays, ["car"], 3)  # with no earlier model the gate would accept
    assert out.status == "rejected" and out.version == ""
    assert out.reason == "non-finite weights (tensor model.0.conv.weight)"
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())  # nothing staged
    fit = FleetDevice(cfg).fit({"model.0.conv.weight": np.array([np.inf], np.float32)}, ["car"], 3)
    assert fit.skipped.startswith("the global model has non-finite weights") and not fit.arrays


def test_global_class_names_join_the_registry_case_insensitively(tmp_path):
    from edgecl.config import load_config
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(tmp_path)
    registry.add(["car"])
    assert ClassRegistry(tmp_path / "other").add(["car", "Car"]) == ["car"]  # one class: case aside
    device = FleetDevice(load_config(None, [f"state_dir={tmp_path}"]))
    assert device.registry_spelling(["Car", "truck", "TRUCK"]) == ["car", "truck", "truck"]
    assert device.local_names(["CAR", "Truck"]) == {0: "car", 1: "Truck"}
    assert device.local_names(["truck", "car"]) == {0: "car", 1: "Truck"}


def test_a_class_merged_on_the_device_is_not_the_fleets_and_a_spelling_apart_is_one_class(tmp_path):
    """Before: after 'classes merge OtherVehicle other_vehicle' the fleet's 'OtherVehicle' rows
    were copied into the merged id at every adoption (never unlearnt); and the fleet's
    'OtherVehicle' beside the device's 'other_vehicle' (imported, before any merge) became a
    second class, though an import takes them as one."""
    from edgecl.config import load_config
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(tmp_path)
    registry.add(["other_vehicle", "person"])
    device = FleetDevice(load_config(None, [f"state_dir={tmp_path}"]))
    assert device.registry_spelling(["OtherVehicle", "Person", "bike"]) == [
        "other_vehicle", "person", "bike"]
    assert device.fleet_spelling(["OtherVehicle", "bike"]) == {"other_vehicle": "OtherVehicle",
                                                               "bike": "bike"}
    # the fleet holding both spellings: each its own class, as before
    assert device.registry_spelling(["OtherVehicle", "other_vehicle"]) == [
        "OtherVehicle", "other_vehicle"]
    registry.add(["OtherVehicle"])  # the fleet brought it as a class of its own here
    registry.merge("OtherVehicle", "other_vehicle")
    assert device.registry_spelling(["OtherVehicle", "other_vehicle"]) == [UNALIGNED,
                                                                           "other_vehicle"]
    assert device.local_names(["OtherVehicle", "other_vehicle"]) == {
        0: "other_vehicle", 1: "person", 2: "OtherVehicle"}  # nothing added, the id reserved


def test_names_renamed_or_merged_away_stay_unaligned_whatever_the_fleets_order(tmp_path):
    """Found attacking the first fix: a class renamed then merged still took its former
    name's rows; a renamed class met the fleet's 'MotorCar' as a second class or not,
    depending on the fleet's order (then 'Motor Car' from an import became a third); a merged
    or renamed class came back under a spelling apart only in separators."""
    from edgecl.config import load_config
    from edgecl.models.classes import ClassRegistry

    def device(path, *steps):
        registry = ClassRegistry(path)
        registry.add(["car", "lorri", "truck", "other_vehicle", "van"])
        for step, *args in steps:
            getattr(registry, step)(*args)
        return FleetDevice(load_config(None, [f"state_dir={path}"]))

    merged = device(tmp_path / "a", ("rename", "lorri", "lorry"), ("merge", "lorry", "truck"))
    assert merged.registry_spelling(["car", "lorri", "truck"]) == ["car", UNALIGNED, "truck"]
    renamed = device(tmp_path / "b", ("rename", "car", "motor_car"))
    for fleet in (["car", "MotorCar"], ["MotorCar", "car"]):
        spelt = renamed.registry_spelling(fleet)
        assert dict(zip(fleet, spelt)) == {"MotorCar": "motor_car", "car": UNALIGNED}
    assert renamed.local_names(["car", "MotorCar"]) == {0: "motor_car", 1: "lorri", 2: "truck",
                                                        3: "other_vehicle", 4: "van"}
    # a rename apart only in separators is still the fleet's class of the old name (the first
    # version of this fix unaligned it, and the fleet would have grown a second class)
    spaced = device(tmp_path / "d", ("rename", "other_vehicle", "other vehicle"),
                    ("rename", "other vehicle", "Other-Vehicle"))
    assert spaced.registry_spelling(["other_vehicle", "car"]) == ["Other-Vehicle", "car"]
    gone = device(tmp_path / "c", ("merge", "other_vehicle", "truck"), ("rename", "van", "wagon"))
    assert gone.registry_spelling(["OtherVehicle", "VAN", "Van-"]) == [UNALIGNED, "wagon",
                                                                       UNALIGNED]


def test_an_update_leaves_out_the_classes_merged_away_on_the_device():
    """Found attacking the first fix: the update still named a merged class, the fleet took it
    as a new class and every other device added it to its registry for good."""
    import numpy as np

    from edgecl.fleet.device import _without_merged

    rows = "model.23.cv3.0.2.bias"
    arrays = {rows: np.array([0.0, 1.0, 2.0], np.float32), "model.0.conv.weight": np.ones(2)}
    names = {0: "car", 1: "OtherVehicle", 2: "truck"}
    out, order, ap = _without_merged(arrays, names, {"car": 0.5, "OtherVehicle": None}, {1})
    assert order == ["car", "truck"] and ap == {"car": 0.5}
    assert out[rows].tolist() == [0.0, 2.0] and out["model.0.conv.weight"] is arrays[
        "model.0.conv.weight"]
    assert _without_merged(arrays, names, {}, set())[0] is arrays


def test_a_failed_connection_says_grpcs_status_not_a_class_name():
    """'fleet join' against a closed port logged 'unreachable or gone (_MultiThreadedRendezvous)'."""
    from edgecl.fleet.client import connection_problem

    class Status:
        name = "UNAVAILABLE"

    class Rendezvous(Exception):
        def code(self):
            return Status()

        def details(self):
            return "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: " \
                   "Failed to connect to remote host: Connection reset\nmore"

    assert connection_problem(Rendezvous()) == (
        "the connection was lost (the server stopped, or the network dropped)")

    class Unknown(Rendezvous):
        def details(self):
            return "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: " \
                   "something new\nmore"

    assert connection_problem(Unknown()) == "UNAVAILABLE: UNKNOWN: ipv4:127.0.0.1:9: something new more"
    assert connection_problem(ConnectionError("reset by peer")) == "ConnectionError: reset by peer"
    from edgecl.errors import ConfigError  # edgecl's own line, without its class name (before:
    assert connection_problem(ConfigError(  # "ConfigError: config key 'fleet.ca_cert': ...")
        "config key 'fleet.ca_cert': ca.pem is not valid before 2028-01-11")) == (
        "config key 'fleet.ca_cert': ca.pem is not valid before 2028-01-11")

    class WebServer(Rendezvous):  # a port where an HTTP server listens (before: gRPC's own text)
        def details(self):
            return "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:" \
                   "19600: Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, " \
                   "got frame type 79)"

    assert connection_problem(WebServer(), "127.0.0.1:19600") == (
        "what listens on 127.0.0.1:19600 is no fleet server (it does not speak gRPC: another "
        "program's port? check fleet.server_address)")


def test_a_full_disk_at_a_fleet_round_is_one_line_not_a_traceback(caplog):
    """Before: a full card (or a read-only state directory) at a device's fit or adoption
    logged a whole traceback every round, and the server recorded "OSError: [Errno 28] ..."."""
    import errno
    import logging

    from edgecl.fleet.client import _said_fault

    full = OSError(errno.ENOSPC, "No space left on device", "/card/learner/fleet-work/model.pt")
    with caplog.at_level(logging.ERROR):
        reason = _said_fault(full, 3, "adoption failed")
    assert reason == ("the state directory cannot be written: No space left on device "
                      "(/card/learner/fleet-work/model.pt)")
    (record,) = caplog.records
    assert record.getMessage() == f"fleet round 3: adoption failed: {reason}"
    assert record.exc_info is None
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert _said_fault(ValueError("a bug"), 3, "fit failed") == "ValueError: a bug"
    assert caplog.records[0].exc_info is not None  # an unknown fault keeps its traceback


def test_a_class_renamed_on_the_device_stays_the_fleets_class(tmp_path):
    """After 'classes rename car auto', the fleet's 'car' became a second class on the device
    (fresh rows for its 'auto', the learnt rows under a new id), and its update sent 'auto' back:
    a new class of the fleet, beside 'car'."""
    from edgecl.continual.round_state import learner_dir
    from edgecl.fleet.weights import model_arrays
    from edgecl.models.classes import ClassRegistry
    from edgecl.ultra import build_detection_model

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=8, imgsz=64, seed=3)
    size = SimSize(imgsz=64, steps=1, first_steps=1, batch=4)
    cfg = device_config(None, tmp_path / "device", size, "127.0.0.1:1", "d0", 2, 2)
    taskset = load_task_source(yaml_path)
    assert fill_memory(cfg, taskset, taskset.tasks) > 0
    registry = ClassRegistry(cfg.state_dir)
    fleet_names = list(registry.names().values())
    old = fleet_names[0]
    registry.rename(old, "auto")
    device = FleetDevice(cfg)
    assert device.registry_spelling(fleet_names) == ["auto", *fleet_names[1:]]
    assert device.fleet_spelling([old.upper(), "truck"]) == {"auto": old.upper(), "truck": "truck"}
    # the fleet also holds a class named as the new name (another device's): this device's
    # 'auto' is that class, and the old name's rows are not this device's. Before: the old name
    # came back as a new class here, bearing the name the operator renamed away
    assert device.registry_spelling([old, "auto"]) == [UNALIGNED, "auto"]
    assert device.fleet_spelling([old, "auto"]) == {"auto": "auto"}
    assert device.local_names(device.registry_spelling([old, "auto"])) == registry.names()
    global_model = build_detection_model(len(fleet_names), names=dict(enumerate(fleet_names)))
    fit = device.fit(model_arrays(global_model), fleet_names, 2)
    assert not fit.skipped
    assert fit.names == fleet_names and fit.held == fleet_names  # no second class, the fleet's names
    assert set(fit.per_class_ap) == set(fleet_names)
    assert list(registry.names().values()) == ["auto", *fleet_names[1:]]
    assert not (learner_dir(cfg.state_dir) / "fleet-work").exists()  # nothing left on the card


def test_scoring_matches_class_names_case_aside(monkeypatch):
    """Before: a device whose registry spells 'Car' scored 0 on a test set spelling 'car' (its
    rows were silenced as a class the model lacks)."""
    from edgecl.fleet import device as device_module
    from edgecl.fleet import weights

    seen = {}

    class Stop(Exception):
        pass

    def fake_build_model(arrays, arrays_names, names, **kwargs):
        seen["order"] = list(arrays_names)
        raise Stop

    monkeypatch.setattr(weights, "build_model", fake_build_model)
    monkeypatch.setattr(weights, "model_arrays", lambda model: {})
    monkeypatch.setattr(weights, "model_arch", lambda model: None)
    with pytest.raises(Stop):
        device_module.score_by_name(object(), {0: "Car", 1: "Person", 2: "boat"},
                                    {0: "car", 1: "person"}, [], 64)
    assert seen["order"] == ["car", "person", "boat"]



def test_adoptions_keep_the_model_registry_within_its_retention(tmp_path):
    """Before: a device that only adopted fleet models (no local round) kept every version's
    files, about 20 MB each: 16 rounds of 'fleet join' took 333 MB, whatever export.keep_*."""
    from edgecl.fleet.weights import model_arrays
    from edgecl.models.registry import Registry
    from edgecl.ultra import build_detection_model

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=12, imgsz=64, seed=3)
    cfg = device_config(None, tmp_path / "device", SimSize(imgsz=64, steps=1, batch=4),
                        "127.0.0.1:1", "d0", 2, 2)
    cfg = dataclasses.replace(cfg, export=dataclasses.replace(
        cfg.export, keep_promoted=1, keep_rejected=1, openvino="off", cpu_int8="off"))
    taskset = load_task_source(yaml_path)
    assert fill_memory(cfg, taskset, taskset.tasks) > 0
    names = [taskset.names[c] for c in taskset.tasks[0].classes]
    device = FleetDevice(cfg)
    outcomes = [device.adopt(model_arrays(build_detection_model(len(names))), names, round_no)
                for round_no in range(1, 5)]
    assert [o.version for o in outcomes] == ["v0001", "v0002", "v0003", "v0004"]
    registry = Registry(tmp_path / "device" / "models")
    with_files = [v for v in registry.versions() if registry.status(v) != "pruned"]
    current = registry.current() or outcomes[-1].version
    # kept: the current (or last) version, its parent, the newest promoted, the last rejected
    assert len(with_files) <= 3 and outcomes[-1].version in with_files and current in with_files
    assert all(not (registry.root / v / "model.onnx").exists()
               for v in registry.versions() if v not in with_files)


def test_a_device_hears_once_that_its_update_was_refused(tmp_path, monkeypatch, caplog):
    """Before: the second of two devices named alike, or a device whose update the server
    refused, was told nothing: its log showed a sent update and then nothing amiss."""
    import json
    import logging

    from edgecl.fleet import client, wire
    from edgecl.fleet.device import FitOutcome

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    cfg = device_config(None, tmp_path / "device", SimSize(imgsz=64), "127.0.0.1:1", "jetson", 2, 2)
    monkeypatch.setattr(FleetDevice, "fit", lambda *a, **k: FitOutcome(skipped="no sample"))
    said = ("fleet round 1: two devices sent an update as jetson; the server kept the first and "
            "refused the second: give each device its own fleet.device_name")
    nonce = wire.new_nonce()
    config = {"round": 2, "nonce": nonce, "server_auth": wire.server_signature("", nonce, 2),
              "names": "[]", "keys": "[]",
              "notices": json.dumps({"jetson": said, "other": "not for this device"})}
    fleet_client = client.make_client(cfg)
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.client"):
        fleet_client.fit([], config)
        fleet_client.fit([], config)  # the server repeats it: said once
    assert [r.getMessage() for r in caplog.records] == [said]


def test_an_adopted_model_that_averages_the_devices_update_counts_its_samples_learnt(tmp_path):
    """Before: an adopted fleet model recorded no progress, so the next local round learnt every
    sample of the memory again on top of a model that had learnt them in the fleet round."""
    from edgecl.continual.round_state import load_state
    from edgecl.models.registry import Registry

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=12, imgsz=64, seed=3)
    cfg = device_config(None, tmp_path / "device", SimSize(imgsz=64, steps=1, first_steps=1,
                                                            batch=4), "127.0.0.1:1", "d0", 2, 2)
    cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, openvino="off",
                                                              cpu_int8="off"))
    taskset = load_task_source(yaml_path)
    assert fill_memory(cfg, taskset, taskset.tasks) > 0
    device = FleetDevice(cfg)
    fitted = device.fit(initial_global(0), [], 1)
    assert not fitted.skipped and fitted.learnt_up_to > 0
    registry = Registry(tmp_path / "device" / "models")
    # round 1's model averages this device's round-1 update: its training samples are learnt
    first = device.adopt(fitted.arrays, fitted.names, 1, averaged=True)
    manifest = registry.manifest(first.version)
    assert manifest["learnt_up_to"] == fitted.learnt_up_to and manifest["learnt_from"] == 0
    assert manifest["fleet"]["averaged_update"] is True
    assert first.status == "promoted"  # no earlier model: nothing to compare it with
    assert load_state(cfg.state_dir).last_sample_id == fitted.learnt_up_to
    # a model without this device's update (dropped by the server), or of a round this device
    # did not train for, records no progress
    for round_no, averaged in ((1, False), (2, True)):
        out = device.adopt(fitted.arrays, fitted.names, round_no, averaged=averaged)
        assert "learnt_up_to" not in registry.manifest(out.version)
