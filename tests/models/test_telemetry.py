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
