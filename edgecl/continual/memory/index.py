"""The SQLite index of the replay memory: one row per stored sample, stream counters, meta.

WAL journal with ``synchronous=FULL``: a committed transaction survives power loss, and an
interrupted one leaves no trace. Writers take the database lock up front
(``BEGIN IMMEDIATE``), so whoever holds it may also touch the sample files.

Held out means: flagged ``held_out`` AND of a human-verified origin (not ``pseudo``). The
store never flags a pseudo-labelled row, and every query applies the same definition, so even
a hand-edited index never evaluates a model on pseudo labels.

Schema migrations run on open, in the schema transaction: an index written before a column
existed gets it with its default (``origin``: ``ground_truth``; ``image_bytes``,
``content_hash``, ``embedding``: NULL; the store computes a missing embedding from the sample's
image when it is first asked for, see :meth:`~edgecl.continual.memory.ReplayMemory.embeddings`).

``content_hash`` (the hash of the image's pixels, or of an imported file's bytes for imports of
an earlier version; NULL when unknown) is indexed for the rows that have one, so the runtime
and ``labels import`` recognise an image already in memory.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Iterator

from edgecl import sqlite_room
from edgecl.continual.memory.embedding import EMBEDDING_BLOB_BYTES
from edgecl.continual.memory.faults import fault_error, is_storage_fault, rebuild_hint
from edgecl.continual.memory.records import SampleRecord, classes_from_text, origin_from_text
from edgecl.errors import ReplayMemoryError
from edgecl.frames import LabelOrigin
from edgecl.sqlite_copy import PrivateCopy

WAL_AUTOCHECKPOINT_PAGES = 64
WAL_LIMIT_BYTES = 512 * 1024
EMBEDDING_CHUNK_ROWS = 4096
"""Rows of embeddings read at a time (bounds the bytes held besides the decoded matrix)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    classes TEXT NOT NULL,
    primary_class INTEGER NOT NULL,
    source TEXT NOT NULL,
    ts_s REAL NOT NULL,
    bytes INTEGER NOT NULL,
    held_out INTEGER NOT NULL,
    recall_baseline REAL,
    last_recall REAL,
    last_loss REAL,
    times_replayed INTEGER NOT NULL DEFAULT 0,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    origin TEXT NOT NULL DEFAULT 'ground_truth',
    image_bytes INTEGER,
    content_hash TEXT,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS samples_by_task ON samples(held_out, task, id);
CREATE INDEX IF NOT EXISTS samples_by_class ON samples(held_out, primary_class, id);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evicted(content_hash TEXT PRIMARY KEY);
"""

EVICTED_KEPT = 100_000
"""Content hashes of evicted samples the index remembers (the newest; about 7 MB), so that a
stream offering the same image again (a looping recording larger than the memory) does not
store it again as a new sample: see :meth:`IndexDB.evict`."""

UNLINKING_KEY = "unlinking"
"""Meta key: ids removed or evicted whose files were not yet unlinked when their rows went."""

# Columns added after the first release: name -> definition used by ALTER TABLE.
MIGRATED_COLUMNS = {
    "origin": f"TEXT NOT NULL DEFAULT '{LabelOrigin.GROUND_TRUTH.value}'",
    "image_bytes": "INTEGER",
    "content_hash": "TEXT",
    "embedding": "BLOB",
}
# Indexes over migrated columns: created after the migration added their column.
MIGRATED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS samples_by_content ON samples(content_hash) "
    "WHERE content_hash IS NOT NULL",
)
RECORD_COLUMNS = ("id, task, classes, source, ts_s, bytes, held_out, recall_baseline, "
                  "last_recall, last_loss, times_replayed, width, height, origin, image_bytes")
UPDATABLE_COLUMNS = ("recall_baseline", "last_recall", "last_loss")
GROUPABLE_COLUMNS = ("task", "primary_class", "origin")
# The effective held-out flag (see the module docstring).
HELD_OUT_SQL = f"(held_out = 1 AND origin != '{LabelOrigin.PSEUDO.value}')"


class DamagedRowError(ReplayMemoryError):
    """An index row whose values cannot be read (a hand-edited or damaged index).

    Attributes:
        sample_id: the row's id.
    """

    def __init__(self, message: str, sample_id: int):
        super().__init__(message)
        self.sample_id = sample_id


def record_from_row(row: tuple) -> SampleRecord:
    """Build a :class:`SampleRecord` from a row selected with :data:`RECORD_COLUMNS`.

    Raises:
        DamagedRowError: a value has the wrong type (the message names the row and the value).
    """
    (sid, task, classes, source, ts_s, nbytes, held_out, baseline, last_recall, last_loss,
     replayed, width, height, origin, image_bytes) = row
    origin = origin_from_text(origin)
    try:
        return SampleRecord(id=int(sid), task=str(task), classes=classes_from_text(classes),
                            source=str(source), ts_s=float(ts_s), bytes=int(nbytes),
                            held_out=bool(held_out) and origin.human_verified,
                            recall_baseline=_metric(baseline), last_recall=_metric(last_recall),
                            last_loss=_metric(last_loss), times_replayed=int(replayed),
                            width=int(width), height=int(height), origin=origin,
                            image_bytes=None if image_bytes is None else int(image_bytes))
    except (TypeError, ValueError, OverflowError) as exc:
        raise DamagedRowError(f"row {sid} of the memory index is damaged ({exc})",
                              sid if isinstance(sid, int) else -1) from None


def _text(value: object) -> str:
    """A stored value as text (bytes decoded leniently)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _metric(value) -> float | None:
    return None if value is None else float(value)


