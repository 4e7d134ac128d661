"""The client-side limiter that keeps nps-sync inside HubSpot's rolling windows.

The window lives in shared memory, so the process that reads an audience's pages (``reader``) and
the daemon count their calls in one window: HubSpot counts the app's calls, not a process's.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

#: The stamp of a slot never used: older than any window.
_UNUSED = float("-inf")


class SlidingWindow:
    """At most ``calls`` per ``seconds``, rolling; ``acquire`` waits for a free slot.

    A slot is stamped again when its call finishes (``done``): HubSpot counts a call when it arrives,
    which is after we sent it, so stamping the answer's time keeps our window behind HubSpot's.

    The slots are a ring in shared memory, oldest first, behind a process-shared lock; the stamps are
    ``time.monotonic()``, which is one clock for every process on the machine. Pass the window to a
    child process as a ``Process`` argument.
    """

    def __init__(self, calls: int, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.calls, self.seconds, self._sleep = calls, seconds, sleep
        # The reader's processes are forked by a fork server; a lock must come from the same kind.
        ctx = multiprocessing.get_context("forkserver")
        self._stamps: Any = ctx.RawArray("d", [_UNUSED] * calls)
        # [0]: index of the oldest slot in use; [1]: slots in use.
        self._ring: Any = ctx.RawArray("i", 2)
        self._lock = ctx.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sleep"] = None  # a function of the parent's; the child sleeps with time.sleep
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._sleep is None:
            self._sleep = time.sleep

    def acquire(self) -> int:
        """Take a slot (pass it to ``done``)."""
        stamps, ring = self._stamps, self._ring
        with self._lock:
            while True:
                now = time.monotonic()
                while ring[1] and stamps[ring[0]] <= now - self.seconds:
                    ring[0] = (ring[0] + 1) % self.calls
                    ring[1] -= 1
                if ring[1] < self.calls:
                    slot = (ring[0] + ring[1]) % self.calls
                    stamps[slot] = now
                    ring[1] += 1
                    return int(slot)
                self._sleep(max(stamps[ring[0]] + self.seconds - now, 0.001))

    def done(self, slot: int) -> None:
        # A call that outlived the window may find its slot taken by a newer call: stamping it later
        # only makes the window more careful.
        with self._lock:
            self._stamps[slot] = time.monotonic()
