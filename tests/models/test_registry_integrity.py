"""Registry confinement, sha256 integrity, failed promote/rollback changing nothing, retention."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from edgecl.errors import RegistryError
from edgecl.models.registry import MAX_TOMBSTONES, Registry, VersionStatus


def _files(root: Path) -> dict[str, object]:
    """Every file, link and directory under root with its content: a whole-registry snapshot."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture()
def reg(tmp_path):
    return Registry(tmp_path / "state" / "models")


def _stage(reg: Registry, tmp_path: Path, payload: bytes = b"onnx-bytes", status: str = "staged",
           **meta) -> str:
    src = tmp_path / "src.onnx"
    src.write_bytes(payload)
    pt = tmp_path / "src.pt"
    pt.write_bytes(b"pt-bytes" + payload)
    return reg.stage({"model.onnx": src, "model.pt": pt}, meta, status=status)


def _edit_manifest(reg: Registry, version: str, **fields) -> None:
    path = reg.root / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


def test_manifest_entry_leaving_the_version_dir_is_refused(reg, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.onnx").write_bytes(b"evil")
    v1 = _stage(reg, tmp_path)
    digest = hashlib.sha256(b"evil").hexdigest()
    for name in ("../../../outside/evil.onnx", str(outside / "evil.onnx"), "sub/../../x.onnx"):
        _edit_manifest(reg, v1, files={name: digest})
        problems = reg.verify(v1)
        assert len(problems) == 1 and "not a plain relative path" in problems[0]
        with pytest.raises(RegistryError, match="not a plain relative path"):
            reg.promote(v1)
        with pytest.raises(RegistryError, match="not a plain relative path"):
            reg.model_path(v1)
    assert reg.current() is None


def test_symlinked_model_file_is_refused(reg, tmp_path):
    v1 = _stage(reg, tmp_path)
    target = tmp_path / "elsewhere.onnx"
    target.write_bytes(b"onnx-bytes")  # same bytes: only the link gives it away
    model = reg.root / v1 / "model.onnx"
    model.unlink()
    model.symlink_to(target)
    with pytest.raises(RegistryError, match="is a symlink"):
        reg.promote(v1)
    with pytest.raises(RegistryError, match="is a symlink"):
        reg.model_path(v1, (".onnx",))
    assert reg.current() is None


def test_symlinked_version_directory_is_refused(reg, tmp_path):
    v1 = _stage(reg, tmp_path)
    real = tmp_path / "outside-v"
    os.rename(reg.root / v1, real)
    (reg.root / v1).symlink_to(real)
    assert reg.versions() == [v1]
    with pytest.raises(RegistryError, match="is a symlink"):
        reg.promote(v1)
    assert reg.list()[0].status == "corrupt"
    assert reg.current() is None


def test_flipped_bytes_are_detected_in_onnx_and_pt(reg, tmp_path):
    v1 = _stage(reg, tmp_path)
    reg.check_integrity(v1)
    for name in ("model.onnx", "model.pt"):
        path = reg.root / v1 / name
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises(RegistryError, match=f"{name} does not match its manifest sha256"):
            reg.check_integrity(v1)
        path.write_bytes(original)
    reg.check_integrity(v1)


def test_failed_promote_and_rollback_change_nothing(reg, tmp_path):
    v1, v2 = _stage(reg, tmp_path, b"one"), _stage(reg, tmp_path, b"two")
    v3 = _stage(reg, tmp_path, b"three")
    reg.promote(v1)
    reg.promote(v2)
    # `current` points at a version that does not exist (deleted by hand, disk trouble, ...)
    os.remove(reg.root / "current")
    os.symlink("v0042", reg.root / "current")
    (reg.root / v3 / "model.pt").write_bytes(b"tampered")
    before = _files(reg.root)
    with pytest.raises(RegistryError, match="integrity"):
        reg.promote(v3)
    with pytest.raises(RegistryError, match="unknown version v0042"):
        reg.promote("v0042")
    with pytest.raises(RegistryError, match="invalid model version name"):
        reg.promote("../v0001")
    assert _files(reg.root) == before
    assert reg.current() == "v0042"
    # nothing intact to roll back to: both promoted versions damaged
    (reg.root / v1 / "model.onnx").write_bytes(b"x")
    (reg.root / v2 / "model.onnx").write_bytes(b"y")
    before = _files(reg.root)
    with pytest.raises(RegistryError, match="no earlier intact version"):
        reg.rollback()
    assert _files(reg.root) == before


def test_promote_repairs_a_dangling_current(reg, tmp_path):
    v1, v2 = _stage(reg, tmp_path, b"one"), _stage(reg, tmp_path, b"two")
    reg.promote(v1)
    os.remove(reg.root / "current")
    os.symlink("v0042", reg.root / "current")
    reg.promote(v2)
    assert reg.current() == v2 and reg.history() == [v1, v2]
    assert {v.version: v.status for v in reg.list()} == {v1: "retired", v2: "promoted"}
    os.remove(reg.root / "current")
    os.symlink("v0042", reg.root / "current")
    assert reg.rollback() == v2  # the last promoted intact version; no error, nothing half-done
    assert reg.current() == v2 and reg.history() == [v1, v2]


@pytest.mark.parametrize("damage", ["file", "outside", "missing"])
def test_prune_refuses_while_current_is_damaged_and_deletes_nothing(reg, tmp_path, damage):
    versions = [_stage(reg, tmp_path, bytes([i])) for i in range(5)]
    for v in (versions[1], versions[3], versions[4]):
        reg.promote(v)
    os.remove(reg.root / "current")
    if damage == "file":  # a hand edit: 'echo v0005 > models/current'
        (reg.root / "current").write_text(versions[4])
    else:
        os.symlink("../elsewhere" if damage == "outside" else "v0042", reg.root / "current")
    before = _files(reg.root)
    with pytest.raises(RegistryError, match="not pruning: .*current"):
        reg.prune(keep_promoted=0, keep_rejected=0)  # before: pruned v0005, the real current
    assert _files(reg.root) == before
    reg.promote(versions[4])  # promoting repairs the pointer; pruning then keeps current
    assert versions[4] in reg.prune(keep_promoted=0, keep_rejected=0)["kept"]


def test_rejected_and_pruned_versions_cannot_be_promoted(reg, tmp_path):
    v1 = _stage(reg, tmp_path, b"r", status="rejected")
    with pytest.raises(RegistryError, match="was rejected"):
        reg.promote(v1)
    assert reg.status(v1) == VersionStatus.REJECTED


def test_statuses_are_derived_from_current(reg, tmp_path):
    v1, v2 = _stage(reg, tmp_path, b"one"), _stage(reg, tmp_path, b"two")
    reg.promote(v1)
    # what a kill right after the switch of `current` leaves: stale manifests, stale history
    os.remove(reg.root / "current")
    os.symlink(v2, reg.root / "current")
    assert reg.status(v2) == "promoted" and reg.status(v1) == "retired"
    assert reg.history() == [v1, v2] and reg.staged_versions() == []
    reopened = Registry(reg.root)  # repairs the stored files
    assert json.loads((reg.root / "history.json").read_text()) == [v1, v2]
    assert reopened.manifest(v2)["status"] == "promoted"
    assert reopened.manifest(v1)["status"] == "retired"


def test_staged_versions_after_current(reg, tmp_path):
    v1, v2, v3 = (_stage(reg, tmp_path, bytes([i])) for i in range(3))
    reg.promote(v2)
    assert reg.staged_versions() == [v3]  # v1 is older than current: obsolete, not pending


def test_staging_leftovers_are_removed_on_open_unless_in_progress(reg, tmp_path):
    dead = reg.root / ".staging-dead"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    import fcntl

    live = reg.root / ".staging-live"
    live.mkdir()
    with open(live / ".owner", "w") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)
        Registry(reg.root)
        assert not dead.exists() and live.exists()
    Registry(reg.root)
    assert not live.exists()


