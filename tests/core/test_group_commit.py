"""Group commit: callers return only once their row is committed; rows arriving together share a
transaction; a failed commit fails every caller of its batch and commits none of its rows."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, event, select

from nps_sync.queue import enqueue_many
from nps_sync.store import schema
from nps_sync.store.db import Store
from nps_sync.store.group_commit import GroupCommit


def job_payloads(store: Store) -> list[int]:
    with store.read() as conn:
        return sorted(r.payload["n"] for r in conn.execute(select(schema.jobs.c.payload)))


def test_concurrent_callers_share_commits_and_each_returns_after_its_row_is_committed(
    sqlite_store: Store,
) -> None:
    commits: list[int] = []
    event.listen(sqlite_store.engine, "commit", lambda conn: commits.append(1))
    seen_after_return: list[bool] = []
    lock = threading.Lock()
    gate = threading.Barrier(40)
    group = GroupCommit(sqlite_store, lambda conn, rows: enqueue_many(conn, "answer", rows))

    def caller(n: int) -> None:
        gate.wait()
        group.submit({"n": n})
        committed = n in job_payloads(sqlite_store)  # read on another connection: committed
        with lock:
            seen_after_return.append(committed)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(40)]
    # Hold the writer while the callers arrive, so they queue up behind one leader.
    with sqlite_store.begin():
        for t in threads:
            t.start()
        while group.waiting < 40:  # a leader waits for the writer; the others wait for the leader
            threading.Event().wait(0.005)
    for t in threads:
        t.join(timeout=30)

    assert list(range(40)) == job_payloads(sqlite_store)
    assert [True] * 40 == seen_after_return
    # The holder's commit, then the 40 rows in at most two: the leader's first batch and the rest.
    assert len(commits) <= 3


def test_a_failed_commit_fails_every_caller_of_the_batch_and_keeps_none_of_its_rows(
    sqlite_store: Store,
) -> None:
    def write(conn: Connection, rows: Sequence[Any]) -> None:
        enqueue_many(conn, "answer", rows)
        if any(r["n"] == 3 for r in rows):
            raise RuntimeError("disk full")

    group = GroupCommit(sqlite_store, write)
    group.submit({"n": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        group.submit({"n": 3})
    group.submit({"n": 4})
    assert [1, 4] == job_payloads(sqlite_store)
