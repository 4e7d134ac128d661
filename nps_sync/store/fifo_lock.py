"""A re-entrant lock that threads get in the order they asked for it.

``threading.RLock`` is not fair: the thread that releases it, or one that just arrived, often takes
it again before a thread that has waited for a while. Behind a burst of webhooks (each a short write
transaction) the daemon's workers then waited most of their time for SQLite's write turn, and the
CRM tasks they were to open waited with them. Here each waiter queues, and the releasing thread
hands the lock straight to the first of them.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class FifoRLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        #: Waiting threads, first come first: their ident and a lock held until it is their turn.
        self._waiting: deque[tuple[int, threading.Lock]] = deque()

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None:  # nobody waits either: the lock is handed on, never left free
                self._owner, self._depth = me, 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append((me, turn))
        try:
            turn.acquire()  # released by the thread that hands us the lock (owner and depth set by it)
        except BaseException:  # interrupted (a signal in the main thread): leave the queue or the lock
            with self._mutex:
                handed = self._owner == me
                if not handed:
                    self._waiting.remove((me, turn))
            if handed:
                self.release()
            raise

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if not self._waiting:
                self._owner = None
                return
            self._owner, turn = self._waiting.popleft()
            self._depth = 1
        turn.release()

    @property
    def waiting(self) -> int:
        """Threads queued for the lock."""
        with self._mutex:
            return len(self._waiting)

    def __enter__(self) -> FifoRLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
