"""The edgecl command line: run --json, models list --json, and one-line errors on bad input."""

import json
import time

import cv2
import numpy as np
import pytest

from edgecl.cli import main, split_overrides

RUN_KEYS = {"frames", "fps", "latency_ms_p50", "latency_ms_p95", "dropped", "skipped", "swaps",
            "model_version"}


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    (folder / "002b.jpg").write_bytes(b"this is not a jpeg")
    return folder


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_split_overrides():
    args, overrides = split_overrides(["run", "--json", "memory.capacity=5", "state_dir=s",
                                       "--source", "synthetic://?tasks=2", "x.y.z=1"])
    assert args == ["run", "--json", "--source", "synthetic://?tasks=2"]
    assert overrides == ["memory.capacity=5", "state_dir=s", "x.y.z=1"]


def test_run_json_counts_skipped_corrupt_image(capsys, image_dir, tmp_path):
    code, out, err = run_cli(capsys, "run", "--source", f"dir://{image_dir}", "--model", "yolo11n.yaml",
                             "--json", "--quiet", "--out", str(tmp_path / "d.jsonl"), "model.imgsz=64")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert RUN_KEYS <= set(summary)
    assert summary["frames"] == 4 and summary["skipped"] == 1
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "detections" in json.loads(lines[0])


@pytest.mark.parametrize("argv, message", [
    (["run", "--source", "bogus://x", "--model", "yolo11n.yaml"], "unknown"),
    (["run", "--source", "dir:///no/such/folder", "--model", "yolo11n.yaml"], "/no/such/folder"),
    (["run", "--source", "synthetic://", "--model", "/no/model.onnx"], "model file not found"),
    (["run", "--source", "synthetic://", "--model", "model.bin"], "unsupported model file"),
    (["run", "--source", "synthetic://", "memory.capacty=3"], "did you mean 'memory.capacity'"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err


def test_a_refused_first_model_leaves_no_state_directory(capsys, tmp_path):
    """Before: model.path naming a missing file on a fresh --state-dir left lock files and an
    empty metrics database behind (its rebuild lock was not counted as the start's own)."""
    state = tmp_path / "state"
    code, _, err = run_cli(capsys, "run", "--state-dir", str(state), "--source", "synthetic://",
                           f"model.path={tmp_path / 'typo.pt'}", "--frames", "2")
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: config key 'model.path': model file not found: {tmp_path / 'typo.pt'}")
    assert "no round can learn" not in err  # the model's own error, said once
    assert not state.exists()


def test_corrupt_model_is_refused(capsys, tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run_cli(capsys, "run", "--source", "synthetic://", "--model", str(bad))
    assert code == 2 and f"cannot load ONNX model {bad}" in err


def test_models_cli(capsys, tmp_path):
    state = tmp_path / "state"
    code, _, err = run_cli(capsys, "models", "list", "--state-dir", str(state), "--json")
    assert code == 2 and "no such state directory" in err and not state.exists()
    state.mkdir()
    code, out, _ = run_cli(capsys, "models", "list", "--state-dir", str(state), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == []
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"junk")
    code, _, err = run_cli(capsys, "models", "add", str(bad), "--state-dir", str(state))
    assert code == 2 and "cannot add" in err and "cannot load ONNX" in err  # loaded and warmed first
    code, out, _ = run_cli(capsys, "models", "list", "--state-dir", str(state), "--json")
    assert json.loads(out.strip().splitlines()[-1]) == []
    code, _, err = run_cli(capsys, "models", "rollback", "--state-dir", str(state))
    assert code == 2 and "no earlier" in err


@pytest.mark.parametrize("in_background", [False, True])
def test_sigterm_ends_a_command_by_unwinding_so_its_temporary_copy_goes(tmp_path, in_background):
    """`timeout` or a service stop sends SIGTERM: a command reading a pulled state directory
    left its private copy of the database (1 GB for a 1 GB database) in TMPDIR. Also for a
    command started in the background ('cmd &' in a script, nohup), which ignores SIGINT:
    before, no handler was installed there, and SIGTERM killed it where it stood."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from edgecl.runtime.monitor import Monitor

    state = tmp_path / "state"
    Monitor(state).record_round(1, "v0001", "promoted", acc=0.5, bwt=0.0, mean_forgetting=0.0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child = (
        ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if in_background else "")
        + "import sys, time\n"
        "import edgecl.sqlite_copy as sc\n"
        "orig = sc.PrivateCopy.__init__\n"
        "def slow(self, *a, **k):\n"
        "    orig(self, *a, **k)\n"
        "    print('copied', flush=True)\n"
        "    time.sleep(60)\n"
        "sc.PrivateCopy.__init__ = slow\n"
        f"sys.argv = ['edgecl', 'monitor', 'summary', '--state-dir', {str(state)!r}]\n"
        "from edgecl.cli import main\n"
        "sys.exit(main())\n")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.PIPE,
                            env=dict(os.environ, TMPDIR=str(scratch), PYTHONPATH=str(repo)))
    assert proc.stdout.readline().strip() == "copied"
    assert [p.name for p in scratch.iterdir()][0].startswith("edgecl-db-")
    if in_background:
        proc.send_signal(signal.SIGINT)  # still ignored, as the shell asked
        time.sleep(0.3)
        assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(scratch.iterdir()) == []
    # said in one line (a stop during a long start, such as a memory's one-time embedding
    # backfill, ended the process with no word)
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].endswith("received SIGTERM: stopping"), err


@pytest.mark.parametrize("argv", [["classes", "list", "--state-dir", "/nonexistent/state"],
                                  ["--version"]])
def test_a_command_ends_without_the_interpreters_last_collection(monkeypatch, argv):
    """A stop of 'fleet join' took 3.5-5 s, nearly all of it the interpreter's last garbage
    collection over the objects of torch, ultralytics and Flower (measured 0.8-1.6 s after)."""
    import sys

    from edgecl import cli

    frozen = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(cli, "_stop_cleanly_on_signals", lambda: None)
    monkeypatch.setattr(sys, "argv", ["edgecl", *argv])
    try:
        main()
    except SystemExit:  # --version exits from argparse: the freeze happens all the same
        pass
    assert frozen == [True]


def test_a_console_port_in_use_is_said_in_the_log_and_the_summary(capsys, caplog, image_dir, tmp_path):
    """Another program held the console's port: the run went on (detection first) while its
    first lines sent the operator to that other program's page, and the summary said nothing."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        code, out, err = run_cli(capsys, "run", "--source", f"dir://{image_dir}", "--model",
                                 "yolo11n.yaml", "--json", "--quiet", "--state-dir",
                                 str(tmp_path / "state"), "model.imgsz=64", "server.enabled=true",
                                 f"server.port={port}", "learner.enabled=false")
    finally:
        held.close()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 4
    assert summary["server_error"].startswith(f"console not started on 127.0.0.1:{port}: ")
    logged = [r.getMessage() for r in caplog.records if "HTTP server not started" in r.getMessage()]
    assert len(logged) == 1 and "'edgecl labels pending --state-dir" in logged[0]


def test_a_console_whose_port_was_taken_starts_once_the_port_is_free(tmp_path, caplog):
    """Before: a port held at the start (the last run's socket, another program) left the
    device without its console for the whole run, however long after the port was freed."""
    import socket
    import urllib.request

    from edgecl.config import load_config
    from edgecl.runtime import app as app_mod
    from edgecl.runtime.app import RunOptions, Runtime

    caplog.set_level("INFO", logger="edgecl.runtime.app")
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "model.imgsz=64",
                             "runtime.warmup_runs=1", "learner.enabled=false",
                             "server.enabled=true", f"server.port={port}"])
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64&loop=1&fps=50",
                                      model="yolo11n.yaml", max_frames=400, quiet=True))
    seen = {}

    def probe(rt):
        if "live" in seen or rt.loop.frames_done < 3:
            return
        if "error" not in seen:
            seen["error"] = rt.server_error
            held.close()  # the other program lets the port go
            rt._server_retry_at = 0.0  # instead of waiting SERVER_RETRY_S
            return
        if rt.server is not None:
            url = f"http://127.0.0.1:{rt.server.port}/api/live"
            seen["live"] = json.loads(urllib.request.urlopen(url, timeout=5).read())
            seen["error_after"] = rt.server_error
            rt.loop.request_stop()

    runtime.supervise_hook = probe
    try:
        runtime.run()
    finally:
        held.close()
    assert seen["error"].startswith(f"console not started on 127.0.0.1:{port}: ")
    assert "live" in seen and seen["error_after"] is None
    assert app_mod.SERVER_RETRY_S == 30.0
    assert any(f"console started on 127.0.0.1:{port} at last" in r.getMessage()
               for r in caplog.records)


