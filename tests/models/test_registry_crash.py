"""kill -9 at each crash window of the registry: the next open sees a consistent registry.

A child process runs one registry operation with ``os.replace`` wrapped so that it SIGKILLs
itself right before or right after a chosen rename (the registry's commit points are renames).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecl.models.registry import Registry

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from edgecl.models.registry import Registry

    root, op, arg, target, when, nth = sys.argv[1:7]
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        hit = Path(dst).name == target or (target == "vNNNN" and Path(src).name.startswith(".staging-"))
        if hit:
            seen[0] += 1
        if hit and seen[0] == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if hit and seen[0] == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    reg = Registry(root)
    if op == "stage":
        src = Path(root).parent / "src.onnx"
        src.write_bytes(b"new-model")
        reg.stage({"model.onnx": src}, {"parent": reg.current()})
    elif op == "promote":
        reg.promote(arg)
    elif op == "rollback":
        reg.rollback()
    print("finished without being killed")
""")


def _run_child(root: Path, op: str, arg: str, target: str, when: str, nth: int = 1) -> int:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), op, arg, target, when, str(nth)],
                          capture_output=True, text=True, timeout=120)
    assert "finished without being killed" not in proc.stdout, proc.stderr
    return proc.returncode


@pytest.fixture()
def two_versions(tmp_path):
    """v0001 promoted (current), v0002 staged by a round with parent v0001."""
    root = tmp_path / "models"
    reg = Registry(root)
    src = tmp_path / "m.onnx"
    src.write_bytes(b"one")
    v1 = reg.stage({"model.onnx": src})
    reg.promote(v1)
    src.write_bytes(b"two")
    reg.stage({"model.onnx": src}, {"parent": v1})
    return root


def _consistent(reg: Registry) -> None:
    """Invariants every prefix of every operation must keep."""
    current = reg.current()
    statuses = {v.version: v.status for v in reg.list()}
    if current:
        assert statuses[current] == "promoted" and reg.history()[-1] == current
        assert reg.manifest(current)["status"] == "promoted"  # repaired on open
        assert json.loads((reg.root / "history.json").read_text())[-1] == current
    assert list(statuses.values()).count("promoted") == (1 if current else 0)
    assert not [p for p in reg.root.iterdir() if p.name.startswith((".staging-", ".current-"))]
    for version in reg.history():
        assert reg.verify(version) == []


@pytest.mark.parametrize("target,when,nth", [
    ("current", "after", 1),       # right after the switch: before history and manifests
    ("history.json", "after", 1),  # history written, manifests not
    ("manifest.json", "after", 1),  # previous version retired, new one still 'staged' on disk
    ("current", "before", 1),      # killed before the commit point: nothing happened
])
def test_kill_during_promote(two_versions, target, when, nth):
    rc = _run_child(two_versions, "promote", "v0002", target, when, nth)
    assert rc == -signal.SIGKILL
    reg = Registry(two_versions)
    _consistent(reg)
    if when == "after":
        assert reg.current() == "v0002" and reg.history() == ["v0001", "v0002"]
        assert {v.version: v.status for v in reg.list()} == {"v0001": "retired", "v0002": "promoted"}
        assert reg.staged_versions() == []
    else:
        assert reg.current() == "v0001" and reg.staged_versions() == ["v0002"]


@pytest.mark.parametrize("target,when", [("current", "after"), ("history.json", "after"),
                                         ("manifest.json", "after")])
def test_kill_during_rollback(two_versions, target, when):
    Registry(two_versions).promote("v0002")
    rc = _run_child(two_versions, "rollback", "", target, when)
    assert rc == -signal.SIGKILL
    reg = Registry(two_versions)
    _consistent(reg)
    assert reg.current() == "v0001" and reg.history() == ["v0001"]
    assert reg.status("v0002") == "retired"


def test_kill_during_stage_leaves_no_staging_dir(two_versions):
    rc = _run_child(two_versions, "stage", "", "vNNNN", "before")
    assert rc == -signal.SIGKILL
    assert [p.name for p in two_versions.iterdir() if p.name.startswith(".staging-")]  # the leftover
    reg = Registry(two_versions)
    _consistent(reg)
    assert reg.versions() == ["v0001", "v0002"]


def test_kill_between_stage_and_promotion_leaves_it_for_the_runtime(two_versions):
    """The round staged v0003 and the process died before the supervisor promoted it."""
    rc = _run_child(two_versions, "stage", "", "vNNNN", "after")
    assert rc == -signal.SIGKILL
    reg = Registry(two_versions)
    _consistent(reg)
    assert reg.staged_versions() == ["v0002", "v0003"]
    reg.promote("v0003")
    assert reg.staged_versions() == []
