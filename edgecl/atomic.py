"""Crash-safe file writes: temp file, fsync, ``os.replace``, fsync of the directory (and the
same for a whole new folder: :func:`atomic_dir`)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from edgecl.boot import boot_tag


def new_file_mode(directory: bool = False) -> int:
    """The mode a plain ``open`` (or ``mkdir``) would give a new file (folder) under the
    process's umask: ``0o644`` (``0o755``) for the usual ``022``. A temp file (folder) that is
    renamed into place gets it, since :mod:`tempfile` makes them private (``0o600``,
    ``0o700``): a written dataset, report or model otherwise reads as another user's secret.

    Args:
        directory: the mode of a folder instead of a file.

    Returns:
        ``0o666`` (``0o777``) less the umask, read from ``/proc/self/status`` (``022`` where it
        cannot be read: setting the umask to read it would race other threads).
    """
    umask = 0o022
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError, IndexError):
        umask = 0o022
    return (0o777 if directory else 0o666) & ~umask


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk so a rename survives power loss.

    Args:
        path: directory to flush.
    """
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object],
                      parents: bool = True) -> None:
    """Let ``write(fh)`` fill a temp file, then fsync it and ``os.replace`` it onto ``path``.

    Readers see either the old or the new file, never a partial one.

    Args:
        path: destination file.
        write: callable writing the full contents into the binary file object it is given.
        parents: create the missing folders above ``path``; False for a store whose folder
            must not grow again where it was moved or deleted from (:func:`make_dirs_in`):
            the write then fails with ``ENOENT``.

    Raises:
        OSError: when the disk is full or the directory is not writable (its ``filename``
            names ``path`` when the failing call named no file, as a buffered write's
            ``ENOSPC`` does); the old file (if any) is left untouched and no temp file is left
            behind.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(path)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename == tmp:
            raise _at_destination(exc, path) from None  # the rename onto path
        _name_file(exc, path)
        raise
    fsync_dir(path.parent)


def temp_dir_for(path: Path, prefix: str, parent: Path | None = None) -> Path:
    """A new hidden temp folder (``tempfile.mkdtemp``, suffix ``.tmp``) in ``parent`` (default:
    ``path``'s folder) to build ``path`` in.

    Raises:
        OSError: the folder cannot be made; its ``filename`` is ``path``, the destination the
            user named, not the temp folder's random name.
    """
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp",
                                     dir=str(parent if parent is not None else path.parent)))
    except OSError as exc:
        raise _at_destination(exc, path) from None


def temp_file_for(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A new hidden temp file (``tempfile.mkstemp``: open descriptor and name) beside ``path``
    to write ``path`` through.

    Raises:
        OSError: the file cannot be made; its ``filename`` is ``path``, not the temp name.
    """
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    except OSError as exc:
        raise _at_destination(exc, path) from None


def _at_destination(exc: OSError, path: Path) -> OSError:
    """``exc`` (an error on a hidden temp file or folder, or on its rename) as the same error
    on the destination ``path``: a temp name such as ``/proc/.x.pid25228.tmp`` is nothing the
    user asked for. An error without an errno comes back unchanged."""
    return exc if exc.errno is None else OSError(exc.errno, exc.strerror, str(path))


def _name_file(exc: BaseException, path: Path) -> None:
    """Give an OSError that names no file the destination's path, so the one-line message a
    caller shows says where the disk was full (``[Errno 28] No space left on device: 'PATH'``)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
        exc.filename = str(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, parents: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_with`).

    Args:
        path: destination file.
        data: full new contents.
        parents: create the missing folders above ``path`` (see :func:`atomic_write_with`).
    """
    atomic_write_with(path, lambda fh: fh.write(data), parents)


def atomic_write_text(path: str | os.PathLike, text: str, parents: bool = True) -> None:
    """Atomically write UTF-8 text (see :func:`atomic_write_bytes`).

    Args:
        path: destination file.
        text: full new contents.
        parents: create the missing folders above ``path`` (see :func:`atomic_write_with`).
    """
    atomic_write_bytes(path, text.encode("utf-8"), parents)


def json_default(value):
    """``json.dumps`` fallback for numpy scalars and arrays (anything with ``tolist``).

    Raises:
        TypeError: any other object (``json``'s own error for it).
    """
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_safe(value):
    """``value`` with every NaN and infinity (not JSON: ``jq`` and browsers refuse them)
    replaced by None, recursively through dicts (their keys as text), lists and tuples.

    Args:
        value: a JSON-ready value.

    Returns:
        The same structure, strict JSON.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, obj: object, parents: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON (see :func:`atomic_write_bytes`).

    Args:
        path: destination file.
        obj: JSON-serialisable object.
        parents: create the missing folders above ``path`` (see :func:`atomic_write_with`).
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", parents)


def path_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(device, inode)`` of the file or folder ``path`` names now; None when there is none
    (or it cannot be seen)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def make_dirs_in(path: str | os.PathLike, home: str | os.PathLike,
                 home_identity: tuple[int, int] | None) -> None:
    """Create the folder ``path`` and those between it and ``home``, only while ``home`` is
    the folder it was (:func:`path_identity`) when its store was opened: a store deleted
    inside its home grows again, a store whose home (the state directory) was moved, replaced
    or deleted does not grow a new, empty home at the old path, which would take writes that
    belong with the moved one.

    Args:
        path: a folder inside ``home``.
        home: the folder that must still be there.
        home_identity: ``path_identity(home)`` taken when the store was opened.

    Raises:
        FileNotFoundError: ``home`` was moved, replaced or deleted (it names ``home``).
        OSError: a folder cannot be made.
    """
    if path_identity(home) != home_identity:
        raise FileNotFoundError(errno.ENOENT, "moved, replaced or deleted since it was opened",
                                str(home))
    Path(path).mkdir(parents=True, exist_ok=True)


def damaged_copy_path(path: str | os.PathLike, stamp: str,
                      sides: tuple[str, ...] = ("",)) -> Path:
    """Where a damaged file is kept beside its repair: ``NAME.corrupt-STAMP``, or
    ``NAME.corrupt-STAMP.N`` (N = 2, 3, ...) when that name is taken, so a second repair in
    the same second (a board whose clock starts at the same date every boot) never
    overwrites the first copy.

    Args:
        path: the damaged file.
        stamp: the time it is kept at (UTC, no ``:``).
        sides: suffixes of files that go with it (an SQLite ``-wal`` and ``-shm``): a name is
            taken when any of them exists.

    Returns:
        A path no file (nor any of its sides) holds.
    """
    path = Path(path)
    base = f"{path.name}.corrupt-{stamp}"
    kept, n = path.with_name(base), 1
    while any(kept.with_name(kept.name + side).exists() for side in sides):
        n += 1
        kept = path.with_name(f"{base}.{n}")
    return kept


def keep_damaged(path: str | os.PathLike) -> Path:
    """Move a damaged file aside, beside where its repair goes (:func:`damaged_copy_path`,
    stamped with the UTC time now).

    Args:
        path: the damaged file.

    Returns:
        Where it is kept.

    Raises:
        OSError: it cannot be moved (a read-only folder).
    """
    kept = damaged_copy_path(path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.replace(path, kept)
    return kept


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` the same file as ``src``: a hard link, or a copy where links fail (another
    file system). Not atomic: for work copies that a crash may leave half-made and that are
    rebuilt, never for state.

    Args:
        src: an existing file.
        dst: the new path (its folder is created; a file already there is replaced).

    Raises:
        OSError: neither a link nor a copy could be made.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file atomically (the destination appears whole or not at all).

    Args:
        src: source file.
        dst: destination file.
    """
    atomic_write_bytes(dst, Path(src).read_bytes())


ORPHAN_QUIET_S = 600.0
"""How long a dead process's temp folder must have been left unchanged before it is removed."""


def _remove_orphaned_temp_dirs(path: Path) -> None:
    """Remove ``.<name>.pid<pid>[.boot<tag>].*.tmp`` folders beside ``path``, of any output
    name, whose writer is gone and that nothing has changed for :data:`ORPHAN_QUIET_S` (a
    process of another pid namespace, a container writing to a shared volume, looks gone).
    The writer is gone when the folder was made in an earlier boot (its pid is likely another
    program's now: the folder stayed for good) or, in this boot, when no process has its pid.
    Before, only those of ``path``'s own name went: an export killed half-way left a hidden
    copy of the whole memory for good when the next export went to another folder."""
    pattern = re.compile(r"\..+\.pid(\d+)(?:\.boot([0-9a-f]{8}))?\.[A-Za-z0-9_]+\.tmp")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    now = time.time()
    this_boot = boot_tag()
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if match is None or not sibling.is_dir():
            continue
        made_in = match.group(2)
        earlier_boot = bool(made_in and this_boot and made_in != this_boot)
        if not earlier_boot and process_alive(int(match.group(1))):
            continue
        try:
            touched = max([sibling.stat().st_mtime] + [p.stat().st_mtime for p in sibling.iterdir()
                                                       if p.is_dir()])
        except OSError:
            continue
        if now - touched >= ORPHAN_QUIET_S:
            shutil.rmtree(sibling, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a hidden temp folder beside ``path``, then rename it onto ``path``.

    Readers (and a failure half-way) see either no folder (or the old empty one) or the whole
    new folder. ``path`` must not exist or be an empty folder (``os.replace`` of a folder
    only replaces an empty one), or a symbolic link to an empty folder (which is filled; the
    link stays).

    Args:
        path: the folder to create.

    Yields:
        The temp folder to fill (files written there keep their final relative paths).

    Raises:
        OSError: the parent is not writable, the disk is full, or ``path`` is not empty; the
            temp folder is removed and ``path`` is untouched.

    A temp folder that a killed process left for the same ``path`` (its name holds the pid and
    the boot: made in an earlier boot, or no process has that pid now, and it has not changed
    for :data:`ORPHAN_QUIET_S`) is removed first: a dataset import killed half-way left
    hundreds of megabytes of hidden images beside its output.
    """
    path = Path(path)
    if path.is_symlink() and path.is_dir():  # a link to an empty folder: that folder is filled
        path = path.resolve()  # (renamed onto, the link itself failed with 'Not a directory')
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temp_dirs(path)
    boot = f"boot{boot_tag()}." if boot_tag() else ""
    tmp = temp_dir_for(path, f".{path.name}.pid{os.getpid()}.{boot}")
    try:
        os.chmod(tmp, new_file_mode(directory=True))
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise _at_destination(exc, path) from None
            raise OSError(exc.errno, f"{path} was filled meanwhile (another process wrote "
                                     f"it?); nothing of this run was kept there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