def test_a_run_rebuilds_a_damaged_class_registry_from_the_memory(capsys, caplog, image_dir,
                                                                  tmp_path):
    """An SD-card fault in classes.json: the device refused to start ('restore it from a
    backup') while its replay memory held every id -> name."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.models.classes import ClassRegistry

    state = tmp_path / "state"
    box = np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(), names={0: "car", 1: "forklift"}) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), box, task="stream", source="a"))
    (state / "classes.json").write_bytes(b"\x00" * 64)
    code, out, err = run_cli(capsys, "run", "--source", f"dir://{image_dir}", "--model",
                             "yolo11n.yaml", "--json", "--quiet", "--state-dir", str(state),
                             "model.imgsz=64", "learner.enabled=false", "server.enabled=false")
    assert code == 0, err
    assert ClassRegistry(state).names() == {0: "car", 1: "forklift"}
    assert "rebuilt from the replay memory's 2 class name(s)" in caplog.text
    assert len(list(state.glob("classes.json.corrupt-*"))) == 1


def test_a_fleet_device_without_tls_off_loopback_fails_before_the_model_loads(
        capsys, caplog, image_dir, tmp_path, monkeypatch):
    """It failed only after the runtime had loaded its model (about 2.4 s, after the labels
    line), and the exit then warned of a thread left running."""
    from edgecl.models import backends

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the fleet settings were checked")

    monkeypatch.setattr(backends, "load_backend", no_load)
    code, out, err = run_cli(capsys, "run", "--source", f"dir://{image_dir}", "--model",
                             "yolo11n.yaml", "--state-dir", str(tmp_path / "state"),
                             "model.imgsz=64", "fleet.enabled=true",
                             "fleet.server_address=10.0.0.7:9092")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "fleet" in err
    assert "loaded" not in caplog.text and "exiting past" not in caplog.text
