"""The outbox channel under the end-to-end suite: messages read straight from the state database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from sqlalchemy import select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.harness import E2EChannel, ReceivedMessage


class OutboxProbe:
    def __init__(self) -> None:
        self.store: Store | None = None

    def attach(self, store: Store) -> None:
        self.store = store

    def connect(self, daemon_url: str) -> None:
        """The outbox needs no webhook: replies go through the daemon's reply form."""

    def messages(self, to: str | None = None) -> Sequence[ReceivedMessage]:
        assert self.store is not None, "attach() the daemon's store first"
        t = schema.outbox
        query = select(t).where(t.c.direction == "out").order_by(t.c.id)
        if to is not None:
            query = query.where(t.c.to_addr == to)
        with self.store.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            ReceivedMessage(
                to=r["to_addr"],
                subject=r["subject"],
                text=r["text"],
                html=r["html"],
                headers=dict(r["headers"]),
                send_key=r["send_key"],
            )
            for r in rows
        ]

    def reply(self, from_number: str, body: str) -> None:
        raise NotImplementedError("outbox replies go through POST /outbox/{id}/reply on the daemon")

    def call_counts(self) -> Mapping[str, int]:
        return {}


@pytest.fixture
def channel_e2e_outbox() -> E2EChannel:
    return E2EChannel(config_toml='[channels.email]\nkind = "outbox"\n', probe=OutboxProbe())
