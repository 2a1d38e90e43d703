"""Fine-tuning a YOLO DetectionModel on new and replayed frames, within a time budget.

The loop is ultralytics' detection training reduced to what a learning round needs:
``YOLODataset`` augmentation, ``v8DetectionLoss`` (``model.args`` carries the gains, as
``DetectionTrainer`` sets it), AdamW, gradient clipping at 10.  No EMA or warm-up: a round is
tens of steps on a model that is already trained.

Mixed precision (``learner.precision``, :func:`resolve_precision`): where the device computes
bfloat16 natively, the forward passes run under ``torch.autocast`` in bfloat16 (PyTorch's
automatic mixed precision: convolutions in bfloat16, weights, gradients and optimiser state in
float32). The network's outputs are cast back to float32 before the loss, so the label
assignment and the box IoUs are computed as in full precision. bfloat16 keeps float32's
exponent range, so no loss scaling is needed (unlike float16).

Memory layout (:func:`training_memory_format`): on a CPU, and on a GPU in bfloat16, the model and
its input batches are kept channels-last (NHWC) during the round, the layout oneDNN's and cuDNN's
convolution kernels prefer; the model is back in the default layout when the round ends. Measured
with ``edgecl bench learn`` (YOLO11n, 160 px, batch 8, one thread, backbone frozen).

BatchNorm running statistics are re-estimated at the end of a round: with ultralytics'
BatchNorm momentum of 0.03 a round of tens of steps leaves them lagging behind the weights, which
matters most for a young model (measured: eval-mode loss 11.0 -> 4.0 after 40 steps from
scratch; a 100-step first round scored 0.0 held-out mAP50-95 without it). They are the exact
average over the round's last ``learner.bn_recalibration_batches`` training batches (reset when
that many steps are left, then ``momentum=None``: the forward passes training runs anyway; an
average begun on a wrong estimate of the steps left, which would cover more than twice that
many batches, is given up and begun again), and
only a round too short for that many batches, or cut short by its time budget, runs extra
forward passes after its last step (:func:`~edgecl.continual.yolo_train.recalibrate_batchnorm`).
A round of fewer than :data:`IN_LOOP_AVERAGE_AFTER` times that many steps averages none of its
own batches: its weights moved too far from step to step, and its statistics are estimated
afresh after its last step.
Measured on ``edgecl bench learn``'s data (3 seeds): the same held-out mAP50-95 as 8 extra
batches after the round (30-step later round 0.115 vs 0.117; 100 steps from scratch 0.115 vs
0.074), and 0.45 s less of a 4.4 s round.

For later rounds of an already trained model the first ``freeze_layers`` layers can be kept
fixed (ultralytics' ``freeze=N``: no gradient, and their BatchNorm layers stay in eval mode so
their running statistics do not move either); the backward pass then stops at the first
trained layer, which makes a step cheaper (measured by ``edgecl bench learn``). On a CPU their
outputs for each batch are computed ahead, in the batch-loading thread, by a copy of them
(:class:`~edgecl.continual.yolo_train.FrozenLayers`; the LwF teacher's outputs too, through
its ``on_batch_prepare``), while the training thread steps through the previous batch from its
first trained layer on: the same steps, bit for bit, with the second core doing the forward
pass through the frozen layers (``edgecl bench learn``: 57-63 -> 75-76 images/s, medians of 6
rounds in two interleaved pairs of runs).

A step whose loss (or gradient norm) is not finite is skipped: no optimiser step, and the
BatchNorm running statistics of that forward pass are restored, so the weights stay as they
were.  Three skipped steps in a row stop the round with ``stopped_reason="nan_loss"``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edgecl.continual import yolo_train
from edgecl.continual.virtual_step import make_virtual_scorer, virtual_scorer
from edgecl.errors import ConfigError, LabelError

if TYPE_CHECKING:
    import torch

    from edgecl.config import IderConfig, LearnerConfig

LOG = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 3
RECAL_COST_PER_BATCH = 0.4  # a no-grad forward pass costs about 40% of a training step
IN_LOOP_AVERAGE_AFTER = 3
"""The round's last batches are averaged into the BatchNorm statistics only after this many
times ``bn_recalibration_batches`` steps; a shorter round is re-estimated after its last step
(a young model's weights move so far per step that an average over its last 8 of 10 steps
described none of them: a 10-step round from scratch then scored 1.0 at anchors where the
recalibrated weights score 0.004)."""
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")  # devices with PyTorch's fused AdamW kernel
PROGRESS_LOG_S = 30.0  # a round that trains longer logs its progress this often
PROGRESS_EVERY_S = 2.0  # how often (at most) the progress callback is called
NO_TIME_LIMIT_S = 1e8
"""A time budget this long is no limit (benchmarks train a set number of steps): the
progress log leaves it out."""
IMAGE_NOT_FOUND = "Image Not Found"
"""How ultralytics' dataset begins the error for an image it cannot read."""
NO_STEP_LIMIT = 10**6
"""A step bound this large is no limit (days of training; benchmarks that train for a set
time pass far more): the progress log leaves it out."""
PREPARED_KEY = "prepared"
"""Batch key set by :meth:`FineTuner.prepare_batch`."""

