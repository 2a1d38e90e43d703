"""The forgetting monitor: evaluations, rounds and runtime figures in ``STATE/metrics/metrics.sqlite``.

Writers (the learner process, the inference loop) and readers (the HTTP server, the CLI) may be
different threads or processes: every call opens its own short-lived connection, the database
runs in WAL mode, and every write is one ``BEGIN IMMEDIATE ... COMMIT`` transaction.

Prometheus: :class:`PrometheusExporter` owns a private ``CollectorRegistry`` whose collector
reads :meth:`Monitor.summary` at scrape time; call :meth:`PrometheusExporter.render` from the
``/metrics`` handler and send it with :attr:`PrometheusExporter.content_type`.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecl.calibration.dece import ReliabilityBins, dece_from_bins, merge_bins
from edgecl.continual import metrics
from edgecl.errors import EdgeclError


DB_RELPATH = Path("metrics") / "metrics.sqlite"
STATUSES = ("staged", "promoted", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL,
    task_index INTEGER NOT NULL, map50_95 REAL, map50 REAL, recall REAL, precision REAL,
    dece REAL, n_images INTEGER, n_boxes INTEGER, ts_s REAL NOT NULL,
    PRIMARY KEY (round, model_version, task));
CREATE TABLE IF NOT EXISTS class_ap (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL,
    cls INTEGER NOT NULL, ap50_95 REAL,
    PRIMARY KEY (round, model_version, task, cls));
CREATE TABLE IF NOT EXISTS reliability (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL, bin INTEGER NOT NULL,
    lo REAL NOT NULL, hi REAL NOT NULL, conf_mean REAL, precision REAL, count INTEGER NOT NULL,
    PRIMARY KEY (round, model_version, task, bin));
CREATE TABLE IF NOT EXISTS runtime (
    ts_s REAL NOT NULL, fps REAL, latency_ms_p50 REAL, memory_bytes INTEGER,
    memory_samples INTEGER, model_version TEXT);
CREATE INDEX IF NOT EXISTS runtime_by_time ON runtime (ts_s);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER NOT NULL, model_version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('staged', 'promoted', 'rejected')), reason TEXT,
    acc REAL, bwt REAL, mean_forgetting REAL, seconds REAL, ts_s REAL NOT NULL,
    PRIMARY KEY (round, model_version));
"""


class MonitorError(EdgeclError):
    """The metrics database is missing, damaged, or was given inconsistent records."""


class MatrixView(NamedTuple):
    """An accuracy matrix with its labels.

    Attributes:
        values: float (rows, tasks) mAP50-95; NaN where a task was not evaluated.
        task_names: column labels, in task order.
        versions: model version of each row.
        rounds: round number of each row.
    """

    values: np.ndarray
    task_names: list[str]
    versions: list[str]
    rounds: list[int]


