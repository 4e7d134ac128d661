"""Erasure (GDPR Art. 17): remove a person from every table, keep only a hashed tombstone.

``forget(store, email=…, phone=…)`` deletes, in one transaction, every row that names the person or
one of their contact ids: sends, responses, wave decisions, webhook events, outbox messages, playbook
runs and steps, our CRM-task records, jobs whose payload names them, and the sandbox CRM's rows. The
roll-up of each account the person had answered for is queued in the same transaction, so the CRM's
account NPS stops counting them once the daemon runs it. What is kept is one suppression per
address whose ``address`` is a keyed hash (HMAC-SHA256 with a random key kept in ``settings``),
reason ``erased``: the wave planner hashes each contact's address the same way, so a CRM re-import
cannot bring the person back, and the tombstone alone names nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection, delete, inspect, or_, select, update

from nps_sync.errors import NpsSyncError
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.timezones import normalize_email, normalize_phone
from nps_sync.writeback import queue_rollups

log = structlog.get_logger("nps_sync.forget")

PEPPER_SETTING = "erasure.key"
TOMBSTONE_PREFIX = "erased:"
REASON = "erased"


def erasure_key(conn: Connection) -> bytes | None:
    """The tombstone key, or None before the first erasure."""
    value = conn.execute(
        select(schema.settings.c.value).where(schema.settings.c.key == PEPPER_SETTING)
    ).scalar_one_or_none()
    return bytes.fromhex(value) if value else None


def _ensure_key(store: Store, conn: Connection) -> bytes:
    key = erasure_key(conn)
    if key is not None:
        return key
    store.insert_ignore(
        conn,
        schema.settings,
        {"key": PEPPER_SETTING, "value": secrets.token_hex(32), "updated_at": utcnow()},
        "key",
    )
    key = erasure_key(conn)
    assert key is not None
    return key


def tombstone(key: bytes, channel: str, address: str) -> str:
    digest = hmac.new(key, f"{channel}:{address}".encode(), hashlib.sha256).hexdigest()
    return TOMBSTONE_PREFIX + digest


def tombstones_for(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """``{tombstone: (channel, address)}`` for normalised addresses (empty before any erasure)."""
    key = erasure_key(conn)
    if key is None:
        return {}
    return {tombstone(key, channel, address): (channel, address) for channel, address in pairs}


@dataclass
class Erasure:
    contact_ids: set[str] = field(default_factory=set)
    deleted: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def forget(store: Store, *, email: str | None = None, phone: str | None = None) -> Erasure:
    """Erase everything about the person with this email and/or phone. Idempotent."""
    addresses: dict[str, str] = {}
    if email is not None:
        normal = normalize_email(email)
        if normal is None:
            raise NpsSyncError(f"forget --email: expected an email address, got: {email!r}")
        addresses["email"] = normal
    if phone is not None:
        normal = normalize_phone(phone)
        if normal is None:
            raise NpsSyncError(
                f"forget --phone: expected a phone number in E.164 form such as +14155550100, got: {phone!r}"
            )
        addresses["sms"] = normal
    if not addresses:
        raise NpsSyncError("forget: name the person with --email and/or --phone")
    result = Erasure()
    with store.begin() as conn:
        present = set(inspect(conn).get_table_names())
        ids = _contact_ids(conn, addresses, present)
        result.contact_ids = ids
        values = set(addresses.values())
        sends = schema.sends
        send_rows = conn.execute(
            select(sends.c.id, sends.c.send_key, sends.c.address).where(
                or_(sends.c.contact_id.in_(ids), sends.c.address.in_(values))
            )
        ).all()
        values |= {r.address for r in send_rows}
        send_ids = [r.id for r in send_rows]
        keys = [r.send_key for r in send_rows]
        runs = schema.playbook_runs
        run_ids = list(
            conn.execute(
                select(runs.c.id).where(or_(runs.c.contact_id.in_(ids), runs.c.send_id.in_(send_ids)))
            ).scalars()
        )
        count = result.deleted
        resp = schema.responses
        answered = or_(resp.c.send_id.in_(send_ids), resp.c.contact_id.in_(ids))
        accounts = sorted(
            {a for a in conn.execute(select(resp.c.account_id).where(answered).distinct()).scalars() if a}
        )

        def gone(name: str, stmt: Any) -> None:
            n = int(conn.execute(stmt).rowcount or 0)
            if n:
                count[name] = count.get(name, 0) + n

        gone(
            "playbook_steps", delete(schema.playbook_steps).where(schema.playbook_steps.c.run_id.in_(run_ids))
        )
        # Tables that hold a contact id (ours and other modules': testimonials, sandbox notes, …),
        # children before parents so foreign keys hold.
        for table in reversed(schema.metadata.sorted_tables):
            if table.name not in present or "contact_id" not in table.c or table.name == "sends":
                continue
            cond = table.c.contact_id.in_(ids)
            if "send_id" in table.c:
                cond = or_(cond, table.c.send_id.in_(send_ids))
            if table.name == "playbook_runs":
                cond = or_(cond, table.c.id.in_(run_ids))
            gone(table.name, delete(table).where(cond))
        gone("responses", delete(schema.responses).where(schema.responses.c.send_id.in_(send_ids)))
        ev = schema.inbound_events
        gone(
            "inbound_events",
            delete(ev).where(
                or_(ev.c.send_key.in_(keys), *[ev.c.detail.contains(v, autoescape=True) for v in values])
            ),
        )
        out = schema.outbox
        gone(
            "outbox",
            delete(out).where(
                or_(out.c.send_key.in_(keys), out.c.to_addr.in_(values), out.c.from_addr.in_(values))
            ),
        )
        gone(
            "jobs",
            delete(schema.jobs).where(schema.jobs.c.id.in_(_jobs_naming(conn, ids | values | set(keys)))),
        )
        # Their accounts' NPS counted them: recomputed without them (after the jobs naming them went).
        queue_rollups(store, conn, accounts)
        # Reminders and playbook messages point at a survey send by id; nothing else may dangle.
        conn.execute(update(sends).where(sends.c.survey_send_id.in_(send_ids)).values(survey_send_id=None))
        gone("sends", delete(sends).where(sends.c.id.in_(send_ids)))
        sup = schema.suppressions
        gone("suppressions", delete(sup).where(sup.c.address.in_(values)))
        sandbox = schema.sandbox_contacts
        if sandbox.name in present:
            gone(
                "sandbox_contacts",
                delete(sandbox).where(
                    or_(sandbox.c.id.in_(ids), sandbox.c.email.in_(values), sandbox.c.phone.in_(values))
                ),
            )
        key = _ensure_key(store, conn)
        for channel, address in addresses.items():
            result.tombstones += store.insert_ignore(
                conn,
                sup,
                {
                    "channel": channel,
                    "address": tombstone(key, channel, address),
                    "reason": REASON,
                    "source": "forget",
                    "created_at": utcnow(),
                },
                "channel",
                "address",
            )
    # Counts only: the log must not become the one place that still names the person.
    log.warning("person.erased", contacts=len(result.contact_ids), rows=result.total, **result.deleted)
    return result


def _contact_ids(conn: Connection, addresses: Mapping[str, str], present: set[str]) -> set[str]:
    sends = schema.sends
    ids = set(
        conn.execute(
            select(sends.c.contact_id).where(
                or_(*[(sends.c.channel == ch) & (sends.c.address == a) for ch, a in addresses.items()])
            )
        ).scalars()
    )
    for snapshot, contact_id in conn.execute(select(sends.c.snapshot, sends.c.contact_id)):
        if _snapshot_names(snapshot, addresses):
            ids.add(contact_id)
    if schema.sandbox_contacts.name in present:
        sc = schema.sandbox_contacts
        for row in conn.execute(select(sc.c.id, sc.c.email, sc.c.phone)):
            if (row.email and normalize_email(row.email) == addresses.get("email")) or (
                row.phone and normalize_phone(row.phone) == addresses.get("sms")
            ):
                ids.add(row.id)
    return ids


def _snapshot_names(snapshot: Any, addresses: Mapping[str, str]) -> bool:
    if not isinstance(snapshot, dict):
        return False
    email, phone = snapshot.get("email"), snapshot.get("phone")
    return bool(
        (isinstance(email, str) and normalize_email(email) == addresses.get("email"))
        or (isinstance(phone, str) and normalize_phone(phone) == addresses.get("sms"))
    )


def _jobs_naming(conn: Connection, needles: set[str]) -> list[int]:
    """Jobs whose payload mentions one of ``needles`` (a contact id, an address, a send key)."""
    needles = {n for n in needles if n}
    found = []
    for job_id, payload in conn.execute(select(schema.jobs.c.id, schema.jobs.c.payload)):
        text = json.dumps(payload)
        if any(json.dumps(n) in text for n in needles):
            found.append(job_id)
    return found
