"""Sending: at most once per send key, then reconciliation.

A send row is committed as ``sending`` (claimed) *before* the provider is called, and never claimed
again automatically. The outcome is recorded after the call. A crash between the two leaves the row
in ``sending``; at start-up such rows become ``unknown`` and are resolved from provider evidence
(``Channel.lookup``) — only a send the provider provably does not have is queued again. So a crash at
any moment sends no survey twice (../shared/docs/reliability-and-compliance.md §1).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, func, select, update

from nps_sync.abc import Channel
from nps_sync.config import Config
from nps_sync.errors import AmbiguousOutcome, AuthFailed, ConnectorUnavailable, RateLimited
from nps_sync.faults import crash_point
from nps_sync.models import OutboundMessage, PendingSend, SendOutcome
from nps_sync.queue import WORKER_ID, enqueue
from nps_sync.render import Renderer
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow

log = structlog.get_logger("nps_sync.sending")

PAUSE_KEY = "sending.paused"
RETRY_TRANSIENT = timedelta(minutes=1)
SEND_LINGER = timedelta(seconds=1)
#: What ``message_for`` reads of a claimed send: the other columns (timestamps above all) are not
#: worth converting for a batch of a thousand.
MESSAGE_COLUMNS = (
    "id",
    "send_key",
    "program",
    "kind",
    "channel",
    "address",
    "language",
    "snapshot",
    "content",
    "survey_send_id",
)
#: Send keys per UPDATE when outcomes are recorded (well under SQLite's bound-parameter limit).
RECORD_CHUNK = 500


def is_paused(store: Store) -> bool:
    return store.get_setting(PAUSE_KEY) == "1"


def set_paused(store: Store, paused: bool) -> None:
    store.set_setting(PAUSE_KEY, "1" if paused else "0")
    log.warning("sending.paused" if paused else "sending.resumed")


def _due(kind: str, now: datetime) -> Select[Any]:
    """The message columns of a channel's queued rows that are due: what a batch is claimed from."""
    sends = schema.sends
    return select(*(sends.c[name] for name in MESSAGE_COLUMNS)).where(
        sends.c.state == "queued", sends.c.channel == kind, sends.c.not_before <= now
    )


