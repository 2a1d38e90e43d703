"""``edgecl bench field``: does the field loop learn from few human labels?

A class-incremental dataset streams task after task through the real runtime with its labels
HIDDEN (the frames carry neither labels nor task names, as a camera's would). A simulated
operator answers operator-queue items from the hidden truth: exact boxes of every class of the
frame that is known so far (classes of the tasks streamed up to now), at most ``P`` % of the
frames streamed so far, each answer given ``delay_frames`` frames after its frame was seen. It
is the only source of non-pseudo labels; pseudo-labels come from the runtime's own pipeline.
Rounds start from the runtime's own triggers, never at task boundaries; while a round trains,
the stream waits (a file plays as fast as it can be read, so without the wait the whole stream
would pass during the first round on a slow machine: the wait makes the result independent of
the machine's speed).

The queue is offered frames at ``queue_factor`` times the rate the operator answers them, in
every 5 s window of stream time (:data:`QUEUE_WINDOW_S`), as a deployed device's
``labels.max_per_minute`` offers a person a few frames a minute: frames the selection does not
queue are what the pipeline may pseudo-label. ``queue_factor`` 0 offers every selected frame.

Runs: ``random`` (selection weights: random only), ``default`` (the configured weights) and
``ground_truth`` (every frame labelled: the upper bound). Every run starts from the same model;
the default one is trained on the first part of the first task's training images, and only the
rest streams (:func:`split_first_task`: a model must not be judged on frames it learnt). After
the stream, the current model is evaluated on every task's test split: per-class box mAP50-95
(classes matched by NAME, since the device's class registry numbers classes in the order it
learnt them), ACC = their mean (a class never learnt counts 0). ``held_out_acc`` is the device's
own estimate of the same ACC, from its held-out slice of the stream (the forgetting monitor's
last promoted row): the gap between the two shows how far in-stream held-out frames resemble
training frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_text
from edgecl.continual.old_labels import box_iou_np
from edgecl.continual.recall import yolo_to_xyxy
from edgecl.errors import EdgeclError
from edgecl.runtime.labels.pipeline import DECISIONS
from edgecl.runtime.labels.selection import RateLimiter
from edgecl.stop_signals import raise_stop

log = logging.getLogger(__name__)

SELECTIONS = ("random", "default", "ground_truth")
QUEUE_WINDOW_S = 5.0
"""Sliding window of the queue's rate limit, seconds of stream time (a benchmark stream lasts
about a minute, so a minute's window would spend the whole offer on its first seconds)."""

# Settings of every run (any can be overridden on the command line as section.key=value).
FIELD_OVERRIDES = (
    "learner.trigger_new_samples=40", "learner.trigger_new_class=true",
    "learner.trigger_interval_s=0", "learner.first_round_budget_s=900",
    "learner.first_round_max_steps=300", "learner.budget_s=600", "learner.max_steps=120",
    "learner.epochs=100", "learner.torch_threads=2", "memory.holdout_fraction=0.2",
    "memory.holdout_block_s=2",
    "server.enabled=false", "labels.max_per_minute=0", "labels.pseudo_max_per_minute=0",
    "labels.dedup_window_s=0", "labels.max_pending=400",
)


