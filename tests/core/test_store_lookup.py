"""``Store.lookup()``: single-statement reads without a transaction around them (PostgreSQL: one round
trip, not BEGIN + query + ROLLBACK), and a web process's pool that skips the ping before each use."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, exc, text

from nps_sync.store.db import Store
from tests.fixtures import PG_ADMIN_URL

TAKES_A_MOMENT = "SELECT pg_sleep(0.05)"
#: True when the statement runs in a transaction that began before it.
IN_AN_OLDER_TRANSACTION = "SELECT now() < statement_timestamp()"


def test_each_lookup_statement_is_its_own_transaction_on_postgresql(pg_store: Store) -> None:
    with pg_store.lookup() as conn:
        conn.execute(text(TAKES_A_MOMENT))
        assert conn.execute(text(IN_AN_OLDER_TRANSACTION)).scalar_one() is False
    with pg_store.read() as conn:  # read() keeps one snapshot for all its statements
        conn.execute(text(TAKES_A_MOMENT))
        assert conn.execute(text(IN_AN_OLDER_TRANSACTION)).scalar_one() is True
    # The pooled connection went back without autocommit: the next read() is a transaction again.
    with pg_store.read() as conn:
        conn.execute(text(TAKES_A_MOMENT))
        assert conn.execute(text(IN_AN_OLDER_TRANSACTION)).scalar_one() is True


def test_lookup_reads_what_is_committed(any_store: Store) -> None:
    any_store.set_setting("k", "v")
    with any_store.lookup() as conn:
        assert "v" == conn.execute(text("SELECT value FROM settings WHERE key = 'k'")).scalar_one()


def test_without_the_ping_a_dead_connection_fails_one_use_and_the_pool_is_renewed(pg_url: str) -> None:
    store = Store(pg_url, pre_ping=False)
    try:
        with store.lookup() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as a:
            assert a.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}).scalar_one()
        admin.dispose()
        with pytest.raises(exc.OperationalError), store.lookup() as conn:
            conn.execute(text("SELECT 1"))
        with store.lookup() as conn:
            assert pid != conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    finally:
        store.dispose()
