"""Group commit: many threads' small inserts committed together, each caller returning only once its
own row is committed.

A burst of survey answers is hundreds of one-row transactions a second. On SQLite each one waits its
turn for the single writer; here the first caller to arrive commits everything waiting, in one
transaction, and the callers that arrived meanwhile wait for that commit instead of for the lock.
Nothing is acknowledged before it is durable: an error fails every caller of that batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Connection

from nps_sync.store.db import Store

#: Writes a batch of rows in the given transaction.
Writer = Callable[[Connection, Sequence[Any]], None]


class GroupCommit:
    def __init__(self, store: Store, write: Writer, *, max_batch: int = 500) -> None:
        self.store = store
        self.write = write
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, Future[None]]] = []
        self._committing = False
        #: Callers that have not returned yet (waiting rows and the batch being committed).
        self.waiting = 0

    def submit(self, row: Any) -> None:
        """Write ``row``; returns once it is committed (raises what the commit raised)."""
        done: Future[None] = Future()
        with self._lock:
            self._pending.append((row, done))
            self.waiting += 1
            lead = not self._committing
            self._committing = True
        try:
            if lead:
                self._commit_all()
            done.result()
        finally:
            with self._lock:
                self.waiting -= 1

    def _commit_all(self) -> None:
        """The leader: commit what is waiting, again and again, until nothing is."""
        while True:
            with self._lock:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                if not batch:
                    self._committing = False
                    return
            try:
                with self.store.begin() as conn:
                    self.write(conn, [row for row, _ in batch])
            except BaseException as exc:  # every caller of the batch learns it failed
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)
