"""Group commit: many threads' small inserts committed together, each caller returning only once its
own row is committed.

A burst of survey answers is hundreds of one-row transactions a second. On SQLite each one waits its
turn for the single writer; here the first caller to arrive commits everything waiting, in one
transaction, and the callers that arrived meanwhile wait for that commit instead of for the lock.
Nothing is acknowledged before it is durable: an error fails every caller of that batch (or, with
``isolate_failures``, only the callers whose rows fail again in a transaction of their own).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import structlog
from sqlalchemy import Connection

from nps_sync.store.db import Store

log = structlog.get_logger("nps_sync.store.group_commit")

#: Writes a batch of rows in the given transaction. It may return one result per row, in the rows'
#: order: each caller's ``submit`` returns its own.
Writer = Callable[[Connection, Sequence[Any]], Sequence[Any] | None]
#: Called by the committing thread after each commit with the batch's rows and results (a log line
#: per transaction instead of one per caller).
AfterCommit = Callable[[Sequence[Any], Sequence[Any]], None]


class GroupCommit:
    def __init__(
        self,
        store: Store,
        write: Writer,
        *,
        max_batch: int = 500,
        isolate_failures: bool = False,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.store = store
        self.write = write
        self.after_commit = after_commit
        self.max_batch = max_batch
        #: When a batch fails, commit its rows again one by one, so that one bad row fails only its
        #: own caller (for requests the sender may not retry, such as Twilio's status callbacks).
        self.isolate_failures = isolate_failures
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, Future[Any]]] = []
        self._committing = False
        #: Callers that have not returned yet (waiting rows and the batch being committed).
        self.waiting = 0

    @property
    def queued(self) -> int:
        """Rows waiting for the next batch (not yet taken by a committing leader)."""
        with self._lock:
            return len(self._pending)

    def submit(self, row: Any) -> Any:
        """Write ``row``; returns once it is committed, with the writer's result for it (None if the
        writer returns none). Raises what the commit raised."""
        done: Future[Any] = Future()
        with self._lock:
            self._pending.append((row, done))
            self.waiting += 1
            lead = not self._committing
            self._committing = True
        try:
            if lead:
                self._commit_all()
            return done.result()
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
                results = self._write([row for row, _ in batch])
            except BaseException as exc:
                if self.isolate_failures and len(batch) > 1 and isinstance(exc, Exception):
                    for row, done in batch:
                        self._commit_alone(row, done)
                else:  # every caller of the batch learns it failed
                    for _, done in batch:
                        done.set_exception(exc)
            else:
                for (_, done), result in zip(batch, results, strict=True):
                    done.set_result(result)

    def _write(self, rows: list[Any]) -> Sequence[Any]:
        with self.store.begin() as conn:
            results = self.write(conn, rows)
            if results is not None and len(results) != len(rows):
                raise ValueError(f"the writer returned {len(results)} results for {len(rows)} rows")
        done = [None] * len(rows) if results is None else results
        if self.after_commit is not None:
            try:
                self.after_commit(rows, done)
            except Exception as exc:  # committed all the same: the callers must not learn otherwise
                log.warning("group_commit.after_commit_failed", error=f"{type(exc).__name__}: {exc}")
        return done

    def _commit_alone(self, row: Any, done: Future[Any]) -> None:
        try:
            [result] = self._write([row])
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(result)