class HiddenLabelsSource:
    """Wraps a labelled source: frames come out with no labels and no task; the truth stays here.

    The stream also waits while ``hold()`` returns True (a learning round is training).

    Args:
        inner: a labelled frame source (``open``, ``read``, ``close``).
        hide: strip labels and tasks (False for the ``ground_truth`` run, which keeps labels
            but still strips the task).
        hold: ``callable() -> bool``; while True, ``read`` waits.
        fps: delivery rate, frames per second of stream time (0: as fast as read); the
            simulated operator answers between frames as a person would while the camera runs.
        device_ids: for the ``ground_truth`` run, ``(device_names, dataset_to_device)`` from
            :func:`device_class_ids`: labels come out in the device's class ids and ``names``
            are the device's (the truth kept here stays in dataset ids).
    """

    def __init__(self, inner, hide: bool = True, hold=None, fps: float = 0.0,
                 device_ids: tuple[dict[int, str], dict[int, int]] | None = None):
        self.inner = inner
        self.hide = hide
        self.device_ids = device_ids
        self.hold = hold
        self.period_s = 1.0 / fps if fps > 0 else 0.0
        self.real_time = fps > 0  # frames come at a camera's pace: capture time is stream time
        self._next_s = 0.0
        self.delivered = 0
        self.uri = getattr(inner, "uri", "hidden")
        self.is_live = False
        self.truth: dict[int, tuple[np.ndarray, int, int, str | None]] = {}
        self.frame_of_ts: dict[float, int] = {}
        self.tasks_seen: list[str] = []
        self.closed = threading.Event()
        self.paused = False

    @property
    def labelled(self) -> bool:
        """True when frames come out with their labels (the ``ground_truth`` run)."""
        return not self.hide and bool(getattr(self.inner, "labelled", True))

    @property
    def names(self) -> dict | None:
        """The dataset's class names when labels come out (``ground_truth``: the device's class
        registry must know the ids its labels carry), else ``None`` (a camera names nothing)."""
        if self.hide:
            return None
        return self.device_ids[0] if self.device_ids else getattr(self.inner, "names", None)

    @property
    def stats(self):
        """The wrapped source's counters."""
        return getattr(self.inner, "stats", None)

    def stream_time_s(self) -> float:
        """Seconds of stream time delivered so far (frames / fps): the clock of the queue's rate
        limit, which stands still while a round holds the stream (wall time when fps is 0)."""
        if not self.period_s:
            return time.monotonic()
        return self.delivered * self.period_s

    def open(self) -> None:
        """Open the wrapped source."""
        if hasattr(self.inner, "open"):
            self.inner.open()

    def read(self):
        """Next frame with its labels and task hidden (``None`` at the end)."""
        while self.hold is not None and self.hold() and not self.closed.is_set():
            self.paused = True  # the watchdog shows capture idle by design while a round trains
            time.sleep(0.05)
        self.paused = False
        if self.period_s:
            delay_s = self._next_s - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            self._next_s = max(self._next_s, time.monotonic()) + self.period_s
        frame = self.inner.read()
        if frame is None:
            return None
        self.delivered += 1
        height, width = frame.image.shape[:2]
        labels = frame.labels if frame.labels is not None else np.zeros((0, 5), np.float32)
        self.truth[frame.frame_id] = (labels, width, height, frame.task)
        self.frame_of_ts[frame.ts_s] = frame.frame_id
        if frame.task and (not self.tasks_seen or self.tasks_seen[-1] != frame.task):
            self.tasks_seen.append(frame.task)
        if self.hide:
            return dataclasses.replace(frame, labels=None, task=None)
        shown = labels
        if self.device_ids and len(labels):
            to_device = self.device_ids[1]
            shown = labels.copy()
            # an id the dataset does not name stays as it is: the device refuses it in one line
            shown[:, 0] = [to_device.get(int(c), int(c)) for c in labels[:, 0]]
        return dataclasses.replace(frame, labels=shown, task=None)

    def close(self) -> None:
        """Close the wrapped source."""
        self.closed.set()
        if hasattr(self.inner, "close"):
            self.inner.close()


def device_class_ids(model_names: dict, dataset_names: dict) -> tuple[dict[int, str], dict[int, int]]:
    """The ids a device that starts from a model gives a dataset's classes.

    The device's class registry is seeded from the starting model's names; a dataset class of
    the same name keeps the model's id, the others get the next free ids in dataset-id order,
    as the registry would number them (a team's own checkpoint need not number classes as the
    dataset does).

    Args:
        model_names: starting model's class id -> name.
        dataset_names: dataset class id -> name.

    Returns:
        ``(device_names, dataset_to_device)``: device class id -> name for every class, and
        dataset class id -> device class id.
    """
    device = {int(k): str(v) for k, v in model_names.items()}
    by_name = {v: k for k, v in device.items()}
    to_device = {}
    for cid, name in sorted((int(k), str(v)) for k, v in dataset_names.items()):
        if name not in by_name:
            by_name[name] = max(device, default=-1) + 1
            device[by_name[name]] = name
        to_device[cid] = by_name[name]
    return device, to_device


