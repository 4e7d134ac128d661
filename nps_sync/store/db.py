"""The state database: engine set-up, transactions and migrations.

SQLite (the single-machine default) runs in WAL mode; write transactions start with
``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade. PostgreSQL uses the same schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import ColumnElement, Connection, Engine, create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool

from nps_sync.store import schema
from nps_sync.store.write_turn import WriteTurn

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for memory or other databases)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite://" or ":memory:" in url:
        return None
    return Path(url[len(prefix) :])


class Store:
    """Owns the engine. ``begin()`` for writes, ``read()`` for reads; both are context managers."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int | None = None,
        write_first: bool = False,
        pre_ping: bool = True,
    ) -> None:
        """``write_first``: this process's writes go before others' on SQLite (web processes).
        ``pre_ping``: PostgreSQL connections are checked (a round trip) before each use; without it
        a connection that died with the server fails its first use, and the pool is renewed.
        ``max_overflow`` (default ``pool_size``): PostgreSQL connections opened beyond the pool for
        a burst and closed after their use."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQLite has one writer at a time. Threads that queue on this lock get the database the moment
        # it is free; threads left to SQLite's busy handler sleep in growing steps (up to 100 ms) and,
        # under a burst of answers, spend most of their time asleep while the database sits idle.
        self._write_lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        self._statements: dict[tuple[str, tuple[str, ...], frozenset[str]], Any] = {}
        self._turn: WriteTurn | None = None
        if self.is_sqlite:
            path = sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._turn = WriteTurn(path, first=write_first)
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                # A file database: keep connections for every web thread that reads at once (a new
                # one costs its PRAGMAs; the default pool closes all but 5 after each use).
                **({"poolclass": NullPool} if path is None else {"pool_size": 20, "max_overflow": 80}),
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            if write_first:
                # The commit that crosses the WAL's 1,000 pages copies them back into the database
                # before it returns: leave that to the daemon, not to a page a customer waits for.
                event.listen(self.engine, "connect", _no_checkpoints)
            event.listen(self.engine, "begin", self._sqlite_on_begin)
        else:
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size if max_overflow is None else max_overflow,
                pool_pre_ping=pre_ping,
            )

    def _sqlite_on_begin(self, conn: Connection) -> None:
        if not conn.get_execution_options().get("nps_write"):
            conn.exec_driver_sql("BEGIN")
        elif self._turn is None:  # in memory: one connection, nobody else to wait for
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            self._turn.begin_immediate(raw)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction, committed on success and rolled back on error."""
        with self._write_lock or nullcontext(), self.engine.connect() as conn:
            conn = conn.execution_options(nps_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (rolled back at the end)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def lookup(self) -> Iterator[Connection]:
        """For a single-statement read: no transaction around it. On PostgreSQL that is one round
        trip instead of three (BEGIN, the query, ROLLBACK); several statements here may each see a
        different moment. SQLite: the same as ``read()``."""
        if self.is_sqlite:
            with self.read() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def upgrade(self) -> None:
        """Apply Alembic migrations up to head (idempotent)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        command.upgrade(cfg, "head")

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _insert_ignoring(self, table: Any, keys: tuple[str, ...], columns: frozenset[str]) -> Any:
        """The INSERT … ON CONFLICT DO NOTHING statement, built once per table, keys and columns: the
        values go in as parameters, so SQLAlchemy neither rebuilds nor re-keys it for every row."""
        key = (table.name, keys, columns)
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = (sqlite_insert if self.is_sqlite else pg_insert)(table).on_conflict_do_nothing(
                index_elements=list(keys)
            )
            self._statements[key] = stmt
        return stmt

    def insert_ignore(self, conn: Connection, table: Any, values: dict[str, Any], *keys: str) -> bool:
        """INSERT … ON CONFLICT DO NOTHING on the given unique columns; True when a row was added."""
        stmt = self._insert_ignoring(table, keys, frozenset(values))
        # SQLAlchemy 2.1 reports rowcount -1 for INSERTs on psycopg unless asked to keep it.
        result = conn.execute(stmt, values, execution_options={"preserve_rowcount": True})
        return result.rowcount == 1

    def insert_ignore_many(
        self, conn: Connection, table: Any, rows: list[dict[str, Any]], *keys: str
    ) -> None:
        """``insert_ignore`` for many rows in one executemany (rows must share their keys)."""
        if rows:
            conn.execute(self._insert_ignoring(table, keys, frozenset(rows[0])), rows)

    def insert_new(
        self, conn: Connection, table: Any, rows: list[dict[str, Any]], *keys: str
    ) -> set[tuple[Any, ...]]:
        """``insert_ignore_many`` that tells which rows were added: the ``keys`` values of each row
        this transaction inserted (rows another transaction holds already are not among them). One
        executemany with RETURNING, so a webhook's hundreds of events cost one statement batch."""
        if not rows:
            return set()
        columns = [table.c[k] for k in keys]
        stmt = self._insert_ignoring(table, keys, frozenset(rows[0])).returning(*columns)
        return {tuple(row) for row in conn.execute(stmt, rows)}

    # --- small shared settings (the pause switch) -----------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(
                select(schema.settings.c.value).where(schema.settings.c.key == key)
            ).scalar_one_or_none()

    def set_setting(self, key: str, value: str) -> None:
        with self.begin() as conn:
            if not self.insert_ignore(
                conn, schema.settings, {"key": key, "value": value, "updated_at": utcnow()}, "key"
            ):
                conn.execute(
                    schema.settings.update()
                    .where(schema.settings.c.key == key)
                    .values(value=value, updated_at=utcnow())
                )

    def dispose(self) -> None:
        self.engine.dispose()
        if self._turn is not None:
            self._turn.close()
            self._turn = None


def unindexed(column: ColumnElement[str]) -> ColumnElement[str]:
    """``column`` as an expression no index can serve. SQLite keeps no statistics, so given an
    indexed ``state IN (…)`` or ``wave_id = …`` next to a selective condition (``contact_id IN (one
    page of ids)``, one phone number) it may walk the first index — every sent survey, the whole
    wave — instead: a wave then costs the square of its size. Written so, the selective condition's
    index is used."""
    return column.concat("")


def _no_checkpoints(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
