"""Small bridge to ultralytics: offline mode and model construction."""

from __future__ import annotations

import os


def ensure_offline() -> None:
    """Make ultralytics never reach the network (call before importing it)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")


def build_detection_model(nc: int, cfg: str = "yolo11n.yaml", names: dict[int, str] | None = None):
    """Build a freshly initialised ultralytics DetectionModel from a packaged yaml.

    Args:
        nc: number of classes.
        cfg: ultralytics model yaml (packaged, e.g. ``yolo11n.yaml``).
        names: class names; defaults to ``{i: str(i)}``.

    Returns:
        The ``DetectionModel`` (float32, on the CPU, train mode off).
    """
    ensure_offline()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=nc, verbose=False)
    model.names = names or {i: str(i) for i in range(nc)}
    return model.float().eval()
