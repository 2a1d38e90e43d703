"""One run of the class-incremental protocol (the drone paper's: "Learning on the Fly",
replay-based continual object perception for indoor drones, 2026).

For a strategy, a replay budget and a seed: a freshly initialised YOLO11n (seeded) with task
1's classes learns the tasks in order.  Before task ``t`` the head grows for its classes and
the replay set is chosen once (offline, as the paper does):

* ``finetune``: nothing; ``joint``: every earlier task's training images, labelled with every
  class learnt so far (``DataView.joint``: the upper bound, trained on all it has seen);
* ``er``, ``mir``, ``mir-virtual``, ``far``, ``class_balanced``: :func:`replay_size` images
  chosen by the strategy of ``edgecl.continual.strategies`` from an in-memory pool that holds
  the training images of the tasks learnt so far (an image enters the pool once its task is
  learnt; FAR's baseline is its recall at that moment).

A strategy name may carry modifiers after ``+`` (issue 11, missing annotations), in any order:
``lwf`` adds LwF-style distillation of the previous task's model (``edgecl.continual.distill``),
``pl`` adds the previous model's confident old-class boxes to the new task's training labels
(``edgecl.continual.old_labels``), ``ider`` trains the later tasks with IDER; e.g.
``class_balanced+lwf`` or ``finetune+lwf`` (LwF alone).

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
from typing import Protocol

import numpy as np

from edgecl.bench.cl_data import DataView
from edgecl.config import IderConfig, LearnerConfig, ModelConfig, ReplayConfig
from edgecl.continual.memory import SampleRecord, StoredSample

NO_BUDGET_STRATEGIES = ("finetune", "joint")
JOINT_LABELS = "every-seen-class"
"""How ``joint``'s replayed images are labelled, kept in its results: records without it were
made when they held only their own task's classes and are run again, not reused."""
MODIFIERS = ("lwf", "pl", "ider")
RECALL_STRATEGIES = ("mir", "far")  # rank by image recall under the current model
RECALL_MAX_DET = 100
EVAL_CONF = 0.001
EVAL_MAX_DET = 300
VIRTUAL_CANDIDATES_PER_PICK = 5  # MIR's default ratio: 50 candidates for 10 picks
# INVARIANT: task 1's model is the same for every run of one process with the same first-task
# key (see ProtocolSettings.first_task_key), so its evaluation is computed once per process.
_FIRST_TASK_EVAL: dict[str, list] = {}


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
    distill_cls: float = 1.0
    distill_box: float = 1.0
    distill_conf: float = 0.25
    pseudo_conf: float = 0.5
    pseudo_iou: float = 0.3
    first_task_model: str = ""
    device: str = "cpu"
    precision: str = "auto"

    def key(self) -> dict:
        """The settings that decide a run's result (everything but the device, save the
        arithmetic it trains in: ``auto`` is recorded as what it resolves to there; the first
        task's checkpoint by its content hash, not its path)."""
        from edgecl.continual.finetune import resolve_device, resolve_precision

        out = dataclasses.asdict(self)
        out["precision"] = resolve_precision(self.precision, resolve_device(out.pop("device")))
        path = out.pop("first_task_model")
        if path:
            out["first_task_sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        return out

    def first_task_key(self) -> dict:
        """The settings that decide the model after task 1 (what later tasks use is left out)."""
        later = ("steps_per_task", "distill_cls", "distill_box", "distill_conf", "pseudo_conf",
                 "pseudo_iou")
        return {k: v for k, v in self.key().items() if k not in later}

    def learner(self) -> LearnerConfig:
        """The ``LearnerConfig`` the fine-tuner runs with."""
        return LearnerConfig(batch=self.batch, lr=self.lr, imgsz=self.imgsz, device=self.device,
                             precision=self.precision)


@dataclass(frozen=True)
class RunSpec:
    """Which run: strategy (with ``+`` modifiers), replay budget (fraction, None for
    finetune/joint) and seed."""

    strategy: str
    budget: float | None
    seed: int

    @property
    def base(self) -> str:
        """The strategy without modifiers (``er+lwf`` -> ``er``)."""
        return split_strategy(self.strategy)[0]

    @property
    def modifiers(self) -> frozenset[str]:
        """The modifiers (``er+lwf+pl`` -> ``{lwf, pl}``)."""
        return frozenset(split_strategy(self.strategy)[1])


def split_strategy(name: str) -> tuple[str, tuple[str, ...]]:
    """``"er+lwf+pl"`` -> ``("er", ("lwf", "pl"))`` (no checking; see ``bench.cl``)."""
    parts = [p.strip() for p in name.split("+")]
    return parts[0], tuple(parts[1:])


class Progress(Protocol):
    """Progress within a run (``bench cl`` shows it as a bar): one phase at a time."""

    def phase(self, desc: str, total: int, unit: str) -> None:
        """Start a phase of ``total`` units (steps or images)."""

    def advance(self, n: int = 1, postfix: str = "") -> None:
        """``n`` units done; ``postfix`` shows e.g. the loss."""


class _StepProgress:
    """FineTuner hook advancing a :class:`Progress` by one step per batch, with the loss."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_round_start(self, tuner) -> None:
        """Nothing to prepare."""

    def on_batch_loss(self, batch: dict, preds: dict, loss_items: dict):
        """Advance one step; show the criterion's loss items. Adds no loss."""
        terms = " ".join(f"{k} {float(v):.2f}" for k, v in loss_items.items())
        self.progress.advance(1, terms)
        return None

    def on_round_end(self, result) -> None:
        """Nothing to release."""


class _MemoDetector:
    """A detector that remembers its output per image content (one model, one stage): the
    final evaluation and the calibration pass then infer each test image once."""

    def __init__(self, detector):
        self.detector = detector
        self._seen: dict[bytes, object] = {}

    def infer(self, images):
        """Detect the images not seen yet; return every image's detections in order."""
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).digest() for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._seen]
        if todo:
            for i, det in zip(todo, self.detector.infer([images[i] for i in todo])):
                self._seen[keys[i]] = det
        return [self._seen[k] for k in keys]


