"""The Models page's rows (edgecl.runtime.console.model_rows): which engine serves each version and
the INT8 gate's say, from hand-made manifests (new keys, an old manifest without them, rejected)."""

from __future__ import annotations

import json

import pytest

from edgecl.runtime.console import ENGINE_LABELS, int8_gate, model_rows
from engine_registry import ACCEPTED_REASON, NOT_BUILT_REASON, REFUSED_REASON, build_engine_registry


@pytest.fixture()
def rows(tmp_path, monkeypatch):
    """Rows by version, with OpenVINO importable (as on the reference device)."""
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    reg = build_engine_registry(tmp_path / "state" / "models")
    return {row["version"]: row for row in model_rows(reg)}


def test_rows_are_newest_first_and_json_ready(tmp_path, monkeypatch):
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    reg = build_engine_registry(tmp_path / "state" / "models")
    rows = model_rows(reg)
    assert [r["version"] for r in rows] == ["v0006", "v0005", "v0004", "v0003", "v0002", "v0001"]
    assert json.loads(json.dumps(rows)) == rows


def test_openvino_int8_accepted_serves_it(rows):
    row = rows["v0004"]
    assert row["status"] == "current"
    assert (row["engine"], row["engine_label"], row["engine_file"]) == (
        "openvino-int8", "OpenVINO INT8", "openvino-int8/model.xml")
    assert row["int8"] == {"accepted": True, "reason": ACCEPTED_REASON, "refused": False}


def test_int8_refused_by_the_gate_serves_fp32_onnx(rows):
    row = rows["v0002"]
    assert (row["engine"], row["engine_label"], row["engine_file"]) == (
        "onnx", "ONNX Runtime FP32", "model.onnx")
    assert row["int8"] == {"accepted": False, "reason": REFUSED_REASON, "refused": True}


def test_int8_not_built_is_not_a_refusal(rows):
    row = rows["v0005"]
    assert (row["engine"], row["engine_label"]) == ("openvino", "OpenVINO FP32")
    assert row["int8"] == {"accepted": False, "reason": NOT_BUILT_REASON, "refused": False}


def test_old_manifest_is_named_by_the_served_file_suffix(rows):
    row = rows["v0001"]
    assert row["status"] == "retired"
    assert (row["engine"], row["engine_label"], row["engine_file"]) == ("onnx", "ONNX Runtime", "model.onnx")
    assert row["int8"] is None


def test_rejected_version_has_no_engine(rows):
    row = rows["v0003"]
    assert row["status"] == "rejected"
    assert (row["engine"], row["engine_label"], row["engine_file"], row["int8"]) == (None, None, None, None)


def test_tensorrt_engine_serves_before_the_chosen_cpu_engine(rows):
    row = rows["v0006"]
    assert (row["engine"], row["engine_label"], row["engine_file"]) == (
        "tensorrt", "TensorRT FP16", "model.engine")
    assert row["int8"]["accepted"] is True  # the CPU gate's record is still shown


def test_openvino_missing_falls_back_to_onnx_as_the_loop_does(tmp_path, monkeypatch):
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: not name.endswith(".xml"))
    reg = build_engine_registry(tmp_path / "state" / "models")
    row = next(r for r in model_rows(reg) if r["version"] == "v0004")
    assert (row["engine"], row["engine_label"], row["engine_file"]) == (
        "onnx", "ONNX Runtime FP32", "model.onnx")
    assert row["engine_file"] == reg.model_path("v0004").name


def test_every_serve_engine_has_a_label():
    from edgecl.continual.cpu_engines import ENGINE_FILES, SERVE_ORDER

    assert set(SERVE_ORDER) == set(ENGINE_FILES) <= set(ENGINE_LABELS)


@pytest.mark.parametrize(("record", "expected"), [
    (None, None),
    ("garbage", None),
    ({"accepted": True, "reason": "ok", "drops": {}}, {"accepted": True, "reason": "ok", "refused": False}),
    ({"accepted": False, "reason": "class x", "drops": {"x": 0.2}},
     {"accepted": False, "reason": "class x", "refused": True}),
    ({"accepted": False, "reason": "quantisation failed: boom"},
     {"accepted": False, "reason": "quantisation failed: boom", "refused": False}),
])
def test_int8_gate_record(record, expected):
    assert int8_gate({} if record is None else {"int8": record}) == expected