def matched_boxes(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> int:
    """Predicted YOLO rows that match a distinct true row of the same class at IoU >= ``iou``
    (greedy, highest IoU first; rows are in the same normalised coordinates).

    Args:
        pred: float (N, 5) predicted rows.
        truth: float (M, 5) true rows.
        iou: IoU threshold.

    Returns:
        Number of true-positive predicted rows.
    """
    if pred.shape[0] == 0 or truth.shape[0] == 0:
        return 0
    ious = box_iou_np(yolo_to_xyxy(pred, 1, 1), yolo_to_xyxy(truth, 1, 1))
    ious[pred[:, 0][:, None] != truth[:, 0][None, :]] = 0.0
    hits, used = 0, set()
    for flat in np.argsort(-ious, axis=None):
        i, j = divmod(int(flat), truth.shape[0])
        if ious[i, j] < iou:
            break
        if i in used or ("t", j) in used:
            continue
        used.update({i, ("t", j)})
        hits += 1
    return hits


class SimulatedOperator:
    """Answers operator-queue items from the hidden truth, within a label budget.

    Args:
        source: the :class:`HiddenLabelsSource` (truth by frame id).
        dataset_names: dataset class id -> name.
        task_classes: task name -> dataset class ids it introduces.
        budget_pct: most answers, as a percentage of the frames streamed so far.
        delay_frames: an item is answered only once this many frames came after its frame.
    """

    def __init__(self, source: HiddenLabelsSource, dataset_names: dict[int, str],
                 task_classes: dict[str, tuple[int, ...]], budget_pct: float, delay_frames: int):
        self.source = source
        self.names = dataset_names
        self.task_classes = task_classes
        self.budget_pct = budget_pct
        self.delay_frames = delay_frames
        self.answered = 0
        self.skipped = 0

    def known_classes(self) -> set[int]:
        """Dataset class ids of the tasks streamed so far."""
        return {c for t in self.source.tasks_seen for c in self.task_classes.get(t, ())}

    def boxes_for(self, frame_id: int) -> list[dict]:
        """The exact boxes of a frame's known classes, as an operator answer."""
        labels, width, height, _ = self.source.truth[frame_id]
        known = self.known_classes()
        keep = np.array([int(c) in known for c in labels[:, 0]], bool)
        rows = labels[keep] if labels.shape[0] else labels
        xyxy = yolo_to_xyxy(rows, width, height)
        return [{"class": self.names[int(c)], "xyxy": [float(v) for v in box]}
                for c, box in zip(rows[:, 0], xyxy)]

    def tick(self, runtime) -> None:
        """Supervisor hook: answer the highest-priority items the budget and delay allow."""
        seen = len(self.source.truth)
        allowed = math.floor(self.budget_pct / 100.0 * seen) - self.answered
        if allowed <= 0 or runtime.memory_sink is None:
            return
        for item in runtime.memory_sink.queue.pending():
            if allowed <= 0:
                break
            frame_id = item.get("frame_id")
            if frame_id not in self.source.truth:
                continue
            if seen - int(frame_id) < self.delay_frames:
                continue
            runtime.memory_sink.answer(item["id"], self.boxes_for(int(frame_id)))
            self.answered += 1
            allowed -= 1


class PseudoPrecision:
    """Observer of stored frames: precision of pseudo-labels against the hidden truth.

    Args:
        source: the :class:`HiddenLabelsSource`.
        to_dataset_id: device class id -> dataset class id (by name), called at store time.
    """

    def __init__(self, source: HiddenLabelsSource, to_dataset_id):
        self.source = source
        self.to_dataset_id = to_dataset_id
        self.boxes = 0
        self.correct = 0

    def __call__(self, frame, labels: np.ndarray, origin) -> None:
        """Count the pseudo-labelled boxes of one stored frame and how many are right."""
        if getattr(origin, "value", origin) != "pseudo":
            return
        frame_id = self.source.frame_of_ts.get(frame.ts_s)
        if frame_id is None:
            return
        truth = self.source.truth[frame_id][0]
        mapped = labels.copy()
        mapped[:, 0] = [self.to_dataset_id(int(c)) for c in labels[:, 0]]
        self.boxes += int(labels.shape[0])
        self.correct += matched_boxes(mapped, truth)

    @property
    def precision(self) -> float | None:
        """Share of pseudo-labelled boxes that match a true box (``None`` before any)."""
        return round(self.correct / self.boxes, 4) if self.boxes else None


class RemappedBackend:
    """A backend whose class ids are translated (device registry -> dataset ids, by name);
    detections of classes the dataset lacks are dropped."""

    def __init__(self, backend, mapping: dict[int, int]):
        self.backend = backend
        self.mapping = mapping

    def infer(self, images):
        """Run the wrapped backend and translate its class ids."""
        from edgecl.frames import Detections

        out = []
        for det in self.backend.infer(images):
            keep = np.array([int(c) in self.mapping for c in det.classes], bool)
            classes = np.array([self.mapping[int(c)] for c in det.classes[keep]], np.int64)
            out.append(Detections(det.boxes_xyxy[keep], det.scores[keep], classes))
        return out


def evaluate_current(state_dir: Path, taskset, imgsz: int,
                     served_file: Path | None = None) -> dict[str, float]:
    """Per-class box mAP50-95 of the model the device serves at the end, on every task's test
    split: the registry's current version, else (no round was promoted) ``served_file``, the
    model the run started from.

    Returns:
        Dataset class name -> AP (0.0 for a class the model does not have, and for every class
        when there is no model at all).
    """
    from edgecl.continual.evaluate import evaluate_model
    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions
    from edgecl.models.registry import Registry

    registry = Registry(state_dir / "models")
    names = {name: cid for cid, name in taskset.names.items()}
    out = {name: 0.0 for name in names}
    current = registry.current()
    if current is not None:
        path = registry.model_path(current, prefer=(".onnx", ".pt"))
    elif served_file is not None:
        path = Path(served_file)
    else:
        return out
    opts = InferenceOptions(conf=0.001, iou=0.7, max_det=300, threads=2, imgsz=imgsz)
    backend = load_backend(path, opts, warmup_runs=1)
    try:
        mapping = {cid: names[n] for cid, n in backend.meta.names.items() if n in names}
        model = RemappedBackend(backend, mapping)
        test = [p for t in taskset.tasks for p in t.test]
        for dataset_id in sorted(set(mapping.values())):
            result = evaluate_model(model, test, class_ids=[dataset_id])
            value = result.map50_95
            out[taskset.names[dataset_id]] = 0.0 if value is None or value != value else float(value)
    finally:
        backend.close()
    return out


def split_first_task(taskset, out_dir: Path, share: float) -> tuple[list[Path], Path]:
    """Keep the ``first-task`` starting model's training images out of the stream.

    A team's pretrained model was trained on other pictures than its camera's; a starting model
    trained on frames the stream then replays would score them as memorised (its held-out AP on
    them starts several times above its test AP), and every round's gate would be measured
    against that. The first task's training images are cut in two in list order (contiguous,
    so that a sequence stays on one side): the first ``share`` train the starting model, the
    rest stream.

    Args:
        taskset: the loaded tasks.
        out_dir: where the stream's ``tasks.yaml`` and image lists are written.
        share: fraction of the first task's training images for the starting model, in (0, 1).

    Returns:
        ``(pretraining images, the stream's tasks.yaml)``; every other list is unchanged
        (absolute paths).

    Raises:
        EdgeclError: too few first-task training images to leave some on each side.
    """
    from edgecl.data.tasks import SPLITS, format_tasks_yaml

    first = list(taskset.tasks[0].train)
    cut = int(round(len(first) * share))
    if not 0 < cut < len(first):
        raise EdgeclError(f"--pretrain-share {share:g} gives the starting model {cut} of the first "
                          f"task's {len(first)} training image(s); it needs at least 1, and 1 "
                          f"left to stream")
    for index, task in enumerate(taskset.tasks):
        for split in SPLITS:
            images = task.split(split)
            if index == 0 and split == "train":
                images = first[cut:]
            atomic_write_text(out_dir / "tasks" / task.name / f"{split}.txt",
                              "".join(f"{Path(p).resolve()}\n" for p in images))
    yaml_path = out_dir / "tasks.yaml"
    atomic_write_text(yaml_path, format_tasks_yaml(
        dict(taskset.names), [(t.name, tuple(t.classes)) for t in taskset.tasks]))
    return first[:cut], yaml_path


def renumbered_copies(images: list[Path], remap: dict[int, int], out_dir: Path,
                      nc: int | None = None) -> list[Path]:
    """Work copies of ``images`` (hard links) whose labels carry new class ids.

    A first task whose classes are, say, 0 and 2 of the dataset trains a model that numbers
    them 0 and 1 (its names carry the dataset's names; runs match classes by name), and a row
    of a class outside the task is not a label of that model.

    Args:
        images: images with YOLO labels beside them (none: no boxes).
        remap: dataset class id -> new id; rows of other classes are dropped.
        out_dir: folder for ``images/`` and ``labels/`` (files named ``<k>_<name>``).
        nc: the dataset's class count: a row of a class id at or past it is refused.

    Returns:
        The copies, in the order of ``images``.

    Raises:
        LabelError: a malformed label file, or a class id at or past ``nc``.
    """
    from edgecl.bench.cl_data import filtered_copy

    paths = []
    for k, image in enumerate(images):
        dst = Path(out_dir) / "images" / f"{k:05d}_{Path(image).name}"
        filtered_copy(Path(image), dst, remap, nc)
        paths.append(dst)
    return paths


def _parse_selection(text: str) -> list[str]:
    """The ``--selection`` list (see :func:`selection_list`), raising :class:`EdgeclError`."""
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in names if s not in SELECTIONS]
    if bad:
        raise EdgeclError(f"--selection: unknown {', '.join(map(repr, bad))}; choose from "
                          f"{', '.join(SELECTIONS)}")
    if not names:
        raise EdgeclError(f"--selection: no selection given; choose from {', '.join(SELECTIONS)}")
    return list(dict.fromkeys(names))


