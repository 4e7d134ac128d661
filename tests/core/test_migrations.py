"""The Alembic migrations build exactly the schema that nps_sync/store/schema.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nps_sync.store import schema
from nps_sync.store.db import Store


def test_migrating_a_new_database_gives_the_declared_schema(any_store: Store) -> None:
    with any_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert [] == diff
