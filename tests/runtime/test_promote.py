"""Rolling back rewinds the learner's progress to the version now serving."""

from edgecl.continual.round_state import LearnerState, load_state, save_state
from edgecl.models.registry import Registry
from edgecl.runtime.promote import rollback_version


def _stage(registry: Registry, tmp_path, payload: bytes, **meta) -> str:
    src = tmp_path / "src.onnx"
    src.write_bytes(payload)
    return registry.stage({"model.onnx": src}, meta)


def _two_promoted(tmp_path):
    """A registry whose second version (learnt up to 90) replaced the first (up to 40), and the
    learner's progress at 90."""
    registry = Registry(tmp_path / "models")
    first = _stage(registry, tmp_path, b"b", parent=None, learnt_up_to=40)
    second = _stage(registry, tmp_path, b"c", parent=first, learnt_up_to=90)
    registry.promote(first)
    registry.promote(second)
    save_state(tmp_path, LearnerState(round=2, last_sample_id=90))
    return registry, first, second


def test_rollback_makes_the_retired_versions_samples_new_again(tmp_path):
    registry = Registry(tmp_path / "models")
    root = _stage(registry, tmp_path, b"a", source="user.pt")  # 'edgecl models add': no parent
    first = _stage(registry, tmp_path, b"b", parent=root, learnt_up_to=40)
    second = _stage(registry, tmp_path, b"c", parent=first, learnt_up_to=90)
    for version in (root, first, second):
        registry.promote(version)
    save_state(tmp_path, LearnerState(round=2, last_sample_id=90))
    # before: 'edgecl learn' then said "no new labelled samples" although the serving version
    # had never learnt samples 41..90 (a class taught only to the retired one included)
    assert rollback_version(tmp_path, registry) == first
    assert load_state(tmp_path).last_sample_id == 40 and load_state(tmp_path).round == 2
    assert rollback_version(tmp_path) == root  # a user's model learnt no sample of this memory
    assert load_state(tmp_path).last_sample_id == 0
    registry.promote(second)
    old = _stage(registry, tmp_path, b"d", parent=second)  # recorded no progress (older release)
    registry.promote(old)
    save_state(tmp_path, LearnerState(last_sample_id=7))
    assert rollback_version(tmp_path, registry) == second
    assert load_state(tmp_path).last_sample_id == 7  # never moved forward by a rollback


def test_a_rollback_to_a_version_of_an_older_release_rewinds_by_what_its_children_record(
        tmp_path, caplog):
    """A version made before manifests recorded progress: a rollback to it after an upgrade
    left every sample the retired versions had learnt counted as learnt (found on a device
    upgraded in place: 1 new sample where some 90 had never been learnt by the model now
    serving). The rounds since record the progress they started from."""
    registry = Registry(tmp_path / "models")
    root = _stage(registry, tmp_path, b"a", source="user.pt")
    old_one = _stage(registry, tmp_path, b"b", parent=root)             # older release
    old_two = _stage(registry, tmp_path, b"c", parent=old_one)          # older release
    new_one = _stage(registry, tmp_path, b"d", parent=old_two, learnt_up_to=120, learnt_from=48)
    new_two = _stage(registry, tmp_path, b"e", parent=new_one, learnt_up_to=139, learnt_from=120)
    for version in (root, old_one, old_two, new_one, new_two):
        registry.promote(version)
    save_state(tmp_path, LearnerState(round=5, last_sample_id=139))
    assert rollback_version(tmp_path, registry) == new_one
    assert load_state(tmp_path).last_sample_id == 120
    assert rollback_version(tmp_path, registry) == old_two
    assert load_state(tmp_path).last_sample_id == 48                   # new_one started there
    assert "records no learning progress" not in caplog.text
    assert rollback_version(tmp_path, registry) == old_one   # old_two records no start: said
    assert load_state(tmp_path).last_sample_id == 48
    assert "rollback to " + old_one + ": it records no learning progress" in caplog.text