def selection_list(text: str) -> list[str]:
    """argparse type of ``--selection``: a comma list of :data:`SELECTIONS`, at least one.

    Args:
        text: e.g. ``"random,default"``.

    Returns:
        The names, duplicates dropped, in the given order.

    Raises:
        argparse.ArgumentTypeError: an unknown or empty list.
    """
    try:
        return _parse_selection(text)
    except EdgeclError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--selection: ")) from None


def check_initial_model(choice: str) -> dict | None:
    """Check ``--initial-model`` before any run: ``first-task``, ``scratch``, or a ``.pt`` file
    that loads as a checkpoint (loaded once here, so a bad file fails in seconds, not after
    the first runs).

    Args:
        choice: the option's value.

    Returns:
        The checkpoint's metadata, or ``None`` for ``first-task`` and ``scratch``.

    Raises:
        EdgeclError: not one of those, a missing file, or a file that is no checkpoint.
    """
    if choice in ("first-task", "scratch"):
        return None
    path = Path(choice).expanduser()
    if path.suffix.lower() != ".pt":
        raise EdgeclError(f"--initial-model: expected 'first-task', 'scratch' or a .pt "
                          f"checkpoint, got {choice!r}")
    if not path.is_file():
        raise EdgeclError(f"--initial-model: {path} is not a file")
    from edgecl.models.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)[1]
    except EdgeclError as exc:
        raise EdgeclError(f"--initial-model: {exc}") from None


