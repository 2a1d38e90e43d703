"""What a device's clock and boot can be trusted for: a board without a battery boots at 1970
(or its image's build date) until NTP or GPS sets the wall clock, and a reboot gives its pids
to other programs. Durations are measured on ``time.monotonic()``; what happened before this
boot is told apart by the boot's id."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path

CLOCK_SET_S = 1_704_067_200.0
"""2024-01-01 UTC: a wall clock before it has not been set yet (a board without a battery
boots at 1970 or at its image's build date, until NTP or GPS sets it)."""

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
"""Linux's id of the running boot (a new random UUID at every boot)."""


@functools.lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot's id (Linux's :data:`BOOT_ID_PATH`), or "" where none is known (read once).

    Returns:
        The id as Linux writes it (``8f2c...-...``), or "".
    """
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def boot_tag() -> str:
    """The first 8 hex digits of :func:`boot_id` (a name's mark of the boot that made it), or
    "" where none is known."""
    return boot_id().replace("-", "")[:8].lower()


def iso_time(ts_s: float) -> str:
    """A time in seconds since the epoch as :func:`now_iso` writes times
    (``2026-12-03T06:39:39+00:00``).

    Args:
        ts_s: seconds since the epoch (wall clock).

    Returns:
        RFC 3339 in UTC, to the second.
    """
    return datetime.fromtimestamp(float(ts_s), timezone.utc).isoformat(timespec="seconds")


def now_iso() -> str:
    """The time now as RFC 3339 in UTC, to the second (``2026-12-03T06:39:39+00:00``): the one
    form of the times edgecl writes into its state (manifests, the class registry)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
