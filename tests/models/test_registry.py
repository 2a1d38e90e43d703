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


def test_a_rounds_own_exports_are_linked_not_written_twice(tmp_path, model_file, monkeypatch):
    """Before: every file of a round's version was copied from the learner's work folder (20-35
    MB written to the card twice per round). A user's file (models add) is still copied."""
    import errno

    reg = Registry(tmp_path / "models")
    v = reg.stage({"model.onnx": model_file}, {}, link=True)
    staged = tmp_path / "models" / v / "model.onnx"
    assert staged.stat().st_ino == model_file.stat().st_ino
    assert reg.verify(v) == []
    user = reg.add(model_file, check=False)
    assert (tmp_path / "models" / user / "model.onnx").stat().st_ino != model_file.stat().st_ino

    def no_links(src, dst):  # a FAT card, another file system
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = reg.stage({"model.onnx": model_file}, {}, link=True)
    path = tmp_path / "models" / copied / "model.onnx"
    assert path.read_bytes() == b"fake-onnx-bytes" and path.stat().st_ino != model_file.stat().st_ino


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


def test_a_rollback_that_would_serve_the_current_version_again_is_refused(tmp_path, model_file):
    """Before: with v0002 damaged and v0001 promoted again after it (history v1, v2, v1), a
    rollback skipped v0002, 'rolled back to v0001' (already current, exit 0) and cut the history
    down to [v0001]."""
    reg = Registry(tmp_path / "models")
    v1, v2 = reg.add(model_file, check=False), reg.add(model_file, check=False)
    reg.promote(v1)
    reg.promote(v2)
    reg.promote(v1)
    (tmp_path / "models" / v2 / "model.onnx").write_bytes(b"flipped")
    assert reg.history() == [v1, v2, v1]
    with pytest.raises(RegistryError, match="no earlier intact version"):
        reg.rollback()
    assert reg.current() == v1 and reg.history() == [v1, v2, v1]  # a refusal changes nothing
    (tmp_path / "models" / v2 / "model.onnx").write_bytes(model_file.read_bytes())
    assert reg.rollback() == v2


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
    # hand-edited text fields of another type: empty, not Python's repr of them in a listing
    path.write_text(json.dumps({**manifest, "created": ["x"], "metrics": "good",
                                "status": "rejected", "status_reason": {"a": 1}}))
    listed = reg.list()[0]
    assert (listed.created, listed.metrics, listed.reason) == ("", {}, "")
    path.write_text(json.dumps({**manifest, "created": 12345, "reason": 7}))
    assert (reg.list()[0].created, reg.list()[0].reason) == ("", "")
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert reg.list()[0].status == "corrupt"
    with pytest.raises(RegistryError, match="nested too deeply"):
        reg.manifest(v)
    (tmp_path / "models" / "history.json").write_text("[" * 100_000 + "]" * 100_000)
    assert reg.history() == []