def starting_model(taskset, yaml_path: Path, cfg, choice: str, steps: int, cache_dir: Path,
                   progress, images: list[Path] | None = None) -> Path | None:
    """The model every run starts from, as a team starts from its own pretrained checkpoint.

    Args:
        taskset: the loaded tasks.
        yaml_path: their ``tasks.yaml`` (part of the cache key).
        cfg: configuration (``learner`` section: image size, batch, lr).
        choice: ``first-task`` (train a detector on the first task's training images,
            labels visible, classes numbered 0..k-1 in the dataset's order, cached),
            ``scratch`` (an untrained detector for the first task's classes) or the path of
            an ultralytics/edgecl ``.pt`` checkpoint.
        steps: training steps of the ``first-task`` model.
        cache_dir: where the ``first-task`` model is kept between runs.
        progress: ``callable(str)`` for progress lines.
        images: the ``first-task`` model's training images (None: all of the first task's;
            see :func:`split_first_task`).

    Returns:
        A checkpoint path, or ``None`` for ``scratch`` (each run builds its own).

    Raises:
        EdgeclError: the path does not exist.
    """
    if choice == "scratch":
        return None
    if choice != "first-task":
        path = Path(choice)
        if not path.is_file():
            raise EdgeclError(f"--initial-model: {path} is not a file")
        return path
    from edgecl.bench.trained_model import cached_trained_model

    first = sorted(taskset.tasks[0].classes)
    images = list(taskset.tasks[0].train) if images is None else list(images)
    key_parts = (str(Path(yaml_path).resolve()), [str(p) for p in images])
    # the model numbers its classes 0..k-1; rows of other classes (an image of the first task
    # may also show a later task's object) are dropped, or ultralytics would refuse the image
    images = renumbered_copies(images, {c: i for i, c in enumerate(first)},
                               Path(cache_dir) / "first-task-data", taskset.nc)
    return cached_trained_model(images, {i: taskset.names[c] for i, c in enumerate(first)},
                                cfg.learner, cache_dir, steps=steps, prefix="first-task",
                                key_parts=key_parts, progress=progress,
                                what=f"on task {taskset.tasks[0].name} "
                                     f"({', '.join(taskset.names[c] for c in first)})")


