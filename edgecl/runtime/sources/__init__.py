"""Frame sources chosen by URI scheme (one explicit table: :data:`SCHEMES`).

- ``file://PATH[?loop=1]``: a video file (OpenCV/FFmpeg).
- ``dir://PATH[?loop=1&split=all]``: images in name order; YOLO labels travel with the frames
  when PATH is a dataset (images/ + labels/, an ultralytics data.yaml, a Roboflow export).
- ``v4l2://N`` or ``v4l2:///dev/videoN`` ``[?width=&height=&fps=&fourcc=MJPG]``: a USB camera.
- ``csi://N[?width=1280&height=720&fps=30&flip=0]``: a Jetson CSI camera (GStreamer).
- ``rtsp://HOST[:PORT]/PATH``: a network stream (FFmpeg).
- ``synthetic://?tasks=5&images_per_task=60&imgsz=160&seed=0[&loop=0][&fps=0][&split=all]``:
  the built-in labelled scenario.
- ``tasks://DIR/tasks.yaml[?task=t2,t3&split=train&fps=0]``: a class-incremental dataset,
  task by task, with labels and task names (a data.yaml or dataset folder is one task).

Relative paths are fine (``file://clip.mp4``); absolute ones take three slashes
(``file:///data/clip.mp4``). Live sources (cameras, streams) reconnect with back-off, and
close (or, while opening, take SIGINT/SIGTERM) at once even when the driver blocks.
"""

from __future__ import annotations

from typing import Callable

from edgecl.config import SourceConfig
from edgecl.runtime.sources.base import FrameSource, QueryParams, RawFrame, SourceStats, split_uri
from edgecl.data.images import IMAGE_SUFFIXES
from edgecl.runtime.sources.files import ImageDirSource, ImageListSource, VideoFileSource
from edgecl.runtime.sources.live import CaptureSource, csi_pipeline, csi_source, rtsp_source, v4l2_source
from edgecl.runtime.sources.synthetic import SyntheticSource
from edgecl.runtime.sources.tasks import TasksSource


def _file(uri, path, params, cfg, capture_factory, sleep):
    return VideoFileSource.from_uri(uri, path, params, cfg)


def _dir(uri, path, params, cfg, capture_factory, sleep):
    return ImageDirSource.from_uri(uri, path, params, cfg)


def _tasks(uri, path, params, cfg, capture_factory, sleep):
    return TasksSource.from_uri(uri, path, params, cfg)


def _synthetic(uri, path, params, cfg, capture_factory, sleep):
    return SyntheticSource.from_uri(uri, path, params, cfg, sleep)


SCHEMES: dict[str, Callable[..., FrameSource]] = {
    "file": _file,
    "dir": _dir,
    "v4l2": v4l2_source,
    "csi": csi_source,
    "rtsp": rtsp_source,
    "synthetic": _synthetic,
    "tasks": _tasks,
}


def open_source(uri: str, cfg: SourceConfig | None = None, *, capture_factory=None,
                sleep: Callable[[float], object] | None = None) -> FrameSource:
    """Create the frame source a URI names (not yet opened: call ``open()`` or iterate it).

    Args:
        uri: the source URI (see the module docstring).
        cfg: reconnection settings; defaults to ``SourceConfig()``.
        capture_factory: live sources only: a callable returning an OpenCV-like capture
            (tests pass a fake).
        sleep: live and paced sources: the wait function (tests pass a recorder).

    Returns:
        The :class:`FrameSource`.

    Raises:
        SourceError: unknown scheme (listing the supported ones), missing path (naming it),
            bad query parameter.
    """
    scheme, path, query = split_uri(uri, list(SCHEMES))
    return SCHEMES[scheme](uri, path, QueryParams(uri, query), cfg, capture_factory, sleep)


__all__ = [
    "SCHEMES", "open_source", "FrameSource", "SourceStats", "RawFrame", "QueryParams",
    "VideoFileSource", "ImageDirSource", "CaptureSource", "SyntheticSource", "TasksSource",
    "ImageListSource", "csi_pipeline", "IMAGE_SUFFIXES",
]
