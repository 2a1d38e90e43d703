"""Versioned model registry in ``STATE/models``: stage, promote, rollback, verify, prune.

Layout::

    models/v0001/{model.pt, model.onnx, [model.engine], manifest.json}
    models/current -> v0001        (symlink, switched atomically with os.replace)
    models/history.json            promoted versions, oldest first (for rollback)
    models/engine-cache/           TensorRT engines by cache key (bounded, LRU)

Integrity and confinement (a model file is code the device runs): every file a manifest names
must be a plain relative path inside its own version directory (no ``..``, no absolute path,
no symlink anywhere on the way, the version directory itself not a symlink) and match the
sha256 the manifest records. :meth:`Registry.check_integrity` raises on the first problem;
promote and rollback run it before they change anything.

Engines derived from a version's own model (its OpenVINO IRs ``openvino/`` and
``openvino-int8/``, ``model-int8.onnx``, a TensorRT ``.engine``) are optional: a missing or
damaged one is skipped for the next engine in the serving order, down to the version's ONNX
model, and never refuses or rolls back a version whose model itself is intact
(:meth:`Registry.verify` with ``essential_only``, :meth:`Registry.model_path` with ``verify``).

Crash safety: the commit point of promote and rollback is ONE ``os.replace`` of ``current``.
Everything written after it (history, manifest statuses) is derived from ``current`` when read
(:meth:`Registry.status`, :meth:`Registry.history`) and repaired when a registry is opened, so
a kill at any point leaves a consistent registry: the current version always reads
``promoted`` and is always in the history. A failed promote or rollback raises before the
commit point and changes nothing. Leftover ``.staging-*`` directories of a killed stage are
removed when a registry is opened (an active stage in another process holds a lock on its
staging directory and is left alone).

Retention (:meth:`Registry.prune`): keep the current version, its parent, the last K promoted,
the last K rejected, every staged version newer than current and every version a person staged
with ``edgecl models add`` and has not promoted yet; the files of every other
version are deleted and its manifest stays as a tombstone (status ``pruned``) so the history
stays readable; tombstones beyond :data:`MAX_TOMBSTONES` are deleted entirely (oldest first).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgecl.atomic import (atomic_write_json, atomic_write_text, fsync_dir,
                           new_file_mode)
from edgecl.boot import now_iso
from edgecl.errors import (ConflictError, ModelLoadError, NotFoundError, NothingToRollBackError,
                           RegistryError, StorageError, is_disk_full, special_file_problem,
                           storage_faults)
from edgecl.models.base import NotADetectorError, sha256_file

log = logging.getLogger(__name__)

MANUAL_PROMOTION = "manual"
"""A manifest's ``promote`` value for a candidate a person promotes (``edgecl learn
--no-promote``); the runtime never promotes it by itself, and retention keeps it (the newest
``keep_promoted`` of them) while it waits, whatever rounds promote meanwhile."""

VERSION_RE = re.compile(r"^v(\d{4,})$")
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_VERSION_TYPED_RE = re.compile(r"[vV]?0*([1-9]\d*)")


def version_name(text: str) -> str:
    """A version as a person types it, spelt as the registry names it.

    ``v1``, ``V1``, ``1``, ``0001`` and ``v00001`` all name ``v0001`` (the registry writes four
    digits at least, ``v{n:04d}``); anything else comes back as typed, for the registry to
    refuse with the versions it knows.

    Args:
        text: a version as given on the command line.

    Returns:
        ``v`` and the number, zero-padded to four digits; or ``text`` unchanged.
    """
    match = _VERSION_TYPED_RE.fullmatch(text.strip())
    return f"v{int(match.group(1)):04d}" if match else text
SERVE_ENTRY_PROBLEM = ("none of its model files (the engine is chosen by preference instead; "
                       "the version still serves)")
"""How :meth:`Registry.verify` ends the problem of a manifest's ``serve`` entry."""
MODEL_SUFFIXES = (".pt", ".onnx", ".engine", ".xml")  # .xml: an OpenVINO IR with its .bin
# Default order of Registry.model_path (a manifest's ``serve`` entry wins over all but .engine).
MODEL_PREFERENCE = (".engine", ".onnx", ".xml", ".pt")
STAGING_PREFIX = ".staging-"
OWNER_FILE = ".owner"
LAST_VERSION_FILE = "last_version"
"""The newest version name the registry gave (names are never given twice)."""
ENGINE_CACHE_DIR = "engine-cache"
# Tombstones (manifests of pruned versions) kept for history; older ones are deleted entirely.
MAX_TOMBSTONES = 100


class VersionStatus(str, enum.Enum):
    """The state of a model version (one enum for the registry, its CLI and the runtime)."""

    STAGED = "staged"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    RETIRED = "retired"
    PRUNED = "pruned"


STATUSES = tuple(s.value for s in VersionStatus)
DISCARDED = "discarded by a person (edgecl models discard)"
"""The status reason of a staged version a person rejected."""
ROLLED_BACK = "rolled back"
"""The status reason of a version retired by a rollback (shown by ``models list``)."""
NEVER_SERVED = "superseded by"
"""How the status reason of a staged version that a newer round's version replaced before it
served begins (``superseded by v0007``)."""