ProgressCallback = Callable[[int, int, float, float], None]
"""``progress(steps, total_steps, elapsed_s, budget_s)``: steps taken of at most
``total_steps`` (the step and epoch bounds), seconds used of the time budget."""

__all__ = ["FineTuneHooks", "FineTuneResult", "FineTuner", "apply_low_priority",
           "make_virtual_scorer", "native_bf16", "resolve_device",
           "resolve_precision", "training_memory_format", "virtual_scorer"]


@dataclass(frozen=True)
class FineTuneResult:
    """What one fine-tuning round did.

    Attributes:
        steps: optimiser steps taken.
        seconds: wall-clock seconds of the whole round (dataset scan included).
        mean_loss: mean per-image training loss over the steps taken (NaN when none).
        final_loss: per-image loss of the last step taken (NaN when none).
        stopped_reason: ``budget``, ``max_steps``, ``epochs``, ``nan_loss`` or ``no_data``
            (``error``: only in what hooks' ``on_round_end`` get when the round raised).
        skipped_steps: steps skipped for a non-finite loss or gradient.
        images: training images used (new + replayed, after the label scan).
        replay_images: how many of them were replayed.
        last_terms: the last step's loss components (box, cls, dfl, hook terms).
    """

    steps: int
    seconds: float
    mean_loss: float
    final_loss: float
    stopped_reason: str
    skipped_steps: int = 0
    images: int = 0
    replay_images: int = 0
    last_terms: dict = field(default_factory=dict)


@runtime_checkable
class FineTuneHooks(Protocol):
    """Callbacks a FineTuner calls; IDER adds its loss terms through ``on_batch_loss``.

    A hook may also define ``on_batch_prepare(batch)``: called with each preprocessed batch
    before its step, in the batch-loading thread where the tuner prepares batches ahead
    (:attr:`FineTuner.frozen_layers`), so it must not touch the student model; the LwF teacher
    computes its outputs there.
    """

    def on_round_start(self, tuner: FineTuner) -> None:
        """Called once the model, criterion and device are set, before the optimiser exists."""

    def on_batch_loss(self, batch: dict, preds: dict, loss_items: dict) -> torch.Tensor | None:
        """Return an extra loss for this batch (criterion scale: summed over images), or None.

        ``preds`` is the head's training output: ``{"boxes", "scores", "feats"}``, or for an
        end-to-end head (YOLO26, YOLOv10) ``{"one2many": {...}, "one2one": {...}}``
        (:func:`edgecl.continual.yolo_train.one_to_many` gives the first branch either way).
        """

    def on_round_end(self, result: FineTuneResult) -> None:
        """Called with the round's result (only after ``on_round_start`` was)."""


def settings_problem(model, freeze_layers: int, ider_enabled: bool,
                     what: str = "this model", imgsz: int | None = None) -> str | None:
    """Why a round cannot fine-tune ``model`` with these learner settings, or None.

    Args:
        model: the DetectionModel a round starts from.
        freeze_layers: layers the round keeps fixed (``learner.freeze_layers``; 0 for a first
            round, which never freezes).
        ider_enabled: ``ider.enabled``: IDER needs a one-to-many head.
        what: how the message names the model (a version, a file).
        imgsz: ``learner.imgsz``, checked against the model's largest stride (64 for a P6
            model: a size that is not a multiple of it fails in the neck's concatenation).

    Returns:
        One line naming the setting, the model and what it takes; None when they fit.
    """
    if ider_enabled and yolo_train.is_end_to_end(model):
        return (f"IDER (ider.enabled) needs a one-to-many YOLO head (YOLOv8, YOLO11, YOLO12); "
                f"{what} has an end-to-end head (YOLO26, YOLOv10): set ider.enabled: false")
    layers = len(model.model)
    if not 0 <= freeze_layers < layers:
        return (f"learner.freeze_layers={freeze_layers} must be in 0..{layers - 1} for {what} "
                f"({layers} layers; the last is the detection head)")
    strides = getattr(model, "stride", None)  # a tensor, e.g. [8, 16, 32, 64]
    stride = max(32, int(strides.max())) if strides is not None else 32
    if imgsz is not None and imgsz % stride:
        below, above = imgsz // stride * stride, (imgsz // stride + 1) * stride
        sizes = f"{below} or {above}" if below >= 64 else str(above)
        return (f"learner.imgsz={imgsz} is not a multiple of {stride}, the largest stride of "
                f"{what} (a P6 model): set learner.imgsz to {sizes}")
    return None


