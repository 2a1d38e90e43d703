"""The cheap image embedding that novelty and near-duplicate checks compare.

A 16x16 grey thumbnail with its mean removed (robust to exposure changes), compared by RMS
difference in 0..1: about 0.01 between two frames of a static scene, 0.2-0.4 between different
scenes. The replay memory stores each sample's embedding (float16, 512 bytes) beside its row,
so the ``novel`` selection policy compares a camera frame with what memory holds, imports and
answers from other processes included.
"""

from __future__ import annotations

import numpy as np

THUMB_SIDE = 16
EMBEDDING_DIM = THUMB_SIDE * THUMB_SIDE
EMBEDDING_BLOB_BYTES = EMBEDDING_DIM * 2
"""Bytes of one stored embedding (float16)."""
_BGR_TO_GREY = np.array([0.114, 0.587, 0.299], np.float32)
"""ITU-R BT.601 luma weights in OpenCV's BGR order (as ``cv2.COLOR_BGR2GRAY``)."""
SUBSAMPLE_SIDE = 64
"""A frame whose shorter side exceeds twice this is subsampled before its area average."""
MAX_ABS_VALUE = 1.0
"""No value of an embedding lies outside -1..1 (a thumbnail in 0..1 minus its mean)."""
MAX_SHIFT_CELLS = 2
"""Largest relative shift, in thumbnail cells (a sixteenth of the frame each), at which
:func:`shifted_distances` compares two embeddings: a camera that panned or drifted by up to an
eighth of its frame."""


def thumbnail_embedding(image: np.ndarray) -> np.ndarray:
    """Compute the cheap embedding of an image.

    A large frame is first subsampled to every k-th pixel (k = shorter side // 64), so the
    area average reads at most a few thousand pixels: 0.07 ms for a 1080p frame instead of
    6.7 ms on the reference CPU, a cost the sink thread pays for every camera frame, with
    embeddings within 0.005 of the full average's. The grey conversion is numpy's: in the sink
    thread, ``cv2.cvtColor`` took 0.35 ms a frame waiting on OpenCV's thread pool while the
    inference threads held both cores (0.03 ms alone).

    Args:
        image: BGR uint8 (H, W, 3) or grey (H, W).

    Returns:
        float32 (256,): the 16x16 grey thumbnail in 0..1 with its mean removed.
    """
    import cv2

    step = min(image.shape[:2]) // SUBSAMPLE_SIDE
    if step > 1:
        image = image[::step, ::step]
    grey = image.astype(np.float32)
    if grey.ndim == 3:  # numpy, not cv2.cvtColor: OpenCV's thread pool would contend with inference
        grey = grey @ _BGR_TO_GREY
    small = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA) / 255.0
    return (small - small.mean()).astype(np.float32).ravel()


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two embeddings (0: identical, about 0.2-0.4: different scenes).

    Args:
        a: float32 (256,).
        b: float32 (256,).

    Returns:
        Distance in 0..1.
    """
    return float(np.sqrt(np.mean((a - b) ** 2)))


def distances_to(matrix: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """RMS differences between one embedding and each row of a matrix.

    Args:
        matrix: float32 (N, 256).
        emb: float32 (256,).

    Returns:
        float64 (N,) distances in 0..1 (empty when N is 0).
    """
    diff = matrix - emb[None, :]
    return np.sqrt(np.mean(diff * diff, axis=1, dtype=np.float64))


def embedding_to_blob(emb: np.ndarray) -> bytes:
    """Encode an embedding for the memory index.

    Args:
        emb: float32 (256,).

    Returns:
        512 bytes (little-endian float16).
    """
    return np.asarray(emb, dtype="<f2").tobytes()


def embedding_from_blob(blob: object) -> np.ndarray | None:
    """Decode an embedding stored by :func:`embedding_to_blob`.

    Args:
        blob: the stored value (bytes; anything else, a wrong length, a non-finite value or
            one outside -1..1, which no thumbnail in 0..1 with its mean removed has, counts
            as missing).

    Returns:
        float32 (256,), or None when the value is missing or damaged.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) != EMBEDDING_BLOB_BYTES:
        return None
    matrix, valid = embeddings_from_blobs([bytes(blob)])
    return matrix[0] if valid[0] else None


def embeddings_from_blobs(blobs: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Decode many stored embeddings at once (the memory's every sample, in chunks).

    Args:
        blobs: stored values, ``None`` (or anything not :data:`EMBEDDING_BLOB_BYTES` bytes)
            for a missing one.

    Returns:
        ``(matrix, valid)``: float32 (N, 256), zeros where a value is missing or damaged
        (see :func:`embedding_from_blob`), and bool (N,) telling which rows are usable.
    """
    valid = np.array([isinstance(b, (bytes, bytearray)) and len(b) == EMBEDDING_BLOB_BYTES
                      for b in blobs], dtype=bool)
    matrix = np.zeros((len(blobs), EMBEDDING_DIM), np.float32)
    if valid.any():
        raw = b"".join(b for b, ok in zip(blobs, valid) if ok)
        decoded = np.frombuffer(raw, dtype="<f2").reshape(-1, EMBEDDING_DIM).astype(np.float32)
        with np.errstate(invalid="ignore"):
            usable = (np.isfinite(decoded).all(axis=1)
                      & (np.abs(decoded) <= MAX_ABS_VALUE).all(axis=1))
        rows = np.flatnonzero(valid)
        matrix[rows[usable]] = decoded[usable]
        valid[rows[~usable]] = False
    return matrix, valid


def shifted_distances(matrix: np.ndarray, emb: np.ndarray,
                      max_shift_cells: int = MAX_SHIFT_CELLS) -> np.ndarray:
    """RMS differences between one embedding and each row, at the best relative shift.

    Two frames of a camera that panned or drifted show the same scene displaced: 20 px of a
    480 px wide thermal frame moved their plain distance from 0.01 to 0.04-0.07, past the
    near-duplicate threshold. Here the two 16x16 thumbnails are compared over their overlap at
    every shift of up to ``max_shift_cells`` cells in each direction, each side with its own mean
    removed, and the smallest RMS difference counts (template matching on the thumbnails). At
    shift 0 this is :func:`distances_to`, so it is never larger.

    Args:
        matrix: float32 (N, 256).
        emb: float32 (256,).
        max_shift_cells: largest shift in cells, 0..15.

    Returns:
        float64 (N,) distances in 0..1 (empty when N is 0).
    """
    k = max(0, min(int(max_shift_cells), THUMB_SIDE - 1))
    rows = matrix.reshape(-1, THUMB_SIDE, THUMB_SIDE).astype(np.float64)
    one = emb.reshape(THUMB_SIDE, THUMB_SIDE).astype(np.float64)
    best = np.full(rows.shape[0], np.inf)
    for dy in range(-k, k + 1):
        ya, yb = slice(max(0, dy), THUMB_SIDE + min(0, dy)), slice(max(0, -dy), THUMB_SIDE + min(0, -dy))
        for dx in range(-k, k + 1):
            xa, xb = slice(max(0, dx), THUMB_SIDE + min(0, dx)), slice(max(0, -dx), THUMB_SIDE + min(0, -dx))
            a = rows[:, ya, xa]
            b = one[yb, xb]
            diff = (a - a.mean(axis=(1, 2), keepdims=True)) - (b - b.mean())
            best = np.minimum(best, np.sqrt(np.mean(diff * diff, axis=(1, 2))))
    return best