def run_one(base_cfg, taskset, yaml_path: Path, selection: str, budget_pct: float, seed: int,
            imgsz: int, out_dir: Path, delay_frames: int, progress=None, fps: float = 10.0,
            initial: Path | None = None, queue_factor: float = 2.0) -> dict:
    """Stream the dataset once through the runtime in one labelling set-up and score it.

    Args:
        base_cfg: configuration (field overrides applied).
        taskset: the loaded tasks.
        yaml_path: its ``tasks.yaml``.
        selection: ``random``, ``default`` or ``ground_truth``.
        budget_pct: the operator's label budget, percent of frames.
        seed: seed of the memory, the selection and the learner.
        imgsz: image size of the model and training.
        out_dir: where the run's state directory goes.
        delay_frames: the operator's answer delay, frames.
        progress: optional ``callable(str)`` for progress lines.
        fps: stream time, frames per second (the operator answers between frames).
        initial: checkpoint every run starts from (``None``: an untrained detector for the
            first task's classes).
        queue_factor: the queue is offered at most this many times the frames the operator
            may answer, in every :data:`QUEUE_WINDOW_S` of stream time (0: every selected
            frame; see the module docstring).

    Returns:
        The run's record (see the module docstring).
    """
    from edgecl.bench.demo import initial_model
    from edgecl.runtime.app import RunOptions, Runtime
    from edgecl.runtime.learner import run_learning_round
    from edgecl.runtime.promote import promote_version
    from edgecl.runtime.sources.tasks import TasksSource

    t0 = time.monotonic()
    state = out_dir / f"{selection}-b{budget_pct:g}-s{seed}"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    queue_per_window = queue_rate(selection, budget_pct, fps, queue_factor)
    cfg = _run_config(base_cfg, state, selection, seed, imgsz)
    init = initial if initial is not None else initial_model(yaml_path, state / "untrained.pt",
                                                             imgsz)
    runtime_box: list = []
    inner = TasksSource(f"tasks://{yaml_path}", str(yaml_path), [], "train", cfg=cfg.source)
    device_ids = None
    if selection == "ground_truth":
        from edgecl.models.checkpoint import load_checkpoint

        device_ids = device_class_ids(load_checkpoint(init)[1]["names"], taskset.names)
    source = HiddenLabelsSource(inner, hide=selection != "ground_truth", fps=fps,
                                hold=lambda: bool(runtime_box and runtime_box[0].supervisor
                                                  and runtime_box[0].supervisor.busy),
                                device_ids=device_ids)
    task_classes = {t.name: tuple(t.classes) for t in taskset.tasks}
    operator = SimulatedOperator(source, dict(taskset.names), task_classes, budget_pct, delay_frames)
    hook = operator.tick if selection != "ground_truth" else None
    runtime = Runtime(cfg, RunOptions(source_uri=source.uri, model=str(init), quiet=True),
                      supervise_hook=hook,
                      on_round=(lambda r: progress(_round_line(selection, r))) if progress else None)
    runtime_box.append(runtime)
    runtime.build(source=source)
    if runtime.memory_sink is not None and queue_per_window:
        runtime.memory_sink.selector.queue_limit = RateLimiter(
            queue_per_window, source.stream_time_s, QUEUE_WINDOW_S)
    by_name = {n: c for c, n in taskset.names.items()}
    classes = runtime.memory_sink.classes
    precision = PseudoPrecision(source, lambda c: by_name.get(classes.names().get(c, ""), -1))
    runtime.memory_sink.observers.append(precision)
    report = runtime.run(wait_for_learner=True)
    if runtime.interrupted:
        raise_stop(runtime.stop_signal)  # the command line exits 130 (Ctrl-C) or 143
    final = run_learning_round(runtime.cfg, reason="end of stream")
    if final.status.value == "staged":
        promote_version(cfg.state_dir, final.version)
    counts = runtime.memory_sink.stats()["counts"] if runtime.memory_sink else {}
    per_class = evaluate_current(state, taskset, imgsz, served_file=init)
    acc = float(np.mean(list(per_class.values()))) if per_class else 0.0
    held_out_acc = _held_out_acc(state)
    record = {"selection": selection, "budget_pct": budget_pct, "seed": seed,
              "acc": round(acc, 4), "per_class_ap": {k: round(v, 4) for k, v in per_class.items()},
              "held_out_acc": None if held_out_acc is None else round(held_out_acc, 4),
              "human_labels": operator.answered if selection != "ground_truth"
              else counts.get("stored_ground_truth", 0),
              "pseudo_labels": counts.get("stored_pseudo", 0),
              "pseudo_precision": precision.precision,
              "label_decisions": {k: counts[k] for k in DECISIONS if counts.get(k)},
              "queue_limit": (f"{queue_per_window} per {QUEUE_WINDOW_S:g} s of stream"
                              if queue_per_window else None),
              "fps": report.fps, "frames": report.frames,
              "rounds": runtime.supervisor.rounds_done + (final.status.value == "staged"),
              "seconds": round(time.monotonic() - t0, 1)}
    if progress:
        progress(f"{selection} b={budget_pct:g}% seed={seed}: ACC {record['acc']:.3f}, "
                 f"{record['human_labels']} human labels, {record['pseudo_labels']} pseudo "
                 f"(precision {record['pseudo_precision']}), {record['seconds']} s")
    return record


def _held_out_acc(state: Path) -> float | None:
    """The device's own ACC on its held-out slice after its last promoted round, or None."""
    from edgecl.runtime.monitor import Monitor

    value = Monitor(state, create=False).summary()["acc"]
    return None if value is None or not math.isfinite(value) else float(value)


def _round_line(selection: str, result: dict) -> str:
    return (f"  [{selection}] round {result.get('round')}: {result.get('version')} "
            f"{result.get('status')} ({result.get('reason')})")


def queue_rate(selection: str, budget_pct: float, fps: float, queue_factor: float,
               window_s: float = QUEUE_WINDOW_S) -> int:
    """Frames a run may queue per ``window_s`` seconds of stream time.

    Args:
        selection: ``random``, ``default`` or ``ground_truth`` (nothing is queued: 0).
        budget_pct: the operator's label budget, percent of frames.
        fps: stream frames per second (0: unpaced, no rate limit).
        queue_factor: offered frames per answerable frame (0: no rate limit).
        window_s: the rate limit's sliding window, seconds of stream time.

    Returns:
        ``ceil(queue_factor * budget_pct / 100 * fps * window_s)``, at least 1; 0 for no limit.
    """
    if selection == "ground_truth" or fps <= 0 or queue_factor <= 0:
        return 0
    return max(1, math.ceil(queue_factor * budget_pct / 100.0 * fps * window_s - 1e-9))


