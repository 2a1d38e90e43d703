"""One run of the class-incremental protocol (the drone paper's, see docs/REFERENCES §1).

For a strategy, a replay budget and a seed: a freshly initialised YOLO11n (seeded) with task
1's classes learns the tasks in order.  Before task ``t`` the head grows for its classes and
the replay set is chosen once (offline, as the paper does):

* ``finetune``: nothing; ``joint``: every earlier task's training images;
* ``er``, ``mir``, ``mir-virtual``, ``far``: :func:`replay_size` images chosen by the
  strategy of ``edgecl.continual.strategies`` from an in-memory pool that holds the training
  images of the tasks learnt so far (an image enters the pool once its task is learnt; FAR's
  baseline is its recall at that moment).

The model then fine-tunes on task ``t``'s images plus the replay set (``FineTuner``, merged
replay), and every task ``j <= t`` is evaluated on its test images on its own classes:
``R[t, j]`` = box mAP50-95.  Selection runs on the model after head growth: old-class outputs
are bit-identical to the previous model's and the new rows start at a negligible score.
``mir-virtual`` scores ``max(virtual_candidates, 5 k)`` random candidates by the loss
increase after a virtual step on a batch of task ``t``'s images and keeps the top ``k``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl.bench.cl_data import DataView
from edgecl.config import IderConfig, LearnerConfig, ModelConfig, ReplayConfig
from edgecl.continual.memory_records import SampleRecord, StoredSample

NO_BUDGET_STRATEGIES = ("finetune", "joint")
RECALL_STRATEGIES = ("mir", "far")  # rank by image recall under the current model
RECALL_MAX_DET = 100
EVAL_CONF = 0.001
EVAL_MAX_DET = 300
VIRTUAL_CANDIDATES_PER_PICK = 5  # MIR's default ratio: 50 candidates for 10 picks


@dataclass(frozen=True)
class ProtocolSettings:
    """Training and evaluation settings shared by every run of a benchmark.

    Attributes:
        imgsz: training and evaluation image size in pixels.
        batch: training batch size.
        lr: AdamW learning rate.
        steps_per_task: optimiser steps per task from task 2 on (when ``epochs`` is 0).
        first_task_steps: optimiser steps for task 1, learnt from scratch (when ``epochs`` is 0).
        epochs: when > 0, train this many passes over each task's data instead of steps.
        task_budget_s: wall-clock cap per task in seconds (0: none).
        ider: train with IDER (previous task's model as distillation teacher).
        device: ``cpu``, ``cuda`` or ``auto`` (not part of a run's identity).
    """

    imgsz: int = 160
    batch: int = 8
    lr: float = 0.002
    steps_per_task: int = 200
    first_task_steps: int = 1000
    epochs: int = 0
    task_budget_s: float = 0.0
    ider: bool = False
    device: str = "cpu"

    def key(self) -> dict:
        """The settings that decide a run's result (everything but the device)."""
        out = dataclasses.asdict(self)
        out.pop("device")
        return out

    def learner(self) -> LearnerConfig:
        """The ``LearnerConfig`` the fine-tuner runs with."""
        return LearnerConfig(batch=self.batch, lr=self.lr, imgsz=self.imgsz, device=self.device)


@dataclass(frozen=True)
class RunSpec:
    """Which run: strategy, replay budget (fraction, None for finetune/joint) and seed."""

    strategy: str
    budget: float | None
    seed: int


def replay_size(budget: float | None, n_earlier: int) -> int:
    """Replay images for a budget: ``budget x n_earlier`` rounded to nearest (halves up), >= 1.

    Args:
        budget: fraction of the earlier tasks' training images (0 < budget <= 1).
        n_earlier: number of earlier tasks' training images.

    Returns:
        ``0`` when there is nothing earlier or no budget; otherwise at least one image and
        at most ``n_earlier``.
    """
    if not budget or n_earlier <= 0:
        return 0
    return min(n_earlier, max(1, math.floor(budget * n_earlier + 0.5 + 1e-9)))


class ReplayPool:
    """In-memory ``ReplaySource`` over dataset images (no copies, no database)."""

    def __init__(self):
        self._records: dict[int, SampleRecord] = {}
        self._paths: dict[int, Path] = {}
        self._labels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add(self, task: str, images: list[Path],
            baselines: list[float | None] | None = None) -> list[int]:
        """Add a task's images (labels read from beside them).

        Args:
            task: task name.
            images: image files (YOLO layout).
            baselines: recall of each image right after its task was learnt (None: unknown).

        Returns:
            The new ids (ascending).
        """
        from edgecl.bench.tasks import label_path_for
        from edgecl.continual.evaluate import read_label_file

        ids = []
        for k, image in enumerate(images):
            sample_id = len(self._records)
            labels = read_label_file(label_path_for(image))
            base = None if baselines is None or baselines[k] is None else float(baselines[k])
            self._records[sample_id] = SampleRecord(
                id=sample_id, task=task, classes=tuple(sorted({int(c) for c in labels[:, 0]})),
                source=str(image), ts_s=float(sample_id), bytes=image.stat().st_size,
                held_out=False, recall_baseline=base, last_recall=base, last_loss=None,
                times_replayed=0, width=0, height=0)
            self._paths[sample_id], self._labels[sample_id] = image, labels
            ids.append(sample_id)
        return ids

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None) -> list[SampleRecord]:
        """Records matching the filter, ascending by id (nothing is held out here)."""
        wanted = self._records.keys() if ids is None else [i for i in ids if i in self._records]
        return [self._records[i] for i in sorted(wanted)
                if held_out in (None, False) and (task is None or self._records[i].task == task)]

    def get(self, ids: list[int]) -> list[StoredSample]:
        """Samples with their image path and labels, in the order of ``ids``."""
        from edgecl.bench.tasks import label_path_for

        return [StoredSample.from_record(self._records[i], self._paths[i],
                                         label_path_for(self._paths[i]), self._labels[i])
                for i in ids if i in self._records]

    def update_recall(self, ids: list[int], values: list[float]) -> int:
        """Store measured recalls as ``last_recall``; returns how many were updated."""
        done = 0
        for sample_id, value in zip(ids, values):
            if sample_id in self._records:
                self._records[sample_id] = dataclasses.replace(self._records[sample_id],
                                                               last_recall=float(value))
                done += 1
        return done

    def image_paths(self, ids: list[int]) -> list[Path]:
        """Image files of ``ids``."""
        return [self._paths[i] for i in ids]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (ultralytics augments with them)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _detector(model, names: dict[int, str], settings: ProtocolSettings, conf: float, max_det: int):
    from edgecl.models.base import InferenceOptions
    from edgecl.models.torch_backend import TorchBackend

    opts = InferenceOptions(conf=conf, iou=ModelConfig().iou, max_det=max_det)
    return TorchBackend.from_model(model, names, settings.imgsz, opts)


def _virtual_scorer(model, view: DataView, pool: ReplayPool, t: int, settings: ProtocolSettings,
                    seed: int):
    from edgecl.continual.finetune import make_virtual_scorer

    rng = np.random.default_rng(seed)
    batch = [view.train[t][i] for i in rng.permutation(len(view.train[t]))[:settings.batch]]
    by_id = {r.id: p for r, p in zip(pool.records(), pool.image_paths([r.id for r in pool.records()]))}
    return make_virtual_scorer(model, batch, settings.lr, by_id, imgsz=settings.imgsz)


def choose_replay(view: DataView, pool: ReplayPool, spec: RunSpec, model, t: int,
                  settings: ProtocolSettings) -> list[Path]:
    """The replay images for task ``t`` (offline, once per task).

    Args:
        view: the data.
        pool: earlier tasks' training images.
        spec: the run.
        model: the model about to learn task ``t`` (head already grown); only ``mir``,
            ``mir-virtual`` and ``far`` use it.
        t: task index.
        settings: protocol settings.

    Returns:
        Image files to replay.
    """
    from edgecl.continual.strategies import ReplayContext, get_strategy

    if spec.strategy == "finetune" or t == 0:
        return []
    if spec.strategy == "joint":
        return [p for images in view.train[:t] for p in images]
    k = replay_size(spec.budget, len(pool))
    seed = spec.seed * 1000 + t
    context = ReplayContext.from_config(ReplayConfig(), current_task=view.task_names[t], seed=seed)
    if spec.strategy == "mir-virtual":
        context = dataclasses.replace(
            context, virtual_top_k=k, virtual_scorer=_virtual_scorer(model, view, pool, t, settings, seed),
            virtual_candidates=max(context.virtual_candidates, VIRTUAL_CANDIDATES_PER_PICK * k))
    detector = None
    if spec.strategy in RECALL_STRATEGIES:
        detector = _detector(model, view.seen_names(t), settings, ModelConfig().conf, RECALL_MAX_DET)
    ids = get_strategy(spec.strategy).select(pool, k, model=detector, context=context)
    return pool.image_paths(list(ids))


def _train(model, images, replay, settings: ProtocolSettings, prev_model, first: bool):
    from edgecl.continual.finetune import FineTuner

    tuner = FineTuner(model, settings.learner(), IderConfig(enabled=settings.ider),
                      prev_model=prev_model)
    if settings.epochs > 0:
        max_steps, epochs = 10**9, settings.epochs
    else:
        max_steps = settings.first_task_steps if first else settings.steps_per_task
        epochs = 10**6
    budget_s = settings.task_budget_s if settings.task_budget_s > 0 else math.inf
    return tuner.run(list(images), list(replay), budget_s=budget_s, max_steps=max_steps,
                     epochs=epochs, device=settings.device)


def _evaluate(model, view: DataView, t: int, settings: ProtocolSettings) -> list:
    from edgecl.continual.evaluate import evaluate_model

    backend = _detector(model, view.seen_names(t), settings, EVAL_CONF, EVAL_MAX_DET)
    return [evaluate_model(backend, view.test[j], class_ids=view.task_classes[j])
            for j in range(t + 1)]


def _baselines(model, view: DataView, t: int, settings: ProtocolSettings) -> list[float | None]:
    """Recall of task ``t``'s training images right after it was learnt (FAR's baseline;
    None for an unreadable image, which FAR then treats as not forgotten)."""
    import cv2

    from edgecl.bench.tasks import label_path_for
    from edgecl.continual.evaluate import read_label_file
    from edgecl.continual.recall import batch_recall

    detector = _detector(model, view.seen_names(t), settings, ModelConfig().conf, RECALL_MAX_DET)
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in view.train[t]]
    readable = [i for i, image in enumerate(images) if image is not None]
    recalls = batch_recall(detector, [images[i] for i in readable],
                           [read_label_file(label_path_for(view.train[t][i])) for i in readable])
    out: list[float | None] = [None] * len(images)
    for i, value in zip(readable, recalls.tolist()):
        out[i] = value
    return out