def read_manifests(models_dir: str | Path) -> dict[str, dict]:
    """Every version folder's manifest, oldest first, read without opening a :class:`Registry`
    (which repairs what it finds), so that a reader changes nothing. Symlinked version folders
    (refused by the registry's confinement rule) and unreadable manifests are left out.

    Args:
        models_dir: ``STATE/models``.

    Returns:
        version -> manifest (empty when the folder cannot be listed).
    """
    try:
        folders = [p for p in Path(models_dir).iterdir()
                   if VERSION_RE.match(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return {}
    out = {}
    for folder in sorted(folders, key=lambda p: int(p.name[1:])):
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(manifest, dict):
            out[folder.name] = manifest
    return out


def is_derived_engine(name: str, files) -> bool:
    """Whether a manifest entry is an engine built from the version's own model, so that the
    version can serve without it.

    Args:
        name: the file entry (``openvino-int8/model.xml``, ``model-int8.onnx``, ...).
        files: every entry of the manifest.

    Returns:
        True for ``openvino/*``, ``openvino-int8/*``, ``*-int8.onnx`` and ``*.engine`` entries
        when the manifest also holds a model that is none of these (a ``.onnx`` or ``.pt``); a
        version added as a bare engine has nothing to fall back to, so its engine is essential.
    """
    def derived(entry: str) -> bool:
        lower = entry.lower()
        return (lower.startswith(("openvino/", "openvino-int8/")) or lower.endswith("-int8.onnx")
                or lower.endswith(".engine"))

    return derived(name) and any(not derived(other) and other.lower().endswith((".onnx", ".pt"))
                                 for other in files)


def is_essential_file(name: str, files) -> bool:
    """Whether a version cannot serve without a manifest entry: neither an engine built from
    its own model (:func:`is_derived_engine`) nor a record (:func:`is_record_file`).

    Args:
        name: the file entry.
        files: every entry of the manifest.
    """
    return not (is_derived_engine(name, files) or is_record_file(name))


def is_record_file(name: str) -> bool:
    """Whether a manifest entry is a record kept beside the model (a ``.json`` file: the
    round's record, the post-hoc calibrator), which the version can serve without: a damaged
    one is reported and not used, and never rolls the version back."""
    return name.lower().endswith(".json")


def _runnable_here(name: str) -> bool:
    """False for an OpenVINO IR where the ``openvino`` package is missing (the version's ONNX
    model serves instead); every other file is tried by its backend."""
    if not name.lower().endswith(".xml"):
        return True
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class UnknownVersionError(RegistryError, NotFoundError):
    """A version name that names no version of this registry (HTTP 404)."""


class UnservableVersionError(RegistryError, ConflictError):
    """A version the registry holds that cannot serve: the gate rejected it, or its files fail
    their integrity check (HTTP 409: the version's state, not the request, forbids it)."""


@dataclass(frozen=True)
class VersionInfo:
    """One registry entry as listed by ``edgecl models list``."""

    version: str
    status: str
    current: bool
    created: str
    metrics: dict
    files: dict
    manifest: dict
    reason: str = ""
    """Why the version has its status, consistent with it (see :meth:`Registry.reason`)."""

    def to_json(self) -> dict:
        """Return the JSON shape used by ``models list --json``."""
        return {"version": self.version, "status": self.status, "current": self.current,
                "created": self.created, "metrics": self.metrics,
                "files": sorted(self.files), "reason": self.reason}


def _text(value: object) -> str:
    """A manifest's text field as text: anything else (a hand-edited number, list or object)
    reads as empty rather than being shown as Python's repr."""
    return value if isinstance(value, str) else ""


def _check_beside(model: Path, extra: Path) -> None:
    """Refuse a file staged beside a model (an OpenVINO IR's ``metadata.yaml``) that is no
    regular file or larger than a data file can be: it is copied into the version (a 50 GB
    sparse one filled the disk with zeros).

    Raises:
        RegistryError: in one line.
    """
    from edgecl.input_files import MAX_DATA_FILE_BYTES, regular_file_problem, size_text

    special = regular_file_problem(extra)
    if special:
        raise RegistryError(f"cannot add {model}: {extra} beside it is {special}")
    try:
        size = extra.stat().st_size
    except OSError:
        return  # missing: nothing is staged
    if size > MAX_DATA_FILE_BYTES:
        raise RegistryError(f"cannot add {model}: {extra} beside it is {size_text(size)}, more "
                            f"than a metadata file can be ({size_text(MAX_DATA_FILE_BYTES)})")


def check_file_name(name: object, where: str = "manifest") -> PurePosixPath:
    """Check that a manifest file entry is a plain relative path that stays inside its directory.

    Args:
        name: the entry (e.g. ``model.onnx`` or ``openvino/model.xml``).
        where: what names it, for the message.

    Returns:
        The entry as a relative POSIX path.

    Raises:
        RegistryError: empty, absolute, with ``..`` or ``.`` parts, a backslash or a NUL.
    """
    text = str(name) if isinstance(name, str) else ""
    path = PurePosixPath(text)
    if (not text or "\\" in text or "\x00" in text or path.is_absolute()
            or any(part in ("..", ".", "") for part in text.split("/"))):
        raise RegistryError(f"{where} names file {name!r}: not a plain relative path inside "
                            "its version directory")
    return path


def version_names(models_dir: str | Path) -> list[str]:
    """The version names of a model registry folder in ascending order, read as they are (no
    lock, no repair: what :meth:`Registry.versions` and a reader that must not change the state
    directory both list; symlinked ones included, they fail verify).

    Args:
        models_dir: ``STATE/models``.

    Returns:
        ``["v0001", ...]`` (empty when there is no such folder).

    Raises:
        OSError: the folder cannot be listed.
    """
    root = Path(models_dir)
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if VERSION_RE.match(p.name)
             and (p.is_dir() or p.is_symlink())]
    return sorted(found, key=lambda v: int(v[1:]))


def current_version(models_dir: str | Path) -> str | None:
    """The version a registry folder's ``current`` link names, read as it is (no lock, no
    repair), or None when nothing is promoted or the link names no version.

    Args:
        models_dir: ``STATE/models``.
    """
    try:
        target = os.readlink(Path(models_dir) / "current")
    except OSError:
        return None
    return target if VERSION_RE.match(target) else None


class Registry:
    """Model versions of one device.

    Opening a registry removes leftovers of killed stages and repairs history and statuses
    left half-written by a kill (see the module docstring).

    Args:
        root: the ``STATE/models`` directory.
        create: create ``root`` when missing. A reader (``edgecl models list``) passes False: a
            registry not yet made then reads as one with no version, and nothing is written.
        repair: remove a kill's leftovers and repair history and statuses on open (False: read
            as it is, with no lock taken and nothing written: ``edgecl status``, which promises
            to write nothing, also on a copy pulled off a device or a read-only card).
    """

    def __init__(self, root: str | Path, create: bool = True, repair: bool = True):
        self.root = Path(root)
        if not repair or (not create and not (self.root.is_dir() or self.root.is_symlink())):
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the model registry {self.root}: {exc.strerror}") from None
        try:
            with self._lock():
                self._remove_leftovers()
                self._repair()
        except (OSError, StorageError) as exc:  # a read-only state directory: readable, not repaired
            if os.access(self.root, os.W_OK):
                log.warning("model registry %s not repaired: %s", self.root, exc)
            else:  # a copy pulled from a device, a read-only mount: nothing to say each time
                log.debug("model registry %s not repaired (read-only): %s", self.root, exc)

    @contextlib.contextmanager
    def _lock(self):
        """Hold the registry's inter-process lock.

        Raises:
            StorageError: the lock file cannot be opened (read-only state directory).
        """
        try:
            fh = open(self.root / ".lock", "a+")  # noqa: SIM115  (closed below)
        except OSError as exc:
            raise StorageError(f"cannot lock the model registry {self.root}: {exc.strerror}") from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- reading

    def versions(self) -> list[str]:
        """Return all version names in ascending order (symlinked ones included; they fail verify)."""
        return version_names(self.root)

    def current(self) -> str | None:
        """Return the current version name, or ``None`` when nothing is promoted."""
        return current_version(self.root)

    def damaged_current(self) -> str | None:
        """Why the ``current`` pointer is unusable, or ``None`` (absent, or a link to a version).

        Returns:
            A one-line description naming the pointer, or ``None``.
        """
        pointer = self.root / "current"
        if not (pointer.exists() or pointer.is_symlink()):
            return None
        if not pointer.is_symlink():
            return f"{pointer} is not a link to a version (hand-edited?)"
        target = os.readlink(pointer)
        if not VERSION_RE.match(target):
            return f"{pointer} points at {target!r}, not at a version of this registry"
        if not (self.root / target).is_dir():
            return f"{pointer} points at {target}, which does not exist"
        return None

    def _known(self) -> str:
        versions = self.versions()
        if len(versions) > 12:
            versions = versions[:3] + ["..."] + versions[-8:]
        return ", ".join(versions) or "none"

    def _version_dir(self, version: str) -> Path:
        """The real (not symlinked) directory of a version.

        Raises:
            UnknownVersionError: malformed name, or no such version.
            RegistryError: the version directory is a symlink.
        """
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise UnknownVersionError(f"invalid model version name {str(version)[:40]!r} (expected "
                                      f"e.g. v0001; known: {self._known()})")
        path = self.root / version
        if path.is_symlink():
            raise RegistryError(f"model version directory {path} is a symlink; refusing it")
        if not path.is_dir():
            raise UnknownVersionError(f"unknown version {version} (known: {self._known()})")
        return path

    def check_version(self, version: str) -> None:
        """Raise unless ``version`` names a version of this registry (checked before anything
        about its files, so a typo reads as a typo, not as an integrity failure).

        Raises:
            UnknownVersionError: ``unknown version v0009 (known: v0001, v0002)`` or an invalid name.
            RegistryError: the version directory is a symlink.
        """
        self._version_dir(version)

    def manifest(self, version: str) -> dict:
        """Read a version's manifest.

        Raises:
            RegistryError: unknown or symlinked version, unreadable or symlinked manifest.
        """
        path = self._version_dir(version) / "manifest.json"
        if path.is_symlink():
            raise RegistryError(f"manifest {path} is a symlink; refusing it")
        if not path.is_file():
            raise RegistryError(f"model version {version} has no manifest ({path})")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"corrupt manifest {path}: {exc}") from None
        except RecursionError:
            raise RegistryError(f"corrupt manifest {path}: nested too deeply") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
            raise RegistryError(f"corrupt manifest {path}: expected an object with a 'files' object")
        if not isinstance(manifest.get("metrics", {}), dict):  # read as a mapping everywhere
            manifest["metrics"] = {}
        return manifest

    def file_path(self, version: str, name: str) -> Path:
        """Return the path of one file of a version, confined to the version directory.

        Args:
            version: version name.
            name: file entry as the manifest names it (e.g. ``model.pt``).

        Returns:
            The path (not checked against its sha256; see :meth:`check_integrity`).

        Raises:
            RegistryError: bad version, a name leaving the directory, a symlink on the way,
                or not a regular file.
        """
        vdir = self._version_dir(version)
        rel = check_file_name(name, f"model version {version}")
        path = vdir
        for part in rel.parts:
            path = path / part
            if path.is_symlink():
                raise RegistryError(f"{path} is a symlink; model files must be real files "
                                    "inside their version directory")
        if not path.is_file():
            raise RegistryError(f"{path} is missing")
        return path

    def model_path(self, version: str, prefer: tuple[str, ...] = MODEL_PREFERENCE,
                   verify: bool = False, skip: tuple[str, ...] = ()) -> Path:
        """Return the inference file of a version, by preference of suffix.

        A TensorRT ``.engine`` comes first where one was built (and ``prefer`` names it); then
        the file the manifest's ``serve`` entry names (the CPU engine chosen at export, e.g.
        ``openvino-int8/model.xml``) when its suffix is in ``prefer``; then ``prefer``'s order.
        A derived engine (:func:`is_derived_engine`) whose files are missing, or with
        ``verify`` do not match their sha256, is skipped with a warning for the next one.

        Args:
            version: version name.
            prefer: suffixes in order of preference.
            verify: also check the sha256 of a derived engine's files before choosing it (what
                loading for serving does; listing only checks that they exist).
            skip: derived engine entries to pass over (ones that failed to load).

        Raises:
            RegistryError: the version has no usable model file, or its entry is unsafe.
        """
        manifest = self.manifest(version)
        entries = manifest.get("files", {})
        files = [name for name in entries if _runnable_here(name)]
        served = manifest.get("serve")
        has_engine = ".engine" in prefer and any(name.endswith(".engine") for name in files)
        order = []
        if (not has_engine and isinstance(served, str) and served in files
                and any(served.endswith(suffix) for suffix in prefer)):
            order.append(served)
        order += [name for suffix in prefer for name in sorted(files)
                  if name.endswith(suffix) and name not in order]
        for name in order:
            if not is_derived_engine(name, entries):
                return self.file_path(version, name)
            if name in skip:
                continue
            problem = self._engine_problem(version, name, entries, verify)
            if problem is None:
                return self.file_path(version, name)
            log.warning("model version %s: engine %s skipped (%s); trying the next one",
                        version, name, problem)
        raise RegistryError(f"model version {version} has no intact file among {prefer}")

    def load_serving(self, version: str, opts=None, warmup_runs: int = 1,
                     prefer: tuple[str, ...] = MODEL_PREFERENCE):
        """Load and warm the engine a version serves (:meth:`model_path` with ``verify``); a
        derived engine that fails to load (an IR a newer OpenVINO cannot read, say) is skipped
        with a warning for the next one, down to the version's own model.

        Args:
            version: version name.
            opts: :class:`edgecl.models.base.InferenceOptions`.
            warmup_runs: dummy passes after loading.
            prefer: suffixes in order of preference.

        Returns:
            The loaded :class:`~edgecl.models.base.Backend`.

        Raises:
            RegistryError: no usable file.
            ModelLoadError: the version's own model cannot load.
        """
        from edgecl.models.backends import load_backend

        entries = self.manifest(version).get("files", {})
        skipped: list[str] = []
        while True:
            path = self.model_path(version, prefer, verify=True, skip=tuple(skipped))
            name = path.relative_to(self._version_dir(version)).as_posix()
            try:
                return load_backend(path, opts, warmup_runs=warmup_runs)
            except Exception as exc:  # contained for derived engines only: the next one serves
                if not is_derived_engine(name, entries):
                    raise
                log.warning("model version %s: engine %s does not load (%s); trying the next one",
                            version, name, exc)
                skipped.append(name)

    def _engine_problem(self, version: str, name: str, entries: dict, verify: bool) -> str | None:
        """What is wrong with a derived engine's files (an IR's ``.xml`` and ``.bin`` together)."""
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else None
        group = sorted(e for e in entries if e == name or (folder and e.startswith(folder)))
        for entry in group:
            try:
                path = self.file_path(version, entry)
            except RegistryError as exc:
                return str(exc)
            if verify and sha256_file(path) != str(entries[entry]).lower():
                return f"{path} does not match its manifest sha256"
        return None

    def verify(self, version: str, essential_only: bool = False) -> list[str]:
        """Check a version's confinement and every file against its manifest sha256.

        Args:
            version: version name.
            essential_only: leave out derived engines (:func:`is_derived_engine`) and records
                (:func:`is_record_file`): what decides whether the version can serve at all (a
                damaged engine is skipped when serving, a damaged record is not used).

        Returns:
            Problems found, one line each (empty when intact).
        """
        try:
            manifest = self.manifest(version)
        except RegistryError as exc:
            return [str(exc)]
        if manifest.get("status") == VersionStatus.PRUNED:
            return [f"model version {version} was pruned (its files were deleted by retention)"]
        files = manifest.get("files", {})
        if not files:
            return [f"model version {version} names no files"]
        problems = []
        for name, digest in sorted(files.items()):
            if essential_only and not is_essential_file(name, files):
                continue
            try:
                path = self.file_path(version, name)
            except RegistryError as exc:
                problems.append(str(exc))
                continue
            if not (isinstance(digest, str) and SHA256_RE.fullmatch(digest)):
                problems.append(f"manifest of {version}: the sha256 of {name} is "
                                f"{str(digest)[:70]!r}, not 64 hex digits")
            elif sha256_file(path) != digest.lower():
                problems.append(f"{path} does not match its manifest sha256")
        served = manifest.get("serve")
        if not essential_only and "serve" in manifest and not (
                isinstance(served, str) and served in files
                and served.lower().endswith(MODEL_SUFFIXES)):
            problems.append(f"manifest of {version}: 'serve' is {str(served)[:70]!r}, "
                            f"{SERVE_ENTRY_PROBLEM}")
        return problems

    def file_intact(self, version: str, name: str) -> bool:
        """Whether one file of a version is confined and matches its manifest sha256.

        Args:
            version: version name.
            name: the file's manifest entry (``calibrator.json`` ...).

        Returns:
            False for a file the manifest does not name, a missing or damaged one.
        """
        try:
            digest = self.manifest(version).get("files", {}).get(name)
            return (digest is not None
                    and sha256_file(self.file_path(version, name)) == str(digest).lower())
        except (RegistryError, OSError):
            return False

    def check_integrity(self, version: str) -> None:
        """Raise unless every essential file of a version is confined and matches its sha256.

        Promote, rollback and a restart's promotion of a staged version call this; derived
        engines are left out (a damaged one is skipped when the version serves).

        Args:
            version: version name.

        Raises:
            UnknownVersionError: no such version (see :meth:`check_version`).
            UnservableVersionError: the first problem :meth:`verify` finds
                (``essential_only``).
        """
        self.check_version(version)
        problems = self.verify(version, essential_only=True)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UnservableVersionError(f"model version {version} failed its integrity check: "
                                         f"{problems[0]}{more}")

    def history(self) -> list[str]:
        """Promoted versions, oldest first, as the ``current`` pointer implies.

        A kill between switching ``current`` and writing ``history.json`` is read as if the
        history had been written: the current version is always its last entry.

        Returns:
            Version names (existing directories only).
        """
        current = self.current()
        if current is not None and not (self.root / current).is_dir():
            current = None
        return self._effective_history(self._stored_history(), current)

    def status(self, version: str, manifest: dict | None = None) -> str:
        """A version's status, derived from ``current`` and the history where they decide it.

        Args:
            version: version name.
            manifest: the version's manifest if already read.

        Returns:
            A :class:`VersionStatus` value, or ``corrupt`` when the manifest is unreadable.
        """
        try:
            manifest = manifest if manifest is not None else self.manifest(version)
        except RegistryError:
            return "corrupt"
        return self._derive_status(version, manifest, self.current(), self.history())

    @staticmethod
    def _derive_status(version: str, manifest: dict, current: str | None, history: list[str]) -> str:
        stored = str(manifest.get("status", VersionStatus.STAGED.value))
        if version == current:
            return VersionStatus.PROMOTED.value
        if stored in (VersionStatus.REJECTED, VersionStatus.PRUNED):
            return stored
        if stored == VersionStatus.PROMOTED or version in history:
            return VersionStatus.RETIRED.value
        return stored

    @staticmethod
    def _derive_reason(manifest: dict, status: str) -> str:
        """Why a version has its (derived) status, consistent with it.

        A status reason (``rolled back``, ``superseded by v0007``, why it was rejected) is
        shown only while the stored status it was written with is still the derived one, so
        a version rolled back and later promoted again no longer reads "rolled back";
        otherwise the reason recorded when the version was staged (the gate's verdict).
        """
        stored = str(manifest.get("status", VersionStatus.STAGED.value))
        if "status_reason" in manifest:
            status_reason = _text(manifest.get("status_reason"))
            if status_reason and stored == status:
                return status_reason
            return _text(manifest.get("reason"))
        legacy = _text(manifest.get("reason"))  # written before status_reason existed
        if legacy == ROLLED_BACK and status != VersionStatus.RETIRED:
            return ""
        return legacy

    def reason(self, version: str, manifest: dict | None = None) -> str:
        """Why a version has its status (see :meth:`status`), consistent with it.

        Args:
            version: version name.
            manifest: the version's manifest if already read.

        Returns:
            The reason, or ``""``.
        """
        try:
            manifest = manifest if manifest is not None else self.manifest(version)
        except RegistryError as exc:
            return str(exc)
        return self._derive_reason(manifest, self.status(version, manifest))

    def staged_versions(self) -> list[str]:
        """Versions staged after the current one and never promoted, oldest first.

        A kill between a round's stage and its promotion leaves such a version. The runtime
        calls this at start and promotes (after its checks) or re-stages each one; staged
        versions OLDER than current are obsolete and left to :meth:`prune`.

        Returns:
            Version names.
        """
        current = self.current()
        floor = int(current[1:]) if current else 0
        return [v for v in self.versions() if int(v[1:]) > floor
                and self.status(v) == VersionStatus.STAGED]

    def added_unpromoted(self) -> tuple[str, str] | None:
        """The newest version ``edgecl models add`` staged (without ``--promote``) on a device
        that serves no version: the user's own model, which neither ``run`` nor a round takes
        before it is promoted.

        Returns:
            ``(version, the file it was added from)``, or None (a current version, or none).
        """
        if self.current():
            return None
        for version in reversed(self.staged_versions()):
            try:
                manifest = self.manifest(version)
            except RegistryError:
                continue
            if added_by_person(manifest):
                return version, str(manifest["source"])
        return None

    def list(self) -> list[VersionInfo]:
        """Return every version with its status and metrics, oldest first."""
        current, history = self.current(), self.history()
        out = []
        for version in self.versions():
            try:
                manifest = self.manifest(version)
                status = self._derive_status(version, manifest, current, history)
                reason = self._derive_reason(manifest, status)
            except RegistryError as exc:
                manifest, status, reason = {"reason": str(exc)}, "corrupt", str(exc)
            metrics, files = manifest.get("metrics"), manifest.get("files")
            out.append(VersionInfo(version=version, status=status,
                                   current=version == current,
                                   created=_text(manifest.get("created")),
                                   metrics=metrics if isinstance(metrics, dict) else {},
                                   files=files if isinstance(files, dict) else {},
                                   manifest=manifest, reason=reason))
        return out

    # ----------------------------------------------------------------- writing

    def stage(self, files: dict[str, str | Path], meta: dict | None = None, status: str = "staged",
              *, link: bool = False) -> str:
        """Copy files into a new version directory with a manifest (atomic directory rename).

        Args:
            files: destination name (e.g. ``model.onnx``) -> source path.
            meta: manifest fields (parent, classes, metrics, config hash, ...).
            status: initial status (``staged`` or ``rejected``).
            link: the files are the caller's own scratch files, written for this version and
                never written again: each is hard-linked into the version instead of copied
                where the file system allows it (a learning round's 20-35 MB of exports were
                written to the card twice, every round). Never for a user's file (``models
                add``): an edit of it in place would change the version.

        Returns:
            The new version name.

        Raises:
            RegistryError: a source file is missing, a name is unsafe or the status is invalid.
            StorageError: the disk is full (or the registry cannot be written): one line
                naming the file; nothing is staged and no staging folder is left behind.
        """
        if status not in (VersionStatus.STAGED, VersionStatus.REJECTED):
            raise RegistryError(f"invalid status '{status}' to stage (staged or rejected)")
        if not files:
            raise RegistryError("cannot stage a version without files")
        for name, src in files.items():
            check_file_name(name, "stage")
            if not Path(src).is_file():
                raise RegistryError(f"cannot stage {name}: file not found: {src}")
        with storage_faults(f"cannot stage a new model version in {self.root}; nothing was staged"):
            return self._stage(files, meta, status, link)

    def _stage(self, files: dict[str, str | Path], meta: dict | None, status: str,
               link: bool = False) -> str:
        with self._lock():
            # INVARIANT: a staging directory exists only with its owner lock held (see _remove_leftovers)
            tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
            os.chmod(tmp, new_file_mode(directory=True))  # it becomes the version's folder
            owner = open(tmp / OWNER_FILE, "w")  # noqa: SIM115  (held open: the lock lives with it)
            fcntl.flock(owner, fcntl.LOCK_EX)
        try:
            digests = {}
            for name, src in files.items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not (link and _linked(src, dst)):
                    shutil.copyfile(src, dst)
                with open(dst, "rb") as fh:
                    os.fsync(fh.fileno())
                digests[name] = sha256_file(dst)
            with self._lock():
                version = self._next_version()
                manifest = dict(meta or {})
                manifest.update(version=version, status=str(VersionStatus(status).value), files=digests,
                                created=now_iso())
                atomic_write_json(tmp / "manifest.json", manifest)
                (tmp / OWNER_FILE).unlink()
                os.replace(tmp, self.root / version)
                fsync_dir(self.root)
                self._note_last_version(version)
        finally:
            owner.close()
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return version

    def _note_last_version(self, version: str) -> None:
        """Record the newest name given, after the version's folder exists (the commit). A
        full disk leaves the old record: names stay unique, as the folder itself is newest."""
        try:
            atomic_write_text(self.root / LAST_VERSION_FILE, version + "\n")
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning("model registry: %s staged, but %s not updated (%s); the version's "
                        "folder keeps its name taken", version, LAST_VERSION_FILE, exc.strerror)

    def _next_version(self) -> str:
        """The next version name: past every version this registry ever named, including one
        deleted by hand since (a reused name would take over that version's recorded round
        in the metrics database)."""
        versions = self.versions()
        number = int(versions[-1][1:]) if versions else 0
        try:
            named = (self.root / LAST_VERSION_FILE).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            named = ""
        if VERSION_RE.match(named):
            number = max(number, int(named[1:]))
        return f"v{number + 1:04d}"

    def set_status(self, version: str, status: str, reason: str = "") -> None:
        """Update a version's stored status and its status reason in its manifest, atomically.

        The status reason (``status_reason``) belongs to this status: a new status replaces
        it (an empty ``reason`` clears it). The reason the version was staged with
        (``reason``, e.g. the gate's verdict) is kept.

        Raises:
            RegistryError: unknown version or invalid status.
        """
        if status not in STATUSES:
            raise RegistryError(f"invalid status '{status}' (one of {', '.join(STATUSES)})")
        manifest = self.manifest(version)
        if manifest.get("reason") == ROLLED_BACK and "status_reason" not in manifest:
            manifest.pop("reason")  # a legacy marker: it described the old status only
        manifest["status"] = str(VersionStatus(status).value)
        manifest["status_reason"] = reason
        atomic_write_json(self._version_dir(version) / "manifest.json", manifest)

    def discard(self, version: str) -> None:
        """Reject a version that was staged and never served (a candidate added with
        ``edgecl models add``, a round's leftover a stop kept from its promotion): no start
        promotes it and the retention rule counts it with the rejected ones. Its files stay
        until :meth:`prune` removes them; ``promote`` still takes it.

        Args:
            version: version name.

        Raises:
            UnknownVersionError: no such version.
            RegistryError: the version is current, was served before (a rollback may return
                to it), or is rejected or pruned already.
            StorageError: the registry cannot be written.
        """
        with self._lock(), storage_faults(f"cannot discard {version}"):
            self.check_version(version)
            status = self.status(version)
            if status != VersionStatus.STAGED:
                what = {VersionStatus.PROMOTED.value: "it is the current version (roll back "
                                                      "first: edgecl models rollback)",
                        VersionStatus.RETIRED.value: "it served before, and a rollback may "
                                                     "return to it"}.get(
                    status, f"it is {status}")
                raise RegistryError(f"cannot discard {version}: {what}")
            self.set_status(version, VersionStatus.REJECTED, DISCARDED)

    def update_manifest(self, version: str, fields: dict) -> None:
        """Merge fields into a version's manifest, atomically (``files`` and ``version`` never change).

        Raises:
            RegistryError: unknown version, or an attempt to change ``files`` or ``version``.
        """
        if {"files", "version"} & set(fields):
            raise RegistryError("update_manifest cannot change 'files' or 'version'")
        manifest = self.manifest(version)
        manifest.update(fields)
        atomic_write_json(self._version_dir(version) / "manifest.json", manifest)

    def promote(self, version: str, before_switch=None,
                expected_current: str | None = None) -> str | None:
        """Make ``version`` current, after checking it; a refusal changes nothing.

        Order (each prefix is consistent): checks -> ``before_switch()`` -> switch ``current``
        (the commit point, one ``os.replace``) -> history -> manifest statuses (best effort;
        derived when read). A version already in the history (promoted again) has its history
        written before the switch: left behind (a full disk, a kill), it would read as a
        rollback to that version.

        Args:
            version: the version to make current.
            before_switch: called once the checks passed, before the switch (the learner's
                progress follows the version there); when it raises, nothing is switched.
            expected_current: promote only while this version is current, and only when it
                is not ``version`` itself (checked under the lock: of two promotions sent
                together from one page, or a retried one, only the first switches).

        Returns:
            The version current before (None when none was).

        Raises:
            UnknownVersionError: no such version.
            UnservableVersionError: rejected, or its files fail their integrity check.
            RegistryError: pruned, unconfined or corrupt manifest.
            NotFoundError: ``expected_current`` names no version of the registry.
            ConflictError: ``expected_current`` is not the current version, or ``version``
                already is current (with or without ``expected_current``).
            StorageError: ``current`` (or, for a version promoted again, the history) cannot be
                written (full disk, read-only): nothing changed.
        """
        with self._lock(), storage_faults(f"cannot promote {version}; nothing changed"):
            if expected_current is not None:
                self._expect_current(expected_current)
            manifest = self.manifest(version)
            if manifest.get("status") == VersionStatus.REJECTED:
                why = self._derive_reason(manifest, VersionStatus.REJECTED.value) or "no reason recorded"
                raise UnservableVersionError(f"model version {version} was rejected ({why}); "
                                             f"not promoting")
            self.check_integrity(version)
            if version == self.current():  # before: 'promoted', and a log line 'was v0001'
                raise ConflictError(f"{version} is already the current version; nothing "
                                    f"changed")
            if before_switch is not None:
                before_switch()
            previous = self.current()
            history = self.history()
            again = version in history
            if not history or history[-1] != version:
                history.append(version)
            if again:
                # INVARIANT: the repair derives the history from 'current' (_effective_history);
                # a switch back to a version it holds, with the history left behind, would read
                # as a rollback of every version after it. Written first, a failure changes
                # nothing and a kill before the switch leaves a tail the repair drops.
                atomic_write_json(self.root / "history.json", history)
            self._point_current(version)
            self._after_commit(history, retire=previous if previous != version else None,
                               retire_reason="", promoted=version)
            return previous

    def _expect_current(self, expected: str) -> None:
        """Refuse a conditional promotion or rollback unless ``expected`` is current (call
        under the lock).

        Raises:
            NotFoundError: ``expected`` names no version of the registry.
            ConflictError: it is not the current version.
        """
        current = self.current()
        if current == expected:
            return
        if expected not in self.versions():
            raise NotFoundError(f"no model version {expected} (see 'edgecl models list')")
        raise ConflictError(f"the current version is {current or 'none'}, not {expected}: "
                            f"another rollback or promotion came first; nothing changed")

    def rollback_target(self) -> str | None:
        """The version a rollback would go back to, or ``None`` when none served before the
        current one (its integrity is checked by :meth:`rollback` itself, which skips one
        that cannot serve). Read only: the Models page enables its button by it.

        Returns:
            A version name, or ``None``.
        """
        current, history = self.current(), self.history()
        if current in history:
            history = history[:len(history) - 1 - history[::-1].index(current)]
        while history and history[-1] == current:
            history.pop()
        return history[-1] if history else None

    def rollback(self, before_switch=None, expected_current: str | None = None) -> str:
        """Return to the previously promoted intact version; a refusal changes nothing.

        Args:
            before_switch: optional ``callable(target)`` run under the registry's lock just
                before ``current`` switches to ``target`` (what must be written first, such as
                the learner's progress); when it raises, nothing is switched.
            expected_current: roll back only from this version (checked under the lock: two
                requests sent together, a double click, roll back once).

        Returns:
            The version now current.

        Raises:
            NothingToRollBackError: nothing intact to roll back to (a RegistryError).
            NotFoundError: ``expected_current`` names no version of the registry.
            ConflictError: ``expected_current`` is not the current version.
            StorageError: ``current`` cannot be switched (full disk, read-only): nothing changed.
        """
        with self._lock(), storage_faults("cannot roll back; nothing changed"):
            history = self.history()
            current = self.current()
            if expected_current is not None:
                self._expect_current(expected_current)
            if current in history:
                history = history[:len(history) - 1 - history[::-1].index(current)]
            while history:
                if history[-1] == current:  # promoted again later: serving it is no rollback
                    history.pop()
                    continue
                problems = self.verify(history[-1], essential_only=True)
                if not problems:
                    break
                log.warning("rollback: %s skipped, it cannot serve (%s)", history[-1], problems[0])
                history.pop()
            if not history:
                raise NothingToRollBackError("no earlier intact version to roll back to")
            target = history[-1]
            if before_switch is not None:
                before_switch(target)
            self._point_current(target)
            self._after_commit(history, retire=current, retire_reason=ROLLED_BACK, promoted=target)
            return target

    def _after_commit(self, history: list[str], *, retire: str | None, retire_reason: str,
                      promoted: str) -> None:
        """Write what follows a switch of ``current``; failures are logged (all of it is derivable)."""
        try:
            atomic_write_json(self.root / "history.json", history)
            if retire and (self.root / retire).is_dir() and not (self.root / retire).is_symlink():
                self.set_status(retire, VersionStatus.RETIRED.value, reason=retire_reason)
            self.set_status(promoted, VersionStatus.PROMOTED.value)
        except (OSError, RegistryError) as exc:
            log.warning("registry bookkeeping after switching to %s incomplete (%s); "
                        "repaired at the next open", promoted, exc)

    def _history_from_manifests(self) -> list[str]:
        """The promoted versions as their manifests record them, oldest first by version number:
        the current one and those retired by a later promotion (not those rolled back, nor
        staged versions a newer round superseded before they served)."""
        chain = []
        for version in self.versions():
            try:
                manifest = self.manifest(version)
            except RegistryError:
                continue
            status = manifest.get("status")
            why = str(manifest.get("status_reason") or manifest.get("reason") or "")
            if status == VersionStatus.PROMOTED or (
                    status == VersionStatus.RETIRED and why != ROLLED_BACK
                    and not why.startswith(NEVER_SERVED)):
                chain.append(version)
        return chain

    def _stored_history(self) -> list[str]:
        return self._read_history()[0]

    def _read_history(self) -> tuple[list[str], bool]:
        """``history.json``'s entries that name a version folder, and whether the file exists
        but is not a readable list of version names (damaged)."""
        path = self.root / "history.json"
        if not path.is_file():
            return [], False
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return [], True
        if not isinstance(stored, list):
            return [], True
        entries = [v for v in stored if isinstance(v, str) and VERSION_RE.match(v)
                   and (self.root / v).is_dir() and not (self.root / v).is_symlink()]
        return entries, not all(isinstance(v, str) for v in stored)

    @staticmethod
    def _effective_history(stored: list[str], current: str | None) -> list[str]:
        if current is None:
            return list(stored)
        if current not in stored:
            return stored + [current]
        # a rollback killed after its switch: what follows the last `current` was rolled back
        return stored[:len(stored) - stored[::-1].index(current)]

    def _point_current(self, version: str) -> None:
        tmp = self.root / f".current-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(version, tmp)
        os.replace(tmp, self.root / "current")
        fsync_dir(self.root)

    def _remove_leftovers(self) -> None:
        """Delete staging directories of killed stages, stray ``current`` temp links, and the
        temp files of ``history.json`` and ``last_version`` that a kill left (each is written
        with this lock held, as this runs: none of them is being written now)."""
        for path in self.root.iterdir():
            if path.name.startswith(".current-") and path.is_symlink():
                path.unlink()
            elif (path.name.startswith((f".{LAST_VERSION_FILE}.", ".history.json."))
                  and path.name.endswith(".tmp") and path.is_file() and not path.is_symlink()):
                path.unlink()
                log.info("removed %s left by an interrupted write", path)
            elif path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
                if not _owner_alive(path / OWNER_FILE):
                    shutil.rmtree(path, ignore_errors=True)
                    log.info("removed %s left by an interrupted stage", path)

    def _repair(self) -> None:
        """Rewrite history and statuses a kill left half-written (only when they differ).

        Damage is repaired too, with one warning each: an unreadable ``history.json`` is
        rebuilt from the versions' manifests (:meth:`_history_from_manifests`), and a
        ``current`` pointer that is missing although versions were promoted points at the last
        promoted one again (before, every version then read ``retired``, nothing served, and
        ``edgecl run`` said to start over from a model file).
        """
        stored, damaged = self._read_history()
        missing = not (self.root / "history.json").exists()
        rebuilt = self._history_from_manifests() if damaged or missing else []
        if damaged or (missing and rebuilt):  # never promoted: no history to write
            stored = rebuilt
            atomic_write_json(self.root / "history.json", stored)
            log.warning("model registry %s: history.json was %s; rebuilt from the versions' "
                        "manifests: %s", self.root, "missing" if missing else "unreadable",
                        ", ".join(stored) or "empty")
        pointer = self.root / "current"
        if pointer.exists() and not pointer.is_symlink():  # a file or a folder: set aside
            aside = self.root / f".current.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            os.replace(pointer, aside)
            log.warning("model registry %s: 'current' was a %s, not a link to a version; kept "
                        "aside as %s", self.root, "folder" if aside.is_dir() else "file", aside.name)
        if pointer.is_symlink():
            self._repair_current_link(pointer)
        if not (pointer.exists() or pointer.is_symlink()):
            chain = stored or self._history_from_manifests()
            if chain:
                self._point_current(chain[-1])
                log.warning("model registry %s: the 'current' pointer was missing; it points at "
                            "%s again, the last promoted version", self.root, chain[-1])
        current = self.current()
        effective = self._effective_history(stored, current)
        if effective != stored and (current is None or (self.root / current).is_dir()):
            atomic_write_json(self.root / "history.json", effective)
        for version in self.versions():
            try:
                manifest = self.manifest(version)
            except RegistryError:
                continue
            stored_status = manifest.get("status")
            if version == current and stored_status != VersionStatus.PROMOTED:
                self.set_status(version, VersionStatus.PROMOTED.value)
            elif version != current and stored_status == VersionStatus.PROMOTED:
                # not in the history any more: a rollback switched away from it before a kill
                self.set_status(version, VersionStatus.RETIRED.value,
                                reason="" if version in effective else ROLLED_BACK)

    def _repair_current_link(self, pointer: Path) -> None:
        """Mend a ``current`` link that does not name a version the way the registry writes
        it (``v0003``): an absolute path or ``v0003/`` to one of its versions is written as its
        name again (a rollback by hand); a link to itself or out of the registry (``/etc``) is
        removed, so that the repair points it at the last promoted version (before, the device
        said "no model" while its versions were intact). A link to a version whose folder is
        gone is left as it is: ``models list`` says so, and a person chooses (``models
        promote``, ``models rollback``)."""
        target = os.readlink(pointer)
        if VERSION_RE.match(target):
            return
        try:
            real = pointer.resolve(strict=True)
        except (OSError, RuntimeError):  # a loop, or nothing at its end
            real = None
        if real is not None and real.parent == self.root.resolve() \
                and VERSION_RE.match(real.name) and real.is_dir():
            self._point_current(real.name)
            log.warning("model registry %s: 'current' pointed at %r; it points at %s again, "
                        "as the registry writes it", self.root, target, real.name)
            return
        pointer.unlink()
        log.warning("model registry %s: 'current' pointed at %r, not at a version folder of "
                    "this registry; removed", self.root, target)

    # ----------------------------------------------------------------- adding and pruning

    def add(self, path: str | Path, meta: dict | None = None, opts=None, check: bool = True,
            accept_classes=None) -> str:
        """Stage an existing model file (``.pt``, ``.onnx``, ``.engine``, or an OpenVINO ``.xml``
        with its ``.bin``, and the ``metadata.yaml`` of an ultralytics export, beside it) as a
        new version.

        The file is loaded and warmed with the backend its suffix selects first (its input
        shape, element type and outputs read from the file); a model that cannot serve is
        refused and nothing is staged. An ONNX model whose weights are in external data files
        is staged as one file with them embedded.

        Args:
            path: the model file.
            meta: extra manifest fields.
            opts: :class:`edgecl.models.base.InferenceOptions` for the test load.
            check: load and warm the model before accepting it.
            accept_classes: called with the loaded model's class id -> name before anything
                is staged; what it raises refuses the model (only with ``check``).

        Returns:
            The new version name.

        Raises:
            RegistryError: missing file, unsupported suffix, or a model that cannot load or run.
        """
        path = Path(path)
        if path.is_dir():
            from edgecl.models.base import folder_given

            raise RegistryError(f"cannot add: {folder_given(path)}")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise RegistryError(f"cannot add {path}: expected one of {', '.join(MODEL_SUFFIXES)}")
        if not path.is_file():
            why = special_file_problem(path)  # a FIFO, a device, a link that loops
            raise RegistryError(f"cannot add: {why}" if why else f"cannot add {path}: file not found")
        info: dict = {}
        if check:
            from edgecl.models.backends import load_backend

            try:
                backend = load_backend(path, opts, warmup_runs=1)
            except NotADetectorError as exc:  # already "cannot load PATH: what it is; expected"
                raise RegistryError(str(exc)) from None
            except ModelLoadError as exc:  # its message names the file where it says what it is
                said = str(exc)
                raise RegistryError(f"cannot add {path}: {said}" if str(path) not in said
                                    else f"cannot add: {said}") from None
            meta_ = backend.meta
            info = {"classes": {int(k): v for k, v in meta_.names.items()},
                    "input": meta_.input_info()}
            if meta_.extra.get("nms_score_threshold") is not None:  # NMS exported inside it
                info["nms_score_threshold"] = meta_.extra["nms_score_threshold"]
            backend.close()
            if accept_classes is not None:
                accept_classes(info["classes"])
        files = {f"model{path.suffix.lower()}": path}
        manifest = dict(info, **(meta or {}), source=str(path))
        if path.suffix.lower() == ".xml":
            weights = path.with_suffix(".bin")
            if not weights.is_file():
                raise RegistryError(f"cannot add {path}: its weights {weights.name} are missing "
                                    "beside it")
            files["model.bin"] = weights
            meta_yaml = path.parent / "metadata.yaml"  # ultralytics' export keeps names there
            _check_beside(path, meta_yaml)
            if meta_yaml.is_file():
                files["metadata.yaml"] = meta_yaml
            manifest.setdefault("serve", "model.xml")
        if path.suffix.lower() != ".onnx" or not check:  # unchecked: staged as the bytes it is
            return self.stage(files, manifest)
        from edgecl.models.onnx_backend import embed_external_data

        with tempfile.TemporaryDirectory(prefix="edgecl-add-") as tmp:
            try:
                if embed_external_data(path, Path(tmp) / "model.onnx"):
                    files["model.onnx"] = Path(tmp) / "model.onnx"
            except ModelLoadError as exc:
                raise RegistryError(f"cannot add: {exc}") from None
            return self.stage(files, manifest)

    def prune(self, keep_promoted: int = 5, keep_rejected: int = 3,
              engine_cache_entries: int | None = None) -> dict:
        """Apply the retention rule; delete the files of versions it does not keep.

        Kept: the current version, its parent, ``keep_promoted`` versions ever promoted
        (current or retired: those a rollback would return to first, in its order, then
        the newest others, such as versions rolled back away from), the first version a
        person added (:meth:`add`) that served (the team's own checkpoint), the last
        ``keep_rejected`` rejected versions, every staged version newer than current, every
        version staged by :meth:`add` (a person's) and not promoted yet, and the
        ``keep_promoted`` newest held for a person to promote (:data:`MANUAL_PROMOTION`).
        Every other version keeps only a tombstone manifest (status ``pruned``, its file
        digests moved to ``pruned_files``); tombstones beyond :data:`MAX_TOMBSTONES`
        are deleted (oldest first). Corrupt or symlinked versions are left alone and reported.

        Args:
            keep_promoted: promoted versions to keep (>= 0).
            keep_rejected: rejected versions to keep (>= 0).
            engine_cache_entries: also bound ``engine-cache/`` to this many engines (LRU);
                ``None`` leaves the cache alone.

        Returns:
            ``{"kept": [...], "pruned": [...], "deleted": [...], "skipped": {...},
            "freed_bytes": n, "engine_cache": {...}}``.

        A full disk does not stop it (it is what frees room): a version's files are then
        deleted before its tombstone is written (see :meth:`_tombstone`).

        Raises:
            RegistryError: a negative count.
            StorageError: the registry cannot be written (read-only; a full disk that
                deleting the version's files did not cure); what was pruned before stays pruned.
        """
        if keep_promoted < 0 or keep_rejected < 0:
            raise RegistryError("keep_promoted and keep_rejected must be >= 0")
        with self._lock(), storage_faults(f"cannot prune the model registry {self.root}"):
            damaged = self.damaged_current()
            if damaged:  # the retention rule keeps 'current': without it, it would delete it
                raise RegistryError(f"not pruning: {damaged}; repair it first (edgecl models "
                                    f"promote VERSION points it at a version again)")
            keep, skipped = self._retained(keep_promoted, keep_rejected)
            pruned, freed_bytes = [], 0
            for version in self.versions():
                if version in keep or version in skipped:
                    continue
                manifest = self.manifest(version)
                if manifest.get("status") == VersionStatus.PRUNED:
                    continue
                freed_bytes += self._tombstone(version, manifest)
                pruned.append(version)
            deleted = self._drop_old_tombstones(keep)
        result = {"kept": sorted(keep, key=lambda v: int(v[1:])), "pruned": pruned, "deleted": deleted,
                  "skipped": skipped, "freed_bytes": freed_bytes}
        if engine_cache_entries is not None:
            from edgecl.models.tensorrt_build import prune_engine_cache

            result["engine_cache"] = prune_engine_cache(self.root / ENGINE_CACHE_DIR, engine_cache_entries)
        if pruned or deleted:
            log.info("registry retention pruned %s, deleted tombstones %s (%d bytes freed)",
                     pruned, deleted, freed_bytes)
        return result

    def _retained(self, keep_promoted: int, keep_rejected: int) -> tuple[set[str], dict[str, str]]:
        current, history = self.current(), self.history()
        keep: set[str] = set()
        skipped: dict[str, str] = {}
        statuses = {}
        for version in self.versions():
            try:
                manifest = self.manifest(version)
            except RegistryError as exc:
                skipped[version] = str(exc)
                continue
            statuses[version] = (self._derive_status(version, manifest, current, history), manifest)
        if current in statuses:
            keep.add(current)
            parent = statuses[current][1].get("parent")
            if isinstance(parent, str) and parent in statuses:
                keep.add(parent)
        # ever promoted: current and retired versions; first those a rollback returns to, in
        # its order (the history's stack), then the others newest first (those rolled back
        # away from: before, they took the places of the versions rolled back to, and a
        # device that had rolled back had nothing left to roll back to two promotions later)
        served = (VersionStatus.PROMOTED, VersionStatus.RETIRED)
        promoted = [v for v, (s, _) in statuses.items() if s in served]
        ranked = list(dict.fromkeys([v for v in reversed(history) if v in promoted]
                                    + promoted[::-1]))
        keep.update(ranked[:keep_promoted])
        # the first version a person added that served: the team's own checkpoint, what every
        # round learnt on top of and a rollback of last resort (before, five tiny rounds pruned
        # it, and the device kept no copy of the model it started from)
        first_added = next((v for v in promoted if added_by_person(statuses[v][1])), None)
        if first_added is not None:
            keep.add(first_added)
        rejected = [v for v, (s, _) in statuses.items() if s == VersionStatus.REJECTED]
        keep.update(rejected[-keep_rejected:] if keep_rejected else [])
        floor = int(current[1:]) if current else 0
        keep.update(v for v, (s, _) in statuses.items() if s == VersionStatus.STAGED and int(v[1:]) > floor)
        # staged by a person ('edgecl models add' without --promote): theirs to promote or
        # leave, whatever rounds promote meanwhile (a round's leftover names its parent)
        keep.update(v for v, (s, m) in statuses.items()
                    if s == VersionStatus.STAGED and added_by_person(m))
        # held for a person's review ('edgecl learn --no-promote'): pruned by the next
        # promotion before, its candidate gone before anyone looked at it
        held = [v for v, (s, m) in statuses.items()
                if s == VersionStatus.STAGED and m.get("promote") == MANUAL_PROMOTION]
        keep.update(held[-keep_promoted:] if keep_promoted else [])
        return keep, skipped

    def _tombstone(self, version: str, manifest: dict) -> int:
        """Delete a version's files, keep its manifest with status ``pruned``; return bytes freed.

        The tombstone is written first (a kill half-way leaves a ``pruned`` manifest and some
        files, which the next prune deletes). On a full disk it cannot be, so the files go
        first, then the tombstone: a kill in between leaves a version without its files, which
        reads as damaged until the next prune makes it a tombstone (it is never ``current``:
        retention keeps that one).
        """
        vdir = self._version_dir(version)
        tomb = dict(manifest, status=VersionStatus.PRUNED.value, pruned_files=manifest.get("files", {}),
                    files={}, pruned=now_iso(),
                    status_before_prune=manifest.get("status"))
        try:
            atomic_write_json(vdir / "manifest.json", tomb)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning("model registry: no room for %s's tombstone (%s); deleting its files "
                        "first", version, exc.strerror)
            freed = self._delete_files(vdir)
            atomic_write_json(vdir / "manifest.json", tomb)
            return freed
        return self._delete_files(vdir)

    @staticmethod
    def _delete_files(vdir: Path) -> int:
        """Delete everything in a version folder but its manifest; return the bytes freed."""
        freed = 0
        for entry in vdir.iterdir():
            if entry.name == "manifest.json":
                continue
            if entry.is_dir() and not entry.is_symlink():
                freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
                shutil.rmtree(entry)
            else:
                freed += entry.lstat().st_size
                entry.unlink()
        fsync_dir(vdir)
        return freed

    def _drop_old_tombstones(self, keep: set[str]) -> list[str]:
        versions = self.versions()
        tombs = []
        for version in versions[:-1]:  # INVARIANT: the newest directory stays (version numbering)
            if version in keep or (self.root / version).is_symlink():
                continue
            try:
                if self.manifest(version).get("status") == VersionStatus.PRUNED:
                    tombs.append(version)
            except RegistryError:
                continue
        doomed = tombs[:max(0, len(tombs) - MAX_TOMBSTONES)]
        for version in doomed:
            shutil.rmtree(self.root / version)
        if doomed:
            history = [v for v in self._stored_history() if v not in doomed]
            atomic_write_json(self.root / "history.json", history)
        return doomed


