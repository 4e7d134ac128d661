"""Recording answers: web form posts, SMS replies, provider events.

A response is stored in one transaction together with its write-back job, its account's roll-up
(when the response is new or changed category) and its playbook runs, so a crash loses none of
them. A later answer to the same survey replaces the earlier one. Webhook events are deduplicated
in the database on ``(provider, event_id)``, shared by every replica.

The web form's answers take a shorter path: ``accept`` commits the answer as an ``answer`` job (one
row) and the page is served at once; a worker records accepted answers in batches, many to a
transaction (``handle_answers``). A crash after the commit loses nothing: the job is claimed again.
Answers are applied in the order they were received, whichever worker records them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import structlog
from sqlalchemy import Connection, bindparam, delete, desc, select, update

from nps_sync.abc import InboundReply
from nps_sync.config import Config, ProgramConfig
from nps_sync.models import Category, ProviderEvent
from nps_sync.queue import enqueue, enqueue_many
from nps_sync.render import Renderer
from nps_sync.sending import suppress
from nps_sync.sms_text import SmsIntent, parse_sms
from nps_sync.store import schema
from nps_sync.store.db import Store, unindexed, utcnow
from nps_sync.store.group_commit import GroupCommit
from nps_sync.survey import contact_from_snapshot
from nps_sync.timezones import normalize_email, normalize_phone
from nps_sync.writeback import queue_rollups

log = structlog.get_logger("nps_sync.responses")

SUPPRESSING_EVENTS = {
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
COMMENT_WINDOW = timedelta(hours=24)
#: The job kind of an accepted web answer waiting to be recorded.
ANSWER_JOB = "answer"


# Recording an answer runs these for every answer: built once, they are compiled and keyed once.
_resp, _sends = schema.responses, schema.sends
#: A send by its id (``{"id": …}``); the survey pages read their send with it too.
SEND_BY_ID = select(_sends).where(_sends.c.id == bindparam("id"))
_SEND_BY_ID_LOCKED = SEND_BY_ID.with_for_update()
_RESPONSE_BY_SEND = select(_resp).where(_resp.c.send_id == bindparam("send_id"))
_PREVIOUS_CATEGORY = (
    select(_resp.c.category)
    .where(_resp.c.contact_id == bindparam("contact_id"), _resp.c.send_id != bindparam("send_id"))
    .order_by(desc(_resp.c.responded_at))
    .limit(1)
)
_INSERT_RESPONSE = _resp.insert()
_SENDS_BY_KEYS = select(
    _sends.c.send_key,
    _sends.c.id,
    _sends.c.channel,
    _sends.c.address,
    _sends.c.contact_id,
    _sends.c.state,
    _sends.c.claimed_at,
).where(_sends.c.send_key.in_(bindparam("keys", expanding=True)))
_UPDATE_RESPONSE = update(_resp).where(_resp.c.id == bindparam("rid"))
#: The newest survey sent to a phone number: which survey an SMS reply answers. Found through the
#: (channel, address) index; ``state`` is kept out of the index choice (see ``unindexed``: SQLite
#: would otherwise walk every sent survey of the wave, ~7 ms a reply at 10,000 sends).
_SMS_LAST_SENT_TO = (
    select(_sends.c.id, _sends.c.survey_send_id, _sends.c.language, _sends.c.program, _sends.c.contact_id)
    .where(
        _sends.c.channel == "sms",
        _sends.c.address == bindparam("phone"),
        unindexed(_sends.c.state) == "sent",
    )
    .order_by(desc(_sends.c.sent_at))
    .limit(1)
)


class EventHook(Protocol):
    """Where a recorded response goes next (the playbook engine): called inside the transaction."""

    def __call__(self, conn: Connection, response: RecordedResponse) -> None: ...


@dataclass(frozen=True)
class RecordedResponse:
    id: int
    send_id: int
    program: str
    contact_id: str
    account_id: str | None
    score: int
    category: Category
    previous_category: str | None
    comment: str | None
    replaced: bool
    category_changed: bool
    snapshot: dict[str, Any]
    responded_at: datetime


@dataclass(frozen=True)
class _Sms:
    """An inbound text, as the webhook gave it (the phone number normalized)."""

    provider: str
    event_id: str
    phone: str
    intent: SmsIntent


@dataclass(frozen=True)
class _SmsDone:
    """What committing an inbound text did; the reply is worded from it after the commit."""

    outcome: Literal["duplicate", "stop", "start", "help", "unmatched", "recorded", "commented", "invalid"]
    language: str = "en"
    program: ProgramConfig | None = None
    recorded: RecordedResponse | None = None
    #: STOP: the number was newly suppressed; START: a suppression was lifted.
    changed: bool = False


class ResponseError(ValueError):
    """The answer cannot be recorded (unknown survey, score outside 0–10)."""


class Responses:
    def __init__(
        self, store: Store, config: Config, renderer: Renderer, on_response: EventHook | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.renderer = renderer
        self.on_response = on_response
        #: Set when work was queued (a write-back, playbook steps), so idle workers start at once.
        self.work_queued = threading.Event()
        self._answers = GroupCommit(
            store, lambda conn, rows: enqueue_many(conn, ANSWER_JOB, rows), max_batch=500
        )
        #: Single provider events (Twilio posts two status callbacks a message, each on its own):
        #: those arriving together share a transaction. One bad event fails only its own callback
        #: (Twilio retries a failed callback only when connection overrides ask it to), so a failed
        #: batch is committed again row by row.
        self.event_commits = GroupCommit(
            store,
            self._record_events,
            max_batch=500,
            isolate_failures=True,
            after_commit=_log_events,
        )
        #: Inbound texts (answers, STOP, START, HELP): each with its dedupe row, those arriving
        #: together in one transaction; a failed batch is committed again text by text, so one bad
        #: text fails only its own webhook.
        self.sms_commits = GroupCommit(store, self._record_sms, max_batch=200, isolate_failures=True)

    # --- answers ----------------------------------------------------------------------------------

    def record(self, send_id: int, score: int, comment: str | None, *, channel: str) -> RecordedResponse:
        """Record (or replace) the answer to survey ``send_id``. Raises ResponseError."""
        with self.store.begin() as conn:
            recorded = self.record_in(conn, send_id, score, comment, channel=channel)
        assert recorded is not None  # received now: never older than what is stored
        self._recorded(recorded, channel)
        return recorded

    def accept(self, send_id: int, score: int, comment: str | None, *, channel: str) -> Category:
        """Take a web answer: commit it as an ``answer`` job and return its category. The worker
        records it (``handle_answers``). Raises ResponseError for a score outside 0–10."""
        try:
            category = Category.of(score)
        except ValueError as exc:
            raise ResponseError(str(exc)) from exc
        payload = {
            "send_id": send_id,
            "score": score,
            "comment": (comment or "").strip()[:5000] or None,
            "channel": channel,
            "received_at": utcnow().isoformat(),
        }
        # Answers arriving together are committed together; this returns once ours is committed.
        self._answers.submit(payload)
        self.work_queued.set()
        return category

    def handle_answers(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Job handler for ``answer``: record a batch of accepted answers in one transaction."""
        recorded: list[tuple[RecordedResponse, str]] = []
        # In survey order, so that concurrent batches lock surveys in the same order (no deadlock);
        # the order of answers to one survey does not matter: the one received last wins.
        ordered = sorted(payloads, key=lambda p: (int(p["send_id"]), str(p["received_at"])))
        with self.store.begin() as conn:
            for p in ordered:
                try:
                    response = self.record_in(
                        conn,
                        int(p["send_id"]),
                        int(p["score"]),
                        p.get("comment"),
                        channel=str(p["channel"]),
                        at=datetime.fromisoformat(p["received_at"]),
                    )
                except ResponseError as exc:
                    # The survey was erased (``nps-sync forget``) between the answer and now.
                    log.warning("response.dropped", send_id=p.get("send_id"), reason=str(exc))
                    continue
                if response is not None:
                    recorded.append((response, str(p["channel"])))
        for response, channel in recorded:
            self._recorded(response, channel)

    def record_in(
        self,
        conn: Connection,
        send_id: int,
        score: int,
        comment: str | None,
        *,
        channel: str,
        at: datetime | None = None,
    ) -> RecordedResponse | None:
        """``record`` inside the caller's transaction (so a webhook's dedupe row commits with it).
        ``at`` is when the answer was received (default now); an answer older than the one already
        stored for the survey is stale and ignored (returns None): the later answer wins."""
        try:
            category = Category.of(score)
        except ValueError as exc:
            raise ResponseError(str(exc)) from exc
        comment = (comment or "").strip()[:5000] or None
        now = at or utcnow()
        query = SEND_BY_ID if self.store.is_sqlite else _SEND_BY_ID_LOCKED
        # On PostgreSQL the survey's row is locked: two replicas recording answers to one survey
        # take turns, the second finding the first one's response (SQLite has one writer anyway).
        send = conn.execute(query, {"id": send_id}).mappings().first()
        if send is None or send["kind"] not in ("survey",):
            raise ResponseError(f"no survey with id {send_id}")
        existing = conn.execute(_RESPONSE_BY_SEND, {"send_id": send_id}).mappings().first()
        if existing is not None and existing["updated_at"] > now:
            return None
        previous = conn.execute(
            _PREVIOUS_CATEGORY, {"contact_id": send["contact_id"], "send_id": send_id}
        ).scalar_one_or_none()
        if existing is None:
            inserted = conn.execute(
                _INSERT_RESPONSE,
                {
                    "send_id": send_id,
                    "program": send["program"],
                    "contact_id": send["contact_id"],
                    "account_id": send["account_id"],
                    "score": score,
                    "category": category.value,
                    "previous_category": previous,
                    "comment": comment,
                    "channel": channel,
                    "responded_at": now,
                    "updated_at": now,
                },
            )
            assert inserted.inserted_primary_key is not None
            response_id = int(inserted.inserted_primary_key[0])
        else:
            response_id = int(existing["id"])
            conn.execute(
                _UPDATE_RESPONSE,
                {
                    "rid": response_id,
                    "score": score,
                    "category": category.value,
                    "comment": comment,
                    "channel": channel,
                    "updated_at": now,
                },
            )
        recorded = RecordedResponse(
            id=response_id,
            send_id=send_id,
            program=send["program"],
            contact_id=send["contact_id"],
            account_id=send["account_id"],
            score=score,
            category=category,
            previous_category=previous,
            comment=comment,
            replaced=existing is not None,
            category_changed=existing is None or existing["category"] != category.value,
            snapshot=dict(send["snapshot"]),
            responded_at=now if existing is None else existing["responded_at"],
        )
        enqueue(
            self.store,
            conn,
            "writeback",
            {"contact_id": send["contact_id"], "account_id": send["account_id"]},
        )
        account_id = send["account_id"]
        if account_id and recorded.category_changed:
            # Account NPS counts responses and their categories, from the store: a new response or
            # a changed category moves it (a new score in the same category or a comment does not),
            # and it need not wait for the contacts' write-back, so the answer queues it itself.
            queue_rollups(self.store, conn, [account_id])
        if self.on_response is not None and (
            existing is None or recorded.category_changed or (existing["score"] != score)
        ):
            self.on_response(conn, recorded)
        return recorded

    def _recorded(self, recorded: RecordedResponse, channel: str) -> None:
        """After the commit: log it and wake the workers."""
        log.info(
            "response.recorded",
            response_id=recorded.id,
            send_id=recorded.send_id,
            program=recorded.program,
            contact_id=recorded.contact_id,
            score=recorded.score,
            category=recorded.category.value,
            channel=channel,
            replaced=recorded.replaced,
        )
        self.work_queued.set()

    def add_comment(self, response_id: int, comment: str) -> None:
        with self.store.begin() as conn:
            self.add_comment_in(conn, response_id, comment)
        self.work_queued.set()

    def add_comment_in(
        self, conn: Connection, response_id: int, comment: str, *, append: bool = False
    ) -> None:
        """Set the comment (the web form), or with ``append`` add to it (several SMS in a row)."""
        row = (
            conn.execute(select(schema.responses).where(schema.responses.c.id == response_id))
            .mappings()
            .one()
        )
        text = comment.strip()
        if append and row["comment"]:
            text = f"{row['comment']}\n{text}"
        conn.execute(
            update(schema.responses)
            .where(schema.responses.c.id == response_id)
            .values(comment=text[:5000] or None, updated_at=utcnow())
        )
        enqueue(
            self.store,
            conn,
            "writeback",
            {"contact_id": row["contact_id"], "account_id": row["account_id"]},
        )

    def unsubscribe(self, send_id: int, *, source: str) -> bool:
        """Suppress the address a send went to (one-click or the unsubscribe page). True when new."""
        with self.store.begin() as conn:
            send = conn.execute(select(schema.sends).where(schema.sends.c.id == send_id)).mappings().first()
            if send is None:
                raise ResponseError(f"no send with id {send_id}")
            return suppress(
                self.store,
                conn,
                send["channel"],
                send["address"],
                "unsubscribed",
                source,
                contact_id=send["contact_id"],
            )

    # --- the InboundSink the channels' webhooks call ----------------------------------------------

    def _first_time(self, conn: Connection, provider: str, event_id: str, kind: str) -> bool:
        row = _event_row(provider, event_id, kind, None, "", utcnow())
        return self.store.insert_ignore(conn, schema.inbound_events, row, "provider", "event_id")

    def sms_received(
        self, *, provider: str, event_id: str, from_number: str, to_number: str, body: str
    ) -> InboundReply:
        """Record an inbound SMS and return the text to answer with. Texts arriving together are
        committed together (one write turn for a burst of answers); this returns once ours is."""
        sms = _Sms(provider, event_id, normalize_phone(from_number) or from_number, parse_sms(body))
        done: _SmsDone = self.sms_commits.submit(sms)
        language, program = done.language, done.program
        if done.outcome == "stop":
            return InboundReply(self.renderer.text(language, "sms_stop", program) if done.changed else None)
        if done.outcome == "start":
            # Confirm only a real resubscription: a START from a number that was never opted out
            # (or a second START) gets no text.
            return InboundReply(self.renderer.text(language, "sms_start", program) if done.changed else None)
        if done.outcome == "help":
            return InboundReply(self.config.channels.sms.help_text)
        if done.outcome in ("duplicate", "unmatched"):
            return InboundReply(None)
        if done.recorded is not None:
            self._recorded(done.recorded, "sms")
            if sms.intent.comment:
                return InboundReply(self.renderer.text(language, "sms_comment_thanks", program))
            follow_up = self.renderer.follow_up(language, done.recorded.category, program)
            return InboundReply(self.renderer.text(language, "sms_thanks", program, follow_up=follow_up))
        if done.outcome == "commented":
            self.work_queued.set()
            return InboundReply(self.renderer.text(language, "sms_comment_thanks", program))
        return InboundReply(self.renderer.text(language, "sms_invalid", program))

    def _record_sms(self, conn: Connection, batch: Sequence[_Sms]) -> list[_SmsDone]:
        """The group commit's writer: each text of the batch in one transaction, by phone number (so
        that two processes' batches lock surveys in the same order), a number's texts as they came."""
        done = {
            i: self._sms_in(conn, batch[i]) for i in sorted(range(len(batch)), key=lambda i: batch[i].phone)
        }
        return [done[i] for i in range(len(batch))]

    def _sms_in(self, conn: Connection, sms: _Sms) -> _SmsDone:
        intent, phone = sms.intent, sms.phone
        if not self._first_time(conn, sms.provider, sms.event_id, f"sms.{intent.kind}"):
            log.info("sms.duplicate", provider=sms.provider, event_id=sms.event_id)
            return _SmsDone("duplicate")
        last = conn.execute(_SMS_LAST_SENT_TO, {"phone": phone}).mappings().first()
        language = last["language"] if last else "en"
        program = next((p for p in self.config.program if last and p.name == last["program"]), None)
        contact_id = last["contact_id"] if last else None
        if intent.kind == "stop":
            added = suppress(self.store, conn, "sms", phone, "stop", "sms_reply", contact_id=contact_id)
            log.info("sms.stop", new=added)
            return _SmsDone("stop", language, program, changed=added)
        if intent.kind == "start":
            removed = conn.execute(
                delete(schema.suppressions).where(
                    schema.suppressions.c.channel == "sms", schema.suppressions.c.address == phone
                )
            ).rowcount
            if removed and contact_id:
                payload = {"contact_id": contact_id, "channel": "sms", "value": False}
                enqueue(self.store, conn, "crm_opt_out", payload)
            return _SmsDone("start", language, program, changed=bool(removed))
        if intent.kind == "help":
            return _SmsDone("help", language, program)
        if last is None:
            log.info("sms.unmatched", provider=sms.provider)
            return _SmsDone("unmatched")
        # The answer commits with the event's dedupe row: were they apart, a failure in between
        # would leave the event seen, the provider's retry dropped and the answer lost.
        survey_id = int(last["survey_send_id"] or last["id"])
        if intent.kind == "score" and intent.score is not None:
            recorded = self.record_in(conn, survey_id, intent.score, intent.comment, channel="sms")
            return _SmsDone("recorded" if recorded else "invalid", language, program, recorded=recorded)
        # Free text: the comment to a score given within the last 24 hours.
        response = conn.execute(
            select(schema.responses.c.id, schema.responses.c.updated_at).where(
                schema.responses.c.send_id == survey_id
            )
        ).first()
        if response is not None and response.updated_at >= utcnow() - COMMENT_WINDOW:
            self.add_comment_in(conn, int(response.id), intent.text, append=True)
            return _SmsDone("commented", language, program)
        return _SmsDone("invalid", language, program)

    def delivery_event(
        self,
        *,
        provider: str,
        event_id: str,
        event: str,
        send_key: str | None,
        address: str | None,
        occurred_at: datetime | None,
        detail: str = "",
    ) -> bool:
        """One event a request (Twilio's status callbacks): committed together with the events of
        other requests arriving meanwhile (group commit); returns once this one is committed."""
        event_ = ProviderEvent(provider, event_id, event, send_key, address, occurred_at, detail)
        fresh, _ = self.event_commits.submit(event_)
        return bool(fresh)

    def delivery_events(self, events: Sequence[ProviderEvent]) -> list[bool]:
        """A webhook's batch of provider events in one transaction (a SendGrid post carries up to
        hundreds): all recorded or none, so the provider's retry of a failed batch loses nothing."""
        with self.store.begin() as conn:
            recorded = self._record_events(conn, events)
        _log_events(events, recorded)
        return [fresh for fresh, _ in recorded]

    def _record_events(
        self, conn: Connection, events: Sequence[ProviderEvent]
    ) -> list[tuple[bool, str | None]]:
        """Each event's (new, suppression reason) in the caller's transaction, in order. The batch
        costs one INSERT of the event ids (the ones it adds are the new ones; an id twice in the
        batch is new the first time) and one look-up of their sends, whatever its size."""
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        firsts: list[tuple[str, str] | None] = []
        for e in events:
            row = _event_row(e.provider, e.event_id, e.event, e.send_key, e.detail, now)
            key = (row["provider"], row["event_id"])
            if key in rows:
                firsts.append(None)
                continue
            rows[key] = row
            firsts.append(key)
        added = self.store.insert_new(
            conn, schema.inbound_events, list(rows.values()), "provider", "event_id"
        )
        fresh = [key is not None and key in added for key in firsts]
        sends = _sends_by_key(
            conn, {e.send_key for e, new in zip(events, fresh, strict=True) if new and e.send_key}
        )
        return [
            self._apply_event(conn, e, sends.get(e.send_key) if e.send_key else None, now)
            if new
            else (False, None)
            for e, new in zip(events, fresh, strict=True)
        ]

    def _apply_event(
        self, conn: Connection, e: ProviderEvent, send: dict[str, Any] | None, now: datetime
    ) -> tuple[bool, str | None]:
        """What a new event does: suppress the address it condemns, settle a send left unknown."""
        address = e.address
        channel = send["channel"] if send else ("sms" if address and address.startswith("+") else "email")
        norm = (send["address"] if send else None) or (
            normalize_phone(address) if channel == "sms" else normalize_email(address)
        )
        reason = SUPPRESSING_EVENTS.get(e.event)
        if e.event in ("failed", "undelivered") and e.detail.strip() in ("21610", "21614", "21211"):
            reason = "opted_out_at_provider" if e.detail.strip() == "21610" else "invalid_number"
        if reason and norm:
            suppress(
                self.store,
                conn,
                channel,
                norm,
                reason,
                e.provider,
                contact_id=send["contact_id"] if send else None,
            )
        else:
            reason = None
        if (
            send is not None
            and e.event in ("delivered", "failed", "undelivered", "bounce", "dropped")
            and send["state"] == "unknown"
        ):
            # Provider evidence resolves a send left unknown by a crash.
            state = "sent" if e.event == "delivered" else "failed"
            # Like reconcile: a send that went out was sent when it was claimed (sent_at drives
            # reminders, re-survey intervals and which survey an SMS reply answers).
            sent_at = (send["claimed_at"] or e.occurred_at or now) if state == "sent" else None
            conn.execute(
                update(schema.sends)
                .where(schema.sends.c.id == send["id"])
                .values(state=state, sent_at=sent_at, updated_at=now)
            )
            send["state"] = state  # a second event of the batch for this send sees it settled
        return True, reason