class Sender:
    def __init__(
        self,
        store: Store,
        config: Config,
        channels: Mapping[str, Channel],
        renderer: Renderer,
        *,
        worker_id: str = WORKER_ID,
    ) -> None:
        self.store = store
        self.config = config
        self.channels = dict(channels)
        self.renderer = renderer
        self.worker_id = worker_id
        self.disabled: dict[str, str] = {}
        #: A channel refused with RateLimited / ConnectorUnavailable rests until then: Retry-After is
        #: about the provider, so the channel's next batch must not be tried (and refused) meanwhile.
        self.resting: dict[str, datetime] = {}
        #: channel → (newest queued send id, when it was first seen): see _batch_ready.
        self._growth: dict[str, tuple[int, float]] = {}
        #: channel → send key → its message, rendered while the batch filled (see _render_ahead),
        #: and the newest send id rendered so. Only a cache: a claimed row missing here is rendered then.
        self._rendered: dict[str, dict[str, OutboundMessage]] = {}
        self._rendered_up_to: dict[str, int] = {}
        self._rendering = threading.Lock()

    # --- the send path ------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None, *, linger: bool = False) -> int:
        """Claim and send one batch per channel. Returns the number of sends attempted.
        With ``linger`` a channel's batch waits while a wave is still adding rows (see _batch_ready)."""
        if is_paused(self.store):
            return 0
        total = 0
        now = now or utcnow()
        for kind, channel in self.channels.items():
            if kind in self.disabled or self.resting.get(kind, now) > now:
                continue
            if linger and not self._batch_ready(kind, channel.max_batch, now):
                self._render_ahead(kind, channel.max_batch, now)
                continue
            rows = self._claim(kind, channel.max_batch, now)
            if rows:
                total += len(rows)
                self._send(channel, rows)
        return total

    def _batch_ready(self, kind: str, limit: int, now: datetime) -> bool:
        """A full batch is due, or no row was added for SEND_LINGER: a wave queues its sends page by
        page, and sending each page as it lands would cost one provider call per page, not per batch."""
        sends = schema.sends
        with self.store.read() as conn:
            n, top = conn.execute(
                select(func.count(), func.max(sends.c.id)).where(
                    sends.c.state == "queued", sends.c.channel == kind, sends.c.not_before <= now
                )
            ).one()
        if not n:
            return False
        if n >= limit:
            return True
        seen = self._growth.get(kind)
        moment = time.monotonic()
        if seen is None or seen[0] != top:
            self._growth[kind] = (top, moment)
            return False
        return moment - seen[1] >= SEND_LINGER.total_seconds()

    def _render_ahead(self, kind: str, limit: int, now: datetime) -> None:
        """Render the queued rows of a batch that is still filling, so that once it is full only its
        claim and the provider's call remain (a wave's last batch waits for its last page). Nothing
        is claimed or changed: a row claimed later, by this worker or another, is checked against
        suppressions then as always, and one rendered here but claimed elsewhere is just dropped."""
        if not self._rendering.acquire(blocking=False):
            return  # the other worker is at it
        try:
            cache = self._rendered.setdefault(kind, {})
            room = 2 * limit - len(cache)
            if room <= 0:  # what is left was claimed elsewhere or cancelled
                cache.clear()
                return
            sends = schema.sends
            query = (
                _due(kind, now)
                .where(sends.c.id > self._rendered_up_to.get(kind, 0))
                .order_by(sends.c.id)
                .limit(min(room, limit))
            )
            with self.store.read() as conn:
                rows = [r._asdict() for r in conn.execute(query)]
            for row in rows:
                try:
                    cache[row["send_key"]] = self.message_for(row)
                except Exception:  # noqa: S112 - rendered again when claimed, where a failure is recorded
                    continue
            if rows:
                self._rendered_up_to[kind] = rows[-1]["id"]
        finally:
            self._rendering.release()

    def _message(self, kind: str, row: Mapping[str, Any]) -> OutboundMessage:
        """A claimed row's message: the one rendered ahead, or rendered now."""
        ahead = self._rendered.get(kind, {}).pop(row["send_key"], None)  # one dict operation: atomic
        return ahead if ahead is not None else self.message_for(row)

    def _claim(self, kind: str, limit: int, now: datetime) -> list[dict[str, Any]]:
        sends, sup = schema.sends, schema.suppressions
        with self.store.begin() as conn:
            query = _due(kind, now).order_by(sends.c.not_before, sends.c.id).limit(limit)
            if not self.store.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = [r._asdict() for r in conn.execute(query)]
            if not rows:
                return []
            # The person may have unsubscribed since the wave was planned: check again, at the last moment.
            suppressed = {
                r.address: r.reason
                for r in conn.execute(
                    select(sup.c.address, sup.c.reason).where(
                        sup.c.channel == kind, sup.c.address.in_([r["address"] for r in rows])
                    )
                )
            }
            cancel = [r["id"] for r in rows if r["address"] in suppressed and r["kind"] != "confirmation"]
            if cancel:
                conn.execute(
                    update(sends)
                    .where(sends.c.id.in_(cancel))
                    .values(state="cancelled", error="suppressed before sending", updated_at=now)
                )
            rows = [r for r in rows if r["id"] not in cancel]
            if rows:
                conn.execute(
                    update(sends)
                    .where(sends.c.id.in_([r["id"] for r in rows]))
                    .values(state="sending", claimed_by=self.worker_id, claimed_at=now, updated_at=now)
                )
            crash_point("send.claimed_uncommitted")
        return rows

    def _send(self, channel: Channel, rows: list[dict[str, Any]]) -> None:
        crash_point("send.claimed")
        messages: list[OutboundMessage] = []
        outcomes: dict[str, SendOutcome] = {}
        for row in rows:
            try:
                messages.append(self._message(channel.kind, row))
            except Exception as exc:  # a template problem fails this message, not the batch
                outcomes[row["send_key"]] = SendOutcome(row["send_key"], "failed", reason=f"render: {exc}")
        try:
            for outcome in channel.send(messages) if messages else []:
                outcomes[outcome.send_key] = outcome
        except RateLimited as exc:
            self.resting[channel.kind] = utcnow() + timedelta(seconds=exc.retry_after or 60.0)
            self._requeue([m.send_key for m in messages], exc.retry_after or 60.0, str(exc))
        except AuthFailed as exc:
            self.disabled[channel.kind] = str(exc)
            self._requeue([m.send_key for m in messages], 0.0, str(exc))
            log.error("channel.disabled", channel=channel.name, kind=channel.kind, error=str(exc))
        except ConnectorUnavailable as exc:
            self.resting[channel.kind] = utcnow() + timedelta(seconds=30.0)
            self._requeue([m.send_key for m in messages], 30.0, str(exc))
        except (AmbiguousOutcome, Exception) as exc:
            # We cannot know whether the provider took them: never resend blindly.
            for m in messages:
                outcomes[m.send_key] = SendOutcome(
                    m.send_key, "unknown", reason=f"{type(exc).__name__}: {exc}"
                )
            log.error("send.ambiguous", channel=channel.name, count=len(messages), error=str(exc))
        else:
            # A channel that returned no outcome for a message broke its contract; it may have sent
            # it, so ``unknown`` (reconciled, never resent) rather than ``sending`` for ever.
            missing = [m.send_key for m in messages if m.send_key not in outcomes]
            for key in missing:
                outcomes[key] = SendOutcome(key, "unknown", reason="the channel returned no outcome")
            if missing:
                log.error("send.no_outcome", channel=channel.name, count=len(missing))
        crash_point("send.before_record")
        self.record(outcomes.values())
        crash_point("send.recorded")

    def _requeue(self, keys: Sequence[str], delay: float, reason: str) -> None:
        """Nothing was accepted: put the sends back in the queue (safe, by the channel's contract)."""
        if not keys:
            return
        with self.store.begin() as conn:
            conn.execute(
                update(schema.sends)
                .where(schema.sends.c.send_key.in_(list(keys)), schema.sends.c.state == "sending")
                .values(
                    state="queued",
                    not_before=utcnow() + timedelta(seconds=delay),
                    error=reason[:2000],
                    claimed_by=None,
                    updated_at=utcnow(),
                )
            )
        log.warning("send.deferred", count=len(keys), retry_in=delay, reason=reason)

    def record(self, outcomes: Sequence[SendOutcome] | Any) -> None:
        """Store provider outcomes (and suppress addresses the provider says are opted out)."""
        outcomes = list(outcomes)
        if not outcomes:
            return
        now = utcnow()
        sends = schema.sends
        refused = [o.send_key for o in outcomes if o.suppress]
        with self.store.begin() as conn:
            rows = (
                {
                    r.send_key: r
                    for r in conn.execute(
                        select(sends.c.send_key, sends.c.channel, sends.c.address, sends.c.contact_id).where(
                            sends.c.send_key.in_(refused)
                        )
                    )
                }
                if refused
                else {}
            )
            # One UPDATE per distinct outcome (a batch SendGrid accepted is one), not one per send.
            groups: dict[tuple[Any, ...], list[str]] = {}
            for o in outcomes:
                groups.setdefault((o.status, o.transient, o.provider_id, o.reason), []).append(o.send_key)
            for (status, transient, provider_id, reason), keys in groups.items():
                values: dict[str, Any] = {"state": status, "updated_at": now, "provider_id": provider_id}
                if status == "failed" and transient:
                    values.update(state="queued", claimed_by=None, not_before=now + RETRY_TRANSIENT)
                if status == "sent":
                    values["sent_at"] = now
                if reason:
                    values["error"] = reason[:2000]
                # Only a send still in flight takes the outcome: if recovery already marked it
                # unknown and reconciled it (a paused replica waking up), the late answer is dropped.
                for start in range(0, len(keys), RECORD_CHUNK):
                    conn.execute(
                        update(sends)
                        .where(
                            sends.c.send_key.in_(keys[start : start + RECORD_CHUNK]),
                            sends.c.state.in_(("sending", "unknown")),
                        )
                        .values(**values)
                    )
            for o in outcomes:
                row = rows.get(o.send_key)
                if o.suppress and row is not None:
                    suppress(
                        self.store,
                        conn,
                        row.channel,
                        row.address,
                        "provider_refused",
                        "send",
                        contact_id=row.contact_id,
                    )
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        log.info("send.recorded", **counts)

    # --- rendering --------------------------------------------------------------------------------

    def message_for(self, row: Mapping[str, Any]) -> OutboundMessage:
        program = next((p for p in self.config.program if p.name == row["program"]), None)
        send_id = row["survey_send_id"] or row["id"]
        contact = row["snapshot"]
        if row["kind"] in ("playbook", "confirmation"):
            content = row["content"] or {}
            if row["channel"] == "sms":
                return self.renderer.plain_sms(
                    send_key=row["send_key"],
                    to=row["address"],
                    body=content.get("text", ""),
                    purpose=row["kind"],
                )
            return self.renderer.plain_email(
                send_id=send_id,
                send_key=row["send_key"],
                to=row["address"],
                subject=content.get("subject", ""),
                body=content.get("text", ""),
                language=row["language"],
                program=program,
                purpose=row["kind"],
            )
        if program is None:
            raise LookupError(f"program {row['program']!r} is no longer configured")
        reminder = row["kind"] == "reminder"
        if row["channel"] == "sms":
            return self.renderer.survey_sms(
                send_key=row["send_key"],
                to=row["address"],
                program=program,
                language=row["language"],
                reminder=reminder,
            )
        return self.renderer.survey_email(
            send_id=send_id,
            send_key=row["send_key"],
            to=row["address"],
            first_name=contact.get("first_name") or "",
            program=program,
            language=row["language"],
            reminder=reminder,
        )

    # --- recovery -----------------------------------------------------------------------------

    def mark_abandoned(self, *, worker_ids: Sequence[str] | None = None) -> int:
        """Sends left ``sending`` by a dead process become ``unknown`` (never back to ``queued``)."""
        sends = schema.sends
        cond = sends.c.state == "sending"
        if worker_ids is not None:
            cond = cond & sends.c.claimed_by.in_(list(worker_ids))
        with self.store.begin() as conn:
            result = conn.execute(update(sends).where(cond).values(state="unknown", updated_at=utcnow()))
        if result.rowcount:
            log.warning("send.unknown_after_crash", count=result.rowcount)
        return int(result.rowcount or 0)

    def reconcile(self) -> tuple[int, int, list[str]]:
        """Resolve ``unknown`` sends from provider evidence. Returns (sent, requeued, unresolved keys)."""
        sends = schema.sends
        with self.store.read() as conn:
            rows = conn.execute(
                select(
                    sends.c.send_key, sends.c.channel, sends.c.address, sends.c.claimed_at, sends.c.updated_at
                ).where(sends.c.state == "unknown")
            ).all()
        sent = requeued = 0
        unresolved: list[str] = []
        for kind, channel in self.channels.items():
            pending = [
                PendingSend(r.send_key, kind, r.address, r.claimed_at or r.updated_at)  # type: ignore[arg-type]
                for r in rows
                if r.channel == kind
            ]
            if not pending:
                continue
            evidence = channel.lookup(pending)
            with self.store.begin() as conn:
                for p in pending:
                    outcome = evidence.get(p.send_key)
                    if outcome is None:
                        unresolved.append(p.send_key)
                    elif outcome.status == "sent":
                        conn.execute(
                            update(sends)
                            .where(sends.c.send_key == p.send_key, sends.c.state == "unknown")
                            .values(
                                state="sent",
                                provider_id=outcome.provider_id,
                                sent_at=p.claimed_at,
                                updated_at=utcnow(),
                            )
                        )
                        sent += 1
                    else:
                        conn.execute(
                            update(sends)
                            .where(sends.c.send_key == p.send_key, sends.c.state == "unknown")
                            .values(state="queued", claimed_by=None, updated_at=utcnow())
                        )
                        requeued += 1
        if sent or requeued or unresolved:
            log.info("send.reconciled", sent=sent, requeued=requeued, unresolved=len(unresolved))
        return sent, requeued, unresolved


def suppress(
    store: Store,
    conn: Any,
    channel: str,
    address: str,
    reason: str,
    source: str,
    *,
    contact_id: str | None = None,
) -> bool:
    """Add a suppression (in the caller's transaction) and queue the CRM opt-out write-back.
    Returns False when the address was already suppressed."""
    added = store.insert_ignore(
        conn,
        schema.suppressions,
        {"channel": channel, "address": address, "reason": reason, "source": source, "created_at": utcnow()},
        "channel",
        "address",
    )
    if added:
        log.info("suppression.added", channel=channel, reason=reason, source=source)
        if contact_id:
            enqueue(store, conn, "crm_opt_out", {"contact_id": contact_id, "channel": channel})
    return added