def test_a_rollback_over_a_damaged_chain_of_parents_ends(tmp_path, caplog):
    """Parents that loop (hand-edited manifests) or are no version name: the rewind stops and
    says it cannot tell, instead of walking forever."""
    import json

    registry = Registry(tmp_path / "models")
    root = _stage(registry, tmp_path, b"a", source="user.pt")
    old = _stage(registry, tmp_path, b"b", parent=root)                 # older release
    one = _stage(registry, tmp_path, b"c", parent=old, learnt_from=5)
    two = _stage(registry, tmp_path, b"d", parent=one, learnt_from=9)
    for version in (root, old, one, two):
        registry.promote(version)
    save_state(tmp_path, LearnerState(last_sample_id=20))
    for damaged in (two, ["not", "a", "name"]):
        path = tmp_path / "models" / one / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "parent": damaged}))
        assert _learnt_before(registry, old) is None
    assert caplog.text.count("records no learning progress") == 2


def _learnt_before(registry, target):
    from edgecl.runtime.promote import _learnt_before_retired

    return _learnt_before_retired(registry, target)


def test_a_rollback_retires_the_versions_rows_in_the_monitor_and_a_promotion_brings_them_back(
        tmp_path):
    """The matrix, ACC and BWT run over the chain of promoted versions as the registry holds
    it: a rolled-back version leaves it (before: its row stayed 'promoted', and the summary
    named it as the model in service)."""
    from edgecl.continual.evaluate import EvalResult
    from edgecl.runtime.monitor import Monitor
    from edgecl.runtime.promote import promote_version

    def result(ap):
        return EvalResult(map50_95=ap, map50=ap, recall=0.5, precision=0.5,
                          per_class_ap50_95={0: ap}, n_images=2, n_boxes=2, dece=0.0)

    registry = Registry(tmp_path / "models")
    first = _stage(registry, tmp_path, b"b", parent=None, learnt_up_to=4)
    second = _stage(registry, tmp_path, b"c", parent=first, learnt_up_to=9)
    monitor = Monitor(tmp_path)
    for round_no, (version, ap) in enumerate(((first, 0.8), (second, 0.2)), 1):
        monitor.record_evaluation(round_no, version, {"cars": result(ap)}, ["cars"])
        monitor.record_round(round_no, version, "staged")
        promote_version(tmp_path, version)
    assert monitor.summary()["model_version"] == second
    assert rollback_version(tmp_path, registry) == first
    assert monitor.summary()["model_version"] == first
    assert monitor.summary()["n_promoted"] == 1
    assert monitor.accuracy_matrix()["versions"] == [first]
    promote_version(tmp_path, second)
    assert monitor.summary()["model_version"] == second
    assert monitor.accuracy_matrix()["versions"] == [first, second]


def test_a_metrics_database_from_before_the_retired_status_is_rebuilt_with_its_rows(tmp_path):
    import sqlite3

    from edgecl.runtime.monitor import DB_RELPATH, Monitor

    db_path = tmp_path / DB_RELPATH
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE rounds (round INTEGER NOT NULL, model_version TEXT NOT NULL, "
                   "status TEXT NOT NULL CHECK (status IN ('staged', 'promoted', 'rejected')), "
                   "reason TEXT, acc REAL, bwt REAL, mean_forgetting REAL, seconds REAL, "
                   "ts_s REAL NOT NULL, PRIMARY KEY (round, model_version))")
        db.execute("INSERT INTO rounds VALUES (1, 'v0001', 'promoted', 'ok', 0.5, 0, 0, 3, 1)")
    Monitor(tmp_path).follow_registry({"v0001": "retired"})
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT * FROM rounds").fetchall() == [
            (1, "v0001", "retired", "ok", 0.5, 0, 0, 3, 1)]
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "rounds_before_retired" not in tables


def test_a_promotion_stands_when_a_full_disk_keeps_the_metrics_database_behind(tmp_path,
                                                                               monkeypatch,
                                                                               caplog):
    """Before: 'edgecl models promote' on a full card printed an error and exited 2 although
    the registry had switched (the version served); now the promotion stands, a warning says
    the database lags, and sync_monitor brings it in line once it can be written."""
    from edgecl.continual.evaluate import EvalResult
    from edgecl.errors import StorageError
    from edgecl.runtime.monitor import Monitor
    from edgecl.runtime.promote import promote_version, sync_monitor

    registry = Registry(tmp_path / "models")
    version = _stage(registry, tmp_path, b"b", parent=None, learnt_up_to=4)
    monitor = Monitor(tmp_path)
    ap = EvalResult(map50_95=0.5, map50=0.5, recall=0.5, precision=0.5,
                    per_class_ap50_95={0: 0.5}, n_images=2, n_boxes=2, dece=0.0)
    monitor.record_evaluation(1, version, {"cars": ap}, ["cars"])
    monitor.record_round(1, version, "staged")

    def full(self, *args, **kwargs):
        raise StorageError("metrics database metrics.sqlite cannot be written: database or "
                           "disk is full")

    monkeypatch.setattr(Monitor, "set_version_status", full)
    monkeypatch.setattr(Monitor, "follow_registry", full)
    assert promote_version(tmp_path, version) is False
    assert registry.current() == version and "still shows its round" in caplog.text
    assert sync_monitor(tmp_path, registry) is False
    monkeypatch.undo()
    assert sync_monitor(tmp_path, registry) is True
    assert Monitor(tmp_path).summary()["model_version"] == version


