"""The client-side limiter that keeps nps-sync inside HubSpot's rolling windows."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """At most ``calls`` per ``seconds``, rolling; ``acquire`` waits for a free slot.

    A slot is stamped again when its call finishes (``done``): HubSpot counts a call when it arrives,
    which is after we sent it, so stamping the answer's time keeps our window behind HubSpot's.
    """

    def __init__(self, calls: int, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.calls, self.seconds, self._sleep = calls, seconds, sleep
        self._slots: deque[list[float]] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> list[float]:
        """Take a slot (pass it to ``done``)."""
        with self._lock:
            while True:
                now = time.monotonic()
                while self._slots and self._slots[0][0] <= now - self.seconds:
                    self._slots.popleft()
                if len(self._slots) < self.calls:
                    slot = [now]
                    self._slots.append(slot)
                    return slot
                self._sleep(max(self._slots[0][0] + self.seconds - now, 0.001))

    def done(self, slot: list[float]) -> None:
        with self._lock:
            slot[0] = time.monotonic()