def _first_task_cache(view: DataView, spec: RunSpec, settings: ProtocolSettings) -> Path:
    """Where the model after task 1 is kept: every strategy trains task 1 identically (no
    replay yet), so it is learnt once per seed and settings and shared by all runs."""
    key = {k: v for k, v in settings.key().items() if k != "steps_per_task"}
    blob = json.dumps({"seed": spec.seed, "data": view.data_hash, **key}, sort_keys=True)
    return view.root / "first-task" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def _learn_first_task(model, view: DataView, spec: RunSpec, settings: ProtocolSettings):
    """Train task 1, or load the copy shared by earlier runs; returns ``(model, log entry)``."""
    from edgecl.atomic import atomic_write_json
    from edgecl.models.checkpoint import load_checkpoint, save_checkpoint

    cache = _first_task_cache(view, spec, settings)
    sidecar = cache.with_suffix(".json")
    if cache.is_file() and sidecar.is_file():
        cached, _ = load_checkpoint(cache)
        return cached, dict(json.loads(sidecar.read_text()), shared=True)
    seed_everything(spec.seed * 1000)
    entry = _task_log(view.task_names[0], [], _train(model, view.train[0], [], settings, None,
                                                     first=True))
    save_checkpoint(model, cache, meta={"names": view.seen_names(0), "imgsz": settings.imgsz})
    atomic_write_json(sidecar, entry)
    return model, entry


