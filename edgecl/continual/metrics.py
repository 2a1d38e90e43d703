"""Continual-learning metrics on an accuracy matrix (pure functions, numpy only).

Columns are tasks (benchmark data) or, when frames carry no task, classes: ``R[i, c]`` is then
the AP50-95 of class ``c`` on held-out human/ground-truth labels after round ``i``.

The accuracy matrix ``R`` has one row per evaluation point and one column per task:
``R[i, j]`` is the box mAP50-95 of task ``j`` measured after training step ``i``.

Two row conventions are supported by the same functions:

* **task-aligned** (the literature's square ``T x T`` matrix): row ``i`` is "after learning
  task ``i``", so the entry right after learning task ``j`` is the diagonal ``R[j, j]``.
* **rounds** (what the on-device learner produces): rows are learning rounds, several rounds
  may train on the same task, and a task may first appear in any round.  The entry "just
  after learning task ``j``" is then the row in which task ``j`` was *first* evaluated
  (:func:`first_learnt_rows`), because a task only enters evaluation in the round that first
  trains on it.

# INVARIANT: ``R[i, j]`` is NaN while task ``j`` has not been learnt yet (row ``i`` is earlier
# than the row in which ``j`` is first learnt).  Every function below locates "just learnt"
# entries with that rule unless ``learnt_rows`` is passed explicitly (needed only for a matrix
# that also evaluates future tasks, e.g. to measure forward transfer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np


class RoundMatrix(NamedTuple):
    """An accuracy matrix built from per-round records.

    Attributes:
        values: float array (rounds, tasks); NaN where a task was not evaluated.
        rounds: the round number of each row, ascending.
        learnt_rows: for each task, the row index in which it was first learnt (-1: never).
    """

    values: np.ndarray
    rounds: list[int]
    learnt_rows: np.ndarray


def _as_matrix(R: np.ndarray) -> np.ndarray:
    """Return ``R`` as a float 2-D array.

    Raises:
        ValueError: when ``R`` is not two-dimensional.
    """
    matrix = np.asarray(R, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D, got shape {matrix.shape}")
    return matrix


def first_learnt_rows(R: np.ndarray) -> np.ndarray:
    """Row in which each task was first learnt: its first non-NaN entry.

    Args:
        R: accuracy matrix (rows x tasks), NaN before a task is learnt.

    Returns:
        int array (tasks,): row index, or -1 for a task with no value at all.
    """
    matrix = _as_matrix(R)
    if matrix.shape[0] == 0:
        return np.full(matrix.shape[1], -1, dtype=np.int64)
    finite = np.isfinite(matrix)
    rows = np.argmax(finite, axis=0)
    return np.where(finite.any(axis=0), rows, -1).astype(np.int64)


def _learnt(R: np.ndarray, learnt_rows: Sequence[int] | None) -> np.ndarray:
    """Resolve ``learnt_rows`` (default: first non-NaN row of each column)."""
    if learnt_rows is None:
        return first_learnt_rows(R)
    rows = np.asarray(learnt_rows, dtype=np.int64)
    if rows.shape != (R.shape[1],):
        raise ValueError(f"learnt_rows needs {R.shape[1]} entries, got {rows.shape}")
    return rows


def acc(R: np.ndarray, i: int = -1, learnt_rows: Sequence[int] | None = None) -> float:
    """Average accuracy after row ``i``: mean of ``R[i, j]`` over the tasks learnt by then.

    For a task-aligned matrix these are the tasks ``j <= i``.  Tasks learnt but not evaluated
    in row ``i`` (NaN) are left out of the mean.

    Args:
        R: accuracy matrix.
        i: row index (negative counts from the end); default the last row.
        learnt_rows: row in which each task was first learnt (default: first non-NaN row).

    Returns:
        The mean, or NaN when no task had been learnt by row ``i``.

    Raises:
        ValueError: on a non-2-D matrix or an out-of-range row.
    """
    matrix = _as_matrix(R)
    n_rows = matrix.shape[0]
    if not -n_rows <= i < n_rows:
        raise ValueError(f"row {i} out of range for a matrix with {n_rows} rows")
    row = i % n_rows
    rows = _learnt(matrix, learnt_rows)
    seen = (rows >= 0) & (rows <= row)
    values = matrix[row, seen]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def bwt(R: np.ndarray, learnt_rows: Sequence[int] | None = None) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, 2017).

    ``BWT = mean over earlier tasks j of (R[last, j] - R[learnt_j, j])``, where the earlier tasks
    are those learnt before the last row; for a task-aligned ``T x T`` matrix this is
    ``1/(T-1) * sum_{j < T-1} (R[T-1, j] - R[j, j])``.  Negative values mean forgetting.

    Args:
        R: accuracy matrix.
        learnt_rows: row in which each task was first learnt (default: first non-NaN row).

    Returns:
        The mean difference; 0.0 when there is no earlier task (a single task or a single row).
    """
    matrix = _as_matrix(R)
    if matrix.shape[0] == 0:
        return 0.0
    last = matrix.shape[0] - 1
    rows = _learnt(matrix, learnt_rows)
    diffs = [matrix[last, j] - matrix[r, j] for j, r in enumerate(rows) if 0 <= r < last]
    diffs = [d for d in diffs if np.isfinite(d)]
    return float(np.mean(diffs)) if diffs else 0.0


