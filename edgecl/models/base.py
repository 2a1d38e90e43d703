"""One interface for every inference backend: same letterbox, same NMS, same output."""

from __future__ import annotations

import abc
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecl.frames import Detections


@dataclass(frozen=True)
class ModelMeta:
    """What a loaded model says about itself.

    Attributes:
        path: file it was loaded from.
        backend: backend name (``onnxruntime``, ``tensorrt``, ``torch``).
        names: class index -> name.
        imgsz: square input size in pixels the model expects.
        sha256: digest of the model file ("" for in-memory models).
        extra: backend-specific details (providers, precision, ...).
    """

    path: str
    backend: str
    names: dict[int, str]
    imgsz: int
    sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)


@dataclass(frozen=True)
class InferenceOptions:
    """Post-processing thresholds shared by all backends."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 100
    threads: int = 2
    providers: str = "auto"
    imgsz: int | None = None


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 of a file.

    Args:
        path: the file.
        chunk_bytes: read size.

    Returns:
        Hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def letterbox_batch(images: list[np.ndarray], imgsz: int) -> np.ndarray:
    """Letterbox BGR images to a float32 NCHW RGB batch in 0..1 (ultralytics' LetterBox).

    Args:
        images: BGR uint8 images of any size.
        imgsz: square side of the network input.

    Returns:
        Array of shape (N, 3, imgsz, imgsz).
    """
    from ultralytics.data.augment import LetterBox

    boxer = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)
    batch = np.stack([boxer(image=im) for im in images])
    batch = batch[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) / 255.0


def postprocess(raw: np.ndarray, shapes: list[tuple[int, int]], imgsz: int, nc: int,
                opts: InferenceOptions) -> list[Detections]:
    """Run NMS on raw head output and map boxes back to original pixels.

    Args:
        raw: (N, 4 + nc, anchors) head output in letterboxed pixels (``xywh`` + class scores).
        shapes: original ``(height, width)`` of each image.
        imgsz: network input side.
        nc: number of classes.
        opts: thresholds.

    Returns:
        One :class:`Detections` per image.
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    pred = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    kept = non_max_suppression(pred, conf_thres=opts.conf, iou_thres=opts.iou,
                               max_det=opts.max_det, nc=nc)
    out = []
    for det, shape in zip(kept, shapes):
        boxes = scale_boxes((imgsz, imgsz), det[:, :4].clone(), shape).numpy()
        out.append(Detections(boxes_xyxy=boxes.astype(np.float32),
                              scores=det[:, 4].numpy().astype(np.float32),
                              classes=det[:, 5].numpy().astype(np.int64)))
    return out


class Backend(abc.ABC):
    """Base class of inference backends; subclasses implement ``_load`` and ``_forward``.

    Lifecycle: ``load(path)`` -> ``warmup()`` -> ``infer(images)`` many times -> ``close()``.
    Not thread-safe: one thread owns a backend (the loop's inference thread).
    """

    name = "base"
    suffixes: tuple[str, ...] = ()

    def __init__(self, opts: InferenceOptions | None = None):
        self.opts = opts or InferenceOptions()
        self._meta: ModelMeta | None = None

    @property
    def meta(self) -> ModelMeta:
        """Metadata of the loaded model.

        Raises:
            RuntimeError: if no model is loaded yet.
        """
        if self._meta is None:
            raise RuntimeError(f"{self.name} backend: no model loaded")
        return self._meta

    def load(self, path: str | Path) -> "Backend":
        """Load a model file.

        Args:
            path: model file with a suffix this backend handles.

        Returns:
            ``self``, for chaining.

        Raises:
            ModelLoadError: the file is missing, corrupt or incompatible.
        """
        from edgecl.errors import ModelLoadError

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        self._meta = self._load(path)
        return self

    def warmup(self, runs: int = 2) -> float:
        """Run dummy inferences so the first real frame is not slow.

        Args:
            runs: number of dummy passes.

        Returns:
            Seconds taken by the last pass.
        """
        dummy = np.full((self.meta.imgsz, self.meta.imgsz, 3), 114, np.uint8)
        elapsed_s = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self.infer([dummy])
            elapsed_s = time.perf_counter() - t0
        return elapsed_s

    def infer(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect objects in BGR images.

        Args:
            images: BGR uint8 arrays of any size.

        Returns:
            One :class:`Detections` per image, boxes in that image's pixels.
        """
        if not images:
            return []
        imgsz = self.meta.imgsz
        batch = letterbox_batch(images, imgsz)
        raw = self._forward(batch)
        shapes = [im.shape[:2] for im in images]
        return postprocess(raw, shapes, imgsz, self.meta.nc, self.opts)

    def close(self) -> None:
        """Release the model (sessions, contexts)."""
        self._meta = None

    @abc.abstractmethod
    def _load(self, path: Path) -> ModelMeta:
        """Load ``path`` and return its metadata."""

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a letterboxed NCHW float batch; return (N, 4+nc, A)."""