def _task_log(task: str, replay: list, ft) -> dict:
    return {"task": task, "replay": len(replay), "steps": ft.steps, "train_s": round(ft.seconds, 2),
            "stopped": ft.stopped_reason,
            "final_loss": None if math.isnan(ft.final_loss) else round(ft.final_loss, 4)}


def run_protocol(view: DataView, spec: RunSpec, settings: ProtocolSettings,
                 on_task: Callable[[int], None] | None = None) -> dict:
    """Learn every task in order under one strategy, budget and seed.

    Args:
        view: the data (filtered work copy).
        spec: the run.
        settings: protocol settings.
        on_task: called with the task index after each task (progress).

    Returns:
        ``matrix`` (T x T float array, NaN above the diagonal), ``dece`` (per task after the
        last task), ``tasks`` (per-task training log) and ``seconds``.
    """
    from edgecl.continual.head import grow_head
    from edgecl.ultra import build_detection_model

    start = time.monotonic()
    n = view.n_tasks
    seed_everything(spec.seed)
    model = build_detection_model(len(view.task_classes[0]), names=view.seen_names(0))
    pool, matrix, log = ReplayPool(), np.full((n, n), np.nan), []
    results = []
    for t in range(n):
        prev = copy.deepcopy(model) if settings.ider and t > 0 else None
        grow_head(model, view.seen_names(t))
        replay = choose_replay(view, pool, spec, model, t, settings)
        if t == 0:
            model, entry = _learn_first_task(model, view, spec, settings)
        else:
            seed_everything(spec.seed * 1000 + t)
            entry = _task_log(view.task_names[t], replay,
                              _train(model, view.train[t], replay, settings, prev, first=False))
        results = _evaluate(model, view, t, settings)
        matrix[t, :t + 1] = [r.map50_95 for r in results]
        baselines = _baselines(model, view, t, settings) if spec.strategy == "far" else None
        pool.add(view.task_names[t], list(view.train[t]), baselines)
        log.append(entry)
        if on_task is not None:
            on_task(t)
    return {"matrix": matrix, "dece": [r.dece for r in results], "tasks": log,
            "seconds": time.monotonic() - start}
