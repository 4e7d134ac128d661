"""Alembic environment: runs against the engine the Store passes in (never a URL from an ini)."""

from __future__ import annotations

from alembic import context

from nps_sync.store.schema import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