class _CountingDetector:
    """A detector that advances a :class:`Progress` by the images it was given."""

    def __init__(self, detector, progress: Progress | None):
        self.detector = detector
        self.progress = progress

    def infer(self, images):
        """Detect, then count the images."""
        out = self.detector.infer(images)
        if self.progress is not None:
            self.progress.advance(len(images))
        return out


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
        from edgecl.data.tasks import label_path_for
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
        from edgecl.data.tasks import label_path_for

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

    base = spec.base
    if base == "finetune" or t == 0:
        return []
    if base == "joint":
        return list(view.joint[t])
    k = replay_size(spec.budget, len(pool))
    seed = spec.seed * 1000 + t
    context = ReplayContext.from_config(ReplayConfig(), current_task=view.task_names[t], seed=seed)
    if base == "mir-virtual":
        context = dataclasses.replace(
            context, virtual_top_k=k, virtual_scorer=_virtual_scorer(model, view, pool, t, settings, seed),
            virtual_candidates=max(context.virtual_candidates, VIRTUAL_CANDIDATES_PER_PICK * k))
    detector = None
    if base in RECALL_STRATEGIES:
        detector = _detector(model, view.seen_names(t), settings, ModelConfig().conf, RECALL_MAX_DET)
    ids = get_strategy(base).select(pool, k, model=detector, context=context)
    return pool.image_paths(list(ids))


def _train(model, images, replay, settings: ProtocolSettings, *, first: bool, ider: bool,
           prev_model=None, hooks=(), progress: Progress | None = None):
    from edgecl.continual.finetune import FineTuner

    if settings.epochs > 0:
        max_steps, epochs = 10**9, settings.epochs
    else:
        max_steps = settings.first_task_steps if first else settings.steps_per_task
        epochs = 10**6
    hooks = list(hooks)
    if progress is not None:
        progress.phase("train", max_steps if settings.epochs == 0 else 0, "step")
        hooks.append(_StepProgress(progress))
    tuner = FineTuner(model, settings.learner(), IderConfig(enabled=ider),
                      prev_model=prev_model if ider else None, hooks=hooks)
    budget_s = settings.task_budget_s if settings.task_budget_s > 0 else math.inf
    return tuner.run(list(images), list(replay), budget_s=budget_s, max_steps=max_steps,
                     epochs=epochs, device=settings.device)


def _eval_detector(model, view: DataView, t: int, settings: ProtocolSettings):
    return _MemoDetector(_detector(model, view.seen_names(t), settings, EVAL_CONF, EVAL_MAX_DET))


def _evaluate(model, view: DataView, t: int, settings: ProtocolSettings,
              progress: Progress | None = None, detector=None) -> list:
    from edgecl.continual.evaluate import evaluate_model

    detector = detector or _eval_detector(model, view, t, settings)
    backend = _CountingDetector(detector, progress)
    if progress is not None:
        progress.phase("evaluate", sum(len(view.test[j]) for j in range(t + 1)), "img")
    return [evaluate_model(backend, view.test[j], class_ids=view.task_classes[j])
            for j in range(t + 1)]


def _read_labels(image: Path) -> np.ndarray:
    from edgecl.data.labels import label_path_for, read_yolo_labels

    label = label_path_for(image)
    return read_yolo_labels(label).labels if label.is_file() else np.zeros((0, 5), np.float32)


