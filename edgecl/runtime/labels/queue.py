"""The operator queue: frames waiting for a person's boxes, on disk under ``STATE/labels/``.

Layout: ``pending/<id>.jpg`` + ``pending/<id>.json`` (each written atomically, the JSON last, so
an item without its JSON does not exist), ``answered.json`` (a bounded record of the last ids
answered, skipped or evicted, so a second answer is a conflict, not a 404) and ``lock`` (an
inter-process lock: the runtime and ``edgecl labels`` may work on the queue at the same time).

The queue is a bounded priority queue: when full, the item with the LOWEST priority goes (ties:
the oldest). Priorities age (:func:`aged_priority`): an item's priority halves every
``labels.priority_half_life_s`` seconds it waits, so a queue filled while nobody answered does
not keep the frames of hours ago (chosen by the model of hours ago) ahead of what the device
sees now, and new frames can still enter it. The wait of an item queued since the last boot is
measured on the monotonic clock (a wall clock that NTP sets after a boot at 1970 is no wait).
An answer stores the sample in the replay memory
first, with source ``operator:<id>``, then records the id as answered and removes the item;
after a kill -9 in between, the next answer (or :meth:`OperatorQueue.recover`) finds the stored
sample and only finishes the bookkeeping, so no sample is stored twice.

The same image twice. An item's JSON keeps ``pixels_hash``, the
:func:`~edgecl.data.images.pixels_hash` of the frame as it was delivered (the JPEG on disk is
lossy: hashing it again would match nothing), and the answer stores its sample with that
content hash. So ``edgecl labels import`` of the same image file later finds it (``already in
memory``), and the memory refuses the frame when it is streamed again. An item whose image the
memory already holds with verified labels when it is answered (an import, or a looping
folder's stream, stored it meanwhile) is refused with a :class:`~edgecl.errors.ConflictError`
(HTTP 409) naming that sample, and taken off the queue as skipped: the memory holds one copy
of an image only (two copies let one serve the held-out slice while the other is trained on).
A copy with pseudo-labels is replaced by the answer instead, in one transaction
(:func:`edgecl.continual.memory.store.replaces`). Items queued before the hash was recorded have none:
they are answered as before, unchecked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shlex
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_json, make_dirs_in, path_identity
from edgecl.boot import CLOCK_SET_S, boot_id
from edgecl.data.answers import (MAX_NEW_CLASSES_PER_ANSWER, boxes_to_labels, finite_number,
                                 valid_item_id)
from edgecl.data.class_names import close_class_names, former_names_in, standing_names
from edgecl.data.images import pixels_hash
from edgecl.errors import (ConflictError, EdgeclError, LabelError, NotFoundError, StorageError,
                           link_problem, storage_fault, storage_faults)
from edgecl.frames import MAX_TASK_CHARS, Detections, Frame, LabelOrigin
from edgecl.models.classes import ClassRegistry

log = logging.getLogger(__name__)

ANSWERED_KEEP = 500
RECENT_KEEP = 64
"""Embeddings of the last answered or skipped frames kept on disk, so that near-duplicate
suppression (``labels.dedup_window_s``) also covers them after a restart."""
ORPHAN_AGE_S = 60.0
SOURCE_PREFIX = "operator:"
HASH_KEY = "pixels_hash"
"""Key of an item's metadata holding the pixels hash of its original frame."""


READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
"""What opening a file for writing raises in a folder that may not be written here."""



def _typo_hints(new_names: list[str], standing: list[str]) -> dict[str, str]:
    """New class names of one answer that may be typos: of a class the device has, or of
    another new name in the same answer ('Truk' beside 'truck': two new classes where the
    person meant one), as :func:`~edgecl.data.class_names.close_class_names` finds them."""
    similar = close_class_names(new_names, standing)
    for i, name in enumerate(new_names):
        if name not in similar:
            similar.update(close_class_names([name], new_names[:i]))
    return similar


def _former_names(new_names: list[str], classes) -> dict[str, str]:
    """New class names of one answer that a class had before a ``classes rename`` (name -> the
    class's name now, :func:`~edgecl.data.class_names.former_names_in`): before, an operator
    answering 'Person' after Person was renamed pedestrian made a second class, unsaid."""
    return former_names_in(new_names, classes.names(), classes.former_names()) if new_names else {}


def answered_provenance(cfg) -> dict[int, dict]:
    """:meth:`OperatorQueue.answered_provenance` of a device's queue (``cfg``: an
    :class:`edgecl.config.Config`); nothing is created where no queue was made."""
    return OperatorQueue.from_config(cfg, create=False).answered_provenance()


def register_new_classes(labels, new_names: list[str], known: dict[str, int], classes) -> None:
    """Give an answer's new class names their ids (the registry's next ones) and put them in
    place of the placeholders :func:`~edgecl.data.answers.boxes_to_labels` left.

    Args:
        labels: float32 (N, 5) rows; a row of the k-th new name carries ``-1 - k`` (changed in
            place).
        new_names: the new names, in the order of their placeholders.
        known: name -> id (the new names are added).
        classes: the class registry (``id_for(name, create=True)``).
    """
    for name in new_names:
        known[name] = int(classes.id_for(name, create=True))
    for row in labels:
        if row[0] < 0:  # the placeholder -1 - k of the k-th new name
            row[0] = known[new_names[int(-1 - row[0])]]

