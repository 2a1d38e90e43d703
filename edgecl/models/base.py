"""One interface for every inference backend: same letterbox, same NMS, same output."""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecl.errors import ModelLoadError
from edgecl.frames import Detections

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 1 << 16
"""Largest input side a model file's metadata may declare, in pixels (a larger one is damage)."""


@dataclass(frozen=True)
class ModelMeta:
    """What a loaded model says about itself.

    Attributes:
        path: file it was loaded from.
        backend: backend name (``onnxruntime``, ``tensorrt``, ``torch``).
        names: class index -> name.
        imgsz: the longer input side in pixels (the whole input when it is square).
        sha256: digest of the model file ("" for in-memory models).
        extra: backend-specific details (providers, precision, ...).
        input_hw: network input ``(height, width)`` in pixels read from the file; ``None``
            means square ``(imgsz, imgsz)``.
        batch: the batch size the file fixes, or ``None`` when the batch is dynamic.
        input_dtype: numpy name of the input element type (``float32`` or ``float16``).
    """

    path: str
    backend: str
    names: dict[int, str]
    imgsz: int
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    input_hw: tuple[int, int] | None = None
    batch: int | None = None
    input_dtype: str = "float32"

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    @property
    def hw(self) -> tuple[int, int]:
        """Network input ``(height, width)`` in pixels."""
        return tuple(self.input_hw) if self.input_hw else (int(self.imgsz), int(self.imgsz))

    def input_info(self) -> dict:
        """The input as a manifest records it: ``{"hw": [h, w], "batch": n|None, "dtype": str}``."""
        return {"hw": list(self.hw), "batch": self.batch, "dtype": self.input_dtype}


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