def _run_config(base_cfg, state: Path, selection: str, seed: int, imgsz: int):
    labels = base_cfg.labels
    if selection == "ground_truth":
        labels = dataclasses.replace(labels, mode="ground_truth")
    elif selection == "random":
        zero = {f.name: 0.0 for f in dataclasses.fields(labels.selection)}
        # every frame is a candidate with a random priority, so the operator can spend the
        # whole budget on an unbiased sample (the default random_share would offer only ~2 %)
        labels = dataclasses.replace(labels, mode="field", random_share=1.0,
                                     selection=dataclasses.replace(labels.selection,
                                                                   **dict(zero, random=1.0)))
    else:
        labels = dataclasses.replace(labels, mode="field")
    return dataclasses.replace(
        base_cfg, state_dir=str(state), labels=dataclasses.replace(labels, seed=seed),
        memory=dataclasses.replace(base_cfg.memory, seed=seed),
        model=dataclasses.replace(base_cfg.model, imgsz=imgsz, path=""),
        learner=dataclasses.replace(base_cfg.learner, imgsz=imgsz))


def write_table(runs: list[dict], path: Path) -> None:
    """Markdown table: one row per run (mean over seeds is left to the reader: seeds are rows)."""
    classes = sorted({c for r in runs for c in r["per_class_ap"]})
    head = ("| selection | budget % | seed | ACC | held-out ACC (device) | human labels "
            "| pseudo labels | pseudo precision | fps | " + " | ".join(classes) + " |")
    sep = "|---|---|---|---|---|---|---|---|---|" + "---|" * len(classes)
    rows = [f"| {r['selection']} | {r['budget_pct']:g} | {r['seed']} | {r['acc']:.3f} | "
            f"{_held_out_cell(r.get('held_out_acc'))} | "
            f"{r['human_labels']} | {r['pseudo_labels']} | {_held_out_cell(r['pseudo_precision'])}"
            f" | {r['fps']} | "
            + " | ".join(f"{r['per_class_ap'].get(c, 0.0):.3f}" for c in classes) + " |"
            for r in runs]
    reasons = [k for k in DECISIONS if any(r.get("label_decisions", {}).get(k) for r in runs)]
    decisions = [
        "", "What happened to each streamed frame (the labelling pipeline's decision; a frame "
        "that was neither labelled nor queued shows why it was not pseudo-labelled):", "",
        "| selection | budget % | seed | " + " | ".join(reasons) + " |",
        "|---|---|---|" + "---|" * len(reasons),
        *(f"| {r['selection']} | {r['budget_pct']:g} | {r['seed']} | "
          + " | ".join(str(r.get("label_decisions", {}).get(k, 0)) for k in reasons) + " |"
          for r in runs)] if reasons else []
    atomic_write_text(path, "\n".join([head, sep, *rows, *decisions]) + "\n")


def _held_out_cell(value: float | None) -> str:
    """A figure of the table, ``-`` where there is none (before, the pseudo precision of a run
    that made no pseudo-label was printed as ``None``)."""
    return "-" if value is None else f"{value:.3f}"


