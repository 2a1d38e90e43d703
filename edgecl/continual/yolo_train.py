"""Thin glue to ultralytics' training pieces: hyper-parameters, dataset, loader, loss.

Everything that does real work here is ultralytics' own code: ``YOLODataset`` with its
augmentation pipeline (mosaic, random perspective, HSV, flips), ``InfiniteDataLoader`` and
``v8DetectionLoss`` with its ``TaskAlignedAssigner``.  This module only chooses settings
that suit small on-device images and exposes the label assignment the loss computes, which
IDER's second pass reuses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecl.data.labels import read_yolo_labels
from edgecl.errors import LabelError
from edgecl.ultra import ensure_offline

log = logging.getLogger(__name__)

# Augmentation for small (64-320 px) frames: ultralytics' defaults with a milder scale jitter
# (objects in 160 px frames are already small) and no mixup/cutmix.
AUGMENT_OVERRIDES = {
    "mosaic": 1.0,
    "scale": 0.3,
    "translate": 0.1,
    "fliplr": 0.5,
    "flipud": 0.0,
    "degrees": 0.0,
    "hsv_h": 0.015,
    "hsv_s": 0.5,
    "hsv_v": 0.3,
    "mixup": 0.0,
    "cutmix": 0.0,
    "copy_paste": 0.0,
}
GRAD_CLIP_NORM = 10.0  # ultralytics' trainer clips the gradient norm to 10

FROZEN_KEY = "frozen_outputs"
"""Batch key of the frozen layers' outputs (:class:`FrozenLayers`) when a batch carries them."""


def training_hyp(imgsz: int, lr: float, **overrides):
    """Build ultralytics' training hyper-parameters for on-device fine-tuning.

    Args:
        imgsz: training image size in pixels.
        lr: learning rate (recorded as ``lr0``).
        **overrides: any other ultralytics ``default.yaml`` key.

    Returns:
        ``IterableSimpleNamespace`` usable as a dataset ``hyp`` and as ``model.args``
        (the loss reads its gains ``box``, ``cls``, ``dfl`` from it).
    """
    ensure_offline()
    from ultralytics.cfg import get_cfg

    settings = {"imgsz": imgsz, "lr0": lr, "optimizer": "AdamW", "rect": False, "cache": False,
                "workers": 0, "plots": False, "amp": False, "task": "detect", "mode": "train",
                **AUGMENT_OVERRIDES, **overrides}
    return get_cfg(overrides=settings)


def _scratch_cache_dataset_class():
    """Return a YOLODataset subclass that keeps its label cache out of the data folders."""
    ensure_offline()
    from ultralytics.data.dataset import YOLODataset

    class ScratchCacheYOLODataset(YOLODataset):
        """YOLODataset whose ``labels.cache`` goes to a throw-away folder.

        ultralytics writes the cache next to the ``labels/`` folder; for a replay memory that
        is shared with a running process, a rewritten cache file per round is noise.
        """

        scan_messages: list[str] = []
        """ultralytics' reason for each image its scan left out ("image size (8, 48) <10
        pixels"), kept on the class: readable even when the constructor raises."""

        def _load_or_scan_cache(self, cache_path: Path, cache_hash: str) -> tuple[dict, bool]:
            with tempfile.TemporaryDirectory(prefix="edgecl-labels-") as tmp:
                cache = self.cache_labels(Path(tmp) / cache_path.name)
            type(self).scan_messages = [str(m) for m in cache.get("msgs") or []]
            return cache, False

    return ScratchCacheYOLODataset


def _scan_reason(messages: Sequence[str]) -> str:
    """The first of ultralytics' scan messages, without its prefix (``edgecl: ``)."""
    return messages[0].replace("edgecl: ", "", 1).strip() if messages else ""


