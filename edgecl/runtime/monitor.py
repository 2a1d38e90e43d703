"""The forgetting monitor: evaluations, rounds and runtime figures in ``STATE/metrics/metrics.sqlite``.

Writers (the learner process, the inference loop) and readers (the HTTP server, the CLI) may be
different threads or processes: every call opens its own short-lived connection, the database
runs in WAL mode, and every write is one ``BEGIN IMMEDIATE ... COMMIT`` transaction.

Two views of the accuracy matrix (``kind``): ``tasks`` (columns are tasks; benchmark data) and
``classes`` (columns are classes: per-class AP50-95 on the held-out human/ground-truth samples
after each round). ``auto`` picks ``classes`` as soon as frames that carry no task were
evaluated (task :data:`~edgecl.frames.STREAM_TASK`), else ``tasks``. ACC, BWT and forgetting
come from the chosen matrix through :func:`edgecl.continual.metrics.summarize`. The stream
task's column of the task view is an mAP over the classes taught so far, a set that grows, so
a fall in it is not forgetting: per-task forgetting leaves it out.

Bounds: every round's rows are kept; runtime samples are kept at full resolution for the newest
``max_runtime_rows`` and thinned to one per ``runtime_downsample_s`` before that, at most
``max_downsampled_rows`` of those (so the table never exceeds the sum of the two).

Faults: a write that fails (full disk, locked or read-only database, I/O error) raises
:class:`~edgecl.errors.StorageError`, and nothing of that write is kept (one transaction), so the
supervisor can contain it and retry later; a damaged database met on a read raises
:class:`MonitorError`, whose message says how to rebuild it. The database is derived data: a
writer that opens it (``create=True``: the runtime, a learning round) and finds it missing,
empty or damaged makes it afresh and re-records the rounds from the model versions (each
keeps its round's record, ``round_record.json``); a damaged file is first moved aside to
``metrics.sqlite.corrupt-<UTC time>`` (kept, with its ``-wal`` and ``-shm``). A storage fault
is never taken for damage: nothing is moved aside for it.

Prometheus: :class:`PrometheusExporter` owns a private ``CollectorRegistry`` whose collector
reads :meth:`Monitor.summary` at scrape time; call :meth:`PrometheusExporter.render` from the
``/metrics`` handler and send it with :attr:`PrometheusExporter.content_type`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecl import sqlite_room
from edgecl.atomic import damaged_copy_path, fsync_dir, json_default
from edgecl.calibration.dece import ReliabilityBins, bins_to_records, dece_from_bins, merge_bins
from edgecl.continual import metrics
from edgecl.continual.evaluate import DECE_PROTOCOL
from edgecl.continual.memory.faults import error_reason, is_damage, sqlite_damage
from edgecl.continual.round_state import RoundStatus
from edgecl.errors import EdgeclError, StorageError
from edgecl.frames import STREAM_TASK
from edgecl.sqlite_copy import PrivateCopy

log = logging.getLogger(__name__)


DB_RELPATH = Path("metrics") / "metrics.sqlite"
CORRUPT_INFIX = ".corrupt-"
"""A damaged database is moved aside to ``metrics.sqlite.corrupt-<UTC time>`` (kept)."""
REBUILD_LOCK = ".rebuild.lock"
"""The file in ``STATE/metrics`` whose ``flock`` lets one process at a time make the database
afresh (two would move each other's new database aside)."""
REBUILD_ADVICE = ("start `edgecl run` on this state directory: it rebuilds the database from the "
                  "model versions (so does the next round of `edgecl learn`)")
_rebuilding = threading.local()
MEMO_ENTRIES = 64
"""Most matrices and summaries a :class:`Monitor` keeps between learning writes."""
DETAIL_ROUNDS = 100
DETAIL_PROMOTED = 10
"""Reliability bins and full calibration reports are kept for the newest ``DETAIL_ROUNDS``
rounds and the newest ``DETAIL_PROMOTED`` promoted versions; older rounds keep their numbers
(AP, D-ECE before/after), which are what every view of the history reads. Without this the
database grew by about 9 KB a round with 60 classes, two thirds of it these details."""
VACUUM_EVERY_ROUNDS = 100
"""Rounds between two repacks of the database (``VACUUM``) once details are thinned: a thinned
calibration report shrinks in place and leaves its page mostly empty, which no later row
reuses (about 4 KB a round stayed on disk whatever the thinning gave back)."""
# INVARIANT: the round outcomes that name a model version (one enum, shared with the learner)
STATUSES = (*(s.value for s in (RoundStatus.STAGED, RoundStatus.PROMOTED, RoundStatus.REJECTED)),
            "retired")
"""A round's version as the registry holds it; ``promoted``: in the chain of versions served one
after the other (the registry's history: the current version and those later promotions
replaced); ``retired``: served once, then rolled back (no longer in that chain)."""
KINDS = ("auto", "tasks", "classes")
START_REASON = "the model the device started with, before its first round"
"""The reason of round 0: the start's evaluation, which forgetting counts from."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL,
    task_index INTEGER NOT NULL, map50_95 REAL, map50 REAL, recall REAL, precision REAL,
    dece REAL, n_images INTEGER, n_boxes INTEGER, ts_s REAL NOT NULL,
    PRIMARY KEY (round, model_version, task));
CREATE TABLE IF NOT EXISTS class_ap (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL,
    cls INTEGER NOT NULL, ap50_95 REAL, recall REAL, n_instances INTEGER,
    PRIMARY KEY (round, model_version, task, cls));
CREATE TABLE IF NOT EXISTS class_names (cls INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calibration (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, dece_before REAL, dece_after REAL,
    report TEXT NOT NULL, ts_s REAL NOT NULL, PRIMARY KEY (round, model_version));
CREATE TABLE IF NOT EXISTS reliability (
    round INTEGER NOT NULL, model_version TEXT NOT NULL, task TEXT NOT NULL, bin INTEGER NOT NULL,
    lo REAL NOT NULL, hi REAL NOT NULL, conf_mean REAL, precision REAL, count INTEGER NOT NULL,
    PRIMARY KEY (round, model_version, task, bin));
CREATE TABLE IF NOT EXISTS runtime (
    ts_s REAL NOT NULL, fps REAL, latency_ms_p50 REAL, memory_bytes INTEGER,
    memory_samples INTEGER, model_version TEXT);
CREATE INDEX IF NOT EXISTS runtime_by_time ON runtime (ts_s);
CREATE TABLE IF NOT EXISTS learning_stamp (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO learning_stamp VALUES (0, 0);
"""

_ROUNDS_TABLE = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER NOT NULL, model_version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('staged', 'promoted', 'rejected', 'retired')),
    reason TEXT, acc REAL, bwt REAL, mean_forgetting REAL, seconds REAL, ts_s REAL NOT NULL,
    PRIMARY KEY (round, model_version));
"""


def mistyped_value(conn: sqlite3.Connection) -> str | None:
    """The first value of a number column that holds text or bytes (a hand edit, or a write
    torn in a way SQLite's page check cannot see): every read of the metrics would fail on it,
    so it is damage like a torn page.

    Args:
        conn: a connection to the metrics database.

    Returns:
        ``"table class_ap, column ap50_95 holds 'x' where a number belongs"``, or None.

    Raises:
        sqlite3.Error: the database cannot be read.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table in sorted(tables & NUMBER_TABLES):
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")
                   if str(row[2]).upper() in ("REAL", "INTEGER")]
        for column in columns:
            row = conn.execute(f"SELECT {column} FROM {table} WHERE typeof({column}) IN "
                               f"('text', 'blob') LIMIT 1").fetchone()
            if row is not None:
                shown = repr(row[0] if isinstance(row[0], str) else bytes(row[0]))[:40]
                return f"table {table}, column {column} holds {shown} where a number belongs"
    return None


NUMBER_TABLES = frozenset({"evaluations", "class_ap", "class_names", "calibration", "reliability",
                           "runtime", "learning_stamp", "rounds"})
"""The metrics database's tables whose number columns :func:`mistyped_value` checks."""


class MonitorError(EdgeclError):
    """The metrics database is missing, damaged, or was given inconsistent records."""


_MIGRATIONS = (("class_ap", "recall", "REAL"), ("class_ap", "n_instances", "INTEGER"))