def resolve_device(device: str):
    """Turn a device string into a torch device (``auto`` -> cuda when available, else cpu).

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:0`` ...

    Returns:
        ``torch.device``.

    Raises:
        ConfigError: a CUDA device that this machine does not have.
    """
    import torch

    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= count:
            raise ConfigError(f"learner.device={device}: this machine has "
                              f"{count or 'no'} CUDA device{'s' if count != 1 else ''} that torch "
                              f"can use (learner.device=auto picks what there is)")
    return chosen


def native_bf16(device) -> bool:
    """Whether a torch device computes bfloat16 natively (not emulated in float32).

    Args:
        device: ``torch.device``.

    Returns:
        True for a CUDA GPU of compute capability 8.0 or more (Ampere and later, Jetson Orin;
        torch's ``is_bf16_supported`` also says True where bf16 is only emulated) and for an
        x86 CPU with AVX-512 BF16 or AMX instructions (oneDNN's own check also accepts any
        AVX-512 CPU, where bf16 is converted in software).
    """
    import torch

    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None)
                  for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        try:
            return any(bool(check()) for check in checks if check is not None)
        except RuntimeError:  # a build without the checks
            return False
    return False


def resolve_precision(precision: str, device) -> str:
    """The arithmetic a round's forward passes use.

    Args:
        precision: ``learner.precision``: ``auto``, ``fp32`` or ``bf16``.
        device: the ``torch.device`` the round trains on.

    Returns:
        ``"bf16"`` or ``"fp32"``; ``auto`` is bf16 where :func:`native_bf16` holds.

    Raises:
        ConfigError: an unknown value.
    """
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision in ("fp32", "bf16"):
        if precision == "bf16" and not native_bf16(device):
            LOG.warning("learner.precision=bf16: this %s does not compute bfloat16 natively, "
                        "so rounds may be slower than in float32 (learner.precision=auto "
                        "picks float32 here)", "CPU" if device.type == "cpu" else "device")
        return precision
    raise ConfigError(f"learner.precision={precision!r}: use auto, fp32 or bf16")


def training_memory_format(device, precision: str):
    """The memory layout a round keeps its model and batches in.

    Args:
        device: the ``torch.device`` the round trains on.
        precision: the round's arithmetic, ``"bf16"`` or ``"fp32"`` (:func:`resolve_precision`).

    Returns:
        ``torch.channels_last`` on a CPU (oneDNN's convolutions run NHWC natively) and on a GPU
        in bfloat16 (tensor-core kernels want NHWC); ``torch.contiguous_format`` otherwise (a
        GPU in float32, where NHWC can be slower).
    """
    import torch

    if device.type == "cpu" or precision == "bf16":
        return torch.channels_last
    return torch.contiguous_format


def apply_low_priority(cfg: LearnerConfig) -> None:
    """Make the calling (learner) process polite: bounded threads, lower CPU priority.

    Sets torch intra-op threads and OpenCV threads to ``cfg.torch_threads`` and raises the
    process niceness to ``cfg.nice`` (idempotent: never lowers it, never adds twice).

    Args:
        cfg: the ``learner`` config section.
    """
    import cv2
    import torch

    threads = max(1, int(cfg.torch_threads))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    current = os.nice(0)
    if cfg.nice > current:
        os.nice(cfg.nice - current)


def _batches(loader, epochs: int) -> Iterator[dict]:
    """The loader's batches, ``epochs`` times over.

    Raises:
        LabelError: an image that could be read when the round began cannot be now (replaced,
            deleted or damaged meanwhile; ultralytics says "Image Not Found" for each).
    """
    for _ in range(max(0, epochs)):
        try:
            yield from loader
        except FileNotFoundError as exc:
            text = str(exc)
            if not text.startswith(IMAGE_NOT_FOUND):
                raise
            raise LabelError(f"training image {text[len(IMAGE_NOT_FOUND):].strip()} could not "
                             f"be read during the round (deleted, replaced or damaged after it "
                             f"began); the round stops, and 'edgecl memory verify' sets such "
                             f"samples aside") from None


