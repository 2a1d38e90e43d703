"""Model registry: staging, manifests, promote, rollback, corruption."""

import json
import os

import pytest

from edgecl.errors import RegistryError
from edgecl.models.registry import Registry


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"fake-onnx-bytes")
    return path


def test_stage_writes_manifest_with_sha256(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    v = reg.add(model_file, check=False)
    assert v == "v0001"
    manifest = json.loads((tmp_path / "models" / v / "manifest.json").read_text())
    assert manifest["status"] == "staged"
    # sha256 of b"fake-onnx-bytes", computed independently
    import hashlib
    assert manifest["files"]["model.onnx"] == hashlib.sha256(b"fake-onnx-bytes").hexdigest()
    assert reg.current() is None
    assert reg.add(model_file, check=False) == "v0002"


def test_promote_and_rollback(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    v1, v2 = reg.add(model_file, check=False), reg.add(model_file, check=False)
    reg.promote(v1)
    assert reg.current() == v1
    reg.promote(v2)
    assert reg.current() == v2
    assert os.readlink(tmp_path / "models" / "current") == v2
    statuses = {v.version: v.status for v in reg.list()}
    assert statuses == {v1: "retired", v2: "promoted"}
    assert reg.rollback() == v1
    assert reg.current() == v1
    with pytest.raises(RegistryError, match="no earlier"):
        reg.rollback()


def test_corrupt_version_is_refused(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    v1, v2 = reg.add(model_file, check=False), reg.add(model_file, check=False)
    reg.promote(v1)
    (tmp_path / "models" / v2 / "model.onnx").write_bytes(b"flipped")
    with pytest.raises(RegistryError, match="does not match its manifest"):
        reg.promote(v2)
    assert reg.current() == v1


def test_rejected_version_cannot_be_promoted(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    v = reg.stage({"model.onnx": model_file}, {"reason": "forgot t1"}, status="rejected")
    with pytest.raises(RegistryError, match="rejected"):
        reg.promote(v)
    listed = reg.list()[0].to_json()
    assert listed["status"] == "rejected" and listed["reason"] == "forgot t1"


def test_bad_inputs(tmp_path):
    reg = Registry(tmp_path / "models")
    with pytest.raises(RegistryError, match="file not found"):
        reg.add(tmp_path / "nope.onnx", check=False)
    with pytest.raises(RegistryError, match="expected one of"):
        reg.add(tmp_path / "x.txt", check=False)
    with pytest.raises(RegistryError, match="unknown version v0042"):
        reg.promote("v0042")


def test_staging_leftovers_are_invisible(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    (tmp_path / "models" / ".staging-dead").mkdir()
    assert reg.versions() == []
    assert reg.add(model_file, check=False) == "v0001"


def test_a_version_name_is_never_given_twice(tmp_path, model_file):
    """The newest version deleted by hand: the next one gets a new name (before: the same,
    which took over the deleted version's round in the metrics database)."""
    import shutil

    reg = Registry(tmp_path / "models")
    assert [reg.add(model_file, check=False) for _ in range(2)] == ["v0001", "v0002"]
    shutil.rmtree(tmp_path / "models" / "v0002")
    assert reg.add(model_file, check=False) == "v0003"
    (tmp_path / "models" / "last_version").write_text("garbage")  # damaged: the folders count
    assert reg.add(model_file, check=False) == "v0004"


def test_odd_manifest_values_are_read_as_damage_or_ignored(tmp_path, model_file):
    reg = Registry(tmp_path / "models")
    v = reg.add(model_file, check=False)
    path = tmp_path / "models" / v / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "metrics": None}))
    assert reg.list()[0].metrics == {} and reg.manifest(v)["metrics"] == {}
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert reg.list()[0].status == "corrupt"
    with pytest.raises(RegistryError, match="nested too deeply"):
        reg.manifest(v)
    (tmp_path / "models" / "history.json").write_text("[" * 100_000 + "]" * 100_000)
    assert reg.history() == []