def test_temp_files_a_kill_left_at_the_registry_root_are_removed_on_open(reg):
    """Before: a kill -9 while a version was staged left '.last_version.k2j1x9.tmp' (and a
    promotion's '.history.json.*.tmp') in STATE/models for good."""
    left = [reg.root / ".last_version.k2j1x9.tmp", reg.root / ".history.json.a8b7c6.tmp"]
    for path in left:
        path.write_text("v0007\n")
    kept = [reg.root / "notes.tmp", reg.root / ".history.json.bak"]
    for path in kept:
        path.write_text("mine\n")
    Registry(reg.root)
    assert [p.exists() for p in left + kept] == [False, False, True, True]


def test_unsafe_stage_names_are_refused(reg, tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    for name in ("../m.onnx", "/abs/m.onnx", ""):
        with pytest.raises(RegistryError, match="not a plain relative path"):
            reg.stage({name: src})
    assert reg.versions() == []


def _history_run(reg: Registry, tmp_path: Path, plan: str) -> dict[str, str]:
    """Stage one version per letter: P promoted, R rejected, S staged; return letter+index -> version."""
    made = {}
    for i, kind in enumerate(plan):
        version = _stage(reg, tmp_path, f"{kind}{i}".encode(), status="rejected" if kind == "R" else "staged",
                         parent=reg.current())
        if kind == "P":
            reg.promote(version)
        made[f"{kind}{i}"] = version
    return made


def test_retention_keeps_current_parent_last_k_promoted_and_rejected(reg, tmp_path):
    made = _history_run(reg, tmp_path, "PPRPRRPRPS")
    # promoted: P0 v1, P1 v2, P3 v4, P6 v7, P8 v9 (current, parent v7); rejected: v3 v5 v6 v8; staged v10
    result = reg.prune(keep_promoted=2, keep_rejected=1)
    assert result["kept"] == ["v0007", "v0008", "v0009", "v0010"]
    assert result["pruned"] == ["v0001", "v0002", "v0003", "v0004", "v0005", "v0006"]
    assert made["S9"] == "v0010" and reg.staged_versions() == ["v0010"]
    assert result["freed_bytes"] > 0
    tomb = reg.manifest("v0001")
    assert tomb["status"] == "pruned" and tomb["files"] == {} and "model.onnx" in tomb["pruned_files"]
    assert sorted(p.name for p in (reg.root / "v0001").iterdir()) == ["manifest.json"]
    assert reg.status("v0004") == "pruned" and reg.verify("v0004")[0].endswith("deleted by retention)")
    with pytest.raises(RegistryError, match="pruned"):
        reg.promote("v0004")
    # rollback skips pruned versions and lands on the kept parent
    assert reg.rollback() == "v0007"
    again = reg.prune(keep_promoted=2, keep_rejected=1)
    assert again["pruned"] == [] and reg.current() == "v0007"


def test_retention_keeps_a_version_a_person_staged_until_they_promote_it(reg, tmp_path):
    """Before: 'edgecl models add' without --promote, then a round's promotion, and retention
    deleted the person's model ("registry retention pruned ['v0006', 'v0007']")."""
    _history_run(reg, tmp_path, "P")
    model = tmp_path / "theirs.onnx"
    model.write_bytes(b"a person's model")
    added = reg.add(model, check=False)
    leftover = _stage(reg, tmp_path, b"killed round", parent=reg.current())  # a round's
    _history_run(reg, tmp_path, "PP")
    result = reg.prune(keep_promoted=1, keep_rejected=0)
    assert added in result["kept"] and reg.status(added) == "staged"
    assert leftover in result["pruned"]
    reg.promote(added)
    assert reg.current() == added


def test_retention_keeps_the_teams_checkpoint_the_device_started_from(reg, tmp_path):
    """Before: 'models add start.pt --promote', five tiny rounds, and retention pruned v0001:
    the device kept no copy of the team's own model, the rollback of last resort."""
    model = tmp_path / "theirs.onnx"
    model.write_bytes(b"the team's checkpoint")
    start = reg.add(model, check=False)
    reg.promote(start)
    _history_run(reg, tmp_path, "PPPP")
    later = tmp_path / "later.onnx"
    later.write_bytes(b"a second model of theirs")
    second = reg.add(later, check=False)
    reg.promote(second)
    _history_run(reg, tmp_path, "PPP")
    result = reg.prune(keep_promoted=1, keep_rejected=0)
    assert start in result["kept"] and reg.status(start) == "retired"
    assert second in result["pruned"]  # the first one added is kept, not every one
    assert result["kept"] == [start, "v0008", "v0009"]


def test_retention_keeps_a_candidate_held_for_review_while_rounds_promote(reg, tmp_path):
    """Before: 'edgecl learn --no-promote' staged a candidate for a person to look at, and the
    next round's promotion pruned it (older than current) before anyone did."""
    _history_run(reg, tmp_path, "P")
    held = _stage(reg, tmp_path, b"held", parent=reg.current(), promote="manual")
    _history_run(reg, tmp_path, "PP")
    result = reg.prune(keep_promoted=2, keep_rejected=0)
    assert held in result["kept"] and reg.status(held) == "staged"
    held_too = [_stage(reg, tmp_path, f"held{k}".encode(), parent=reg.current(),
                       promote="manual") for k in range(2)]
    _history_run(reg, tmp_path, "P")
    result = reg.prune(keep_promoted=2, keep_rejected=0)  # bounded: the newest 2 held
    assert set(held_too) <= set(result["kept"]) and held in result["pruned"]


def test_retention_keeps_what_a_rollback_returns_to_before_what_was_rolled_back(reg, tmp_path):
    """Before: rolled back v4 -> v1, then v5 and v6 promoted: retention kept v2-v6 (the newest
    promoted, the versions rolled back away from among them) and pruned v1, so no rollback
    from v5 could reach anything ('no earlier intact version to roll back to')."""
    _history_run(reg, tmp_path, "PPPP")
    for _ in range(3):
        reg.rollback()
    assert reg.current() == "v0001"
    _history_run(reg, tmp_path, "PP")  # v5 learnt on v1, v6 on v5
    result = reg.prune(keep_promoted=4, keep_rejected=0)
    # the rollback chain v6 -> v5 -> v1 first, then the newest rolled back away from (v4)
    assert result["kept"] == ["v0001", "v0004", "v0005", "v0006"]
    assert result["pruned"] == ["v0002", "v0003"]
    assert reg.rollback() == "v0005" and reg.rollback() == "v0001"


def test_retention_keeps_the_parent_even_when_k_is_zero(reg, tmp_path):
    _history_run(reg, tmp_path, "PPP")
    result = reg.prune(keep_promoted=0, keep_rejected=0)
    assert result["kept"] == ["v0002", "v0003"] and result["pruned"] == ["v0001"]


def test_tombstones_are_bounded(reg, tmp_path, monkeypatch):
    import edgecl.models.registry as registry_module

    monkeypatch.setattr(registry_module, "MAX_TOMBSTONES", 2)
    _history_run(reg, tmp_path, "PPPPPP")
    result = reg.prune(keep_promoted=1, keep_rejected=0)
    assert result["pruned"] == ["v0001", "v0002", "v0003", "v0004"]
    assert result["deleted"] == ["v0001", "v0002"]
    assert reg.versions() == ["v0003", "v0004", "v0005", "v0006"]
    assert reg.history() == ["v0003", "v0004", "v0005", "v0006"]
    assert MAX_TOMBSTONES == 100


def test_engine_cache_is_bounded_lru(reg, tmp_path):
    cache = reg.root / "engine-cache"
    cache.mkdir()
    for i, key in enumerate("abcde"):
        (cache / f"{key}.engine").write_bytes(b"e" * 10)
        (cache / f"{key}.calib").write_bytes(b"c")
        os.utime(cache / f"{key}.engine", (1000 + i, 1000 + i))
    os.utime(cache / "a.engine", (2000, 2000))  # used most recently
    result = reg.prune(engine_cache_entries=2)
    assert sorted(p.name for p in cache.iterdir()) == ["a.calib", "a.engine", "e.calib", "e.engine"]
    assert result["engine_cache"] == {"kept": 2, "removed": 3, "freed_bytes": 33}


def test_read_only_registry_lists_and_refuses_changes_with_one_line(reg, tmp_path):
    from edgecl.errors import StorageError

    v1 = _stage(reg, tmp_path)
    reg.promote(v1)
    os.chmod(reg.root, 0o555)
    os.chmod(reg.root / ".lock", 0o444)
    try:
        if os.access(reg.root / ".lock", os.W_OK):
            pytest.skip("running as a user that ignores file permissions")
        ro = Registry(reg.root)
        assert ro.current() == v1 and [v.status for v in ro.list()] == ["promoted"]
        with pytest.raises(StorageError, match="cannot lock the model registry"):
            ro.promote(v1)
    finally:
        os.chmod(reg.root, 0o755)
        os.chmod(reg.root / ".lock", 0o644)


def _stage_with_engines(reg: Registry, tmp_path: Path) -> str:
    """A round's version: model.onnx + model.pt, two OpenVINO IRs (the INT8 one serves) and an
    INT8 ONNX model."""
    files = {}
    for name in ("model.onnx", "model.pt", "model-int8.onnx", "openvino/model.xml",
                 "openvino/model.bin", "openvino-int8/model.xml", "openvino-int8/model.bin"):
        files[name] = tmp_path / ("src-" + name.replace("/", "_"))
        files[name].write_bytes(name.encode())
    return reg.stage(files, {"serve": "openvino-int8/model.xml", "serve_engine": "openvino-int8"})


def test_a_damaged_derived_engine_is_skipped_for_the_next_one(reg, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    v1 = _stage_with_engines(reg, tmp_path)
    prefer = (".onnx", ".xml", ".pt")
    assert reg.model_path(v1, prefer, verify=True) == reg.root / v1 / "openvino-int8" / "model.xml"
    # the INT8 IR's weights flipped: same size, wrong sha256; only a verifying lookup sees it
    (reg.root / v1 / "openvino-int8" / "model.bin").write_bytes(b"XXXXXXXX-int8/model.bin")
    assert reg.model_path(v1, prefer).parent.name == "openvino-int8"
    assert reg.model_path(v1, prefer, verify=True) == reg.root / v1 / "model-int8.onnx"
    assert "engine openvino-int8/model.xml skipped" in caplog.text
    (reg.root / v1 / "model-int8.onnx").unlink()
    assert reg.model_path(v1, prefer, verify=True) == reg.root / v1 / "model.onnx"
    # the version itself stays intact: promote and rollback do not refuse it
    assert reg.verify(v1, essential_only=True) == []
    assert len(reg.verify(v1)) == 2
    reg.check_integrity(v1)
    reg.promote(v1)
    assert reg.current() == v1


def test_a_damaged_model_is_not_skipped(reg, tmp_path, monkeypatch):
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    v1 = _stage_with_engines(reg, tmp_path)
    (reg.root / v1 / "model.onnx").write_bytes(b"tampered")
    assert reg.verify(v1, essential_only=True) != []
    with pytest.raises(RegistryError, match="model.onnx does not match"):
        reg.check_integrity(v1)


def test_a_bare_engine_is_the_model(reg, tmp_path):
    from edgecl.models.registry import is_derived_engine

    assert is_derived_engine("openvino/model.bin", ["model.onnx", "openvino/model.bin"])
    assert is_derived_engine("model.engine", ["model.engine", "model.pt"])
    assert not is_derived_engine("model.engine", ["model.engine"])  # nothing to fall back to
    assert not is_derived_engine("model.onnx", ["model.onnx", "model-int8.onnx"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    v1 = reg.stage({"model.engine": engine}, {})
    engine_path = reg.root / v1 / "model.engine"
    engine_path.write_bytes(b"damaged")
    assert reg.verify(v1, essential_only=True) != []


@pytest.mark.parametrize("damage", ["file", "folder"])
def test_a_current_that_is_no_link_is_set_aside_and_points_at_the_last_promoted(reg, tmp_path,
                                                                               damage, caplog):
    """Before: a 'current' that was a file or a folder made 'edgecl run' say there was no
    model, and 'models list' showed every version retired, although two were intact."""
    v1, v2 = _stage(reg, tmp_path), _stage(reg, tmp_path, b"second")
    reg.promote(v1)
    reg.promote(v2)
    pointer = reg.root / "current"
    pointer.unlink()
    if damage == "file":
        pointer.write_bytes(b"garb\x00age\n")
    else:
        pointer.mkdir()
    again = Registry(reg.root)
    assert again.current() == v2 and again.history() == [v1, v2]
    aside = [p for p in reg.root.iterdir() if p.name.startswith(".current.damaged-")]
    assert len(aside) == 1 and (aside[0].is_dir() if damage == "folder" else
                                aside[0].read_bytes() == b"garb\x00age\n")
    assert f"'current' was a {damage}, not a link to a version; kept aside as" in caplog.text


@pytest.mark.parametrize("target", ["current", "/etc", "../models"])
def test_a_current_linking_out_of_the_registry_points_at_the_last_promoted_again(reg, tmp_path,
                                                                                target, caplog):
    """Before: a 'current' linking to itself or out of the registry made 'edgecl run' say there
    was no model and 'models verify' that nothing was current, although v0002 was intact."""
    v1, v2 = _stage(reg, tmp_path), _stage(reg, tmp_path, b"second")
    reg.promote(v1)
    reg.promote(v2)
    pointer = reg.root / "current"
    pointer.unlink()
    pointer.symlink_to(target)
    again = Registry(reg.root)
    assert again.current() == v2 and again.history() == [v1, v2]
    assert f"'current' pointed at {target!r}, not at a version folder of this registry; " \
           f"removed" in caplog.text


def test_a_current_link_written_another_way_keeps_its_version(
        reg, tmp_path, caplog):
    """A hand rollback written as an absolute path or 'v0001/' keeps v0001 (the first repair
    of links out of the registry reset it to the last promoted)."""
    v1, v2 = _stage(reg, tmp_path), _stage(reg, tmp_path, b"second")
    reg.promote(v1)
    reg.promote(v2)
    pointer = reg.root / "current"
    for written in (str((reg.root / v1).resolve()), f"{v1}/"):
        pointer.unlink()
        pointer.symlink_to(written)
        assert Registry(reg.root).current() == v1
        assert os.readlink(pointer) == v1
        assert f"'current' pointed at {written!r}; it points at {v1} again" in caplog.text


def test_a_deleted_history_is_rebuilt_with_every_promoted_version(reg, tmp_path, caplog):
    """Before: a deleted history.json became [current] alone, so a rollback said there was no
    earlier version although v0001 was intact."""
    v1, v2 = _stage(reg, tmp_path), _stage(reg, tmp_path, b"second")
    reg.promote(v1)
    reg.promote(v2)
    (reg.root / "history.json").unlink()
    again = Registry(reg.root)
    assert again.history() == [v1, v2]
    assert "history.json was missing; rebuilt from the versions' manifests: v0001, v0002" in caplog.text
    assert again.rollback() == v1


def test_a_registry_that_never_promoted_writes_no_history(reg, tmp_path, caplog):
    _stage(reg, tmp_path)
    Registry(reg.root)
    assert not (reg.root / "history.json").exists() and "history.json" not in caplog.text