def test_per_class_figures_follow_a_rename_by_class_id(tmp_path):
    """Before: after 'classes rename Car Vehicle' and a new class that took the name Car, the
    Models page (and models list --json) credited the new Car (no sample then) with id 0's AP."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "Car", 1: "Person"})
    reg = Registry(state / "models")
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"w")
    reg.promote(reg.stage({"model.pt": pt}, {
        "classes": {"0": "Car", "1": "Person"},
        "metrics": {"per_class_map50_95": {"Car": 0.2165, "Person": 0.0},
                    "gate_drops": {"Car": 0.01}, "gate_steps": {"Car": 0.01},
                    "not_gated": ["Person"]}}))
    ClassRegistry(state).rename("Car", "Vehicle")
    ClassRegistry(state).add(["Car"])  # a new class, id 2
    row = model_rows(reg)[0]
    assert row["per_class_ap"] == {"Vehicle": 0.2165, "Person": 0.0}


def test_models_list_json_names_classes_as_now(tmp_path, capsys):
    from edgecl.cli import main
    from edgecl.models.classes import ClassRegistry
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "Car"})
    reg = Registry(state / "models")
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"w")
    reg.promote(reg.stage({"model.pt": pt}, {
        "classes": {"0": "Car"}, "metrics": {"per_class_map50_95": {"Car": 0.2},
                                             "gate_steps": {"Car": 0.01},
                                             "gate_recall_steps": {"Car": 0.05},
                                             "not_gated": ["Car"]}}))
    ClassRegistry(state).rename("Car", "Vehicle")
    capsys.readouterr()
    assert main(["models", "list", "--state-dir", str(state), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["metrics"]
    assert metrics["per_class_map50_95"] == {"Vehicle": 0.2}
    assert metrics["gate_steps"] == {"Vehicle": 0.01} and metrics["not_gated"] == ["Vehicle"]
    assert metrics["gate_recall_steps"] == {"Vehicle": 0.05}


def test_every_per_class_figure_of_every_version_follows_renames_and_merges(tmp_path):
    """Before: /api/models gave a version's metrics as recorded (v0007's "Person" after Person
    was renamed Pedestrian and a new class took the name Person), unlike models list --json;
    the monitor's class_ap50_95 of a round during which Person became Human stayed "Human"
    after Human became Pedestrian; a class merged away kept a "Car": null beside its target."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    classes = ClassRegistry(state)
    classes.seed({0: "Vehicle", 1: "Person"})
    reg = Registry(state / "models")
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"w")
    classes.add(["Car"])  # id 2, merged into Vehicle below
    classes.rename("Person", "Human")  # while the round ran: its monitor figures say Human
    reg.promote(reg.stage({"model.pt": pt}, {
        "classes": {"0": "Vehicle", "1": "Person", "2": "Car"},
        "metrics": {"per_class_map50_95": {"Vehicle": 0.3, "Person": 0.1},
                    "class_ap50_95": {"Vehicle": 0.3, "Human": 0.1, "Car": None},
                    "class_forgetting": {"Vehicle": 0.0, "Human": 0.02}}}))
    classes.rename("Human", "Pedestrian")
    classes.add(["Person"])  # id 3: a new class took the freed name
    classes.merge("Car", "Vehicle")
    row = model_rows(reg)[0]
    assert row["per_class_ap"] == {"Vehicle": 0.3, "Pedestrian": 0.1}
    assert row["metrics"]["per_class_map50_95"] == {"Vehicle": 0.3, "Pedestrian": 0.1}
    assert row["metrics"]["class_ap50_95"] == {"Vehicle": 0.3, "Pedestrian": 0.1}
    assert row["metrics"]["class_forgetting"] == {"Vehicle": 0.0, "Pedestrian": 0.02}


def test_a_teams_checkpoint_shows_the_ap_a_round_measured_when_it_started_from_it(tmp_path):
    """Before: the Models page showed '—' as the per-class AP of the checkpoint a team added
    with 'edgecl models add', though the first round evaluated it on the held-out set (the
    Forgetting page's start row)."""
    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "state" / "models")
    src = tmp_path / "team.onnx"
    src.write_bytes(b"\x01" * 64)
    added = reg.stage({"model.onnx": src}, {"source": str(src), "classes": {"0": "car"}})
    learnt = reg.stage({"model.onnx": src}, {"parent": added, "classes": {"0": "car"},
                                            "metrics": {"per_class_map50_95": {"car": 0.4}}})
    measured = {added: {"car": 0.31, "truck": None}, learnt: {"car": 0.9}}
    rows = {r["version"]: r for r in model_rows(reg, class_ap=measured.get)}
    assert rows[added]["per_class_ap"] == {"car": 0.31}
    assert rows[added]["ap_note"] == "measured on the held-out set when a round started from it"
    assert rows[learnt]["per_class_ap"] == {"car": 0.4} and rows[learnt]["ap_note"] is None
    bare = {r["version"]: r for r in model_rows(reg)}  # no metrics database: as before
    assert bare[added]["per_class_ap"] == {} and bare[added]["ap_note"] is None


def test_a_version_made_before_a_class_was_taught_names_it(tmp_path):
    """The Models page warns before serving a version that lacks a class taught since."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.models.registry import Registry

    ClassRegistry(tmp_path / "state").add(["car", "person", "drone"])
    reg = Registry(tmp_path / "state" / "models")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"\x02" * 64)
    old = reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "person"}})
    new = reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "person", "2": "drone"}})
    assert model_rows(reg)[-1]["not_detected"] == []  # none serves: nothing would be lost
    reg.promote(new)
    rows = {r["version"]: r for r in model_rows(reg)}
    assert rows[old]["not_detected"] == ["drone"] and rows[new]["not_detected"] == []



def test_a_class_merged_into_one_the_version_has_is_not_named_as_lost(tmp_path):
    """Before: 'does not detect car' on a version that detects car, for 'kar' (merged into car
    since) in the serving version's head: a merged id reads under its target's name."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.models.registry import Registry

    registry = ClassRegistry(tmp_path / "state")
    registry.add(["car", "person", "kar", "drone"])
    registry.merge("kar", "car")
    reg = Registry(tmp_path / "state" / "models")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"\x02" * 64)
    old = reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "person"}})
    new = reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "person", "2": "kar",
                                                      "3": "drone"}})
    reg.promote(new)
    rows = {r["version"]: r for r in model_rows(reg)}
    assert rows[old]["not_detected"] == ["drone"]
