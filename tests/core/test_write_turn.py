"""SQLite's write lock between processes (nps_sync.store.write_turn): writers poll for it, a web
process's flag makes the others hold back, and a lock held too long still ends in an error."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from nps_sync.store.db import Store
from nps_sync.store.write_turn import WriteTurn
from tests.e2e.daemon import wait_for


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    with connect(path) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
    return path


def lock_is_free(path: Path) -> bool:
    probe = connect(path)
    probe.execute("PRAGMA busy_timeout=0")
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    finally:
        probe.execute("ROLLBACK") if probe.in_transaction else None
        probe.close()
    return True


def test_a_web_process_raises_its_flag_only_while_it_waits_for_the_lock(db: Path) -> None:
    web, daemon = WriteTurn(db, first=True), WriteTurn(db)
    holder = connect(db)
    holder.execute("BEGIN IMMEDIATE")
    conn = connect(db)
    waiter = threading.Thread(target=web.begin_immediate, args=(conn,))
    waiter.start()
    wait_for(daemon.waiting, timeout=10, what="the web writer's flag")
    assert waiter.is_alive()
    holder.execute("COMMIT")
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert conn.in_transaction
    assert not daemon.waiting()
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")
    assert 30000 == conn.execute("PRAGMA busy_timeout").fetchone()[0]


def test_other_writers_hold_back_while_a_flag_is_up(db: Path) -> None:
    web, daemon = WriteTurn(db, first=True), WriteTurn(db, yield_seconds=60)
    web._flags[web._slot] = 1  # a web process waiting (its own turn has not come yet)
    conn = connect(db)
    writer = threading.Thread(target=daemon.begin_immediate, args=(conn,))
    writer.start()
    # The lock is free, yet the daemon's writer does not take it while the flag is up.
    for _ in range(20):
        assert lock_is_free(db)
        assert writer.is_alive()
    web._flags[web._slot] = 0
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert conn.in_transaction
    assert not lock_is_free(db)
    conn.execute("ROLLBACK")


def test_a_lock_held_past_the_wait_is_an_error_and_restores_the_busy_timeout(db: Path) -> None:
    turn = WriteTurn(db, wait_seconds=0.2)
    holder = connect(db)
    holder.execute("BEGIN IMMEDIATE")
    conn = connect(db)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        turn.begin_immediate(conn)
    assert not conn.in_transaction
    assert 30000 == conn.execute("PRAGMA busy_timeout").fetchone()[0]
    holder.execute("ROLLBACK")


def test_a_store_writes_through_its_turn(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nps.db'}", write_first=True)
    try:
        store.upgrade()
        store.set_setting("k", "v")
        assert "v" == store.get_setting("k")
        assert (tmp_path / "nps.db-writers").stat().st_size == 256
        # A web process leaves WAL checkpoints to the daemon (its answers' commits stay short).
        with store.read() as conn:
            assert 0 == conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    finally:
        store.dispose()
    daemon = Store(f"sqlite:///{tmp_path / 'nps.db'}")
    try:
        with daemon.read() as conn:
            assert 1000 == conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    finally:
        daemon.dispose()
