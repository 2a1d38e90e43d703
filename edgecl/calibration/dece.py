"""Detection expected calibration error (D-ECE) and reliability bins.

Every detection gets a binary outcome: true positive when it is matched one-to-one (greedily, in
descending score order) to a ground-truth box of the same class with IoU >= ``iou_thr``.  The
confidences are split into ``n_bins`` equal-width bins over [0, 1] and

    D-ECE = sum_b (n_b / N) * |precision_b - mean_conf_b|

where ``precision_b`` is the fraction of true positives among the ``n_b`` detections of bin ``b``
(Küppers et al., 2020, confidence-only variant).  Detections below ``min_conf`` are left out;
the usual choice for a low-threshold evaluation is 0.3, because the thousands of near-zero
confidence boxes kept for mAP would otherwise dominate ``N`` and hide miscalibration.

A D-ECE figure means nothing without its protocol (Küppers et al. 2020; Kuzucu et al. 2024):
:func:`protocol` gives the dict to record beside every value (IoU threshold, bins, score
threshold, matching rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edgecl.calibration.matching import MATCHING_RULE, match_detections
from edgecl.frames import Detections

DEFAULT_N_BINS = 15
DEFAULT_IOU_THR = 0.5
DEFAULT_MIN_CONF = 0.3  # score threshold of edgecl's evaluations (see the module docstring)


def protocol(iou_thr: float = DEFAULT_IOU_THR, n_bins: int = DEFAULT_N_BINS,
             min_conf: float = DEFAULT_MIN_CONF) -> dict:
    """The D-ECE protocol to record with every D-ECE value.

    Args:
        iou_thr: IoU a detection needs with a same-class box to be a true positive.
        n_bins: number of equal-width confidence bins over [0, 1].
        min_conf: score threshold: detections below it are left out.

    Returns:
        JSON-ready dict with ``iou_thr``, ``n_bins``, ``binning``, ``min_conf`` and ``matching``.
    """
    return {"iou_thr": float(iou_thr), "n_bins": int(n_bins), "binning": "equal-width over [0, 1]",
            "min_conf": float(min_conf), "matching": MATCHING_RULE}


class ReliabilityBins(NamedTuple):
    """Per-bin calibration statistics.

    Attributes:
        bin_edges: float (n_bins + 1,) edges, 0 .. 1.
        conf_mean: float (n_bins,) mean confidence per bin (NaN for an empty bin).
        precision: float (n_bins,) fraction of true positives per bin (NaN for an empty bin).
        counts: int (n_bins,) number of detections per bin.
    """

    bin_edges: np.ndarray
    conf_mean: np.ndarray
    precision: np.ndarray
    counts: np.ndarray


def bins_from_flags(conf: np.ndarray, is_tp: np.ndarray, n_bins: int = DEFAULT_N_BINS) -> ReliabilityBins:
    """Bin detections by confidence and measure each bin's precision.

    Bin ``b`` holds confidences in ``[edge_b, edge_{b+1})``; a confidence of exactly 1.0 falls
    into the last bin.

    Args:
        conf: float (N,) confidences in 0..1.
        is_tp: bool (N,) whether each detection is a true positive.
        n_bins: number of equal-width bins.

    Returns:
        The :class:`ReliabilityBins`.

    Raises:
        ValueError: when the arrays differ in length or ``n_bins`` < 1.
    """
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    hits = np.asarray(is_tp, dtype=np.float64).reshape(-1)
    if conf.shape != hits.shape:
        raise ValueError(f"{conf.size} confidences but {hits.size} true-positive flags")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_mean = np.bincount(index, weights=conf, minlength=n_bins) / counts
        precision = np.bincount(index, weights=hits, minlength=n_bins) / counts
    return ReliabilityBins(edges, conf_mean, precision, counts.astype(np.int64))


def dece_from_bins(bins: ReliabilityBins) -> float:
    """D-ECE of already-binned detections.

    Args:
        bins: the reliability bins.

    Returns:
        ``sum_b (n_b / N) |precision_b - conf_b|``; NaN when there is no detection.
    """
    counts = np.asarray(bins.counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    filled = counts > 0
    gaps = np.abs(np.asarray(bins.precision)[filled] - np.asarray(bins.conf_mean)[filled])
    return float((counts[filled] / total * gaps).sum())


def merge_bins(all_bins: Sequence[ReliabilityBins]) -> ReliabilityBins:
    """Pool reliability bins of several evaluations (e.g. all tasks of one round).

    Args:
        all_bins: bins with identical edges.

    Returns:
        Bins whose counts are summed and whose means are count-weighted.

    Raises:
        ValueError: when nothing is given or the edges differ.
    """
    if not all_bins:
        raise ValueError("no reliability bins to merge")
    edges = np.asarray(all_bins[0].bin_edges)
    counts = np.zeros(edges.size - 1)
    conf_sum = np.zeros(edges.size - 1)
    tp_sum = np.zeros(edges.size - 1)
    for bins in all_bins:
        other = np.asarray(bins.bin_edges)
        if other.shape != edges.shape or not np.allclose(other, edges):
            raise ValueError("cannot merge reliability bins with different edges")
        n = np.asarray(bins.counts, dtype=np.float64)
        conf_sum += np.nan_to_num(np.asarray(bins.conf_mean, dtype=np.float64)) * n
        tp_sum += np.nan_to_num(np.asarray(bins.precision, dtype=np.float64)) * n
        counts += n
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityBins(edges, conf_sum / counts, tp_sum / counts, counts.astype(np.int64))


def bins_to_records(bins: ReliabilityBins) -> list[dict]:
    """Reliability bins as JSON-ready records (the web console's and the monitor's shape).

    Args:
        bins: the reliability bins.

    Returns:
        One dict per bin: ``lo``, ``hi``, ``confidence`` (mean, None when empty), ``precision``
        (None when empty), ``count``.
    """
    def num(value) -> float | None:
        value = float(value)
        return None if np.isnan(value) else value

    edges = np.asarray(bins.bin_edges, dtype=np.float64)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": num(bins.conf_mean[b]),
             "precision": num(bins.precision[b]), "count": int(bins.counts[b])}
            for b in range(len(bins.counts))]


def _confidence_and_hits(preds, gts, shapes, iou_thr: float, min_conf: float):
    """Match detections at one IoU threshold; return (conf, is_tp) above ``min_conf``."""
    stats = match_detections(preds, gts, shapes, iou_thresholds=np.array([iou_thr]))
    keep = stats.conf >= min_conf
    return stats.conf[keep], stats.tp[keep, 0]


def reliability_bins(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    iou_thr: float = DEFAULT_IOU_THR,
    n_bins: int = DEFAULT_N_BINS,
    min_conf: float = DEFAULT_MIN_CONF,
) -> ReliabilityBins:
    """Reliability bins of detections against ground truth.

    Args:
        preds: detections per image (original pixels).
        gts: YOLO labels per image, (N, 5) ``cls, cx, cy, w, h`` normalised.
        shapes: ``(height, width)`` of each image in pixels.
        iou_thr: IoU a detection needs with a same-class box to be a true positive.
        n_bins: number of equal-width confidence bins.
        min_conf: detections below this confidence are ignored (default: the
            protocol's, :data:`DEFAULT_MIN_CONF`).

    Returns:
        ``(bin_edges, conf_mean, precision, counts)`` as :class:`ReliabilityBins`.
    """
    conf, hits = _confidence_and_hits(preds, gts, shapes, iou_thr, min_conf)
    return bins_from_flags(conf, hits, n_bins)


def dece(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    iou_thr: float = DEFAULT_IOU_THR,
    n_bins: int = DEFAULT_N_BINS,
    min_conf: float = DEFAULT_MIN_CONF,
) -> float:
    """Detection expected calibration error.

    Args:
        preds: detections per image (original pixels).
        gts: YOLO labels per image, (N, 5) ``cls, cx, cy, w, h`` normalised.
        shapes: ``(height, width)`` of each image in pixels.
        iou_thr: IoU a detection needs with a same-class box to be a true positive.
        n_bins: number of equal-width confidence bins.
        min_conf: detections below this confidence are ignored (default: the
            protocol's, :data:`DEFAULT_MIN_CONF`).

    Returns:
        D-ECE in 0..1; NaN when no detection is left.
    """
    return dece_from_bins(reliability_bins(preds, gts, shapes, iou_thr, n_bins, min_conf))