class FineTuner:
    """Fine-tunes a DetectionModel in place on new + replayed images.

    Args:
        model: ultralytics DetectionModel (trained in place).
        cfg: the ``learner`` config section (batch, lr, imgsz, replay_fraction).
        ider_cfg: the ``ider`` section; when enabled an :class:`IderHook` is added and the
            prior adapter attached (off: plain YOLO training, no adapter).
        prev_model: previous model version for IDER's distillation (not modified).
        hooks: extra :class:`FineTuneHooks`.
        progress: optional :data:`ProgressCallback`, called at most every
            :data:`PROGRESS_EVERY_S` while training and once when it ends (a fault in it is
            logged once and never stops training).

    Attributes:
        model, criterion, hyp, device: set during :meth:`run` (hooks may read them).
        frozen: the layers :meth:`run` keeps fixed (``model.model[:freeze_layers]``).
        precision: ``"bf16"`` or ``"fp32"``, set during :meth:`run` (:func:`resolve_precision`).
        memory_format: the layout of the model and batches during :meth:`run`
            (:func:`training_memory_format`); the model ends the round in the default layout.
        frozen_layers: on a CPU with frozen layers, their copy that computes each batch's
            frozen outputs in the batch-loading thread (:class:`~edgecl.continual.yolo_train.
            FrozenLayers`), so that a step runs the model from its first trained layer; None
            elsewhere (a GPU steps through whole forward passes).
    """

    def __init__(self, model, cfg: LearnerConfig, ider_cfg: IderConfig, *, prev_model=None,
                 hooks: Sequence[FineTuneHooks] | None = None,
                 progress: ProgressCallback | None = None):
        self.model = model
        self.progress = progress
        self.cfg = cfg
        self.ider_cfg = ider_cfg
        self.prev_model = prev_model
        self.hooks: list[FineTuneHooks] = list(hooks or [])
        if ider_cfg.enabled:
            from edgecl.calibration.ider import IderHook

            self.hooks.append(IderHook(ider_cfg, prev_model))
        self.criterion = None
        self.hyp = None
        self.device = None
        self.frozen: list = []
        self.precision = "fp32"
        self.memory_format = None
        self.frozen_layers: yolo_train.FrozenLayers | None = None

    def autocast(self):
        """A context in which forward passes run at the round's precision.

        Returns:
            ``torch.autocast`` in bfloat16 on the round's device when :attr:`precision` is
            bf16, else a context that changes nothing. Outputs made inside it may be bfloat16:
            pass them through :func:`~edgecl.continual.yolo_train.float32_outputs` before a
            loss.
        """
        import contextlib

        import torch

        if self.precision != "bf16" or self.device is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare_batch(self, batch: dict, replay_set: set[str]) -> dict:
        """Make a collated batch ready for a step: on the device, images float in 0..1 in the
        round's layout, ``is_replay`` flags; the frozen layers' outputs
        (``yolo_train.FROZEN_KEY``) where :attr:`frozen_layers` is set; then each hook's
        ``on_batch_prepare``.

        Args:
            batch: a batch from the loader (changed in place).
            replay_set: resolved replayed paths (:func:`yolo_train.resolve_files`).

        Returns:
            The batch, marked as prepared.
        """
        import torch

        batch = yolo_train.preprocess_batch(batch, self.device)
        batch["img"] = batch["img"].contiguous(memory_format=self.memory_format)
        batch["is_replay"] = torch.tensor(yolo_train.replay_mask(batch["im_file"], replay_set),
                                          dtype=torch.bool, device=self.device)
        if self.frozen_layers is not None:
            with self.autocast():
                batch[yolo_train.FROZEN_KEY] = self.frozen_layers(batch["img"])
        for hook in self.hooks:
            prepare = getattr(hook, "on_batch_prepare", None)
            if prepare is not None:
                prepare(batch)
        batch[PREPARED_KEY] = True
        return batch

    def forward(self, batch: dict):
        """The student's training forward pass of a prepared batch, at the round's precision:
        from its first trained layer when the batch carries the frozen layers' outputs.

        Returns:
            The head's raw training outputs (may be bfloat16).
        """
        with self.autocast():
            frozen = batch.get(yolo_train.FROZEN_KEY)
            if frozen is None:
                return self.model(batch["img"])
            out, _ = yolo_train.run_layers(self.model.model[len(frozen[1]):], self.model.save,
                                           *frozen)
            return out

    def run(self, train_images: list[Path], replay_images: list[Path], *, budget_s: float,
            max_steps: int, epochs: int, device: str, freeze_layers: int = 0) -> FineTuneResult:
        """Train until the budget, the step limit or the epochs run out, whichever first.

        Args:
            train_images: new images (labels under the matching ``labels/`` folder).
            replay_images: replayed images from the memory.
            budget_s: wall-clock budget in seconds for the whole round.
            max_steps: maximum optimiser steps.
            epochs: maximum passes over the data (over the new images when
                ``cfg.replay_fraction`` > 0).
            device: ``auto``, ``cpu`` or ``cuda[:n]``.
            freeze_layers: keep the first N layers of ``model.model`` fixed (no gradient,
                BatchNorm statistics frozen), as ultralytics' ``freeze=N``; for later rounds of
                an already trained model (YOLO11n: 0-10 backbone, 11-22 neck, 23 head).
                0 trains every layer.

        Returns:
            The round's :class:`FineTuneResult`; the model is left in eval mode.

        Raises:
            LabelError: no usable image, or a label names a class the model lacks.
            ConfigError: IDER is on for an end-to-end (one-to-one) head, or ``freeze_layers``
                would leave the detection head (or more) frozen.
        """
        start = time.monotonic()
        replay_set = yolo_train.resolve_files(replay_images)
        new_files = [p for p in train_images if str(Path(p).resolve()) not in replay_set]
        requested = [*new_files, *replay_images]
        if not requested:
            seconds = time.monotonic() - start
            return self._finish(FineTuneResult(0, seconds, float("nan"), float("nan"), "no_data"),
                                started=False)
        self._prepare(device, freeze_layers)
        started: list = []  # hooks whose on_round_start was called
        try:
            result = self._train(requested, replay_set, start, budget_s=budget_s,
                                 max_steps=max_steps, epochs=epochs, started=started)
        except BaseException:
            self._abandon(started, time.monotonic() - start)
            raise
        return self._finish(result, started=True)

    def _train(self, requested: list, replay_set: set[str], start: float, *, budget_s: float,
               max_steps: int, epochs: int, started: list) -> FineTuneResult:
        """The prepared round's data, hooks, steps and BatchNorm re-estimation (see
        :meth:`run`); each hook is appended to ``started`` once its ``on_round_start`` ran."""
        dataset = yolo_train.build_dataset(requested, self.model.names, imgsz=self.cfg.imgsz,
                                           augment=True, hyp=self.hyp, batch=self.cfg.batch)
        dropped = yolo_train.check_dropped_images(requested, dataset, self.model.model[-1].nc)
        if dropped:
            LOG.warning("fine-tune: %d image(s) left out by ultralytics' check (first: %s)",
                        len(dropped), yolo_train.dropped_reason(dataset) or dropped[0])
        loader = yolo_train.build_loader(dataset, batch=self.cfg.batch, replay_files=replay_set,
                                         replay_fraction=self.cfg.replay_fraction,
                                         device=str(self.device))
        for hook in self.hooks:
            hook.on_round_start(self)
            started.append(hook)
        optimizer = self._optimizer()
        # one pass over the images at most: the same images again add nothing to an average
        # (50 batches over a 37-image memory took 75 s past a 60 s budget)
        recal_batches = min(max(0, int(self.cfg.bn_recalibration_batches)), max(1, len(loader)))
        min_images = min(int(self.cfg.batch), len(dataset))
        loop = _Loop(self, optimizer, replay_set, recal_batches, min_images)
        total_steps = min(int(max_steps), max(0, int(epochs)) * len(loader))
        batches = _batches(loader, epochs)
        if self.frozen_layers is not None:  # prepared in the loading thread, ahead of the step
            batches = (self.prepare_batch(batch, replay_set) for batch in batches)
        try:
            deadline_s = start + budget_s if math.isfinite(budget_s) else None
            with yolo_train.PrefetchedBatches(batches, deadline_s=deadline_s) as batches:
                reason = loop.run(iter(batches), start, budget_s, max_steps,
                                  total_steps=total_steps)
            shortfall = recal_batches - loop.bn_averaged
            if loop.losses and shortfall > 0 and reason != "nan_loss":
                elapsed_s = time.monotonic() - start
                batch_s = RECAL_COST_PER_BATCH * loop.step_s  # the steps' own time, not set-up
                left = (int((budget_s - elapsed_s) / batch_s)
                        if batch_s > 0 and math.isfinite(budget_s) else shortfall)
                yolo_train.recalibrate_batchnorm(
                    self.model, loader, max(1, min(shortfall, left)), self.device,
                    frozen=self.frozen, min_images=min_images, autocast=self.autocast,
                    memory_format=self.memory_format, reset=loop.bn_averaged == 0)
        finally:
            loop.stop_averaging()
        n_replay = sum(yolo_train.replay_mask(dataset.im_files, replay_set))
        return loop.result(reason, time.monotonic() - start, len(dataset), n_replay)

    def _abandon(self, started: list, seconds: float) -> None:
        """Leave the model as a finished round leaves it after the round raised (a hook's
        fault, an unreadable batch, Ctrl-C): eval mode, the default memory layout, the frozen
        layers' copy released, and each started hook's ``on_round_end`` called with
        ``stopped_reason="error"`` (the LwF hook's forward hooks leave the student). A hook
        failing there is logged; the round's own exception is the one raised."""
        import torch

        self.model.eval()
        self.frozen_layers = None
        self.model.to(memory_format=torch.contiguous_format)
        result = FineTuneResult(0, seconds, float("nan"), float("nan"), "error")
        for hook in started:
            try:
                hook.on_round_end(result)
            except Exception as exc:  # noqa: BLE001 - the round's own exception goes on
                LOG.warning("fine-tune: %s's on_round_end failed after the round failed "
                            "(%s: %s)", type(hook).__name__, type(exc).__name__, exc)

    def _prepare(self, device: str, freeze_layers: int) -> None:
        problem = settings_problem(self.model, int(freeze_layers), self.ider_cfg.enabled,
                                   imgsz=int(self.cfg.imgsz))
        if problem:
            raise ConfigError(problem)
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.cfg.precision, self.device)
        self.memory_format = training_memory_format(self.device, self.precision)
        self.hyp = yolo_train.training_hyp(self.cfg.imgsz, self.cfg.lr)
        self.model.to(self.device).float().to(memory_format=self.memory_format)
        self.model.args = self.hyp  # v8DetectionLoss reads box/cls/dfl gains here
        self.frozen = list(self.model.model[:int(freeze_layers)])
        frozen_params = {id(p) for layer in self.frozen for p in layer.parameters()}
        for name, p in self.model.named_parameters():
            # ultralytics keeps the DFL projection frozen
            p.requires_grad_(".dfl" not in name and id(p) not in frozen_params)
        self.criterion = yolo_train.make_criterion(self.model)
        self.frozen_layers = (yolo_train.FrozenLayers(self.model, len(self.frozen), self.memory_format)
                              if self.frozen and self.device.type == "cpu" else None)

    def _optimizer(self):
        """AdamW with ultralytics' parameter groups (no weight decay on biases and norms).

        PyTorch's fused AdamW kernel is used where the device has one (CPU and CUDA): the same
        update rule in one pass over all tensors instead of one small kernel per tensor. On
        a 2-core CPU the optimiser step of a frozen-backbone YOLO11n round (``edgecl bench
        learn``, 160 px, batch 8) fell from 16 ms to 5 ms; elsewhere the per-tensor form runs.
        """
        import torch
        from torch import nn

        decay, no_decay = [], []
        for module in self.model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
                (no_decay if name == "bias" or is_norm else decay).append(p)
        groups = [{"params": decay, "weight_decay": float(self.hyp.weight_decay)},
                  {"params": no_decay, "weight_decay": 0.0}]
        kwargs = {"lr": self.cfg.lr, "betas": (0.9, 0.999)}
        if self.device is not None and self.device.type in FUSED_OPTIMIZER_DEVICES:
            try:
                return torch.optim.AdamW(groups, fused=True, **kwargs)
            except (RuntimeError, TypeError, ValueError) as exc:  # a build without the kernel
                LOG.debug("fused AdamW unavailable (%s); using the per-tensor form", exc)
        return torch.optim.AdamW(groups, **kwargs)

    def _finish(self, result: FineTuneResult, *, started: bool) -> FineTuneResult:
        import torch

        self.model.eval()
        self.frozen_layers = None
        if started:
            self.model.to(memory_format=torch.contiguous_format)
        for hook in self.hooks if started else ():
            hook.on_round_end(result)
        LOG.info("fine-tune: %d steps in %.1f s (%s), loss %.4f -> stop: %s", result.steps,
                 result.seconds, "bf16 autocast" if self.precision == "bf16" else "float32",
                 result.final_loss, result.stopped_reason)
        return result


