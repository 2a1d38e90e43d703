"""``edgecl status``: what a device is doing, read from its state directory without writing."""

import fcntl
import json
import os

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.round_state import LearnerState, save_state
from edgecl.frames import Detections, Frame, LabelOrigin
from edgecl.models.classes import ClassRegistry
from edgecl.models.registry import Registry

BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)


def _status(capsys, state, *extra):
    code = main(["status", "--state-dir", str(state), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _tree(root):
    """Every path under ``root``, each file with its size and modification time (a folder's
    own time moves with the index's transient SQLite journal, which leaves nothing)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.fixture()
def device(tmp_path):
    """A device after two rounds: 10 samples (3 held out with seed 2), v0002 promoted,
    the learner's progress at sample id 6, one round's record."""
    state = tmp_path / "state"
    cfg = MemoryConfig(holdout_fraction=0.3, seed=2)
    with ReplayMemory(state / "memory", cfg, names={0: "car", 1: "drone"}) as m:
        for i in range(10):
            origin = LabelOrigin.OPERATOR if i == 9 else LabelOrigin.GROUND_TRUTH
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX, task="stream",
                         origin=origin))
        held = {r.id for r in m.records(held_out=True)}
    ClassRegistry(state).add(["car", "drone"])
    reg = Registry(state / "models")
    for i in range(2):
        src = tmp_path / f"m{i}.onnx"
        src.write_bytes(bytes([i]) * 64)
        reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "drone"},
                                        "metrics": {"acc": 0.25 + i / 10}})
    reg.promote("v0001")
    reg.promote("v0002")
    save_state(state, LearnerState(round=2, last_sample_id=6))
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "staged", "reason": "accepted: ACC 0.250 -> 0.350", "round": 2,
         "version": "v0002", "trigger": "new_samples", "seconds": 41.6}))
    return state, held


def test_json_reports_each_part_from_the_state_directory(device, capsys):
    state, held = device
    code, out, _ = _status(capsys, state, "--json")
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["runtime"] == {"running": False, "pid": None, "detect_only": False,
                                 "import_running": False, "unclean_pid": None}
    assert report["serving"]["version"] == "v0002" and report["serving"]["classes"] == 2
    assert report["serving"]["acc"] == pytest.approx(0.35)
    # the round staged v0002 and it serves now: promoted since
    assert report["round"]["last"]["status"] == "promoted"
    assert report["round"]["running"] is None
    # ids 1..10; learnt up to 6; 7, 8, 9, 10 are new unless held out
    assert report["learning"]["not_learnt"] == sum(i not in held for i in (7, 8, 9, 10))
    assert report["memory"]["samples"] == 10 and report["memory"]["held_out"] == len(held)
    assert report["memory"]["per_origin"]["operator"] == 1
    assert report["memory"]["per_origin"]["ground_truth"] == 9
    assert report["classes"]["names"] == {"0": "car", "1": "drone"}
    assert report["operator"] == {"pending": 0, "malformed": []}
    assert report["problems"] == []


def test_reading_writes_nothing(device, capsys):
    state, _ = device
    before = _tree(state)
    for extra in ((), ("--json",)):
        assert _status(capsys, state, *extra)[0] == 0
    assert _tree(state) == before


def test_text_names_the_serving_version_and_the_last_round(device, capsys):
    state, _ = device
    code, out, _ = _status(capsys, state)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "v0002 (" in lines["serving"] and "2 classes" in lines["serving"]
    assert "round 2 promoted v0002 (serving), ended" in lines["round"] and "took 42 s" in lines["round"]
    assert "not running" in lines["runtime"]
    assert "10/" in lines["memory"] and "operator 1" in lines["memory"]
    assert lines["classes"].endswith("2: car, drone")


def test_a_running_runtime_and_round_are_shown(device, capsys):
    state, _ = device
    (state / "learner" / "running.json").write_text(json.dumps(
        {"started": "2026-12-07T10:00:00+00:00", "trigger": "interval", "steps": 12,
         "total_steps": 250}))
    with open(state / "lock", "a+") as lock, \
            open(state / "learner" / "round.lock", "a+") as round_lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(round_lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        code, out, _ = _status(capsys, state)
    assert code == 0
    assert f"running (pid {os.getpid()})" in out
    assert "running since 2026-12-07T10:00:00+00:00 (trigger: interval), step 12/250" in out


def test_a_round_cut_short_is_said_when_no_round_runs(device, capsys):
    state, _ = device
    (state / "learner" / "running.json").write_text(json.dumps({"started": "2026-12-07T10:00"}))
    out = _status(capsys, state)[1]
    assert "a round started 2026-12-07T10:00 was cut short (the next start learns its samples " \
           "again)" in out
    src = state.parent / "m3.onnx"  # a kill after the round staged its version: promoted at start
    src.write_bytes(b"\x03" * 64)
    Registry(state / "models").stage({"model.onnx": src}, {"memory_snapshot": "s0003"})
    assert "was cut short (the next start promotes v0003, which it staged)" in \
        _status(capsys, state)[1]


def test_a_failed_round_is_a_problem_and_exits_1(device, capsys):
    state, _ = device
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "failed", "reason": "out of memory", "round": 3}))
    code, out, _ = _status(capsys, state)
    assert code == 1
    assert out.splitlines()[-1] == "problem: the last learning round failed: out of memory"


def test_a_damaged_part_is_shown_unreadable_and_the_rest_still_shown(device, capsys):
    state, _ = device
    (state / "learner" / "last_round.json").write_text("{not json")
    (state / "classes.json").write_text("[1, 2")
    code, out, err = _status(capsys, state, "--json")
    assert code == 1 and "Traceback" not in err
    report = json.loads(out.strip().splitlines()[-1])
    assert "unreadable" in report["round"] and "unreadable" in report["classes"]
    assert report["serving"]["version"] == "v0002" and report["memory"]["samples"] == 10
    assert [p.split(":")[0] for p in report["problems"]] == ["round", "classes"]
    assert report["round"]["unreadable"] == (
        f"{state / 'learner' / 'last_round.json'} is not readable JSON (Expecting property name "
        f"enclosed in double quotes: line 1 column 2 (char 1)); the next round's result "
        f"replaces it (delete it to clear this line)")
    (state / "learner" / "last_round.json").write_bytes(b"\xf0\x28\x8c")
    (state / "memory" / "index.sqlite").write_bytes(b"\x00" * 4096)
    out = _status(capsys, state)[1]
    assert f"{state / 'learner' / 'last_round.json'} is not text (damaged)" in out
    # before: "nothing stored yet" of a memory whose index could not be read
    assert "learning   unknown: the replay memory cannot be read (see memory)" in out


@pytest.mark.parametrize("record", ['{"status": "failed", "seconds": "long"}',
                                    '{"status": "eaten"}', "[" * 100_000 + "]" * 100_000])
def test_a_hand_edited_round_record_is_unreadable_not_a_traceback(device, capsys, record):
    state, _ = device
    (state / "learner" / "last_round.json").write_text(record)
    code, out, err = _status(capsys, state, "--json")
    assert code == 1 and "Traceback" not in err
    report = json.loads(out.strip().splitlines()[-1])
    assert "unreadable" in report["round"] and report["serving"]["version"] == "v0002"


def test_a_new_device_has_nothing_yet(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    code, out, _ = _status(capsys, state)
    assert code == 0
    # before: "the model the device was started with (model.path)", of a device never started
    assert "no version yet: a start serves the file of model.path (or --model)" in out
    assert "'edgecl models add MODEL.pt --promote' makes a checkpoint the first version" in out
    assert "none has ended yet" in out
    assert "nothing stored yet" in out and "empty: nothing stored yet" in out
    assert sorted(p.name for p in state.iterdir()) == []


def test_a_missing_state_directory_is_one_line(tmp_path, capsys):
    code, out, err = _status(capsys, tmp_path / "nope")
    assert code != 0 and "Traceback" not in err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_learner_settings_come_from_the_config_when_given(device, tmp_path, capsys):
    state, _ = device
    cfg = tmp_path / "dev.yaml"
    cfg.write_text(f"state_dir: {state}\nlearner:\n  trigger_new_samples: 5\n"
                   "  trigger_interval_s: 60\n")
    code = main(["status", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.split()[0] == "learning")
    assert "a round starts at 5 (learner.trigger_new_samples) or every 60 s" in line
    assert "default settings" not in line
    main(["status", "--state-dir", str(state), "learner.trigger_new_samples=7"])
    out = capsys.readouterr().out  # before: "(default settings: ...)" beside the override's 7
    assert "a round starts at 7 (learner.trigger_new_samples)" in out and "default settings" not in out


def test_a_long_class_list_is_cut_in_text_and_whole_in_json(device, capsys):
    state, _ = device
    ClassRegistry(state).add([f"class{i}" for i in range(20)])
    out = _status(capsys, state)[1]
    assert "22: car, drone, class0" in out and "and 10 more ('edgecl classes list')" in out
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert len(report["classes"]["names"]) == 22


def _run_holding_lock(state, fn):
    """Call ``fn`` while this process holds the runtime's lock of ``state`` (pid written)."""
    with open(state / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return fn()


def test_frames_waiting_in_the_operator_queue_are_counted(device, capsys):
    """Before: the queue was looked for in STATE/queue (it is STATE/labels): every device read
    'no frame waiting for a person' while `labels pending` listed 12."""
    from edgecl.config import Config
    from edgecl.runtime.labels import OperatorQueue

    state, _ = device
    queue = OperatorQueue.from_config(Config(state_dir=str(state)))
    for k in range(3):
        frame = Frame(image=np.full((32, 32, 3), 40 * k, np.uint8), frame_id=k, ts_s=float(k),
                      source="cam")
        queue.push(frame, Detections(), reasons={"uncertain": 0.5})
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert report["operator"] == {"pending": 3, "malformed": []}
    assert "3 frame(s) waiting for a person" in _status(capsys, state)[1]
    damaged = sorted((state / "labels" / "pending").glob("*.json"))[0]
    damaged.write_bytes(b"{\"id\": ")  # a card fault: before, only warnings on stderr, exit 0
    code, out, _ = _status(capsys, state)
    assert code == 1 and "2 frame(s) waiting for a person" in out
    assert out.splitlines()[-1] == (f"problem: operator: 1 queue item(s) are damaged and not "
                                    f"offered ({damaged.stem}): 'edgecl labels skip ID' sets "
                                    f"each aside")


def test_the_running_runtimes_settings_and_wait_are_shown(device, capsys):
    """Before: a runtime started with learner.trigger_new_samples=5 read 'a round starts at
    100 (default settings ...)', and a due round waiting for disk room (/healthz degraded)
    read as about to start, exit 0."""
    from edgecl.runtime.run_record import RunRecord

    state, _ = device
    record = RunRecord(state, os.getpid(), "2026-12-08T01:00:00+00:00",
                       {"enabled": True, "trigger_new_samples": 5, "trigger_interval_s": 0,
                        "trigger_new_class": False})
    record.learner("waiting_for_room", "a round needs about 44.2 MiB, 16.7 MiB free")
    code, out, _ = _run_holding_lock(state, lambda: _status(capsys, state))
    line = next(line for line in out.splitlines() if line.split()[0] == "learning")
    since = json.loads((state / "runtime.json").read_text())["learner_since"]
    # with the time it was said: a card too full for the record keeps an older line
    assert (f"a round starts at 5 (learner.trigger_new_samples); a due round waits (as the "
            f"runtime said at {since}): a round needs about 44.2 MiB, 16.7 MiB free") in line
    assert code == 1 and out.splitlines()[-1] == (
        "problem: learning: a round needs about 44.2 MiB, 16.7 MiB free")
    record.learner("idle", None)  # room came back
    code, out, _ = _run_holding_lock(state, lambda: _status(capsys, state))
    assert code == 0 and "waits" not in out
    code, out, _ = _status(capsys, state)  # the runtime stopped: its settings, named as its
    assert code == 0
    assert "a round starts at 5 (learner.trigger_new_samples) (as the last run, started " \
           "2026-12-08T01:00:00+00:00, set it)" in out


def test_a_hand_edited_run_record_falls_back_to_the_config(device, capsys):
    state, _ = device
    for text in ('{"pid": 1, "learner": {"enabled": "yes", "trigger_new_samples": 5, '
                 '"trigger_interval_s": 0}}', "[1, 2", "[" * 100_000):
        (state / "runtime.json").write_text(text)
        code, out, err = _status(capsys, state)
        assert code == 1 and "Traceback" not in err  # before: exit 0, the file not named
        assert ("a round starts at 100 (learner.trigger_new_samples) or a sample of a new class "
                "(learner.trigger_new_class) (default settings") in out
        assert out.splitlines()[-1] == (f"problem: learning: {state / 'runtime.json'} is "
                                        f"unreadable: the settings shown are the config's; the "
                                        f"runtime's next start writes it again")


def test_the_last_rounds_version_is_shown_as_it_is_now(device, capsys):
    """Before: a round's version promoted, then replaced by a version promoted by hand, read
    'round 2 staged v0002' (a candidate waiting) though it had served."""
    state, _ = device
    reg = Registry(state / "models")
    reg.promote("v0001")
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert report["round"]["last"]["status"] == "promoted"
    assert report["round"]["last"]["version_status"] == "retired"
    assert "round 2 promoted v0002 (since retired)" in _status(capsys, state)[1]
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "staged", "round": 3, "version": "v0009", "seconds": 4.0}))
    assert "round 3 staged v0009 (now missing)" in _status(capsys, state)[1]


