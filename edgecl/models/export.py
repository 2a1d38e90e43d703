"""ONNX export of a DetectionModel through ultralytics' Exporter, written atomically.

The exported graph is what ultralytics produces for ``format="onnx"`` (input ``images``
(1, 3, imgsz, imgsz), output ``output0`` (1, 4 + nc, anchors), onnxslim-simplified,
ultralytics metadata: ``names``, ``imgsz``, ``stride``, ``task`` ...) plus
``edgecl_version`` and ``edgecl_ider_folded``.  An IDER prior adapter is folded on a copy
first, so the file has exactly the structure of a plain YOLO model; the caller's model is
never modified.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from pathlib import Path

from edgecl.atomic import atomic_write_bytes
from edgecl.ultra import ensure_offline, export_failure_unlogged

LOG = logging.getLogger(__name__)


def _export_copy(model, names: dict[int, str] | None):
    """CPU float32 eval copy, IDER prior folded, ready for ultralytics' Exporter."""
    from edgecl.models.prior_adapter import fold_prior, has_prior_adapter, set_priors

    clone = copy.deepcopy(model).cpu().float().eval()
    folded = has_prior_adapter(clone)
    if folded:
        set_priors(clone, None)
        fold_prior(clone)
    if getattr(clone, "criterion", None) is not None:
        clone.criterion = None
    if names is not None:
        clone.names = {int(k): str(v) for k, v in names.items()}
    clone.task = "detect"
    return clone, folded


def export_onnx(model, path: str | os.PathLike, *, imgsz: int, opset: int = 17,
                names: dict[int, str] | None = None, stats: dict | None = None) -> Path:
    """Export a DetectionModel to ONNX (onnxruntime-ready), atomically.

    Args:
        model: ultralytics DetectionModel, with or without IDER's adapter (not modified).
        path: destination ``.onnx`` file (replaced atomically).
        imgsz: square input size in pixels (a multiple of the model stride, 32).
        opset: ONNX opset.
        names: class names to record (default: ``model.names``).
        stats: optional dict that receives ``export_s`` (seconds) and ``ider_folded``.

    Returns:
        The destination path.
    """
    start = time.monotonic()
    ensure_offline()
    import onnx
    from ultralytics.engine.exporter import Exporter

    from edgecl import __version__

    clone, folded = _export_copy(model, names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # beside the destination (a round's work folder, which the next round clears), not in the
    # system temp folder: a learner killed mid-export (OOM, kill -9) left 10 MB there for good
    with tempfile.TemporaryDirectory(prefix=".edgecl-export-", dir=path.parent) as tmp:
        clone.pt_path = str(Path(tmp) / "model.pt")  # the Exporter writes beside this path
        overrides = {"format": "onnx", "imgsz": imgsz, "opset": opset, "simplify": True,
                     "dynamic": False, "batch": 1, "device": "cpu"}
        with export_failure_unlogged():  # the caller says why, in one line
            produced = Exporter(overrides=overrides)(model=clone)
        proto = onnx.load(str(produced))
    for key, value in (("edgecl_version", __version__), ("edgecl_ider_folded", str(folded))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    atomic_write_bytes(path, proto.SerializeToString())
    elapsed = time.monotonic() - start
    if stats is not None:
        stats.update({"export_s": elapsed, "ider_folded": folded})
    LOG.info("exported %s in %.2f s (IDER prior folded: %s)", path, elapsed, folded)
    return path