class MatrixView(NamedTuple):
    """An accuracy matrix with its labels.

    Attributes:
        values: float (rows, columns) mAP50-95 of a task or AP50-95 of a class; NaN where a
            column was not evaluated.
        task_names: column labels: tasks in task order, or class names by class id.
        versions: model version of each row.
        rounds: round number of each row.
        kind: ``tasks`` or ``classes``.
        class_ids: for ``classes``, the class id of each column.
    """

    values: np.ndarray
    task_names: list[str]
    versions: list[str]
    rounds: list[int]
    kind: str = "tasks"
    class_ids: tuple[int, ...] = ()
    fleet_rounds: tuple[int | None, ...] = ()

    def row_labels(self) -> list[str]:
        """Row labels: ``r<round> <version>``, or ``fleet <N> <version>`` for a model a fleet
        round adopted (its ``round`` is the learner's last local round, 0 on a device that
        only learns in the fleet; before, every such row read ``r0``)."""
        fleet = self.fleet_rounds or (None,) * len(self.versions)
        return [f"r{r} {v}" if n is None else f"fleet {n} {v}"
                for r, v, n in zip(self.rounds, self.versions, fleet)]


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
        create: create the database when missing, and make it afresh when it is empty or
            damaged (a damaged file is moved aside, kept): the rounds are re-recorded from the
            model versions, with one warning; with False a missing or damaged one raises.
        max_runtime_rows: newest runtime samples kept at full resolution (at one sample every
            10 s the default keeps about one day).
        runtime_downsample_s: older runtime samples are thinned to one per this many seconds.
        max_downsampled_rows: thinned samples kept (the default keeps a year of hourly samples).
        busy_timeout_s: how long a write waits for another writer's lock before it fails.
        private_copy: with ``create=False``, read a private copy (WAL replayed) even where the
            database may be written: a command that only reads must not change a state
            directory (its schema brought up to date, its WAL checkpointed). Writes then raise.
        wait_for_room: a database that cannot be opened for writing (a full disk) is not an
            error here (the runtime starts on a full card; a read-only state directory is
            refused before): a warning says so, its schema is brought up to date by the first
            write that succeeds, and reads and writes until then raise as they would.

    Raises:
        MonitorError: when the database is missing or damaged (``create=False``; the message
            says how to rebuild it).
        StorageError: when the database cannot be created, written or moved aside (read-only,
            full disk; not with ``wait_for_room``): a storage fault never moves it aside.
    """

    def __init__(self, state_dir: str | Path, create: bool = True,
                 max_runtime_rows: int = 8_640, runtime_downsample_s: float = 3600.0,
                 max_downsampled_rows: int = 8_760, busy_timeout_s: float = 10.0,
                 private_copy: bool = False, wait_for_room: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.busy_timeout_s = float(busy_timeout_s)
        self.max_runtime_rows = max(1, int(max_runtime_rows))
        self.runtime_downsample_s = max(1e-3, float(runtime_downsample_s))
        self.max_downsampled_rows = max(0, int(max_downsampled_rows))
        self.db_path = self.state_dir / DB_RELPATH
        if not create and not self.db_path.is_file():
            lost = _round_versions(self.state_dir)  # a deleted database, while rounds were run
            raise MonitorError(f"no metrics database at {self.db_path}"
                               + (f" ({len(lost)} model versions hold their rounds): "
                                  f"{REBUILD_ADVICE}" if lost else
                                  ": no learning round or run recorded yet ('edgecl learn' runs "
                                  "a round, 'edgecl run' records a run)"))
        # a copy pulled from a device, or a read-only mount: read a private copy with its WAL
        # replayed (SQLite cannot open a WAL database read-only where it may not write its
        # index beside it, and immutable=1 would ignore the WAL's newest rounds)
        self.read_only = not create and not (os.access(self.db_path.parent, os.W_OK)
                                             and os.access(self.db_path, os.W_OK))
        self._copy = None
        self._memo_cache: dict[tuple, tuple[int, object]] = {}
        self._schema_pending = False
        self._damage: BaseException | None = None
        if self.read_only or (private_copy and not create):
            self._open_private_copy()
            return
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self._open_for_writing(repair=create)
        except (OSError, StorageError, MonitorError) as exc:
            if not wait_for_room:
                if isinstance(exc, OSError):
                    raise StorageError(f"cannot create {self.db_path.parent}: "
                                       f"{exc.strerror or exc}") from exc
                raise
            log.warning("metrics database %s cannot be opened for writing (%s); metrics are "
                        "recorded again once it can be", self.db_path, exc)
            self._schema_pending = True

    def _open_private_copy(self) -> None:
        """Copy the database and its WAL aside, replay the WAL and add what an older schema lacks
        there (the copy only: the device's files are not touched)."""
        try:
            self._copy = PrivateCopy(self.db_path)
        except OSError as exc:
            raise MonitorError(f"cannot read metrics database {self.db_path}: "
                               f"{exc.strerror or exc}") from None
        try:
            conn = self._copy.connect(isolation_level=None)
            try:
                _bring_schema_up_to_date(conn)
                mistyped = mistyped_value(conn)
            finally:
                conn.close()
            if mistyped is not None:
                self._copy.close()
                raise self._damaged(mistyped)
        except sqlite3.Error as exc:
            self._copy.close()
            if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
                raise self._damaged(exc) from None
            raise MonitorError(f"metrics database {self.db_path}: {exc}") from None

    def _damaged(self, exc: BaseException | None) -> MonitorError:
        """The one-line error for a damaged database: the file, the reason, what to do."""
        return MonitorError(f"metrics database {self.db_path} is damaged ({exc}): {REBUILD_ADVICE}, "
                            f"keeping the damaged copy as {self.db_path.name}{CORRUPT_INFIX}<time>")

    def _open_for_writing(self, repair: bool) -> None:
        """Bring the schema up to date; with ``repair``, make a missing, empty or damaged
        database afresh.

        A damaged file (and its ``-wal`` and ``-shm``) is moved aside, never deleted; the
        new database gets the rounds of the model versions again (:meth:`_rebuild`). Under
        :data:`REBUILD_LOCK`, so that two processes do not both do it.

        Args:
            repair: make the database afresh where needed (else damage raises).

        Raises:
            StorageError: the database cannot be created, written or moved aside (a full
                disk, a read-only directory): nothing was moved.
            MonitorError: the database is damaged and ``repair`` is False, or the database
                made afresh is damaged too (nothing more is tried).
        """
        blank = self._is_blank()
        if not (blank and repair) and self._checked_schema():
            return
        if not repair:
            raise self._damaged(self._damage)
        if getattr(_rebuilding, "path", None) == os.path.abspath(self.db_path):
            raise MonitorError(f"metrics database {self.db_path} is missing or damaged while this "
                               f"thread makes it afresh")
        with self._rebuild_lock():
            self._make_afresh()

    def _is_blank(self) -> bool:
        """True when the database file is missing or empty (0 bytes: SQLite reads it as empty)."""
        try:
            return self.db_path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def _checked_schema(self) -> bool:
        """Check the file's pages (:meth:`_find_damage`), then bring the schema up to date.

        Returns:
            False when the file is damaged (it is left as it is; ``_damage`` says why).

        Raises:
            StorageError: the database cannot be opened or written (not damage).
        """
        self._damage = None if self._is_blank() else self._find_damage()
        if self._damage is not None:
            return False
        try:
            with self._write(transaction=False) as conn:
                _bring_schema_up_to_date(conn)
        except MonitorError as exc:
            self._damage = exc.__cause__ or exc
            return False
        return True

    def _find_damage(self) -> BaseException | None:
        """What SQLite says is damaged (:func:`~edgecl.continual.memory.faults.sqlite_damage`),
        or None: also when the check itself cannot run (a storage fault, a lock): the writing
        connection that follows reports that."""
        if self.db_path.is_dir():  # SQLite cannot open it: a storage fault to it, damage here
            return MonitorError("a folder stands where the database file belongs")
        said = sqlite_damage(self.db_path, self.busy_timeout_s, also=mistyped_value)
        return None if said is None else MonitorError(said)

    @contextlib.contextmanager
    def _rebuild_lock(self) -> Iterator[None]:
        """Hold the ``flock`` of :data:`REBUILD_LOCK` (waits for another process's rebuild).

        Raises:
            StorageError: the lock file cannot be opened (a read-only directory).
        """
        path = self.db_path.parent / REBUILD_LOCK
        try:
            fh = open(path, "a+")  # noqa: SIM115  (closed below)
        except OSError as exc:
            raise StorageError(f"cannot lock {path} to make the metrics database afresh: "
                               f"{exc.strerror or exc}") from exc
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _rebuilding.path = os.path.abspath(self.db_path)
            try:
                yield
            finally:
                _rebuilding.path = None
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _make_afresh(self) -> None:
        """Under the lock: decide again (another process may have rebuilt the database while
        this one waited), move a damaged file aside, create the database, re-record the rounds."""
        if self._is_blank():
            why = ("was missing" if not self.db_path.exists() else "was empty (0 bytes)")
            aside = None
        elif self._checked_schema():
            return
        else:
            why, aside = f"is damaged ({self._damage})", self._move_aside()
        if not self._checked_schema():
            raise MonitorError(f"metrics database {self.db_path} made afresh is damaged: "
                               f"{self._damage}")
        done, failed, settled = self._rebuild()
        if aside is None and not failed and (not settled or done <= 1):
            return  # a first start, or a device's first round (a fleet device that never ran
            # the runtime records its first adoption, staged or rejected): nothing was lost
        kept = f"; the damaged copy is kept as {aside}" if aside is not None else ""
        missed = (f"; not re-recorded: {', '.join(failed)} (every start tries again)"
                  if failed else "")
        log.warning("metrics database %s %s: made afresh and re-recorded %d round%s from the "
                    "model versions%s%s", self.db_path, why, done, "" if done == 1 else "s",
                    kept, missed)

    def _move_aside(self) -> Path:
        """Rename the damaged database, its ``-wal`` and its ``-shm`` to
        ``metrics.sqlite.corrupt-<UTC time>[-wal|-shm]`` (the WAL first: a new database must
        not replay the damaged one's), then flush the directory.

        Returns:
            Where the database went.

        Raises:
            StorageError: a rename failed (read-only directory, no permission): the database
                itself is still in place.
        """
        # as classes.json.corrupt-<UTC time> (edgecl.models.classes): 2026-05-04T101112+0000
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds").replace(":", "")
        aside = damaged_copy_path(self.db_path, stamp, ("", "-wal", "-shm"))
        try:
            for suffix in ("-wal", "-shm", ""):
                src = self.db_path.with_name(self.db_path.name + suffix)
                if src.exists():
                    os.replace(src, aside.with_name(aside.name + suffix))
            fsync_dir(self.db_path.parent)
        except OSError as exc:
            raise StorageError(f"metrics database {self.db_path} is damaged ({self._damage}) and "
                               f"cannot be moved aside: {exc.strerror or exc}") from exc
        return aside

    def _rebuild(self) -> tuple[int, list[str]]:
        """Record into the database made afresh the rounds of the model versions that keep
        their round's record, oldest first, each followed by the status the registry holds
        its version in (so a round's ACC and BWT are computed over the versions promoted
        before it, as when it was first recorded); a rejected round moves the learner's
        round number past it, as :func:`edgecl.runtime.learner.record_missing_rounds` does.

        Returns:
            ``(rounds recorded, versions not recorded with why, rounds recorded whose version
            is no longer staged)``: only those last can have been in a lost database. A
            fault is contained here (the database stays usable, and every start records
            what is missing).
        """
        versions = _round_versions(self.state_dir)
        if not versions:
            return 0, [], 0
        from edgecl.continual.round import ROUND_RECORD_FILE, read_round_record
        from edgecl.models.registry import Registry

        done, failed, settled = 0, [], 0
        try:
            registry = Registry(self.state_dir / "models")
            wanted = chain_statuses(registry)
            for version in versions:
                try:
                    kwargs = read_round_record(registry.file_path(version, ROUND_RECORD_FILE))
                except (EdgeclError, OSError, ValueError) as exc:
                    failed.append(f"{version} ({exc})")
                    continue
                try:
                    self.record_finished_round(version=version, **kwargs)
                except (EdgeclError, OSError, ValueError) as exc:
                    failed.append(f"{version} ({exc})")
                    continue
                status = wanted.get(version, kwargs["status"])
                self.follow_registry({version: status})
                if kwargs["status"] == "rejected":
                    _move_progress_past(self.state_dir, kwargs["round_no"])
                done += 1
                settled += status != "staged"
        except (EdgeclError, OSError) as exc:
            failed.append(f"the rest ({exc})")
        return done, failed, settled

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived reading connection in autocommit mode; damage becomes :class:`MonitorError`."""
        if self._schema_pending:  # opened on a full disk: the schema first, where there is room
            with contextlib.suppress(StorageError), self._write(transaction=False):
                pass
        try:
            if self._copy is not None:
                conn = self._copy.connect(isolation_level=None)
                conn.execute("PRAGMA query_only=ON")
            else:
                conn = sqlite_room.connect(self.db_path, timeout=self.busy_timeout_s,
                                           isolation_level=None)
        except sqlite3.Error as exc:
            raise MonitorError(f"cannot open metrics database {self.db_path}: {exc}") from exc
        try:
            if self._copy is None:
                conn.execute("PRAGMA synchronous=FULL")
            yield conn
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise self._damaged(exc) from exc
            raise MonitorError(f"metrics database {self.db_path}: {exc}") from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self, transaction: bool = True, learning: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection inside one immediate transaction: all of the block or nothing.

        Args:
            transaction: run the block inside ``BEGIN IMMEDIATE`` ... ``COMMIT``.
            learning: the block changes rounds, evaluations or names (not only runtime
                samples): it advances the learning stamp, so that every process's cached
                matrices are recomputed.

        Raises:
            StorageError: when SQLite cannot write (full disk, locked, read-only, I/O error).
            MonitorError: when the file is not a database.
        """
        if self._copy is not None:
            raise StorageError(f"metrics database {self.db_path} cannot be written: it is "
                               f"read-only here" if self.read_only else
                               f"metrics database {self.db_path} was opened to read only")
        try:
            if self._schema_pending:
                self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite_room.connect(self.db_path, timeout=self.busy_timeout_s,
                                       isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open metrics database {self.db_path}: "
                               f"{error_reason(exc, self.db_path)}") from exc
        try:
            conn.execute("PRAGMA synchronous=FULL")
            if self._schema_pending:  # opened on a full disk (wait_for_room): there is room now
                _bring_schema_up_to_date(conn)
                self._schema_pending = False
            if not transaction:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if learning:
                    conn.execute("UPDATE learning_stamp SET n = n + 1 WHERE id = 0")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise MonitorError(f"metrics database {self.db_path}: {exc}") from exc
            raise StorageError(f"metrics database {self.db_path} cannot be written: "
                               f"{error_reason(exc, self.db_path)}") from exc
        finally:
            conn.close()

    def record_finished_round(self, *, round_no, version, status, reason, seconds, evaluation,
                              columns, class_names=None, calibration=None, baseline=None) -> dict:
        """Record a learning round: its evaluation, its row (with the ACC, BWT and forgetting
        the evaluation gives), its calibration. The round's recording hook, and the rebuild of
        a database made afresh from the versions' round records, both write through this.

        A ``baseline`` (:func:`edgecl.continual.round.start_baseline`: the model the device
        started with, evaluated by a round that learnt on top of it) not recorded yet
        becomes a row of the round before (round 0 for a first round), in the chain of promoted
        versions, so forgetting counts from the start's scores; a later round on top of it (the
        first was rejected) replaces that row's scores with its own baseline's.

        Args:
            round_no, version, status, reason, seconds, evaluation, columns, class_names,
                calibration, baseline: what :func:`edgecl.continual.round.write_round_record`
                keeps.

        Returns:
            The figures computed for the round (``acc``, ``bwt``, ``mean_forgetting`` ...).

        Raises:
            StorageError: the database cannot be written.
        """
        if baseline is not None:
            at = self._baseline_round(baseline["version"])
            if at is not None or baseline["version"] not in self.recorded_versions():
                # the newest baseline replaces an earlier one, in its row: it was measured on
                # the held-out slice this round's candidate is (before, a rejected first round's
                # stayed, and a class its slice lacked had no start score for good)
                before = int(round_no) - 1 if at is None else at
                self.record_evaluation(before, baseline["version"], baseline["evaluation"],
                                       columns, class_names=class_names)
                self.record_round(before, baseline["version"], "promoted", reason=START_REASON)
        self.record_evaluation(round_no, version, evaluation, columns, class_names=class_names)
        # computed once: the round's row does not change the candidate's view (O(rounds) each)
        computed = self.candidate_metrics(round_no, version)
        self.record_round(round_no, version, getattr(status, "value", status), reason=reason,
                          seconds=seconds, acc=computed["acc"], bwt=computed["bwt"],
                          mean_forgetting=computed["mean_forgetting"])
        if calibration is not None:
            self.record_calibration(round_no, version, calibration)
        return computed

    def _baseline_round(self, version: str) -> int | None:
        """The round of ``version``'s row as the model the device started with
        (:data:`START_REASON`), None when it has none."""
        with self._connect() as conn:
            row = conn.execute("SELECT round FROM rounds WHERE model_version = ? AND reason = ?",
                               (version, START_REASON)).fetchone()
        return None if row is None else int(row[0])

    def unrecorded_versions(self) -> list[str]:
        """The model versions that keep their round's record but whose round is not in the
        database (a database deleted, emptied or damaged; a kill before the round recorded
        it): a writer's next open, or the runtime's next start, records them. Reads the
        models folder only (changes nothing).

        Returns:
            Version names, oldest first.
        """
        recorded = self.recorded_versions()
        return [v for v in _round_versions(self.state_dir) if v not in recorded]

    def _learning_stamp(self) -> int:
        """How many learning writes the database has seen (any process); -1 when unknown."""
        with self._connect() as conn:
            row = conn.execute("SELECT n FROM learning_stamp WHERE id = 0").fetchone()
        return -1 if row is None else int(row[0])

    def _memo(self, key: tuple, compute):
        """``compute()``, reused until the next learning write (runtime samples do not count).

        Matrices are read after every frame batch's scrape and every selection check, and cost
        O(rounds x classes) to rebuild: after weeks of rounds, reading them anew each time made
        ``/metrics`` take over a second. One small query of the stamp replaces that.
        """
        stamp = self._learning_stamp()
        hit = self._memo_cache.get(key)
        if hit is not None and hit[0] == stamp and stamp >= 0:
            return hit[1]
        value = compute()
        if len(self._memo_cache) >= MEMO_ENTRIES:
            self._memo_cache.clear()
        self._memo_cache[key] = (stamp, value)
        return value

    def record_evaluation(self, round_no: int, model_version: str, results: Mapping,
                          task_order: Sequence[str], ts_s: float | None = None,
                          class_names: Mapping[int, str] | None = None) -> None:
        """Store one version's evaluation on every task (replaces a previous identical key).

        Args:
            round_no: learning round the version came from.
            model_version: registry version name, e.g. ``v0003``.
            results: task name -> :class:`~edgecl.continual.evaluate.EvalResult` (its per-class
                AP50-95, recall and instance counts are stored too).
            task_order: all task names in the order they are learnt (gives the column index).
            ts_s: time of the evaluation (default now).
            class_names: class id -> name (the class registry's), stored for the class view.

        Raises:
            MonitorError: when a task of ``results`` is missing from ``task_order``.
            StorageError: when the database cannot be written (nothing is kept).
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
            if class_names:
                # read under the write lock: a rename made while the round ran wrote the
                # registry before the database, so it is seen here or it writes after us
                _write_names(conn, {**class_names, **self._registry_names(class_names)})
            _thin_details(conn)

    @staticmethod
    def _replace_details(conn: sqlite3.Connection, key: tuple[int, str], task: str, res) -> None:
        """Rewrite the per-class AP and reliability rows of one (round, version, task)."""
        for table in ("class_ap", "reliability"):
            conn.execute(f"DELETE FROM {table} WHERE round=? AND model_version=? AND task=?",
                         (*key, task))
        recall = getattr(res, "per_class_recall", {}) or {}
        instances = getattr(res, "per_class_instances", {}) or {}
        conn.executemany(
            "INSERT INTO class_ap (round, model_version, task, cls, ap50_95, recall, n_instances) "
            "VALUES (?,?,?,?,?,?,?)",
            [(*key, task, int(c), _nan_to_none(float(v)),
              _nan_to_none(None if recall.get(c) is None else float(recall[c])),
              None if instances.get(c) is None else int(instances[c]))
             for c, v in res.per_class_ap50_95.items()])
        bins = res.reliability
        if bins is None:
            return
        conn.executemany(
            "INSERT INTO reliability VALUES (?,?,?,?,?,?,?,?,?)",
            [(*key, task, b, float(bins.bin_edges[b]), float(bins.bin_edges[b + 1]),
              _nan_to_none(float(bins.conf_mean[b])), _nan_to_none(float(bins.precision[b])),
              int(bins.counts[b])) for b in range(len(bins.counts))])

    def _registry_names(self, ids: Mapping[int, str]) -> dict[int, str]:
        """The class registry's names now for these class ids (a round records the names it
        started with; a class renamed since keeps its new name). Empty where the state directory
        has no readable registry (a benchmark's scratch database)."""
        from edgecl.models.classes import ClassRegistry

        try:
            now = ClassRegistry(self.state_dir).names()
        except (EdgeclError, OSError) as exc:
            log.debug("metrics keep the round's class names: %s", exc)
            return {}
        return {int(c): now[int(c)] for c in ids if int(c) in now}

    def _merged_names(self) -> set[str]:
        """The names of the classes merged into another (``classes merge``): the summary and
        ``/metrics`` leave them out (before, a merged class's last AP stood among the device's
        classes until the next round); the matrix keeps their history. Empty without a
        readable registry."""
        from edgecl.models.classes import ClassRegistry

        try:
            registry = ClassRegistry(self.state_dir)
            names = registry.names()
            return {names[c] for c in registry.merged() if c in names}
        except (EdgeclError, OSError) as exc:
            log.debug("merged classes not read: %s", exc)
            return set()

    def set_class_names(self, names: Mapping[int, str]) -> None:
        """Store class names (the class registry's) for the class view; a renamed class follows.

        Args:
            names: class id -> name.

        Raises:
            StorageError: when the database cannot be written.
        """
        with self._write() as conn:
            _write_names(conn, names)

    def follow_names(self, names: Mapping[int, str]) -> bool:
        """Store the registry's names where the database names a class otherwise (a rename
        made by a release that did not tell the monitor: its summary, report, ``/metrics`` and
        Forgetting page kept the old name until the next round).

        Args:
            names: class id -> name (the class registry's).

        Returns:
            Whether anything was written.

        Raises:
            StorageError: when the database cannot be written.
        """
        stored = self.class_names()
        if not any(c in names and names[c] != n for c, n in stored.items()):
            return False
        self.set_class_names(names)
        return True

    def class_names(self) -> dict[int, str]:
        """Class id -> name as last stored.

        Returns:
            The names (empty when none was stored).
        """
        with self._connect() as conn:
            return {int(c): str(n) for c, n in conn.execute("SELECT cls, name FROM class_names")}

    def record_calibration(self, round_no: int, model_version: str, report: Mapping) -> None:
        """Store a version's post-hoc calibration report (D-ECE before/after with its protocol).

        Args:
            round_no: the version's round.
            model_version: the version.
            report: the report of :func:`edgecl.calibration.posthoc.fit_for_version`
                (JSON-serialisable; ``dece_before``, ``dece_after``, ``protocol``, ...).

        Raises:
            StorageError: when the database cannot be written.
        """
        text = json.dumps(report, allow_nan=False, default=json_default)
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO calibration VALUES (?,?,?,?,?,?)",
                         (int(round_no), str(model_version), _nan_to_none(report.get("dece_before")),
                          _nan_to_none(report.get("dece_after")), text, time.time()))
            _thin_details(conn)

    def calibration(self, model_version: str) -> dict | None:
        """The calibration report stored for a version.

        Args:
            model_version: the version.

        Returns:
            The report dict, or None when none was recorded.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT report FROM calibration WHERE model_version=? "
                               "ORDER BY round DESC LIMIT 1", (str(model_version),)).fetchone()
        if row is None:
            return None
        try:
            report = json.loads(row[0])
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("metrics database: the calibration report of %s is damaged and is "
                        "ignored (%s)", model_version, exc)
            return None
        if not isinstance(report, dict):
            log.warning("metrics database: the calibration report of %s is not a mapping and is "
                        "ignored", model_version)
            return None
        for key in ("per_class", "thresholds", "protocol"):
            if key in report and not isinstance(report[key], dict):
                log.warning("metrics database: '%s' of the calibration report of %s is damaged "
                            "and is ignored", key, model_version)
                report[key] = {}
        report["per_class"] = {k: v for k, v in (report.get("per_class") or {}).items()
                               if isinstance(v, dict)}
        return report

    def record_round(self, round_no: int, model_version: str, status: str, reason: str = "",
                     acc: float | None = None, bwt: float | None = None,
                     mean_forgetting: float | None = None, seconds: float | None = None) -> None:
        """Store the outcome of a learning round (every round is kept).

        ACC, BWT and mean forgetting default to :meth:`candidate_metrics` of the version.

        Args:
            round_no: learning round.
            model_version: the candidate version.
            status: ``staged``, ``promoted`` or ``rejected``.
            reason: why (gate verdict), free text.
            acc: average mAP50-95 over the tasks (or classes) seen.
            bwt: backward transfer.
            mean_forgetting: mean forgetting over earlier tasks (or classes).
            seconds: wall time of the round.

        Raises:
            ValueError: on an unknown status.
            StorageError: when the database cannot be written.
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
        if int(round_no) > DETAIL_ROUNDS and int(round_no) % VACUUM_EVERY_ROUNDS == 0:
            self._repack()

    def _repack(self) -> None:
        """Give the room thinned rows left back to the card (``VACUUM``; the write-ahead log is
        checkpointed without waiting for readers: a console reading at that moment held a
        truncating checkpoint, and the round's recording, for the busy timeout). A failure (a
        full card: VACUUM writes a copy; another process writing) is logged, and a later round
        tries again."""
        try:
            with self._write(transaction=False, learning=False) as conn:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (EdgeclError, sqlite3.Error) as exc:
            log.warning("metrics database %s not repacked (a later round tries again): %s",
                        self.db_path, exc)

    def record_runtime(self, fps: float, latency_ms_p50: float, memory_bytes: int,
                       memory_samples: int, model_version: str, ts_s: float | None = None) -> None:
        """Store one runtime sample of the inference loop and the replay memory.

        Older samples are thinned in the same transaction (see the class docstring), so the
        table stays bounded however long the device runs.

        Args:
            fps: frames per second over the last window.
            latency_ms_p50: median capture-to-detection latency in milliseconds.
            memory_bytes: bytes used by the replay memory on disk.
            memory_samples: samples held by the replay memory.
            model_version: version being served.
            ts_s: time of the sample (default now).

        Raises:
            StorageError: when the database cannot be written (the sample is dropped).
        """
        with self._write(learning=False) as conn:
            conn.execute("INSERT INTO runtime VALUES (?,?,?,?,?,?)",
                         (time.time() if ts_s is None else ts_s, fps, latency_ms_p50,
                          int(memory_bytes), int(memory_samples), str(model_version)))
            self._thin_runtime(conn)

    def _thin_runtime(self, conn: sqlite3.Connection) -> None:
        """Keep the newest rows whole, one row per bucket before them, at most a bounded number.

        INVARIANT: the runtime table holds at most ``max_runtime_rows + max_downsampled_rows``
        rows after every write.
        """
        row = conn.execute("SELECT rowid FROM runtime ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                           (self.max_runtime_rows - 1,)).fetchone()
        if row is None:
            return
        cutoff = int(row[0])
        conn.execute(
            "DELETE FROM runtime WHERE rowid < :cut AND rowid NOT IN (SELECT MIN(rowid) FROM runtime "
            "WHERE rowid < :cut GROUP BY CAST(ts_s / :bucket AS INTEGER))",
            {"cut": cutoff, "bucket": self.runtime_downsample_s})
        conn.execute(
            "DELETE FROM runtime WHERE rowid < :cut AND rowid NOT IN (SELECT rowid FROM runtime "
            "WHERE rowid < :cut ORDER BY rowid DESC LIMIT :keep)",
            {"cut": cutoff, "keep": self.max_downsampled_rows})

    def follow_registry(self, statuses: Mapping[str, str]) -> int:
        """Give each recorded round's version the status the registry holds it in.

        A rolled-back version is ``retired`` in the registry and leaves the chain of promoted
        versions that the matrix, ACC and BWT are computed over; promoted again, it returns.
        Versions the registry no longer holds (pruned) keep their rows as they are.

        Args:
            statuses: version -> the registry's status (statuses outside :data:`STATUSES`,
                e.g. ``corrupt``, are left alone).

        Returns:
            Rows changed.

        Raises:
            StorageError: when the database cannot be written.
        """
        wanted = [(status, version) for version, status in statuses.items() if status in STATUSES]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany("UPDATE rounds SET status = ? WHERE model_version = ? "
                             "AND status != ?", [(s, v, s) for s, v in wanted])
            return conn.total_changes - before

    def recorded_versions(self) -> set[str]:
        """The versions whose round is recorded (any status).

        Returns:
            Version names.
        """
        with self._connect() as conn:
            return {str(v) for (v,) in conn.execute("SELECT DISTINCT model_version FROM rounds")}

    def set_version_status(self, model_version: str, status: str) -> None:
        """Change the recorded status of a version's round (``staged`` -> ``promoted``).

        A version that no round produced (added by hand) is not in the table: nothing changes.

        Raises:
            ValueError: on an unknown status.
            StorageError: when the database cannot be written.
        """
        if status not in STATUSES:
            raise ValueError(f"round status must be one of {STATUSES}, got {status!r}")
        with self._write() as conn:
            conn.execute("UPDATE rounds SET status = ? WHERE model_version = ?",
                         (status, str(model_version)))

    def resolve_kind(self, kind: str = "auto") -> str:
        """The matrix view ``auto`` stands for: ``classes`` once frames that carry no task were
        evaluated (also after benchmark tasks: the stream's classes grow), else ``tasks``.

        Args:
            kind: ``auto``, ``tasks`` or ``classes``.

        Returns:
            ``tasks`` or ``classes``.

        Raises:
            ValueError: on an unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind != "auto":
            return kind
        return self._memo(("kind",), self._auto_kind)

    def _auto_kind(self) -> str:
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM evaluations WHERE task = ? LIMIT 1",
                               (STREAM_TASK,)).fetchone()
        return "classes" if row is not None else "tasks"

    def matrix_view(self, status: str | None = "promoted",
                    extra: tuple[int, str] | None = None, kind: str = "tasks") -> MatrixView:
        """Accuracy matrix (rows: evaluated versions by round; columns: tasks or classes).

        Args:
            status: keep only versions whose round has this status; None keeps every evaluation.
            extra: one more ``(round, version)`` to keep whatever its status (a candidate).
            kind: ``tasks`` (columns by task index), ``classes`` (per-class AP50-95, columns by
                class id; a class evaluated in several tasks of one round is pooled, weighted by
                its held-out boxes) or ``auto`` (:meth:`resolve_kind`).

        Returns:
            The :class:`MatrixView`.

        Raises:
            ValueError: on an unknown status or kind.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        kind = self.resolve_kind(kind)
        if kind == "classes":
            return self._class_matrix(status, extra, "ap50_95")
        return self._memo(("tasks", status, extra), lambda: self._task_matrix(status, extra))

    def _task_matrix(self, status: str | None, extra: tuple[int, str] | None) -> MatrixView:
        """Per-task matrix of mAP50-95 (see :meth:`matrix_view`)."""
        rows = self._evaluation_rows(status, extra)
        tasks = sorted({(idx, name) for _, _, name, idx, _ in rows})
        task_names = list(dict.fromkeys(name for _, name in tasks))
        row_of = {key: i for i, key in enumerate(dict.fromkeys((r, v) for r, v, *_ in rows))}
        col_of = {name: j for j, name in enumerate(task_names)}
        values = np.full((len(row_of), len(task_names)), np.nan)
        for round_no, version, name, _, value in rows:
            values[row_of[(round_no, version)], col_of[name]] = _num(value)
        keys = list(row_of)
        with self._connect() as conn:
            fleet = self._fleet_rounds(conn, keys)
        values.flags.writeable = False  # shared by every reader until the next learning write
        return MatrixView(values, task_names, [v for _, v in keys], [r for r, _ in keys],
                          fleet_rounds=fleet)

    def _status_filter(self, status: str | None, extra: tuple[int, str] | None,
                       alias: str) -> tuple[str, list]:
        """SQL ``WHERE`` clause keeping rows of versions with ``status`` (plus ``extra``)."""
        if status is None:
            return "", []
        sql, params = " WHERE r.status = ?", [status]
        if extra is not None:
            sql += f" OR ({alias}.round = ? AND {alias}.model_version = ?)"
            params.extend([int(extra[0]), str(extra[1])])
        return sql, params

    def _evaluation_rows(self, status: str | None, extra: tuple[int, str] | None) -> list[tuple]:
        """(round, version, task, task_index, map50_95) rows ordered by round, then as recorded."""
        where, params = self._status_filter(status, extra, "e")
        sql = ("SELECT e.round, e.model_version, e.task, e.task_index, e.map50_95, e.rowid "
               "FROM evaluations e LEFT JOIN rounds r "
               "ON r.round = e.round AND r.model_version = e.model_version" + where)
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        order = _row_order([(r, v, seq) for r, v, *_, seq in rows])
        rows.sort(key=lambda row: order[(row[0], row[1])])
        return [row[:5] for row in rows]

    def _fleet_rounds(self, conn: sqlite3.Connection, keys: list) -> tuple[int | None, ...]:
        """The fleet round of each ``(round, version)`` row a fleet adoption recorded (its
        reason reads ``fleet round N: ...``, :func:`fleet_reason`), None for a local round's."""
        reasons = {(int(r), str(v)): why for r, v, why in conn.execute(
            "SELECT round, model_version, reason FROM rounds")}
        return tuple(fleet_round_of(reasons.get((int(r), str(v)))) for r, v in keys)

    def _class_matrix(self, status: str | None, extra: tuple[int, str] | None,
                      column: str, only: tuple[tuple[int, str], ...] | None = None) -> MatrixView:
        """Per-class matrix of ``column`` (``ap50_95``, ``recall`` or ``n_instances``); with
        ``only``, of those ``(round, version)`` rows alone (``status`` must be None)."""
        return self._memo(("classes", status, extra, column, only),
                          lambda: self._read_class_matrix(status, extra, column, only))

    def _read_class_matrix(self, status: str | None, extra: tuple[int, str] | None,
                           column: str, only: tuple[tuple[int, str], ...] | None) -> MatrixView:
        where, params = self._status_filter(status, extra, "e")
        if only:
            where = " WHERE (e.round, e.model_version) IN (VALUES " + ", ".join(
                "(?, ?)" for _ in only) + ")"
            params = [item for key in only for item in (int(key[0]), str(key[1]))]
        sql = (f"SELECT e.round, e.model_version, c.cls, c.{column}, c.n_instances, e.rowid "
               "FROM class_ap c JOIN evaluations e ON e.round = c.round "
               "AND e.model_version = c.model_version AND e.task = c.task "
               "LEFT JOIN rounds r ON r.round = e.round AND r.model_version = e.model_version"
               + where)
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
            names = {int(c): str(n) for c, n in conn.execute("SELECT cls, name FROM class_names")}
            order = _row_order([(r, v, seq) for r, v, *_, seq in rows])
            keys = sorted(order, key=order.get)
            fleet = self._fleet_rounds(conn, keys)
        class_ids = sorted({int(row[2]) for row in rows})
        row_of = {key: i for i, key in enumerate(keys)}
        col_of = {cls: j for j, cls in enumerate(class_ids)}
        total = np.zeros((len(keys), len(class_ids)))
        weight = np.zeros_like(total)
        kept = [row for row in rows if row[3] is not None]
        if kept:
            at = (np.fromiter((row_of[(r[0], r[1])] for r in kept), np.int64, len(kept)),
                  np.fromiter((col_of[int(r[2])] for r in kept), np.int64, len(kept)))
            value = np.fromiter((float(r[3]) for r in kept), np.float64, len(kept))
            if column == "n_instances":  # counts add up over tasks
                np.add.at(total, at, value)
                np.add.at(weight, at, 1.0)
            else:  # AP and recall are pooled over tasks, weighted by held-out boxes
                w = np.fromiter((1.0 if r[4] is None else max(float(r[4]), 1e-9) for r in kept),
                                np.float64, len(kept))
                np.add.at(total, at, w * value)
                np.add.at(weight, at, w)
        divisor = np.ones_like(weight) if column == "n_instances" else np.where(weight > 0, weight, 1)
        values = np.where(weight > 0, total / divisor, np.nan)
        values.flags.writeable = False  # shared by every reader until the next learning write
        return MatrixView(values, [names.get(c, str(c)) for c in class_ids],
                          [v for _, v in keys], [r for r, _ in keys], "classes", tuple(class_ids),
                          fleet)

    def accuracy_matrix(self, kind: str = "auto", status: str | None = "promoted",
                        last: int | None = None) -> dict:
        """Accuracy matrix for display (the web console's shape).

        Args:
            kind: ``auto``, ``tasks`` or ``classes`` (see :meth:`matrix_view`).
            status: ``promoted`` (default), ``staged``, ``rejected``, or None for every
                evaluation.
            last: only the newest ``last`` rows (None: every row).

        Returns:
            ``{"kind", "rows": ["r3 v0003", "fleet 2 v0004", ...] (:meth:`MatrixView.row_labels`),
            "columns": [task or class names],
            "values": [[float | None]], "versions", "rounds", "rows_total"}`` (None where not
            evaluated; ``rows_total``: rows before ``last`` cut them).

        Raises:
            ValueError: on an unknown kind or status.
        """
        view = self.matrix_view(status, kind=kind)
        start = _window_start(len(view.versions), last)
        return {"kind": view.kind, "rows": view.row_labels()[start:],
                "columns": list(view.task_names),
                "values": [[_nan_to_none(float(v)) for v in row] for row in view.values[start:]],
                "versions": list(view.versions[start:]), "rounds": list(view.rounds[start:]),
                "rows_total": len(view.versions)}

    def per_class_ap_over_rounds(self, status: str | None = "promoted",
                                 last: int | None = None) -> dict[str, list]:
        """AP50-95 of every class after each round (the rows of :meth:`accuracy_matrix` ``classes``).

        Args:
            status: as for :meth:`matrix_view`.
            last: only the newest ``last`` rounds (None: every round).

        Returns:
            class name -> one value per row (None where the class was not evaluated).
        """
        view = self.matrix_view(status, kind="classes")
        start = _window_start(len(view.versions), last)
        return {name: [_nan_to_none(float(v)) for v in view.values[start:, j]]
                for j, name in enumerate(view.task_names)}

    def forgetting_classes(self, threshold: float, min_instances: int = 1) -> set[int]:
        """Classes whose held-out AP50-95 or recall fell by more than ``threshold`` in the last round.

        The last round is the latest evaluated version, whatever its status; it is compared with
        the latest promoted version evaluated before it (for a rejected candidate: the model it
        was trained from, still serving). Used by the ``forgetting`` selection policy.

        Args:
            threshold: drop (AP50-95 or recall, 0..1) above which a class counts as forgotten.
            min_instances: held-out boxes a class needs in the last round to count.

        Returns:
            Class ids (empty when fewer than two versions were evaluated).
        """
        keys = self._evaluated_versions()
        if len(keys) < 2:
            return set()
        earlier = [key for key, status in keys[:-1] if status == "promoted"]
        if not earlier:
            return set()
        pair = (earlier[-1], keys[-1][0])  # only these two rows: O(classes), not O(rounds)
        ap, recall, counts = (self._class_matrix(None, None, column, only=pair)
                              for column in ("ap50_95", "recall", "n_instances"))
        fell = (np.nan_to_num(metrics.row_drop(ap.values, -1, 0), nan=-1.0) > threshold) | (
            np.nan_to_num(metrics.row_drop(recall.values, -1, 0), nan=-1.0) > threshold)
        enough = np.nan_to_num(counts.values[-1], nan=float(min_instances)) >= min_instances
        return {cls for cls, hit in zip(ap.class_ids, fell & enough) if hit}

    def _evaluated_versions(self) -> list[tuple[tuple[int, str], str | None]]:
        """Every evaluated ``(round, version)`` in matrix row order, with its round's status."""
        def read() -> list:
            with self._connect() as conn:
                rows = conn.execute(
                    "SELECT e.round, e.model_version, MIN(e.rowid), r.status FROM evaluations e "
                    "LEFT JOIN rounds r ON r.round = e.round AND r.model_version = e.model_version "
                    "GROUP BY e.round, e.model_version").fetchall()
            order = _row_order([(r, v, seq) for r, v, seq, _ in rows])
            status = {(r, v): st for r, v, _, st in rows}
            return [(key, status[key]) for key in sorted(order, key=order.get)]
        return self._memo(("evaluated",), read)

    def class_ap(self, model_version: str) -> dict[str, float | None]:
        """Held-out AP50-95 per class of one evaluated version (e.g. for the console's model list).

        Args:
            model_version: the version.

        Returns:
            class name -> AP50-95 (None where not evaluated); empty when the version has no
            stored evaluation.
        """
        view = self.matrix_view(None, kind="classes")
        rows = [i for i, v in enumerate(view.versions) if v == str(model_version)]
        if not rows:
            return {}
        return {name: _nan_to_none(float(v)) for name, v in zip(view.task_names, view.values[rows[-1]])}

    def candidate_metrics(self, round_no: int, model_version: str, kind: str = "auto") -> dict:
        """ACC, BWT and forgetting if this version were promoted after the promoted ones.

        Args:
            round_no: the candidate's round.
            model_version: the candidate's version.
            kind: matrix view of ``acc``, ``bwt``, ``mean_forgetting`` and ``forgetting``.

        Returns:
            ``{"kind", "acc", "bwt", "mean_forgetting", "forgetting": {column: value},
            "class_forgetting": {name: value}, "class_ap50_95": {name: value}}`` (None for NaN);
            the ``class_*`` entries come from the class view whatever ``kind`` is.
        """
        kind = self.resolve_kind(kind)
        view = self.matrix_view("promoted", extra=(round_no, model_version), kind=kind)
        classes = view if kind == "classes" else self.matrix_view(
            "promoted", extra=(round_no, model_version), kind="classes")
        out = {"kind": kind, **metrics.summarize(view.values, view.task_names)}
        out["class_forgetting"] = metrics.summarize(classes.values, classes.task_names)["forgetting"]
        out["class_ap50_95"] = _last_row(classes)
        return out

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
        bins = self._version_bins(view.rounds[-1], view.versions[-1])
        return None if bins is None else (view.rounds[-1], view.versions[-1], bins)

    def _version_bins(self, round_no: int, version: str) -> ReliabilityBins | None:
        """Reliability bins of one evaluated version pooled over its tasks (None if none)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT task, lo, hi, conf_mean, precision, count FROM reliability "
                                "WHERE round=? AND model_version=? ORDER BY task, bin",
                                (int(round_no), str(version))).fetchall()
        per_task: dict[str, list] = {}
        for task, *rest in rows:
            per_task.setdefault(task, []).append(rest)
        if not per_task:
            return None
        return merge_bins([_bins_from_rows(r) for r in per_task.values()])

    def reliability(self, version: str | None = None) -> dict:
        """Reliability diagram data of a version (the web console's shape).

        Args:
            version: a model version; None for the latest promoted one.

        Returns:
            ``{"version", "round", "bins": [{"lo", "hi", "confidence", "precision", "count"}],
            "dece", "protocol", "calibration"}``: the raw confidences of the version's held-out
            evaluation (pooled over its tasks) under ``protocol``; ``calibration`` is the stored
            post-hoc calibration (``dece_before``, ``dece_after``, ``protocol``, ``bins`` after
            calibration) or None. A version without a stored evaluation (or no promoted version)
            gets ``round`` None and no bins.
        """
        if version is None:
            view = self.matrix_view("promoted")
            round_no, version = (view.rounds[-1], view.versions[-1]) if view.versions else (None, None)
        else:
            with self._connect() as conn:
                row = conn.execute("SELECT MAX(round) FROM evaluations WHERE model_version=?",
                                   (str(version),)).fetchone()
            round_no = None if row is None or row[0] is None else int(row[0])
        if round_no is None:
            return {"version": version, "round": None, "bins": [], "dece": None,
                    "protocol": dict(DECE_PROTOCOL), "calibration": None}
        bins = self._version_bins(round_no, version)
        report = self.calibration(version)
        calibration = None if report is None else {
            "dece_before": report.get("dece_before"), "dece_after": report.get("dece_after"),
            "protocol": report.get("protocol"), "bins": report.get("reliability_after"),
            "thresholds": report.get("thresholds"),
            "target_precision": report.get("target_precision")}
        return {"version": version, "round": round_no,
                "bins": [] if bins is None else bins_to_records(bins),
                "dece": None if bins is None else _nan_to_none(dece_from_bins(bins)),
                "protocol": dict(DECE_PROTOCOL), "calibration": calibration}

    def rounds(self) -> list[dict]:
        """All recorded rounds, oldest first.

        Returns:
            One dict per round with the columns of the ``rounds`` table.
        """
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM rounds ORDER BY round, rowid").fetchall()
        return [dict(row) for row in rows]

    def latest_runtime(self) -> dict | None:
        """The runtime sample written last, or None (by insertion order, not by its wall-clock
        time: after the clock went back, the newest row has the older time)."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM runtime ORDER BY rowid DESC LIMIT 1").fetchone()
        return None if row is None else dict(row)

    def summary(self) -> dict:
        """Current state of learning and serving, computed from the promoted versions.

        Returns:
            Dict with ``round`` (the learner's round; a fleet adoption keeps the last local
            one), ``fleet_round`` (the fleet round ``model_version`` was adopted in, None for a
            local round's version), ``model_version``, ``kind`` (the view of ``acc``, ``bwt`` and
            ``mean_forgetting``: ``tasks`` or ``classes``), ``tasks``, ``acc``, ``bwt``,
            ``mean_forgetting``, ``forgetting`` (task -> value; not the stream task),
            ``map50_95`` (task -> latest),
            ``class_ap50_95`` and ``class_forgetting`` (class name -> value), ``dece``,
            ``calibration`` (``dece_before``/``dece_after`` of the latest promoted version or
            None), ``fps``, ``latency_ms_p50``, ``memory_bytes``, ``memory_samples``,
            ``n_promoted``, ``n_rejected``, ``n_rolled_back`` (rounds whose version served,
            then was rolled back: ``retired``), ``serving_version`` (what the loop ran at the last
            runtime sample), ``runtime_ts_s`` (the time of that sample, seconds since the
            epoch: fps, latency, memory and serving version are as of then); None where there
            is nothing to report. ``model_version`` is the
            latest promoted version.
        """
        view = self.matrix_view("promoted")
        kind = self.resolve_kind("auto")
        retired = self._merged_names()  # no class of their own now: not figures of the device
        classes = _without_columns(self.matrix_view("promoted", kind="classes"), retired)
        per_class = metrics.summarize(classes.values, classes.task_names)
        chosen = (per_class if kind == "classes"
                  else metrics.summarize(view.values, view.task_names))
        out = {"round": view.rounds[-1] if view.rounds else None, "kind": kind,
               # a fleet adoption's row carries the learner's last local round (0 before any):
               # the fleet round it came from, beside it (before, 'round 0' and no more)
               "fleet_round": view.fleet_rounds[-1] if view.fleet_rounds else None,
               "tasks": view.task_names, "acc": chosen["acc"], "bwt": chosen["bwt"],
               "mean_forgetting": chosen["mean_forgetting"],
               "forgetting": _task_forgetting(view)}
        out["map50_95"] = _last_row(view)
        out["class_ap50_95"] = _last_row(classes)
        out["class_forgetting"] = per_class["forgetting"]
        latest = self.latest_reliability("promoted")
        out["dece"] = None if latest is None else _nan_to_none(dece_from_bins(latest[2]))
        report = self.calibration(view.versions[-1]) if view.versions else None
        out["calibration"] = None if report is None else {
            "dece_before": report.get("dece_before"), "dece_after": report.get("dece_after")}
        runtime = self.latest_runtime() or {}
        # the model's rate (frames it can take): named apart from the Live page's 'fps', the
        # frames the camera delivered (before, one key meant both)
        out["inference_fps"] = runtime.get("fps")
        for key in ("latency_ms_p50", "memory_bytes", "memory_samples"):
            out[key] = runtime.get(key)
        out["runtime_ts_s"] = runtime.get("ts_s")  # when those five were sampled
        out["model_version"] = (view.versions[-1] if view.versions else None) or runtime.get(
            "model_version")
        out["serving_version"] = runtime.get("model_version")
        statuses = [r["status"] for r in self.rounds() if r.get("reason") != START_REASON]
        out["n_promoted"], out["n_rejected"] = statuses.count("promoted"), statuses.count("rejected")
        out["n_rolled_back"] = statuses.count("retired")
        return out


def serving_now(state_dir, sampled: str | None) -> str | None:
    """The version serving: while a runtime runs, the one its last sample names (``sampled``);
    with none running, the registry's current one, which a runtime serves when it starts.
    Before, a promotion or a rollback made while no runtime ran left the summary (and the
    report) naming the version the last runtime served. The ``current`` link is read as it is
    (:func:`~edgecl.models.registry.current_version`).

    Args:
        state_dir: the state directory.
        sampled: the version the last runtime sample names (None: no sample).
    """
    from edgecl.models.registry import current_version
    from edgecl.runtime.lock import holder_pid

    if holder_pid(state_dir) is not None:
        return sampled
    return current_version(Path(state_dir) / "models") or sampled


def _without_columns(view: MatrixView, names: set[str]) -> MatrixView:
    """``view`` without the columns named in ``names`` (the classes merged into another: their
    last AP would count in ACC, BWT and forgetting until the next round; before, 'classes
    merge drone car' left drone's AP in the summary's ACC)."""
    keep = [j for j, name in enumerate(view.task_names) if name not in names]
    if len(keep) == len(view.task_names):
        return view
    ids = tuple(view.class_ids[j] for j in keep) if view.class_ids else ()
    return view._replace(values=view.values[:, keep], class_ids=ids,
                         task_names=[view.task_names[j] for j in keep])


def _task_forgetting(view: MatrixView) -> dict[str, float]:
    """Per-task forgetting of the task view, without the stream task (see the module docstring)."""
    out = metrics.summarize(view.values, view.task_names)["forgetting"]
    out.pop(STREAM_TASK, None)
    return out


def chain_statuses(registry) -> dict[str, str]:
    """Each version's status as the monitor keeps its round: ``promoted`` for the versions of
    the registry's history (the current one and those a later promotion replaced, which the
    registry calls ``retired`` too: they stay in the chain the matrix, ACC and BWT run over),
    else the registry's status (a rolled-back version is ``retired``).

    Args:
        registry: the open :class:`~edgecl.models.registry.Registry`.

    Returns:
        version -> status, for :meth:`Monitor.follow_registry`.
    """
    history = set(registry.history())
    return {info.version: "promoted" if info.version in history else info.status
            for info in registry.list()}


def _round_versions(state_dir: Path) -> list[str]:
    """The model versions (``STATE/models/v*``) whose manifest lists their round's record,
    oldest first; read without opening the registry (which repairs what it finds), so that a
    command that only reads changes nothing. Unreadable ones are left out."""
    from edgecl.continual.round import ROUND_RECORD_FILE
    from edgecl.models.registry import read_manifests

    return [version for version, manifest in read_manifests(state_dir / "models").items()
            if isinstance(manifest.get("files"), dict) and ROUND_RECORD_FILE in manifest["files"]]


def _move_progress_past(state_dir: Path, round_no: int) -> None:
    """Move the learner's round number past a rejected round recorded from its version (its
    number is not given again); a fault is a warning: only the number is reused."""
    from edgecl.continual.round_state import load_state, save_state

    try:
        state = load_state(state_dir)
        if round_no > state.round:
            state.round = round_no
            save_state(state_dir, state)
    except (EdgeclError, OSError, ValueError) as exc:
        log.warning("learner progress not moved past rejected round %d: %s", round_no, exc)


def _thin_details(conn: sqlite3.Connection) -> None:
    """Drop the reliability bins and the full calibration reports of rounds older than
    :data:`DETAIL_ROUNDS` (inside the caller's transaction); the newest
    :data:`DETAIL_PROMOTED` promoted versions keep theirs, and every round keeps its numbers."""
    (newest,) = conn.execute("SELECT MAX(round) FROM evaluations").fetchone()
    if newest is None or int(newest) - DETAIL_ROUNDS < 0:
        return
    cutoff = int(newest) - DETAIL_ROUNDS
    keep = ("(round, model_version) NOT IN (SELECT round, model_version FROM rounds "
            "WHERE status = 'promoted' ORDER BY round DESC LIMIT ?)")
    conn.execute(f"DELETE FROM reliability WHERE round < ? AND {keep}", (cutoff, DETAIL_PROMOTED))
    conn.execute("UPDATE calibration SET report = json_object('dece_before', dece_before, "
                 "'dece_after', dece_after, 'details', 'thinned') "
                 f"WHERE round < ? AND json_extract(report, '$.details') IS NOT 'thinned' AND {keep}",
                 (cutoff, DETAIL_PROMOTED))


def _bring_schema_up_to_date(conn: sqlite3.Connection) -> None:
    """WAL mode, the tables, the columns an older file lacks, the ``retired`` status."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA + _ROUNDS_TABLE)
    for table, column, sql_type in _MIGRATIONS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
    _allow_retired(conn)


def _allow_retired(conn: sqlite3.Connection) -> None:
    """Rebuild a ``rounds`` table created before the ``retired`` status (SQLite cannot change
    a CHECK constraint in place): one transaction, rows kept as they are."""
    def current() -> bool:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' "
                              "AND name='rounds'").fetchone()
        return "'retired'" in sql

    if current():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if current():  # another process rebuilt it while this one waited for the lock
            conn.execute("ROLLBACK")
            return
        conn.execute("ALTER TABLE rounds RENAME TO rounds_before_retired")
        conn.execute(_ROUNDS_TABLE)
        conn.execute("INSERT INTO rounds SELECT * FROM rounds_before_retired")
        conn.execute("DROP TABLE rounds_before_retired")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _write_names(conn: sqlite3.Connection, names: Mapping[int, str]) -> None:
    """Insert or rename classes in the ``class_names`` table."""
    conn.executemany("INSERT OR REPLACE INTO class_names VALUES (?, ?)",
                     [(int(c), str(n)) for c, n in names.items()])


def _row_order(keys: list[tuple[int, str, int]]) -> dict[tuple[int, str], tuple]:
    """Sort key of each (round, version): round, then when its first evaluation was recorded
    (the row's insertion order, not its wall-clock time: a version a fleet round adopted after
    the clock went back was ordered before the version it replaced), then name."""
    first: dict[tuple[int, str], int] = {}
    for round_no, version, seq in keys:
        first[(round_no, version)] = min(seq, first.get((round_no, version), seq))
    return {key: (key[0], seq, key[1]) for key, seq in first.items()}


def _window_start(n_rows: int, last: int | None) -> int:
    """First row index of the newest ``last`` of ``n_rows`` rows (0 when ``last`` is None)."""
    return 0 if last is None else max(0, n_rows - max(0, int(last)))


_FLEET_REASON = re.compile(r"fleet round (\d+): ")


def fleet_reason(fleet_round: int, reason: str) -> str:
    """The reason a fleet adoption records with its row: ``fleet round N: <gate's reason>``
    (the form :func:`fleet_round_of` reads back)."""
    return f"fleet round {int(fleet_round)}: {reason}"


def fleet_round_of(reason: str | None) -> int | None:
    """The fleet round of a row's reason written by :func:`fleet_reason` (None otherwise)."""
    match = _FLEET_REASON.match(reason or "")
    return int(match.group(1)) if match else None


def _last_row(view: MatrixView) -> dict[str, float | None]:
    """Column name -> value of the last row (empty without rows)."""
    if not view.versions:
        return {}
    return {name: _nan_to_none(float(v)) for name, v in zip(view.task_names, view.values[-1])}


def _bins_from_rows(rows: list) -> ReliabilityBins:
    """Rebuild :class:`ReliabilityBins` from ``(lo, hi, conf_mean, precision, count)`` rows."""
    edges = np.array([rows[0][0]] + [r[1] for r in rows])
    return ReliabilityBins(edges, np.array([_num(r[2]) for r in rows]),
                           np.array([_num(r[3]) for r in rows]),
                           np.array([int(r[4]) for r in rows], np.int64))
