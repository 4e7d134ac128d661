"""Write results back to the CRM: the contact's NPS fields and the account roll-up.

Jobs of kind ``writeback`` are claimed in batches, so a burst of responses becomes one batched CRM
call per kind instead of one call per response. The roll-up of an account is its own coalesced
``account_rollup`` job, queued (or touched) by the answer itself, in the transaction that records it
(``Responses.record_in``): the roll-up is computed from the store's responses, not from what the
contacts' write-back wrote, so it runs once answers pause (or after a maximum delay), alongside the
contacts' write-back rather than after it, and a stream of answers writes each account once.
Field writes are idempotent, so a retried job is safe.

Account NPS = %promoters − %detractors over each contact's latest response within the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, desc, select

from nps_sync.abc import CRM
from nps_sync.errors import ConnectorUnavailable
from nps_sync.faults import crash_point
from nps_sync.models import AccountUpdate, BatchResult, ContactUpdate
from nps_sync.queue import enqueue_coalesced
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow

log = structlog.get_logger("nps_sync.writeback")

#: The job kind of an account roll-up; one queued job per account (its dedupe key).
ROLLUP_JOB = "account_rollup"


def account_rollup(store: Store, account_ids: Sequence[str], window: timedelta) -> list[AccountUpdate]:
    """The roll-up for each account from the store (latest response per contact in the window)."""
    resp = schema.responses
    since = utcnow() - window
    with store.read() as conn:
        rows = conn.execute(
            select(resp.c.account_id, resp.c.contact_id, resp.c.category, resp.c.responded_at)
            .where(resp.c.account_id.in_(list(account_ids)), resp.c.responded_at >= since)
            .order_by(resp.c.contact_id, desc(resp.c.responded_at), desc(resp.c.id))
        ).all()
    latest: dict[tuple[str, str], str] = {}
    for row in rows:
        latest.setdefault((row.account_id, row.contact_id), row.category)
    by_account: dict[str, list[str]] = {}
    for (account_id, _), category in latest.items():
        by_account.setdefault(account_id, []).append(category)
    updates = []
    for account_id in account_ids:
        cats = by_account.get(account_id, [])
        n = len(cats)
        p, d = cats.count("promoter"), cats.count("detractor")
        updates.append(
            AccountUpdate(
                account_id=account_id,
                nps=round(100.0 * (p - d) / n, 1) if n else None,
                responses=n,
                promoters=p,
                passives=cats.count("passive"),
                detractors=d,
            )
        )
    return updates


def rollup_key(account_id: str) -> str:
    return f"{ROLLUP_JOB}:{account_id}"


def queue_rollups(store: Store, conn: Connection, account_ids: Iterable[str]) -> None:
    """Queue (or touch) one ``account_rollup`` job per account, in the caller's transaction."""
    enqueue_coalesced(store, conn, ROLLUP_JOB, {rollup_key(a): {"account_id": a} for a in account_ids})


class WriteBack:
    def __init__(self, store: Store, crm: CRM, *, account_window: timedelta) -> None:
        self.store = store
        self.crm = crm
        self.account_window = account_window

    def handle(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Job handler for ``writeback``: a batch of ``{contact_id, account_id}``. Writes the contacts
        only: their accounts' roll-ups were queued with the answers (see the module docstring)."""
        contact_ids = sorted({p["contact_id"] for p in payloads})
        updates = self.contact_updates(contact_ids)
        result = self.crm.update_contacts(updates)
        crash_point("writeback.after_crm")
        transient = _log_failures(result, "writeback.contact_failed", "contact_id")
        log.info("writeback.done", contacts=len(result.succeeded), jobs=len(payloads))
        if transient:
            raise ConnectorUnavailable(f"{transient} records failed transiently; retrying the batch")

    def rollup(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Job handler for ``account_rollup``: one roll-up per distinct account of the batch, computed
        from the store now (so it covers every answer recorded so far) and written in batched calls."""
        account_ids = sorted({p["account_id"] for p in payloads})
        result = self.crm.update_accounts(account_rollup(self.store, account_ids, self.account_window))
        transient = _log_failures(result, "writeback.account_failed", "account_id")
        log.info("writeback.accounts_done", accounts=len(result.succeeded), jobs=len(payloads))
        if transient:
            raise ConnectorUnavailable(f"{transient} accounts failed transiently; retrying the batch")

    def contact_updates(self, contact_ids: Sequence[str]) -> list[ContactUpdate]:
        resp, sends = schema.responses, schema.sends
        with self.store.read() as conn:
            rows = (
                conn.execute(
                    select(resp, sends.c.sent_at)
                    .join(sends, sends.c.id == resp.c.send_id)
                    .where(resp.c.contact_id.in_(list(contact_ids)))
                    .order_by(resp.c.contact_id, desc(resp.c.responded_at), desc(resp.c.id))
                )
                .mappings()
                .all()
            )
        latest: dict[str, Any] = {}
        for row in rows:
            latest.setdefault(row["contact_id"], row)
        return [
            ContactUpdate(
                contact_id=cid,
                values={
                    "score": row["score"],
                    "category": row["category"],
                    "comment": row["comment"] or "",
                    "responded_at": row["updated_at"],
                    "surveyed_at": row["sent_at"],
                },
            )
            for cid, row in latest.items()
        ]

    def opt_out(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Job handler for ``crm_opt_out``: mirror our suppressions into the CRM's opt-out fields."""
        updates = [
            ContactUpdate(p["contact_id"], {f"{p['channel']}_opt_out": bool(p.get("value", True))})
            for p in payloads
        ]
        result = self.crm.update_contacts(updates)
        # Our suppression holds either way, but other tools reading the CRM would still send.
        if _log_failures(result, "writeback.opt_out_failed", "contact_id"):
            raise ConnectorUnavailable("opt-out write-back failed transiently; retrying")


def _log_failures(result: BatchResult, event: str, id_field: str) -> int:
    """Log each record the CRM refused; returns how many failed transiently (the batch is retried)."""
    for failure in result.failed:
        log.warning(
            event, **{id_field: failure.record_id}, reason=failure.reason, transient=failure.transient
        )
    return sum(1 for f in result.failed if f.transient)
