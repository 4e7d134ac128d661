"""The durable job queue: dedupe keys, batches per kind, lingering partial batches, coalesced jobs,
leases, retries, and concurrent workers. Lingering is driven with a frozen clock, never with sleeps."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import time_machine
from sqlalchemy import event

from nps_sync.errors import RateLimited
from nps_sync.queue import JobQueue, Linger, enqueue, enqueue_coalesced
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from tests.core.test_sending import (  # noqa: F401 - the *_fixture names are fixtures
    core_store_fixture,
    jobs,
    pg_module_store_fixture,
)


def add_jobs(store: Store, kind: str, payloads: Sequence[Mapping[str, Any]]) -> None:
    with store.begin() as conn:
        for payload in payloads:
            enqueue(store, conn, kind, payload)


def test_a_second_job_with_the_same_dedupe_key_is_dropped(core_store: Store) -> None:
    with core_store.begin() as conn:
        added = [
            enqueue(core_store, conn, "wave", {"n": n}, dedupe_key="wave:nps@2026-11-23") for n in range(3)
        ]
    assert [True, False, False] == added
    assert [{"n": 0}] == [j["payload"] for j in jobs(core_store)]


def test_jobs_are_claimed_in_batches_of_one_kind_in_due_order(core_store: Store) -> None:
    start = utcnow()
    with core_store.begin() as conn:
        for n in range(5):
            enqueue(core_store, conn, "a", {"n": n}, run_at=start - timedelta(seconds=100 - 2 * n))
            if n < 3:
                enqueue(core_store, conn, "b", {"n": n}, run_at=start - timedelta(seconds=99 - 2 * n))
    calls: list[tuple[str, list[int]]] = []
    queue = JobQueue(
        core_store,
        {
            "a": lambda ps: calls.append(("a", [p["n"] for p in ps])),
            "b": lambda ps: calls.append(("b", [p["n"] for p in ps])),
        },
        batch_sizes={"a": 4, "b": 10},
    )

    assert 8 == queue.drain()
    assert [("a", [0, 1, 2, 3]), ("b", [0, 1, 2]), ("a", [4])] == calls
    assert {"done"} == {j["state"] for j in jobs(core_store)}


def test_a_job_whose_lease_ended_is_claimed_again(core_store: Store) -> None:
    add_jobs(core_store, "x", [{"n": 1}])
    crashed = JobQueue(core_store, {}, lease=timedelta(minutes=10), worker_id="w1")
    survivor = JobQueue(core_store, {}, lease=timedelta(minutes=10), worker_id="w2")

    [(job_id, _, _, attempts)] = crashed.claim("x")  # … and the worker dies without finishing
    assert 1 == attempts
    assert [] == survivor.claim("x")

    with time_machine.travel(utcnow() + timedelta(minutes=11)):
        assert [(job_id, "x", {"n": 1}, 2)] == survivor.claim("x")
    assert ("running", "w2") == (jobs(core_store)[0]["state"], jobs(core_store)[0]["locked_by"])


def test_a_failing_job_backs_off_and_fails_after_max_attempts(core_store: Store) -> None:
    add_jobs(core_store, "x", [{"n": 1}])
    runs: list[int] = []

    def broken(payloads: Sequence[Mapping[str, Any]]) -> None:
        runs.append(len(payloads))
        raise ValueError("CRM field missing")

    queue = JobQueue(core_store, {"x": broken}, max_attempts=3)
    start = utcnow()
    with time_machine.travel(start, tick=False):
        assert 1 == queue.run_once()
        job = jobs(core_store)[0]
        assert ("queued", 1, start + timedelta(seconds=2)) == (job["state"], job["attempts"], job["run_at"])
        assert "ValueError: CRM field missing" == job["last_error"]
        assert 0 == queue.run_once()
    with time_machine.travel(start + timedelta(seconds=3), tick=False):
        assert 1 == queue.run_once()
        assert start + timedelta(seconds=3 + 4) == jobs(core_store)[0]["run_at"]
    with time_machine.travel(start + timedelta(seconds=8), tick=False):
        assert 1 == queue.run_once()
    assert ("failed", 3) == (jobs(core_store)[0]["state"], jobs(core_store)[0]["attempts"])
    with time_machine.travel(start + timedelta(days=1)):
        assert 0 == queue.run_once()
    assert [1, 1, 1] == runs


def test_retry_after_of_a_rate_limit_sets_the_next_attempt(core_store: Store) -> None:
    add_jobs(core_store, "x", [{"n": 1}])

    def limited(payloads: Sequence[Mapping[str, Any]]) -> None:
        raise RateLimited("429", retry_after=300)

    start = utcnow()
    with time_machine.travel(start, tick=False):
        JobQueue(core_store, {"x": limited}).run_once()
    assert start + timedelta(seconds=300) == jobs(core_store)[0]["run_at"]


def test_a_job_of_an_unknown_kind_is_retried_not_lost(core_store: Store) -> None:
    add_jobs(core_store, "renamed_kind", [{"n": 1}])
    assert 1 == JobQueue(core_store, {}).run_once()
    job = jobs(core_store)[0]
    assert ("queued", "LookupError: no handler for job kind 'renamed_kind'") == (
        job["state"],
        job["last_error"],
    )


def test_two_workers_never_run_a_job_twice(core_store: Store) -> None:
    add_jobs(core_store, "x", [{"n": n} for n in range(150)])
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(payloads: Sequence[Mapping[str, Any]]) -> None:
        with lock:
            ran.update(p["n"] for p in payloads)
        time.sleep(0.002)  # hold the batch a moment so the other worker claims meanwhile

    queues = [JobQueue(core_store, {"x": handler}, batch_sizes={"x": 7}, worker_id=f"w{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    per_worker: list[int] = []

    def work(queue: JobQueue) -> None:
        try:
            barrier.wait()
            per_worker.append(queue.drain())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert [] == errors
    assert dict.fromkeys(range(150), 1) == dict(ran)
    assert 150 == sum(per_worker)
    assert {"done"} == {j["state"] for j in jobs(core_store)}


# --- lingering partial batches --------------------------------------------------------------------

LINGER = Linger(quiet=timedelta(seconds=0.5), longest=timedelta(seconds=3))


def lingering(store: Store, ran: list[list[int]], batch: int = 5) -> JobQueue:
    return JobQueue(
        store,
        {"x": lambda ps: ran.append([p["n"] for p in ps])},
        batch_sizes={"x": batch},
        lingers={"x": LINGER},
    )


def test_a_lingering_kind_runs_as_soon_as_its_batch_is_full(core_store: Store) -> None:
    ran: list[list[int]] = []
    queue = lingering(core_store, ran)
    with time_machine.travel(utcnow(), tick=False) as clock:
        add_jobs(core_store, "x", [{"n": n} for n in range(4)])
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=0.1))
        add_jobs(core_store, "x", [{"n": 4}, {"n": 5}])
        assert 5 == queue.run_once()
        assert 0 == queue.run_once()  # the sixth arrived just now
    assert [[0, 1, 2, 3, 4]] == ran


def test_a_partial_batch_runs_once_no_job_arrived_for_the_quiet_gap(core_store: Store) -> None:
    ran: list[list[int]] = []
    queue = lingering(core_store, ran)
    with time_machine.travel(utcnow(), tick=False) as clock:
        add_jobs(core_store, "x", [{"n": 0}, {"n": 1}])
        clock.shift(timedelta(seconds=0.3))
        add_jobs(core_store, "x", [{"n": 2}])
        clock.shift(timedelta(seconds=0.4))  # 0.7 s after the first job, 0.4 s after the last
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=0.1))
        assert 3 == queue.run_once()
    assert [[0, 1, 2]] == ran


def test_a_steady_stream_runs_when_the_oldest_job_waited_the_longest(core_store: Store) -> None:
    ran: list[list[int]] = []
    queue = lingering(core_store, ran, batch=100)
    with time_machine.travel(utcnow(), tick=False) as clock:
        for n in range(8):  # one job every 0.4 s: never quiet for 0.5 s, never a full batch
            add_jobs(core_store, "x", [{"n": n}])
            assert 0 == queue.run_once()
            clock.shift(timedelta(seconds=0.4))
        clock.shift(timedelta(seconds=-0.2))  # 3.0 s after the first job
        assert 8 == queue.run_once()
    assert [list(range(8))] == ran


def test_drain_runs_partial_batches_at_once(core_store: Store) -> None:
    ran: list[list[int]] = []
    queue = lingering(core_store, ran)
    with time_machine.travel(utcnow(), tick=False):
        add_jobs(core_store, "x", [{"n": 0}, {"n": 1}])
        assert 0 == queue.run_once()
        assert 2 == queue.drain()
    assert [[0, 1]] == ran


def test_a_kind_waits_while_the_kind_it_follows_is_due_or_running(core_store: Store) -> None:
    """``after``: a kind's quiet gap does not count while jobs of the kind it follows are queued or
    running (they are about to add or touch its jobs, as answers do roll-ups); its longest wait
    still does."""
    ran: list[str] = []
    inside: list[int] = []

    def feed(payloads: Sequence[Mapping[str, Any]]) -> None:
        ran.append(f"w{len(payloads)}")
        inside.append(queue.run_once())  # while this ``w`` runs, ``r`` must wait

    queue = JobQueue(
        core_store,
        {"w": feed, "r": lambda ps: ran.append(f"r{len(ps)}")},
        batch_sizes={"w": 10, "r": 100},
        lingers={
            "w": LINGER,
            "r": Linger(quiet=timedelta(seconds=2), longest=timedelta(seconds=60), after=("w",)),
        },
    )
    with time_machine.travel(utcnow(), tick=False) as clock:
        add_jobs(core_store, "r", [{"n": 0}])
        clock.shift(timedelta(seconds=1.9))
        add_jobs(core_store, "w", [{"n": 0}])
        clock.shift(timedelta(seconds=0.1))  # r quiet for 2 s, but w is due (still lingering)
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=0.5))
        assert 1 == queue.run_once()  # w, and inside it r saw w running
        assert 1 == queue.run_once()  # then r
        assert (["w1", "r1"], [0]) == (ran, inside)

        ran.clear()
        add_jobs(core_store, "r", [{"n": 1}])
        clock.shift(timedelta(seconds=1))
        add_jobs(core_store, "w", [{"n": 1}])
        clock.shift(timedelta(seconds=59))
        add_jobs(core_store, "w", [{"n": 2}])  # w still coming: r has waited its longest
        assert 1 == queue.run_once()
        assert ["r1"] == ran


# --- coalesced jobs -------------------------------------------------------------------------------


def coalescing(store: Store, ran: list[list[str]]) -> JobQueue:
    """A queue coalescing kind ``r``: quiet gap 2 s, longest wait 60 s; batches go to ``ran``."""
    return JobQueue(
        store,
        {"r": lambda ps: ran.append(sorted(p["key"] for p in ps))},
        batch_sizes={"r": 100},
        lingers={"r": Linger(quiet=timedelta(seconds=2), longest=timedelta(seconds=60))},
        coalesce={"r"},
    )


def coalesce(store: Store, *keys: str) -> None:
    with store.begin() as conn:
        enqueue_coalesced(store, conn, "r", {k: {"key": k} for k in keys})


def test_coalesced_jobs_are_one_per_key_and_a_touch_restarts_the_quiet_gap(core_store: Store) -> None:
    ran: list[list[str]] = []
    queue = coalescing(core_store, ran)
    with time_machine.travel(utcnow(), tick=False) as clock:
        coalesce(core_store, "r:A", "r:B")
        clock.shift(timedelta(seconds=1.5))
        coalesce(core_store, "r:A")
        assert [("r:A", "queued"), ("r:B", "queued")] == [
            (j["dedupe_key"], j["state"]) for j in jobs(core_store)
        ]
        clock.shift(timedelta(seconds=1))  # 2.5 s after the jobs were added, 1 s after the touch
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=1))
        assert 2 == queue.run_once()
    assert [["r:A", "r:B"]] == ran


def test_touches_do_not_delay_a_coalesced_job_past_its_longest_wait(core_store: Store) -> None:
    ran: list[list[str]] = []
    queue = coalescing(core_store, ran)
    with time_machine.travel(utcnow(), tick=False) as clock:
        coalesce(core_store, "r:A")
        for _ in range(59):
            clock.shift(timedelta(seconds=1))
            coalesce(core_store, "r:A")
            assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=1))
        assert 1 == queue.run_once()
    assert [["r:A"]] == ran


def test_a_coalesced_job_asked_for_while_it_runs_is_queued_again(core_store: Store) -> None:
    """Claiming frees the key: a request made while the handler runs may come after what the handler
    read, so it must get a job of its own rather than be dropped as a duplicate."""
    ran: list[list[str]] = []

    def handler(payloads: Sequence[Mapping[str, Any]]) -> None:
        ran.append(sorted(p["key"] for p in payloads))
        if len(ran) == 1:
            coalesce(core_store, "r:A")

    queue = JobQueue(core_store, {"r": handler}, batch_sizes={"r": 100}, coalesce={"r"})
    coalesce(core_store, "r:A", "r:B")

    assert 3 == queue.drain()
    assert [["r:A", "r:B"], ["r:A"]] == ran
    assert [("done", None)] * 3 == [(j["state"], j["dedupe_key"]) for j in jobs(core_store)]


def test_a_plain_dedupe_key_stays_taken_after_its_job_ran(core_store: Store) -> None:
    with core_store.begin() as conn:
        enqueue(core_store, conn, "wave", {"n": 1}, dedupe_key="wave:w1")
    assert 1 == JobQueue(core_store, {"wave": lambda ps: None}).drain()
    with core_store.begin() as conn:
        assert not enqueue(core_store, conn, "wave", {"n": 2}, dedupe_key="wave:w1")
    assert [("done", "wave:w1")] == [(j["state"], j["dedupe_key"]) for j in jobs(core_store)]


# --- cost of choosing a kind ------------------------------------------------------------------------


def test_choosing_a_kind_reads_only_unfinished_jobs_through_the_index(tmp_path: Path) -> None:
    """The grouped query runs on every claim while thousands of done jobs sit in the table: on SQLite
    it must search ``ix_jobs_state_run_at`` for queued and running jobs, never scan the table."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.upgrade()
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "GROUP BY" in statement:
            statements.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        add_jobs(store, "x", [{"n": 1}])
        queue = JobQueue(store, {"x": lambda ps: None}, batch_sizes={"x": 5}, lingers={"x": LINGER})
        with time_machine.travel(utcnow() + timedelta(seconds=5)):
            assert 1 == queue.run_once()
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    [(statement, params)] = statements
    with store.engine.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)]
    store.dispose()
    searches = [p for p in plan if p.startswith(("SEARCH", "SCAN"))]
    assert ["SEARCH jobs USING INDEX ix_jobs_state_run_at (state=? AND run_at<?)"] * 2 == searches


def test_prune_deletes_done_jobs_after_a_week_but_keeps_dedupe_keys_and_unfinished_work(
    core_store: Store,
) -> None:
    with time_machine.travel(utcnow() - timedelta(days=8)):
        with core_store.begin() as conn:
            enqueue(core_store, conn, "wave", {"n": 1}, dedupe_key="wave:old")
            enqueue(core_store, conn, "writeback", {"n": 2})
            enqueue(core_store, conn, "writeback", {"n": 3})
        queue = JobQueue(core_store, {"wave": lambda p: None, "writeback": lambda p: None})
        queue.run_once("wave")
        queue.claim("writeback", limit=1)  # n=2 done below; n=3 stays queued
        with core_store.begin() as conn:
            conn.execute(schema.jobs.update().where(schema.jobs.c.state == "running").values(state="done"))
    with core_store.begin() as conn:
        enqueue(core_store, conn, "writeback", {"n": 4})
    JobQueue(core_store, {"writeback": lambda p: None}).run_once("writeback")  # n=3 and n=4 done now

    assert 1 == JobQueue(core_store, {}).prune()
    left = [(j["payload"]["n"], j["state"]) for j in jobs(core_store)]
    assert [(1, "done"), (3, "done"), (4, "done")] == left
