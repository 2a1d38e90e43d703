"""Faults around the runtime: one runtime per state directory, an unwritable state directory,
a version staged before a kill, tampered model files, and supervisor steps that fail."""

import logging
import errno

import pytest

from edgecl.config import load_config
from edgecl.data.scenario import make_scenario
from edgecl.errors import EdgeclError, ModelLoadError, StorageError
from edgecl.models.registry import Registry
from edgecl.runtime.app import RunOptions, Runtime, ensure_writable
from edgecl.runtime.learner import run_learning_round
from edgecl.runtime.lock import StateLockedError

IMGSZ = 64


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return make_scenario(tmp_path_factory.mktemp("scn"), tasks=2, images_per_task=24, imgsz=IMGSZ, seed=5)


@pytest.fixture(scope="module")
def learnt(tmp_path_factory, scenario):
    """A state directory whose memory holds task t1 and whose registry holds one round's
    version, staged and NOT promoted (what a kill between stage and promotion leaves)."""
    from edgecl.bench.demo import initial_model

    root = tmp_path_factory.mktemp("learnt")
    cfg = tiny_cfg(root / "state")
    init = initial_model(scenario, root / "untrained.pt", IMGSZ)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{scenario}?task=t1", model=str(init), quiet=True)).run()
    result = run_learning_round(cfg, reason="test")
    assert result.status.value == "staged", result.reason
    return root / "state", result.version


def tiny_cfg(state, *extra):
    return load_config(None, [f"state_dir={state}", f"model.imgsz={IMGSZ}", f"learner.imgsz={IMGSZ}",
                              "learner.first_round_max_steps=4", "learner.max_steps=2",
                              "learner.batch=4", "learner.bn_recalibration_batches=1",
                              "memory.holdout_fraction=0.25", "learner.enabled=false",
                              "runtime.warmup_runs=1", "replay.strategy=er",
                              "gate.max_forgetting=1.0", "gate.min_acc_delta=-1.0", *extra])


def copy_state(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_round_staged_before_a_kill_is_promoted_at_the_next_start(learnt, scenario, tmp_path):
    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    assert registry.current() is None and registry.staged_versions() == [learnt[1]]
    hand_added = registry.add(registry.root / learnt[1] / "model.onnx")
    report = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2",
                                                 max_frames=3, quiet=True)).run()
    assert registry.current() == learnt[1] == report.model_version
    assert hand_added in registry.staged_versions(), "a version added by hand waits for promote"


def test_a_file_given_with_model_serves_the_whole_run(learnt, scenario, tmp_path):
    """Before: with a current version in the registry, `run --model FILE` swapped to that
    version within a second, without a word; the file serves until a version is promoted."""
    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    registry.promote(learnt[1])
    served = registry.root / learnt[1] / "model.onnx"
    given = tmp_path / "mine.onnx"
    given.write_bytes(served.read_bytes())
    report = Runtime(tiny_cfg(state, "runtime.swap_poll_s=0.05"),
                     RunOptions(source_uri=f"tasks://{scenario}?task=t2&fps=10", model=str(given),
                                max_frames=15, quiet=True)).run()
    assert report.swaps == 0 and report.model_version == "file:mine.onnx"


def test_a_tampered_parent_is_never_fine_tuned(learnt, scenario, tmp_path, caplog):
    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    registry.promote(learnt[1])
    cfg = tiny_cfg(state)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{scenario}?task=t2", quiet=True)).run()
    pt = registry.root / learnt[1] / "model.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    result = run_learning_round(cfg, reason="after tampering")
    assert result.status.value == "failed" and "integrity" in result.reason
    assert registry.current() == learnt[1] and len(registry.versions()) == 1
    # its intact model.onnx still serves: before, a start rolled the device back for good
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.app"):
        report = Runtime(tiny_cfg(state, "learner.enabled=false"),
                         RunOptions(source_uri=f"tasks://{scenario}?task=t2", max_frames=2,
                                    quiet=True)).run()
    assert report.model_version == registry.current() == learnt[1]
    (line,) = [r.getMessage() for r in caplog.records if "fails its integrity" in r.getMessage()]
    served = registry.manifest(learnt[1]).get("serve", "model.onnx")
    assert line.startswith(f"current model version {learnt[1]} fails its integrity check (")
    assert f"does not match its manifest sha256); it serves its intact {served}, but no" in line


