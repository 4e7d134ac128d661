"""A real Runtime for the testimonial flow: the sandbox CRM and the outbox channel in one SQLite state
database, the shipped playbooks, and time driven by time-machine (the queue and the engine read it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import structlog
import time_machine
from sqlalchemy import select

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from tests.harness import Server

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "playbooks"
PUBLIC_URL = "https://nps.example.com"
KEYS = "0123456789abcdef" * 4
#: Wednesday 7 January 2026, 10:00 UTC: a business day, inside every send window below.
START = datetime(2026, 1, 7, 10, 0, tzinfo=timezone.utc)
SCORE_LINE = re.compile(r"^(\d+)(?: \([^)]*\))?: (http\S+)$", re.M)
TESTIMONIAL_LINK = re.compile(r"https?://[^\s\"'<>]+?/t/(?!w/)[A-Za-z0-9_.-]+")
WITHDRAW_LINK = re.compile(r"https?://[^\s\"'<>]+?/t/w/[A-Za-z0-9_.-]+")
ALICE = "alice.smith@northwind.example"


def build_config(tmp_path: Path, playbooks: str = str(SHIPPED / "*.toml"), **testimonials: Any) -> Any:
    data: dict[str, Any] = {
        "daemon": {
            "state_dir": "state",
            "public_url": PUBLIC_URL,
            "playbooks": [playbooks],
            "company_name": "Acme Analytics",
        },
        "channels": {"email": {"postal_address": "Acme Analytics, 1 Main St, Springfield"}},
        "program": [
            {
                "name": "relationship",
                "channel": "email",
                "send_window": "00:00-23:59",
                "default_time_zone": "UTC",
                "reminders": {"count": 0},
                "audience": {"where": {"account_id": "A01"}},
            }
        ],
    }
    if testimonials:
        data["testimonials"] = testimonials
    return config_mod.parse(data, source=tmp_path / "config.toml")


def path_of(url: str) -> str:
    return urlsplit(url).path


@dataclass
class World:
    rt: Runtime
    client: httpx.Client
    clock: Any

    def outbox(self, to: str | None = None) -> list[dict[str, Any]]:
        query = select(schema.outbox).order_by(schema.outbox.c.id)
        if to is not None:
            query = query.where(schema.outbox.c.to_addr == to)
        with self.rt.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def rows(self, table: Any) -> list[dict[str, Any]]:
        with self.rt.store.read() as conn:
            return [dict(r) for r in conn.execute(select(table)).mappings()]

    def notes(self, contact_id: str) -> list[dict[str, Any]]:
        return [n for n in self.rows(schema.sandbox_notes) if n["contact_id"] == contact_id]

    def later(self, delta: timedelta) -> None:
        self.clock.shift(delta)

    def promoter_email(self, to: str = ALICE, score: int = 10) -> dict[str, Any]:
        """Survey ``to``, answer ``score`` by the landing page's POST, wait out the playbook's hour,
        and return the testimonial request as the outbox holds it."""
        self.rt.run_wave("relationship")
        self.rt.drain()
        [survey] = [m for m in self.outbox(to) if m["purpose"] == "survey"]
        link = {int(n): url for n, url in SCORE_LINE.findall(survey["text"])}[score]
        assert (
            200 == self.client.post(path_of(link), data={"score": str(score), "comment": "Great"}).status_code
        )
        self.rt.drain()
        self.later(timedelta(hours=2))
        self.rt.drain()
        [request] = [m for m in self.outbox(to) if m["subject"].startswith("Would you share a few words")]
        return request


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI commands configure structlog for a terminal (level warning, stderr of the CliRunner):
    put the test-wide configuration back so later tests still see every event."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with time_machine.travel(START, tick=False) as clock:
        rt = Runtime(build_config(tmp_path), environ={"NPS_SYNC_SIGNING_KEYS": KEYS})
        server = Server(rt).start()
        client = httpx.Client(base_url=server.url, timeout=10)
        try:
            yield World(rt, client, clock)
        finally:
            client.close()
            server.stop()
            rt.close()
