"""The server's global model on disk: a restarted server resumes from its last round.

Layout (``STATE/fleet``; every file written through :mod:`edgecl.atomic`)::

    global-NNNNNN.npz  the global model of round N (float32 arrays by state-dict key)
    global.json        {"round": N, "names": [...], "arch": {...}, "file": "global-NNNNNN.npz",
                        "npz_sha256": ...}
    rounds.jsonl       one JSON line per finished round (the server's log, as data)

The commit point of a save is the replacement of ``global.json``: the new npz is written
first under its own name, the pointer then names it, and only then is the old npz deleted, so a
kill at any moment leaves a pointer naming an intact npz (checked by its sha256 when loaded).

``arch`` is the global model's ultralytics model yaml (a dict, see
:func:`edgecl.fleet.weights.model_arch`): a restarted server sends devices the architecture the
fleet started with. A pointer without it (saved before it was kept) stands for yolo11n, the only
architecture fleets had then.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


class GlobalStore:
    """Load and save the fleet's global model.

    Args:
        root: the directory (created on the first save).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def save(self, round_no: int, arrays: dict[str, np.ndarray], names: list[str],
             arch: dict | None = None) -> None:
        """Save the global model of a finished round, atomically.

        Args:
            round_no: the round that produced it.
            arrays: key -> array.
            names: the global class list.
            arch: the model's architecture (model yaml dict; ``None``: the default yolo11n).

        Raises:
            OSError: the disk is full or the directory is not writable (the previous model
                stays readable).
        """
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
        data = buf.getvalue()
        npz = self.root / f"global-{round_no:06d}.npz"
        atomic_write_bytes(npz, data)
        atomic_write_json(self.root / "global.json",
                          {"round": int(round_no), "names": list(names), "file": npz.name,
                           "npz_sha256": hashlib.sha256(data).hexdigest(),
                           "saved_s": round(time.time(), 3),
                           **({"arch": arch} if arch is not None else {})})
        for old in self.root.glob("global-*.npz"):
            if old.name != npz.name:
                old.unlink(missing_ok=True)
        # a save killed half-way (kill -9, power) left its temporary file: 10 MB each time;
        # the server is this folder's one writer (its lock), so none of them is in use
        for stale in self.root.glob(".global*.tmp"):
            stale.unlink(missing_ok=True)

    def load(self, *, with_arch: bool = False) -> tuple | None:
        """Load the last saved global model.

        Args:
            with_arch: also return the model's architecture.

        Returns:
            ``(round, arrays, names)``, or ``(round, arrays, names, arch)`` with ``with_arch``
            (``arch`` ``None`` for a model saved without one: yolo11n); ``None`` when nothing
            (intact) was saved.
        """
        loaded, problem = self._read()
        if problem:
            log.error("fleet global model in %s: %s", self.root, problem)
        if loaded is None or with_arch:
            return loaded
        return loaded[:3]

    def problem(self) -> str | None:
        """Why the saved global model cannot be loaded, or None (intact, or nothing saved)."""
        return self._read()[1]

    def _read(self) -> tuple[tuple | None, str | None]:
        meta_path = self.root / "global.json"
        if not meta_path.is_file():
            # a model file without its pointer (a card fault, a hand's 'rm'): the fleet's model
            # is there, unnamed; before, the server started the fleet afresh and deleted it
            saved = sorted(self.root.glob("global-*.npz")) if self.root.is_dir() else []
            if saved:
                return None, f"global.json is missing beside {saved[-1].name}"
            return None, None
        try:
            meta = json.loads(meta_path.read_text())
            data = (self.root / meta["file"]).read_bytes()
            round_no, names = int(meta["round"]), [str(n) for n in meta.get("names", [])]
            arch = meta.get("arch")
            if arch is not None and not (isinstance(arch, dict) and "head" in arch):
                raise ValueError(f"its arch is not a model yaml ({str(arch)[:60]!r})")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            return None, f"global.json or the model it names is unreadable ({exc})"
        if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            return None, f"{meta['file']} fails its checksum"
        try:
            with np.load(io.BytesIO(data)) as npz:
                arrays = {k: npz[k].astype(np.float32) for k in npz.files}
        except (OSError, ValueError) as exc:
            return None, f"{meta['file']} is not a model ({exc})"
        return (round_no, arrays, names, arch), None

    def append_round(self, record: dict) -> None:
        """Append one round's record to ``rounds.jsonl`` (fsynced; a torn last line is skipped
        by :meth:`rounds`, and ended before the record so that it does not take the record
        with it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "rounds.jsonl", "a+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            torn = end > 0 and fh.seek(end - 1) >= 0 and fh.read(1) != b"\n"
            line = json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"
            fh.write(b"\n" + line if torn else line)
            fh.flush()
            os.fsync(fh.fileno())

    def last_round(self) -> int:
        """The number of the last round the log records (0 for none), whether or not it
        produced a global model: a restarted server numbers its rounds on from it."""
        numbers = [r["round"] for r in self.rounds()
                   if isinstance(r.get("round"), int) and not isinstance(r.get("round"), bool)]
        return max(numbers, default=0)

    def rounds(self) -> list[dict]:
        """The recorded rounds, oldest first (unparsable lines skipped; a round written twice,
        when its model was saved and when it was complete, counts once, as last written)."""
        path = self.root / "rounds.jsonl"
        if not path.is_file():
            return []
        out: dict = {}
        text = path.read_bytes().decode("utf-8", errors="replace")  # a card fault: lines skipped
        for i, line in enumerate(text.splitlines()):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            # a round is written when its model is saved, then again complete: the last wins
            key = record.get("round")
            out[key if isinstance(key, int) and not isinstance(key, bool) else ("line", i)] = record
        return list(out.values())
