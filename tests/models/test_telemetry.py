"""OpenVINO and NNCF are imported with their usage telemetry declined."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="openvino is not installed")

REPO = Path(__file__).resolve().parents[2]
CHILD = r"""
import json, os, threading
from edgecl.models.openvino_backend import import_openvino
from edgecl.models.quantize import nncf_available, require_nncf
import_openvino()
if nncf_available():
    require_nncf()
print(json.dumps({"threads": [t.name for t in threading.enumerate()], "ci": os.environ.get("CI")}))
"""


def test_importing_openvino_and_nncf_sends_nothing_and_writes_nothing_home(tmp_path):
    """Without a consent file, openvino_telemetry wrote a client id under ~/intel and sent an
    event from a worker thread at import; offline, the process then waited for it at exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"threads": ["MainThread"], "ci": None}  # no sender thread, CI restored
    assert not (tmp_path / "intel").exists()


ORT_CHILD = r"""
import sys
from edgecl.models.onnx_backend import OnnxBackend
try:
    OnnxBackend().load(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__)
"""


def test_loading_an_onnx_model_leaves_no_onnxruntime_event_store_home(tmp_path):
    """onnxruntime 1.32 keeps usage events in ~/.cache/Microsoft/DeveloperTools (and sends
    them when it can): every learning round's process added to it, outside the state dir."""
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")  # onnxruntime is imported before the file is read
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", ORT_CHILD, str(bad)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "ModelLoadError"
    assert not (tmp_path / ".cache").exists()
