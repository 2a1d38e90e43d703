"""One runtime per state directory: an ``fcntl.flock`` on ``STATE/lock`` held for the runtime's life;
and ``STATE/import.lock``, held shared by each import while it stores samples.

The lock file holds the holder's pid (for the message a second runtime prints). The kernel
releases an ``flock`` when its holder dies, even on ``kill -9``, so a stale file never blocks a
restart; the pid in it is only informative. The file is written in place, not through
:mod:`edgecl.atomic`: replacing it would give it a new inode and defeat the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

from edgecl.errors import EdgeclError, StorageError, is_disk_full

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
FLEET_CLIENT_LOCK_NAME = "fleet-client.lock"
"""``STATE/fleet-client.lock``: held by the one fleet client serving a state directory (``edgecl
fleet join``, or the client ``edgecl run`` spawns): two would train on the same memory and send
two updates under one device name."""


class StateLockedError(EdgeclError):
    """Another runtime holds the state directory."""


class RuntimeLock:
    """The exclusive lock of one state directory.

    Use as ``with RuntimeLock(state_dir): ...`` or call :meth:`acquire` / :meth:`release`.
    The file descriptor is close-on-exec, so a spawned learner process does not inherit it.

    Args:
        state_dir: the state directory (created if missing).
        name: the lock file's name in it (default :data:`LOCK_NAME`; the fleet client holds
            :data:`FLEET_CLIENT_LOCK_NAME`).
        holder: who holds such a lock, for the message a second one gets.
        shown: the folder that message names (default ``state_dir``; the fleet server locks
            its ``STATE/fleet`` folder, and names ``STATE``).
    """

    def __init__(self, state_dir: str | Path, name: str = LOCK_NAME,
                 holder: str = "another edgecl runtime", shown: str | Path | None = None):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / name
        self.holder = holder
        self.shown = Path(shown) if shown is not None else self.state_dir
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "RuntimeLock":
        """Take the lock without waiting and write this process's pid into the lock file.

        Returns:
            ``self``.

        Raises:
            StateLockedError: another process (or another RuntimeLock in this one) holds it;
                the message names the holder's pid.
            StorageError: the state directory or the lock file cannot be created or written
                (read-only file system, permissions).
        """
        if self._fd is not None:
            return self
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {self.path}: "
                               f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process (pid not yet written)"
            raise StateLockedError(f"state directory {self.shown} is in use by {self.holder} "
                                   f"({who}); stop it or use another --state-dir") from None
        previous = _read_pid(fd)  # cleared by a clean stop: a pid left is a run that died
        if previous and previous != os.getpid():
            log.warning("the last edgecl process holding %s (pid %d) did not stop cleanly (killed, "
                        "crashed or powered off); what it left is checked as the state opens",
                        self.state_dir, previous)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            if not is_disk_full(exc):
                os.close(fd)
                raise StorageError(f"cannot write the lock file {self.path}: "
                                   f"{exc.strerror or exc}") from None
            # the lock is the flock, held; the pid is only informative, and a full disk must
            # not keep a device from detecting
            log.warning("holding %s without its pid (%s)", self.path, exc.strerror or exc)
        self._fd = fd
        log.debug("holding %s (pid %d)", self.path, os.getpid())
        return self

    def release(self, remove: bool = False) -> None:
        """Give the lock back (idempotent). The file stays, its pid cleared, unless ``remove``.

        Args:
            remove: delete the file too (a detect-only run's lock in the shared temp folder,
                which would otherwise pile up there, one per state directory ever used). A
                run that opened the file just before may then hold the removed file's lock
                at the same moment as one that creates it anew: harmless for runs that only
                read.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if remove:
                self.path.unlink(missing_ok=True)
            os.ftruncate(fd, 0)
        except OSError as exc:  # a read-only or full disk must not stop a clean shutdown
            log.warning("could not clear %s: %s", self.path, exc)
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def __del__(self) -> None:
        # a runtime dropped without close() (a test, an exception in build) frees its directory;
        # closing the descriptor is enough (the stale pid in the file is only informative)
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "RuntimeLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The pid written in a lock file, or ``None`` when empty or unreadable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_left(state_dir: str | Path, name: str = LOCK_NAME) -> int | None:
    """The pid a holder left in a lock file it no longer holds: a clean release clears it
    (:meth:`RuntimeLock.release`), so one left is a process killed, crashed or powered off.

    Args:
        state_dir: the state directory.
        name: the lock file (default the runtime's).

    Returns:
        That pid; ``None`` when the file is absent, empty, or held now.
    """
    if holder_pid(state_dir, name) is not None:
        return None
    try:
        fd = os.open(Path(state_dir) / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def detect_only_lock(state_dir: str | Path) -> tuple[Path, str]:
    """Where a detect-only run (its state directory cannot be written:
    :func:`edgecl.runtime.app.detect_only_options`) holds its lock: the temp folder, under a
    name made from the state directory's real path. ``edgecl status`` reads the holder's pid
    there (before, such a run read as 'not running'), and a second one is refused.

    Args:
        state_dir: the state directory.

    Returns:
        ``(folder, file name)`` for :class:`RuntimeLock` and :func:`holder_pid`.
    """
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.path.realpath(state_dir).encode("utf-8", "surrogateescape"))
    return Path(tempfile.gettempdir()), f"edgecl-detect-only-{digest.hexdigest()[:16]}.lock"