def forgetting(R: np.ndarray, learnt_rows: Sequence[int] | None = None) -> np.ndarray:
    """Per-task forgetting (Chaudhry et al., 2018).

    For each task ``j`` learnt before the last row:
    ``f_j = max_{i in [learnt_j, last-1]} R[i, j] - R[last, j]``; for a task-aligned matrix the
    window is ``i in [j, T-2]``.  Positive values mean forgetting.

    Args:
        R: accuracy matrix.
        learnt_rows: row in which each task was first learnt (default: first non-NaN row).

    Returns:
        float array (tasks,): ``f_j``, NaN for the last-learnt task, unseen tasks and tasks
        not evaluated in the last row.
    """
    matrix = _as_matrix(R)
    out = np.full(matrix.shape[1], np.nan)
    if matrix.shape[0] == 0:
        return out
    last = matrix.shape[0] - 1
    for j, first in enumerate(_learnt(matrix, learnt_rows)):
        window = matrix[first:last, j] if 0 <= first < last else np.empty(0)
        window = window[np.isfinite(window)]
        if window.size and np.isfinite(matrix[last, j]):
            out[j] = window.max() - matrix[last, j]
    return out


def most_forgotten(names: Sequence[str], amounts: Sequence[float | None], limit: int) -> list[int]:
    """Which columns to show when only ``limit`` fit: the most forgotten first, then those whose
    forgetting is unknown (``None`` or NaN); ties by name.

    Args:
        names: column (task or class) names.
        amounts: each column's forgetting (:func:`forgetting`), ``None`` or NaN when unknown.
        limit: most columns kept.

    Returns:
        Indices of the columns kept, ascending (all of them when at most ``limit``).
    """
    def rank(j: int) -> tuple:
        value = amounts[j]
        known = value is not None and bool(np.isfinite(value))
        return (not known, -float(value) if known else 0.0, str(names[j]), j)

    return sorted(sorted(range(len(names)), key=rank)[:max(0, int(limit))])


def mean_forgetting(R: np.ndarray, learnt_rows: Sequence[int] | None = None) -> float:
    """Mean of :func:`forgetting` over the tasks where it is defined.

    Args:
        R: accuracy matrix.
        learnt_rows: row in which each task was first learnt (default: first non-NaN row).

    Returns:
        The mean; 0.0 when no task has a defined forgetting value.
    """
    values = forgetting(R, learnt_rows)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else 0.0