def test_tampered_current_engine_rolls_back_or_refuses_with_one_line(learnt, scenario, tmp_path):
    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    registry.promote(learnt[1])
    for name in registry.manifest(learnt[1])["files"]:  # every engine it could serve
        if name.endswith((".onnx", ".xml", ".bin")):
            engine = registry.root / learnt[1] / name
            data = bytearray(engine.read_bytes())
            data[-100] ^= 0xFF
            engine.write_bytes(bytes(data))
    runtime = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2",
                                                  max_frames=2, quiet=True))
    with pytest.raises(ModelLoadError) as err:
        runtime.build()
    assert "integrity" in str(err.value) and "\n" not in str(err.value)
    assert runtime.lock is None, "a failed start releases the state directory"


def test_a_damaged_served_engine_falls_back_to_the_versions_onnx_model(learnt, scenario, tmp_path,
                                                                      caplog):
    pytest.importorskip("openvino", reason="openvino is not installed")
    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    registry.promote(learnt[1])
    assert registry.manifest(learnt[1])["serve"] == "openvino/model.xml"
    weights = registry.root / learnt[1] / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2",
                                                 max_frames=2, quiet=True)).run()
    assert report.frames == 2 and report.model_version == learnt[1]
    assert registry.current() == learnt[1], "an intact model is not rolled back for its engine"
    assert "engine openvino/model.xml skipped" in caplog.text
    assert registry.model_path(learnt[1], verify=True).name == "model.onnx"


def test_second_runtime_on_the_same_state_dir_is_refused(learnt, scenario, tmp_path):
    state = copy_state(learnt[0], tmp_path / "state")
    first = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2", quiet=True))
    first.build()
    try:
        second = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2",
                                                     quiet=True))
        with pytest.raises(StateLockedError) as err:
            second.build()
        import os

        assert str(os.getpid()) in str(err.value)
    finally:
        first.close()
    again = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2", quiet=True))
    again.build()
    again.close()


def test_unwritable_state_dir_is_one_line(tmp_path, monkeypatch):
    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("edgecl.runtime.app.atomic_write_bytes", refuse)
    with pytest.raises(StorageError) as err:
        ensure_writable(tmp_path / "state")
    assert "not writable" in str(err.value) and "Read-only" in str(err.value)


def test_a_full_state_dir_starts_with_a_warning(tmp_path, monkeypatch, caplog):
    """Before: 'state directory ... is not writable: No space left on device' and exit 2, so a
    device rebooted with a full card never detected again (systemd restarting it in a loop)."""
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("edgecl.runtime.app.atomic_write_bytes", full)
    note = ensure_writable(tmp_path / "state")
    assert (tmp_path / "state").is_dir()
    assert "is full (No space left on device): detection starts" in note
    monkeypatch.undo()
    assert ensure_writable(tmp_path / "other") is None  # written: nothing to say


def test_failing_supervisor_steps_never_stop_detection(learnt, scenario, tmp_path):
    state = copy_state(learnt[0], tmp_path / "state")
    runtime = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?split=train&fps=50",
                                                  max_frames=30, quiet=True),
                      supervise_hook=lambda rt: 1 / 0)
    runtime.build()

    def full_disk(**kwargs):
        raise StorageError("cannot write the metrics database: database or disk is full")

    runtime.monitor.record_runtime = full_disk
    seen = {}
    original = runtime.supervise

    def supervise():
        original()
        seen.update(runtime.health())

    runtime.supervise = supervise
    report = runtime.run()
    assert report.frames + report.dropped >= 30, "the stream went on to its end"
    assert seen["status"] == "degraded"
    assert seen["step_errors"]["hook"]["error"].startswith("ZeroDivisionError")
    assert "disk is full" in seen["step_errors"]["metrics"]["error"]