def holder_pid(state_dir: str | Path, name: str = LOCK_NAME) -> int | None:
    """The pid of the runtime holding ``state_dir``, or ``None`` when no one holds it.

    Args:
        state_dir: the state directory.
        name: the lock file (default the runtime's; :data:`FLEET_CLIENT_LOCK_NAME`: the fleet
            client's).

    Returns:
        The holder's pid while the lock is held; ``None`` when it is free or absent.
    """
    path = Path(state_dir) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_beside(path: str | Path) -> tuple[int | None, int | None]:
    """Hold an exclusive ``flock`` on a hidden ``.NAME.lock`` beside ``path`` without waiting,
    for a file one process at a time may write (``edgecl run --out``: two runs appending to one
    file gave its frame ids twice and rotated it under each other). The kernel releases it when
    the holder dies; closing the descriptor releases it too.

    Args:
        path: the file the lock guards.

    Returns:
        ``(fd, None)`` once held (this process's pid written in it), ``(None, pid)`` when
        another process holds it (``pid`` 0 where it wrote none), ``(None, None)`` when
        the lock file cannot be made (a folder that may not be written: the guarded file is
        written without it).
    """
    lock = Path(path).with_name(f".{Path(path).name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        log.debug("%s not made (%s): %s is written without it", lock, exc.strerror or exc, path)
        return None, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        return None, holder or 0
    with contextlib.suppress(OSError):  # the pid is only informative (a full disk)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, None


IMPORT_LOCK_NAME = "import.lock"
"""``STATE/import.lock``: a shared ``flock`` held by each import while it stores samples."""


@contextlib.contextmanager
def importing(state_dir: str | Path) -> Iterator[None]:
    """Hold ``STATE/import.lock`` (shared: imports may run side by side) while an import stores
    samples, so that a runtime's learner starts no round on half a folder
    (:func:`import_running`). The kernel drops the lock when the import dies, even on
    ``kill -9``. Where the file cannot be made (a read-only state directory) nothing is held:
    the import's own writes fail there with their own message.

    Args:
        state_dir: the state directory.
    """
    path = Path(state_dir) / IMPORT_LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a first import makes the device
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        # a read-only state directory, or a --state-dir that is no folder: the import's own
        # writes fail with their own message; anything else (a folder where the lock file
        # belongs) is said: a runtime on this state directory may then start a round on part
        # of what this import stores
        fails_anyway = (exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
                        or not path.parent.is_dir())
        log.log(logging.DEBUG if fails_anyway else logging.WARNING,
                "import not announced in %s (%s): a runtime on this state directory may start "
                "a learning round before it is done", path, exc.strerror or exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def import_running(state_dir: str | Path) -> bool:
    """Whether an import (:func:`importing`) is storing samples into this state directory now.

    Args:
        state_dir: the state directory.

    Returns:
        True while some process holds ``STATE/import.lock``; False when none does, the file is
        absent or cannot be opened.
    """
    return lock_held(Path(state_dir) / IMPORT_LOCK_NAME)


def lock_held(path: str | Path) -> bool:
    """Whether some process holds an ``flock`` (shared or exclusive) on ``path``, probed without
    waiting and released at once.

    Args:
        path: the lock file.

    Returns:
        True while one is held; False when none is, the file is absent or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
