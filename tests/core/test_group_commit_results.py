"""Group commit, the additions for provider events: each caller gets the writer's result for its own
row, the committing thread reports each committed batch once, and with ``isolate_failures`` a row that
cannot be written fails only its own caller."""

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
from tests.e2e.daemon import wait_for


def job_payloads(store: Store) -> list[int]:
    with store.read() as conn:
        return sorted(r.payload["n"] for r in conn.execute(select(schema.jobs.c.payload)))


def write_jobs(conn: Connection, rows: Sequence[Any]) -> list[int]:
    """Enqueue the rows; fails the whole batch when a row asks for it. Each row's result: n * 10."""
    enqueue_many(conn, "answer", rows)
    if any(r.get("broken") for r in rows):
        raise RuntimeError("disk full")
    return [r["n"] * 10 for r in rows]


def run_together(store: Store, group: GroupCommit, rows: list[dict[str, Any]]) -> dict[int, Any]:
    """Submit ``rows[0]`` alone (it leads, with a batch of one, and waits for the writer), then the
    others, which queue behind it and are committed together. Returns n → result or exception."""
    out: dict[int, Any] = {}
    lock = threading.Lock()

    def caller(row: dict[str, Any]) -> None:
        try:
            result: Any = group.submit(row)
        except Exception as exc:
            result = exc
        with lock:
            out[row["n"]] = result

    threads = [threading.Thread(target=caller, args=(row,)) for row in rows]
    with store.begin():  # hold the writer
        threads[0].start()
        wait_for(lambda: group.waiting == 1 and group.queued == 0, what="the first caller to lead")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: group.queued == len(rows) - 1, what="the others queued behind it")
    for t in threads:
        t.join(timeout=30)
    return out


def test_each_caller_gets_the_writers_result_for_its_own_row_and_each_commit_is_reported_once(
    sqlite_store: Store,
) -> None:
    reported: list[tuple[list[int], list[int]]] = []
    group = GroupCommit(
        sqlite_store,
        write_jobs,
        after_commit=lambda rows, results: reported.append(([r["n"] for r in rows], list(results))),
    )

    out = run_together(sqlite_store, group, [{"n": n} for n in range(6)])

    assert {n: n * 10 for n in range(6)} == out
    assert [([0], [0]), ([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])] == reported
    assert list(range(6)) == job_payloads(sqlite_store)


def test_with_isolated_failures_a_bad_row_fails_only_its_caller_and_the_rest_are_committed(
    sqlite_store: Store,
) -> None:
    commits: list[int] = []
    event.listen(sqlite_store.engine, "commit", lambda conn: commits.append(1))
    group = GroupCommit(sqlite_store, write_jobs, isolate_failures=True)
    rows: list[dict[str, Any]] = [{"n": 0}, {"n": 1}, {"n": 2, "broken": True}, {"n": 3}]

    out = run_together(sqlite_store, group, rows)

    assert {0: 0, 1: 10, 3: 30} == {n: r for n, r in out.items() if n != 2}
    assert isinstance(out[2], RuntimeError)
    assert [0, 1, 3] == job_payloads(sqlite_store)
    # The holder, the leader's batch of one, then rows 1 and 3 alone after their batch failed.
    assert 4 == len(commits)


def test_without_isolation_a_bad_row_fails_every_caller_of_its_batch(sqlite_store: Store) -> None:
    group = GroupCommit(sqlite_store, write_jobs)
    rows: list[dict[str, Any]] = [{"n": 0}, {"n": 1}, {"n": 2, "broken": True}, {"n": 3}]

    out = run_together(sqlite_store, group, rows)

    assert 0 == out[0]
    assert [RuntimeError] * 3 == [type(out[n]) for n in (1, 2, 3)]
    assert [0] == job_payloads(sqlite_store)


def test_a_writer_returning_the_wrong_number_of_results_fails_its_callers_and_commits_nothing(
    sqlite_store: Store,
) -> None:
    group = GroupCommit(sqlite_store, lambda conn, rows: [*write_jobs(conn, rows), 0])

    with pytest.raises(ValueError, match="the writer returned 2 results for 1 rows"):
        group.submit({"n": 1})

    assert [] == job_payloads(sqlite_store)
    assert 0 == group.waiting


def test_a_failing_report_does_not_fail_the_committed_callers(sqlite_store: Store) -> None:
    def report(rows: Sequence[Any], results: Sequence[Any]) -> None:
        raise RuntimeError("log sink gone")

    group = GroupCommit(sqlite_store, write_jobs, after_commit=report)

    assert 70 == group.submit({"n": 7})
    assert [7] == job_payloads(sqlite_store)
