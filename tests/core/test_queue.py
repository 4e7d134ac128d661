"""The durable job queue: dedupe keys, batches per kind, leases, retries, and concurrent workers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import time_machine

from nps_sync.errors import RateLimited
from nps_sync.queue import JobQueue, enqueue
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
