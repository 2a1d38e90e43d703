"""Reading the files users bring, bounded: labels, images, dataset and task files, certificates.

Every whole-file read of a file a user names (or a dataset holds) goes through
:func:`read_input_bytes`, which

* opens without blocking: a named pipe with no writer would otherwise hang the command for ever;
* refuses what is not a regular file (a named pipe, a device such as ``/dev/zero`` or
  ``/dev/urandom``, a socket), which has no end to read up to;
* refuses a file over the size bound of its kind before reading a byte, and stops reading at
  the bound (a file that grows while it is read): a 2 GiB sparse label file or a 6 GB ``.jpg``
  cost the machine's whole memory before.

Its errors are :class:`InputFileError`, an :class:`OSError` whose ``strerror`` says what is
wrong in words, so the callers' existing ``except OSError`` paths report and skip the file as
they do a missing or unreadable one.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MiB = 1024 * 1024

MAX_LABEL_BYTES = 16 * MiB
"""A YOLO label file (16 MiB: some 400,000 boxes) or a VOC annotation."""
MAX_IMAGE_BYTES = 512 * MiB
"""An image file: what the largest image edgecl decodes (:data:`edgecl.data.images.MAX_PIXELS`,
64 megapixels) takes uncompressed at 16 bits in 4 channels."""
MAX_DATA_FILE_BYTES = 16 * MiB
"""A ``data.yaml``, ``tasks.yaml``, model ``.yaml`` or ``classes.txt``: text a person writes."""
MAX_LIST_BYTES = 256 * MiB
"""An image list (``train.txt``): a million paths of 250 bytes."""
MAX_JSON_BYTES = 1024 * MiB
"""A COCO annotation file (COCO's own train set is 450 MB)."""
MAX_PEM_BYTES = 1 * MiB
"""A PEM certificate (chain) or private key."""
MAX_MODEL_BYTES = 4096 * MiB
"""A model file read whole (a TensorRT ``.engine``): a detector's engine takes tens to a few
hundred MB; a 50 GB file is no engine."""


class InputFileError(OSError):
    """A user's file that is no regular file, or larger than its kind can be (``strerror``
    says which, in words; ``filename`` names it)."""


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words (``a named pipe (FIFO)``, ``a device``,
    ``a socket``, ``a folder``).

    Args:
        mode: its ``st_mode``.
    """
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a plain file"


def size_text(n_bytes: int) -> str:
    """Bytes in the largest unit that keeps the figure at least 1 (``6.0 GiB``, ``300 bytes``)."""
    value = float(n_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def read_input_bytes(path: str | os.PathLike, max_bytes: int, what: str) -> bytes:
    """Read a user's file whole: a regular file of at most ``max_bytes``.

    Args:
        path: the file (a link is followed).
        max_bytes: the most it may hold.
        what: what such a file is, for the message (``"a label file"``).

    Returns:
        Its bytes.

    Raises:
        InputFileError: not a regular file (``"a named pipe (FIFO), not a regular file"``), or over
            ``max_bytes`` (``"6.0 GiB, more than an image file can be (512.0 MiB)"``), also
            when it grew past it while read.
        OSError: it cannot be opened or read (missing, no permission, a loop of links).
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(errno.EINVAL, f"{file_kind(info.st_mode)}, not a regular file "
                                 f"({what} must be one)", os.fspath(path))
        if info.st_size > max_bytes:
            raise _too_large(path, info.st_size, max_bytes, what)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = fh.read(min(max_bytes + 1 - total, 16 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if total > max_bytes:  # grew while read
        raise _too_large(path, total, max_bytes, what, growing=True)
    return b"".join(chunks)


def read_input_text(path: str | os.PathLike, max_bytes: int, what: str,
                    encoding: str = "utf-8") -> str:
    """:func:`read_input_bytes`, decoded.

    Raises:
        InputFileError, OSError: as :func:`read_input_bytes`.
        UnicodeDecodeError: not text in ``encoding``.
    """
    return read_input_bytes(path, max_bytes, what).decode(encoding)


def read_data_file(path: str | os.PathLike, what: str = "a dataset or task file") -> str:
    """A ``data.yaml``, ``tasks.yaml``, model ``.yaml`` or ``classes.txt`` as text (UTF-8, a
    byte-order mark dropped), at most :data:`MAX_DATA_FILE_BYTES`.

    Raises:
        InputFileError, OSError, UnicodeDecodeError: as :func:`read_input_text`.
    """
    return read_input_text(path, MAX_DATA_FILE_BYTES, what, "utf-8-sig")


def label_bytes_for_hash(path: str | os.PathLike) -> bytes:
    """A label file's bytes for a cache key: the file's (bounded, as a label file is read), or
    a marker saying why there are none (missing: ``<none>``; a pipe, a device, too large or
    unreadable: its reason), so that hashing a dataset never reads what a reader refuses.

    Args:
        path: the label file.
    """
    try:
        return read_input_bytes(path, MAX_LABEL_BYTES, "a label file")
    except FileNotFoundError:
        return b"<none>"
    except OSError as exc:
        return f"<unreadable: {exc.strerror or exc}>".encode()


def _too_large(path, size: int, max_bytes: int, what: str, growing: bool = False) -> InputFileError:
    grew = " (it grew while it was read)" if growing else ""
    shown, bound = size_text(size), size_text(max_bytes)
    if shown == bound:  # '1.0 MiB, more than ... (1.0 MiB)': in bytes, which differ
        shown, bound = f"{size:,} bytes", f"{max_bytes:,} bytes"
    return InputFileError(errno.EFBIG, f"{'over ' if growing else ''}{shown}, more than "
                          f"{what} can be ({bound}){grew}", os.fspath(path))


def regular_file_problem(path: str | os.PathLike, folder_ok: bool = False) -> str | None:
    """Why ``path`` is not a regular file one can read whole (``"a named pipe (FIFO), not a
    regular file"``), or None for a regular file; a missing path is None (the caller says it is
    missing its own way). Never blocks and reads nothing.

    Args:
        path: the file (a link is followed).
        folder_ok: a folder is None too (where one is another valid answer: a dataset folder,
            or a name the caller looks up in it); only pipes, devices and sockets are named.
    """
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
        return None
    return f"{file_kind(mode)}, not a regular file"


def missing_file_why(path: str | os.PathLike) -> str:
    """Why a file looked for is not there to read, in words: ``"not found"``, or what stands in
    its place (``"a named pipe (FIFO), not a regular file"``, ``"a folder, not a regular
    file"``, a link that leads nowhere): before, a pipe or a dangling link where a label, an
    image or a ``tasks.yaml`` belonged was called missing. Never blocks and reads nothing.

    Args:
        path: the file (a link is followed; one that loops or leads nowhere is said so, by
            :func:`edgecl.errors.broken_link`'s rule).
    """
    from edgecl.errors import broken_link

    try:
        broken = broken_link(path)
        if broken is not None and broken[0] == Path(os.fspath(path)):  # the file itself
            return broken[1]
        return regular_file_problem(path) or "not found"
    except ValueError:  # a NUL byte in a name built from a file's text
        return "not found"
