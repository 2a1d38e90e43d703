"""Importing edgecl does nothing: no thread, no file, no change to the environment or the working
directory (the engineering rule), checked on the modules a device's commands start from."""

import json
import os
import subprocess
import sys

import pytest

ENTRY_MODULES = ("edgecl.cli", "edgecl.runtime.app", "edgecl.runtime.sources", "edgecl.web.app",
                 "edgecl.runtime.learner", "edgecl.continual.round", "edgecl.fleet.client",
                 "edgecl.commands.labels_import", "edgecl.models.backends")

PROBE = """
import json, os, sys, threading
before_env, before_cwd = dict(os.environ), os.getcwd()
before_files = sorted(os.listdir("."))
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps({"env": sorted(k for k in set(os.environ) | set(before_env)
                                if os.environ.get(k) != before_env.get(k)),
                  "threads": [t.name for t in threading.enumerate()],
                  "cwd": os.getcwd() == before_cwd,
                  "files": sorted(os.listdir(".")) == before_files}))
"""


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_importing_an_entry_module_does_nothing(tmp_path, module):
    """Before: importing edgecl.runtime.sources loaded OpenCV through the synthetic source's
    scenario renderer, and OpenCV rewrote os.environ (LD_LIBRARY_PATH, its Qt paths), which
    every process the runtime then spawned inherited."""
    out = subprocess.run([sys.executable, "-c", PROBE, module], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"env": [], "threads": ["MainThread"], "cwd": True, "files": True}
