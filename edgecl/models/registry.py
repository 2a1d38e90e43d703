"""Versioned model registry in ``STATE/models``: stage, promote, rollback, list.

Layout::

    models/v0001/{model.pt, model.onnx, [model.engine], manifest.json}
    models/current -> v0001        (symlink, switched atomically with os.replace)
    models/history.json            promoted versions, oldest first (for rollback)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgecl.atomic import atomic_write_json, fsync_dir
from edgecl.errors import RegistryError
from edgecl.models.base import sha256_file

VERSION_RE = re.compile(r"^v(\d{4,})$")
MODEL_SUFFIXES = (".pt", ".onnx", ".engine")
STATUSES = ("staged", "promoted", "rejected", "retired")


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

    def to_json(self) -> dict:
        """Return the JSON shape used by ``models list --json``."""
        return {"version": self.version, "status": self.status, "current": self.current,
                "created": self.created, "metrics": self.metrics,
                "files": sorted(self.files), "reason": self.manifest.get("reason", "")}


class Registry:
    """Model versions of one device.

    Args:
        root: the ``STATE/models`` directory (created if missing).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self):
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def versions(self) -> list[str]:
        """Return all version names in ascending order."""
        found = [p.name for p in self.root.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def current(self) -> str | None:
        """Return the current version name, or ``None`` when nothing is promoted."""
        link = self.root / "current"
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        return target if VERSION_RE.match(target) else None

    def manifest(self, version: str) -> dict:
        """Read a version's manifest.

        Raises:
            RegistryError: unknown version or unreadable manifest.
        """
        path = self.root / version / "manifest.json"
        if not path.is_file():
            raise RegistryError(f"unknown model version '{version}' in {self.root} "
                                f"(have: {', '.join(self.versions()) or 'none'})")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"corrupt manifest {path}: {exc}") from None

    def model_path(self, version: str, prefer: tuple[str, ...] = (".engine", ".onnx", ".pt")) -> Path:
        """Return the inference file of a version, by preference of suffix.

        Args:
            version: version name.
            prefer: suffixes in order of preference.

        Raises:
            RegistryError: the version has no usable model file.
        """
        files = self.manifest(version).get("files", {})
        for suffix in prefer:
            for name in files:
                if name.endswith(suffix):
                    return self.root / version / name
        raise RegistryError(f"model version {version} has no file among {prefer}")

    def stage(self, files: dict[str, str | Path], meta: dict | None = None, status: str = "staged") -> str:
        """Copy files into a new version directory with a manifest (atomic directory rename).

        Args:
            files: destination name (e.g. ``model.onnx``) -> source path.
            meta: manifest fields (parent, classes, metrics, config hash, ...).
            status: initial status (``staged`` or ``rejected``).

        Returns:
            The new version name.

        Raises:
            RegistryError: a source file is missing or the status is invalid.
        """
        if status not in STATUSES:
            raise RegistryError(f"invalid status '{status}'")
        for name, src in files.items():
            if not Path(src).is_file():
                raise RegistryError(f"cannot stage {name}: file not found: {src}")
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            digests = {}
            for name, src in files.items():
                shutil.copyfile(src, tmp / name)
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
                digests[name] = sha256_file(tmp / name)
            with self._lock():
                version = self._next_version()
                manifest = dict(meta or {})
                manifest.update(version=version, status=status, files=digests,
                                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                atomic_write_json(tmp / "manifest.json", manifest)
                os.replace(tmp, self.root / version)
                fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return version

    def _next_version(self) -> str:
        versions = self.versions()
        number = int(versions[-1][1:]) + 1 if versions else 1
        return f"v{number:04d}"

    def verify(self, version: str) -> list[str]:
        """Check every file of a version against its manifest sha256.

        Returns:
            Problems found (empty when intact).
        """
        problems = []
        for name, digest in self.manifest(version).get("files", {}).items():
            path = self.root / version / name
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path} does not match its manifest sha256")
        return problems

    def set_status(self, version: str, status: str, reason: str = "") -> None:
        """Update a version's status (and reason) in its manifest, atomically."""
        if status not in STATUSES:
            raise RegistryError(f"invalid status '{status}'")
        manifest = self.manifest(version)
        manifest["status"] = status
        if reason:
            manifest["reason"] = reason
        atomic_write_json(self.root / version / "manifest.json", manifest)

    def update_manifest(self, version: str, fields: dict) -> None:
        """Merge fields into a version's manifest, atomically."""
        manifest = self.manifest(version)
        manifest.update(fields)
        atomic_write_json(self.root / version / "manifest.json", manifest)

    def promote(self, version: str) -> None:
        """Make ``version`` current (verified first; the switch is one ``os.replace``).

        Raises:
            RegistryError: unknown, rejected or corrupt version.
        """
        with self._lock():
            manifest = self.manifest(version)
            if manifest.get("status") == "rejected":
                raise RegistryError(f"model version {version} was rejected "
                                    f"({manifest.get('reason', 'no reason recorded')}); not promoting")
            problems = self.verify(version)
            if problems:
                raise RegistryError(f"refusing to promote {version}: {problems[0]}")
            previous = self.current()
            self._point_current(version)
            history = self._history()
            if not history or history[-1] != version:
                history.append(version)
            atomic_write_json(self.root / "history.json", history)
            if previous and previous != version:
                self.set_status(previous, "retired")
            self.set_status(version, "promoted")

    def rollback(self) -> str:
        """Return to the previously promoted intact version.

        Returns:
            The version now current.

        Raises:
            RegistryError: nothing to roll back to.
        """
        with self._lock():
            history = self._history()
            current = self.current()
            if current in history:
                history = history[:history.index(current)]
            while history and self.verify(history[-1]):
                history.pop()
            if not history:
                raise RegistryError("no earlier intact version to roll back to")
            target = history[-1]
            self._point_current(target)
            atomic_write_json(self.root / "history.json", history)
            if current:
                self.set_status(current, "retired", reason="rolled back")
            self.set_status(target, "promoted")
            return target

    def _history(self) -> list[str]:
        path = self.root / "history.json"
        if not path.is_file():
            return []
        try:
            return [v for v in json.loads(path.read_text()) if (self.root / v).is_dir()]
        except json.JSONDecodeError:
            return [self.current()] if self.current() else []

    def _point_current(self, version: str) -> None:
        tmp = self.root / f".current-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(version, tmp)
        os.replace(tmp, self.root / "current")
        fsync_dir(self.root)

    def list(self) -> list[VersionInfo]:
        """Return every version with its status and metrics, oldest first."""
        current = self.current()
        out = []
        for version in self.versions():
            try:
                manifest = self.manifest(version)
            except RegistryError as exc:
                manifest = {"status": "corrupt", "reason": str(exc)}
            out.append(VersionInfo(version=version, status=manifest.get("status", "unknown"),
                                   current=version == current, created=manifest.get("created", ""),
                                   metrics=manifest.get("metrics", {}),
                                   files=manifest.get("files", {}), manifest=manifest))
        return out

    def add(self, path: str | Path, meta: dict | None = None) -> str:
        """Stage an existing model file (``.pt``, ``.onnx`` or ``.engine``) as a new version.

        Raises:
            RegistryError: missing file or unsupported suffix.
        """
        path = Path(path)
        if path.suffix not in MODEL_SUFFIXES:
            raise RegistryError(f"cannot add {path}: expected one of {', '.join(MODEL_SUFFIXES)}")
        if not path.is_file():
            raise RegistryError(f"cannot add {path}: file not found")
        return self.stage({f"model{path.suffix}": path}, dict(meta or {}, source=str(path)))