class OperatorQueue:
    """Bounded, persistent priority queue of frames for an operator.

    Args:
        root: ``STATE/labels``.
        max_pending: most items held; beyond it the lowest priority goes.
        answered_keep: how many answered/skipped/evicted ids are remembered (for conflicts).
        priority_half_life_s: seconds of waiting that halve an item's priority when ordering
            and evicting (0: priorities never age).
        clock: wall clock in seconds (injectable for tests; items record the same clock).
        monotonic: the system's monotonic clock (injectable for tests): how long an item
            queued since the last boot has waited, whatever the wall clock did meanwhile.
        boot: this boot's id (default: :func:`edgecl.boot.boot_id`; "" where none is known:
            the wall clock is used).
        create: make the queue's folder where it does not exist (the runtime); False for a
            command that only reads or answers items (``edgecl labels``): a device that never
            queued a frame, or a folder that is not a state directory, gets nothing written.

    Raises:
        StorageError: ``root`` or its ``pending`` folder is a symbolic link that loops or
            leads nowhere (a card not mounted), in one line.
    """

    def __init__(self, root: str | Path, max_pending: int = 200,
                 answered_keep: int = ANSWERED_KEEP, priority_half_life_s: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, boot: str | None = None,
                 create: bool = True):
        self.root = Path(root)
        self.monotonic = monotonic
        self.boot = boot_id() if boot is None else boot
        self.dir = self.root / "pending"
        why = link_problem(self.dir)  # seen as an empty queue (reading) or a raw OSError (runtime)
        if why:
            raise StorageError(f"operator queue: {why}")
        try:
            if create:
                self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a state directory on a read-only mount with no queue: empty
            if exc.errno not in READ_ONLY_ERRNOS:
                raise
        self._home_identity = path_identity(self.root.parent)  # the state directory
        self.max_pending = int(max_pending)
        self.answered_keep = int(answered_keep)
        self.priority_half_life_s = float(priority_half_life_s)
        self.clock = clock
        self._answered_path = self.root / "answered.json"
        self._recent_path = self.root / "recent_embeddings.json"
        self._thread_lock = threading.Lock()
        # file name -> ((inode, mtime_ns, size), metadata): an item file is written once
        # (os.replace), so an unchanged identity means unchanged content; see _metas
        self._meta_cache: dict[str, tuple[tuple[int, int, int], dict]] = {}
        self._warned: set[str] = set()
        self._clean_orphans()
        self._adopt_earlier_boot()

    @classmethod
    def from_config(cls, cfg, create: bool = True) -> "OperatorQueue":
        """The queue of a device: ``STATE/labels`` with the ``labels.*`` bounds of ``cfg``
        (an :class:`edgecl.config.Config`), the same for the runtime and ``edgecl labels``;
        ``create`` as in the class."""
        lab = cfg.labels
        return cls(Path(cfg.state_dir) / "labels", lab.max_pending,
                   priority_half_life_s=lab.priority_half_life_s, create=create)

    # --- locking, bookkeeping ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        """The queue's lock across processes. A queue that may not be written here (a state
        directory on a read-only mount, pulled from a device) is read under a shared lock on
        its lock file where one exists, and unlocked where none does: listing it must work;
        a write fails on its own, with its one-line reason."""
        with self._thread_lock, contextlib.ExitStack() as stack:
            try:
                fh = stack.enter_context(open(self.root / "lock", "a+b"))
                mode = fcntl.LOCK_EX
            except OSError as exc:
                # no folder to lock in: a read-only mount where no frame was ever queued
                never_made = exc.errno == errno.ENOENT and not self.root.is_dir()
                if exc.errno not in READ_ONLY_ERRNOS and not never_made:
                    raise
                try:
                    fh, mode = stack.enter_context(open(self.root / "lock", "rb")), fcntl.LOCK_SH
                except FileNotFoundError:
                    fh = None
            if fh is None:
                yield
                return
            fcntl.flock(fh.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _adopt_earlier_boot(self) -> None:
        """Adopt the items of an earlier boot into this one: each then waits on this boot's
        monotonic clock (:meth:`_wait_s`), which no later setting of the wall clock moves.
        Before, such an item aged on the wall clock: on a board without a battery, a start at
        1970 followed by NTP counted 56 years of waiting for every item queued before the
        reboot, and the next frames evicted them all.

        The wait an item brings along is the wall clock's since it was queued when both
        readings are past :data:`CLOCK_SET_S` and in order. Otherwise it brings none, and its
        stamp ``created_s`` becomes now where that is the wrong reading: stamped more than a
        minute in the future of a set clock (the clock went back since, e.g. set ahead by hand,
        then corrected), or before the clock was set. A set stamp seen from a clock not set yet
        (a start at 1970) is kept. Rewritten once, atomically; a read-only queue, or one where
        the boot is unknown, is left as it is."""
        now_s = self.clock()
        if not self._earlier_boot():  # the usual case: no lock taken, so no lock file made
            return
        with self._locked():
            late = 0
            for meta in self._earlier_boot():
                path = self.dir / f"{meta['id']}.json"
                try:
                    stored = json.loads(path.read_text(encoding="utf-8"))
                    created_s = float(meta["created_s"])
                    wait_s = 0.0
                    if CLOCK_SET_S <= created_s <= now_s + ORPHAN_AGE_S:
                        wait_s = max(0.0, now_s - created_s)
                    elif now_s >= CLOCK_SET_S or created_s < CLOCK_SET_S:
                        stored["created_s"] = round(now_s, 3)
                        late += 1
                    # else the clock is not set yet: the stamp is the better reading, kept
                    stored["boot_id"] = self.boot
                    stored["created_mono_s"] = round(self.monotonic() - wait_s, 3)
                    atomic_write_json(path, stored)
                except (OSError, ValueError) as exc:
                    log.debug("queue item %s not adopted into this boot: %s", meta["id"], exc)
        if late:
            log.info("%d queued item(s) stamped in the future or before the clock was set (the "
                     "clock was set since): counted as queued now", late)

    def _earlier_boot(self) -> list[dict]:
        """The items :meth:`_adopt_earlier_boot` adopts: queued in another boot (none where this
        boot is unknown, or the queue may not be written)."""
        if not self.boot or not os.access(self.dir, os.W_OK):
            return []
        return [m for m in self._metas() if not self._this_boot(m)]

    def _clean_orphans(self) -> None:
        """Remove images without metadata and temp files left by a kill (written more than a
        minute ago, or more than a minute "in the future": the wall clock went back since)."""
        now = time.time()
        if not self.dir.is_dir():  # read-only and never made (see __init__)
            return
        for path in self.dir.iterdir():
            orphan = (path.suffix == ".jpg" and not path.with_suffix(".json").exists()) or \
                path.name.endswith(".tmp")
            try:
                if orphan and abs(now - path.stat().st_mtime) > ORPHAN_AGE_S:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
            except OSError as exc:  # a queue that may not be written here keeps its leftovers
                if exc.errno not in READ_ONLY_ERRNOS:
                    raise
                return

    @staticmethod
    def _read_entries(path: Path, what: str, keep_aside: bool = False,
                      precious: bool = False) -> list[dict]:
        """The objects of a JSON list file the queue keeps (empty when absent or unreadable).

        ``keep_aside``: a writer holding the queue's lock, about to replace the file, moves a
        damaged one aside first; a reader without the lock never does (it could move aside the
        good file a writer has just put in its place). ``precious``: a person's work (the
        answers), not a cache.

        Raises:
            StorageError: with ``precious``, this user may not read the file (a permission
                problem, not damage: before, it was moved aside and a new, empty record
                started).
        """
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            if not precious:
                log.warning("%s %s cannot be read here (%s); starting a new one", what, path,
                            exc)
                return []
            raise StorageError(f"cannot read the {what} {path}: {exc.strerror or exc} (a "
                               f"permission problem, not damage: give the user running edgecl "
                               f"read access to it; nothing was changed)") from None
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("%s %s unreadable (%s); starting a new one%s", what, path, exc,
                        OperatorQueue._kept_aside(path) if keep_aside else "")
            return []
        if not isinstance(data, list):
            log.warning("%s %s holds a JSON %s, not a list; starting a new one%s", what, path,
                        type(data).__name__,
                        OperatorQueue._kept_aside(path) if keep_aside else "")
            return []
        return [e for e in data if isinstance(e, dict)]

    @staticmethod
    def _kept_aside(path: Path) -> str:
        """Move a damaged record file aside (``NAME.corrupt-STAMP``), as every repaired file
        of the state directory is kept; ``"; the damaged file is kept as ..."`` or ``""``."""
        from edgecl.atomic import keep_damaged

        try:
            kept = keep_damaged(path)
        except OSError:  # a read-only queue: left as it is
            return ""
        return f"; the damaged file is kept as {kept.name}"

    def _answered(self, keep_aside: bool = False) -> list[dict]:
        return [e for e in self._read_entries(self._answered_path, "answered-label record",
                                              keep_aside, precious=True) if "id" in e]

    def _record(self, item_id: str, action: str, **extra) -> None:
        """Record an answer or a skip.

        Raises:
            StorageError: the disk is full or read-only (one line; the item stays pending, and
                answering it again does not store its sample twice).
        """
        entries = [e for e in self._answered(keep_aside=True) if e.get("id") != item_id]
        entries.append({"id": item_id, "action": action, "ts_s": round(time.time(), 3), **extra})
        note = ("the memory holds the change; 'edgecl labels answered' shows it"
                if action == "withdrawn" or "corrected" in extra else "it stays pending")
        with storage_faults(f"cannot record that {item_id} was {action}; {note}",
                            self._answered_path):
            atomic_write_json(self._answered_path, entries[-self.answered_keep:])

    def _remember_embedding(self, meta: dict) -> None:
        """Keep an answered or skipped frame's embedding (the last :data:`RECENT_KEEP`) for
        near-duplicate suppression after a restart."""
        emb = meta.get("embedding")
        if not isinstance(emb, list) or not emb:
            return
        recent = [e for e in self._recent(keep_aside=True) if e.get("id") != meta["id"]]
        recent.append({"id": meta["id"], "created_s": float(meta["created_s"]), "embedding": emb})
        try:
            atomic_write_json(self._recent_path, recent[-RECENT_KEEP:])
        except OSError as exc:  # only near-duplicate suppression after a restart depends on it
            fault = storage_fault(exc, "recent answered frames not kept", self._recent_path)
            if fault is None:
                raise
            log.warning("%s", fault)

    def _recent(self, keep_aside: bool = False) -> list[dict]:
        return [e for e in self._read_entries(self._recent_path, "recent-embedding record",
                                              keep_aside)
                if isinstance(e.get("embedding"), list)
                and isinstance(e.get("created_s"), (int, float))]

    def _remove(self, item_id: str) -> None:
        """Take an item's files off the queue.

        Raises:
            StorageError: ``pending/`` cannot be written (a read-only card or mount), in one
                line naming the item.
        """
        for suffix in (".json", ".jpg"):
            path = self.dir / f"{item_id}{suffix}"
            with storage_faults(f"cannot take label item {item_id} off the queue", path):
                path.unlink(missing_ok=True)

    def _read_meta(self, path: Path) -> dict | None:
        """One item's metadata, normalised, or ``None`` (one warning) when malformed."""
        why = None
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            meta, why = None, f"unreadable ({type(exc).__name__})"
        if why is None:
            why = _meta_problem(meta, path.stem) or _image_problem(path.with_suffix(".jpg"), meta)
        if why is not None and not path.exists():  # answered or evicted while it was read
            return None
        if why is not None:
            if path.name not in self._warned:
                self._warned.add(path.name)
                command = shlex.join(["edgecl", "labels", "skip",
                                      f"--state-dir={self.root.parent}", path.stem])
                log.warning("label item %s is malformed (%s); not offered (%s sets it aside)",
                            path, why, command)
            return None
        return _normalise(meta)

    def malformed(self) -> list[str]:
        """The ids of the items the readings so far found malformed and still on disk (not
        offered; ``edgecl labels skip`` sets each aside)."""
        return [name[:-len(".json")] for name in sorted(self._warned)
                if name.endswith(".json") and (self.dir / name).exists()]

    def _get(self, item_id: str) -> dict:
        item_id = valid_item_id(item_id)
        meta = self._read_meta(self.dir / f"{item_id}.json")
        if meta is not None:
            return meta
        for entry in reversed(self._answered()):
            if entry["id"] == item_id:
                if entry.get("action") == "evicted":
                    raise NotFoundError(f"label item '{item_id}' was dropped for frames of "
                                        f"higher priority")
                held = entry.get("in_memory_as")
                if held is not None:  # refused as a copy, not skipped by a person
                    raise _taken_off(item_id, held)
                action = entry.get("action")
                seen = (" (its boxes: 'edgecl labels answered', or the console's Answered tab)"
                        if action in ("answered", "corrected") else "")
                raise ConflictError(f"label item '{item_id}' was already {action}{seen}")
        if (self.dir / f"{item_id}.json").exists():
            raise NotFoundError(f"label item '{item_id}' is malformed on disk and cannot be "
                                f"answered; skipping it sets its files aside in {self.set_aside}")
        raise NotFoundError(f"no label item '{item_id}' (see 'edgecl labels pending')")

    # --- producer side ------------------------------------------------------------------------

    def pending_with_content(self, digest: str) -> str | None:
        """The id of a pending item whose frame has this pixels hash, or ``None``: a frame a
        person has not answered yet is not offered a second time (a looping recording came
        round again after the near-duplicate window, and the person labelled it twice).

        Args:
            digest: :func:`~edgecl.data.images.pixels_hash` of a frame.
        """
        with self._locked():
            return next((m["id"] for m in self._metas() if m.get(HASH_KEY) == digest), None)

    def push(self, frame: Frame, detections: Detections, *, priority: float = 0.0,
             reasons: dict[str, float] | None = None, embedding: np.ndarray | None = None,
             names: dict[int, str] | None = None, content_hash: str | None = None) -> str | None:
        """Queue a frame with its detections as the proposed boxes.

        Args:
            frame: the frame (its image is stored as JPEG).
            detections: the model's detections, proposed to the operator.
            priority: higher is shown first and kept longer.
            reasons: policy name -> score that chose it.
            embedding: its thumbnail embedding (float32 (256,)), for novelty after a restart.
            names: class id -> name of the model that saw it (ids shown when missing).
            content_hash: :func:`~edgecl.data.images.pixels_hash` of ``frame.image`` when the
                caller has it (computed otherwise); the answer stores the sample with it.

        Returns:
            The item id, or ``None`` when the queue is full of items of at least this priority.

        Raises:
            OSError: the disk is full or read-only (nothing half-written is left).
            LabelError: the frame cannot be encoded as JPEG (one line naming the frame and why,
                e.g. a side over JPEG's limit of 65500 pixels); nothing is queued or evicted.
        """
        import cv2

        from edgecl.data.images import jpeg_side_problem

        where = f"frame {frame.frame_id} from {frame.source}"
        too_large = jpeg_side_problem(frame.image)
        if too_large:
            raise LabelError(f"{where}: not queued, cannot be stored as JPEG ({too_large})")
        digest = content_hash or pixels_hash(frame.image)
        with self._locked():
            metas = self._metas()
            now_s = self.clock()
            if metas and len(metas) >= self.max_pending and \
                    float(priority) < min(self._aged(m, now_s) for m in metas):
                return None
            item_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
            ok, jpg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise LabelError(f"{where}: not queued, JPEG encoding failed")
            height, width = frame.image.shape[:2]
            names = names or {}
            proposed = [{"class": names.get(int(c), str(int(c))), "class_id": int(c),
                         "xyxy": [round(float(v), 2) for v in box], "score": round(float(s), 4)}
                        for box, s, c in zip(detections.boxes_xyxy, detections.scores,
                                             detections.classes)]
            meta = {"id": item_id, "priority": round(float(priority), 6),
                    "reasons": dict(reasons or {}), "width": int(width), "height": int(height),
                    "created_s": round(now_s, 3), "boot_id": self.boot,
                    "created_mono_s": round(self.monotonic(), 3), "source": frame.source,
                    "name": frame.name, "frame_id": int(frame.frame_id), "task": frame.task,
                    "ts_s": frame.ts_s, HASH_KEY: digest,
                    "proposed": proposed}
            if embedding is not None:
                meta["embedding"] = [round(float(v), 4) for v in embedding]
            make_dirs_in(self.dir, self.root.parent, self._home_identity)
            atomic_write_bytes(self.dir / f"{item_id}.jpg", jpg.tobytes(), parents=False)
            atomic_write_json(self.dir / f"{item_id}.json", meta, parents=False)
            metas.append(meta)
            while len(metas) > self.max_pending:
                lowest = min(metas, key=lambda m: (self._aged(m, now_s), m["created_s"]))
                metas.remove(lowest)
                self._remove(lowest["id"])
                self._record(lowest["id"], "evicted")
            return item_id

    # --- operator side ------------------------------------------------------------------------

    def _metas(self) -> list[dict]:
        """Every pending item's metadata; an item whose record and image are unchanged since
        they were last read (same inode, modification time and size) is not parsed again: the
        console's live status and every push into a full queue read them all, and parsing 200
        items took 27 ms a call. The image counts too: one deleted or damaged after its record
        was read is no longer listed (the console listed it, and could not show it)."""
        out, cache = [], {}
        for path in self.dir.glob("*.json"):
            try:
                st = path.stat()
            except OSError:  # answered or evicted meanwhile
                continue
            try:
                image = path.with_suffix(".jpg").stat()
                seen = (image.st_ino, image.st_mtime_ns, image.st_size)
            except OSError:
                seen = None
            identity = (st.st_ino, st.st_mtime_ns, st.st_size, seen)
            cached = self._meta_cache.get(path.name)
            meta = cached[1] if cached is not None and cached[0] == identity else self._read_meta(path)
            if meta is not None:
                cache[path.name] = (identity, meta)
                out.append(dict(meta))
        self._meta_cache = cache
        return out

    def _this_boot(self, meta: dict) -> bool:
        """Queued in this boot: its boot's id, and a monotonic stamp no later than now (one
        in this clock's future is damage: it would never age)."""
        stamp = meta.get("created_mono_s")
        return bool(self.boot) and meta.get("boot_id") == self.boot and finite_number(stamp) \
            and float(stamp) <= self.monotonic() + ORPHAN_AGE_S

    def _wait_s(self, meta: dict, now_s: float) -> float:
        """Seconds an item has waited: on the monotonic clock for an item of this boot (a wall
        clock set by NTP after a boot at 1970 counted 56 years of waiting: every item
        queued before lost its priority and was evicted by the next frame); else on the wall
        clock (never negative)."""
        if self._this_boot(meta):
            return max(0.0, self.monotonic() - float(meta["created_mono_s"]))
        return max(0.0, now_s - meta["created_s"])

    def _aged(self, meta: dict, now_s: float) -> float:
        return aged_priority(meta["priority"], 0.0, self._wait_s(meta, now_s),
                             self.priority_half_life_s)

    def _with_priority_now(self, meta: dict, now_s: float) -> dict:
        return dict(meta, priority_now=round(self._aged(meta, now_s), 6))

    def pending(self) -> list[dict]:
        """Items waiting for an answer, highest (aged) priority first (ties: oldest first).

        Returns:
            One dict per item: ``id, priority`` (as the selection gave it), ``priority_now``
            (aged: what orders and evicts), ``reasons, width, height, created_s, proposed``
            (``[{"class": name, "class_id": id, "xyxy": [x1, y1, x2, y2], "score": s}]``,
            pixels of the frame; ``class_id``: the model's, absent from items queued before
            edgecl recorded it),
            ``source, frame_id, task``. Malformed items are skipped with one warning each.
        """
        now_s = self.clock()
        metas = [self._with_priority_now(m, now_s) for m in self._metas()]
        return [_public(m) for m in sorted(metas, key=lambda m: (-m["priority_now"], m["created_s"]))]

    def list(self) -> list[dict]:
        """Same as :meth:`pending` (the name the runtime's server used first)."""
        return self.pending()

    def item(self, item_id: str) -> dict:
        """One pending item (as in :meth:`pending`).

        Raises:
            NotFoundError: invalid or unknown id (or evicted).
            ConflictError: already answered or skipped.
        """
        return _public(self._with_priority_now(self._get(item_id), self.clock()))

    def image_path(self, item_id: str) -> Path:
        """Path of a pending item's JPEG (the original frame).

        Raises:
            NotFoundError: invalid or unknown id.
            ConflictError: already answered or skipped.
        """
        self._get(item_id)
        path = self.dir / f"{item_id}.jpg"
        if not path.is_file():
            raise NotFoundError(f"label item '{item_id}' has no image")
        return path

    def embeddings(self) -> list[tuple[float, np.ndarray]]:
        """``(created_s, embedding)`` of pending items and of the last answered ones that
        recorded one (to seed novelty and near-duplicate suppression after a restart)."""
        out = []
        for meta in [*self._metas(), *self._recent()]:
            emb = meta.get("embedding")
            if isinstance(emb, list) and len(emb) > 0:
                try:
                    out.append((float(meta["created_s"]), np.asarray(emb, np.float32)))
                except (TypeError, ValueError):
                    continue  # a hand-damaged entry: novelty simply does not know that frame
        return out

    def answer(self, item_id: str, boxes: object, memory, classes,
               allow_new_classes: bool = True) -> dict:
        """Store an item with the operator's final boxes and take it off the queue.

        Args:
            item_id: the item.
            boxes: ``[{"class": "name", "xyxy": [x1, y1, x2, y2]}]`` in original-frame pixels
                (kept, moved, added or re-classed boxes; deleted ones left out); ``[]`` stores
                the frame as a negative sample ("nothing to label here").
            memory: the replay memory (``add(Sample)``, ``records()``).
            classes: the class registry (``names()``, ``id_for(name, create)``); a name never
                seen gets the next id when ``allow_new_classes``.
            allow_new_classes: refuse unknown names instead.

        Returns:
            ``{"id", "sample": memory id or None (declined by the memory), "boxes": N,
            "classes_added": [names], "similar_classes": {new name: the known name it may be a
            typo of} (:func:`~edgecl.data.class_names.close_class_names`), "former_names": {new
            name: the class it named before a ``classes rename``}, "class_ids"}``.

        Raises:
            NotFoundError: invalid or unknown id.
            ConflictError: already answered or skipped; or the memory already holds the item's
                image (stored by an import or from the stream): nothing is stored, and the
                item is recorded as skipped and removed (module docstring).
            LabelError: bad boxes (nothing is changed).
            StorageError: the memory cannot write (the item stays pending).
        """
        from edgecl.continual.memory import STREAM_TASK, DuplicateSampleError, Sample, held_copy

        with self._locked():
            meta = self._get(item_id)
            known = _label_ids(classes)
            labels, new_names = boxes_to_labels(boxes, meta["width"], meta["height"], known)
            if new_names and not allow_new_classes:
                raise LabelError(f"unknown class '{new_names[0]}' (known: "
                                 f"{', '.join(sorted(known)) or 'none'})")
            source = SOURCE_PREFIX + item_id
            sample_id = _stored_sample(memory, source)
            similar, former = {}, _former_names(new_names, classes)
            if sample_id is not None:  # stored by an answer cut short (a kill before dequeue)
                sample_id = self._answer_again(sample_id, labels, new_names, known, meta,
                                               memory, classes)
            else:
                digest = meta.get(HASH_KEY)  # None for items queued before it was recorded
                held = held_copy(memory, digest, LabelOrigin.OPERATOR)
                if held is not None:  # before any class is registered for it
                    self._refuse_duplicate(meta, held, memory)
                image = self._image(item_id)
                similar = _typo_hints(new_names, standing_names(classes.names(), known))
                register_new_classes(labels, new_names, known, classes)
                memory.sync_class_names(classes.names())
                try:
                    sample_id = memory.add(Sample(
                        image=image, labels=labels, task=meta.get("task") or STREAM_TASK,
                        source=source, ts_s=float(meta.get("ts_s") or meta["created_s"]),
                        origin=LabelOrigin.OPERATOR, content_hash=digest))
                except DuplicateSampleError as exc:  # stored meanwhile by another process
                    self._refuse_duplicate(meta, exc.sample_id, memory)
            sample_id, labels = _follow_merges(memory, classes, sample_id, labels)
            self._record(item_id, "answered", sample=sample_id, **_frame_of(meta),
                         new_classes=len(new_names))
            self._remember_embedding(meta)
            self._remove(item_id)
        return {"id": item_id, "sample": sample_id, "boxes": int(labels.shape[0]),
                "classes_added": new_names, "similar_classes": similar if new_names else {},
                "former_names": former, "class_ids": sorted({int(c) for c in labels[:, 0]})}

    def answers(self, memory, classes, limit: int = 50) -> list[dict]:
        """The latest answers whose sample the memory still holds, newest first, with the
        boxes as stored (what a person may want to correct).

        Answers are found in the memory itself (samples whose source is ``operator:<id>``;
        a correction's new id puts it first), so an answer whose record a kill or a full disk
        kept out of ``answered.json`` is listed too; that record only adds when it was made
        and how often it was corrected.

        Args:
            memory: the replay memory.
            classes: the class registry (``names()``).
            limit: most answers returned.

        Returns:
            ``[{"id", "name", "frame_id", "source", "sample", "ts_s", "held_out", "width",
            "height", "corrected": N, "boxes": [{"class": name, "xyxy": [x1, y1, x2, y2]}]}]``
            (pixels of the frame; ``name`` is the frame's file name where the source has one;
            ``name``, ``frame_id``, ``source`` and ``ts_s`` are None where no record says).
        """
        records = sorted((r for r in memory.records()
                          if str(r.source).startswith(SOURCE_PREFIX)),
                         key=lambda r: -r.id)
        entries = {e["id"]: e for e in self._answered() if e.get("action") == "answered"}
        names = classes.names()
        out = []
        for record in records:
            if len(out) >= max(0, int(limit)):
                break
            item_id = str(record.source)[len(SOURCE_PREFIX):]
            entry = entries.get(item_id, {})
            try:
                boxes = stored_boxes(memory.label_path(record.id), record.width, record.height,
                                     names)
            except (LabelError, OSError) as exc:
                log.warning("answer %s: its sample %d's labels are unreadable (%s)", item_id,
                            record.id, exc)
                continue
            corrected = entry.get("corrected", 0)
            out.append({"id": item_id, **{k: entry.get(k) for k in FRAME_KEYS},
                        "sample": record.id, "ts_s": entry.get("ts_s"),
                        "held_out": bool(record.held_out), "width": record.width,
                        "height": record.height,
                        "corrected": corrected if isinstance(corrected, int) else 0,
                        "boxes": boxes})
        return out

    def answered_provenance(self) -> dict[int, dict]:
        """What the answer records say of the samples answers stored: sample id ->
        ``{"source": "operator:<item id>", "origin": "operator", "ts_s": when answered}``, for
        a memory index rebuilt from the sample files (:func:`~edgecl.continual.memory.rebuild.
        rebuild_index`). Unreadable records give nothing (the rebuild goes on without them).
        """
        out: dict[int, dict] = {}
        try:
            entries = self._answered()
        except (EdgeclError, OSError) as exc:
            log.warning("answer records not read for the memory's rebuild: %s", exc)
            return out
        for entry in entries:
            sample = entry.get("sample")
            if entry.get("action") != "answered" or type(sample) is not int:
                continue
            when = entry.get("ts_s")
            out[sample] = {"source": SOURCE_PREFIX + str(entry["id"]),
                           "origin": LabelOrigin.OPERATOR.value,
                           "ts_s": float(when) if isinstance(when, (int, float))
                           and not isinstance(when, bool) else None}
        return out

    def answered_sample(self, item_id: str, memory) -> int:
        """The memory sample holding an answered item (found by its source, so an answer
        corrected before a kill is still found).

        Raises:
            NotFoundError: invalid or unknown id.
            ConflictError: the item still waits for an answer, was skipped, or its sample is
                gone (evicted, withdrawn or removed).
        """
        item_id = valid_item_id(item_id)
        if (self.dir / f"{item_id}.json").exists():
            raise ConflictError(f"label item '{item_id}' has not been answered yet; answer it "
                                f"first")
        sample_id = _stored_sample(memory, SOURCE_PREFIX + item_id)
        if sample_id is not None:
            return sample_id
        for entry in reversed(self._answered()):
            if entry["id"] == item_id:
                action = entry.get("action")
                if action == "answered":
                    raise ConflictError(f"label item '{item_id}': its sample is no longer in "
                                        f"memory (evicted to make room, or removed)")
                if action == "withdrawn":
                    raise ConflictError(f"label item '{item_id}' was withdrawn: its sample was "
                                        f"removed from the memory")
                held = entry.get("in_memory_as")
                if held is not None:  # taken off the queue as a copy, not skipped by a person
                    raise _taken_off(item_id, held)
                raise ConflictError(f"label item '{item_id}' was {action}: no sample was "
                                    f"stored for it")
        raise NotFoundError(f"no answered label item '{item_id}' (see 'edgecl labels "
                            f"answered')")

    def _answer_again(self, sample_id: int, labels, new_names: list[str], known: dict,
                      meta: dict, memory, classes) -> int:
        """The sample of an item whose earlier answer was stored but not taken off the queue:
        kept as it is when the new answer gives the same boxes, else relabelled with them (the
        person's latest answer wins; before, it was dropped without a word)."""
        from edgecl.continual.ingest import same_boxes

        get = getattr(memory, "get", None)
        if get is None:
            return sample_id
        register_new_classes(labels, new_names, known, classes)  # the caller reports the ids
        stored = get([sample_id])[0].labels
        if same_boxes(stored, labels, int(meta["width"]), int(meta["height"])):
            return sample_id
        memory.sync_class_names(classes.names())
        new_id = memory.relabel(sample_id, labels, LabelOrigin.OPERATOR)
        log.info("label item %s: answered again with other boxes; memory sample %d -> %d",
                 meta.get("id"), sample_id, new_id)
        return int(new_id)

    def correct(self, item_id: str, boxes: object, memory, classes,
                allow_new_classes: bool = True) -> dict:
        """Replace an answered item's boxes in the memory (a person corrects a wrong answer).

        The sample keeps its image and its held-out flag and gets a new id, so the next round
        learns the corrected boxes (:meth:`ReplayMemory.relabel
        <edgecl.continual.memory.ReplayMemory.relabel>`).

        Args:
            item_id: an answered item.
            boxes: the final boxes, as for :meth:`answer` (``[]``: nothing to label here).
            memory: the replay memory.
            classes: the class registry; a new name gets the next id when
                ``allow_new_classes``.
            allow_new_classes: refuse unknown names instead.

        Returns:
            ``{"id", "sample": new id, "replaced": old id, "boxes": N, "classes_added",
            "similar_classes", "former_names", "class_ids"}`` (as :meth:`answer`); boxes the
            sample holds already (every side within half a pixel) change nothing:
            ``"sample"`` its id, ``"replaced"`` None, ``"unchanged"`` True (before, each such
            save made a new sample, counted towards the next round as new data).

        Raises:
            NotFoundError / ConflictError: as :meth:`answered_sample`.
            LabelError: bad boxes (nothing is changed).
            StorageError: the memory cannot write (the old answer stays).
        """
        with self._locked():
            sample_id = self.answered_sample(item_id, memory)
            records = memory.records(ids=[sample_id])
            if not records:  # removed by another process since
                raise ConflictError(f"label item '{item_id}': its sample is no longer in memory")
            record = records[0]
            known = _label_ids(classes)
            labels, new_names = boxes_to_labels(boxes, record.width, record.height, known)
            if new_names and not allow_new_classes:
                raise LabelError(f"unknown class '{new_names[0]}' (known: "
                                 f"{', '.join(sorted(known)) or 'none'})")
            previous = next((e for e in reversed(self._answered()) if e["id"] == item_id), {})
            added = previous.get("new_classes", 0)
            added = added if type(added) is int and added >= 0 else 0
            if new_names and added + len(new_names) > MAX_NEW_CLASSES_PER_ANSWER:
                raise LabelError(f"label item '{item_id}': its answer and corrections named "
                                 f"{added} new class(es) already; {len(new_names)} more would pass "
                                 f"the {MAX_NEW_CLASSES_PER_ANSWER} an item may teach (a new class "
                                 f"is taught a few at a time)")
            if not new_names and _same_operator_labels(memory, record, labels):
                # saved again as it was: a new sample id would count as new training data
                return {"id": item_id, "sample": sample_id, "replaced": None, "unchanged": True,
                        "boxes": int(labels.shape[0]), "classes_added": [],
                        "similar_classes": {}, "former_names": {},
                        "class_ids": sorted({int(c) for c in labels[:, 0]})}
            similar = _typo_hints(new_names, standing_names(classes.names(), known))
            former = _former_names(new_names, classes)
            register_new_classes(labels, new_names, known, classes)
            memory.sync_class_names(classes.names())
            sample_id, new_id = self._on_current_sample(
                item_id, memory, sample_id,
                lambda current: memory.relabel(current, labels, LabelOrigin.OPERATOR))
            new_id, labels = _follow_merges(memory, classes, new_id, labels)
            corrected = previous.get("corrected", 0)
            self._record(item_id, "answered", sample=new_id, **_frame_of(previous),
                         corrected=(corrected if isinstance(corrected, int) else 0) + 1,
                         new_classes=added + len(new_names))
        return {"id": item_id, "sample": new_id, "replaced": sample_id,
                "boxes": int(labels.shape[0]), "classes_added": new_names,
                "similar_classes": similar, "former_names": former,
                "class_ids": sorted({int(c) for c in labels[:, 0]})}

    def withdraw(self, item_id: str, memory) -> dict:
        """Take an answer back: its sample leaves the memory for good (a frame answered by
        mistake, or one that must not be kept).

        Returns:
            ``{"id", "withdrawn": True, "sample": removed id, "snapshot_copies": N}`` (N:
            training views of past rounds still linking the image until they are pruned).

        Raises:
            NotFoundError / ConflictError: as :meth:`answered_sample`.
            StorageError: the memory cannot write (the answer stays).
        """
        with self._locked():
            sample_id = self.answered_sample(item_id, memory)
            sample_id, _ = self._on_current_sample(item_id, memory, sample_id,
                                                   lambda current: memory.remove([current]))
            self._record(item_id, "withdrawn", sample=sample_id)
        return {"id": item_id, "withdrawn": True, "sample": sample_id,
                "snapshot_copies": memory.snapshot_copies(sample_id)}

    def _on_current_sample(self, item_id: str, memory, sample_id: int, change):
        """``change(sample id)`` on an answered item's sample, looked up again (by its source)
        when another process relabelled it under a new id in between (a class merge renumbers
        each sample it touches): before, a correction or a withdrawal made during a merge was
        refused with "no sample 451" and lost.

        Returns:
            ``(the sample id changed, what change returned)``.

        Raises:
            ConflictError: the sample kept moving (:data:`STALE_LOOKUPS` tries), or is gone.
        """
        from edgecl.continual.memory import MissingSampleError

        for _ in range(STALE_LOOKUPS):
            try:
                return sample_id, change(sample_id)
            except MissingSampleError:
                sample_id = self.answered_sample(item_id, memory)
        raise ConflictError(f"label item '{item_id}': its sample was relabelled by another "
                            f"process (a class merge?) while this ran; try again")

    def answered_image_path(self, item_id: str, memory) -> Path:
        """Path of an answered item's image as the memory stores it.

        Raises:
            NotFoundError / ConflictError: as :meth:`answered_sample`.
        """
        return memory.image_path(self.answered_sample(item_id, memory))

    def drop_stored(self, memory) -> list[tuple[str, int]]:
        """Take off the queue the items whose image the memory now holds with verified labels
        (an import stored it after it was queued): answering one would only be refused, after
        a person did the work. Each is recorded as skipped with the sample that holds it (an
        answer sent later gets the 409 that names it).

        Args:
            memory: the replay memory.

        Returns:
            ``[(item id, sample id)]`` of the items taken off.

        Raises:
            StorageError: the memory's index or the queue's record cannot be read or written
                (the items not yet taken off stay).
        """
        from edgecl.continual.memory import held_copy

        dropped = []
        with self._locked():
            for meta in self._metas():
                held = held_copy(memory, meta.get(HASH_KEY), LabelOrigin.OPERATOR)
                if held is None:
                    continue
                self._record(meta["id"], "skipped", in_memory_as=int(held))
                self._remember_embedding(meta)
                self._remove(meta["id"])
                dropped.append((meta["id"], int(held)))
        return dropped

    def _refuse_duplicate(self, meta: dict, held: int, memory) -> None:
        """Take an item whose image the memory already holds off the queue (recorded as
        skipped, with the sample that holds it) and say so; called with the lock held.

        Raises:
            ConflictError: always (one line naming the stored sample and its origin).
            StorageError: the record cannot be written (the item stays pending).
        """
        item_id = meta["id"]
        origin = _origin_of(memory, held)
        self._record(item_id, "skipped", in_memory_as=int(held))
        self._remember_embedding(meta)
        self._remove(item_id)
        raise ConflictError(f"label item '{item_id}' not stored: its image is already in memory "
                            f"as sample {held}{origin}; the item was taken off the queue")

    def accept(self, item_id: str, memory, classes=None) -> dict:
        """Answer an item with its proposed boxes unchanged (see :meth:`answer`).

        ``classes`` defaults to the registry of the state directory holding this queue
        (``STATE/classes.json`` beside ``STATE/labels``).

        Raises:
            LabelError: the item proposes no box. Accepting it would store the frame as
                "nothing to label here", which teaches every object on it as background; every
                item reads ``[no boxes]`` before the device has a model that detects anything.
                A person who means it answers with an empty list.
            NotFoundError: invalid or unknown id.
            ConflictError: already answered or skipped.
        """
        if classes is None:
            classes = ClassRegistry(self.root.parent)
        item = self.item(item_id)
        names_now = getattr(classes, "names_now", None)
        proposed = with_current_names([item], names_now() if names_now else None)[0]["proposed"]
        if not proposed:
            command = shlex.join(["edgecl", "labels", "answer", f"--state-dir={self.root.parent}",
                                  item_id, "--boxes", "FILE"])
            raise LabelError(f"item {item_id} proposes no box, so accepting it would store the "
                             f"frame as 'nothing to label here'; if that is what it shows, answer "
                             f"it with an empty list ({command} with FILE holding []), else draw "
                             f"its boxes")
        return self.answer(item_id, [{"class": p["class"], "xyxy": p["xyxy"]} for p in proposed],
                           memory, classes)

    def skip(self, item_id: str) -> dict:
        """Drop an item without storing anything.

        Returns:
            ``{"id", "skipped": True}``.

        Raises:
            NotFoundError: invalid or unknown id.
            ConflictError: already answered or skipped.
        """
        with self._locked():
            try:
                meta = self._get(item_id)
            except NotFoundError:
                if not (self.dir / f"{valid_item_id(item_id)}.json").exists():
                    raise
                return self._set_aside(item_id)
            self._record(item_id, "skipped")
            self._remember_embedding(meta)  # a person passed on it: not offered again soon
            self._remove(item_id)
        return {"id": item_id, "skipped": True}

    @property
    def set_aside(self) -> Path:
        """Where skipped malformed items are kept (``labels/malformed/``)."""
        return self.root / "malformed"

    def _set_aside(self, item_id: str) -> dict:
        """Skip an item whose metadata is malformed: its files move to :attr:`set_aside` (the
        frame is kept for a person to look at, never deleted) and the skip is recorded."""
        with storage_faults(f"cannot set malformed label item {item_id} aside", self.set_aside):
            self.set_aside.mkdir(exist_ok=True)
        for suffix in (".jpg", ".json"):
            path = self.dir / f"{item_id}{suffix}"
            with storage_faults(f"cannot set malformed label item {item_id} aside", path):
                if path.exists():
                    os.replace(path, self.set_aside / path.name)
        self._record(item_id, "skipped", malformed=True)
        self._warned.discard(f"{item_id}.json")
        log.info("malformed label item %s set aside in %s", item_id, self.set_aside)
        return {"id": item_id, "skipped": True, "set_aside": str(self.set_aside)}

    def recover(self, memory) -> int:
        """Finish answers a kill interrupted: items whose sample is already stored. An item
        that cannot be finished (a read-only ``pending/`` folder, a full card) stays pending
        with one warning naming it: the runtime starts all the same.

        Args:
            memory: the replay memory.

        Returns:
            How many items were finished.
        """
        done = 0
        with self._locked():
            pending = {m["id"] for m in self._metas()}
            if not pending:
                return 0
            stored = {r.source: r.id for r in memory.records()
                      if str(r.source).startswith(SOURCE_PREFIX)}
            for item_id in sorted(pending):
                sample_id = stored.get(SOURCE_PREFIX + item_id)
                if sample_id is None:
                    continue
                try:
                    self._record(item_id, "answered", sample=int(sample_id))
                    self._remove(item_id)
                except StorageError as exc:  # the item stays; answering it again is safe
                    log.warning("an answer interrupted before a restart was not finished: %s; "
                                "memory sample %d holds it, and answering or skipping the item "
                                "again finishes it", exc, int(sample_id))
                    continue
                done += 1
        if done:
            log.info("finished %d operator answer(s) interrupted before a restart", done)
        return done

    def _image(self, item_id: str) -> np.ndarray:
        """The item's frame, decoded by edgecl's image rule: a truncated JPEG (a card fault)
        is refused, where OpenCV alone filled its missing part with grey and that frame was
        stored as an operator sample.

        Raises:
            NotFoundError: the image is missing, truncated or unreadable.
        """
        from edgecl.data.images import ImageError, read_image

        path = self.dir / f"{item_id}.jpg"
        try:
            return read_image(path)
        except ImageError as exc:
            raise NotFoundError(f"label item '{item_id}': its image is missing or unreadable "
                                f"({exc}); skip it") from None