def build_dataset(images: Sequence[Path | str], names: dict[int, str], *, imgsz: int,
                  augment: bool, hyp, batch: int = 8):
    """Build an ultralytics ``YOLODataset`` over a list of image files.

    Labels are found the ultralytics way (``/images/`` -> ``/labels/``, ``.txt``).

    Args:
        images: image files (duplicates are ignored).
        names: the model's class names (labels with a larger class id are rejected).
        imgsz: image size in pixels.
        augment: use the training augmentation (mosaic etc.) from ``hyp``.
        hyp: hyper-parameters from :func:`training_hyp`.
        batch: batch size (sizes the mosaic buffer).

    Returns:
        The dataset; ``dataset.im_files`` lists the images that were readable, sorted.

    Raises:
        LabelError: no image in the list could be read with valid labels.
    """
    dataset_class = _scratch_cache_dataset_class()
    files = sorted({str(Path(p).resolve()) for p in images})
    data = {"names": dict(names), "nc": len(names), "channels": 3}
    # ultralytics reads a list entry that is a file as a text list of images, so the
    # image list goes through one such text file.
    with tempfile.TemporaryDirectory(prefix="edgecl-images-") as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(files) + "\n", encoding="utf-8")
        try:
            return dataset_class(img_path=str(listing), imgsz=imgsz, cache=False, augment=augment,
                                 hyp=hyp, rect=False, batch_size=batch, stride=32, pad=0.0,
                                 data=data, task="detect", prefix="edgecl: ")
        except (FileNotFoundError, RuntimeError, ValueError, AssertionError) as exc:
            cause = exc.__cause__ or exc
            # ultralytics names its throw-away cache file here; the scan's own reason is clearer
            why = _scan_reason(dataset_class.scan_messages) or _first_line(cause)
            raise LabelError(f"no usable training image among {len(files)} file(s) "
                             f"(first: {files[0] if files else '-'}): {why}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MixedBatchSampler:
    """Batches that each hold about ``replay_fraction`` replayed samples.

    One epoch is one pass over the new samples; replayed samples are drawn from a
    reshuffled cycle so every one of them is used before any repeats.

    Args:
        new_indices: dataset indices of new samples.
        replay_indices: dataset indices of replayed samples.
        batch: batch size.
        replay_fraction: share of each batch taken from the replayed samples (0..1).
        seed: shuffling seed.
    """

    def __init__(self, new_indices: Sequence[int], replay_indices: Sequence[int], batch: int,
                 replay_fraction: float, seed: int = 0):
        self.new = list(new_indices)
        self.replay = list(replay_indices)
        self.batch = max(1, int(batch))
        n_replay = round(self.batch * min(max(replay_fraction, 0.0), 1.0))
        if not self.replay:
            n_replay = 0
        elif not self.new:
            n_replay = self.batch
        # INVARIANT: a batch with new samples keeps at least one new sample.
        self.n_replay = min(n_replay, self.batch - 1) if self.new else n_replay
        self.n_new = self.batch - self.n_replay
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        pool = self.new if self.new else self.replay
        per_batch = self.n_new if self.new else self.n_replay
        return math.ceil(len(pool) / max(1, per_batch)) if pool else 0

    def _replay_cycle(self) -> Iterator[int]:
        while True:
            order = self.replay[:]
            self._rng.shuffle(order)
            yield from order

    def __iter__(self) -> Iterator[list[int]]:
        replay = self._replay_cycle() if self.replay else iter(())
        if not self.new:
            for _ in range(len(self)):
                yield [next(replay) for _ in range(self.n_replay)]
            return
        order = self.new[:]
        self._rng.shuffle(order)
        for start in range(0, len(order), self.n_new):
            chunk = order[start:start + self.n_new]
            yield chunk + [next(replay) for _ in range(self.n_replay)]


def build_loader(dataset, *, batch: int, replay_files: set[str], replay_fraction: float,
                 device: str, seed: int = 0):
    """Build the training loader over a dataset of new and replayed images.

    Args:
        dataset: dataset from :func:`build_dataset`.
        batch: batch size.
        replay_files: resolved paths of the replayed images.
        replay_fraction: 0 shuffles the union (replay merged into the training set, the
            drone paper's protocol); in (0, 1] each batch holds that share of replayed images.
        device: training device (pinned memory only on CUDA).
        seed: shuffling seed.

    Returns:
        An ultralytics ``InfiniteDataLoader`` with zero worker processes.
    """
    ensure_offline()
    from ultralytics.data.build import InfiniteDataLoader, build_dataloader

    if replay_fraction <= 0.0 or not replay_files:
        return build_dataloader(dataset, batch=batch, workers=0, shuffle=True, rank=-1,
                                device=device)
    is_replay = replay_mask(dataset.im_files, replay_files)
    new_idx = [i for i, r in enumerate(is_replay) if not r]
    replay_idx = [i for i, r in enumerate(is_replay) if r]
    sampler = MixedBatchSampler(new_idx, replay_idx, batch, replay_fraction, seed)
    return InfiniteDataLoader(dataset, batch_sampler=sampler, num_workers=0,
                              collate_fn=dataset.collate_fn)


class PrefetchedBatches:
    """Training batches drawn by one background thread, up to ``depth`` ahead of the step.

    Data loading (decode, mosaic, affine, HSV: NumPy and OpenCV) then runs while the training
    thread is inside PyTorch's forward and backward kernels, which release the GIL, instead of
    between steps; the batches and their order are those of ``batches``. Use as a context
    manager (or call :meth:`close`): the thread stops when the block ends, after at most the
    batch it is loading. An exception raised while loading is raised again in the training
    thread, at the batch where it happened.

    Args:
        batches: the batches (collated dicts) to draw, in order; iterated in the thread only.
        depth: batches kept ready (>= 1).
        deadline_s: ``time.monotonic()`` value past which waiting for a batch ends the
            iteration (storage that reads slowly or stalls would otherwise hold a round past
            its time budget); None: wait as long as the thread loads.

    Raises:
        RuntimeError: (while iterating) the thread ended without the batches' end or an error.
    """

    PUT_WAIT_S = 0.1
    """How often a thread waiting for room in the queue checks whether it should stop, and
    the training thread waiting for a batch whether the loading thread is still there."""

    CLOSE_WAIT_S = 1.0
    """How long :meth:`close` waits for a thread still loading a batch."""

    def __init__(self, batches: Iterator[dict], depth: int = 2, deadline_s: float | None = None):
        self._source = batches
        self._deadline_s = deadline_s
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="edgecl-batches", daemon=True)

    def __enter__(self) -> PrefetchedBatches:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict]:
        while True:
            try:
                kind, value = self._queue.get(timeout=self.PUT_WAIT_S)
            except queue.Empty:
                if self._deadline_s is not None and time.monotonic() >= self._deadline_s:
                    return  # the round's time is up while a read is still pending
                if self._thread.is_alive() or not self._queue.empty():
                    continue
                # ended without a word (SystemExit in a library): never wait forever
                raise RuntimeError("the batch-loading thread ended before the last "
                                   "batch") from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        """Stop the thread; wait for it at most :attr:`CLOSE_WAIT_S` (idempotent).

        A thread still inside a read then (storage that stalls) is left behind: it is a daemon,
        ends at its next batch without handing it over, and a Ctrl-C stops the round at once.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.CLOSE_WAIT_S)
            if self._thread.is_alive():
                log.warning("the batch-loading thread is still reading after %g s; the round "
                            "ends without it", self.CLOSE_WAIT_S)

    def _fill(self) -> None:
        try:
            for batch in self._source:
                if not self._put(("batch", batch)):
                    return
        except Exception as exc:  # noqa: BLE001 - not contained: raised again in the training thread
            self._put(("error", exc))
            return
        self._put(("end", None))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.PUT_WAIT_S)
                return True
            except queue.Full:
                continue
        return False


def run_layers(layers: Sequence, save: Sequence[int] | set[int], x, saved: Sequence = ()):
    """Run layers of an ultralytics model in order, as its forward does
    (``BaseModel._predict_once``): each layer takes the previous output, or the saved outputs
    of the earlier layers its ``f`` names.

    Args:
        layers: consecutive layers of ``model.model`` (each with its ``f`` and ``i``).
        save: the model's ``save`` list (layers whose outputs later layers read).
        x: the input of the first layer (the previous layer's output; the image batch, float
            ``(B, 3, H, W)``, for layer 0).
        saved: the outputs of the layers before the first (``None`` where not kept), as
            :class:`FrozenLayers` returns them.

    Returns:
        ``(output, outputs)``: the last layer's output and the outputs so far, ``saved`` first.
    """
    y = list(saved)
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in save else None)
    return x, y


class FrozenLayers:
    """A round's frozen first layers, run apart from the model on its batches.

    A frozen layer is fixed for the whole round (no gradient, BatchNorm in eval mode), so its
    outputs for a batch can be computed before the training step, in the batch-loading thread
    (:class:`PrefetchedBatches`), while the training thread steps through the previous batch;
    the step then runs the model from its first trained layer (:func:`run_layers`) and takes
    the same step as with the whole forward pass. The layers are a private copy, in eval mode,
    so nothing the training thread does to the model (a switch to train mode, a hook) reaches
    them. (Folding their BatchNorm into the convolutions, exact but for rounding, made no
    measurable difference here: the loading thread is not what a step waits for.)

    Args:
        model: the ultralytics model; its first ``n_layers`` layers are copied.
        n_layers: how many layers are frozen (>= 1).
        memory_format: the round's tensor layout (``torch.channels_last``), or None.
    """

    def __init__(self, model, n_layers: int, memory_format=None):
        import copy

        self.n_layers = int(n_layers)
        self.save = set(model.save)
        layers = copy.deepcopy(model.model[:self.n_layers]).eval()
        for p in layers.parameters():
            p.requires_grad_(False)
        for m in layers.modules():  # hooks on the model's layers are the model's: not copied
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        if memory_format is not None:
            layers.to(memory_format=memory_format)
        self.layers = layers

    def __call__(self, img):
        """The frozen layers' outputs for a batch (no gradient; in the caller's autocast).

        Args:
            img: float ``(B, 3, H, W)`` images in 0..1.

        Returns:
            ``(x, saved)`` for :func:`run_layers` from layer ``n_layers`` on.
        """
        import torch

        with torch.no_grad():
            return run_layers(self.layers, self.save, img)


def resolve_files(paths: Sequence[Path | str]) -> set[str]:
    """Resolve image paths for membership tests.

    Args:
        paths: image files.

    Returns:
        Set of absolute, normalised path strings.
    """
    return {str(Path(p).resolve()) for p in paths}


def replay_mask(im_files: Sequence[str], replay_files: set[str]) -> list[bool]:
    """Tell which dataset images are replayed.

    Args:
        im_files: image paths as the dataset lists them.
        replay_files: resolved replayed paths (:func:`resolve_files`).

    Returns:
        One flag per image.
    """
    return [str(Path(f).resolve()) in replay_files for f in im_files]


def preprocess_batch(batch: dict, device):
    """Move a collated batch to the device and scale images to 0..1 (as DetectionTrainer does).

    Args:
        batch: collated batch from the loader.
        device: torch device.

    Returns:
        The same dict, updated in place.
    """
    import torch

    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            batch[key] = value.to(device, non_blocking=device.type == "cuda")
    batch["img"] = batch["img"].float() / 255
    return batch


@dataclass
class Assignment:
    """Label assignment of the last loss call (TaskAlignedAssigner output, detached).

    Attributes:
        target_scores: (B, anchors, nc) soft class targets.
        fg_mask: (B, anchors) anchors assigned to an object.
    """

    target_scores: object
    fg_mask: object

    @property
    def target_scores_sum(self):
        """Normaliser v8DetectionLoss divides its class loss by."""
        return self.target_scores.sum().clamp(min=1)


def float32_outputs(outputs):
    """Cast a network's outputs (tensors in dicts, lists and tuples) to float32.

    Args:
        outputs: what a DetectionModel returns (e.g. ``boxes``, ``scores``, ``feats``).

    Returns:
        The same structure, floating tensors in float32 (others untouched).
    """
    import torch

    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: float32_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(float32_outputs(v) for v in outputs)
    return outputs


def is_end_to_end(model) -> bool:
    """True for a model whose Detect head has a one-to-one (NMS-free) branch (YOLO26, YOLOv10)."""
    return getattr(model.model[-1], "one2one_cv2", None) is not None


def one_to_many(preds):
    """The one-to-many branch of a head's training output (``boxes``, ``scores``, ``feats``):
    itself for a one-to-many head, ``preds["one2many"]`` for an end-to-end one (the branch
    whose gradient reaches the shared layers, as ultralytics detaches the one-to-one branch).

    Args:
        preds: the training output dict, or an ``(inference, dict)`` tuple of eval mode.
    """
    preds = preds[1] if isinstance(preds, tuple) else preds
    return preds.get("one2many", preds)


def make_criterion(model):
    """Build the detection loss for a model, recording each call's label assignment.

    ``v8DetectionLoss`` for a one-to-many head; for an end-to-end head ultralytics' ``E2ELoss``
    (one-to-many plus one-to-one branch) with the gains a trained model finished with
    (one-to-many 0.1, one-to-one 0.9: fine-tuning continues from the end of its schedule), and
    ``class_weights`` applying to both branches.

    Args:
        model: DetectionModel with ``model.args`` set (:func:`training_hyp`).

    Returns:
        The loss object; ``criterion.last_assignment`` holds the latest :class:`Assignment`
        (of the one-to-many branch).
    """
    ensure_offline()
    from ultralytics.utils.loss import E2ELoss, v8DetectionLoss

    if is_end_to_end(model):
        class EndToEndLoss(E2ELoss):
            """E2ELoss whose per-class weights reach both branches."""

            @property
            def class_weights(self):
                return self.one2many.class_weights

            @class_weights.setter
            def class_weights(self, weights):
                self.one2many.class_weights = weights
                self.one2one.class_weights = weights

        criterion = EndToEndLoss(model)
        criterion.o2m = criterion.o2m_copy = criterion.final_o2m
        criterion.o2o = criterion.total - criterion.o2m
        assigner = criterion.one2many.assigner
    else:
        criterion = v8DetectionLoss(model)
        assigner = criterion.assigner
    criterion.last_assignment = None

    def record(_module, _inputs, outputs):
        """Keep target_scores and fg_mask of the assigner's latest call."""
        _, _, target_scores, fg_mask, _ = outputs
        criterion.last_assignment = Assignment(target_scores.detach(), fg_mask.detach())

    assigner.register_forward_hook(record)
    return criterion