def test_a_rollback_whose_progress_cannot_be_rewound_changes_nothing(tmp_path, monkeypatch):
    """Before: the registry switched, then the progress write failed on the full disk: the
    command said error while the rolled-back model served, counting the retired version's
    samples as learnt."""
    import errno

    import pytest

    from edgecl.continual import round_state
    from edgecl.errors import StorageError

    registry, first, second = _two_promoted(tmp_path)

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(round_state, "atomic_write_json", full)
    with pytest.raises(StorageError, match="progress cannot be rewound; nothing changed: No space"):
        rollback_version(tmp_path, registry)
    assert registry.current() == second and load_state(tmp_path).last_sample_id == 90
    monkeypatch.undo()
    assert rollback_version(tmp_path, registry) == first
    assert load_state(tmp_path).last_sample_id == 40


def test_versions_replaced_by_later_promotions_stay_in_the_monitors_chain(tmp_path):
    """The registry calls a version that a later promotion replaced 'retired', as it does a
    rolled-back one; syncing the monitor (every start does) dropped every replaced version from
    the chain: after a restart the summary read n_promoted 1 and BWT 0."""
    from edgecl.continual.evaluate import EvalResult
    from edgecl.runtime.monitor import Monitor
    from edgecl.runtime.promote import promote_version, sync_monitor

    def result(ap):
        return EvalResult(map50_95=ap, map50=ap, recall=0.5, precision=0.5,
                          per_class_ap50_95={0: ap}, n_images=2, n_boxes=2, dece=0.0)

    registry = Registry(tmp_path / "models")
    versions, parent = [], None
    for payload in (b"a", b"b", b"c"):
        parent = _stage(registry, tmp_path, payload, parent=parent, learnt_up_to=len(versions))
        versions.append(parent)
    monitor = Monitor(tmp_path)
    for round_no, (version, ap) in enumerate(zip(versions, (0.8, 0.6, 0.5)), 1):
        monitor.record_evaluation(round_no, version, {"cars": result(ap)}, ["cars"])
        monitor.record_round(round_no, version, "staged")
        promote_version(tmp_path, version)
    assert [registry.status(v) for v in versions] == ["retired", "retired", "promoted"]
    before = monitor.summary()
    assert before["n_promoted"] == 3 and round(before["bwt"], 6) == -0.3
    assert sync_monitor(tmp_path, registry)  # what a restart does
    after = Monitor(tmp_path).summary()
    assert (after["n_promoted"], round(after["bwt"], 6)) == (3, -0.3)
    assert Monitor(tmp_path).accuracy_matrix()["versions"] == versions
    # a rollback retires only the version rolled back
    assert rollback_version(tmp_path, registry) == versions[1]
    assert Monitor(tmp_path).accuracy_matrix()["versions"] == versions[:2]
    assert Monitor(tmp_path).summary()["n_promoted"] == 2


