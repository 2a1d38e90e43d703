"""``tasks://PATH/tasks.yaml``: a class-incremental dataset streamed task by task, with labels.

``tasks://DIR/tasks.yaml?task=t2,t3&split=train[&fps=0]`` delivers the images of the named
tasks (default: all, in the yaml's order) with their YOLO labels and ``Frame.task`` set,
so the replay memory knows which task each sample belongs to. An ultralytics ``data.yaml``,
a Roboflow export (``train/ valid/ test/``) or a YOLO folder is read as one task named
``stream``, as a camera's frames (see :func:`edgecl.data.task_sources.load_task_source`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgecl.config import SourceConfig
from edgecl.data.task_sources import load_task_source
from edgecl.errors import ConfigError, SourceError, link_problem
from edgecl.runtime.sources.base import QueryParams, RawFrame
from edgecl.runtime.sources.files import ImageListSource, warn_about_labels

log = logging.getLogger(__name__)


class TasksSource(ImageListSource):
    """Images of selected tasks of a ``tasks.yaml`` dataset, in task order.

    Args:
        uri: the URI.
        yaml_path: the dataset's ``tasks.yaml`` (or a dataset read as one task).
        tasks: task names to stream (empty: all).
        split: ``train``, ``val`` or ``test``.
        fps: delivery rate (0: as fast as read).
        cfg: source settings.
        on_task_end: called with a task's name after its last frame, before the next task's
            first frame (it may block: the demo waits there for a learning round to start).

    Raises:
        SourceError: unreadable yaml, unknown task, or no images.
    """

    def __init__(self, uri: str, yaml_path: str, tasks: list[str], split: str = "train",
                 fps: float = 0.0, cfg: SourceConfig | None = None,
                 on_task_end: Callable[[str], None] | None = None):
        try:
            taskset = load_task_source(yaml_path)
        except ConfigError as exc:
            raise SourceError(f"{uri}: {exc}") from None
        known = [t.name for t in taskset.tasks]
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise SourceError(f"{uri}: unknown task(s) {unknown}; {yaml_path} has {known}")
        chosen = [t for t in taskset.tasks if not tasks or t.name in tasks]
        self.task_of = {Path(p): t.name for t in chosen for p in t.split(split)}
        # INVARIANT: class-incremental: a task's frames carry only the classes introduced by it
        # and the tasks before it (a later task's objects in an early frame stay unlabelled)
        self.allowed = {t.name: frozenset(taskset.seen_classes(i))
                        for i, t in enumerate(taskset.tasks)}
        self.names = dict(taskset.names)
        images = [Path(p) for t in chosen for p in t.split(split)]
        if not images:
            raise SourceError(f"{uri}: the selected tasks have no images in this split")
        super().__init__(uri, images, False, cfg)
        self.labelled = warn_about_labels(uri, Path(taskset.path).parent, images) > 0
        self.fps = fps
        self.is_live = fps > 0
        self.on_task_end = on_task_end
        self.paused = False
        self._last_task: str | None = None
        self._due_s = 0.0

    @classmethod
    def from_uri(cls, uri: str, path: str, params: QueryParams, cfg: SourceConfig | None) -> "TasksSource":
        """Build from a parsed URI (see :func:`edgecl.runtime.sources.open_source`).

        Raises:
            SourceError: missing yaml or bad parameter.
        """
        if not path or not Path(path).exists():
            why = link_problem(path) if path else None  # a link that leads nowhere, named
            raise SourceError(f"{uri}: {why}" if why else
                              f"{uri}: tasks.yaml (or dataset) not found: {path or '(empty path)'}")
        raw_tasks = params.get_str("task", "")
        split = params.get_choice("split", "train", ("train", "val", "test"))
        fps = params.get_float("fps", 0.0)
        params.finish()
        tasks = [t for t in raw_tasks.split(",") if t]
        return cls(uri, path, tasks, split, fps, cfg)

    def _task_ended(self, task: str) -> None:
        """Call ``on_task_end``; while it blocks the source reports itself paused (the
        watchdog shows capture as idle by design, not stuck)."""
        self.paused = True
        try:
            self.on_task_end(task)
        finally:
            self.paused = False

    def _next(self) -> RawFrame | None:
        if self._index < len(self.images):
            task = self.task_of[self.images[self._index]]
            if self._last_task is not None and task != self._last_task and self.on_task_end:
                self._task_ended(self._last_task)
            self._last_task = task
        raw = super()._next()
        if raw is None:
            if self._last_task is not None and self.on_task_end:
                self._task_ended(self._last_task)
                self._last_task = None
            return None
        self._pace()
        task = self.task_of[self.images[self._index - 1]]
        labels = raw.labels
        if labels is not None and labels.shape[0]:
            labels = labels[np.isin(labels[:, 0].astype(int), list(self.allowed[task]))]
        return RawFrame(raw.image, labels, task, raw.name)

    def _pace(self) -> None:
        if self.fps <= 0:
            return
        self._due_s = max(self._due_s + 1.0 / self.fps, time.monotonic())
        wait_s = self._due_s - time.monotonic()
        if wait_s > 0:
            self._closing.wait(wait_s)