def _event_row(
    provider: str, event_id: str, kind: str, send_key: str | None, detail: str, received_at: datetime
) -> dict[str, Any]:
    """An ``inbound_events`` row, its values cut to the columns' sizes (the event id is the key that
    tells a provider's retry from a new event)."""
    return {
        "provider": provider,
        "event_id": event_id[:200],
        "kind": kind[:40],
        "send_key": send_key,
        "detail": detail[:2000],
        "received_at": received_at,
    }


#: Send keys looked up per statement (well under SQLite's and PostgreSQL's bound-parameter limits).
SEND_KEYS_PER_QUERY = 500


def _sends_by_key(conn: Connection, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The sends the events of a batch are about, by send key, in one query per 500 keys."""
    found: dict[str, dict[str, Any]] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), SEND_KEYS_PER_QUERY):
        chunk = ordered[start : start + SEND_KEYS_PER_QUERY]
        for row in conn.execute(_SENDS_BY_KEYS, {"keys": chunk}).mappings():
            found[row["send_key"]] = dict(row)
    return found


def _log_events(events: Sequence[ProviderEvent], recorded: Sequence[tuple[bool, str | None]]) -> None:
    """One line a transaction: a webhook post's events, or the status callbacks committed together."""
    if not events:
        return
    fresh = [e for e, (new, _) in zip(events, recorded, strict=True) if new]
    suppressed = Counter(reason for _, reason in recorded if reason)
    log.info(
        "events.recorded",
        provider=events[0].provider,
        new=len(fresh),
        duplicates=len(events) - len(fresh),
        kinds=dict(Counter(e.event for e in fresh)),
        suppressed=dict(suppressed) or None,
    )


def contact_for(response: RecordedResponse) -> Any:
    return contact_from_snapshot(response.snapshot)