def calibration_report(model, view: DataView, t: int, settings: ProtocolSettings,
                       progress: Progress | None = None, detector=None) -> dict:
    """D-ECE of the model after task ``t`` on every seen task's test images: raw scores and
    after edgecl's post-hoc per-class calibrator (cross-fitted by image), with the protocol.

    The calibrator is monotone in each class's score, so it changes no ranking within a class
    and the mAP stays the same (up to ties): the two D-ECE values are at equal mAP.

    Returns:
        ``dece_raw``, ``dece_posthoc`` (None when not measurable), ``n_detections`` and
        ``protocol`` (IoU threshold, bins, score threshold, matching rule, cross-fitting).
    """
    from edgecl.calibration.posthoc import fit_for_version

    images = [p for j in range(t + 1) for p in view.test[j]]
    seen = set(view.seen_names(t))
    labels = []
    for image in images:
        lab = _read_labels(image)
        labels.append(lab[np.isin(lab[:, 0].astype(int), list(seen))])
    backend = _CountingDetector(detector or _eval_detector(model, view, t, settings), progress)
    if progress is not None:
        progress.phase("calibrate", len(images), "img")
    _, report = fit_for_version(backend, images, labels, names=view.seen_names(t))
    return {"dece_raw": report["dece_before"], "dece_posthoc": report["dece_after"],
            "n_detections": report["n_detections"], "protocol": report["protocol"]}


def _baselines(model, view: DataView, t: int, settings: ProtocolSettings,
               progress: Progress | None = None) -> list[float | None]:
    """Recall of task ``t``'s training images right after it was learnt (FAR's baseline;
    None for an unreadable image, which FAR then treats as not forgotten)."""
    from edgecl.continual.recall import batch_recall
    from edgecl.data.images import ImageError, read_image

    detector = _CountingDetector(_detector(model, view.seen_names(t), settings, ModelConfig().conf,
                                           RECALL_MAX_DET), progress)
    if progress is not None:
        progress.phase("baselines", len(view.train[t]), "img")
    images = []
    for p in view.train[t]:
        try:
            images.append(read_image(p))
        except ImageError:
            images.append(None)
    readable = [i for i, image in enumerate(images) if image is not None]
    recalls = batch_recall(detector, [images[i] for i in readable],
                           [_read_labels(view.train[t][i]) for i in readable])
    out: list[float | None] = [None] * len(images)
    for i, value in zip(readable, recalls.tolist()):
        out[i] = value
    return out