def test_an_engine_that_does_not_load_leaves_the_versions_onnx_model_serving(learnt, scenario,
                                                                            tmp_path, caplog):
    """An IR whose sha256 matches but that OpenVINO cannot read (written by an older exporter,
    say): the version serves its ONNX model; the watcher and `models promote` do the same."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    import json

    from edgecl.models.base import sha256_file

    state = copy_state(learnt[0], tmp_path / "state")
    registry = Registry(state / "models")
    weights = registry.root / learnt[1] / "openvino" / "model.bin"
    weights.write_bytes(b"not weights")
    manifest_path = registry.root / learnt[1] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["openvino/model.bin"] = sha256_file(weights)
    manifest_path.write_text(json.dumps(manifest))
    assert registry.verify(learnt[1]) == []
    registry.promote(learnt[1])
    report = Runtime(tiny_cfg(state), RunOptions(source_uri=f"tasks://{scenario}?task=t2",
                                                 max_frames=2, quiet=True)).run()
    assert report.frames == 2 and report.model_version == learnt[1] == registry.current()
    assert "engine openvino/model.xml does not load" in caplog.text
    backend = registry.load_serving(learnt[1])
    assert backend.meta.backend == "onnxruntime"
    backend.close()


def test_held_out_blocks_on_a_file_source_are_warned_about_at_start(learnt, scenario, tmp_path,
                                                                     caplog):
    # a tasks:// source reads as fast as it can: 10 s of capture time may hold hundreds of frames
    state = copy_state(learnt[0], tmp_path / "state")
    uri = f"tasks://{scenario}?task=t2"
    Runtime(tiny_cfg(state, "memory.holdout_block_s=10"),
            RunOptions(source_uri=uri, max_frames=1, quiet=True)).run()
    assert "memory.holdout_block_s=10 holds out labelled frames by blocks" in caplog.text
    caplog.clear()
    Runtime(tiny_cfg(state), RunOptions(source_uri=uri, max_frames=1, quiet=True)).run()
    assert "holdout_block_s" not in caplog.text


@pytest.mark.parametrize("source, overrides, expected", [
    # an unlabelled recording in field mode: the queue's per-minute limit counts wall minutes
    (dict(uri="file://flight.mp4"), [], ["labels.max_per_minute=6 counts minutes of wall time"]),
    (dict(uri="dir://frames", labelled=False), ["memory.holdout_block_s=2"],
     ["memory.holdout_block_s=2 holds out", "labels.max_per_minute=6"]),
    (dict(uri="dir://frames", labelled=True), [], []),  # ground truth: nothing is queued
    (dict(uri="file://flight.mp4"), ["labels.max_per_minute=0"], []),
    (dict(uri="file://flight.mp4"), ["labels.mode=pseudo"], []),
    (dict(uri="file://flight.mp4"), ["runtime.realtime=true"], []),
    (dict(uri="csi://0", is_live=True), ["memory.holdout_block_s=2"], []),
    (dict(uri="hidden", real_time=True), [], []),  # a paced benchmark stream
])
def test_a_recording_read_faster_than_a_camera_is_warned_about_once(source, overrides, expected):
    """Before: an unpaced folder in field mode filled the operator queue with the first frames
    chosen in each wall-clock minute, without a word."""
    from types import SimpleNamespace

    from edgecl.config import load_config
    from edgecl.runtime.app import unpaced_source_warning

    line = unpaced_source_warning(load_config(None, overrides), SimpleNamespace(**source))
    if not expected:
        assert line is None
        return
    assert line.startswith(f"{source['uri']} is read from files faster than a camera delivers")
    assert "'runtime.realtime: true'" in line and "\n" not in line
    for part in expected:
        assert part in line


def test_a_run_given_no_fleet_client_joins_no_fleet_and_says_so(tmp_path, caplog):
    """A benchmark or the demo run with a device's config (fleet.enabled) must not join its
    fleet: only `edgecl run` hands the runtime a fleet client."""
    from edgecl.config import load_config

    cfg = load_config(None, [f"state_dir={tmp_path}", "fleet.enabled=true", "model.imgsz=64",
                             "learner.enabled=false", "server.enabled=false"])
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&images_per_task=2&imgsz=64",
                                      model="yolo11n.yaml", max_frames=1, quiet=True))
    runtime.run()
    assert runtime.fleet_proc is None
    assert "fleet.enabled: ignored, this run joins no fleet (only 'edgecl run' does)" in caplog.text


def test_a_dead_fleet_client_is_reported_and_restarted_after_a_back_off(tmp_path):
    """Before: /healthz said 'ok' with fleet alive false, nothing was logged, and the device
    left the fleet until a restart."""
    from types import SimpleNamespace

    from edgecl.config import load_config

    started = []

    def start(cfg):
        started.append(cfg)
        return SimpleNamespace(is_alive=lambda: True, pid=43, exitcode=None)

    runtime = Runtime(load_config(None, [f"state_dir={tmp_path}"]),
                      RunOptions(source_uri="synthetic://", quiet=True,
                                 fleet_client=SimpleNamespace(start=start)))
    runtime.fleet_proc = SimpleNamespace(is_alive=lambda: False, pid=42, exitcode=-9)
    runtime.supervise()
    error = runtime.step_errors["fleet"]["error"]
    assert "pid 42) exited with code -9; restarting it in 30 s" in error
    assert runtime.health()["status"] == "degraded" and not started
    runtime.supervise()
    assert not started  # still within the back-off
    runtime._fleet_restart_at = 0.0
    runtime.supervise()
    assert len(started) == 1 and runtime.fleet_proc.pid == 43
    runtime.supervise()
    assert "fleet" not in runtime.step_errors and runtime.health()["status"] == "ok"


def test_a_dead_fleet_client_is_not_restarted_on_an_edgecl_upgraded_on_disk(tmp_path):
    """Before: rounds waited for a restart after an in-place upgrade, but a fleet client that
    died was restarted with the new code, and staged versions for this runtime's old one."""
    from types import SimpleNamespace

    from edgecl.config import load_config

    started = []
    runtime = Runtime(load_config(None, [f"state_dir={tmp_path}"]),
                      RunOptions(source_uri="synthetic://", quiet=True,
                                 fleet_client=SimpleNamespace(start=started.append)))
    runtime.supervisor = SimpleNamespace(upgraded_on_disk=lambda: True, tick=lambda: None,
                                         busy=False, health=lambda: {"state": "idle"})
    runtime.fleet_proc = SimpleNamespace(is_alive=lambda: False, pid=42, exitcode=-9)
    with pytest.raises(EdgeclError, match="exited with code -9"):
        runtime._tick_fleet()
    runtime._fleet_restart_at = 0.0
    with pytest.raises(EdgeclError, match="not restarted: edgecl was upgraded on disk"):
        runtime._tick_fleet()
    assert runtime._tick_fleet() is False and not started  # and it stays so, quietly


