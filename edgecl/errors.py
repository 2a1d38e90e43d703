"""Exceptions with one-line, user-facing messages, and the one-line form of a storage fault
(:func:`storage_fault`, :func:`storage_faults`)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator


class EdgeclError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero."""


class ConfigError(EdgeclError):
    """A configuration file or override is invalid."""


class SourceError(EdgeclError):
    """A frame source cannot be opened (bad URI, missing path, unknown scheme)."""


class ModelLoadError(EdgeclError):
    """A model file is missing, corrupt or cannot be loaded by its backend."""


class RegistryError(EdgeclError):
    """The model registry refused an operation (unknown version, bad manifest)."""


class ReplayMemoryError(EdgeclError):
    """The replay memory refused a sample or found damage it could not repair."""


class SampleTooLargeError(ReplayMemoryError):
    """A sample needs more bytes on disk than the replay memory's budget for one sample (a 4K
    frame under a small ``memory.max_bytes``): its labels are fine, the frame does not fit."""


class LabelError(EdgeclError):
    """A label file or label row is malformed."""


def did_you_mean(name: str, choices, cutoff: float = 0.6) -> str:
    """A ``; did you mean 'X'?`` hint naming the closest valid choice (empty when none is close).

    Args:
        name: what the user wrote.
        choices: the valid names.
        cutoff: similarity threshold of :func:`difflib.get_close_matches` (0 always finds one).

    Returns:
        The hint, ready to append to a one-line error message.
    """
    import difflib

    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean '{match[0]}'?" if match else ""


class NotFoundError(EdgeclError):
    """An id (queue item, version, class) names nothing that exists (HTTP 404)."""


class ConflictError(EdgeclError):
    """The operation conflicts with the current state, e.g. an item already answered (HTTP 409)."""


class NothingToRollBackError(RegistryError, ConflictError):
    """No earlier intact version to roll back to: the registry's state forbids it (HTTP 409)."""


class UnavailableError(EdgeclError):
    """The device cannot do this now (e.g. its runtime is stopping); the same request works once
    it runs again (HTTP 503)."""


class StorageError(EdgeclError):
    """The state directory cannot be written (read-only, full disk)."""


# errno values that mean "the disk or the directory refused", not "the data is damaged" (also
# the replay memory's, edgecl.continual.memory.faults)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EIO, errno.EFBIG})
# of those, the ones that deleting files cures (the disk or the quota is full)
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def json_problem(exc) -> str:
    """Where and what is wrong in a JSON text, from a ``json.JSONDecodeError``.

    Returns:
        e.g. ``"Unterminated string starting at line 4 column 12"`` (the decoder's messages
        that end in "at" are not followed by "at" twice).
    """
    msg = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg
    return f"{msg} at line {exc.lineno} column {exc.colno}"


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
"""Byte-order marks of UTF-16 text (little and big endian)."""


def encoding_problem(exc: UnicodeDecodeError) -> str:
    """Why a file's bytes are not UTF-8 text, in a few words: UTF-16 named as such (what Windows
    Notepad saves as "Unicode"; a byte-order mark, or a NUL byte among the first two), else the
    byte that breaks.

    Args:
        exc: the error of decoding the file's bytes as UTF-8.

    Returns:
        ``"not UTF-8 but UTF-16 text: save it as UTF-8"`` or ``"not UTF-8 text (byte N:
        reason)"``.
    """
    head = bytes(exc.object[:2]) if isinstance(exc.object, (bytes, bytearray)) else b""
    if head.startswith(UTF16_BOMS) or b"\x00" in head:
        return "not UTF-8 but UTF-16 text: save it as UTF-8"
    return f"not UTF-8 text (byte {exc.start}: {exc.reason})"


YAML_MAX_KEY_CHARS = 1024
"""The longest plain key YAML 1.1 (and PyYAML) allows."""


