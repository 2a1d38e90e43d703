"""Small bridge to third-party libraries: ultralytics' offline mode and model construction,
and OpenVINO/NNCF imported without their usage telemetry."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

_TELEMETRY_LOCK = threading.Lock()


@contextlib.contextmanager
def telemetry_declined() -> Iterator[None]:
    """Import OpenVINO or NNCF inside this block to decline their usage telemetry.

    Importing either asks ``openvino_telemetry``, which, without a consent file in the user's
    home, writes a client id under ``~/intel`` and sends an event over the network from a
    worker thread; on a device with no network the process then waited for that send when it
    exited. Both libraries decline in CI (``CI=true``), which is set for the block only.
    """
    with _TELEMETRY_LOCK:
        saved = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = saved


class _NoExportFailureLine:
    """A logging filter dropping ultralytics' ``"<format>: export failure ..."`` record."""

    @staticmethod
    def filter(record) -> bool:
        """False for the Exporter's failure line."""
        return "export failure" not in record.getMessage()


@contextlib.contextmanager
def export_failure_unlogged() -> Iterator[None]:
    """Run ultralytics' ``Exporter`` inside this block: its failure line (emoji and terminal
    colour codes, written to a log file too) is dropped. The exception it raises then is what
    edgecl reports, in its own one line naming the export."""
    import logging

    logger = logging.getLogger("ultralytics")
    logger.addFilter(_NoExportFailureLine)
    try:
        yield
    finally:
        logger.removeFilter(_NoExportFailureLine)


def ensure_offline() -> None:
    """Make ultralytics never reach the network (call before importing it, or onnxruntime).

    Also turns off ultralytics' automatic ``pip install``: its checkpoint loader installs a
    module a checkpoint names and this machine lacks, and a checkpoint is a user's file. And
    onnxruntime's usage telemetry (``ORT_DISABLE_TELEMETRY``): from 1.32 its Linux builds keep
    an event store in ``~/.cache/Microsoft/DeveloperTools`` that every process importing it
    (each learning round's) adds to, and send it when they can.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def packaged_model_yaml(name: str) -> Path | None:
    """The file of ultralytics' packaged model yaml ``name`` (e.g. ``yolo11s.yaml``), or None.

    A scale letter is read as ultralytics' ``yaml_model_load`` reads it (``yolo11s.yaml`` is
    ``yolo11.yaml`` at scale ``s``). The package's files are looked at without importing it.

    Args:
        name: a file name, no folder.
    """
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"
    wanted = {name, re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)}
    return next((found for found in sorted(root.rglob("*.y*ml")) if found.name in wanted), None)


DETECT_HEADS = ("Detect", "v10Detect")
"""Last head modules of the model yamls edgecl can learn: plain object detectors."""


def is_model_yaml(path: str | Path) -> bool:
    """Whether a model path names an ultralytics model yaml (``yolo11n.yaml``, ``.yml``): an
    untrained network built from its architecture, which names no classes of its own.

    Args:
        path: a model file, or a packaged yaml's name.
    """
    return Path(path).suffix.lower() in (".yaml", ".yml")


def model_yaml_problem(path: Path) -> str | None:
    """Why the model yaml at ``path`` builds no plain object detector, or None; read as text
    (no torch), as ultralytics' ``parse_model`` reads it: ``backbone`` and ``head`` layer
    lists, the last head layer's module naming the task.

    Args:
        path: the yaml file.
    """
    import yaml

    from edgecl.input_files import read_data_file

    try:
        spec = yaml.safe_load(read_data_file(path, "a model yaml"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        from edgecl.errors import yaml_problem

        return f"cannot be read as a model yaml{yaml_problem(exc)}"
    if not (isinstance(spec, dict) and isinstance(spec.get("backbone"), list)
            and isinstance(spec.get("head"), list) and spec["head"]):
        return ("is no ultralytics model yaml (no 'backbone' and 'head' layers: a dataset's "
                "data.yaml?); give a detector's, e.g. yolo11n.yaml")
    last = spec["head"][-1]
    module = last[2] if isinstance(last, list) and len(last) > 2 else None
    if module not in DETECT_HEADS:
        return (f"builds a {module} head, not an object detector's Detect: edgecl learns object "
                f"detection models (e.g. yolo11n.yaml)")
    return None


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
