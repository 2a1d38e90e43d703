"""Class merges in the replay memory: relabel the samples of a class merged into another.

``edgecl classes merge OLD INTO`` records the merge in the class registry, then relabels the
stored samples one by one (each atomically). A stop or a full disk between the two leaves
samples that still hold the merged class: :func:`finish_merges` relabels them, and a learning
round calls it before it reads the memory (before, such a round trained the retired class on
them, and nothing said the merge was unfinished).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

log = logging.getLogger(__name__)


MERGE_PASSES = 5
"""Most passes :func:`relabel_class` makes over the memory: a sample an operator answered or
corrected while a pass ran (stored under the merged id, or relabelled under a new id before the
pass reached it) is found by the next one."""


def relabel_class(memory, old_id: int, into_id: int,
                  names: Mapping[int, str] | None = None) -> list[int]:
    """Relabel every stored sample holding ``old_id`` as ``into_id`` (a box given under both
    names is kept once); each sample keeps its image, origin and held-out slot.

    Each sample is renumbered inside the memory's write transaction
    (:meth:`~edgecl.continual.memory.ReplayMemory.remap_classes`): an answer corrected or
    withdrawn meanwhile by another process is seen there, not lost; before, the merge stopped
    half-way ("no sample 452") and the correction was refused. Passes repeat while samples
    still hold ``old_id`` (at most :data:`MERGE_PASSES`).

    Args:
        memory: the replay memory.
        old_id: the merged class.
        into_id: the class it was merged into.
        names: the class registry's names, stored in the memory first (a class the registry
            gained without the memory, from a fleet round: the memory refused its id, and the
            merge stopped half-way with every later round failing on it).

    Returns:
        The samples' new ids.

    Raises:
        StorageError: the memory cannot be written (the samples relabelled so far stay so;
            running the merge again relabels the rest).
    """
    if names:
        memory.sync_class_names(dict(names))
    new_ids = []
    for _ in range(MERGE_PASSES):
        holding = [record.id for record in memory.records() if old_id in record.classes]
        if not holding:
            break
        for sample_id in holding:
            new_id = memory.remap_classes(sample_id, {old_id: into_id})
            if new_id is not None and new_id != sample_id:
                new_ids.append(new_id)
    return new_ids


def unfinished_merges(memory, merged: Mapping[int, int]) -> dict[int, int]:
    """Merged class id -> how many stored samples still hold it.

    Args:
        memory: the replay memory.
        merged: merged class id -> the id it was merged into
            (:meth:`edgecl.models.classes.ClassRegistry.merged`).
    """
    left: dict[int, int] = {}
    for record in memory.records():
        for cid in set(int(c) for c in record.classes) & set(merged):
            left[cid] = left.get(cid, 0) + 1
    return left


def finish_merges(memory, merged: Mapping[int, int], names: Mapping[int, str]) -> dict[int, int]:
    """Relabel the samples that still hold a merged class (a merge cut short), each said in
    one warning.

    Args:
        memory: the replay memory (writable).
        merged: merged class id -> the id it was merged into.
        names: class id -> name (the class registry's: stored in the memory first, see
            :func:`relabel_class`), for the warning too.

    Returns:
        Merged class id -> samples relabelled now.

    Raises:
        StorageError: the memory cannot be written (those relabelled so far stay so).
    """
    done = {}
    for old_id in sorted(unfinished_merges(memory, merged)):
        into_id = merged[old_id]
        done[old_id] = len(relabel_class(memory, old_id, into_id, names))
        log.warning("class merge of %r into %r was cut short: %d sample(s) still held %r and "
                    "are relabelled now", names.get(old_id, old_id), names.get(into_id, into_id),
                    done[old_id], names.get(old_id, old_id))
    return done


def merge_detections(detections, merged: Mapping[int, int], iou: float):
    """Detections of merged classes given as the classes they were merged into, then class-wise
    NMS again (torchvision's ``batched_nms``): a model trained before ``edgecl classes merge
    truck car`` still scores trucks in its ``truck`` slot, and its car and truck boxes of one
    vehicle would otherwise count twice.

    Args:
        detections: :class:`edgecl.frames.Detections` of one image.
        merged: merged class id -> the id it means (:meth:`ClassRegistry.merged`).
        iou: NMS IoU threshold (the model's ``model.iou``).

    Returns:
        The same object where no detection is of a merged class; else new ``Detections``,
        highest score first.
    """
    from edgecl.frames import Detections

    if not merged or not len(detections):
        return detections
    classes = np.asarray(detections.classes, np.int64)
    mapped = classes.copy()
    for old, into in merged.items():
        mapped[classes == int(old)] = int(into)
    if np.array_equal(mapped, classes):
        return detections
    import torch
    from torchvision.ops import batched_nms

    from edgecl.models.base import single_torch_thread

    with single_torch_thread():  # a few boxes: not worth a thread pool's wake-up
        keep = batched_nms(torch.from_numpy(np.asarray(detections.boxes_xyxy, np.float32)),
                           torch.from_numpy(np.asarray(detections.scores, np.float32)),
                           torch.from_numpy(mapped), float(iou)).numpy()
    return Detections(boxes_xyxy=np.asarray(detections.boxes_xyxy, np.float32)[keep],
                      scores=np.asarray(detections.scores, np.float32)[keep],
                      classes=mapped[keep])


class MergedClassesDetector:
    """A detector (anything with ``infer``) whose detections go through
    :func:`merge_detections`: what a round evaluates, calibrates, replays and pseudo-labels
    with after a merge. Before, a version's D-ECE after ``classes merge truck car`` was
    computed from its ``truck`` slot's detections alone, each a false positive against boxes
    now labelled ``car``.

    Args:
        detector: the wrapped detector (its other attributes are passed through).
        merged: merged class id -> the id it means.
        iou: NMS IoU threshold.
    """

    def __init__(self, detector, merged: Mapping[int, int], iou: float):
        self.detector, self.merged, self.iou = detector, dict(merged), float(iou)

    def infer(self, images: list) -> list:
        """The wrapped detector's detections of each image, merged classes mapped.

        Args:
            images: BGR uint8 images (H, W, 3).

        Returns:
            One :class:`edgecl.frames.Detections` per image.
        """
        return [merge_detections(d, self.merged, self.iou) for d in self.detector.infer(images)]

    def __getattr__(self, name):
        return getattr(self.detector, name)
