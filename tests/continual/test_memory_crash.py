"""kill -9 at random instants of adds, evictions and snapshots: the memory stays consistent,
bounded, and holds exactly the state of the last completed add (or of the one in flight)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecl.continual.memory import MemorySnapshot, ReplayMemory
from edgecl.continual.memory.store import disk_bytes

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _memory_writer as writer  # noqa: E402


def last_state(log: Path) -> list[int] | None:
    """Ids printed after the last fully written line of the writer."""
    lines = log.read_text().splitlines(keepends=True)
    complete = [ln for ln in lines if ln.endswith("\n")]
    if not complete:
        return None
    return json.loads(complete[-1].split(" ", 1)[1])


def run_and_kill(root: Path, iteration: int, rng: random.Random, log: Path) -> list[int] | None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), str(HERE)]))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / "_memory_writer.py"), str(root),
                                 str(iteration)], stdout=out, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 30
        while "open" not in log.read_text():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "writer did not start"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    return last_state(log)


def check_memory(root: Path, before: list[int]) -> list[int]:
    """Reopen, then check consistency, bounds, content, and the before/after relation."""
    with ReplayMemory(root, writer.CONFIG) as mem:
        assert mem.last_verify.ok, mem.last_verify.unrepaired
        after = mem.ids()
        new = set(after) - set(before)
        assert after == before or (len(new) == 1 and min(new) > max(before, default=0)), \
            (before, after)
        assert len(after) <= writer.CAPACITY
        assert len(mem.ids(held_out=False)) <= mem.train_capacity
        files = sorted(p.name for p in (root / "images").iterdir())
        assert files == [mem.image_path(i).name for i in after]
        assert sorted(p.name for p in (root / "labels").iterdir()) == \
            [mem.label_path(i).name for i in after]
        on_disk = sum(disk_bytes(mem.image_path(i)) + disk_bytes(mem.label_path(i)) for i in after)
        assert on_disk <= mem.sample_budget_bytes
        for s in mem.get(after):
            image, labels = writer.expected(int(s.source[3:]))
            np.testing.assert_allclose(s.labels, labels, atol=1e-6)
            decoded = s.load_image()
            assert decoded.shape == image.shape
            if s.source and int(s.source[3:]) % 3:
                assert np.abs(decoded.astype(int) - image).max() <= 2
        assert mem.verify(repair=False, deep=True).problems_found == 0
        for snap_dir in (root / "snapshots").iterdir():
            snap = MemorySnapshot.load(snap_dir)
            assert all(s.load_image() is not None for s in snap.get(snap.ids()))
    return after


def test_sigkill_at_random_instants(tmp_path):
    root = tmp_path / "memory"
    rng = random.Random(25)
    state: list[int] = []
    for it in range(25):
        printed = run_and_kill(root, it, rng, tmp_path / f"writer{it}.log")
        before = state if printed is None else printed
        state = check_memory(root, before)
    assert state, "the writer never committed a sample"


@pytest.mark.parametrize("point, expect_new", [
    ("before_commit", False), ("after_commit", True), ("mid_snapshot", False)])
def test_crash_at_each_step(tmp_path, point, expect_new):
    root = tmp_path / "memory"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), str(HERE)]))
    log = tmp_path / "writer.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(HERE / "_memory_writer.py"), str(root), "0",
                               point], stdout=out, stderr=subprocess.PIPE, env=env, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()
    before = last_state(log)
    leftovers = [p for p in (root / "snapshots").iterdir() if p.name.startswith(".tmp-")]
    assert bool(leftovers) == (point == "mid_snapshot")
    n_files = len(list((root / "images").iterdir()))
    if point != "mid_snapshot":
        assert n_files > len(before)  # the interrupted add/eviction left files behind
    after = check_memory(root, before)
    assert (after != before) == expect_new
    assert not [p for p in (root / "snapshots").iterdir() if p.name.startswith(".")]
