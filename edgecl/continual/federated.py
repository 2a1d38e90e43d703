"""Federated averaging of detectors whose heads know different classes (pure numpy).

A fleet's devices each keep their own class registry, so the same class may sit on a different
output row on each device, and a class taught on one device is unknown to the others. The
server therefore averages *by name*:

* every tensor that is not a class-row tensor (backbone, neck, box branch, BatchNorm
  statistics) is averaged over the updates that carry it with the same shape, weighted by
  their sample counts (FedAvg, McMahan et al. 2017, "Communication-Efficient Learning of Deep
  Networks from Decentralized Data", Algorithm 1);
* a class-row tensor (the last 1x1 conv of each level of the YOLO class branch, ``cv3[i][-1]``:
  one output row per class) is rebuilt row by row in the fleet's class order: the row of class
  ``c`` is the weighted mean over the updates whose class list contains ``c`` only, so a device
  that never saw a class contributes nothing to that class's outputs.

Before averaging, :func:`forgetting_gate` screens the updates: an update whose reported
per-class forgetting exceeds the bound is dropped (or down-weighted) and the decision carries a
one-line reason for the server's log.

Everything here is numpy on plain dicts (``key -> ndarray``), no torch, no threads, no I/O:
``edgecl.fleet`` converts models to and from these dicts and runs the network side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecl.continual.gate import beyond_bound

# The last conv of each class branch level: ``model.23.cv3.0.2.weight`` (nc, C, 1, 1) and
# ``.bias`` (nc,); end-to-end heads add ``one2one_cv3``. Intermediate convs have ``.conv.``.
CLASS_ROW_PATTERN = re.compile(r"(^|\.)(one2one_)?cv3\.\d+\.\d+\.(weight|bias)$")

FORGETTING_ACTIONS = ("drop", "downweight")

UNTAUGHT_CLASS_BIAS = -9.0
"""The bias of a class row that no device has taught (a class named, but no box of it seen):
with zero weights its score is sigmoid(-9) = 1.2e-4 at every anchor, silent at any threshold,
and a device that holds boxes of it learns it as a new class row (ultralytics' class prior
``log(5 / nc / (640 / stride) ** 2)`` is -8.8 for 80 classes at stride 32)."""


def is_class_row_key(key: str) -> bool:
    """True when a state-dict key names a class-row tensor of a YOLO detection head.

    Args:
        key: state-dict key, e.g. ``model.23.cv3.1.2.bias``.

    Returns:
        Whether the tensor's first axis has one row per class.
    """
    return bool(CLASS_ROW_PATTERN.search(key))


@dataclass
class Update:
    """One device's contribution to a fleet round.

    Attributes:
        device: the device's name (for the log).
        arrays: state-dict key -> array (float); class-row tensors have one row per entry of
            ``names``, in that order.
        names: class names in the order of the update's head rows.
        samples: training samples the update learnt from (its FedAvg weight), >= 0.
        forgetting: class name -> AP50-95 the update lost against the global model it started
            from, on the device's own held-out slice (only classes the device can measure).
        per_class_ap: class name -> AP50-95 of the update on that slice (reported, not used).
        held: the names the device learnt from boxes of (its training samples show them); the
            rows of its other names are not averaged in. ``None`` (a device of an older
            release): every name.
    """

    device: str
    arrays: dict[str, np.ndarray]
    names: list[str]
    samples: int
    forgetting: dict[str, float] = field(default_factory=dict)
    per_class_ap: dict[str, float] = field(default_factory=dict)
    held: frozenset[str] | None = None


@dataclass(frozen=True)
class GateDecision:
    """What the forgetting gate did with one update.

    Attributes:
        device: the device's name.
        factor: multiplier of the update's FedAvg weight: 1 kept, 0 dropped, in between
            down-weighted.
        reason: one line for the server's log (``kept`` or why it was dropped/down-weighted).
    """

    device: str
    factor: float
    reason: str

    @property
    def dropped(self) -> bool:
        """True when the update takes no part in the average."""
        return self.factor <= 0.0


def forgetting_gate(updates: Sequence[Update], max_forgetting: float,
                    action: str = "drop") -> list[GateDecision]:
    """Screen updates by their reported per-class forgetting.

    An update whose worst class lost more than ``max_forgetting`` AP50-95 is dropped
    (``action="drop"``) or its weight is multiplied by ``max_forgetting / worst``
    (``action="downweight"``). A non-finite forgetting value counts as unbounded. Updates with
    no sample are dropped (they carry no information). An update that reports no class's
    forgetting (a device with no held-out slice, or no class with ``gate.min_instances``
    held-out boxes) is kept, and its reason says it was not screened (before, "kept" alone).

    Args:
        updates: the round's updates.
        max_forgetting: bound on any class's AP50-95 loss, > 0 (the local gate's
            ``gate.max_forgetting`` is the natural choice).
        action: ``drop`` or ``downweight``.

    Returns:
        One decision per update, in the same order.

    Raises:
        ValueError: unknown action or a bound that is not > 0.
    """
    if action not in FORGETTING_ACTIONS:
        raise ValueError(f"forgetting action {action!r} is not one of {', '.join(FORGETTING_ACTIONS)}")
    if not max_forgetting > 0:
        raise ValueError(f"max_forgetting must be > 0, got {max_forgetting}")
    decisions = []
    for up in updates:
        if up.samples <= 0:
            decisions.append(GateDecision(up.device, 0.0, f"{up.device} dropped: no training sample"))
            continue
        worst = None
        for name, value in sorted(up.forgetting.items()):
            value = float("inf") if value is None or not math.isfinite(float(value)) else float(value)
            if worst is None or value > worst[1]:
                worst = (name, value)
        if worst is None:  # no class with enough held-out boxes: nothing to screen with
            decisions.append(GateDecision(up.device, 1.0, f"{up.device} kept, not screened: it "
                                                          f"measured no class's forgetting"))
            continue
        if worst[1] <= max_forgetting:
            decisions.append(GateDecision(up.device, 1.0, f"{up.device} kept"))
            continue
        what = (f"class {worst[0]} forgot {beyond_bound(worst[1], max_forgetting)} AP50-95 "
                f"(bound {max_forgetting})")
        if action == "drop" or not math.isfinite(worst[1]):
            decisions.append(GateDecision(up.device, 0.0, f"{up.device} dropped: {what}"))
        else:
            factor = max_forgetting / worst[1]
            decisions.append(GateDecision(up.device, factor,
                                          f"{up.device} down-weighted x{factor:.2f}: {what}"))
    return decisions


def merge_names(base: Sequence[str], more: Iterable[Sequence[str]]) -> list[str]:
    """The fleet's class list: ``base`` in order, then names new to it in order of appearance.

    Args:
        base: the current global class list.
        more: each update's class list.

    Returns:
        The merged list (no duplicates; existing classes keep their row).
    """
    merged = list(base)
    seen = set(merged)
    for names in more:
        for name in names:
            if name not in seen:
                merged.append(name)
                seen.add(name)
    return merged


def align_rows(array: np.ndarray, names_from: Sequence[str], names_to: Sequence[str],
               fill: np.ndarray | None = None) -> np.ndarray:
    """Reorder a class-row tensor from one class order to another, by name.

    Args:
        array: (len(names_from), ...) class rows.
        names_from: the class of each row of ``array``.
        names_to: the wanted class order.
        fill: (len(names_to), ...) rows used for classes ``names_from`` lacks (default zeros).

    Returns:
        A new (len(names_to), ...) array of ``array``'s dtype.

    Raises:
        ValueError: ``array`` or ``fill`` does not have one row per name.
    """
    if array.shape[0] != len(names_from):
        raise ValueError(f"class-row tensor has {array.shape[0]} rows for {len(names_from)} names")
    shape = (len(names_to),) + tuple(array.shape[1:])
    if fill is not None and tuple(fill.shape) != shape:
        raise ValueError(f"fill rows have shape {tuple(fill.shape)}, expected {shape}")
    out = np.array(fill, dtype=array.dtype, copy=True) if fill is not None else np.zeros(shape, array.dtype)
    index = {name: i for i, name in enumerate(names_from)}
    for row, name in enumerate(names_to):
        if name in index:
            out[row] = array[index[name]]
    return out


@dataclass
class Aggregate:
    """Result of one aggregation.

    Attributes:
        arrays: the new global tensors (float32; class rows in ``names`` order).
        names: the fleet's class list after the round.
        weights: device -> normalised FedAvg weight it received (0 when dropped).
        decisions: the forgetting gate's decisions.
        contributors: class name -> devices whose training samples show that class (a device
            of an older release, which does not say, counts for every class it sent); empty
            for a class no sender holds a sample of.
        skipped_keys: key -> devices whose tensor was left out for a shape mismatch.
    """

    arrays: dict[str, np.ndarray]
    names: list[str]
    weights: dict[str, float]
    decisions: list[GateDecision]
    contributors: dict[str, list[str]]
    skipped_keys: dict[str, list[str]]


def fedavg_by_name(updates: Sequence[Update], global_arrays: Mapping[str, np.ndarray],
                   global_names: Sequence[str], *, max_forgetting: float,
                   action: str = "drop", class_row_key=is_class_row_key) -> Aggregate:
    """Forgetting-gated, sample-weighted FedAvg with class rows aligned by name.

    Tensors nobody (after the gate) sent keep their global value; a class row nobody sent keeps
    its global row; a class new to the fleet and sent by one device takes that device's rows;
    one new to the fleet that no sender holds boxes of gets zero weights and the bias
    :data:`UNTAUGHT_CLASS_BIAS` (silent until taught).
    A shared tensor whose shape differs from the global one (a device running another
    architecture) is left out of that key's average and reported in ``skipped_keys``.

    Args:
        updates: the round's updates.
        global_arrays: the global model the round started from (key -> array; class rows in
            ``global_names`` order). May be empty before the first round: every key then comes
            from the updates.
        global_names: the global class list.
        max_forgetting: the forgetting gate's bound (see :func:`forgetting_gate`).
        action: ``drop`` or ``downweight``.
        class_row_key: predicate telling class-row keys apart (default :func:`is_class_row_key`).

    Returns:
        The :class:`Aggregate`; when every update is dropped, ``arrays`` is the global model
        unchanged (with rows for no new class).
    """
    decisions = forgetting_gate(updates, max_forgetting, action)
    kept = [(up, up.samples * d.factor) for up, d in zip(updates, decisions) if not d.dropped]
    total = sum(w for _, w in kept)
    weights = {up.device: 0.0 for up in updates}
    for up, w in kept:
        weights[up.device] = w / total if total > 0 else 0.0
    names = merge_names(global_names, [up.names for up, _ in kept])
    keys = list(global_arrays) + [k for up, _ in kept for k in up.arrays if k not in global_arrays]
    keys = list(dict.fromkeys(keys))
    arrays: dict[str, np.ndarray] = {}
    skipped: dict[str, list[str]] = {}
    # who taught each class: the devices whose samples show it (none where no sample does: a
    # class named only in a dataset's names was credited to every sender)
    contributors = {name: [up.device for up, _ in kept if name in up.names
                           and (up.held is None or name in up.held)]
                    for name in names}
    for key in keys:
        if class_row_key(key):
            arrays[key] = _average_rows(key, kept, global_arrays, global_names, names, skipped)
        else:
            arrays[key] = _average_shared(key, kept, global_arrays, skipped)
    return Aggregate(arrays, names, weights, decisions, contributors, skipped)


def _average_shared(key: str, kept, global_arrays, skipped) -> np.ndarray:
    ref = global_arrays.get(key)
    shape = tuple(ref.shape) if ref is not None else None
    acc, total = None, 0.0
    for up, w in kept:
        arr = up.arrays.get(key)
        if arr is None:
            continue
        if shape is None:
            shape = tuple(arr.shape)
        if tuple(arr.shape) != shape:
            skipped.setdefault(key, []).append(up.device)
            continue
        acc = arr.astype(np.float64) * w if acc is None else acc + arr.astype(np.float64) * w
        total += w
    if acc is None or total <= 0:
        return np.asarray(ref, dtype=np.float32).copy()
    return (acc / total).astype(np.float32)


def _average_rows(key: str, kept, global_arrays, global_names, names, skipped) -> np.ndarray:
    ref = global_arrays.get(key)
    tail = None if ref is None else tuple(ref.shape[1:])
    for up, _ in kept:
        arr = up.arrays.get(key)
        if tail is None and arr is not None:
            tail = tuple(arr.shape[1:])
    acc = np.zeros((len(names),) + (tail or ()), np.float64)
    total = np.zeros(len(names), np.float64)
    named = np.zeros(len(names), bool)  # rows a sender named without holding boxes of them
    row_of = {name: i for i, name in enumerate(names)}
    for up, w in kept:
        arr = up.arrays.get(key)
        if arr is None:
            continue
        if tuple(arr.shape[1:]) != tail or arr.shape[0] != len(up.names):
            skipped.setdefault(key, []).append(up.device)
            continue
        for i, name in enumerate(up.names):
            if up.held is None or name in up.held:
                acc[row_of[name]] += arr[i].astype(np.float64) * w
                total[row_of[name]] += w
            else:
                named[row_of[name]] |= w > 0
    out = np.zeros_like(acc)
    if ref is not None:
        out = align_rows(np.asarray(ref, np.float64), global_names, names, fill=out)
    shape = (-1,) + (1,) * (acc.ndim - 1)
    # a name new to the fleet that no sender holds boxes of: a row nobody taught, silent
    # until a device that holds boxes of it teaches it (before: its senders' untrained rows,
    # random weights on trained features, scored 1.0 at every anchor of every frame)
    new = (np.array([name not in global_names for name in names], dtype=bool) & (total == 0)
           & named)
    out[new] = UNTAUGHT_CLASS_BIAS if key.endswith(".bias") else 0.0
    sent = total > 0
    out[sent] = acc[sent] / total[sent].reshape(shape)
    return out.astype(np.float32)
