"""Back-pressure policies between the capture and inference threads.

A policy is an object chosen once at construction, not an ``if`` in the hot loop.
"""

from __future__ import annotations

import queue
import threading

CLOSED = object()  # sentinel: the producer is done


class DropOldest:
    """One-slot "latest frame" buffer: a new frame replaces an unconsumed one (counted)."""

    name = "drop_oldest"

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> None:
        """Offer a frame; replaces (and counts) an unconsumed one (never waits)."""
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def close(self) -> None:
        """Signal that no more frames will come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout_s: float | None = None):
        """Take the latest frame; ``CLOSED`` once closed and empty; ``None`` on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s):
                return None
            if self._item is None:
                return CLOSED
            item, self._item = self._item, None
            return item


class Block:
    """Bounded FIFO: the producer waits when full, so no frame is ever dropped."""

    name = "block"

    def __init__(self, maxsize: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> None:
        """Enqueue a frame, waiting while full (gives up once ``stop`` is set)."""
        while True:
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if stop is not None and stop.is_set():
                    return

    def close(self) -> None:
        """Signal that no more frames will come."""
        self._q.put(CLOSED)

    def get(self, timeout_s: float | None = None):
        """Take the next frame; ``CLOSED`` after close; ``None`` on timeout."""
        try:
            return self._q.get(timeout=timeout_s)
        except queue.Empty:
            return None


# INVARIANT: names here are the only valid values of runtime.back_pressure (plus "auto").
POLICIES = {"drop_oldest": DropOldest, "block": Block}


def make_buffer(policy: str, source_is_live: bool):
    """Build the buffer for a back-pressure policy.

    Args:
        policy: ``auto``, ``drop_oldest`` or ``block``.
        source_is_live: live cameras drop under ``auto``; files and folders block.

    Returns:
        A buffer with ``put``, ``get``, ``close`` and a ``dropped`` counter.

    Raises:
        ValueError: unknown policy.
    """
    if policy == "auto":
        policy = "drop_oldest" if source_is_live else "block"
    if policy not in POLICIES:
        raise ValueError(f"unknown back-pressure policy '{policy}' (use auto, {', '.join(POLICIES)})")
    return POLICIES[policy]()
