"""The store's write lock: first come first served, re-entrant, and a waiter that is interrupted
leaves the queue."""

from __future__ import annotations

import signal
import threading

import pytest

from nps_sync.store.fifo_lock import FifoRLock
from tests.e2e.daemon import wait_for


class _Interrupted(Exception):
    pass


@pytest.fixture
def lock() -> FifoRLock:
    return FifoRLock()


def queue_up(lock: FifoRLock, names: list[str], order: list[str]) -> list[threading.Thread]:
    """Start a thread per name, each once the one before waits: they queue in that order. Each adds
    its name to ``order`` when it has the lock."""

    def take(name: str) -> None:
        with lock:
            order.append(name)

    threads: list[threading.Thread] = []
    for name in names:
        threads.append(threading.Thread(target=take, args=(name,)))
        threads[-1].start()
        wait_for(lambda: lock.waiting == len(threads), what=f"{name} to wait")
    return threads


def test_waiting_threads_get_the_lock_in_the_order_they_asked(lock: FifoRLock) -> None:
    order: list[str] = []
    lock.acquire()
    threads = queue_up(lock, [f"t{i}" for i in range(6)], order)
    lock.release()
    for thread in threads:
        thread.join(timeout=10)

    assert [f"t{i}" for i in range(6)] == order
    assert 0 == lock.waiting


def test_the_releasing_thread_asking_again_goes_behind_those_already_waiting(lock: FifoRLock) -> None:
    order: list[str] = []
    lock.acquire()
    [thread] = queue_up(lock, ["waiter"], order)
    lock.release()
    with lock:  # handed to the waiter on release: this waits for it
        order.append("releaser")
    thread.join(timeout=10)

    assert ["waiter", "releaser"] == order


def test_the_owner_may_take_it_again_and_others_wait_for_the_last_release(lock: FifoRLock) -> None:
    order: list[str] = []
    lock.acquire()
    lock.acquire()
    [thread] = queue_up(lock, ["other"], order)
    lock.release()
    order.append("still held")
    lock.release()
    thread.join(timeout=10)

    assert ["still held", "other"] == order


def test_only_the_owner_may_release(lock: FifoRLock) -> None:
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    lock.acquire()
    failed: list[BaseException] = []

    def release_elsewhere() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            failed.append(exc)

    thread = threading.Thread(target=release_elsewhere)
    thread.start()
    thread.join(timeout=10)
    lock.release()

    assert 1 == len(failed)


def test_a_waiter_interrupted_by_a_signal_leaves_the_queue(lock: FifoRLock) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_Interrupted):
            lock.acquire()  # this (main) thread waits until the alarm interrupts it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 0 == lock.waiting
    release.set()
    thread.join(timeout=10)

    with lock:  # free again, not handed to the thread that gave up
        assert 0 == lock.waiting
