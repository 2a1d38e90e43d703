"""Whether a volume is mounted read-only, as Linux says it (the runtime's detect-only start,
``edgecl status``, a metrics scrape that cannot open its database)."""

from __future__ import annotations

import os
import re
from pathlib import Path

MOUNTS_FILE = Path("/proc/self/mounts")
"""Linux's list of this process's mounts (their options: ``ro``; ext4's ``emergency_ro``)."""


def volume_read_only(path: str | Path, mounts_text: str | None = None) -> bool:
    """Whether the volume holding ``path`` is read-only: its mount flag (``statvfs``), or the
    options of the mount that holds it in :data:`MOUNTS_FILE` (``ro``, or ``emergency_ro``,
    which ext4 sets after an I/O error with ``errors=remount-ro`` and ``statvfs`` does not
    report on recent kernels).

    Args:
        path: a path on the volume.
        mounts_text: the mounts list's text (default: read :data:`MOUNTS_FILE`).
    """
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    try:
        text = mounts_text if mounts_text is not None else MOUNTS_FILE.read_text()
    except OSError:
        return False
    real = os.path.realpath(path)
    best, options = "", ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, options = mount, fields[3]
    return bool({"ro", "emergency_ro"} & set(options.split(",")))