def test_a_serving_version_with_a_damaged_manifest_is_a_problem(device, capsys):
    """Before: 'serving v0002 (no usable engine), made ' and exit 0."""
    state, _ = device
    manifest = state / "models" / "v0002" / "manifest.json"
    manifest.write_text(manifest.read_text()[:30])
    code, out, _ = _status(capsys, state)
    line = next(line for line in out.splitlines() if line.split()[0] == "serving")
    assert not line.rstrip().endswith("made")
    assert code == 1 and any(p.startswith("problem: serving: the serving version v0002 is damaged "
                                          "(corrupt manifest") for p in out.splitlines())
    assert "round 2 promoted v0002" not in out and "(now corrupt)" in out


def test_a_serving_engine_that_fails_its_sha256_is_a_problem(device, capsys):
    """Before: a truncated model.onnx of the serving version read as serving, exit 0; the next
    start rolled back to the version before it."""
    state, _ = device
    (state / "models" / "v0002" / "model.onnx").write_bytes(b"\x01" * 10)
    code, out, _ = _status(capsys, state)
    assert code == 1
    problem = out.splitlines()[-1]
    assert problem.startswith("problem: serving: the serving version v0002 is damaged (")
    assert "model.onnx" in problem and "newest intact version from its next start" in problem


def test_a_fleet_servers_folder_shows_its_rounds_not_an_empty_device(tmp_path, capsys):
    """Before: a server's folder read as an empty device ("round none has ended yet", "classes
    none yet"), with nothing of its 47 rounds."""
    from edgecl.fleet.store import GlobalStore

    state = tmp_path / "server"
    store = GlobalStore(state / "fleet")
    store.save(3, {"w": np.zeros(4, np.float32)}, ["car", "person"])
    store.append_round({"round": 3, "bytes": 2_000_000, "names": ["car", "person"],
                        "devices": {"robotA": {"update": "kept"}},
                        "adoption": {"robotA": {"status": "promoted"},
                                     "robotC": {"status": "promoted"}}})
    code, out, _ = _status(capsys, state)
    assert code == 0
    assert out.splitlines()[1:] == [
        "  fleet      a fleet server's folder (server not running): round 3, 2 classes (car, "
        "person); last round 3: 2.0 MB, 2 classes; robotA: kept (the new model: promoted), "
        "robotC: not sampled (the new model: promoted)", out.splitlines()[2]]
    assert out.splitlines()[2].startswith("  disk ")
    (state / "fleet" / "global-000003.npz").write_bytes(b"garbage")
    code, out, _ = _status(capsys, state)
    assert code == 1 and "problem: fleet: the server's global model cannot be loaded: " \
        "global-000003.npz fails its checksum" in out