def test_a_folder_with_its_fps_given_is_told_what_turns_it_on():
    """Before: 'a folder takes ?fps=N' was suggested for dir://frames?fps=5, which had it."""
    from types import SimpleNamespace

    from edgecl.config import load_config
    from edgecl.runtime.app import unpaced_source_warning

    cfg = load_config(None, [])
    given = unpaced_source_warning(cfg, SimpleNamespace(uri="dir://frames?loop=1&fps=5"))
    assert given.endswith("; 'runtime.realtime: true' reads it at the ?fps its URI gives")
    bare = unpaced_source_warning(cfg, SimpleNamespace(uri="dir://frames"))
    assert bare.endswith("reads it at its own rate (a folder takes ?fps=N)")


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_state_directory_moved_or_deleted_under_the_run_stops_it(learnt, scenario, tmp_path,
                                                                   how):
    """Before: after 'mv STATE elsewhere' (or rm -rf) the run went on at the old path: a new,
    empty state directory grew there, a round trained a model from scratch in it and the loop
    swapped to that model; /healthz said ok. Now it stops in one line and writes nothing there."""
    import shutil

    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    seen = {}

    def pull_the_folder(runtime):
        if not seen and runtime.loop.frames_done >= 3:
            seen["at"] = runtime.loop.frames_done
            if how == "moved":
                state.rename(tmp_path / "elsewhere")
            else:
                shutil.rmtree(state)

    runtime = Runtime(tiny_cfg(state, "learner.enabled=true", "learner.trigger_new_samples=1"),
                      RunOptions(source_uri=f"dir://{scenario.parent}/images/t2/train?loop=1&fps=20",
                                 max_frames=3000, quiet=True), supervise_hook=pull_the_folder)
    report = runtime.run()
    assert report.frames < 3000, "stopped by the check, not the frame count"
    assert runtime.state_dir_error.startswith(f"the state directory {state} was moved, replaced "
                                              f"or deleted while edgecl ran: stopping")
    # nothing in flight in the moment before the stop grew a new state directory there: no
    # model, no sample (before: a sample's files there, its row in the moved index), no round
    left = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []
    assert not state.exists(), left
    if how == "moved":
        assert Registry(tmp_path / "elsewhere" / "models").current() == learnt[1]


