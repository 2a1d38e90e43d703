"""The runtime as a process: SIGTERM shuts down cleanly; the HTTP server serves while it runs;
a killed learner never stops detection and the next round starts clean."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from edgecl.data.scenario import make_scenario
from edgecl.config import load_config
from edgecl.runtime.learner import run_learning_round
from edgecl.models.registry import Registry
from edgecl.runtime.app import RunOptions, Runtime
from edgecl.runtime.promote import promote_version
from edgecl.runtime.learner import LearnerSupervisor


def run_round(cfg, **kwargs):
    """One round through the runtime's entry point (monitor recording included), as a dict."""
    return run_learning_round(cfg, **kwargs).to_json()


IMGSZ = 64


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_shuts_down_cleanly_with_json_summary(signum):
    """SIGHUP too: a closed SSH session or terminal (before, it killed the runtime where it
    stood: no summary, and 'did not stop cleanly' for status)."""
    cmd = [sys.executable, "-m", "edgecl.cli", "run", "--source", "synthetic://?tasks=1&imgsz=64&loop=1&fps=20",
           "--model", "yolo11n.yaml", "--json", "--quiet", "model.imgsz=64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, YOLO_OFFLINE="1"))
    for line in proc.stderr:
        if b"running: source" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["frames"] > 0
    assert f"received {signum.name}; shutting down cleanly".encode() in err


def settings(state):
    return [f"state_dir={state}", f"model.imgsz={IMGSZ}", f"learner.imgsz={IMGSZ}",
            "learner.first_round_max_steps=3", "learner.max_steps=3", "learner.batch=4",
            "learner.bn_recalibration_batches=1", "memory.holdout_fraction=0.25",
            "runtime.warmup_runs=1", "learner.enabled=false"]


@pytest.fixture(scope="module")
def promoted_once(tmp_path_factory):
    """A state directory with one promoted round, built once for this module's tests."""
    root = tmp_path_factory.mktemp("promoted")
    yaml_path = make_scenario(root / "scn", tasks=2, images_per_task=24, imgsz=IMGSZ, seed=7)
    state = root / "state"
    cfg = load_config(None, settings(state))
    from edgecl.bench.demo import initial_model

    init = initial_model(yaml_path, root / "init.pt", IMGSZ)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t1", model=str(init), quiet=True)).run()
    promote_version(state, run_round(cfg)["version"])
    return yaml_path, state


@pytest.fixture()
def promoted_state(promoted_once, tmp_path):
    """Each test's own copy of that state directory (a round reads no path of the original)."""
    yaml_path, original = promoted_once
    state = tmp_path / "state"
    shutil.copytree(original, state, symlinks=True)
    return yaml_path, state, settings(state)


def test_server_serves_health_and_metrics_while_running(promoted_state):
    yaml_path, state, base = promoted_state
    cfg = load_config(None, [*base, "server.enabled=true", "server.port=0"])
    runtime = Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t2&fps=10", quiet=True))
    seen = {}

    def probe(rt):
        if rt.server is None or seen:
            return
        base_url = f"http://127.0.0.1:{rt.server.port}"
        seen["health"] = json.loads(urllib.request.urlopen(base_url + "/healthz", timeout=5).read())
        seen["metrics"] = urllib.request.urlopen(base_url + "/metrics", timeout=5).read().decode()

    runtime.supervise_hook = probe
    runtime.run()
    assert seen["health"]["status"] == "ok" and seen["health"]["model_version"] == "v0001"
    assert "edgecl_acc" in seen["metrics"] and "edgecl_model_info" in seen["metrics"]


def test_killed_learner_never_stops_detection(promoted_state):
    yaml_path, state, base = promoted_state
    cfg = load_config(None, [*base, "learner.enabled=true", "learner.budget_s=120",
                             "learner.max_steps=100000"])
    runtime = Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t2&fps=4", quiet=True))
    runtime.build()
    supervisor = runtime.supervisor
    killed = {}

    def kill_learner(rt):
        if not killed and rt.loop.frames_done >= 3:
            supervisor.start_round("test")
            killed["pid"] = supervisor._proc.pid
            time.sleep(1.0)
            os.kill(killed["pid"], signal.SIGKILL)

    runtime.supervise_hook = kill_learner
    report = runtime.run()
    assert killed and report.frames == len(runtime.loop.source.images)
    assert Registry(state / "models").current() == "v0001"
    assert run_round(cfg)["status"] in ("staged", "rejected")
    assert LearnerSupervisor is not None
