"""Log lines that stay one line each: every edgecl process configures its logging here.

A value inside a message (a file name with a line break in it, a name a fleet device sent) used
to split its line in two: the second half read as a line of its own, with no time or level, to
a person and to a log shipper alike. Here the message's line breaks are written ``\\n`` and
``\\r``; a traceback attached to a record (``log.exception``) keeps its lines.
"""

from __future__ import annotations

import logging
from typing import TextIO


_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
             if chr(c) not in "\t\n\r"}
_BIDI = {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                      *range(0x2066, 0x206A))}
_SHOWN = str.maketrans({**_CONTROLS, **_BIDI, ord("\n"): "\\n", ord("\r"): "\\r"})


def one_line(message: str) -> str:
    """``message`` on one line a terminal shows as written: a line break inside it (a file
    name with a newline in it, a value typed with one) is shown as ``\\n``, so a line stays
    one line a script can read; other control characters (a terminal's escape sequences, which
    could clear the screen or recolour it) and the bidirectional marks, embeddings, overrides
    and isolates (U+202E reverses what follows it) are shown as ``\\x1b``, ``\\u202e``, ...

    Args:
        message: any text.

    Returns:
        The text with ``\\r\\n`` and ``\\n`` written as ``\\n``, ``\\r`` as ``\\r``, other
        C0 and C1 control characters but tab as ``\\xNN`` and bidirectional controls as
        ``\\uNNNN``.
    """
    return message.replace("\r\n", "\n").translate(_SHOWN)


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose formatted message (time, level, name and message) is
    one line (:func:`one_line`); an exception's or a stack's lines follow it as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  (logging's name)
        """The record's line, its line breaks escaped."""
        return one_line(super().formatMessage(record))


def basic_config(level: int, fmt: str, stream: TextIO | None = None) -> None:
    """``logging.basicConfig`` with one handler on ``stream`` (stderr by default) whose lines
    are :class:`OneLineFormatter`'s; like it, nothing is done where the root logger already
    has a handler. Below DEBUG, :data:`QUIET_LIBRARY_LOGGERS` log warnings and errors only.

    Args:
        level: the root logger's level (``logging.INFO``, ...).
        fmt: the line's ``%``-style format.
        stream: where the lines go.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    if level > logging.DEBUG:
        # torch's INFO lines ("FakeTensor cache stats: / cache_hits: 0", at a learner's exit)
        # mean nothing to an operator
        for name in QUIET_LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))


QUIET_LIBRARY_LOGGERS = ("torch",)
"""Libraries whose INFO lines are left out unless ``--log-level DEBUG``."""
