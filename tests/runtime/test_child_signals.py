"""The processes the runtime spawns (its learner, its fleet client) unwind on the runtime's
SIGTERM, so that what they hold outside the state directory (an export's temporary folder) is
removed, and leave a terminal's Ctrl-C (SIGINT to the whole process group) to the runtime."""

import multiprocessing as mp
import os
import signal
import tempfile
import time
from pathlib import Path

from edgecl.config import load_config


def _hold_a_temporary_folder(report: Path):
    """Stands in for a round (or a fleet fit) in the middle of an ONNX export."""
    with tempfile.TemporaryDirectory(prefix="edgecl-export-") as tmp:
        report.write_text(tmp)
        time.sleep(60)


def _start(target, args) -> mp.Process:
    proc = mp.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _wait_for(path: Path, proc) -> Path:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text()):
        assert proc.is_alive(), f"the child ended (exit code {proc.exitcode})"
        assert time.monotonic() < deadline, "the child never started its work"
        time.sleep(0.05)
    return Path(path.read_text())


def _stop_and_check(proc, tmp: Path) -> None:
    os.kill(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the runtime stops its children
    time.sleep(0.5)
    assert proc.is_alive()
    proc.terminate()  # what Supervisor.stop and die_with_parent send
    proc.join(10)
    assert proc.exitcode == 128 + signal.SIGTERM
    assert not tmp.exists(), "the temporary folder outlived the process"


def test_the_learner_process_unwinds_on_sigterm(tmp_path, monkeypatch):
    from edgecl.runtime import learner

    report = tmp_path / "tmp.txt"
    monkeypatch.setattr(learner, "run_learning_round",
                        lambda *a, **k: _hold_a_temporary_folder(report))
    (tmp_path / "state").mkdir()  # the runtime made it: a round makes none (moved, deleted)
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}"])
    proc = _start(learner.learner_main, (cfg, "test"))
    try:
        _stop_and_check(proc, _wait_for(report, proc))
    finally:
        if proc.is_alive():
            proc.kill()


def test_the_fleet_client_beside_the_runtime_unwinds_on_sigterm(tmp_path, monkeypatch):
    from edgecl.fleet import client

    report = tmp_path / "tmp.txt"
    monkeypatch.setattr(client, "client_main", lambda cfg, **_: _hold_a_temporary_folder(report))
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}"])
    proc = _start(client.spawned_client_main, (cfg,))
    try:
        _stop_and_check(proc, _wait_for(report, proc))
    finally:
        if proc.is_alive():
            proc.kill()


def test_a_simulated_device_leaves_ctrl_c_to_the_simulation_and_unwinds_on_sigterm(
        tmp_path, monkeypatch):
    """Before: each simulated device (and the baselines) printed a KeyboardInterrupt traceback
    from inside torch or Flower when a terminal's Ctrl-C reached the process group."""
    from edgecl.fleet import client, simulate

    report = tmp_path / "tmp.txt"
    monkeypatch.setattr(client, "client_main", lambda *a: _hold_a_temporary_folder(report))
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}"])
    proc = _start(simulate._device_main, (cfg, "tasks.yaml", True, 300.0))
    try:
        _stop_and_check(proc, _wait_for(report, proc))
    finally:
        if proc.is_alive():
            proc.kill()


def test_fleet_join_is_a_command_of_its_own_that_outlives_its_shell(tmp_path, monkeypatch):
    """Before: client_main asked the kernel to stop it when its parent died, for 'edgecl fleet
    join' too: started with nohup from a script, it got SIGTERM as soon as the script ended."""
    import pytest

    from edgecl.errors import ConfigError
    from edgecl.fleet import client
    from edgecl.runtime import learner

    def tied(*_args):
        raise AssertionError("client_main tied itself to its parent")

    monkeypatch.setattr(learner, "die_with_parent", tied)
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "fleet.enabled=true",
                             "fleet.server_address=10.1.2.3:9092"])
    with pytest.raises(ConfigError):  # refused off loopback without TLS, before any connection
        client.client_main(cfg)