def test_a_device_names_the_fleet_round_it_adopted_and_its_client(device, capsys):
    """Before: nothing of the fleet on a device a fleet client served (3 rounds adopted)."""
    state, _ = device
    src = state.parent / "g.onnx"
    src.write_bytes(b"\x07" * 64)
    reg = Registry(state / "models")
    reg.stage({"model.onnx": src}, {"origin": "fleet round 3"})
    reg.promote("v0003")
    with open(state / "fleet-client.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        out = _status(capsys, state)[1]
    line = next(line for line in out.splitlines() if line.split()[0] == "fleet")
    assert line == (f"  fleet      a fleet client serves this device (pid {os.getpid()}); last "
                    f"adopted fleet round 3 as v0003 (serving)")
    assert "  fleet      last adopted fleet round 3 as v0003 (serving)" in _status(capsys, state)[1]


def test_a_read_only_volume_is_a_problem(device, capsys, monkeypatch):
    """Before: 'runtime not running', exit 0, of a card the kernel had remounted read-only
    (the runtime then could not start at all; now it only detects)."""
    state, _ = device
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self._stat = real(path)
            self.f_flag = self._stat.f_flag | os.ST_RDONLY

        def __getattr__(self, name):  # the sizes, as the volume has them
            return getattr(self._stat, name)

    monkeypatch.setattr(os, "statvfs", ReadOnly)
    code, out, _ = _status(capsys, state)
    assert code == 1 and "on the state directory's volume, mounted read-only" in out
    assert out.splitlines()[-1].startswith("problem: the state directory's volume is mounted "
                                           "read-only")
    # what the runtime does about it, as the runtime section reads it (before: 'the runtime
    # only detects' whether one ran in full, only detected, or none ran)
    from edgecl.runtime.lock import RuntimeLock, detect_only_lock

    assert "a runtime started now only detects" in out.splitlines()[-1]
    with RuntimeLock(state):
        out = _status(capsys, state)[1]
    assert "the running runtime detects but cannot store, label or learn" in out.splitlines()[-1]
    with RuntimeLock(*detect_only_lock(state)):
        out = _status(capsys, state)[1]
    assert "the runtime only detects, storing, labelling and learning nothing" in \
        out.splitlines()[-1]


def test_a_runtime_that_only_detects_is_shown_running(device, capsys):
    """Before: a runtime started on a read-only card (detecting only, no lock in its state
    directory) read 'not running', and an operator would start a second one."""
    from edgecl.runtime.lock import RuntimeLock, detect_only_lock

    state, _ = device
    with RuntimeLock(*detect_only_lock(state)):
        out = _status(capsys, state)[1]
    assert (f"  runtime    running (pid {os.getpid()}), only detecting: its state directory could "
            f"not be written at its start") in out
    assert "runtime    not running" in _status(capsys, state)[1]


def test_the_serving_line_names_classes_taught_since_its_version_was_made(device, capsys):
    """Before: 'serving v0002 ..., 2 classes' while the device had 3 (Drone taught since):
    nothing said the drone did not detect it."""
    state, _ = device
    ClassRegistry(state).add(["bird"])
    out = _status(capsys, state)[1]
    line = next(line for line in out.splitlines() if line.split()[0] == "serving")
    assert line.endswith("does not detect bird yet (a round learns a class on top of it once "
                         "the replay memory holds samples of it)")


def test_a_class_merged_away_since_the_version_was_made_is_not_to_be_detected(device, capsys):
    """Before: 'does not detect brid, bird yet (a round learns a class ... once the replay memory
    holds samples of it)' after 'classes merge brid bird': a merged class never has samples."""
    state, _ = device
    registry = ClassRegistry(state)
    registry.add(["brid", "bird"])
    registry.merge("brid", "bird")
    out = _status(capsys, state)[1]
    line = next(line for line in out.splitlines() if line.split()[0] == "serving")
    assert line.endswith("does not detect bird yet (a round learns a class on top of it once "
                         "the replay memory holds samples of it)")
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert report["serving"]["not_detected"] == ["bird"]


def test_a_class_merged_into_another_is_not_counted_as_a_class(device, capsys):
    """Before: 'classes 3: car, drone, dron' after 'classes merge dron drone'."""
    state, _ = device
    registry = ClassRegistry(state)
    registry.add(["dron"])
    registry.merge("dron", "drone")
    out = _status(capsys, state)[1]
    assert "  classes    2: car, drone; merged: dron into drone" in out
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert report["classes"]["merged"] == {"dron": "drone"}


def test_a_staged_last_round_says_who_promotes_it(device, capsys):
    """Before: 'round 3 staged v0003 (not yet promoted)', nothing of the next start promoting
    it (it did) or of a candidate held for a person."""
    state, _ = device
    src = state.parent / "c.onnx"
    src.write_bytes(b"\x05" * 64)
    reg = Registry(state / "models")
    reg.stage({"model.onnx": src}, {"memory_snapshot": "s3"})
    reg.stage({"model.onnx": src}, {"memory_snapshot": "s4", "promote": "manual"})
    for version, said in (("v0003", "(not yet promoted: the runtime's next start promotes it; "
                                    "'edgecl models discard' stops that)"),
                          ("v0004", "(held for a person: 'edgecl models promote' serves it)")):
        (state / "learner" / "last_round.json").write_text(json.dumps(
            {"status": "staged", "round": 3, "version": version, "seconds": 4.0}))
        assert f"round 3 staged {version} {said}" in _status(capsys, state)[1]


def test_a_runtime_that_did_not_stop_cleanly_is_a_problem(device, capsys):
    """Before: 'runtime not running', exit 0, after a kill -9 (the pid left in its lock)."""
    state, _ = device
    (state / "lock").write_text("7006\n")  # a clean stop clears it
    code, out, _ = _status(capsys, state)
    assert code == 1
    assert ("  runtime    not running; the last runtime (pid 7006) did not stop cleanly (killed, "
            "crashed or powered off)") in out
    assert "problem: the runtime is not running and did not stop cleanly (pid 7006" in out


def test_a_damaged_memory_index_is_unreadable_not_a_healthy_memory(device, capsys):
    """Before: two damaged pages of the index read as '10/... samples' and exit 0 (SQLite
    reads pages lazily), while imports and answers were refused."""
    state, _ = device
    index = state / "memory" / "index.sqlite"
    data = bytearray(index.read_bytes())
    data[4096:4096 + 8192] = b"\xff" * min(8192, len(data) - 4096)
    index.write_bytes(bytes(data))
    code, out, _ = _status(capsys, state)
    assert code == 1
    line = next(line for line in out.splitlines() if line.split()[0] == "memory")
    assert "unreadable: " in line and "'edgecl memory verify --rebuild-index' rebuilds it" in line


def test_a_rounds_end_is_its_own_time_not_its_files(device, capsys):
    """Before: a last_round.json copied back (scp, cp without -p) read as ended when copied."""
    state, _ = device
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "rejected", "round": 5, "version": "v0002", "seconds": 24.0,
         "started_s": 1796692462.0}))  # 2026-12-08T01:14:22Z + 24 s
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert report["round"]["last"]["ended"] == "2026-12-08T01:14:46+00:00"