def summarize(runs: list[dict]) -> dict:
    """Means over seeds per selection, and the ratios the targets name."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["selection"], []).append(r)
    mean = {s: round(float(np.mean([r["acc"] for r in rs])), 4) for s, rs in by.items()}
    prec = [r["pseudo_precision"] for r in runs if r["pseudo_precision"] is not None]
    out = {"acc": mean, "runs": len(runs),
           "pseudo_precision": round(float(np.mean(prec)), 4) if prec else None}
    if mean.get("ground_truth"):
        out["default_over_ground_truth"] = (round(mean["default"] / mean["ground_truth"], 3)
                                            if "default" in mean else None)
    if "default" in mean and "random" in mean:
        out["default_beats_random"] = mean["default"] > mean["random"]
    return out


def add_arguments(parser) -> None:
    """Arguments of ``edgecl bench field``."""
    from edgecl.arguments import (finite_non_negative_float, non_negative_int, output_path,
                                  percentage, positive_int, seed_count,
                                  train_image_size)

    parser.add_argument("--data", default="scenario",
                        help="DIR/tasks.yaml of a class-incremental dataset, or 'scenario' (built in)")
    parser.add_argument("--label-budget-pct", type=percentage, default=10.0,
                        help="the simulated operator labels at most this percent of the frames")
    parser.add_argument("--selection", type=selection_list, default="random,default",
                        help="comma list of random, default (ground_truth always runs too)")
    parser.add_argument("--seeds", type=seed_count, default=1, help="seeds per selection")
    parser.add_argument("--imgsz", type=train_image_size, default=160,
                        help="model and training image size")
    parser.add_argument("--delay-frames", type=non_negative_int, default=10,
                        help="frames between a frame and the operator's answer to it")
    parser.add_argument("--fps", type=finite_non_negative_float, default=10.0,
                        help="stream time: frames per second of the simulated camera (0: "
                             "unpaced)")
    parser.add_argument("--queue-factor", type=finite_non_negative_float, default=2.0,
                        help="offer the operator queue at most this many frames per frame the "
                             "operator may answer, in every 5 s of stream time (0: no rate limit; "
                             "frames not queued may be pseudo-labelled)")
    parser.add_argument("--tasks", type=positive_int, default=None,
                        help="scenario tasks (with --data scenario; default 3)")
    parser.add_argument("--images-per-task", type=positive_int, default=None,
                        help="scenario images per task (with --data scenario; default 120)")
    parser.add_argument("--initial-model", default="first-task",
                        help="what every run starts from: 'first-task' (a detector trained on the "
                             "first task, labels visible, cached: the team's own pretrained "
                             "model), 'scratch', or a .pt checkpoint")
    parser.add_argument("--pretrain-share", type=float, default=0.5,
                        help="with --initial-model first-task: the share of the first task's "
                             "training images that train it; the stream holds the rest")
    parser.add_argument("--initial-steps", type=positive_int, default=600,
                        help="training steps of the 'first-task' starting model")
    parser.add_argument("--out", required=True, type=output_path, help="output directory")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--config", help="deployment YAML whose settings the runs start from")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="settings applied after the benchmark's own (e.g. learner.max_steps=60)")


def run(args) -> int:
    """Run the field benchmark as the command line asks."""
    from edgecl.arguments import print_json_line, scenario_only_options
    from edgecl.config import load_config
    from edgecl.data.tasks import load_tasks, refuse_trained_test_images
    from edgecl.ultra import ensure_offline

    scenario_only_options(args, {"tasks": 3, "images_per_task": 120})
    ensure_offline()
    selections = list(args.selection if isinstance(args.selection, list)
                      else _parse_selection(args.selection))
    if "ground_truth" not in selections:
        selections.append("ground_truth")
    if not 0 < args.label_budget_pct <= 100:
        raise EdgeclError(f"--label-budget-pct must be in (0, 100], got {args.label_budget_pct}")
    if not 0 <= args.queue_factor < math.inf:
        raise EdgeclError(f"--queue-factor must be a number >= 0, got {args.queue_factor}")
    check_initial_model(args.initial_model)  # before any run: a bad file must not cost hours
    # at --fps 0 the stream's capture times say nothing of a camera's: held out frame by frame
    paced = [] if args.fps > 0 else ["memory.holdout_block_s=0"]
    cfg = load_config(args.config, list(FIELD_OVERRIDES) + paced
                      + list(getattr(args, "overrides", []) or []))  # before --out is made
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    yaml_path = _dataset(args, out)
    taskset = refuse_trained_test_images(load_tasks(yaml_path))
    pretrain = None
    if args.initial_model == "first-task":
        if not 0 < args.pretrain_share < 1:
            raise EdgeclError(f"--pretrain-share must be in (0, 1), got {args.pretrain_share}")
        pretrain, yaml_path = split_first_task(taskset, out / "stream", args.pretrain_share)
        taskset = load_tasks(yaml_path)
    runs = []

    def progress(line: str) -> None:
        print(f"[field] {line}", file=sys.stderr, flush=True)

    if (out / "results.json").exists():  # before: replaced without a word, row by row
        progress(f"{out} holds an earlier run's results.json and table.md: this run replaces "
                 f"them (give another --out to keep them)")

    run_cfg = _run_config(cfg, out, "ground_truth", 0, args.imgsz)
    initial = starting_model(taskset, yaml_path, run_cfg, args.initial_model, args.initial_steps,
                             out / "starting-model", progress, images=pretrain)

    for seed in range(args.seeds):
        for selection in selections:
            progress(f"run {selection} budget {args.label_budget_pct:g}% seed {seed} ...")
            runs.append(run_one(cfg, taskset, yaml_path, selection, args.label_budget_pct, seed,
                                args.imgsz, out / "runs", args.delay_frames, progress,
                                args.fps, initial, args.queue_factor))
            # the table with its results, after every run: a stop leaves the two agreeing
            # (before: results.json of this run beside table.md of an earlier one)
            atomic_write_text(out / "results.json", json.dumps(runs, indent=1))
            write_table(runs, out / "table.md")
    summary = dict(summarize(runs), results=str(out / "results.json"))
    if args.json:
        print_json_line(summary)
    else:
        print((out / "table.md").read_text(encoding="utf-8"))
        print_json_line(summary)
    return 0


def _dataset(args, out: Path) -> Path:
    if args.data != "scenario":
        from edgecl.data.task_sources import task_split_path

        return task_split_path(args.data)
    from edgecl.data.scenario import make_scenario

    return make_scenario(out / "scenario", tasks=args.tasks, images_per_task=args.images_per_task,
                         imgsz=args.imgsz, seed=0)
