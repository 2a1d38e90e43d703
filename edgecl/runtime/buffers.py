"""Back-pressure policies between the capture and inference threads.

A policy is an object chosen once at construction, not an ``if`` in the hot loop.
"""

from __future__ import annotations

import collections
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

    def put(self, item, stop: threading.Event | None = None) -> bool:
        """Offer a frame; replaces (and counts) an unconsumed one (never waits).

        Returns:
            ``False`` (frame discarded) once the buffer is closed, else ``True``.
        """
        with self._cond:
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return True

    def close(self) -> None:
        """Signal that no more frames will come (idempotent; never waits)."""
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
    """Bounded FIFO: the producer waits while it is full, so no frame is ever dropped.

    :meth:`close` never waits (either side may call it: the producer at the end of the stream,
    the loop at shutdown) and wakes a producer waiting in :meth:`put`, whose frame is then
    discarded. Frames already queued are still delivered before ``CLOSED``.

    Args:
        maxsize: most frames held.
    """

    name = "block"

    def __init__(self, maxsize: int = 4):
        self.maxsize = maxsize
        self._cond = threading.Condition()
        self._items: collections.deque = collections.deque()
        self._closed = False
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> bool:
        """Enqueue a frame, waiting while full.

        Args:
            item: the frame.
            stop: gives up (discarding the frame) once set; checked every 0.1 s.

        Returns:
            ``True`` when queued; ``False`` when discarded because of ``stop`` or :meth:`close`.
        """
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.1)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """Signal that no more frames will come (idempotent; never waits)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout_s: float | None = None):
        """Take the next frame; ``CLOSED`` once closed and empty; ``None`` on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout_s):
                return None
            if not self._items:
                return CLOSED
            item = self._items.popleft()
            self._cond.notify_all()
            return item


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