def yaml_problem(exc: BaseException) -> str:
    """What a YAML parser's error says, in one line, to append to the file's name: ``" at line
    3: found character '\\t' that cannot start any token"`` (PyYAML's own first line, "while
    scanning for the next token", names neither), or ``": <first line>"`` for an error without
    a position.

    Args:
        exc: the error (a ``yaml.YAMLError``, or any other).

    Returns:
        The text, starting with its separator.
    """
    if isinstance(exc, UnicodeDecodeError):
        return ": " + encoding_problem(exc)
    if isinstance(exc, OSError) and exc.strerror:  # e.g. "a named pipe (FIFO), not a regular file"
        return ": " + exc.strerror
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        if problem == "mapping values are not allowed here" and mark.column > YAML_MAX_KEY_CHARS:
            # PyYAML's wording for a key too long to be one: it names neither the key nor why
            return (f" at line {mark.line + 1}: a key longer than {YAML_MAX_KEY_CHARS} "
                    f"characters, which YAML does not allow")
        context, opened = getattr(exc, "context", None) or "", getattr(exc, "context_mark", None)
        if ("quoted scalar" in context and opened is not None
                and ("end of stream" in problem or "document separator" in problem)):
            # PyYAML names where it gave up (the end of the file, for a quote never closed),
            # not the line where the quote opens
            return (f" at line {opened.line + 1}: a quoted value is never closed "
                    f"({problem} at line {mark.line + 1})")
        return f" at line {mark.line + 1}: {problem}"
    return ": " + (str(exc).splitlines() or [type(exc).__name__])[0]


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is an OSError saying the disk (or the quota) is full.

    Args:
        exc: the error raised.

    Returns:
        Whether freeing space would cure it.
    """
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def is_storage_error(exc: BaseException) -> bool:
    """True when ``exc`` is a :class:`StorageError` or an OSError meaning a full disk or an
    unwritable file or directory (see :func:`storage_fault`).

    Args:
        exc: the error raised.

    Returns:
        Whether the state directory, not the data or the code, is at fault.
    """
    return isinstance(exc, StorageError) or (isinstance(exc, OSError)
                                             and exc.errno in STORAGE_ERRNOS)


def storage_fault(exc: BaseException, what: str, where: object = "") -> StorageError | None:
    """The one-line :class:`StorageError` for an OSError that means a full disk or an
    unwritable file or directory.

    Args:
        exc: the error raised.
        what: what was being done, e.g. ``"cannot stage a model version"``.
        where: the path to name when the error names none.

    Returns:
        ``"<what>: <reason> (<path>)"`` as a StorageError (``exc`` itself when it is one), or
        ``None`` for anything else (damage, a bug): the caller lets that propagate.
    """
    if isinstance(exc, StorageError):
        return exc
    if not is_storage_error(exc):
        return None
    # a copy names its destination second ('src' -> 'dst'): that is where the room was missing
    at = getattr(exc, "filename2", None) or exc.filename or where
    return StorageError(f"{what}: {exc.strerror or exc}" + (f" ({at})" if at else ""))


@contextlib.contextmanager
def storage_faults(what: str, where: object = "") -> Iterator[None]:
    """Raise a storage fault met inside the block as one :class:`StorageError` line (see
    :func:`storage_fault`); any other error propagates unchanged.

    Args:
        what: what the block does, e.g. ``"cannot export the candidate model"``.
        where: the path to name when the error names none.

    Raises:
        StorageError: the disk is full or the file or directory cannot be written.
    """
    try:
        yield
    except OSError as exc:
        fault = storage_fault(exc, what, where)
        if fault is None:
            raise
        raise fault from exc


def misplaced_path(exc: OSError) -> str | None:
    """Where an OSError comes from a file that stands where a folder belongs, or the reverse
    (``EEXIST`` or ``ENOTDIR`` on a path with a file on the way; ``EISDIR``), which path it is.

    Args:
        exc: the error.

    Returns:
        E.g. ``"D/memory/images is a file where a folder belongs (move it aside)"`` (the system
        says ``File exists`` or ``Not a directory``), or ``None``.
    """
    from pathlib import Path

    name = exc.filename
    if name is None:
        return None
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        path = Path(name)
        for candidate in (path, *path.parents):
            if candidate.is_file():
                return f"{candidate} is a file where a folder belongs (move it aside)"
            if candidate.exists() and not candidate.is_dir():  # a device, a pipe, a socket
                return f"{candidate} is not a folder (a device or a pipe)"
    if exc.errno == errno.EISDIR and Path(name).is_dir():
        return f"{name} is a folder where a file belongs (move it aside)"
    return None


def link_problem(path: object) -> str | None:
    """Why ``path`` cannot be reached when a symbolic link on the way loops or leads nowhere (a
    card not mounted): the first such link, from the top down, in one line; None otherwise.

    Args:
        path: the path as the user gave it.

    Returns:
        E.g. ``"loop1 is a symbolic link that loops (following it never ends at a file or
        folder)"``, ``"data is a symbolic link to /mnt/usb/data, which does not exist
        (unmounted?)"``, ``"card/ds: card is a symbolic link to ..."`` (a link on the way), or
        None.
    """
    from pathlib import Path

    broken = broken_link(path)
    if broken is None:
        return None
    step, why = broken
    where = "" if step == Path(str(path)) else f"{path}: "
    return f"{where}{step} is {why}"


def broken_link(path: object):
    """The first symbolic link on ``path``, from the top down, that loops or leads nowhere,
    with why in words (the one rule of :func:`link_problem` and
    :func:`edgecl.input_files.missing_file_why`).

    Args:
        path: the path as the user gave it.

    Returns:
        ``(that link's path, "a symbolic link that loops (...)" or "a symbolic link to X,
        which does not exist (unmounted?)")``, or None.
    """
    import os
    from pathlib import Path

    given = Path(str(path))
    for step in (*reversed(given.parents), given):
        try:
            os.stat(step)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return step, ("a symbolic link that loops (following it never ends at a file "
                              "or folder)")
            if os.path.islink(step):
                return step, (f"a symbolic link to {os.path.realpath(step)}, which does not "
                              f"exist (unmounted?)")
            return None
    return None


def special_file_problem(path: object) -> str | None:
    """Why a file path that is no regular file cannot be read as one, in one line: a link that
    loops or leads nowhere (:func:`link_problem`), or a FIFO, a device or a socket; None for a
    regular file, a folder or a path that does not exist.

    Args:
        path: the path as the user gave it.
    """
    import os

    why = link_problem(path)
    if why:
        return why
    if os.path.exists(str(path)) and not os.path.isdir(str(path)) and not os.path.isfile(str(path)):
        return f"{path} is not a regular file (a FIFO, a device or a socket)"
    return None


def missing_path(path: object) -> str:
    """Why a path that ``Path.exists()`` calls absent cannot be opened, in one line:
    :func:`link_problem`'s words for a link that loops or leads nowhere, else ``"no such file or
    directory: PATH"``.

    Args:
        path: the path as the user gave it.
    """
    return link_problem(path) or f"no such file or directory: {path}"


def file_as_state_dir(path: object) -> str:
    """The one-line error for a file standing where the state directory belongs (a model or a
    config given as ``--state-dir``)."""
    return (f"{path} is a file where a folder belongs (the state directory; check --state-dir, "
            f"or state_dir in the config)")


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError a command met on a path: :func:`misplaced_path`'s words where
    they apply, else the system's words and the path.

    Args:
        exc: the error.

    Returns:
        E.g. ``"No such file or directory: x.yaml"``.
    """
    return misplaced_path(exc) or (f"{exc.strerror or exc}"
                                   f"{f': {exc.filename}' if exc.filename is not None else ''}")
