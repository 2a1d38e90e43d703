"""A round names its candidate's classes by the class registry, not by the parent's head."""

from types import SimpleNamespace

from edgecl.continual.round import _load_parent
from edgecl.models.checkpoint import load_checkpoint, save_checkpoint
from edgecl.ultra import build_detection_model


def test_a_class_renamed_since_the_parent_carries_its_new_name(tmp_path):
    names = {0: "car", 1: "forklift"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "parent.pt",
                         meta={"names": names, "imgsz": 64})
    ctx = SimpleNamespace(parent_version="v0001", base_checkpoint=None,
                          registry=SimpleNamespace(file_path=lambda version, name: pt),
                          names={0: "car", 1: "lift_truck"})  # 'edgecl classes rename' since
    model, got = _load_parent(ctx)
    # before: the candidate kept 'forklift', the device showed it, an operator typed it, and
    # the registry grew a second class of that name
    assert got == {0: "car", 1: "lift_truck"} and model.names == got
    assert load_checkpoint(pt)[1]["names"] in (names, {"0": "car", "1": "forklift"})
