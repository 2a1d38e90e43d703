"""The device's class registry ``STATE/classes.json``: one id per class name for the device's life.

A class id is what a model's head outputs and what a YOLO label row starts with; the registry
is the one place that maps ids to names. Ids are never reused or renumbered: a new name gets
the next id (so the ids stay ``0..n-1``, the layout of a YOLO head), a rename keeps the id,
and nothing is ever deleted. A pretrained checkpoint's names seed it (ultralytics' ``names``
dict, e.g. the 80 COCO classes).

File (written atomically through :mod:`edgecl.atomic`)::

    {"format": 1, "classes": [{"id": 0, "name": "car", "first_seen": "2026-11-29T16:00:00+00:00"}, ...]}

Every change is a read-modify-write under an exclusive ``fcntl`` lock on
``STATE/classes.lock``, so ``edgecl labels import`` may grow the registry while the runtime
runs; readers need no lock (the file is replaced whole).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgecl.atomic import atomic_write_json, damaged_copy_path
from edgecl.boot import now_iso
from edgecl.data.class_names import (clean_name, known_spelling, loose_class_name,
                                     refuse_ignore_name, same_name_key)
from edgecl.data.labels import MAX_CLASSES  # also the most classes a registry holds
from edgecl.errors import ConflictError, LabelError, NotFoundError, StorageError, json_problem

log = logging.getLogger(__name__)

_PLACEHOLDER_NAME = re.compile(r"(?:class_?)?(\d+)", re.IGNORECASE)
"""The names a model gets when it was trained without any ('0', ultralytics' 'class_0')."""

MAX_FORMER_NAMES = 16
"""Former names a class keeps (``renamed_from``, newest last): what models and queued items made
before a rename call it; a class renamed back and forth keeps each name once."""

FILE_NAME = "classes.json"
LOCK_NAME = "classes.lock"
FORMAT_VERSION = 1


BACKUP_NAME = "classes.backup.json"
"""The registry's second copy, beside it (:attr:`ClassRegistry.backup_path`)."""
REBUILD_HINT = ("'edgecl memory verify' restores it from its backup (classes.backup.json) or "
                "rebuilds it from the replay memory's class names")
"""What a damaged class registry's message says to do."""


MAX_REGISTRY_BYTES = 64 * 1024 * 1024
"""Largest ``classes.json`` read (10,000 classes with long former names take ~3 MB)."""


class ClassRegistryError(LabelError):
    """``classes.json`` is unreadable or inconsistent (one line naming the file and the fault)."""


def named_by_number(names: dict[int, str]) -> bool:
    """True when every class is named by its own id only, as a model trained without names is
    (``'0'``, ultralytics' ``'class_0'``).

    Args:
        names: class id -> name.
    """
    found = {cid: _PLACEHOLDER_NAME.fullmatch(str(name)) for cid, name in names.items()}
    return bool(names) and all(m is not None and int(m[1]) == cid for cid, m in found.items())


def _seed_names(names: dict) -> dict[int, str]:
    """A checkpoint's class id -> name, ids as integers and names cleaned.

    Raises:
        LabelError: an id that is no integer, an invalid name, or two names that are one
            class to every lookup (``car`` beside ``Car``).
    """
    try:
        wanted = {int(k): clean_name(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise LabelError(f"checkpoint class ids must be integers, got {sorted(names)[:5]}") from None
    keys = [n.casefold() for n in wanted.values()]
    if len(set(keys)) != len(keys):
        raise LabelError(f"class names are not unique: {_names_twice(wanted)}")
    return wanted


def _seed_plan(entries: list[dict], wanted: dict[int, str]) -> dict[int, str]:
    """The classes a checkpoint's names add to the registry's ``entries`` (id -> name).

    Raises:
        ConflictError: an id named differently, or a name under another id (a name the class
            had before a rename is its own).
        LabelError: new ids that would leave a gap after the registry's.
    """
    by_id = {e["id"]: e["name"] for e in entries}
    by_name = {same_name_key(e["name"]): e["id"] for e in entries}
    former = {e["id"]: e.get("renamed_from") or [] for e in entries}  # a model made before a
    for cid, name in sorted(wanted.items()):  # rename names the class so; case aside too
        key = same_name_key(name)
        old_name = cid in by_id and any(_one_class_name(name, n) for n in former[cid])
        if cid in by_id and not _one_class_name(by_id[cid], name) and not old_name:
            raise ConflictError(f"class id {cid} is {by_id[cid]!r} in the class registry but "
                                f"{name!r} in the checkpoint")
        if key in by_name and by_name[key] != cid and not old_name:
            raise ConflictError(f"class {name!r} has id {by_name[key]} in the class registry "
                                f"but {cid} in the checkpoint")
    new = {cid: n for cid, n in wanted.items() if cid not in by_id}
    if sorted(new) != list(range(len(entries), len(entries) + len(new))):
        raise LabelError(f"checkpoint class ids {sorted(wanted)[:8]} would leave a gap after the "
                         f"registry's {len(entries)} classes (ids must stay 0..n-1)")
    return new


def _one_class_name(a: object, b: object) -> bool:
    """Whether a model's name for a class id and the registry's for the same id name one class:
    the same but for case (:func:`same_name_key`), or for case and separators
    (:func:`loose_class_name`: ``OtherVehicle`` is ``other_vehicle``, as imports map names)."""
    loose = loose_class_name(str(a))
    return same_name_key(a) == same_name_key(b) or bool(loose) and loose == loose_class_name(str(b))


def names_conflict(known: dict[int, str], names: dict,
                   former: dict[int, list[str]] | None = None) -> str | None:
    """Why class ids ``names`` cannot be those of a device whose registry holds ``known``.

    Args:
        known: the class registry's id -> name.
        names: class id -> name of a model or a labelled source.
        former: id -> names the class had before a ``classes rename`` (a model made before
            the rename names the class so: it is the same class, under the same id; under
            another id the name is another class, as the rename freed it).

    Returns:
        ``"class id 0 is 'car', but this device's class registry has 'boat' there"`` (and, when
        the name sits elsewhere, ``"and 'car' as id 3"``), or ``None`` when they agree (an id's
        names that differ only in case or separators agree: ``car`` is the class ``Car``,
        ``OtherVehicle`` the class ``other_vehicle``).
    """
    former = former or {}
    by_name = {}  # a former name is free (a later label naming it makes a new class): not here
    for k, v in sorted(known.items()):
        by_name.setdefault(same_name_key(v), k)
    for cid, name in sorted((int(k), str(v)) for k, v in names.items()):
        other = by_name.get(same_name_key(name))  # 'car' is the class 'Car', as imports map it
        same = cid in known and any(_one_class_name(name, n)
                                    for n in [known[cid], *former.get(cid, [])])
        # a former name of this id is this class, also once a new class took the freed name
        if (cid in known and not same) or (other is not None and other != cid and not same):
            device = f"'{known[cid]}'" if cid in known else "no class"
            # the registry's own spelling ('truck' for a checkpoint's 'Truck': before, the
            # checkpoint's, a class the registry does not hold under that name)
            return (f"class id {cid} is '{name}', but this device's class registry has "
                    f"{device} there" + (f" and '{known[other]}' as id {other}"
                                         if other is not None else ""))
    return None


def named_now(values: dict, names_then: dict, names_now: dict[int, str],
              former: dict[int, list[str]] | None = None) -> dict:
    """Re-key per-class figures recorded under the names a version was made with by the
    classes' names now.

    A version's manifest keys its per-class figures (``per_class_map50_95``, the gate's
    ``gate_drops`` and ``gate_steps``, the monitor's ``class_ap50_95``) by the names its
    classes had then, beside its ``classes`` (id -> name then). After ``classes rename Car
    Vehicle`` the figure of id 0 is Vehicle's; a later class named Car (a new id) has none of it.

    Args:
        values: name then -> value.
        names_then: class id -> name, as the version recorded them (keys may be strings, as JSON
            gives them).
        names_now: class id -> name now (the class registry's).
        former: class id -> names a rename took from it (the registry's
            :meth:`ClassRegistry.former_names`): a name the version does not list (one a class
            was given while the version's round ran) is found there, when one class only had it.

    Returns:
        Name now -> value. A name found nowhere keeps its key (a task's name in a per-task
        view). Where two keys become one (a class merged into another), a missing value (None)
        gives way to the other; two values keep the later under its recorded name.
    """
    ids: dict[str, int] = {}
    for cid, name in (names_then or {}).items():
        try:
            ids.setdefault(str(name), int(cid))
        except (TypeError, ValueError):  # a hand-edited manifest: that name keeps its key
            continue
    had: dict[str, set[int]] = {}
    for cid, old in (former or {}).items():
        for name in old:
            had.setdefault(str(name), set()).add(int(cid))
    current = set(names_now.values())
    out: dict = {}
    for name, value in values.items():
        cid = ids.get(str(name))
        if cid is None and str(name) not in current and len(had.get(str(name), ())) == 1:
            cid = next(iter(had[str(name)]))
        key = names_now.get(cid, name) if cid is not None else name
        if key in out:
            if value is None:
                continue
            if out[key] is not None:
                key = name
        out[key] = value
    return out


@dataclass(frozen=True)
class NamesNow:
    """One read of a class registry, to tell what a class named (and numbered) earlier is
    called now: after ``classes rename car auto`` a box proposed as ``car`` is ``auto``, also
    once a later label made ``car`` a new class; after ``classes merge cat dog`` it is ``dog``.

    Attributes:
        names: class id -> name now.
        former: class id -> the names renames took from it, oldest first.
        merged: merged class id -> the id it now means (the end of its chain of merges).
        renamed: former name -> name now, for each former name no class holds since.
    """

    names: dict[int, str]
    former: dict[int, list[str]]
    merged: dict[int, int]
    renamed: dict[str, str]

    def of(self, name: str, class_id: int | None = None) -> str:
        """The name now of the class written down as ``name`` (with its id when known).

        Args:
            name: the class's name when it was written down.
            class_id: its id then; trusted only where the registry knows ``name`` as that id's
                name, now or before a rename (a model whose names are not the registry's
                is read by name).

        Returns:
            The class's name now: the id's current name (its merge target's, for a merged
            class), else by name, following a rename no class undid, then a merge; ``name``
            itself when the registry does not know it.
        """
        key = same_name_key(name)
        if type(class_id) is int and class_id in self.names and key in {
                same_name_key(n) for n in [self.names[class_id], *self.former.get(class_id, [])]}:
            return self.names[self.merged.get(class_id, class_id)]
        name = self.renamed.get(name, name)
        cid = self.id_of(name)
        return name if cid is None or cid not in self.merged else self.names[self.merged[cid]]

    def id_of(self, name: str) -> int | None:
        """The id of the class named ``name`` now (in any case), or ``None``."""
        key = same_name_key(name)
        return next((i for i, n in self.names.items() if same_name_key(n) == key), None)


class ClassRegistry:
    """Class id <-> name of one device, persisted in ``STATE/classes.json``.

    Args:
        state_dir: the state directory (the file is created on the first change).
    """

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME

    # ----------------------------------------------------------------- storage

    @contextlib.contextmanager
    def _file_lock(self):
        """Hold the registry's inter-process lock."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.state_dir / LOCK_NAME, "a+")  # noqa: SIM115  (closed below)
        except OSError as exc:
            raise StorageError(f"cannot write the class registry in {self.state_dir}: {exc.strerror}") from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the registry's inter-process lock; yield the entries read under it."""
        with self._file_lock():
            yield self._read()

    def _read(self, path: Path | None = None) -> list[dict]:
        """Entries sorted by id (empty when the file does not exist yet); ``path``: another copy
        of the file to read (its backup).

        Raises:
            ClassRegistryError: unreadable JSON, wrong layout, duplicate ids or names, gaps; or
                ``classes.json`` missing while its backup holds classes (restored from it by
                :func:`adopt_memory_class_names`).
        """
        from edgecl.input_files import InputFileError, read_input_text

        path = self.path if path is None else path
        try:
            text = read_input_text(path, MAX_REGISTRY_BYTES, "the class registry")
        except FileNotFoundError:
            if path != self.path or not self._backup_holds_classes():
                return []
            if self.path.exists():  # written by another writer since it was looked for: its
                return self._read(path)  # backup follows it (before: read as deleted)
            # deleted (a card fault, a hand's rm): damaged, not a new device (before, the
            # registry was rebuilt from the memory's names, its merges and renames lost)
            raise ClassRegistryError(f"the class registry {path} is missing while its "
                                     f"backup {BACKUP_NAME} holds classes; "
                                     f"{REBUILD_HINT}") from None
        except InputFileError as exc:  # a pipe, a device, or gigabytes where the file was
            raise ClassRegistryError(f"corrupt class registry {path}: {exc.strerror}; "
                                     f"{REBUILD_HINT}") from None
        except UnicodeDecodeError as exc:
            raise ClassRegistryError(f"cannot read the class registry {path}: {exc}") from None
        except OSError as exc:
            # no permission, an I/O error: not damage (restoring the backup over it rewrote a
            # registry a read-only command could not read)
            raise StorageError(f"cannot read the class registry {path}: "
                               f"{exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClassRegistryError(f"corrupt class registry {path}: {json_problem(exc)}; "
                                     f"{REBUILD_HINT}") from None
        except (ValueError, RecursionError) as exc:  # a number of over 4300 digits, deep nesting
            raise ClassRegistryError(f"corrupt class registry {path}: "
                                     f"{str(exc) or 'nested too deeply'}; {REBUILD_HINT}") from None
        entries = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and type(e.get("id")) is int and isinstance(e.get("name"), str)
                for e in entries):  # type(): true and false are JSON's, not ids 1 and 0
            raise ClassRegistryError(f"corrupt class registry {path}: expected "
                                     '{"classes": [{"id": int, "name": str, ...}]}; '
                                     f"{REBUILD_HINT}")
        for entry in entries:
            try:
                clean_name(entry["name"], strict=False)
            except LabelError as exc:
                raise ClassRegistryError(f"corrupt class registry {path}: class "
                                         f"{entry['id']}: {exc}; {REBUILD_HINT}") from None
        entries = sorted((_without_bad_former_names(e) for e in entries), key=lambda e: e["id"])
        ids = [e["id"] for e in entries]
        names = [e["name"] for e in entries]
        if ids != list(range(len(ids))) or len(set(names)) != len(names):
            raise ClassRegistryError(f"corrupt class registry {path}: ids must be 0..n-1 and names "
                                     f"unique; {REBUILD_HINT}")
        broken = _broken_merges(entries)
        if broken:
            key = (str(path), tuple(broken))
            if key not in _WARNED_MERGES:
                _WARNED_MERGES.add(key)
                log.warning("class registry %s: 'merged_into' of class(es) %s ignored (it names "
                            "no other class, or the merges loop); those classes stand on their "
                            "own ('edgecl classes merge' records a merge again)", path,
                            ", ".join(f"{cid} {entries[cid]['name']}" for cid in broken))
            entries = [{k: v for k, v in e.items() if k != "merged_into"} if e["id"] in broken
                       else e for e in entries]
        return entries

    def _backup_holds_classes(self) -> bool:
        try:
            return bool(self._read(self.backup_path))
        except ClassRegistryError:
            return False

    @property
    def backup_path(self) -> Path:
        """A second copy of ``classes.json``, written after it: what a damaged file is restored
        from with its merges and renames (the replay memory's names know neither)."""
        return self.path.with_name(BACKUP_NAME)

    def _write(self, entries: list[dict]) -> None:
        content = {"format": FORMAT_VERSION, "classes": entries}
        try:
            atomic_write_json(self.path, content)
        except OSError as exc:
            raise StorageError(f"cannot write the class registry {self.path}: {exc.strerror}") from None
        try:
            atomic_write_json(self.backup_path, content)
        except OSError as exc:  # the registry itself is written: only its second copy is late
            log.warning("the class registry's backup %s was not written: %s", self.backup_path,
                        exc.strerror or exc)

    def restore_backup(self) -> tuple[dict[int, str], Path | None] | None:
        """Replace a damaged ``classes.json`` with its backup (merges and renames kept), the
        damaged file kept beside it.

        Returns:
            ``(names, where the damaged file went)``, or None when there is no usable backup
            (or the file reads well: nothing changed).

        Raises:
            StorageError: the state directory cannot be written.
        """
        with self._file_lock():
            if self._reads_well():
                return None
            try:
                entries = self._read(self.backup_path)
            except ClassRegistryError:
                return None
            if not entries:
                return None
            kept = self._move_damaged_aside()
            self._write(entries)
            return {e["id"]: e["name"] for e in entries}, kept

    def _reads_well(self) -> bool:
        try:
            self._read()
        except ClassRegistryError:
            return False
        return True

    def _move_damaged_aside(self) -> Path | None:
        kept = damaged_copy_path(self.path, now_iso().replace(":", ""))
        try:
            os.replace(self.path, kept)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot move the damaged class registry {self.path} aside: "
                               f"{exc.strerror}") from None
        return kept

    # ----------------------------------------------------------------- reading

    def names(self) -> dict[int, str]:
        """Return class id -> name (ids ``0..n-1``).

        Raises:
            ClassRegistryError: the file is corrupt.
        """
        return {e["id"]: e["name"] for e in self._read()}

    def __len__(self) -> int:
        """Number of classes."""
        return len(self._read())

    def list(self, sample_counts: dict | None = None) -> list[dict]:
        """Return every class as ``{"id", "name", "samples", "first_seen"}``, by id, and for a
        merged class ``merged_into`` (the name of the class it now is).

        Args:
            sample_counts: class id (int or str) -> samples holding it (e.g. the replay
                memory's ``stats()["per_class"]``); missing ids count 0. ``None``: the counts
                are unknown (``samples`` is ``None``).

        Returns:
            The rows ``edgecl classes list --json`` prints.
        """
        counts = None if sample_counts is None else {str(k): int(v)
                                                     for k, v in sample_counts.items()}
        entries = self._read()
        names = {e["id"]: e["name"] for e in entries}
        by_id = {e["id"]: e for e in entries}
        rows = []
        for e in entries:
            row = {"id": e["id"], "name": e["name"],
                   "samples": None if counts is None else counts.get(str(e["id"]), 0),
                   "first_seen": e.get("first_seen", "")}
            if isinstance(e.get("merged_into"), int):
                row["merged_into"] = names[_merge_target(entries, e["id"], by_id)]
            rows.append(row)
        return rows

    def conflict(self, names: dict) -> str | None:
        """Why a model's (or a labelled source's) class ids cannot be this device's, if they
        cannot: an id the registry names differently, or a name it has under another id.

        Args:
            names: class id -> name.

        Returns:
            ``"class id 0 is 'car', but this device's class registry has 'boat' there"`` (and,
            when the name sits elsewhere, ``"and 'car' as id 3"``), or ``None``.
        """
        return names_conflict(self.names(), names, self.former_names())

    def former_names(self) -> dict[int, list[str]]:
        """Class id -> the names a ``classes rename`` took from it, oldest first (models made
        before the rename still name the class so).

        Raises:
            ClassRegistryError: the file is corrupt.
        """
        return _former_names(self._read())

    def names_now(self) -> NamesNow:
        """What each class name or id written down earlier (a queued proposal, a model made
        before a rename) is called now, from one read of the file.

        Raises:
            ClassRegistryError: the file is corrupt.
        """
        entries = self._read()
        names = {e["id"]: e["name"] for e in entries}
        former, merged = _former_names(entries), _merged(entries)
        current = {same_name_key(n) for n in names.values()}
        renamed = {old: names[cid] for cid, olds in former.items() for old in olds
                   if same_name_key(old) not in current}
        return NamesNow(names, former, merged, renamed)

    def check_ids(self, ids, where: str, names: dict[int, str] | None = None) -> None:
        """Refuse class ids the registry does not know.

        Args:
            ids: class ids of a label (ints or integral floats, e.g. a YOLO label's column 0).
            where: what the ids come from (``file:line``, a queue item), for the message.
            names: the registry's names when the caller already read them (:meth:`names`).

        Raises:
            LabelError: an id that is not an integer in ``0..n-1``, with one line naming it.
        """
        known = self.names() if names is None else names
        for raw in ids:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise LabelError(f"{where}: class id {raw!r} is not a number") from None
            if not value.is_integer() or int(value) not in known:
                shown = ", ".join(f"{i} {n}" for i, n in list(known.items())[:5])
                more = ", ..." if len(known) > 5 else ""
                raise LabelError(f"{where}: class id {value:g} is not in the class registry "
                                 f"({len(known)} class{'es' if len(known) != 1 else ''}"
                                 f"{': ' + shown + more if known else ''})")

    # ----------------------------------------------------------------- changing

    def id_for(self, name: str, create: bool = True, loose: bool = False) -> int:
        """Return the id of a class name, giving a new name the next id.

        A name that differs from a class's only in case is that class (when no class has
        exactly that name); a merged class's name gives the class it was merged into. The
        look-up and the adding are one step under the registry's lock: two processes naming
        ``Forklift`` and ``forklift`` at once get one class (before, each found neither and
        added its own).

        Args:
            name: the class name (surrounding white space ignored).
            create: add an unknown name; when False, raise instead.
            loose: also take a name spelt with other separators for the one class it matches
                (``OtherVehicle`` for ``other_vehicle``: :func:`loose_class_name`), as imports
                map names.

        Returns:
            The class id.

        Raises:
            NotFoundError: unknown name and ``create`` is False.
            LabelError: an invalid name, or a new one past :data:`MAX_CLASSES`.
        """
        name = clean_name(name)
        found = _id_of_name(self._read(), name, loose)
        if found is not None:
            return found
        if not create:
            raise NotFoundError(f"unknown class {name!r}{self._hint(name)}")
        with self._locked() as entries:
            found = _id_of_name(entries, name, loose)  # added meanwhile by another process
            if found is not None:
                return found
            self._append(entries, [name])
            return len(entries) - 1

    def names_to_ids(self) -> dict[str, int]:
        """Return name -> id."""
        return {e["name"]: e["id"] for e in self._read()}

    def add(self, names) -> list[str]:
        """Add the names the registry does not have yet, in order, each with the next id.

        Args:
            names: class names.

        Returns:
            The names added (already known ones are left out, and so is a name that differs
            from a known one, or from one added before it, only in case: it is that class).

        Raises:
            LabelError: an invalid name, or more than :data:`MAX_CLASSES` classes in all
                (nothing is added then).
        """
        wanted = list(dict.fromkeys(clean_name(n) for n in names))
        with self._locked() as entries:
            keys = {same_name_key(e["name"]) for e in entries}
            added = []
            for n in wanted:
                if same_name_key(n) not in keys:
                    keys.add(same_name_key(n))
                    added.append(n)
            self._append(entries, added)
        return added

    def _append(self, entries: list[dict], names: list[str]) -> None:
        """Give ``names`` the next ids and write the registry; called with the lock held.

        Raises:
            LabelError: more than :data:`MAX_CLASSES` classes in all (nothing is written).
        """
        if len(entries) + len(names) > MAX_CLASSES:
            raise LabelError(f"the class registry {self.path} holds {len(entries)} classes: "
                             f"adding {len(names)} would pass the bound of {MAX_CLASSES}")
        if names:
            stamp = now_iso()
            entries += [{"id": len(entries) + i, "name": n, "first_seen": stamp}
                        for i, n in enumerate(names)]
            self._write(entries)

    def replace_damaged(self, names: dict[int, str]) -> Path | None:
        """Rebuild a damaged ``classes.json`` from names another record holds (the replay
        memory's), keeping the damaged file beside it as ``classes.json.corrupt-<UTC time>``.

        Args:
            names: class id -> name, ids ``0..n-1`` (the memory's).

        Returns:
            Where the damaged file went, or None when the file reads well (nothing changed).

        Raises:
            LabelError: ``names`` is not a gap-free id -> name map of valid names.
            StorageError: the state directory cannot be written.
        """
        wanted = {int(k): clean_name(v) for k, v in names.items()}
        if sorted(wanted) != list(range(len(wanted))) or len(set(wanted.values())) != len(wanted):
            raise LabelError(f"cannot rebuild {self.path} from {sorted(wanted.items())[:5]}: ids "
                             f"must be 0..n-1 and names unique")
        with self._file_lock():
            if self._reads_well():
                return None
            stamp = now_iso()
            kept = self._move_damaged_aside()
            self._write([{"id": i, "name": n, "first_seen": stamp}
                         for i, n in sorted(wanted.items())])
            return kept

    def seed(self, names: dict[int, str], checkpoint: str | None = None) -> list[str]:
        """Adopt a pretrained checkpoint's class names (``model.names``) with their ids.

        Ids the registry already has must carry the same names; new ids must extend the
        registry without gaps.

        Args:
            names: class id -> name of the checkpoint's head.
            checkpoint: the trained checkpoint (``.pt``) the names come from, recorded with the
                classes it adds (:meth:`seeding_checkpoint`); None for an exported engine or
                a dataset's names.

        Returns:
            The names added.

        Raises:
            ConflictError: an id named differently, or a name under another id, in the registry.
            LabelError: invalid names or ids, or ids that would leave a gap.
        """
        wanted = _seed_names(names)
        with self._locked() as entries:
            new = _seed_plan(entries, wanted)
            origin = {"checkpoint": str(Path(checkpoint).absolute())} if checkpoint else {}
            # classes a labelled stream named first are the checkpoint's too (its ids agree):
            # before, only new ones were marked, and a round from scratch replaced it
            marked = [e for e in entries if origin and e["id"] in wanted and not e.get("checkpoint")]
            for entry in marked:
                entry.update(origin)
            if new or marked:
                stamp = now_iso()
                entries += [{"id": cid, "name": new[cid], "first_seen": stamp, **origin}
                            for cid in sorted(new)]
                self._write(entries)
        if new and named_by_number(new):
            first = new[min(new)]
            log.warning("the checkpoint names its classes by number only (%s): a label that names "
                        "the object ('car') becomes a new class beside them; give them their "
                        "names first, e.g. 'edgecl classes rename --state-dir %s %s car'",
                        ", ".join(repr(new[c]) for c in sorted(new)[:3])
                        + (", ..." if len(new) > 3 else ""),
                        shlex.quote(str(self.state_dir)), shlex.quote(first))
        return [new[c] for c in sorted(new)]

    def seeding_checkpoint(self) -> str | None:
        """The trained checkpoint this device's first classes came from (:meth:`seed`), or
        None: a round with no version and no ``model.path`` would otherwise train from scratch
        and replace what it knows.

        Raises:
            ClassRegistryError: the file is corrupt.
        """
        entries = self._read()
        path = entries[0].get("checkpoint") if entries else None
        return path if isinstance(path, str) and path else None

    def seed_problem(self, names: dict[int, str]) -> str | None:
        """Why :meth:`seed` would refuse these names now, without writing anything (a model
        add checks this before it stages a copy of the model).

        Args:
            names: class id -> name of the checkpoint's head.

        Returns:
            The refusal :meth:`seed` would raise, or ``None``.

        Raises:
            ClassRegistryError: the file is corrupt.
        """
        try:
            _seed_plan(self._read(), _seed_names(names))
        except (ConflictError, LabelError) as exc:
            return str(exc)
        return None

    def rename(self, old: str, new: str) -> int:
        """Rename a class; its id stays.

        Args:
            old: the current name.
            new: the new name.

        Returns:
            The class id.

        Raises:
            NotFoundError: ``old`` is not a class.
            ConflictError: ``new`` already names another class (in any case, or with other
                separators: ``Other_Vehicle`` for ``OtherVehicle``, which imports take for one
                class; a merged class's name too), or ``old`` was merged into another class.
            LabelError: an invalid new name, or one that marks an ignore region (``DontCare``).
        """
        old, new = clean_name(old), clean_name(new)
        refuse_ignore_name(new, f"cannot rename {old!r}: ")
        with self._locked() as entries:
            by_name = {e["name"]: e for e in entries}
            old = known_spelling(old, by_name) or old  # 'FORKLIFT' names the class 'forklift'
            if old not in by_name:
                raise NotFoundError(f"unknown class {old!r}{self._hint(old, entries)}")
            if new == old:
                return by_name[old]["id"]
            if isinstance(by_name[old].get("merged_into"), int):
                into = {e["id"]: e["name"] for e in entries}[_merge_target(entries, by_name[old]["id"])]
                raise ConflictError(f"cannot rename {old!r}: it was merged into {into!r}, and "
                                    f"its name means that class (rename {into!r} instead)")
            key = loose_class_name(new)  # the rule imports match names by: one class
            clash = next((e for e in entries if e["name"] != old and (
                e["name"].casefold() == new.casefold()
                or (key and loose_class_name(e["name"]) == key))), None)
            if clash is not None and clash.get("merged_into") == by_name[old]["id"]:
                raise ConflictError(f"cannot rename {old!r} to {new!r}: {clash['name']!r} was "
                                    f"merged into {old!r}, and its name already means that class")
            if clash is not None and isinstance(clash.get("merged_into"), int):
                into = {e["id"]: e["name"] for e in entries}[_merge_target(entries, clash["id"])]
                raise ConflictError(f"cannot rename {old!r} to {new!r}: {clash['name']!r} was "
                                    f"merged into {into!r}, and its name means that class "
                                    f"(pick another name)")
            if clash is not None:
                raise ConflictError(f"cannot rename {old!r} to {new!r}: {clash['name']!r} is "
                                    f"already class {clash['id']} (to make {old!r} that class: "
                                    f"'edgecl classes merge {shlex.quote(old)} "
                                    f"{shlex.quote(clash['name'])} --state-dir "
                                    f"{shlex.quote(str(self.state_dir))}')")
            entry = by_name[old]
            entry["name"] = new
            taken = {same_name_key(old), same_name_key(new)}  # each name once, never its own
            former = [n for n in entry.get("renamed_from") or [] if same_name_key(n) not in taken]
            entry["renamed_from"] = (former + [old])[-MAX_FORMER_NAMES:]
            self._write(entries)
            return entry["id"]

    def merge(self, old: str, into: str) -> tuple[int, int]:
        """Merge a class into another (a misspelt name a person typed, two names for one
        object): the old id stays reserved (models that have it keep its slot, and its name
        for that slot), but the old name now means the other class wherever a label names it
        (:meth:`id_for`, :meth:`label_ids`), and the console no longer offers it. Relabelling
        the samples that hold it is the caller's (``edgecl classes merge``).

        Args:
            old: the class to retire.
            into: the class it becomes.

        Returns:
            ``(old id, id it now means)`` (the end of a chain of merges).

        Raises:
            NotFoundError: either name is not a class.
            ConflictError: the same class, ``into`` was merged into ``old``, or ``old`` was
                merged into another class already.
            LabelError: an invalid name.
        """
        old, into = clean_name(old), clean_name(into)
        with self._locked() as entries:
            by_name = {e["name"]: e for e in entries}
            found = []
            for name in (old, into):
                spelling = known_spelling(name, by_name) or name
                if spelling not in by_name:
                    raise NotFoundError(f"unknown class {name!r}{self._hint(name, entries)}")
                found.append(by_name[spelling])
            source, target = found
            final = _merge_target(entries, target["id"])
            if final == source["id"]:
                same = (f"it is the same class ({target['name']!r})" if into != target["name"]
                        or old != source["name"] else "it is the same class")
                raise ConflictError(f"cannot merge {old!r} into {into!r}: "
                                    + (same if target is source else
                                       f"{target['name']!r} was merged into it"))
            if isinstance(source.get("merged_into"), int):
                before = _merge_target(entries, source["id"])
                if before != final:  # its samples became that class: a second merge would
                    # send its name elsewhere and leave them behind
                    was = {e["id"]: e["name"] for e in entries}[before]
                    raise ConflictError(f"cannot merge {old!r} into {into!r}: it was merged into "
                                        f"{was!r} already, and its name means that class")
            if source.get("merged_into") != final:
                source["merged_into"] = final
                self._write(entries)
            return source["id"], final

    def merged(self) -> dict[int, int]:
        """Class id -> the id it was merged into (the end of the chain), for merged classes."""
        return _merged(self._read())

    def label_ids(self) -> dict[str, int]:
        """Name -> the id a label with that name gets: a merged class's name gives the class
        it was merged into (:meth:`merge`)."""
        return _label_ids(self._read())

    def _hint(self, name: str, entries: list[dict] | None = None) -> str:
        from edgecl.errors import did_you_mean

        names = [e["name"] for e in (entries if entries is not None else self._read())]
        return did_you_mean(name, names) or f" (known: {', '.join(names[:10]) or 'none'})"


_WARNED_MERGES: set[tuple[str, tuple[int, ...]]] = set()
"""Registries (path, broken ids) whose broken merges were warned of in this process."""


_WARNED_FORMER: set[tuple[int, str]] = set()
"""Damaged ``renamed_from`` values warned of in this process (class id, value)."""


def _without_bad_former_names(entry: dict) -> dict:
    """An entry whose ``renamed_from`` is no list of names (a hand edit: ``"renamed_from": 5``
    made every reader of the queue fail) loses it: the class keeps its id and name."""
    former = entry.get("renamed_from")
    if former is None or (isinstance(former, list) and all(isinstance(n, str) for n in former)):
        return entry
    key = (entry["id"], repr(former)[:80])
    if key not in _WARNED_FORMER:  # once: the file is read at every look-up
        _WARNED_FORMER.add(key)
        log.warning("class registry: class %s's renamed_from %r is no list of names; ignored",
                    entry["id"], former)
    return {k: v for k, v in entry.items() if k != "renamed_from"}


def _former_names(entries: list[dict]) -> dict[int, list[str]]:
    """Class id -> the names renames took from it, oldest first (:meth:`ClassRegistry._read`
    entries)."""
    return {e["id"]: [str(n) for n in e.get("renamed_from") or []] for e in entries}


def _merged(entries: list[dict]) -> dict[int, int]:
    """Merged class id -> the id it means (the end of its chain of merges)."""
    by_id = {e["id"]: e for e in entries}
    return {e["id"]: _merge_target(entries, e["id"], by_id) for e in entries
            if isinstance(e.get("merged_into"), int)}


def _label_ids(entries: list[dict]) -> dict[str, int]:
    """Name -> the id a label with that name gets (a merged class's: the class it became)."""
    by_id = {e["id"]: e for e in entries}  # built once: per entry it made this quadratic
    return {e["name"]: _merge_target(entries, e["id"], by_id) for e in entries}


def _id_of_name(entries: list[dict], name: str, loose: bool = False) -> int | None:
    """The id a label naming ``name`` gets from these entries (:meth:`ClassRegistry.id_for`):
    the class of that name, or of that name in another case, or (``loose``) the one class
    whose :func:`loose_class_name` it shares; a merged class gives the class it became."""
    label = _label_ids(entries)
    if name in label:
        return label[name]
    key = same_name_key(name)  # case, and an older release's decomposed accents, aside
    same = [cid for n, cid in label.items() if same_name_key(n) == key]
    if same:
        return same[0]
    key = loose_class_name(name) if loose else ""
    same = [cid for n, cid in label.items() if key and loose_class_name(n) == key]
    return same[0] if len(set(same)) == 1 else None


def _broken_merges(entries: list[dict]) -> list[int]:
    """Ids whose ``merged_into`` cannot stand: not an id (a boolean, text), an id the registry
    lacks, the class itself, or a member of a loop of merges (1 -> 2 -> 1 would make each the
    other). Entries are sorted by id, ids ``0..n-1``."""
    def target(entry: dict):
        value = entry.get("merged_into")
        return value if type(value) is int and 0 <= value < len(entries) else None

    invalid = {e["id"] for e in entries if "merged_into" in e and (
        target(e) is None or target(e) == e["id"])}
    looping = set()
    for entry in entries:
        seen, nxt = {entry["id"]}, target(entry)
        while nxt is not None and nxt not in seen and nxt not in invalid:
            seen.add(nxt)
            nxt = target(entries[nxt])
        if nxt == entry["id"] and entry["id"] not in invalid:  # back where it began: a loop
            looping.add(entry["id"])
    return sorted(invalid | looping)


def _merge_target(entries: list[dict], class_id: int, by_id: dict[int, dict] | None = None) -> int:
    """Where a class id's chain of merges ends (itself when not merged). The entries are read
    by :meth:`ClassRegistry._read`, which drops every ``merged_into`` that names no other class
    or loops (:func:`_broken_merges`), and :meth:`ClassRegistry.merge` refuses a merge back, so
    every chain ends. ``by_id`` (id -> entry) saves building it again for each id."""
    by_id = by_id if by_id is not None else {e["id"]: e for e in entries}
    while (nxt := by_id[class_id].get("merged_into")) is not None:
        class_id = nxt
    return class_id


def adopt_memory_class_names(memory, classes: ClassRegistry, refuse_lost: bool = True) -> None:
    """Give an empty or damaged class registry the class names the replay memory holds, with
    their ids.

    A registry that lacks ids past its end which the memory names (restored from an older
    copy) gets them back, with a warning. A device whose ``classes.json`` is missing while its
    memory names classes (the file lost,
    a memory written through the API) would otherwise number an import's or an answer's
    classes afresh and store those names over the memory's: ``truck`` samples renamed
    ``pedestrian`` without a word. A damaged ``classes.json`` (an SD-card fault: zero-filled,
    cut, garbage) is rebuilt from the same names, the damaged file kept beside it; before, the
    device refused to start and told to restore a backup that does not exist.

    Args:
        memory: the open replay memory (``class_names()``).
        classes: the class registry.
        refuse_lost: raise when the registry lacks ids the memory names and cannot take them
            back (a command that may make a new class); False: warn (one that only reads or
            removes).

    Raises:
        ClassRegistryError: the registry is damaged and the memory names no class to rebuild
            it from, or, with ``refuse_lost``, it lacks ids the memory names and cannot take
            them back (the one-line error names the file).
    """
    from edgecl.errors import EdgeclError

    names = memory.class_names() or {}
    try:
        known = classes.names()
    except ClassRegistryError as exc:
        what = str(exc).replace(f"; {REBUILD_HINT}", "")
        restored = classes.restore_backup()
        if restored is not None:
            known, kept = restored
            log.warning("%s; restored from its backup %s (merges and renames kept)%s", what,
                        classes.backup_path.name,
                        f"; the damaged file is kept as {kept.name}" if kept else "")
        else:
            if not names:  # before: the message said to run the command that had just failed
                raise ClassRegistryError(
                    f"{what}; its backup {classes.backup_path.name} cannot restore it either and "
                    f"the replay memory names no class: restore {classes.path.name} from a copy, "
                    f"or delete it and {classes.backup_path.name} to start the device's class "
                    f"registry afresh (the next model, import or answer names its classes)"
                ) from None
            try:
                kept = classes.replace_damaged(dict(sorted(names.items())))
            except (LabelError, StorageError):
                raise exc from None
            log.warning("%s; rebuilt from the replay memory's %d class name(s) with their ids "
                        "(%s), without its backup: merges and renames are not known to the "
                        "memory, so 'edgecl classes list' shows each class on its own; merge or "
                        "rename again where needed%s", what, len(names),
                        ", ".join(f"{k} {v}" for k, v in sorted(names.items())),
                        f"; the damaged file is kept as {kept.name}" if kept else "")
            return
    unnamed = not names and not known
    if unnamed:
        names = _names_for_unnamed_ids(memory, classes.state_dir)
    if not names:
        return
    if known:
        try:
            _restore_lost_ids(names, known, classes)
        except ClassRegistryError as exc:
            if refuse_lost:
                raise
            log.warning("%s", exc)
        _warn_if_names_disagree(names, known, classes)
        return
    try:
        classes.seed(dict(sorted(names.items())))
    except EdgeclError as exc:
        log.warning("the class registry is empty and the replay memory's class names cannot "
                    "seed it (%s); imported names are numbered afresh", exc)
        return
    shown = ", ".join(f"{k} {v}" for k, v in sorted(names.items()))
    if unnamed:
        log.warning("the replay memory's labels use class ids without names (a state directory "
                    "from a release before the class registry): the registry keeps those ids "
                    "as %s%s", shown, "; name them with 'edgecl classes rename'"
                    if named_by_number(names) else " (the model versions' names)")
        return
    log.warning("the class registry was empty while the replay memory names %d class(es); it "
                "takes them with their ids: %s", len(names), shown)


_WARNED_DISAGREEMENTS: set[tuple[str, tuple]] = set()
"""Registries (path, disagreeing ids) whose disagreement with the memory was warned of."""


def _warn_if_names_disagree(names: dict[int, str], known: dict[int, str],
                            classes: ClassRegistry) -> None:
    """One warning (per process) when the registry names an id otherwise than the replay
    memory's samples do, with no rename explaining it: a ``classes.json`` copied from another
    device. Before, such a file was taken without a word: Car samples read as Bicycle, and the
    next import stored Car under a second id. Not refused: the ids the samples hold stand."""
    former = classes.former_names()
    disagree = []
    for cid in sorted(set(names) & set(known)):
        mine, theirs = same_name_key(known[cid]), same_name_key(names[cid])
        if mine != theirs and theirs not in {same_name_key(n) for n in former.get(cid, [])}:
            disagree.append((cid, known[cid], names[cid]))
    key = (str(classes.path), tuple(disagree))
    if not disagree or key in _WARNED_DISAGREEMENTS:
        return
    _WARNED_DISAGREEMENTS.add(key)
    shown = ", ".join(f"id {cid} {reg!r} where the samples say {mem!r}"
                      for cid, reg, mem in disagree[:5])
    log.warning("the class registry %s names %s, with no rename between them (a classes.json "
                "from another device?): the samples keep their ids and now read as the "
                "registry's classes; if the file is not this device's, move %s and %s away and "
                "it is rebuilt from the replay memory's names", classes.path, shown,
                classes.path.name, classes.backup_path.name)


def _names_for_unnamed_ids(memory, state_dir: Path) -> dict[int, str]:
    """Names for the class ids a replay memory's labels use where neither it nor the registry
    names any (a state directory of a release before the class registry): the newest model
    version's names that cover them, else ``class<id>``. Before, the first class a person named
    took id 0, and every stored sample of the old class 0 became that class.

    Returns:
        class id -> name for ids ``0..max``, or empty when no label holds a box.
    """
    from edgecl.models.registry import read_manifests

    used = {int(c) for r in memory.records() for c in r.classes}
    if not used:
        return {}
    models = Path(state_dir) / "models"
    manifests = read_manifests(models)
    try:
        current = os.readlink(models / "current")
    except OSError:
        current = None
    ordered = [current] * (current in manifests) + list(reversed(manifests))
    for version in ordered:
        try:
            names = {int(k): clean_name(v) for k, v in
                     (manifests[version].get("classes") or {}).items()}
        except (TypeError, ValueError, LabelError):
            continue
        if used <= set(names) and sorted(names) == list(range(len(names))):
            return names
    return {i: f"class{i}" for i in range(max(used) + 1)}


def _restore_lost_ids(names: dict[int, str], known: dict[int, str],
                      classes: ClassRegistry) -> None:
    """Give back to a registry the ids past its end that the memory names (``classes.json``
    restored from an older copy, or cut after its last good entry): the next new class would
    otherwise take such an id, and the memory's samples of it would become that class.

    Ids are given back in order, each with the memory's name, while the name is free in the
    registry; one whose name the registry holds under another id cannot come back, and then no
    new class may be made either (it would take that id).

    Raises:
        ClassRegistryError: an id the memory names could not be given back (the one-line
            error names the file, the id and the clash); nothing more is changed.
    """
    from edgecl.errors import EdgeclError

    lost = {cid: name for cid, name in sorted(names.items()) if cid not in known}
    restored = {}
    for cid, name in lost.items():
        try:
            classes.seed({cid: name})
        except EdgeclError:
            break
        restored[cid] = name
    if restored:
        log.warning("the class registry %s lacked class id(s) the replay memory names (%s): "
                    "added back with their ids, so that no new class takes them", classes.path,
                    ", ".join(f"{k} {v}" for k, v in restored.items()))
    left = {cid: name for cid, name in lost.items() if cid not in restored}
    if left:
        cid, name = next(iter(left.items()))
        holder = next((k for k, v in classes.names().items()
                       if same_name_key(v) == same_name_key(name)), None)
        if holder is not None:
            fix = (f"the registry gives {name!r} to class {holder}: if that is another class, "
                   f"rename it (edgecl classes rename), and id {cid} comes back by itself; or "
                   f"restore classes.json from a copy")
        else:
            fix = "ids must follow one another: restore classes.json from a copy"
        raise ClassRegistryError(
            f"the class registry {classes.path} lacks class id {cid}, which the replay memory "
            f"names {name!r} ({len(left)} id(s) in all), and cannot take it back, so no new class "
            f"is made (it would take the id and relabel those samples); {fix}")


def _names_twice(names: dict[int, str]) -> str:
    """``car names ids 0 and 2; Bus / bus name ids 1 and 3``: the names (case aside) that
    more than one id has, with their ids (the first 5)."""
    groups: dict[str, list[int]] = {}
    for cid, name in sorted(names.items()):
        groups.setdefault(name.casefold(), []).append(cid)
    parts = []
    for ids in (ids for ids in groups.values() if len(ids) > 1):
        spelt = sorted({names[i] for i in ids})
        listed = ", ".join(str(i) for i in ids[:-1]) + f" and {ids[-1]}"
        parts.append(f"{' / '.join(spelt)} name{'s' if len(spelt) == 1 else ''} ids {listed}")
    return "; ".join(parts[:5])
