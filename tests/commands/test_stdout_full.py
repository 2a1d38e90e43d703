"""A command whose stdout cannot be written (a redirect to a file on a full card)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_full_stdout_is_one_line_on_stderr_not_two_tracebacks(tmp_path, json_flag):
    """Before: 'error: No space left on device', then two tracebacks (the {"error": ...} line
    written to the stdout that had just failed), exit 1 or 2 as it fell."""
    state = tmp_path / "state"
    state.mkdir()
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "edgecl.cli", "status", "--state-dir",
                               str(state), *json_flag], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: cannot write the output to stdout: No space left on device (what the command "
        "did is done; only its report is lost)")