class _Loop:
    """The step loop of one round (state: losses, skip streak, weight snapshot)."""

    def __init__(self, tuner: FineTuner, optimizer, replay_set: set[str], recal_batches: int,
                 min_images: int = 1):
        from torch import nn

        self.tuner = tuner
        self.recal_batches = recal_batches
        self.min_images = min_images
        self.optimizer = optimizer
        self.replay_set = replay_set
        self.losses: list[float] = []
        self.skipped = 0
        self.step_s = 0.0  # mean time of a step, measured from the first one (set-up left out)
        self.streak = 0
        self.last_terms: dict = {}
        # buffers a step can change (BatchNorm statistics outside the frozen layers, which stay
        # in eval mode), saved before each step to be restored when it is not finite
        frozen_ids = {id(b) for layer in tuner.frozen for b in layer.buffers()}
        self.trained_buffers = [(k, v) for k, v in tuner.model.named_buffers()
                                if id(v) not in frozen_ids]
        # BatchNorm layers whose statistics the round's last batches re-estimate
        frozen_modules = {id(m) for layer in tuner.frozen for m in layer.modules()}
        self.norms = [m for m in tuner.model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      and id(m) not in frozen_modules]
        self.momenta = [m.momentum for m in self.norms]
        self.averaging = False
        self.bn_averaged = 0  # training batches averaged into the BatchNorm statistics
        # INVARIANT: the model never ends a round with non-finite weights; this snapshot
        # restores it if anything slipped through the per-step checks.
        self.snapshot = copy.deepcopy(tuner.model.state_dict())

    def run(self, batches: Iterator[dict], start: float, budget_s: float, max_steps: int,
            total_steps: int = 0) -> str:
        """Step through batches until a limit is hit; return the stop reason.

        ``total_steps``: the most steps the step and epoch bounds allow (for the progress
        callback; 0: ``max_steps``).
        """
        yolo_train.train_mode(self.tuner.model, self.tuner.frozen)
        total = int(total_steps) or int(max_steps)
        try:
            return self._steps(batches, start, budget_s, max_steps, total)
        finally:
            self._report(total, time.monotonic() - start, budget_s)

    def _steps_left(self, elapsed_s: float, budget_s: float, total: int) -> float:
        """Steps this round will still take, as far as its bounds and its step time tell."""
        left = float(total - len(self.losses))
        if self.step_s > 0 and math.isfinite(budget_s):
            left = min(left, (budget_s - elapsed_s) / self.step_s - 1.0)
        return left

    def start_averaging(self) -> None:
        """Reset the trained layers' BatchNorm statistics; from now on each training batch adds
        to their exact average (``momentum=None``), as :func:`yolo_train.recalibrate_batchnorm`
        computes it after a round, without its extra forward passes."""
        for m in self.norms:
            m.reset_running_stats()
            m.momentum = None
        self.averaging = True
        self.bn_averaged = 0

    def _steer_averaging(self, steps_left: float) -> None:
        """Start averaging when the round's last ``recal_batches`` steps begin; give up an
        average that would cover more than twice that many batches (the first steps' times,
        set-up included, made the round look shorter than it is) until they begin again."""
        if (not self.averaging and steps_left <= self.recal_batches
                and len(self.losses) >= IN_LOOP_AVERAGE_AFTER * self.recal_batches):
            self.start_averaging()
        elif self.averaging and self.bn_averaged + steps_left > 2 * self.recal_batches:
            self.stop_averaging()  # the average so far is where the running statistics go on

    def stop_averaging(self) -> None:
        """Give the BatchNorm layers their momentum back (idempotent)."""
        for m, momentum in zip(self.norms, self.momenta):
            m.momentum = momentum
        self.averaging = False

    def _report(self, total: int, elapsed_s: float, budget_s: float) -> None:
        """Call the tuner's progress callback; a fault there is logged once, then ignored."""
        progress = self.tuner.progress
        if progress is None:
            return
        try:
            progress(len(self.losses), total, elapsed_s, budget_s)
        except Exception as exc:  # noqa: BLE001 - progress reporting never stops training
            self.tuner.progress = None
            LOG.warning("fine-tune: progress not reported any more (%s: %s)",
                        type(exc).__name__, exc)

    def _steps(self, batches: Iterator[dict], start: float, budget_s: float, max_steps: int,
               total: int) -> str:
        next_log_s = PROGRESS_LOG_S
        next_report_s = 0.0
        steps_start = None
        for batch in batches:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= next_report_s:
                next_report_s = elapsed + PROGRESS_EVERY_S
                self._report(total, elapsed, budget_s)
            if len(self.losses) >= max_steps:  # done: whatever time is left
                return "max_steps"
            # a step's time from the steps alone: the round's set-up before the first one (29 s
            # of a 90 s budget on a loaded device) counted as step time stopped it after 1 step
            steps_start = now if steps_start is None else steps_start
            # keep time for one more step and the BatchNorm re-estimation after the loop (of the
            # batches the last steps have not averaged yet)
            shortfall = max(0, self.recal_batches - self.bn_averaged)
            needed_s = self.step_s * (1.0 + RECAL_COST_PER_BATCH * shortfall)
            if elapsed >= budget_s or (self.losses and elapsed + needed_s > budget_s):
                return "budget"
            if self.recal_batches:
                self._steer_averaging(self._steps_left(elapsed, budget_s, total))
            if elapsed >= next_log_s and self.losses:
                next_log_s = elapsed + PROGRESS_LOG_S
                budget = f" of {budget_s:.0f} s" if budget_s < NO_TIME_LIMIT_S else ""
                bound = f" of at most {total}" if total < NO_STEP_LIMIT else ""
                LOG.info("fine-tune: step %d%s, %.0f s%s, loss %.4f",
                         len(self.losses), bound, elapsed, budget, self.losses[-1])
            loss = self.step(batch)
            self.step_s = (time.monotonic() - steps_start) / (len(self.losses) + self.skipped + 1)
            if loss is None:
                self.skipped += 1
                self.streak += 1
                if self.streak >= MAX_NONFINITE_IN_A_ROW:
                    return "nan_loss"
            else:
                self.streak = 0
                self.losses.append(loss)
        if len(self.losses) >= max_steps:
            return "max_steps"
        # the batches ended: all epochs drawn, or the time ran out while a read was pending
        return "budget" if time.monotonic() - start >= budget_s else "epochs"

    def step(self, batch: dict) -> float | None:
        """One optimiser step; ``None`` (and nothing changed) when it is not finite."""
        import torch

        tuner, model = self.tuner, self.tuner.model
        if not model.training or any(layer.training for layer in tuner.frozen):
            yolo_train.train_mode(model, tuner.frozen)  # a hook switched modes (MIR's scorer)
        buffers = {k: v.detach().clone() for k, v in self.trained_buffers}
        if not batch.get(PREPARED_KEY):
            batch = tuner.prepare_batch(batch, self.replay_set)
        preds = yolo_train.float32_outputs(tuner.forward(batch))
        loss_vec, items = tuner.criterion(preds, batch)
        loss = loss_vec.sum()
        terms = {k: float(v) for k, v in items.items()}
        for hook in tuner.hooks:
            extra = hook.on_batch_loss(batch, preds, items)
            if extra is not None:
                loss = loss + extra
                terms.update(getattr(hook, "last_terms", {}))
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), yolo_train.GRAD_CLIP_NORM)
            if torch.isfinite(norm):
                self.optimizer.step()
                self.last_terms = terms
                if self.averaging and batch["img"].shape[0] < self.min_images:
                    # an epoch's short last batch: too few images to estimate statistics from
                    _restore_buffers(model, buffers)
                elif self.averaging:
                    self.bn_averaged += 1
                return float(loss.detach()) / batch["img"].shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        _restore_buffers(model, buffers)
        LOG.warning("fine-tune: non-finite loss or gradient, step skipped")
        return None

    def result(self, reason: str, seconds: float, images: int, replay_images: int) -> FineTuneResult:
        """Build the round's result (restoring the snapshot if weights went non-finite)."""
        import torch

        model = self.tuner.model
        if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
            model.load_state_dict(self.snapshot)
            reason = "nan_loss"
        mean = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        final = self.losses[-1] if self.losses else float("nan")
        return FineTuneResult(len(self.losses), seconds, mean, final, reason, self.skipped,
                              images, replay_images, dict(self.last_terms))


def _restore_buffers(model, buffers: dict) -> None:
    for name, value in model.named_buffers():
        if name in buffers:
            value.copy_(buffers[name])