def _read_only_for(monkeypatch, calls: int):
    """The state directory's volume reads as mounted read-only, and refuses write probes as
    such a card would, for its first ``calls`` write probes; then as read-write."""
    import os

    from edgecl import atomic

    seen = []
    real = os.statvfs

    def probe(path, data):
        seen.append(path)
        if len(seen) <= calls:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        atomic.atomic_write_bytes(path, data)

    class Mounted:
        def __init__(self, path):
            self._stat = real(path)
            read_only = len(seen) < calls
            self.f_flag = self._stat.f_flag | (os.ST_RDONLY if read_only else 0)

        def __getattr__(self, name):
            return getattr(self._stat, name)

    monkeypatch.setattr("edgecl.runtime.app.atomic_write_bytes", probe)
    monkeypatch.setattr(os, "statvfs", Mounted)
    return seen


def _detect_only_args(state, scenario, frames):
    return ["run", "--state-dir", str(state), "--source", f"tasks://{scenario}?split=train&fps=50",
            "--frames", str(frames), f"model.imgsz={IMGSZ}", "learner.enabled=false",
            "runtime.warmup_runs=1", "server.enabled=false"]


def test_a_read_only_state_dir_detects_with_the_current_version(learnt, scenario, tmp_path,
                                                                monkeypatch, capsys, caplog):
    """Before: 'state directory ... is not writable: Read-only file system', exit 2, and a
    service restarted into the same refusal every 5 s: the drone did not detect at all,
    though its serving model could be read."""
    from edgecl.cli import main

    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    _read_only_for(monkeypatch, calls=1000)
    code = main(_detect_only_args(state, scenario, 5))
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert "frames=5 " in out  # it detected
    said = next(m for m in caplog.messages if "detecting only" in m)
    assert said.startswith(f"state directory {state} is not writable: Read-only file system: "
                           f"detecting only, with {state / 'models' / learnt[1]}")
    assert err.strip().splitlines()[-1] == (f"error: the run only detected: its state directory "
                                            f"{state} could not be written")
    from edgecl.runtime.lock import detect_only_lock

    folder, name = detect_only_lock(state)
    assert not (folder / name).exists()  # before: one lock file left in the temp folder per run