def _first_task_cache(view: DataView, spec: RunSpec, settings: ProtocolSettings) -> Path:
    """Where the model after task 1 is kept: every strategy trains task 1 identically (no
    replay yet), so it is learnt once per seed and settings and shared by all runs."""
    blob = json.dumps({"seed": spec.seed, "data": view.data_hash, **settings.first_task_key()},
                      sort_keys=True)
    return view.root / "first-task" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def load_first_task_model(path: str | Path, names: dict[int, str]):
    """Load a given checkpoint as the model after task 1 (``--first-task-model``).

    Raises:
        ConfigError: the checkpoint's classes are not task 1's classes (same ids and names).
    """
    from edgecl.errors import ConfigError
    from edgecl.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    got = {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
    if got != dict(names):
        raise ConfigError(f"--first-task-model {path}: classes {got} are not task 1's {dict(names)}")
    return model


def _learn_first_task(model, view: DataView, spec: RunSpec, settings: ProtocolSettings,
                      progress: Progress | None = None):
    """Train task 1, or load the copy shared by earlier runs; returns ``(model, log entry)``."""
    from edgecl.atomic import atomic_write_json
    from edgecl.models.checkpoint import load_checkpoint, save_checkpoint

    if settings.first_task_model:
        loaded = load_first_task_model(settings.first_task_model, view.seen_names(0))
        return loaded, {"task": view.task_names[0], "replay": 0, "steps": 0, "train_s": 0.0,
                        "stopped": "given", "final_loss": None,
                        "model": str(settings.first_task_model), "shared": True}
    cache = _first_task_cache(view, spec, settings)
    sidecar = cache.with_suffix(".json")
    if cache.is_file() and sidecar.is_file():
        cached, _ = load_checkpoint(cache)
        return cached, dict(json.loads(sidecar.read_text()), shared=True)
    seed_everything(spec.seed * 1000)
    entry = _task_log(view.task_names[0], [], _train(model, view.train[0], [], settings, first=True,
                                                     ider=settings.ider, progress=progress))
    save_checkpoint(model, cache, meta={"names": view.seen_names(0), "imgsz": settings.imgsz})
    atomic_write_json(sidecar, entry)
    return model, entry


def _task_log(task: str, replay: list, ft, extra: dict | None = None) -> dict:
    return {"task": task, "replay": len(replay), "steps": ft.steps, "train_s": round(ft.seconds, 2),
            "stopped": ft.stopped_reason,
            "final_loss": None if math.isnan(ft.final_loss) else round(ft.final_loss, 4),
            **(extra or {})}


def _later_task_inputs(view: DataView, spec: RunSpec, settings: ProtocolSettings, t: int, prev,
                       progress: Progress | None) -> tuple[list[Path], list, dict]:
    """Task ``t``'s training images (pseudo-labelled copies with ``pl``) and hooks (``lwf``)."""
    images, hooks, extra = list(view.train[t]), [], {}
    if "lwf" in spec.modifiers:
        from edgecl.continual.distill import DistillHook

        hooks.append(DistillHook(prev, cls_weight=settings.distill_cls,
                                 box_weight=settings.distill_box, conf=settings.distill_conf))
    if "pl" in spec.modifiers:
        from edgecl.continual.old_labels import pseudo_label_copies

        old = view.seen_names(t - 1)
        detector = _CountingDetector(_detector(prev, old, settings, settings.pseudo_conf,
                                               EVAL_MAX_DET), progress)
        if progress is not None:
            progress.phase("pseudo-label", len(images), "img")
        folder = view.root / "pseudo" / f"{spec.strategy}-{spec.budget}-s{spec.seed}" / view.task_names[t]
        images, stats = pseudo_label_copies(images, detector, folder, old, conf=settings.pseudo_conf,
                                            iou_thr=settings.pseudo_iou)
        extra["pseudo_boxes"] = stats.added
        extra["pseudo_images"] = stats.images_with_added
    return images, hooks, extra


def run_protocol(view: DataView, spec: RunSpec, settings: ProtocolSettings,
                 on_task: Callable[[int], None] | None = None,
                 progress: Progress | None = None) -> dict:
    """Learn every task in order under one strategy, budget and seed.

    Args:
        view: the data (filtered work copy).
        spec: the run.
        settings: protocol settings.
        on_task: called with the task index after each task (progress).
        progress: shows steps, loss and images within each training and evaluation.

    Returns:
        ``matrix`` (T x T float array, NaN above the diagonal), ``dece`` (per task after the
        last task), ``calibration`` (:func:`calibration_report` after the last task),
        ``tasks`` (per-task training log), ``seconds`` (the whole run) and ``first_task_s``
        (of which task 1: learning it, or loading the model shared by an earlier run, and
        its evaluation).
    """
    from edgecl.continual.head import grow_head
    from edgecl.ultra import build_detection_model

    start = time.monotonic()
    n = view.n_tasks
    seed_everything(spec.seed)
    model = build_detection_model(len(view.task_classes[0]), names=view.seen_names(0))
    pool, matrix, log = ReplayPool(), np.full((n, n), np.nan), []
    results = []
    ider_later = settings.ider or "ider" in spec.modifiers
    needs_prev = ider_later or bool({"lwf", "pl"} & spec.modifiers)
    first_task_s = 0.0
    for t in range(n):
        task_started = time.monotonic()
        prev = copy.deepcopy(model).eval() if needs_prev and t > 0 else None
        grow_head(model, view.seen_names(t))
        replay = choose_replay(view, pool, spec, model, t, settings)
        if t == 0:
            model, entry = _learn_first_task(model, view, spec, settings, progress)
        else:
            images, hooks, extra = _later_task_inputs(view, spec, settings, t, prev, progress)
            seed_everything(spec.seed * 1000 + t)
            entry = _task_log(view.task_names[t], replay,
                              _train(model, images, replay, settings, first=False, ider=ider_later,
                                     prev_model=prev, hooks=hooks, progress=progress), extra)
        detector = _eval_detector(model, view, t, settings)
        first_key = json.dumps({"data": view.data_hash, "seed": spec.seed,
                                **settings.first_task_key()}, sort_keys=True)
        if t == 0 and first_key in _FIRST_TASK_EVAL:
            results = _FIRST_TASK_EVAL[first_key]
        else:
            results = _evaluate(model, view, t, settings, progress, detector)
        if t == 0:
            _FIRST_TASK_EVAL[first_key] = results
        matrix[t, :t + 1] = [r.map50_95 for r in results]
        baselines = _baselines(model, view, t, settings, progress) if spec.base == "far" else None
        pool.add(view.task_names[t], list(view.train[t]), baselines)
        log.append(entry)
        if t == 0:
            first_task_s = time.monotonic() - task_started
        if on_task is not None:
            on_task(t)
    calibration = calibration_report(model, view, n - 1, settings, progress, detector)
    return {"matrix": matrix, "dece": [r.dece for r in results], "tasks": log,
            "calibration": calibration, "seconds": time.monotonic() - start,
            "first_task_s": first_task_s}