def check_dropped_images(requested: Sequence[Path | str], dataset, nc: int) -> list[str]:
    """Explain images that ultralytics' label scan left out of a dataset.

    ultralytics silently drops an image whose label names a class id >= nc (and corrupt
    images); a label for an unknown class means the head must grow first, so that case
    is an error rather than a lost sample.

    Args:
        requested: the image files asked for.
        dataset: dataset from :func:`build_dataset`.
        nc: the model's class count.

    Returns:
        Image files that were dropped as unreadable or corrupt.

    Raises:
        LabelError: a dropped image's label names a class the model does not have.
    """
    from ultralytics.data.utils import img2label_paths

    kept = resolve_files(dataset.im_files)
    dropped = sorted({str(Path(p)) for p in requested if str(Path(p).resolve()) not in kept})
    for label_file in img2label_paths(dropped):
        try:
            rows = read_yolo_labels(label_file).labels
        except LabelError:
            continue
        if rows.size and int(rows[:, 0].max()) >= nc:
            raise LabelError(f"label class {int(rows[:, 0].max())} in {label_file} is not one "
                             f"of the model's {nc} classes; grow the head first")
    return dropped


def dropped_reason(dataset) -> str:
    """ultralytics' reason for the first image its scan left out of ``dataset`` ("" if none
    was given): e.g. ``.../00000016.jpg: ignoring corrupt image/label: image size (8, 48) <10
    pixels``.

    Args:
        dataset: dataset from :func:`build_dataset`.
    """
    return _scan_reason(getattr(type(dataset), "scan_messages", []))