def test_a_detect_only_run_starts_again_once_its_state_dir_can_be_written(
        learnt, scenario, tmp_path, monkeypatch, capsys, caplog):
    from edgecl.cli import main

    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    _read_only_for(monkeypatch, calls=2)  # the start, then the fallback's own check
    monkeypatch.setattr("edgecl.runtime.app.STATE_DIR_CHECK_S", 0.0)
    started = []
    monkeypatch.setattr("edgecl.commands.run.os.execv", lambda *a: started.append(a))
    main(_detect_only_args(state, scenario, 10_000))
    assert started and started[0][1] == __import__("sys").orig_argv  # the same command again
    assert f"state directory {state} can be written again: the runtime starts again with it " \
           "(storing, labelling, learning)" in caplog.messages


def test_only_a_devices_state_dir_on_a_full_or_read_only_card_is_a_card_fault(tmp_path,
                                                                                monkeypatch):
    """Mistakes keep their one-line refusal (a typo, a file, a link to a card not mounted):
    only a device's own state directory on a full or read-only card falls back to detecting."""
    import shutil

    from edgecl.runtime.app import card_fault

    state = tmp_path / "state"
    state.mkdir()
    assert card_fault(state) is None  # no device's state in it
    (state / "models").mkdir()
    assert card_fault(state) is None  # room, read-write
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    assert card_fault(state) == "full"
    assert card_fault(tmp_path / "missing") is None
    (tmp_path / "afile").write_text("x")
    assert card_fault(tmp_path / "afile") is None


def test_a_card_ext4_made_read_only_after_an_error_reads_as_read_only(tmp_path):
    """Before: only the mount's ST_RDONLY flag was read; ext4's errors=remount-ro on a recent
    kernel sets 'emergency_ro' instead, and `edgecl status` read the card as writable."""
    from edgecl.runtime.volume import volume_read_only

    card = tmp_path / "my card"
    (card / "st").mkdir(parents=True)
    escaped = str(card).replace(" ", "\\040")
    mounts = (f"/dev/vda / ext4 rw,relatime 0 0\n"
              f"/dev/loop0 {escaped} ext4 rw,relatime,emergency_ro,errors=remount-ro 0 0\n")
    assert volume_read_only(card / "st", mounts) is True
    assert volume_read_only(tmp_path, mounts) is False  # outside the card: the root's rw
    assert volume_read_only(card / "st", mounts.replace("emergency_ro,", "")) is False
    assert volume_read_only(card / "st", mounts.replace("rw,relatime,emergency_ro", "ro")) is True