def _origin_of(memory, sample_id: int) -> str:
    """`` (origin X)`` of a stored sample for a message, ``""`` when it is gone or unknown."""
    try:
        records = memory.records(ids=[int(sample_id)])
    except (EdgeclError, OSError):  # only the message loses the origin
        return ""
    if not records:
        return ""
    origin = records[0].origin
    return f" (origin {getattr(origin, 'value', origin)})"


FRAME_KEYS = ("name", "frame_id", "source")
"""What an answer's record keeps of its frame, so that a person finds the answer again."""


def _frame_of(meta: dict) -> dict:
    """The :data:`FRAME_KEYS` of an item (or of an earlier record) that it has."""
    return {k: meta[k] for k in FRAME_KEYS if meta.get(k) not in (None, "")}


STALE_LOOKUPS = 3
"""Tries of a correction or withdrawal on an answer's sample that another process keeps
relabelling under new ids (see :meth:`OperatorQueue._on_current_sample`)."""


def _follow_merges(memory, classes, sample_id: int | None, labels: np.ndarray):
    """An answer's stored sample renumbered where it names a class merged into another since
    its names were read (a ``classes merge`` in another process, whose pass over the memory
    may have run before this sample was stored): before, such an answer kept the retired id
    after the merge had said it was done.

    Args:
        memory: the replay memory (``remap_classes``; a memory without it is left alone).
        classes: the class registry (``merged()``).
        sample_id: the stored sample, or None (declined: nothing to follow).
        labels: ``(N, 5)`` float rows as stored.

    Returns:
        ``(sample id, rows)``, both as stored now.
    """
    merged = getattr(classes, "merged", None)
    remap = getattr(memory, "remap_classes", None)
    if sample_id is None or merged is None or remap is None or not len(labels):
        return sample_id, labels
    from edgecl.continual.memory.records import renumber_classes

    mapping = {int(c): int(into) for c, into in merged().items()}
    mapped = renumber_classes(labels, mapping)
    if mapped is None:
        return sample_id, labels
    new_id = remap(int(sample_id), mapping)
    return (sample_id if new_id is None else int(new_id)), mapped


