"""``edgecl bench memory``: throughput, memory use, disk bound and selection latency of the
replay memory under a long synthetic stream."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecl.arguments import print_json_line

N_TASKS = 5
N_CLASSES = 5


MAX_POOL_BYTES = 2**30
"""The synthetic images' pixels held at once (``--pool`` x ``--imgsz`` x ``--imgsz`` x 3
bytes), all made before the first add: ``--pool 100000000000`` hung the benchmark."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``.

    Args:
        parser: the ``bench memory`` parser.
    """
    from edgecl.arguments import byte_size, non_negative_int, pixel_side, positive_int

    parser.add_argument("--adds", type=positive_int, default=100_000,
                        help="samples offered (default 100000)")
    parser.add_argument("--capacity", type=positive_int, default=2000,
                        help="memory capacity in samples")
    parser.add_argument("--imgsz", type=pixel_side, default=160,
                        help="side of the synthetic images, 32..4096 (default 160)")
    parser.add_argument("--max-bytes", type=byte_size, default=0,
                        help="byte bound, e.g. 12000000 or 64MiB (default, or 0: 60%% of what "
                             "capacity samples need, so the byte bound is exercised)")
    parser.add_argument("--policy", default="class_balanced",
                        help="insertion policy (reservoir, class_balanced, task_budget)")
    parser.add_argument("--pool", type=positive_int, default=64,
                        help="distinct synthetic images reused (at most 1 GiB of pixels)")
    parser.add_argument("--du-every", type=positive_int, default=500,
                        help="sample disk usage every N adds")
    parser.add_argument("--k", type=positive_int, default=64, help="replay samples selected per strategy")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (>= 0)")
    parser.add_argument("--state-dir", help="state folder (default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="only the JSON line on stdout")


def synthetic_pool(n: int, imgsz: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cheap synthetic images (gradient + coloured boxes) with their YOLO labels.

    Args:
        n: number of images.
        imgsz: side in pixels.
        seed: random seed.

    Returns:
        ``(image, labels)`` pairs; labels are (M, 5) with class 0 (re-coloured per task later).
    """
    import cv2

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, imgsz, dtype=np.float32)
    out = []
    for _ in range(n):
        base = (ramp[None, :, None] * rng.uniform(0.2, 1.0, 3) + ramp[:, None, None] * 0.3)
        image = np.clip(base, 0, 255).astype(np.uint8)
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(0.1, 0.4, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            p1 = (int((cx - w / 2) * imgsz), int((cy - h / 2) * imgsz))
            p2 = (int((cx + w / 2) * imgsz), int((cy + h / 2) * imgsz))
            cv2.rectangle(image, p1, p2, [int(v) for v in rng.integers(0, 255, 3)], -1)
            rows.append([0, cx, cy, w, h])
        out.append((image, np.array(rows, np.float32)))
    return out


def du_bytes(root: Path) -> int:
    """Disk usage of a folder like ``du``: allocated blocks of every file and directory."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in [".", *files]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += max(int(getattr(st, "st_blocks", 0)) * 512, 0 if name == "." else st.st_size)
    return total


class _FakeDetector:
    """A near-free detector: one box per image (for timing selection, not accuracy)."""

    def infer(self, images: list[np.ndarray]):
        """Return one fixed box per image."""
        from edgecl.frames import Detections

        out = []
        for img in images:
            h, w = img.shape[:2]
            out.append(Detections(np.array([[0, 0, w / 2, h / 2]], np.float32),
                                  np.array([0.9], np.float32), np.array([0], np.int64)))
        return out


def _auto_max_bytes(pool, capacity: int) -> int:
    from edgecl.continual.memory import estimate_sample_bytes, overhead_reserve_bytes

    sizes = [estimate_sample_bytes(img, lab, 90) for img, lab in pool]
    return overhead_reserve_bytes(capacity) + int(0.6 * capacity * float(np.mean(sizes)))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _offer_stream(memory, pool, adds: int, du_every: int, seed: int, quiet: bool) -> dict:
    from tqdm import tqdm

    from edgecl.continual.memory import Sample

    rng = np.random.default_rng(seed + 1)
    kept, du_max, kept_s = 0, 0, 0.0
    start = time.perf_counter()
    for i in tqdm(range(adds), desc="memory adds", file=sys.stderr, mininterval=1.0,
                  disable=not sys.stderr.isatty()):  # no carriage-return frames in a log
        task_index = i * N_TASKS // max(1, adds)
        image, labels = pool[int(rng.integers(len(pool)))]
        labels = labels.copy()
        labels[:, 0] = rng.integers(0, task_index + 1, len(labels))
        t0 = time.perf_counter()
        if memory.add(Sample(image, labels, task=f"task{task_index}", source=f"bench:{i}",
                             ts_s=float(i))) is not None:
            kept += 1
            kept_s += time.perf_counter() - t0
        if (i + 1) % du_every == 0:
            du_max = max(du_max, du_bytes(memory.root))
        if not quiet and not sys.stderr.isatty() and (i + 1) % max(1, adds // 10) == 0:
            # a log has no bar: a plain line every tenth (it sat silent for minutes)
            print(f"memory adds: {i + 1}/{adds} ({100 * (i + 1) // adds}%) in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    memory.flush()
    declined = adds - kept
    return {"kept": kept, "elapsed_s": elapsed, "du_max": max(du_max, du_bytes(memory.root)),
            "kept_add_ms": round(1000 * kept_s / max(1, kept), 3),
            "declined_add_ms": round(1000 * (elapsed - kept_s) / max(1, declined), 3)}


def _time_selection(memory, k: int, seed: int) -> dict:
    from edgecl.config import ReplayConfig
    from edgecl.continual.strategies import STRATEGIES, ReplayContext

    from edgecl.continual.recall import batch_recall

    batch_recall(_FakeDetector(), [np.zeros((8, 8, 3), np.uint8)],
                 [np.array([[0, 0.5, 0.5, 0.5, 0.5]], np.float32)])  # imports torch once
    rng = np.random.default_rng(seed)
    ids = memory.ids(held_out=False)
    memory.set_recall_baseline(ids, rng.uniform(0.5, 1.0, len(ids)).tolist())
    t0 = time.perf_counter()
    snap = memory.snapshot()
    out = {"snapshot_ms": (time.perf_counter() - t0) * 1000, "select_ms": {}}
    ctx = ReplayContext.from_config(
        ReplayConfig(), current_task=f"task{N_TASKS - 1}", seed=seed,
        virtual_scorer=lambda cand: np.random.default_rng(len(cand)).normal(size=len(cand)))
    for name, strategy in STRATEGIES.items():
        t0 = time.perf_counter()
        strategy.select(snap, k, model=_FakeDetector(), context=ctx)
        out["select_ms"][name] = round((time.perf_counter() - t0) * 1000, 2)
    out["snapshot_ms"] = round(out["snapshot_ms"], 2)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; the last stdout line is one JSON object.

    Args:
        args: parsed options (see :func:`add_arguments`).

    Returns:
        0 when the disk bound held, 1 when it was exceeded.
    """
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.errors import ConfigError, ReplayMemoryError

    pool_bytes = args.pool * args.imgsz * args.imgsz * 3
    if pool_bytes > MAX_POOL_BYTES:  # built before the first add: it never started
        fits = max(1, MAX_POOL_BYTES // (args.imgsz * args.imgsz * 3))
        raise ConfigError(f"--pool {args.pool} images of {args.imgsz} px would hold "
                          f"{pool_bytes / 2**30:.1f} GiB in memory (at most "
                          f"{MAX_POOL_BYTES // 2**30} GiB: --pool {fits} at this --imgsz)")
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="edgecl-mb-"))
    root = state / "memory"
    if (root / "index.sqlite").exists():
        raise ReplayMemoryError(f"bench needs a fresh memory, {root} already holds one")
    try:
        pool = synthetic_pool(args.pool, args.imgsz, args.seed)
        max_bytes = args.max_bytes or _auto_max_bytes(pool, args.capacity)
        cfg = MemoryConfig(capacity=args.capacity, max_bytes=max_bytes, policy=args.policy,
                           seed=args.seed)
        rss_start = _rss_mb()
        with ReplayMemory(root, cfg) as memory:
            stream = _offer_stream(memory, pool, args.adds, max(1, args.du_every), args.seed,
                                   args.json)
            stats = memory.stats()
            rss_adds = _rss_mb()
            selection = _time_selection(memory, args.k, args.seed)
            verify_ok = memory.verify(repair=False, deep=False).ok
        result = {
            "adds": args.adds, "kept": stream["kept"], "elapsed_s": round(stream["elapsed_s"], 2),
            "kept_add_ms": stream["kept_add_ms"], "declined_add_ms": stream["declined_add_ms"],
            "adds_per_s": round(args.adds / max(stream["elapsed_s"], 1e-9), 1),
            "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_adds, 1),
            "rss_mb_after_select": round(_rss_mb(), 1),
            "disk_bytes_max": stream["du_max"], "max_bytes": max_bytes,
            "samples_end": stats["samples"], "sample_bytes_end": stats["bytes"],
            "capacity": args.capacity, "imgsz": args.imgsz, "policy": args.policy,
            "verify_ok": verify_ok, **selection}
    finally:
        if not args.state_dir:
            shutil.rmtree(state, ignore_errors=True)
    if not args.json:
        print(f"{result['adds_per_s']} adds/s, disk max {result['disk_bytes_max']} of "
              f"{max_bytes} bytes, selection ms: "
              + ", ".join(f"{name} {ms}" for name, ms in result["select_ms"].items()))
    print_json_line(result)
    return 0 if result["disk_bytes_max"] <= max_bytes and verify_ok else 1