def test_a_promotion_sets_the_progress_to_what_the_version_learnt(tmp_path):
    """Before: promoting an older version left the progress of the newer one, so the samples
    only the newer one had learnt were never learnt by the version now serving; and promoting a
    version again after a rollback left the progress rewound, so its own samples were learnt a
    second time."""
    from edgecl.runtime.promote import promote_version

    registry = Registry(tmp_path / "models")
    root = _stage(registry, tmp_path, b"a", source="user.pt")
    first = _stage(registry, tmp_path, b"b", parent=root, learnt_up_to=40)
    second = _stage(registry, tmp_path, b"c", parent=first, learnt_up_to=90)
    old = _stage(registry, tmp_path, b"d", parent=first)  # an older release recorded none
    for version in (root, first, second):
        registry.promote(version)
    save_state(tmp_path, LearnerState(round=3, last_sample_id=95))  # a later round was rejected
    promote_version(tmp_path, first)
    assert load_state(tmp_path).last_sample_id == 40 and load_state(tmp_path).round == 3
    promote_version(tmp_path, second)
    assert load_state(tmp_path).last_sample_id == 90
    promote_version(tmp_path, old)
    assert load_state(tmp_path).last_sample_id == 90  # no record: left as it was
    promote_version(tmp_path, root)  # a user's model learnt none of this memory
    assert load_state(tmp_path).last_sample_id == 0


