"""A worker that found nothing ready polls again no sooner than ``MIN_IDLE``, however often work is
queued meanwhile (a stream of answers wakes it on every answer)."""

from __future__ import annotations

import threading
import time

from nps_sync.daemon import IDLE_SLEEP, MIN_IDLE, idle


def test_a_stream_of_wake_ups_costs_one_poll_per_min_idle() -> None:
    stop, work_queued = threading.Event(), threading.Event()
    wake_ups, rounds = 100, 0
    streaming = threading.Event()

    def stream() -> None:
        for _ in range(wake_ups):  # an answer every 5 ms
            work_queued.set()
            time.sleep(0.005)
        streaming.set()

    thread = threading.Thread(target=stream)
    started = time.monotonic()
    thread.start()
    while not streaming.is_set():
        idle(stop, work_queued)
        rounds += 1
    elapsed = time.monotonic() - started
    thread.join()
    # Each round waits at least MIN_IDLE (less 10 % for the clock's rounding): one poll per wake-up
    # (about 100) would break this bound.
    assert rounds <= elapsed / (0.9 * MIN_IDLE) + 1
    assert rounds >= 1


def test_an_idle_worker_waits_for_work_or_the_poll_interval() -> None:
    stop, work_queued = threading.Event(), threading.Event()
    started = time.monotonic()
    idle(stop, work_queued)
    assert time.monotonic() - started >= 0.9 * IDLE_SLEEP

    work_queued.set()
    idle(stop, work_queued)
    assert not work_queued.is_set()  # taken: the next round runs the queued work


def test_a_stopping_worker_does_not_wait_for_work() -> None:
    stop, work_queued = threading.Event(), threading.Event()
    stop.set()
    work_queued.set()
    idle(stop, work_queued)
    assert work_queued.is_set()  # returned before waiting on the queue


def test_an_idle_worker_wakes_when_a_lingering_batch_is_due() -> None:
    stop, work_queued = threading.Event(), threading.Event()
    started = time.monotonic()
    idle(stop, work_queued, due_in=0.1)
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.9 * IDLE_SLEEP
