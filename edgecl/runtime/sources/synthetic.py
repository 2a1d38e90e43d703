"""``synthetic://``: the built-in scenario as a labelled stream (no files, no camera)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

from edgecl.config import SourceConfig
from edgecl.errors import ConfigError, SourceError
from edgecl.runtime.sources.base import FrameSource, QueryParams, RawFrame

if TYPE_CHECKING:
    from edgecl.data.scenario import ScenarioFrame


class SyntheticSource(FrameSource):
    """Frames of :func:`edgecl.data.scenario.generate_frames`, task by task, with labels.

    ``synthetic://?tasks=5&images_per_task=60&imgsz=160&seed=0[&loop=0][&fps=0][&split=all]``
    yields the same frames (and names) that ``edgecl scenario make`` writes with those
    parameters; ``Frame.task`` is the task name. ``fps > 0`` paces delivery like a camera
    (and makes the source live); ``split`` restricts the stream to one split.

    Args:
        uri: the URI.
        options: keyword arguments for ``generate_frames``.
        loop: start again after the last task.
        fps: delivery rate (0 = as fast as read).
        cfg: source settings.
        sleep: wait function used for pacing (defaults to one that :meth:`close` interrupts).
    """

    def __init__(self, uri: str, options: dict, loop: bool = False, fps: float = 0.0,
                 cfg: SourceConfig | None = None, sleep: Callable[[float], object] | None = None):
        super().__init__(uri, cfg)
        self.options = options
        self.loop = loop
        self.fps = fps
        self.is_live = fps > 0
        self._sleep = sleep or self._closing.wait
        self._frames: Iterator[ScenarioFrame] | None = None
        self._due_s = 0.0
        # the scenario's renderer imports OpenCV, which rewrites os.environ (its Qt and library
        # paths): imported when a synthetic source is made, not with the sources package
        from edgecl.data.scenario import check_params, class_names

        try:
            check_params(options["tasks"], options["images_per_task"], options["imgsz"], options["seed"],
                         classes_per_task=options["classes_per_task"])
        except ConfigError as exc:
            raise SourceError(f"{uri}: {exc}") from None
        self.labelled = True
        self.names = class_names(options["tasks"], options["classes_per_task"])

    @classmethod
    def from_uri(cls, uri: str, path: str, params: QueryParams, cfg: SourceConfig | None,
                 sleep=None) -> "SyntheticSource":
        """Build from a parsed URI (see :func:`edgecl.runtime.sources.open_source`).

        Args:
            uri: the full URI.
            path: the part after ``scheme://``, without the query.
            params: the query parameters.
            cfg: source settings.
            sleep: pacing wait (tests).

        Returns:
            The unopened source.

        Raises:
            SourceError: missing path or bad parameter.
        """
        options = {"tasks": params.get_int("tasks", 5, 1), "images_per_task": params.get_int("images_per_task", 60, 2),
                   "imgsz": params.get_int("imgsz", 160, 32), "seed": params.get_int("seed", 0),
                   "classes_per_task": params.get_int("classes_per_task", 2, 1)}
        split = params.get_choice("split", "all", ("all", "train", "val", "test"))
        options["only_split"] = None if split == "all" else split
        loop, fps = params.get_bool("loop", False), params.get_fps()
        params.finish()
        return cls(uri, options, loop, fps, cfg, sleep)

    def _open(self) -> None:
        from edgecl.data.scenario import generate_frames

        self._frames = generate_frames(**self.options)
        self._due_s = time.monotonic()

    def _pace(self) -> None:
        if self.fps <= 0:
            return
        self._due_s += 1.0 / self.fps
        wait_s = self._due_s - time.monotonic()
        if wait_s > 0:
            self._sleep(wait_s)
        else:
            self._due_s = time.monotonic()  # fell behind: do not burst to catch up

    def _next(self) -> RawFrame | None:
        frame = next(self._frames, None)
        if frame is None and self.loop:
            from edgecl.data.scenario import generate_frames

            self._frames = generate_frames(**self.options)
            frame = next(self._frames, None)
        if frame is None or self._closing.is_set():
            return None
        self._pace()
        return RawFrame(frame.image, frame.labels, frame.task, frame.name)

    def _close(self) -> None:
        self._frames = None