def _label_ids(classes) -> dict[str, int]:
    """Name -> the id an answer's box with that name gets (a merged class's name gives the
    class it was merged into; a registry without merges: its names)."""
    label_ids = getattr(classes, "label_ids", None)
    if label_ids is not None:
        return {name: int(cid) for name, cid in label_ids().items()}
    return {name: int(cid) for cid, name in classes.names().items()}


def stored_boxes(label_path: Path, width: int, height: int, names: dict[int, str]) -> list[dict]:
    """A stored label file as answer boxes: ``[{"class": name, "xyxy": [x1, y1, x2, y2]}]``
    in pixels of a ``width`` x ``height`` frame (the inverse of
    :func:`~edgecl.data.answers.boxes_to_labels`; an id without a name reads ``class<id>``).

    Raises:
        LabelError: a malformed file.
        OSError: the file cannot be read.
    """
    from edgecl.continual.memory.records import parse_label_file

    boxes = []
    for cls, cx, cy, w, h in parse_label_file(Path(label_path)).tolist():
        boxes.append({"class": names.get(int(cls), f"class{int(cls)}"),
                      "xyxy": [round((cx - w / 2) * width, 2), round((cy - h / 2) * height, 2),
                               round((cx + w / 2) * width, 2), round((cy + h / 2) * height, 2)]})
    return boxes