def test_a_promotion_whose_progress_cannot_be_set_back_changes_nothing(tmp_path, monkeypatch):
    import pytest

    from edgecl.continual import round_state
    from edgecl.errors import StorageError
    from edgecl.runtime.promote import promote_version

    registry, first, second = _two_promoted(tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(round_state, "atomic_write_json", full)
    with pytest.raises(StorageError, match=f"cannot promote {first}: the learner's progress"):
        promote_version(tmp_path, first)
    assert registry.current() == second and load_state(tmp_path).last_sample_id == 90


def test_a_refused_promotion_leaves_the_progress_as_it_was(tmp_path):
    """Before: ``models promote`` of a rejected version (or one failing its integrity check)
    said "not promoting", yet set the learner's progress back first: to 0 for a user's model
    file, so the next round learnt every sample of the memory again."""
    import pytest

    from edgecl.errors import RegistryError
    from edgecl.models.registry import VersionStatus
    from edgecl.runtime.promote import promote_version

    registry, first, second = _two_promoted(tmp_path)
    refused = _stage(registry, tmp_path, b"r", source="user.pt")  # learnt none: progress 0
    registry.set_status(refused, VersionStatus.REJECTED, "class ids disagree")
    with pytest.raises(RegistryError, match="was rejected"):
        promote_version(tmp_path, refused)
    assert registry.current() == second and load_state(tmp_path).last_sample_id == 90
    damaged = _stage(registry, tmp_path, b"x", source="user.pt")
    (registry.root / damaged / "model.onnx").write_bytes(b"y")
    with pytest.raises(RegistryError):
        promote_version(tmp_path, damaged)
    assert registry.current() == second and load_state(tmp_path).last_sample_id == 90


def test_a_promotion_the_version_refuses_is_409_over_http_and_an_unknown_one_404(tmp_path):
    """Before: promoting a rejected or damaged version answered 400, which says the request was
    malformed, where the version's state forbids it."""
    from edgecl.models.registry import VersionStatus

    registry, first, second = _two_promoted(tmp_path)
    client = _console_client(tmp_path, registry)
    refused = _stage(registry, tmp_path, b"r", source="user.pt")
    registry.set_status(refused, VersionStatus.REJECTED, "class ids disagree")
    damaged = _stage(registry, tmp_path, b"x", source="user.pt")
    (registry.root / damaged / "model.onnx").write_bytes(b"y")
    for version, words in ((refused, "was rejected (class ids disagree)"),
                           (damaged, "failed its integrity check")):
        reply = client.post(f"/api/models/{version}/promote")
        assert reply.status_code == 409 and words in reply.json()["error"]
    unknown = client.post("/api/models/v0042/promote")
    assert unknown.status_code == 404 and "unknown version v0042" in unknown.json()["error"]
    assert registry.current() == second


def _console_client(tmp_path, registry):
    """The console's HTTP API on this registry (a runtime reduced to what its hooks read)."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from edgecl.runtime.console import build_console_hooks
    from edgecl.web import create_app

    queue = SimpleNamespace(pending=list, image_path=str)
    sink = SimpleNamespace(queue=queue, answers=list, answered_image=str, correct=None,
                           withdraw=None)
    runtime = SimpleNamespace(memory_sink=sink, cfg=SimpleNamespace(state_dir=str(tmp_path)),
                              monitor=object(), live_view=None, health=dict, live=dict,
                              vitals=dict, registry=registry, classes=None)
    return TestClient(create_app(build_console_hooks(runtime)), raise_server_exceptions=False)


def test_a_conditional_rollback_over_http_happens_once(tmp_path):
    """Before: three POST /api/models/rollback (a retried request, a double click) rolled back
    three versions, and "nothing to roll back to" was a 400 although the state forbids it."""
    registry, first, second = _two_promoted(tmp_path)
    client = _console_client(tmp_path, registry)
    assert client.post(f"/api/models/rollback?from={second}").json() == {"current": first}
    again = client.post(f"/api/models/rollback?from={second}")
    assert again.status_code == 409 and again.json() == {"error": (
        f"the current version is {first}, not {second}: another rollback or promotion came "
        f"first; nothing changed")}
    assert registry.current() == first
    nothing = client.post(f"/api/models/rollback?from={first}")
    assert nothing.status_code == 409
    assert nothing.json() == {"error": "no earlier intact version to roll back to"}
    assert client.post("/api/models/rollback?from=../x").status_code == 404
    unknown = client.post("/api/models/rollback?from=v0009")
    assert unknown.status_code == 404 and "no model version v0009" in unknown.json()["error"]


def test_promotions_sent_together_from_one_version_promote_once_and_log_what_they_replaced(
        tmp_path, caplog):
    """Before: four promotions sent at once all answered 200, two of them naming a version
    that no longer served, and each logged 'was v0002'; promoting the current version logged
    'v0001 promoted by an operator (was v0001)'."""
    import logging
    import threading

    registry, first, second = _two_promoted(tmp_path)
    third = _stage(registry, tmp_path, b"d", parent=second, learnt_up_to=95)
    client = _console_client(tmp_path, registry)
    replies, start = [], threading.Barrier(4)

    def ask(version):
        start.wait()
        replies.append(client.post(f"/api/models/{version}/promote?from={second}"))

    with caplog.at_level(logging.INFO, logger="edgecl.runtime.console"):
        threads = [threading.Thread(target=ask, args=(v,)) for v in (third, first, third, first)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    done = [r.json() for r in replies if r.status_code == 200]
    assert len(done) == 1 and sorted(r.status_code for r in replies) == [200, 409, 409, 409]
    assert done[0]["previous"] == second and registry.current() == done[0]["current"]
    assert [m for m in caplog.messages if "promoted by an operator" in m] == [
        f"console: {done[0]['current']} promoted by an operator (was {second})"]
    same = client.post(f"/api/models/{registry.current()}/promote?from={registry.current()}")
    assert same.status_code == 409 and same.json() == {
        "error": f"{registry.current()} is already the current version; nothing changed"}
    caplog.clear()
    # without from: before, 200 {"current": X, "previous": X} and a log line 'promoted (was X)'
    same = client.post(f"/api/models/{registry.current()}/promote")
    assert same.status_code == 409 and same.json() == {
        "error": f"{registry.current()} is already the current version; nothing changed"}
    assert not [m for m in caplog.messages if "promoted by an operator" in m]
    assert client.post(f"/api/models/{second}/promote?from=v0009").status_code == 404
    spec = client.get("/openapi.json").json()["paths"]
    for path in ("/api/models/{version}/promote", "/api/models/rollback"):
        assert "from" in [p["name"] for p in spec[path]["post"]["parameters"]]


def test_rollbacks_sent_together_from_one_version_roll_back_once(tmp_path):
    """Before: the precondition was checked outside the registry's lock, and of 6 requests
    sent together 3 rolled back (v0004 -> v0001)."""
    import threading

    from edgecl.errors import EdgeclError

    registry = Registry(tmp_path / "models")
    versions = [_stage(registry, tmp_path, bytes([65 + k]), learnt_up_to=k) for k in range(4)]
    for version in versions:
        registry.promote(version)
    results, start = [], threading.Barrier(6)

    def ask():
        start.wait()
        try:
            results.append(rollback_version(tmp_path, Registry(tmp_path / "models"), versions[-1]))
        except EdgeclError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([versions[-2]] + ["ConflictError"] * 5)
    assert registry.current() == versions[-2]


def test_a_rollback_past_the_first_version_names_the_checkpoint_the_device_started_from(tmp_path):
    """Before: a device started from its team's checkpoint (model.path) could not roll back to
    it, and the refusal said only "no earlier intact version to roll back to"."""
    import pytest

    from edgecl.models.registry import NothingToRollBackError

    registry = Registry(tmp_path / "models")
    version = _stage(registry, tmp_path, b"first", parent="checkpoint:best.pt")
    registry.promote(version)
    save_state(tmp_path, LearnerState(round=1, last_sample_id=4))
    with pytest.raises(NothingToRollBackError) as refused:
        rollback_version(tmp_path, registry)
    assert str(refused.value) == (
        f"no earlier intact version to roll back to; the device started from the checkpoint "
        f"best.pt (model.path or --model), which is no version: 'edgecl models add PATH/best.pt "
        f"--promote --state-dir {tmp_path}' serves it again")
    assert registry.current() == version
    from edgecl.models.classes import ClassRegistry

    team = tmp_path / "team" / "best.pt"  # recorded with the classes: its path is named
    ClassRegistry(tmp_path).seed({0: "car"}, checkpoint=str(team))
    with pytest.raises(NothingToRollBackError) as refused:
        rollback_version(tmp_path, registry)
    assert f"'edgecl models add {team} --promote --state-dir {tmp_path}'" in str(refused.value)


def test_a_round_overtaken_by_a_class_merge_is_held_not_promoted(tmp_path):
    """Before: a round that began before 'classes merge Auto Car' was promoted after it, gated
    as if Auto were apart ('the parent scores 0 on Auto, a class it did not know')."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.runtime.promote import hold_unpromoted, merged_since, not_promoted_because

    classes = ClassRegistry(tmp_path)
    classes.add(["Car", "Auto", "Person"])
    registry, first, second = _two_promoted(tmp_path)
    third = _stage(registry, tmp_path, b"d", parent=second, learnt_up_to=120,
                   merged_classes={})
    older = _stage(registry, tmp_path, b"e", parent=second, learnt_up_to=120)  # no record
    assert not_promoted_because(tmp_path, registry, third) is None
    classes.merge("Auto", "Car")  # while the round ran
    assert merged_since(tmp_path, registry, third) == ["Auto into Car"]
    assert merged_since(tmp_path, registry, older) == []  # a manifest of a release before
    serving, warning = not_promoted_because(tmp_path, registry, third)
    assert serving == second and warning == (
        f"{third} is not promoted: Auto into Car merged while its round ran, which learnt and "
        f"judged the classes apart; the next round learns its samples with the merge ('edgecl "
        f"models promote {third}' serves it anyway)")
    hold_unpromoted(tmp_path, registry, third, serving)
    assert registry.manifest(third)["promote"] == "manual"
    assert load_state(tmp_path).last_sample_id == 90  # what the serving version learnt
    # a round that began after the merge records it, and is promoted
    fourth = _stage(registry, tmp_path, b"f", parent=second, learnt_up_to=130,
                    merged_classes={"1": 0})
    assert not_promoted_because(tmp_path, registry, fourth) is None


def test_promoting_a_version_of_fewer_classes_names_those_it_does_not_detect(tmp_path, caplog):
    """Before: a team's checkpoint of 2 classes promoted over a version of 4 said only
    'promoted v0003'; the drone stopped detecting 2 classes without a word. A device's first
    model, or a round's version (its head grows), loses nothing and says nothing."""
    import logging

    from edgecl.models.classes import ClassRegistry
    from edgecl.runtime.promote import promote_version

    classes = ClassRegistry(tmp_path)
    classes.add(["Person", "Car", "OtherVehicle", "Bicycle", "Drone"])  # Drone: no version yet
    classes.rename("Car", "car")  # renamed since: still the class the versions detect (by id)
    registry = Registry(tmp_path / "models")
    first = _stage(registry, tmp_path, b"f", classes={"0": "Person", "1": "Car"})
    full = _stage(registry, tmp_path, b"g", classes={"0": "Person", "1": "car",
                                                     "2": "OtherVehicle", "3": "Bicycle"})
    small = _stage(registry, tmp_path, b"s", classes={"0": "Person", "1": "Car"})
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.promote"):
        promote_version(tmp_path, first)  # the first: replaces none
        promote_version(tmp_path, full)  # grows
        promote_version(tmp_path, small)
    assert caplog.messages == [
        f"{small} does not detect OtherVehicle, Bicycle, which {full} detected, until a round "
        f"learns them on top of it (the samples stay in the replay memory)"]