def _no_room_while(predicate):
    """An ``atomic_write_json`` that fails like a full card while ``predicate(path)`` holds."""
    import errno

    from edgecl.atomic import atomic_write_json

    def write(path, obj):
        if predicate(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic_write_json(path, obj)

    return write


def test_prune_frees_room_on_a_full_disk(tmp_path, model_file, monkeypatch):
    from edgecl.models import registry as registry_mod

    reg = Registry(tmp_path / "models")
    versions = [reg.add(model_file, check=False) for _ in range(4)]
    for v in versions:
        reg.promote(v)
    old = tmp_path / "models" / versions[1]  # (the first: the device's start, kept)
    # a full card: no tombstone fits while the version's files still take the room
    monkeypatch.setattr(registry_mod, "atomic_write_json",
                        _no_room_while(lambda path: (old / "model.onnx").exists()))
    result = reg.prune(keep_promoted=1, keep_rejected=0)
    assert result["pruned"] == versions[1:3]
    assert result["freed_bytes"] == 2 * len(b"fake-onnx-bytes")
    for version in versions[1:3]:
        assert sorted(p.name for p in (reg.root / version).iterdir()) == ["manifest.json"]
        manifest = reg.manifest(version)
        assert manifest["status"] == "pruned" and "model.onnx" in manifest["pruned_files"]
    assert reg.current() == versions[3] and reg.verify(versions[3]) == []


def test_a_stage_the_full_disk_refused_is_one_line_and_leaves_nothing(tmp_path, model_file,
                                                                      monkeypatch):
    import errno
    import shutil

    from edgecl.errors import StorageError

    reg = Registry(tmp_path / "models")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(StorageError) as err:
        reg.add(model_file, check=False)
    message = str(err.value)
    assert message.startswith(f"cannot stage a new model version in {reg.root}; nothing was "
                              f"staged: No space left on device (")
    assert "model.onnx" in message and "\n" not in message
    assert reg.versions() == [] and not any(p.name.startswith(".staging-")
                                            for p in reg.root.iterdir())


def test_a_full_disk_after_the_version_exists_keeps_it(tmp_path, model_file, monkeypatch):
    import errno

    from edgecl.models import registry as registry_mod

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    reg = Registry(tmp_path / "models")
    monkeypatch.setattr(registry_mod, "atomic_write_text", full)  # last_version
    v1 = reg.add(model_file, check=False)
    assert reg.versions() == [v1] and reg.verify(v1) == []
    monkeypatch.undo()
    assert reg.add(model_file, check=False) == "v0002"  # the name is not given twice


def test_a_promote_or_rollback_the_full_disk_refused_changes_nothing(tmp_path, model_file,
                                                                     monkeypatch):
    import errno

    from edgecl.errors import StorageError

    reg = Registry(tmp_path / "models")
    v1, v2 = reg.add(model_file, check=False), reg.add(model_file, check=False)
    reg.promote(v1)
    real_symlink = os.symlink

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(os, "symlink", full)
    with pytest.raises(StorageError, match=f"^cannot promote {v2}; nothing changed: No space"):
        reg.promote(v2)
    assert reg.current() == v1
    monkeypatch.setattr(os, "symlink", real_symlink)
    reg.promote(v2)

    def refuse(target):
        raise StorageError(f"cannot write what {target} needs")

    with pytest.raises(StorageError, match=f"what {v1} needs"):
        reg.rollback(before_switch=refuse)
    assert reg.current() == v2 and reg.history()[-1] == v2


def test_a_full_disk_never_turns_a_promotion_into_a_rollback(tmp_path, model_file, monkeypatch):
    """Before: 'models promote v0001' on a full card switched 'current' but left history.json
    behind; the next open read it as a rollback ('v0002 retired (rolled back)', v0002 gone
    from the history and from the monitor's chain)."""
    from edgecl.errors import StorageError
    from edgecl.models import registry as registry_mod

    reg = Registry(tmp_path / "models")
    v1, v2, v3 = (reg.add(model_file, check=False) for _ in range(3))
    reg.promote(v1)
    reg.promote(v2)
    monkeypatch.setattr(registry_mod, "atomic_write_json",
                        _no_room_while(lambda path: path.name == "history.json"))
    with pytest.raises(StorageError, match=f"^cannot promote {v1}; nothing changed: No space"):
        reg.promote(v1)  # promoted again: its history must be written first
    assert reg.current() == v2
    reg.promote(v3)  # a new version: the history the repair derives is the right one
    monkeypatch.undo()
    again = Registry(tmp_path / "models")
    assert again.current() == v3 and again.history() == [v1, v2, v3]
    assert again.reason(v2) == ""  # retired by a promotion, not rolled back


def _three_promoted(tmp_path):
    registry = Registry(tmp_path / "models")
    versions = []
    for payload in (b"a", b"b", b"c"):
        src = tmp_path / "src.onnx"
        src.write_bytes(payload)
        versions.append(registry.stage({"model.onnx": src}, {}))
        registry.promote(versions[-1])
    return registry, versions


def test_a_missing_current_pointer_points_at_the_last_promoted_version_again(tmp_path, caplog):
    """An SD-card fault took models/current: every version read 'retired', nothing served and
    'edgecl run' said to start over from a model file."""
    _, versions = _three_promoted(tmp_path)
    (tmp_path / "models" / "current").unlink()
    reopened = Registry(tmp_path / "models")
    assert reopened.current() == versions[-1]
    assert [reopened.status(v) for v in versions] == ["retired", "retired", "promoted"]
    assert "the 'current' pointer was missing; it points at v0003 again" in caplog.text
    assert reopened.rollback() == versions[1]
    # a registry where nothing was ever promoted gets no pointer
    fresh = Registry(tmp_path / "fresh")
    src = tmp_path / "x.onnx"
    src.write_bytes(b"x")
    fresh.stage({"model.onnx": src}, {})
    assert Registry(tmp_path / "fresh").current() is None


@pytest.mark.parametrize("damage", [b"\x00" * 40, b"[\"v0001\", \"v00", b"{\"a\": 1}", b"\xff\xfe"])
def test_a_damaged_history_is_rebuilt_from_the_manifests_so_a_rollback_still_works(
        tmp_path, caplog, damage):
    """history.json zero-filled, cut or garbage: every command was silent and 'models rollback'
    said there was no earlier intact version while two were."""
    registry, versions = _three_promoted(tmp_path)
    assert registry.rollback() == versions[1]  # v0003 rolled back: it must not come back
    registry.promote(versions[2])
    registry.rollback()
    (tmp_path / "models" / "history.json").write_bytes(damage)
    reopened = Registry(tmp_path / "models")
    assert "history.json was unreadable; rebuilt from the versions' manifests: v0001, v0002" \
        in caplog.text
    assert reopened.history() == versions[:2]
    assert reopened.rollback() == versions[0]


def test_times_in_a_manifest_are_rfc_3339(tmp_path, model_file, monkeypatch):
    """Before: 'created' was '2026-12-03T06:39:39+0000' in local time (no colon in the offset:
    jq's fromdateiso8601 and RFC 3339 parsers refuse it), while the class registry wrote UTC
    with '+00:00'."""
    import re
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        reg = Registry(tmp_path / "models")
        version = reg.stage({"model.onnx": model_file}, {"memory_snapshot": "s"})
        created = json.loads((tmp_path / "models" / version / "manifest.json").read_text())["created"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created), created


def test_the_rollback_target_is_what_a_rollback_goes_back_to(tmp_path):
    """The Models page enables its button by it: before, after a rollback to v0001 it stayed
    enabled (v0002, rolled back from, is 'retired' too) and the click was refused (409)."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    registry = Registry(tmp_path / "models")
    first = registry.stage({"model.onnx": src}, {})
    assert registry.rollback_target() is None
    registry.promote(first)
    assert registry.rollback_target() is None
    second = registry.stage({"model.onnx": src}, {"parent": first})
    registry.promote(second)
    assert registry.rollback_target() == first
    registry.rollback()
    assert registry.current() == first and registry.rollback_target() is None