def matrix_from_records(records: Iterable[tuple[int, int, float]]) -> RoundMatrix:
    """Build an accuracy matrix whose rows are rounds from ``(round, task_index, value)`` records.

    Rows are the distinct rounds in ascending order; columns are task indices
    ``0..max(task_index)``.  A later record for the same ``(round, task_index)`` replaces an
    earlier one.  The "just learnt" entry of task ``j`` is the row in which task ``j`` first
    has a value (the round that first trained on it); pass ``learnt_rows`` of the result to
    :func:`acc`, :func:`bwt` and :func:`forgetting` (their default rule gives the same rows).

    Args:
        records: ``(round, task_index, value)`` triples, in any order.

    Returns:
        A :class:`RoundMatrix`.

    Raises:
        ValueError: on a negative task index.
    """
    cells: dict[tuple[int, int], float] = {}
    for round_no, task_index, value in records:
        if int(task_index) < 0:
            raise ValueError(f"negative task index {task_index} in round {round_no}")
        cells[(int(round_no), int(task_index))] = float(value)
    rounds = sorted({r for r, _ in cells})
    n_tasks = 1 + max((t for _, t in cells), default=-1)
    values = np.full((len(rounds), n_tasks), np.nan)
    row_of = {r: k for k, r in enumerate(rounds)}
    for (round_no, task_index), value in cells.items():
        values[row_of[round_no], task_index] = value
    return RoundMatrix(values, rounds, first_learnt_rows(values))


def row_drop(R: np.ndarray, i: int = -1, ref: int | None = None) -> np.ndarray:
    """Per-column drop from row ``ref`` to row ``i``: ``R[ref, j] - R[i, j]``.

    Used for "what fell in the last round" (e.g. the classes whose held-out AP fell, which the
    ``forgetting`` selection policy shows a person). Positive values mean a drop.

    Args:
        R: accuracy matrix (rows x columns).
        i: the later row (negative counts from the end); default the last row.
        ref: the earlier row; default the row before ``i``.

    Returns:
        float array (columns,): the drops; NaN where either entry is NaN or there is no earlier
        row.

    Raises:
        ValueError: on a non-2-D matrix or an out-of-range row.
    """
    matrix = _as_matrix(R)
    n_rows = matrix.shape[0]
    if not -n_rows <= i < n_rows:
        raise ValueError(f"row {i} out of range for a matrix with {n_rows} rows")
    if ref is not None and not -n_rows <= ref < n_rows:
        raise ValueError(f"row {ref} out of range for a matrix with {n_rows} rows")
    row = i % n_rows
    earlier = row - 1 if ref is None else ref % n_rows
    if earlier < 0 or earlier == row:
        return np.full(matrix.shape[1], np.nan)
    return matrix[earlier] - matrix[row]


def summarize(R: np.ndarray, columns: Sequence[str]) -> dict:
    """ACC, BWT, mean forgetting and per-column forgetting of a matrix (tasks or classes).

    The columns may be tasks (benchmark data) or classes (deployment: per-class AP50-95 on
    held-out samples after each round); the definitions are the same (see the module docstring).

    Args:
        R: accuracy matrix (rows x columns); may have no rows.
        columns: name of each column.

    Returns:
        ``{"acc", "bwt", "mean_forgetting", "forgetting": {name: value}}``; ``acc`` is None when
        undefined, the others are None only for a matrix without rows; ``forgetting`` holds the
        columns where it is defined.

    Raises:
        ValueError: when ``columns`` does not match the matrix width.
    """
    matrix = _as_matrix(R)
    if len(columns) != matrix.shape[1]:
        raise ValueError(f"{len(columns)} column names for {matrix.shape[1]} columns")
    if matrix.shape[0] == 0:
        return {"acc": None, "bwt": None, "mean_forgetting": None, "forgetting": {}}
    value = acc(matrix)
    per_column = forgetting(matrix)
    return {"acc": None if np.isnan(value) else value, "bwt": bwt(matrix),
            "mean_forgetting": mean_forgetting(matrix),
            "forgetting": {str(c): float(f) for c, f in zip(columns, per_column) if np.isfinite(f)}}