def test_a_detect_only_run_serves_its_live_page_healthz_and_metrics(learnt, scenario, tmp_path,
                                                                    monkeypatch):
    """Before, a run that only detects served no console: an operator's browser, an uptime
    check and a Prometheus scrape all met a refused connection, and nothing said why."""
    import json
    import urllib.error
    import urllib.request

    from edgecl.runtime.app import detect_only_options

    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    _read_only_for(monkeypatch, calls=1000)
    cfg = tiny_cfg(state, "server.enabled=true", "server.port=0")
    refused = StorageError(f"state directory {state} is not writable: Read-only file system")
    opts = detect_only_options(cfg, RunOptions(source_uri=f"tasks://{scenario}?split=train&fps=50",
                                               max_frames=400, quiet=True), refused)
    seen = {}

    def probe(rt):
        if seen or rt.server is None or rt.loop.frames_done < 5:
            return
        url = f"http://127.0.0.1:{rt.server.port}"
        for path in ("/healthz", "/api/live"):
            seen[path] = json.loads(urllib.request.urlopen(url + path, timeout=5).read())
        for path in ("/api/labels/pending", "/api/models", "/api/classes", "/api/forgetting"):
            try:
                urllib.request.urlopen(url + path, timeout=5)
            except urllib.error.HTTPError as exc:
                seen[path] = (exc.code, json.loads(exc.read()))
        seen["/metrics"] = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        seen["/api/frame.jpg"] = urllib.request.urlopen(url + "/api/frame.jpg", timeout=5).read()
        try:
            urllib.request.urlopen(urllib.request.Request(
                url + "/api/models/v0001/promote", data=b"{}", method="POST",
                headers={"Content-Type": "application/json"}), timeout=5)
        except urllib.error.HTTPError as exc:
            seen["promote"] = exc.code
        rt.loop.request_stop()

    runtime = Runtime(cfg, opts, supervise_hook=probe)
    runtime.run()
    said = (f"detecting only: {refused}; nothing is stored, labelled or learnt until {state} can "
            f"be written again (checked every 30 s; the runtime then starts again by itself, in "
            f"full)")
    health = seen["/healthz"]
    assert health["status"] == "degraded" and health["detect_only"] == said
    assert health["model_version"] == learnt[1]
    assert seen["/api/live"]["alerts"][0] == said and seen["/api/live"]["frames"] >= 5
    assert seen["/api/live"]["learner"]["state"] == "off"
    assert seen["/api/frame.jpg"][:2] == b"\xff\xd8"  # the Live page's picture
    for path in ("/api/labels/pending", "/api/models", "/api/classes", "/api/forgetting"):
        assert seen[path][0] == 503 and said in json.dumps(seen[path][1]), path
    assert seen["promote"] == 503  # passing: not 'not available on this runtime' (404)
    assert "edgecl_detect_only 1.0" in seen["/metrics"].splitlines()
    assert "edgecl_runtime_up 1.0" in seen["/metrics"].splitlines()


def test_a_detect_only_run_whose_out_file_is_on_the_read_only_card_detects_without_it(
        learnt, scenario, tmp_path, monkeypatch, capsys, caplog):
    """Before: 'detecting only, ...', then 'error: --out .../det.jsonl: Read-only file system',
    exit 2: a drone logging to its SD card never detected, restarted every 5 s."""
    from edgecl.cli import main

    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    _read_only_for(monkeypatch, calls=1000)
    out_file = tmp_path / "card" / "det.jsonl"
    code = main(_detect_only_args(state, scenario, 5) + ["--out", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 1 and "frames=5 " in out and "--out" not in err
    assert (f"--out {out_file} is on a read-only volume too: this run detects without writing "
            f"it, until the runtime starts again in full") in caplog.messages
    assert not out_file.exists()


def test_a_full_run_whose_card_turns_read_only_starts_again_to_only_detect(learnt, scenario,
                                                                          tmp_path, monkeypatch,
                                                                          caplog):
    """Before: a card the kernel remounted read-only under a running device left it in full,
    every write failing: /healthz and /metrics said nothing of detect-only, and it never came
    back by itself once the card could be written."""
    state = copy_state(learnt[0], tmp_path / "state")
    Registry(state / "models").promote(learnt[1])
    card = {"read_only": False}
    monkeypatch.setattr("edgecl.runtime.app.volume_read_only", lambda path: card["read_only"])

    def turn_read_only(rt):
        if rt.loop.frames_done >= 5:
            card["read_only"] = True

    runtime = Runtime(tiny_cfg(state), RunOptions(
        source_uri=f"synthetic://?tasks=1&imgsz=64&loop=1&fps=50", max_frames=100_000,
        quiet=True, restart_on_read_only=True), supervise_hook=turn_read_only)
    report = runtime.run()
    assert runtime.restart_wanted and report.frames < 100_000
    assert (f"state directory {state}: its volume is now mounted read-only (a card the kernel "
            f"remounted after errors?): the runtime starts again, only detecting until it can be "
            f"written") in caplog.messages
    plain = Runtime(tiny_cfg(state), RunOptions(  # a benchmark's or the demo's run: no restart
        source_uri=f"tasks://{scenario}?split=train", max_frames=20, quiet=True))
    plain.run()
    assert not plain.restart_wanted
