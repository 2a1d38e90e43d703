"""Writer process for the crash test: adds samples, snapshots now and then, prints the
committed ids after every completed add. Killed with SIGKILL at random instants."""

import json
import os
import sys

import numpy as np

from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample, overhead_reserve_bytes

CAPACITY = 8
MAX_BYTES = overhead_reserve_bytes(CAPACITY) + 12 * 4096
CONFIG = MemoryConfig(capacity=CAPACITY, max_bytes=MAX_BYTES, holdout_fraction=0.25,
                      policy="class_balanced", seed=11)


def expected(seq: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels written for stream position ``seq`` (recomputable)."""
    size = 64 if seq % 3 == 0 else 32
    value = 20 + (seq * 7) % 200
    image = np.full((size, size, 3), value, np.uint8)
    if seq % 3 == 0:  # larger, noisy files exercise the byte bound
        image = np.random.default_rng(seq).integers(0, 255, (size, size, 3), dtype=np.uint8)
    labels = np.array([[seq % 3, 0.2 + (seq % 50) / 100, 0.5, 0.1, 0.2]], np.float32)
    return image, labels


def die(*_args, **_kwargs) -> None:
    """Stand-in for a power cut: leave at once, flushing and cleaning nothing."""
    os._exit(137)


def arm_crash(point: str) -> None:
    """Make the next add/eviction/snapshot stop dead at ``point``."""
    from edgecl.continual.memory import index, snapshot, store

    if point == "before_commit":  # files written, victims' rows deleted, not committed
        index.IndexDB.insert = die
    elif point == "after_commit":  # committed, victims' files not yet unlinked
        original = store.ReplayMemory._unlink_samples
        store.ReplayMemory._unlink_samples = lambda self, ids: die() if ids else original(self, ids)
    elif point == "mid_snapshot":  # links made in the .tmp- folder, not renamed into place
        snapshot._write_snapshot_meta = die


def main() -> None:
    root, iteration = sys.argv[1], int(sys.argv[2])
    crash_point = sys.argv[3] if len(sys.argv) > 3 else ""
    memory = ReplayMemory(root, CONFIG)
    print("open " + json.dumps(memory.ids()), flush=True)
    for i in range(100_000):
        if crash_point and i == 12:
            arm_crash(crash_point)
        seq = iteration * 100_000 + i
        image, labels = expected(seq)
        memory.add(Sample(image, labels, task=f"t{(seq // 20) % 4}", source=f"seq{seq}"))
        print("added " + json.dumps(memory.ids()), flush=True)
        if i % 4 == 3:
            memory.snapshot()
        if i % 5 == 4:
            ids = memory.ids()
            memory.update_recall(ids, [0.5] * len(ids))


if __name__ == "__main__":
    main()