def _stored_sample(memory, source: str) -> int | None:
    """Id of a memory sample whose source is ``source`` (an answer stored before a kill)."""
    for record in memory.records():
        if record.source == source:
            return int(record.id)
    return None


def _meta_problem(meta: object, stem: str) -> str | None:
    if not isinstance(meta, dict):
        return "not a JSON object"
    if meta.get("id") != stem:
        return f"its id {str(meta.get('id'))[:40]!r} does not match the file name"
    for key in ("width", "height"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return f"'{key}' must be a positive integer"
    if not finite_number(meta.get("priority", 0.0)):
        return "'priority' must be a number"
    task = meta.get("task")
    if task is not None and not (isinstance(task, str) and 0 < len(task) <= MAX_TASK_CHARS):
        return f"'task' must be a name of 1-{MAX_TASK_CHARS} characters"
    if "created_s" in meta and not finite_number(meta["created_s"]):
        return "'created_s' must be a number"
    digest = meta.get(HASH_KEY)
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{8,64}", digest)):
        return f"'{HASH_KEY}' must be 8-64 lower-case hex digits"
    reasons = meta.get("reasons", {})
    if not isinstance(reasons, dict) or not all(finite_number(v) for v in reasons.values()):
        return "'reasons' must be an object of policy -> score"
    proposed = meta.get("proposed", [])
    if not isinstance(proposed, list) or not all(
            isinstance(p, dict) and isinstance(p.get("xyxy"), list) and len(p["xyxy"]) == 4
            and all(finite_number(v) for v in p["xyxy"]) and isinstance(p.get("class"), str)
            and finite_number(p.get("score", 0.0))
            and (p.get("class_id") is None or (type(p["class_id"]) is int and p["class_id"] >= 0))
            for p in proposed):
        return ("'proposed' must be a list of {class: text, class_id: id, xyxy: 4 numbers, "
                "score: number}")
    return None


def _taken_off(item_id: str, held: object) -> ConflictError:
    """The refusal for an item taken off the queue because its image was already in memory as
    sample ``held`` (an import stored it meanwhile), the same from every route."""
    return ConflictError(f"label item '{item_id}' was taken off the queue: its image was "
                         f"already in memory as sample {held}")


def _image_problem(image_path: Path, meta: dict) -> str | None:
    """What is wrong with an item's image, if anything: missing or cut (the JPEG's markers; the
    queue writes the image before its record, so a record without a whole image is damage),
    not decodable as an image, or of another size than the record says (its boxes, in pixels
    of the recorded size, could not be placed on it)."""
    from PIL import Image, UnidentifiedImageError

    from edgecl.continual.memory.verify import quick_image_problem

    why = quick_image_problem(image_path, None)
    if why is not None:
        return why
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"image {image_path.name} does not decode ({type(exc).__name__})"
    if (width, height) != (meta["width"], meta["height"]):
        return (f"it records {meta['width']}x{meta['height']} pixels, its image is "
                f"{width}x{height}")
    return None


def _normalise(meta: dict) -> dict:
    meta = dict(meta)
    meta["priority"] = float(meta.get("priority", 0.0))
    meta.setdefault("reasons", {})
    created = meta.get("created_s")
    if not isinstance(created, (int, float)):
        created = int(meta["id"].split("-")[0]) / 1e9 if meta["id"].split("-")[0].isdigit() else 0.0
    meta["created_s"] = float(created)
    meta["proposed"] = [{"class": str(p["class"]), "xyxy": [float(v) for v in p["xyxy"]],
                         "score": float(p.get("score", 0.0)),
                         **({"class_id": p["class_id"]} if "class_id" in p else {})}
                        for p in meta.get("proposed", [])]
    return meta


PUBLIC_KEYS = ("id", "priority", "priority_now", "reasons", "width", "height", "created_s",
               "proposed", "source", "name", "frame_id", "task")


def _public(meta: dict) -> dict:
    return {k: meta.get(k) for k in PUBLIC_KEYS}


def aged_priority(priority: float, created_s: float, now_s: float, half_life_s: float) -> float:
    """A queue item's priority after waiting: halved every ``half_life_s`` seconds.

    Args:
        priority: the priority the selection gave it when it was queued.
        created_s: when it was queued (wall clock, seconds).
        now_s: now (the same clock); a time before ``created_s`` (the clock went back) counts
            as no wait.
        half_life_s: seconds that halve it; 0 or less: no ageing.

    Returns:
        ``priority * 0.5 ** (wait_s / half_life_s)``.
    """
    if half_life_s <= 0:
        return float(priority)
    wait_s = max(0.0, float(now_s) - float(created_s))
    return float(priority) * 0.5 ** (wait_s / half_life_s)


def with_current_names(items: list[dict], names_now) -> list[dict]:
    """Queue items whose proposed boxes name each class as the registry names it now: an item
    queued before ``edgecl classes rename car auto`` proposes ``car``, and an answer keeping
    that box would make ``car`` a new, empty class beside ``auto`` (or, once a later label
    made ``car`` a new class, teach the box as that other class).

    Args:
        items: :meth:`OperatorQueue.pending` or :meth:`OperatorQueue.item` dicts.
        names_now: :meth:`ClassRegistry.names_now <edgecl.models.classes.ClassRegistry.names_now>`
            (each box is read by its class id where it has one); ``None``: items unchanged.

    Returns:
        The items, each with its ``proposed`` names brought up to date (copies where changed).
    """
    if names_now is None:
        return items
    out = []
    for item in items:
        proposed = item.get("proposed") or []
        now = [names_now.of(p.get("class"), p.get("class_id")) for p in proposed]
        if any(n != p.get("class") for n, p in zip(now, proposed)):
            item = {**item, "proposed": [
                {**p, "class": n, "class_id": names_now.id_of(n)} if n != p.get("class") else p
                for n, p in zip(now, proposed)]}
        out.append(item)
    return out


def _same_operator_labels(memory, record, labels: np.ndarray) -> bool:
    """Whether a stored operator answer already holds ``labels`` (float (N, 5) YOLO rows):
    the same boxes, in any order, by :func:`~edgecl.continual.ingest.same_boxes`. A memory
    without ``get`` (a test double), or one that cannot read the sample, counts as other."""
    from edgecl.continual.ingest import same_boxes

    get = getattr(memory, "get", None)
    if get is None or getattr(record, "origin", None) != LabelOrigin.OPERATOR:
        return False
    try:
        stored = get([record.id])[0].labels
    except (EdgeclError, OSError) as exc:
        log.debug("sample %s not compared with its correction: %s", record.id, exc)
        return False
    # half a pixel: the stored rows' rounding; a 1 px nudge on purpose is a correction
    # (before: within 1.5 px, a keyboard's one-pixel fix of a 6 px box was 'unchanged')
    return same_boxes(stored, labels, record.width, record.height, tolerance_px=0.5)