def train_mode(model, frozen: Sequence = ()) -> None:
    """Put a model in training mode except its frozen layers, which stay in eval mode.

    As ultralytics' trainer does for ``freeze``: a frozen layer's BatchNorm keeps its running
    statistics (and normalises with them), so the layer computes exactly what it did before.

    Args:
        model: the model.
        frozen: modules of the model kept in eval mode.
    """
    model.train()
    for module in frozen:
        module.eval()


def recalibrate_batchnorm(model, loader, n_batches: int, device, frozen: Sequence = (),
                          min_images: int = 1, *, autocast: Callable | None = None,
                          memory_format=None, reset: bool = True) -> int:
    """Re-estimate BatchNorm running statistics for the current weights (no gradient).

    Running statistics are reset and replaced by the exact average over ``n_batches``
    training batches (``momentum=None``), then the layers' momentum is restored.  BatchNorm
    layers inside ``frozen`` modules are left as they are (in eval mode, statistics kept).

    Batches with fewer than ``min_images`` images are passed over: an epoch's last, partial
    batch can hold one image, and ultralytics' ``InfiniteDataLoader`` goes on from where
    training stopped, so it can be the batch drawn.  One image at a small input size leaves the
    deepest layers 2 x 2 positions to estimate a variance from, and a model recalibrated on it
    blew its activations up to scores of exactly 0 on every other image.

    Args:
        model: the model (left in eval mode).
        loader: training loader (iterated afresh).
        n_batches: batches to average over (>= 1).
        device: torch device.
        frozen: modules whose BatchNorm statistics must not change.
        min_images: smallest batch used (callers pass ``min(batch, dataset size)``).
        autocast: ``callable() -> context`` the forward passes run in (the round's precision,
            :meth:`FineTuner.autocast`: BatchNorm then sees the activations training gave it);
            None: float32.
        memory_format: the layout of the input batches (``torch.channels_last`` where the
            round trained so); None: as loaded.
        reset: start the average afresh; False: go on with the running average the layers
            hold (a round whose last batches were already averaged, ``momentum=None``).

    Returns:
        Batches used.
    """
    import torch
    from torch import nn

    kept = {id(m) for layer in frozen for m in layer.modules()}
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept]
    momenta = [m.momentum for m in norms]
    used = 0
    train_mode(model, frozen)
    try:
        with torch.no_grad():
            for m in norms:
                if reset:
                    m.reset_running_stats()
                m.momentum = None  # cumulative average
            while used < n_batches:
                before = used
                for batch in loader:
                    if len(batch["img"]) < min_images:
                        continue
                    images = preprocess_batch(batch, device)["img"]
                    if memory_format is not None:
                        images = images.contiguous(memory_format=memory_format)
                    with (autocast or contextlib.nullcontext)():
                        model(images)
                    used += 1
                    if used >= n_batches:
                        break
                if used == before:
                    break
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return used
