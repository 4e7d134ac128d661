"""SQLite's one write lock, shared by the daemon and its web processes, with the web going first.

SQLite lets one connection write at a time. Between processes its busy handler sleeps 1, 2, 5 … up to
100 ms between tries, so a commit of a few milliseconds in one process can cost another up to 100 ms;
and the daemon's two workers, handing the lock to each other, can keep a web process waiting for
several of their transactions in a row while customers wait for their "thank you" page.

So writers look for the lock every half to two milliseconds, and a web process (``first=True``)
raises a flag — one byte of a small shared file next to the database — while it waits. Other
writers hold back while a flag is up, for at most ``YIELD_SECONDS`` per transaction, so the web's
short commits (answers committed as jobs) go first and the daemon still gets its turn in a burst.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import time
from pathlib import Path

#: How long a writer waits for the lock in all, and how often it looks.
WAIT_SECONDS = 30.0
POLL_SECONDS = (0.0005, 0.002)
#: The longest a daemon's write transaction holds back for waiting web processes.
YIELD_SECONDS = 0.05
SLOTS = 256


class WriteTurn:
    def __init__(
        self,
        database: Path,
        *,
        first: bool = False,
        wait_seconds: float = WAIT_SECONDS,
        yield_seconds: float = YIELD_SECONDS,
    ) -> None:
        path = database.with_name(database.name + "-writers")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SLOTS:
                os.ftruncate(fd, SLOTS)
            self._flags = mmap.mmap(fd, SLOTS)
        finally:
            os.close(fd)
        self.first = first
        self.wait_seconds = wait_seconds
        self.yield_seconds = yield_seconds
        self._slot = os.getpid() % SLOTS

    def waiting(self) -> bool:
        """A web process is waiting for the lock."""
        return self._flags.find(b"\x01") >= 0

    def begin_immediate(self, raw: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` on ``raw`` (a connection whose busy_timeout we set to 0 meanwhile)."""
        raw.execute("PRAGMA busy_timeout=0")
        try:
            if self.first:
                self._flags[self._slot] = 1
            else:
                held_back = time.monotonic() + self.yield_seconds
                while self.waiting() and time.monotonic() < held_back:
                    time.sleep(POLL_SECONDS[0])
            deadline = time.monotonic() + self.wait_seconds
            poll = POLL_SECONDS[0]
            while True:
                try:
                    raw.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    message = str(exc)
                    if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                        raise
                time.sleep(poll)
                poll = min(poll * 2, POLL_SECONDS[1])
        finally:
            if self.first:
                self._flags[self._slot] = 0
            raw.execute("PRAGMA busy_timeout=30000")

    def close(self) -> None:
        self._flags.close()
