"""Which replay-memory images calibrate an INT8 engine: spread over the classes, round-robin.

Static INT8 quantisation (NNCF, onnxruntime, TensorRT) fixes every activation's range from a
few hundred calibration images. Taken in storage order, those are mostly the oldest or the most
frequent class, and the ranges then fit that class; a rare class's activations get clipped.
:func:`spread_over_classes` takes one image of each class in turn instead (ascending class id,
oldest image first within a class), so each class contributes as many images as the budget allows.
Images without boxes (backgrounds) form one more group, visited after the classes.
Held-out images are never used: they judge the INT8 engine (see :mod:`edgecl.continual.int8_gate`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

_BACKGROUND = None  # group key of images without boxes


def spread_over_classes(items: Iterable[tuple[Hashable, Sequence[int]]], limit: int) -> list:
    """Pick up to ``limit`` items round-robin over classes.

    Each round visits the classes in ascending id order (then the group of items without
    classes) and takes from each the first item, in the given order, not yet picked. An item
    with several classes sits in each of their groups and is picked at most once.

    Args:
        items: ``(key, classes)`` pairs in preference order within a class (e.g. ascending
            sample id); ``classes`` are the class ids present in the image.
        limit: most keys to return (``<= 0`` returns none).

    Returns:
        The picked keys, in picking order.

    Example:
        ``[(1, [0]), (2, [0, 1]), (3, [1]), (4, [2]), (5, []), (6, [0])]`` with ``limit=6``
        gives ``[1, 2, 4, 5, 6, 3]``: round 1 takes 1 (class 0), 2 (class 1), 4 (class 2),
        5 (no box); round 2 takes 6 (class 0: 2 is taken already), 3 (class 1).
    """
    groups: dict = {}
    for key, classes in items:
        for cls in sorted({int(c) for c in classes}) or [_BACKGROUND]:
            groups.setdefault(cls, []).append(key)
    order = sorted(c for c in groups if c is not _BACKGROUND)
    if _BACKGROUND in groups:
        order.append(_BACKGROUND)
    cursors = dict.fromkeys(order, 0)
    picked: list = []
    seen: set = set()
    while len(picked) < limit:
        took = False
        for cls in order:
            members, i = groups[cls], cursors[cls]
            while i < len(members) and members[i] in seen:
                i += 1
            cursors[cls] = i + 1 if i < len(members) else i
            if i < len(members):
                picked.append(members[i])
                seen.add(members[i])
                took = True
                if len(picked) >= limit:
                    break
        if not took:
            break
    return picked


def calibration_images(snapshot, limit: int) -> list[Path]:
    """Image files of up to ``limit`` training (not held-out) samples of a memory snapshot,
    spread over classes (see :func:`spread_over_classes`; oldest sample first within a class).

    Args:
        snapshot: a :class:`edgecl.continual.memory.MemorySnapshot` (``records`` and
            ``image_paths``).
        limit: most images (``export.int8_calibration_images``).

    Returns:
        Image paths inside the snapshot, in picking order.
    """
    records = sorted(snapshot.records(held_out=False), key=lambda r: r.id)
    ids = spread_over_classes(((r.id, r.classes) for r in records), limit)
    return list(snapshot.image_paths(ids))