def _owner_alive(owner: Path) -> bool:
    """True while the process that created a staging directory still holds its lock."""
    try:
        fh = open(owner, "r")  # noqa: SIM115
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def damaged_current_way_out(versions: list[VersionInfo]) -> str:
    """What a person does about a damaged or dangling current version: roll back where an
    earlier version that served is kept, else add a copy they trust (a rollback would fail).

    Args:
        versions: the registry's versions (:meth:`Registry.list`).
    """
    if any(v.status in ("promoted", "retired") and not v.current for v in versions):
        return "'edgecl models rollback' serves the version before it"
    return ("no earlier version is kept: 'edgecl models add --promote FILE' serves a copy you "
            "trust (the version's own model.onnx or model.pt, if intact)")


def promoted_at_start(manifest: dict) -> bool:
    """Whether a staged version is one a runtime's start promotes: a learning round staged it
    (its manifest names the memory snapshot it learnt) and no person holds it for review
    (:data:`MANUAL_PROMOTION`). A version added by hand, or a held candidate, waits for
    ``edgecl models promote``."""
    return bool(manifest.get("memory_snapshot")) and manifest.get("promote") != MANUAL_PROMOTION


def added_by_person(manifest: dict) -> bool:
    """Whether a version was staged from a person's file (:meth:`Registry.add`, ``edgecl
    models add``), not by a round (a round's names its parent)."""
    return "parent" not in manifest and bool(manifest.get("source"))


def unpromoted_model_problem(state_dir: str | Path, version: str, source: str,
                             serving: bool = False) -> str:
    """What ``run`` and a round say where the device has no current version while the user's
    own model waits staged (:meth:`Registry.added_unpromoted`).

    Args:
        state_dir: the state directory.
        version: the staged version.
        source: the file it was added from.
        serving: a round's message (something may serve meanwhile, a ``--model`` file): it
            says that no round trains a model of its own past the user's, not that nothing
            serves.
    """
    import shlex

    added = f"{version} ({Path(source).name}, added with 'edgecl models add') is staged, not promoted"
    promote = f"'edgecl models promote {version} --state-dir {shlex.quote(str(state_dir))}'"
    if serving:
        return (f"no round trains a model of its own past your own: {added}; {promote} makes "
                f"rounds learn on top of it (model.path: yolo11n.yaml learns from scratch)")
    return f"no model is serving: {added}; {promote} serves it and rounds learn on top of it"


def _linked(src: str | Path, dst: Path) -> bool:
    """Hard-link ``src`` as ``dst``; False where the file system refuses (another file system,
    a FAT card, no permission): the caller copies then."""
    try:
        os.link(src, dst)
    except OSError:
        return False
    return True

