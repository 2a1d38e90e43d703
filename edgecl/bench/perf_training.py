"""Inference fps while a learning round trains, as a fraction of idle fps (``bench perf --while-training``)."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable


class _ReadyHook:
    """Signals once the first training batch has been processed."""

    def __init__(self, event):
        self.event = event

    def on_round_start(self, tuner) -> None:
        """Nothing to prepare."""

    def on_batch_loss(self, batch, preds, loss_items):
        """Signal readiness; adds no loss."""
        self.event.set()
        return None

    def on_round_end(self, result) -> None:
        """Nothing to finish."""


def train_in_background(ready, work_dir: str, imgsz: int, torch_threads: int, nice: int,
                        budget_s: float) -> None:
    """Spawned target: fine-tune a YOLO11n on a small scenario, as the device's learner does.

    Args:
        ready: event set after the first training batch.
        work_dir: an empty folder for the scenario; the parent removes it (this process ends
            by SIGTERM, which runs no clean-up of its own).
        imgsz: training image size.
        torch_threads: learner torch threads.
        nice: learner niceness.
        budget_s: how long to train.
    """
    from edgecl.data.scenario import make_scenario
    from edgecl.data.tasks import load_tasks
    from edgecl.config import IderConfig, LearnerConfig
    from edgecl.continual.finetune import FineTuner, apply_low_priority
    from edgecl.ultra import build_detection_model

    cfg = LearnerConfig(imgsz=imgsz, torch_threads=torch_threads, nice=nice, batch=8,
                        bn_recalibration_batches=0)
    apply_low_priority(cfg)
    taskset = load_tasks(make_scenario(Path(work_dir), tasks=1, images_per_task=40, imgsz=imgsz,
                                       seed=0))
    model = build_detection_model(taskset.nc, names=dict(taskset.names))
    FineTuner(model, cfg, IderConfig(), hooks=[_ReadyHook(ready)]).run(
        list(taskset.tasks[0].train), [], budget_s=budget_s, max_steps=10**6, epochs=10**6,
        device="cpu")


def fps_while_training(measure_fps: Callable[[], float], imgsz: int) -> dict:
    """Measure inference fps idle, then while a low-priority learner trains.

    Args:
        measure_fps: runs the inference measurement once and returns frames per second.
        imgsz: training image size of the background learner, pixels.

    Returns:
        ``fps_idle``, ``fps_while_training``, their ratio ``fps_ratio_while_training`` (1.0:
        training costs inference nothing) and the learner settings.
    """
    from edgecl.config import LearnerConfig

    learner = LearnerConfig()
    idle = measure_fps()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    work_dir = tempfile.mkdtemp(prefix="edgecl-bench-learner-")
    proc = ctx.Process(target=train_in_background, name="edgecl-bench-learner",
                       args=(ready, work_dir, imgsz, learner.torch_threads, learner.nice, 600.0),
                       daemon=True)
    try:
        proc.start()
        if not ready.wait(timeout=300):
            raise RuntimeError("the background learner did not start training within 300 s")
        time.sleep(1.0)
        busy = measure_fps()
    finally:
        if proc.is_alive():
            proc.terminate()
        if proc.pid is not None:
            proc.join(10)
        shutil.rmtree(work_dir, ignore_errors=True)  # before: a scenario left in /tmp each run
    return {"fps_idle": round(idle, 2), "fps_while_training": round(busy, 2),
            "fps_ratio_while_training": round(busy / idle, 3),
            "learner_torch_threads": learner.torch_threads, "learner_nice": learner.nice}
