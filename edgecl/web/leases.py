"""Which queued frames a Label page has open, so that two consoles do not label the same frame.

Each Label page (a browser tab) names itself with a random console id and says which frame it
shows (``POST /api/labels/{id}/open?console=ID``) when it opens it and again while it stays
open; a claim lasts :data:`LEASE_S` after its last renewal. The queue then marks that frame
``open_elsewhere`` for every other console, and a page that picks its next frame itself takes
the first one no other console has open. When two consoles open the same frame, the one that
opened it first keeps it. It is advice, not a lock: an operator may still answer a frame open
elsewhere (the second answer gets 409, as before). Claims live in the server's memory only: a
restart forgets them, as they would have expired within :data:`LEASE_S` anyway.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

LEASE_S = 30.0
"""Seconds a claim lasts after its last renewal (a page renews it every few seconds while it is
shown; a closed or hidden tab stops)."""
MAX_CONSOLES = 256
"""Most consoles remembered at once; beyond it a new console's claim is not recorded until
one lapses (forgetting the least recently seen instead let a burst of new ids wipe the claims
of the operators at work, who renew theirs)."""


@dataclass
class _Claim:
    item_id: str
    since_s: float
    seen_s: float


class OpenItems:
    """The frame each console has open (thread-safe; the server's worker threads share it).

    Args:
        lease_s: seconds a claim lasts after its last renewal.
        clock: monotonic clock in seconds.
        max_consoles: most consoles remembered at once.
    """

    def __init__(self, lease_s: float = LEASE_S, clock: Callable[[], float] = time.monotonic,
                 max_consoles: int = MAX_CONSOLES):
        self.lease_s = float(lease_s)
        self.clock = clock
        self.max_consoles = max(1, int(max_consoles))
        self._claims: dict[str, _Claim] = {}
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        for console in [c for c, claim in self._claims.items() if now - claim.seen_s > self.lease_s]:
            del self._claims[console]

    def _first(self, item_id: str) -> str | None:
        """The console that has held ``item_id`` longest (ties: the smaller id)."""
        holders = [(claim.since_s, console) for console, claim in self._claims.items()
                   if claim.item_id == item_id]
        return min(holders)[1] if holders else None

    def open(self, item_id: str, console: str) -> bool:
        """Record that ``console`` shows ``item_id`` (a console shows one frame at a time).

        Args:
            item_id: the queued frame's id.
            console: the page's console id.

        Returns:
            True when another console opened the frame earlier and still has it open (a
            console that finds :data:`MAX_CONSOLES` others claiming is told so, unrecorded).
        """
        with self._lock:
            now = self.clock()
            self._prune(now)
            claim = self._claims.get(console)
            if claim is not None and claim.item_id == item_id:
                claim.seen_s = now
            elif claim is not None or len(self._claims) < self.max_consoles:
                self._claims[console] = _Claim(item_id, now, now)
            return self._first(item_id) not in (console, None)

    def close(self, item_id: str) -> None:
        """Forget every claim on ``item_id`` (it was answered or skipped)."""
        with self._lock:
            for console in [c for c, claim in self._claims.items() if claim.item_id == item_id]:
                del self._claims[console]

    def open_elsewhere(self, console: str | None = None) -> set[str]:
        """The frames another console has open (for ``console``: those it does not hold first).

        Args:
            console: the asking page's console id; ``None``: every frame open anywhere.

        Returns:
            Item ids.
        """
        with self._lock:
            self._prune(self.clock())
            items = {claim.item_id for claim in self._claims.values()}
            return {item for item in items if self._first(item) != console}