def _nan_to_none(value: float | None) -> float | None:
    """Map NaN (and None) to None so it is stored as SQL NULL and shown as JSON null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _num(value) -> float:
    """SQL value to float, NULL to NaN."""
    return float("nan") if value is None else float(value)


class Monitor:
    """Records what each model version learnt and forgot, and how fast it runs.

    Args:
        state_dir: the edgecl state directory (the database lives in ``metrics/metrics.sqlite``).
        create: create the database when missing; with False a missing one raises.
        max_runtime_rows: runtime samples kept (older ones are deleted; at one sample every
            10 s the default keeps about 11 days).

    Raises:
        MonitorError: when the database is missing (``create=False``) or damaged.
    """

    def __init__(self, state_dir: str | Path, create: bool = True,
                 max_runtime_rows: int = 100_000) -> None:
        self.state_dir = Path(state_dir)
        self.max_runtime_rows = max(1, int(max_runtime_rows))
        self.db_path = self.state_dir / DB_RELPATH
        if not create and not self.db_path.is_file():
            raise MonitorError(f"no metrics database at {self.db_path}")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection in autocommit mode; damage becomes :class:`MonitorError`."""
        try:
            conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise MonitorError(f"cannot open metrics database {self.db_path}: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        except sqlite3.DatabaseError as exc:
            raise MonitorError(f"metrics database {self.db_path}: {exc}") from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one immediate transaction: all of the block or nothing."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def record_evaluation(self, round_no: int, model_version: str, results: Mapping,
                          task_order: Sequence[str], ts_s: float | None = None) -> None:
        """Store one version's evaluation on every task (replaces a previous identical key).

        Args:
            round_no: learning round the version came from.
            model_version: registry version name, e.g. ``v0003``.
            results: task name -> :class:`~edgecl.continual.evaluate.EvalResult`.
            task_order: all task names in the order they are learnt (gives the column index).
            ts_s: time of the evaluation (default now).

        Raises:
            MonitorError: when a task of ``results`` is missing from ``task_order``.
        """
        unknown = sorted(set(results) - set(task_order))
        if unknown:
            raise MonitorError(f"round {round_no}: tasks {unknown} are not in the task order")
        ts_s = time.time() if ts_s is None else ts_s
        key = (int(round_no), str(model_version))
        with self._write() as conn:
            for task, res in results.items():
                conn.execute(
                    "INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (*key, task, list(task_order).index(task), _nan_to_none(res.map50_95),
                     _nan_to_none(res.map50), _nan_to_none(res.recall),
                     _nan_to_none(res.precision), _nan_to_none(res.dece), res.n_images,
                     res.n_boxes, ts_s))
                self._replace_details(conn, key, task, res)

    @staticmethod
    def _replace_details(conn: sqlite3.Connection, key: tuple[int, str], task: str, res) -> None:
        """Rewrite the per-class AP and reliability rows of one (round, version, task)."""
        for table in ("class_ap", "reliability"):
            conn.execute(f"DELETE FROM {table} WHERE round=? AND model_version=? AND task=?",
                         (*key, task))
        conn.executemany("INSERT INTO class_ap VALUES (?,?,?,?,?)",
                         [(*key, task, int(c), _nan_to_none(float(v)))
                          for c, v in res.per_class_ap50_95.items()])
        bins = res.reliability
        if bins is None:
            return
        conn.executemany(
            "INSERT INTO reliability VALUES (?,?,?,?,?,?,?,?,?)",
            [(*key, task, b, float(bins.bin_edges[b]), float(bins.bin_edges[b + 1]),
              _nan_to_none(float(bins.conf_mean[b])), _nan_to_none(float(bins.precision[b])),
              int(bins.counts[b])) for b in range(len(bins.counts))])

    def record_round(self, round_no: int, model_version: str, status: str, reason: str = "",
                     acc: float | None = None, bwt: float | None = None,
                     mean_forgetting: float | None = None, seconds: float | None = None) -> None:
        """Store the outcome of a learning round.

        ACC, BWT and mean forgetting default to :meth:`candidate_metrics` of the version.

        Args:
            round_no: learning round.
            model_version: the candidate version.
            status: ``promoted`` or ``rejected``.
            reason: why (gate verdict), free text.
            acc: average mAP50-95 over the tasks seen.
            bwt: backward transfer.
            mean_forgetting: mean forgetting over earlier tasks.
            seconds: wall time of the round.

        Raises:
            ValueError: on an unknown status.
        """
        if status not in STATUSES:
            raise ValueError(f"round status must be one of {STATUSES}, got {status!r}")
        if acc is None or bwt is None or mean_forgetting is None:
            computed = self.candidate_metrics(round_no, model_version)
            acc = computed["acc"] if acc is None else acc
            bwt = computed["bwt"] if bwt is None else bwt
            if mean_forgetting is None:
                mean_forgetting = computed["mean_forgetting"]
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?,?,?)",
                         (int(round_no), str(model_version), status, reason, _nan_to_none(acc),
                          _nan_to_none(bwt), _nan_to_none(mean_forgetting), seconds, time.time()))

    def record_runtime(self, fps: float, latency_ms_p50: float, memory_bytes: int,
                       memory_samples: int, model_version: str, ts_s: float | None = None) -> None:
        """Store one runtime sample of the inference loop and the replay memory.

        Args:
            fps: frames per second over the last window.
            latency_ms_p50: median inference latency in milliseconds.
            memory_bytes: bytes used by the replay memory on disk.
            memory_samples: samples held by the replay memory.
            model_version: version being served.
            ts_s: time of the sample (default now).
        """
        with self._write() as conn:
            conn.execute("INSERT INTO runtime VALUES (?,?,?,?,?,?)",
                         (time.time() if ts_s is None else ts_s, fps, latency_ms_p50,
                          int(memory_bytes), int(memory_samples), str(model_version)))
            # INVARIANT: the runtime table holds at most max_runtime_rows samples.
            conn.execute("DELETE FROM runtime WHERE rowid <= (SELECT MAX(rowid) FROM runtime) - ?",
                         (self.max_runtime_rows,))

    def set_version_status(self, model_version: str, status: str) -> None:
        """Change the recorded status of a version's round (``staged`` -> ``promoted``).

        A version that no round produced (added by hand) is not in the table: nothing changes.

        Raises:
            ValueError: on an unknown status.
        """
        if status not in STATUSES:
            raise ValueError(f"round status must be one of {STATUSES}, got {status!r}")
        with self._write() as conn:
            conn.execute("UPDATE rounds SET status = ? WHERE model_version = ?",
                         (status, str(model_version)))

    def matrix_view(self, status: str | None = "promoted",
                    extra: tuple[int, str] | None = None) -> MatrixView:
        """Accuracy matrix (rows: evaluated versions by round; columns: tasks by task index).

        Args:
            status: keep only versions whose round has this status; None keeps every evaluation.
            extra: one more ``(round, version)`` to keep whatever its status (a candidate).

        Returns:
            The :class:`MatrixView`.

        Raises:
            ValueError: on an unknown status.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        rows = self._evaluation_rows(status, extra)
        tasks = sorted({(idx, name) for _, _, name, idx, _ in rows})
        task_names = list(dict.fromkeys(name for _, name in tasks))
        row_of = {key: i for i, key in enumerate(dict.fromkeys((r, v) for r, v, *_ in rows))}
        col_of = {name: j for j, name in enumerate(task_names)}
        values = np.full((len(row_of), len(task_names)), np.nan)
        for round_no, version, name, _, value in rows:
            values[row_of[(round_no, version)], col_of[name]] = _num(value)
        keys = list(row_of)
        return MatrixView(values, task_names, [v for _, v in keys], [r for r, _ in keys])

    def _evaluation_rows(self, status: str | None, extra: tuple[int, str] | None) -> list[tuple]:
        """(round, version, task, task_index, map50_95) rows ordered by round then time."""
        sql = ("SELECT e.round, e.model_version, e.task, e.task_index, e.map50_95, e.ts_s "
               "FROM evaluations e LEFT JOIN rounds r "
               "ON r.round = e.round AND r.model_version = e.model_version")
        params: list = []
        if status is not None:
            sql += " WHERE r.status = ?"
            params.append(status)
            if extra is not None:
                sql += " OR (e.round = ? AND e.model_version = ?)"
                params.extend([int(extra[0]), str(extra[1])])
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        first_ts = {}
        for r, v, *_, ts in rows:
            first_ts[(r, v)] = min(ts, first_ts.get((r, v), ts))
        rows.sort(key=lambda row: (row[0], first_ts[(row[0], row[1])], row[1]))
        return [row[:5] for row in rows]

    def accuracy_matrix(self, status: str | None = "promoted") -> tuple[np.ndarray, list[str], list[str]]:
        """Accuracy matrix ``R`` (see :mod:`edgecl.continual.metrics`) and its labels.

        Args:
            status: ``promoted`` (default), ``rejected``, or None for every evaluation.

        Returns:
            ``(R, task_names, versions)``.
        """
        view = self.matrix_view(status)
        return view.values, view.task_names, view.versions

    def candidate_metrics(self, round_no: int, model_version: str) -> dict:
        """ACC, BWT and forgetting if this version were promoted after the promoted ones.

        Args:
            round_no: the candidate's round.
            model_version: the candidate's version.

        Returns:
            ``{"acc", "bwt", "mean_forgetting", "forgetting": {task: value}}`` (None for NaN).
        """
        view = self.matrix_view("promoted", extra=(round_no, model_version))
        return _cl_metrics(view)

    def latest_reliability(self, status: str | None = "promoted") -> tuple[int, str, ReliabilityBins] | None:
        """Reliability bins of the latest evaluated version, pooled over its tasks.

        Args:
            status: as for :meth:`matrix_view`.

        Returns:
            ``(round, version, bins)`` or None when nothing was stored.
        """
        view = self.matrix_view(status)
        if not view.versions:
            return None
        key = (view.rounds[-1], view.versions[-1])
        with self._connect() as conn:
            rows = conn.execute("SELECT task, lo, hi, conf_mean, precision, count FROM reliability "
                                "WHERE round=? AND model_version=? ORDER BY task, bin", key).fetchall()
        per_task: dict[str, list] = {}
        for task, *rest in rows:
            per_task.setdefault(task, []).append(rest)
        if not per_task:
            return None
        return (*key, merge_bins([_bins_from_rows(r) for r in per_task.values()]))

    def rounds(self) -> list[dict]:
        """All recorded rounds, oldest first.

        Returns:
            One dict per round with the columns of the ``rounds`` table.
        """
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM rounds ORDER BY round, ts_s").fetchall()
        return [dict(row) for row in rows]

    def latest_runtime(self) -> dict | None:
        """The most recent runtime sample, or None."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM runtime ORDER BY ts_s DESC LIMIT 1").fetchone()
        return None if row is None else dict(row)

    def summary(self) -> dict:
        """Current state of learning and serving, computed from the promoted versions.

        Returns:
            Dict with ``round``, ``model_version``, ``tasks``, ``acc``, ``bwt``,
            ``mean_forgetting``, ``forgetting`` (task -> value), ``map50_95`` (task -> latest),
            ``dece``, ``fps``, ``latency_ms_p50``, ``memory_bytes``, ``memory_samples``,
            ``n_promoted``, ``n_rejected``, ``serving_version`` (what the loop ran at the last
            runtime sample); None where there is nothing to report. ``model_version`` is the
            latest promoted version.
        """
        view = self.matrix_view("promoted")
        out = {"round": view.rounds[-1] if view.rounds else None, "tasks": view.task_names,
               **_cl_metrics(view)}
        out["map50_95"] = {} if not view.versions else {
            t: _nan_to_none(float(v)) for t, v in zip(view.task_names, view.values[-1])}
        latest = self.latest_reliability("promoted")
        out["dece"] = None if latest is None else _nan_to_none(dece_from_bins(latest[2]))
        runtime = self.latest_runtime() or {}
        for key in ("fps", "latency_ms_p50", "memory_bytes", "memory_samples"):
            out[key] = runtime.get(key)
        out["model_version"] = (view.versions[-1] if view.versions else None) or runtime.get(
            "model_version")
        out["serving_version"] = runtime.get("model_version")
        statuses = [r["status"] for r in self.rounds()]
        out["n_promoted"], out["n_rejected"] = statuses.count("promoted"), statuses.count("rejected")
        return out


def _bins_from_rows(rows: list) -> ReliabilityBins:
    """Rebuild :class:`ReliabilityBins` from ``(lo, hi, conf_mean, precision, count)`` rows."""
    edges = np.array([rows[0][0]] + [r[1] for r in rows])
    return ReliabilityBins(edges, np.array([_num(r[2]) for r in rows]),
                           np.array([_num(r[3]) for r in rows]),
                           np.array([int(r[4]) for r in rows], np.int64))


def _cl_metrics(view: MatrixView) -> dict:
    """ACC, BWT and forgetting of a matrix view (None where undefined)."""
    if not view.versions:
        return {"acc": None, "bwt": None, "mean_forgetting": None, "forgetting": {}}
    per_task = metrics.forgetting(view.values)
    return {
        "acc": _nan_to_none(metrics.acc(view.values)),
        "bwt": metrics.bwt(view.values),
        "mean_forgetting": metrics.mean_forgetting(view.values),
        "forgetting": {t: float(f) for t, f in zip(view.task_names, per_task) if np.isfinite(f)},
    }