def _hw(imgsz: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of an input given as a square side or a pair."""
    if isinstance(imgsz, (tuple, list)):
        return int(imgsz[0]), int(imgsz[1])
    return int(imgsz), int(imgsz)


def one_line(exc: BaseException, max_chars: int = 200) -> str:
    """The first line of an exception's message, for a one-line user error.

    Args:
        exc: the exception.
        max_chars: longest text kept.

    Returns:
        ``"Type: first line"`` (or the type name alone when the message is empty).
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > max_chars:
        first = first[: max_chars - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


DETECTION_ONLY = ("edgecl runs object detection models "
                  "(ultralytics DetectionModel: YOLOv5u/v8/v9/v10/11/12/26)")
"""What every backend says it expects when it refuses another kind of model."""

# ultralytics task name (a checkpoint's ``task``, an export's ``task`` metadata) -> what it is
TASK_KINDS = {
    "segment": "a segmentation model",
    "semantic": "a semantic segmentation model",
    "pose": "a pose model",
    "obb": "an oriented-box (OBB) model",
    "classify": "a classification model",
    "depth": "a depth-estimation model",
}


# ultralytics head (last module) class -> what a model with it is; Detect and v10Detect are the
# detection heads edgecl decodes
OTHER_HEADS = {
    "YOLOESegment": "a YOLOE segmentation model",
    "YOLOESegment26": "a YOLOE segmentation model",
    "YOLOEDetect": "a YOLOE open-vocabulary detector",
    "WorldDetect": "a YOLO-World open-vocabulary detector",
    "RTDETRDecoder": "an RT-DETR transformer detector",
    "SemanticSegment": TASK_KINDS["semantic"],
    "Segment": TASK_KINDS["segment"],
    "Segment26": TASK_KINDS["segment"],
    "Pose": TASK_KINDS["pose"],
    "Pose26": TASK_KINDS["pose"],
    "OBB": TASK_KINDS["obb"],
    "OBB26": TASK_KINDS["obb"],
    "Depth": TASK_KINDS["depth"],
    "Classify": TASK_KINDS["classify"],
}


def task_kind(task: str) -> str:
    """Say what kind of model an ultralytics task name is, for a refusal.

    Args:
        task: ultralytics task (``segment``, ``pose``, ``obb``, ``classify`` ...).

    Returns:
        E.g. ``"a pose model"``; an unknown task reads ``"a 'depth2' model"``.
    """
    return TASK_KINDS.get(str(task), f"a {str(task)[:40]!r} model")


class NotADetectorError(ModelLoadError):
    """A model file loads but is another kind of model (segmentation, pose, OBB, classifier,
    RT-DETR ...): its message is complete and names the file (callers need no prefix)."""


def not_a_detector(path, kind: str) -> NotADetectorError:
    """The one-line error every backend raises for a model that is not an object detector.

    Args:
        path: the model file.
        kind: what the file is, e.g. ``"a pose model (PoseModel)"`` or ``"a pose model (task
            'pose' in its metadata)"``.

    Returns:
        A :class:`NotADetectorError` reading ``cannot load PATH: KIND; edgecl runs object
        detection models (...)`` (to raise).
    """
    return NotADetectorError(f"cannot load {path}: {kind}; {DETECTION_ONLY}")


def check_export_metadata(metadata, path) -> None:
    """Refuse an exported model whose metadata says it is not a plain object detector.

    ultralytics' exports (ONNX metadata, OpenVINO ``metadata.yaml``, TensorRT engine header)
    record the model's ``task`` and its head's class (``head``): a ``pose`` task, or a
    ``detect`` task with an ``RTDETRDecoder`` head, is refused. Absent keys are accepted (the
    output shape checks still apply).

    Args:
        metadata: the file's metadata as a mapping (``task``, ``head`` ... as strings).
        path: the model file, for the message.

    Raises:
        ModelLoadError: the file declares another task or head (one line, see
            :func:`not_a_detector`).
    """
    task = metadata.get("task")
    if task is not None and str(task) != "detect":
        raise not_a_detector(path, f"{task_kind(task)} (task {str(task)[:40]!r} in its metadata)")
    head = metadata.get("head")
    if head is not None and str(head) in OTHER_HEADS:
        raise not_a_detector(path, f"{OTHER_HEADS[str(head)]} (head {str(head)!r} in its metadata)")


def letterbox_batch(images: list[np.ndarray], imgsz: int | tuple[int, int]) -> np.ndarray:
    """Letterbox BGR images to a float32 NCHW RGB batch in 0..1 (ultralytics' LetterBox).

    Args:
        images: BGR uint8 images of any size.
        imgsz: network input: a square side, or ``(height, width)`` for a rectangular one.

    Returns:
        Array of shape (N, 3, height, width).
    """
    from ultralytics.data.augment import LetterBox

    boxer = LetterBox(new_shape=_hw(imgsz), auto=False, stride=32)
    batch = np.stack([boxer(image=im) for im in images])
    batch = batch[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) / 255.0


def postprocess(raw: np.ndarray, shapes: list[tuple[int, int]], imgsz: int | tuple[int, int], nc: int,
                opts: InferenceOptions) -> list[Detections]:
    """Run NMS on raw head output and map boxes back to original pixels.

    An end-to-end output (NMS inside the model: ultralytics' ``nms=True`` / ``end2end`` exports,
    YOLO26 one-to-one heads) is recognised by its last dimension of 6 (a raw head has at least
    21 anchors) and only thresholded, as ultralytics' predictor does for those models.

    Args:
        raw: (N, 4 + nc, anchors) head output in letterboxed pixels (``xywh`` + class scores),
            or (N, max_det, 6) end-to-end rows ``x1, y1, x2, y2, score, class``.
        shapes: original ``(height, width)`` of each image.
        imgsz: network input: a square side or ``(height, width)``.
        nc: number of classes.
        opts: thresholds.

    Returns:
        One :class:`Detections` per image.
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    pred = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    with single_torch_thread():
        if pred.ndim == 3 and pred.shape[-1] == 6:
            kept = [rows[rows[:, 4].argsort(descending=True)] for rows in pred]
            kept = [rows[rows[:, 4] >= opts.conf][: opts.max_det] for rows in kept]
        else:
            kept = non_max_suppression(pred, conf_thres=opts.conf, iou_thres=opts.iou,
                                       max_det=opts.max_det, nc=nc)
        out = []
        for det, shape in zip(kept, shapes):
            boxes = scale_boxes(_hw(imgsz), det[:, :4].clone(), shape).numpy()
            out.append(Detections(boxes_xyxy=boxes.astype(np.float32),
                                  scores=det[:, 4].numpy().astype(np.float32),
                                  classes=det[:, 5].numpy().astype(np.int64)))
    return out


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the enclosed PyTorch operations on one intra-op thread, then restore the count.

    NMS works on a few hundred candidate boxes per frame, too little to share between threads;
    yet with torch's default pool (one thread per core) every frame's NMS also woke the pool's
    other threads, which on a busy CPU waited for a time slice: 10 ms per frame instead of 1.3
    (YOLO11n at 320 px on this 2-core machine with other work running, about as long as the
    INT8 network itself). Changing the count costs under a microsecond.
    """
    import torch

    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def folder_given(path: Path) -> str:
    """The one-line error for a folder given where a model file is needed (an ultralytics
    OpenVINO export is a folder: its ``.xml`` inside is named when there is one).

    Args:
        path: the folder.

    Returns:
        The message.
    """
    try:
        xmls = sorted(p.name for p in path.glob("*.xml"))
    except OSError:
        xmls = []
    hint = f": give the model file in it ({path / xmls[0]})" if len(xmls) == 1 else ""
    return f"{path} is a folder, not a model file{hint}"


def misnamed_model_hint(path: Path) -> str:
    """What a model file that failed to load really is, by its first bytes, when its suffix
    says otherwise: ``"; it is a PyTorch checkpoint (a zip archive): name it .pt"``, or ``""``.

    Args:
        path: the model file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return ""
    suffix = path.suffix.lower()
    if head.startswith(b"PK\x03\x04") and suffix != ".pt":
        return "; it is a PyTorch checkpoint (a zip archive): name it .pt"
    if head.lstrip().startswith(b"<?xml") and suffix != ".xml":
        return "; it is an XML file (an OpenVINO model is named .xml, its weights .bin)"
    return ""


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` as a ctypes function, or ``None`` on another C library (musl,
    macOS, Windows), where nothing is trimmed."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError, AttributeError):  # no such name: not glibc (or not POSIX)
        return None
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory(what: str = "a model") -> bool:
    """Hand the memory a closed model freed back to the system (glibc's ``malloc_trim(0)``).

    A model loaded and closed in the runtime's loader and sink threads leaves its freed memory
    (onnxruntime's weights and arena, mostly) in glibc's heaps: once a large block has been
    freed, glibc serves blocks up to that size from its heaps instead of ``mmap``, and a heap
    gives pages back only from its top, which the next model's allocations keep in use. Measured
    with the runtime's hot swap of an ONNX YOLO11n at 320 px: resident memory grew 658 -> 815 MB
    over 20 swaps while the bytes in use stayed flat (150 MB free inside the heaps); trimming
    after each close kept it at about 715 MB. A no-op where the C library is not glibc.

    Args:
        what: what was closed, for the debug line.

    Returns:
        True when memory was handed back.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    start_s = time.perf_counter()
    released = bool(trim(0))
    log.debug("malloc_trim after closing %s: %s in %.1f ms", what,
              "memory released" if released else "nothing to release",
              (time.perf_counter() - start_s) * 1000)
    return released


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
        from edgecl.errors import ModelLoadError, special_file_problem

        path = Path(path)
        if path.is_dir():
            raise ModelLoadError(folder_given(path))
        if not path.is_file():
            why = special_file_problem(path)
            looked = "" if path.is_absolute() else f" (looked for {path.absolute()})"
            raise ModelLoadError(f"model file {why}" if why
                                 else f"model file not found: {path}{looked}")
        self._meta = self._load(path)
        floor = self._meta.extra.get("nms_score_threshold")
        if floor is not None and self.opts.conf < floor:
            log.warning("%s runs NMS inside itself (exported with nms=True) and keeps only scores "
                        "above %g: model.conf=%g finds nothing more below that; export it with "
                        "nms=False to use a lower threshold", path, floor, self.opts.conf)
        return self

    def warmup(self, runs: int = 2) -> float:
        """Run dummy inferences so the first real frame is not slow.

        Args:
            runs: number of dummy passes.

        Returns:
            Seconds taken by the last pass.

        Raises:
            ModelLoadError: the model fails on a dummy frame (the backend's error in one line),
                or its weights or its outputs there are not finite (weights holding NaN or
                infinity detect nothing, or everything, and make every learning round fail).
        """
        from edgecl.errors import ModelLoadError

        dummy = np.full((*self.meta.hw, 3), 114, np.uint8)
        elapsed_s = 0.0
        for run in range(max(1, runs)):
            t0 = time.perf_counter()
            try:
                damaged, zeroed = self._weight_faults() if run == 0 else (None, None)
                if damaged:  # a saturated class bias (+inf) gives finite scores of 1 everywhere
                    raise ModelLoadError(f"{self.meta.path}: its weights hold NaN or infinity (in "
                                         f"{damaged}): they are damaged (a float16 overflow in "
                                         f"training, say)")
                if zeroed:  # finite outputs, no detection: the check below passed it
                    raise ModelLoadError(f"{self.meta.path}: its weights are zero-filled (every "
                                         f"value of {zeroed} is 0): the file is damaged (a card "
                                         f"fault, or a copy of it or of its weights file cut "
                                         f"short)")
                raw = self._raw_outputs([dummy])
                if run == 0 and not np.isfinite(raw).all():
                    raise ModelLoadError(f"{self.meta.path}: the model's outputs on a test frame "
                                         f"are not finite (NaN or infinity): its weights are "
                                         f"damaged (a float16 overflow in training, say)")
                postprocess(raw, [dummy.shape[:2]], self.meta.hw, self.meta.nc, self.opts)
            except ModelLoadError:
                raise
            except Exception as exc:  # runtimes raise many unrelated types for a model that cannot run
                raise ModelLoadError(f"{self.meta.path}: the model fails on a test frame: "
                                     f"{one_line(exc)}") from None
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
        raw = self._raw_outputs(images)
        shapes = [im.shape[:2] for im in images]
        return postprocess(raw, shapes, self.meta.hw, self.meta.nc, self.opts)

    def _nonfinite_weight(self) -> str | None:
        """The name of a weight tensor holding NaN or infinity, or None (also where the backend
        cannot read its weights: the outputs on a test frame are checked then)."""
        return None

    def _zeroed_weight(self) -> str | None:
        """The name of a convolution kernel of zeros only
        (:func:`edgecl.models.checkpoint.zeroed_kernel`), or None (also where the backend cannot
        read its weights)."""
        return None

    def _weight_faults(self) -> tuple[str | None, str | None]:
        """``(_nonfinite_weight(), _zeroed_weight())``; a backend that reads its weights from
        the file reads them once for both."""
        return self._nonfinite_weight(), self._zeroed_weight()

    def _raw_outputs(self, images: list[np.ndarray]) -> np.ndarray:
        """The network's outputs for BGR images, letterboxed to the model's input:
        ``(N, 4+nc, A)`` float (or the end-to-end head's rows)."""
        batch = letterbox_batch(images, self.meta.hw)
        if self.meta.input_dtype != "float32":
            batch = batch.astype(self.meta.input_dtype)
        return self._forward_fixed(batch) if self.meta.batch else self._forward(batch)

    def _forward_fixed(self, batch: np.ndarray) -> np.ndarray:
        """Run a model whose file fixes the batch: chunks of that size, the last one padded.

        Only the rows of real images are returned.
        """
        size = int(self.meta.batch)
        outputs = []
        for start in range(0, batch.shape[0], size):
            chunk = batch[start:start + size]
            real = chunk.shape[0]
            if real < size:
                chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(np.asarray(self._forward(chunk))[:real])
        return np.concatenate(outputs, axis=0)

    def close(self) -> None:
        """Release the model (sessions, contexts) and hand the memory it freed back to the
        system (:func:`release_freed_memory`).

        Subclasses drop their own handles first, then call this.
        """
        loaded, self._meta = self._meta, None
        if loaded is not None:
            release_freed_memory(f"{self.name} model {loaded.path}")

    @abc.abstractmethod
    def _load(self, path: Path) -> ModelMeta:
        """Load ``path`` and return its metadata."""

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a letterboxed NCHW float batch; return (N, 4+nc, A)."""
