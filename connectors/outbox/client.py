"""The outbox's storage: the ``outbox`` table of the state database (the outbox's "provider")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow


class OutboxDb:
    def __init__(self, store: Store) -> None:
        self.store = store

    def insert(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Store messages; a send key already present is kept as it is. Returns the keys stored now."""
        stored: set[str] = set()
        with self.store.begin() as conn:
            for row in rows:
                if self.store.insert_ignore(conn, schema.outbox, row, "send_key"):
                    stored.add(row["send_key"])
        return stored

    def record_inbound(self, channel: str, from_addr: str, to_addr: str, text: str) -> None:
        with self.store.begin() as conn:
            conn.execute(
                schema.outbox.insert().values(
                    direction="in",
                    send_key=None,
                    channel=channel,
                    to_addr=to_addr,
                    from_addr=from_addr,
                    subject="",
                    text=text,
                    html=None,
                    headers={},
                    purpose="reply",
                    created_at=utcnow(),
                )
            )

    def ids_for(self, send_keys: Sequence[str]) -> dict[str, int]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(schema.outbox.c.send_key, schema.outbox.c.id).where(
                    schema.outbox.c.send_key.in_(list(send_keys))
                )
            )
            return {r.send_key: r.id for r in rows}