def test_a_fleet_server_before_its_first_round_is_a_servers_folder(tmp_path, capsys):
    """Before: a running server waiting for its devices read as an empty device's folder."""
    from edgecl.runtime.lock import RuntimeLock

    state = tmp_path / "server"
    with RuntimeLock(state / "fleet"):
        out = _status(capsys, state)[1]
    assert out.splitlines()[1] == (f"  fleet      a fleet server's folder (server running, pid "
                                   f"{os.getpid()}): round 0, 0 classes")


def test_a_damaged_only_version_names_a_way_out_that_exists(tmp_path, capsys):
    """Before: 'models rollback serves the version before it' where no version was left: the
    rollback then failed too."""
    state = tmp_path / "state"
    src = tmp_path / "m.onnx"
    src.write_bytes(b"\x09" * 64)
    reg = Registry(state / "models")
    reg.stage({"model.onnx": src}, {})
    reg.promote("v0001")
    (state / "models" / "v0001" / "model.onnx").write_bytes(b"\x00")
    out = _status(capsys, state)[1]
    assert out.splitlines()[-1].endswith(
        "no earlier version is kept: 'edgecl models add --promote FILE' serves a copy you trust "
        "(the version's own model.onnx or model.pt, if intact))")


def test_a_wait_whose_figures_move_is_not_rewritten_at_each_change(tmp_path, monkeypatch):
    """A wait for room names the free MiB, which move with every stored frame: written each
    time, the record would wear the card; a new state is written at once."""
    from edgecl.runtime import run_record

    clock = {"now": 100.0}
    monkeypatch.setattr(run_record.time, "monotonic", lambda: clock["now"])
    record = run_record.RunRecord(tmp_path, 1, "2026-12-08T01:00:00+00:00",
                                  {"enabled": True, "trigger_new_samples": 5,
                                   "trigger_interval_s": 0})
    path = tmp_path / "runtime.json"
    record.learner("waiting_for_room", "16.7 MiB free")
    record.learner("waiting_for_room", "16.6 MiB free")  # 0 s later: kept, not written
    assert json.loads(path.read_text())["learner_why"] == "16.7 MiB free"
    clock["now"] += run_record.SAME_STATE_EVERY_S
    record.learner("waiting_for_room", "16.5 MiB free")
    assert json.loads(path.read_text())["learner_why"] == "16.5 MiB free"
    record.learner("idle", None)  # a new state: at once
    assert json.loads(path.read_text())["learner_state"] == "idle"