def _read_row(row: tuple, damaged: list[DamagedRowError] | None) -> SampleRecord | None:
    try:
        return record_from_row(row)
    except DamagedRowError as exc:
        if damaged is None:
            raise
        damaged.append(exc)
        return None


def tier_sql(tier: int) -> str:
    """SQL condition on ``origin`` for the rows of one eviction tier
    (:attr:`~edgecl.frames.LabelOrigin.eviction_tier`); a rebuilt row whose origin is unknown
    counts as ``pseudo`` (tier 0), as :func:`~edgecl.continual.memory.records.origin_from_text`
    reads it."""
    if tier == 0:
        above = ", ".join(f"'{o.value}'" for o in LabelOrigin if o.eviction_tier > 0)
        return f"origin NOT IN ({above})"
    own = ", ".join(f"'{o.value}'" for o in LabelOrigin if o.eviction_tier == tier)
    return f"origin IN ({own})" if own else "0"


def _where(held_out: bool | None, task: str | None, primary_class: int | None,
           tier: int | None = None) -> tuple[str, list]:
    clauses, params = [], []
    if tier is not None:
        clauses.append(tier_sql(tier))
    if held_out is not None:
        clauses.append(f"{HELD_OUT_SQL} = ?")
        params.append(int(held_out))
    if task is not None:
        clauses.append("task = ?")
        params.append(task)
    if primary_class is not None:
        clauses.append("primary_class = ?")
        params.append(int(primary_class))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class IndexDB:
    """Thin wrapper over the memory's SQLite file.

    Attributes:
        path: the database file.
    """

    def __init__(self, path: Path, timeout_s: float = 30.0, read_only: bool = False):
        """Open (and create) the index.

        Args:
            path: database file.
            timeout_s: how long to wait for another process's lock.
            read_only: read a private copy (its WAL replayed, :class:`~edgecl.sqlite_copy.
                PrivateCopy`) instead of the file, for a folder that may not be written; every
                write then fails.

        Raises:
            StorageError: the file or its directory cannot be written (read-only, disk full),
                or, with ``read_only``, the file cannot be read.
            ReplayMemoryError: the file is not a usable SQLite database.
        """
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        self._copy: PrivateCopy | None = None
        try:
            if read_only:
                self._copy = PrivateCopy(self.path)
        except OSError as exc:
            raise fault_error(exc, "cannot read the memory index", self.path) from None
        try:
            self.conn = sqlite_room.connect(str(self._copy.path if self._copy else self.path),
                                            timeout=timeout_s, isolation_level=None,
                                            check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            with self.write():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self._migrate()
                for statement in MIGRATED_INDEXES:
                    self.conn.execute(statement)
            if read_only:
                self.conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            self.close()
            if is_storage_fault(exc):  # a full disk: what to do, not only what happened
                raise fault_error(exc, "cannot open the memory index", self.path,
                                  "free a few MiB on its volume (or make it writable) and "
                                  "start again") from None
            raise fault_error(exc, "memory index is unusable", self.path,
                              rebuild_hint(self.path.parent)) from None

    def _migrate(self) -> list[str]:
        """Add the columns an older index lacks (inside the schema transaction).

        Returns:
            Names of the columns added.
        """
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(samples)")}
        added = [name for name in MIGRATED_COLUMNS if name not in have]
        for name in added:
            self.conn.execute(f"ALTER TABLE samples ADD COLUMN {name} {MIGRATED_COLUMNS[name]}")
        return added

    def close(self) -> None:
        """Close the connection (a second call does nothing) and drop a private copy."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._copy is not None:
            self._copy.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database lock (``BEGIN IMMEDIATE``).

        Yields:
            The connection; everything done inside commits together or not at all.
        """
        if self._copy is None:  # the WAL index may have grown since the open
            sqlite_room.before_write(self.path)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) leaves the transaction open: roll it back too.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state.

        Yields:
            The connection.
        """
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    def next_id(self) -> int:
        """The id the next insert gets (ids are never reused once committed)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        top = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()[0]
        return max(int(row[0]) if row else 0, int(top)) + 1

    def reserve_ids(self, last_id: int) -> None:
        """Make every id up to ``last_id`` count as given (inside the caller's transaction):
        a rebuilt index must not hand out the id of a sample that existed before.

        Args:
            last_id: the largest id ever given.
        """
        if int(last_id) < self.next_id():
            return
        self.conn.execute("DELETE FROM sqlite_sequence WHERE name = 'samples'")
        self.conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES('samples', ?)",
                          (int(last_id),))

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (``wal_checkpoint(TRUNCATE)``)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def insert(self, values: dict) -> None:
        """Insert one sample row (column -> value)."""
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.conn.execute(f"INSERT INTO samples({cols}) VALUES({marks})", list(values.values()))

    def find_content(self, digest: str) -> int | None:
        """The id of a sample stored with this content hash, or None."""
        row = self.conn.execute("SELECT id FROM samples WHERE content_hash = ? LIMIT 1",
                                (str(digest),)).fetchone()
        return None if row is None else int(row[0])

    def unhashed_samples(self) -> list[tuple[int, str, int, int]]:
        """Human-labelled samples stored without a content hash (by a release before content
        hashes were kept): ``[(id, source, width, height)]`` in id order."""
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in self.conn.execute(
            "SELECT id, source, width, height FROM samples WHERE content_hash IS NULL AND "
            "origin != ? ORDER BY id", (LabelOrigin.PSEUDO.value,))]

    def exists(self, sample_id: int) -> bool:
        """Whether a sample row with this id is stored."""
        return self.conn.execute("SELECT 1 FROM samples WHERE id = ?",
                                 (int(sample_id),)).fetchone() is not None

    def delete(self, sample_id: int) -> None:
        """Delete one sample row."""
        self.conn.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),))

    def evict(self, sample_id: int) -> None:
        """Delete one sample row that the memory's bounds evicted, remembering its content hash
        (the newest :data:`EVICTED_KEPT`; a removal by hand is :meth:`delete` and remembers
        nothing)."""
        row = self.conn.execute("SELECT content_hash FROM samples WHERE id = ?",
                                (int(sample_id),)).fetchone()
        if row is not None and row[0]:
            self.conn.execute("INSERT OR REPLACE INTO evicted(content_hash) VALUES(?)", (row[0],))
            self.conn.execute("DELETE FROM evicted WHERE rowid <= (SELECT MAX(rowid) FROM "
                              "evicted) - ?", (EVICTED_KEPT,))
        self.delete(sample_id)

    def was_evicted(self, digest: str) -> bool:
        """Whether a sample with this content hash was evicted (:meth:`evict`) and is
        remembered; False for an index written before evictions were remembered."""
        try:
            return self.conn.execute("SELECT 1 FROM evicted WHERE content_hash = ?",
                                     (str(digest),)).fetchone() is not None
        except sqlite3.OperationalError:  # no such table: a read-only index of an older release
            return False

    def row_values(self, sample_id: int) -> dict | None:
        """Every column of one row as stored (column -> value), or None when it is gone."""
        cur = self.conn.execute("SELECT * FROM samples WHERE id = ?", (int(sample_id),))
        row = cur.fetchone()
        if row is None:
            return None
        return {d[0]: v for d, v in zip(cur.description, row)}

    def raw_row(self, sample_id: int) -> dict:
        """A row's provenance as stored, each value as text (None when NULL), for a row that
        cannot be read as a record (its damaged values are kept as they are).

        Args:
            sample_id: the row's id.

        Returns:
            ``task``, ``classes``, ``source``, ``origin``, ``held_out`` and ``ts_s`` (empty
            when the row is gone).
        """
        columns = ("task", "classes", "source", "origin", "held_out", "ts_s")
        row = self.conn.execute(f"SELECT {', '.join(columns)} FROM samples WHERE id = ?",
                                (int(sample_id),)).fetchone()
        if row is None:
            return {}
        return {c: None if v is None else _text(v) for c, v in zip(columns, row)}

    def count(self, held_out: bool | None = None, task: str | None = None,
              primary_class: int | None = None, tier: int | None = None) -> int:
        """Number of rows matching the filter (``tier``: of one eviction tier, see
        :func:`tier_sql`; None: any)."""
        where, params = _where(held_out, task, primary_class, tier)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM samples{where}", params).fetchone()[0])

    def total_bytes(self) -> int:
        """Sum of the ``bytes`` column."""
        return int(self.conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM samples").fetchone()[0])

    def trained_classes(self) -> set[int]:
        """The class ids that at least one training (not held-out) row carries."""
        rows = self.conn.execute(f"SELECT DISTINCT classes FROM samples WHERE {HELD_OUT_SQL} = 0")
        return {c for (text,) in rows for c in classes_from_text(text)}

    def group_counts(self, column: str, held_out: bool | None = None,
                     task: str | None = None) -> dict:
        """Rows per value of ``column`` (``task``, ``primary_class`` or ``origin``), among the
        rows matching the filter."""
        if column not in GROUPABLE_COLUMNS:
            raise ValueError(f"cannot group by {column}")
        where, params = _where(held_out, task, None)
        rows = self.conn.execute(f"SELECT {column}, COUNT(*) FROM samples{where} "
                                 f"GROUP BY {column}", params)
        return {key: int(n) for key, n in rows}

    def nth_id(self, index: int, held_out: bool | None = None, task: str | None = None,
               primary_class: int | None = None, tier: int | None = None) -> int:
        """The ``index``-th id (ascending) among rows matching the filter (see :meth:`count`)."""
        where, params = _where(held_out, task, primary_class, tier)
        row = self.conn.execute(f"SELECT id FROM samples{where} ORDER BY id LIMIT 1 OFFSET ?",
                                params + [int(index)]).fetchone()
        if row is None:
            raise IndexError(f"no sample at position {index}")
        return int(row[0])

    def ids(self, held_out: bool | None = None, task: str | None = None) -> list[int]:
        """Ids matching the filter, ascending."""
        where, params = _where(held_out, task, None)
        return [int(r[0]) for r in self.conn.execute(f"SELECT id FROM samples{where} ORDER BY id",
                                                     params)]

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None,
                damaged: list[DamagedRowError] | None = None) -> list[SampleRecord]:
        """Rows as records: the given ids (in that order, unknown ones skipped) or all
        rows matching the filter (ascending id).

        Args:
            ids: the rows to read (all rows matching the filter when ``None``).
            held_out: filter on the effective held-out flag.
            task: filter on the task.
            damaged: when given, unreadable rows are appended to it and left out instead of
                raising (the repairing check).

        Raises:
            DamagedRowError: a row's values cannot be read and ``damaged`` is ``None`` (the
                message names the index and the command that sets the sample aside).
        """
        try:
            return self._records(ids, held_out, task, damaged)
        except DamagedRowError as exc:
            state_dir = self.path.parent.parent
            raise DamagedRowError(f"{exc} in {self.path}: 'edgecl memory verify --state-dir "
                                  f"{state_dir}' sets the sample aside in its quarantine, files "
                                  f"kept", exc.sample_id) from None

    def _records(self, ids: list[int] | None, held_out: bool | None, task: str | None,
                 damaged: list[DamagedRowError] | None) -> list[SampleRecord]:
        """The body of :meth:`records`."""
        if ids is None:
            where, params = _where(held_out, task, None)
            rows = self.conn.execute(f"SELECT {RECORD_COLUMNS} FROM samples{where} ORDER BY id",
                                     params)
            return [r for r in (_read_row(row, damaged) for row in rows) if r is not None]
        found = {}
        for chunk_start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[chunk_start:chunk_start + 500]]
            marks = ", ".join("?" for _ in chunk)
            for row in self.conn.execute(f"SELECT {RECORD_COLUMNS} FROM samples "
                                         f"WHERE id IN ({marks})", chunk):
                record = _read_row(row, damaged)
                if record is not None:
                    found[record.id] = record
        return [found[int(i)] for i in ids if int(i) in found]

    def update_column(self, column: str, ids: list[int], values: list[float | None]) -> int:
        """Set one metric column for several rows (missing ids are ignored).

        Returns:
            Number of rows updated.
        """
        if column not in UPDATABLE_COLUMNS:
            raise ValueError(f"column {column} is not updatable")
        with self.write() as conn:
            cur = conn.executemany(f"UPDATE samples SET {column} = ? WHERE id = ?",
                                   [(v, int(i)) for i, v in zip(ids, values)])
            return int(cur.rowcount)

    def increment_replayed(self, ids: list[int]) -> int:
        """Add one to ``times_replayed`` of each id (once per occurrence)."""
        with self.write() as conn:
            cur = conn.executemany("UPDATE samples SET times_replayed = times_replayed + 1 "
                                   "WHERE id = ?", [(int(i),) for i in ids])
            return int(cur.rowcount)

    def change_signature(self) -> tuple[int, int]:
        """``(row count, last id ever given)``: differs after any insert or delete."""
        count = int(self.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        return count, self.next_id() - 1

    def embeddings(self, after_id: int = 0,
                   chunk: int = EMBEDDING_CHUNK_ROWS) -> Iterator[list[tuple[int, bytes | None]]]:
        """``(id, stored embedding or None)`` of the rows with an id above ``after_id``,
        ascending id, in chunks (call inside :meth:`read` for one consistent state).

        A value that is not a blob of :data:`~.embedding.EMBEDDING_BLOB_BYTES` bytes (text, a
        number, a hand-written value of another length) reads as None inside SQLite, so a
        huge one is never loaded.

        Args:
            after_id: only rows with a larger id (0: every row).
            chunk: rows per yielded list.

        Yields:
            Lists of at most ``chunk`` ``(id, blob or None)`` pairs.
        """
        cur = self.conn.execute(
            "SELECT id, CASE WHEN typeof(embedding) = 'blob' AND length(embedding) = ? "
            "THEN embedding END FROM samples WHERE id > ? ORDER BY id",
            (EMBEDDING_BLOB_BYTES, int(after_id)))
        while True:
            rows = cur.fetchmany(max(1, int(chunk)))
            if not rows:
                return
            yield [(int(i), blob) for i, blob in rows]

    def count_after(self, after_id: int) -> int:
        """Rows with an id above ``after_id``."""
        return int(self.conn.execute("SELECT COUNT(*) FROM samples WHERE id > ?",
                                     (int(after_id),)).fetchone()[0])

    def set_embeddings(self, values: list[tuple[int, bytes]]) -> int:
        """Store embeddings of existing rows (missing ids are ignored).

        Args:
            values: ``(id, blob)`` pairs.

        Returns:
            Number of rows updated.
        """
        with self.write() as conn:
            cur = conn.executemany("UPDATE samples SET embedding = ? WHERE id = ?",
                                   [(blob, int(i)) for i, blob in values])
            return int(cur.rowcount)

    def load_counters(self) -> dict[str, int]:
        """All stream counters."""
        return {name: int(v) for name, v in self.conn.execute("SELECT name, value FROM counters")}

    def add_counters(self, deltas: dict[str, int]) -> None:
        """Add deltas to counters (inside the caller's transaction)."""
        self.conn.executemany(
            "INSERT INTO counters(name, value) VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            list(deltas.items()))

    def get_meta(self, key: str) -> object | None:
        """A JSON value from the meta table (None when absent)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError) as exc:
            raise ReplayMemoryError(f"memory index {self.path}: meta value {key!r} is damaged "
                                    f"({exc})") from None

    def set_meta(self, key: str, value: object) -> None:
        """Store a JSON value in the meta table (its own transaction)."""
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
                         (key, json.dumps(value, sort_keys=True)))

    def unlinking(self) -> set[int]:
        """Ids whose rows were deleted and whose files may still be on disk (a kill between
        the commit and the unlinks): their files are the removal's leftovers, not samples an
        older index lost."""
        value = self.get_meta(UNLINKING_KEY)
        return {int(i) for i in value} if isinstance(value, list) else set()

    def mark_unlinking(self, ids) -> None:
        """Record ids whose files are about to be unlinked (inside the caller's transaction,
        the one that deletes their rows)."""
        ids = {int(i) for i in ids}
        if ids:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
                              (UNLINKING_KEY, json.dumps(sorted(self.unlinking() | ids))))

    def clear_unlinking(self, ids) -> None:
        """Forget ids whose files are gone (inside the caller's transaction)."""
        left = self.unlinking() - {int(i) for i in ids}
        if left:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
                              (UNLINKING_KEY, json.dumps(sorted(left))))
        else:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (UNLINKING_KEY,))

    def integrity_problems(self) -> list[str]:
        """Problems reported by ``PRAGMA integrity_check`` (empty when healthy): unlike
        ``quick_check`` it also finds an index that lost rows of its table (a copy taken while
        the memory was written), which every later write then reports as malformed. The
        memory's index is small (one row per sample): a few milliseconds."""
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check(5)")]
        return [] if rows == ["ok"] else rows
