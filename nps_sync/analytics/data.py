"""Answers as analytics sees them: each response joined with the send it answers (the contact as the
CRM showed it at send time), read once from the store and then grouped in memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from nps_sync.store import schema

#: Segments every answer has besides the CRM ``fields`` captured at send time.
BUILTIN_SEGMENTS = ("program", "language", "channel", "account_name", "owner_id", "country")
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class Answer:
    response_id: int
    send_id: int
    program: str
    contact_id: str
    account_id: str | None
    score: int
    category: str
    comment: str | None
    channel: str
    language: str
    responded_at: datetime
    snapshot: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> Mapping[str, Any]:
        value = self.snapshot.get("fields")
        return value if isinstance(value, Mapping) else {}

    @property
    def name(self) -> str:
        first, last = self.snapshot.get("first_name") or "", self.snapshot.get("last_name") or ""
        return f"{first} {last}".strip() or self.contact_id

    @property
    def account_name(self) -> str:
        return str(self.snapshot.get("account_name") or self.account_id or NONE_LABEL)

    def segment(self, name: str) -> str:
        """The answer's value for a segment: a built-in, else a CRM field captured at send time."""
        if name == "program":
            value: Any = self.program
        elif name == "language":
            value = self.language
        elif name == "channel":
            value = self.channel
        elif name == "account_name":
            value = self.snapshot.get("account_name")
        elif name in ("owner_id", "country", "locale", "account_owner_id"):
            value = self.snapshot.get(name)
        else:
            value = self.fields.get(name)
        return NONE_LABEL if value is None or value == "" else str(value)


def load_answers(
    conn: Connection,
    *,
    program: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Answer]:
    """Every answer (oldest first), optionally of one program and within [since, until)."""
    r, s = schema.responses, schema.sends
    query = (
        select(
            r.c.id,
            r.c.send_id,
            r.c.program,
            r.c.contact_id,
            r.c.account_id,
            r.c.score,
            r.c.category,
            r.c.comment,
            r.c.channel,
            r.c.responded_at,
            s.c.language,
            s.c.snapshot,
        )
        .join(s, s.c.id == r.c.send_id)
        .order_by(r.c.responded_at, r.c.id)
    )
    if program is not None:
        query = query.where(r.c.program == program)
    if since is not None:
        query = query.where(r.c.responded_at >= since)
    if until is not None:
        query = query.where(r.c.responded_at < until)
    return [
        Answer(
            response_id=row.id,
            send_id=row.send_id,
            program=row.program,
            contact_id=row.contact_id,
            account_id=row.account_id,
            score=row.score,
            category=row.category,
            comment=row.comment,
            channel=row.channel,
            language=row.language,
            responded_at=row.responded_at,
            snapshot=row.snapshot if isinstance(row.snapshot, dict) else {},
        )
        for row in conn.execute(query)
    ]


def segment_names(answers: Iterable[Answer]) -> list[str]:
    """Built-in segments, then every CRM field seen in a snapshot (sorted)."""
    seen: set[str] = set()
    for a in answers:
        seen.update(str(k) for k in a.fields)
    return [*BUILTIN_SEGMENTS, *sorted(seen - set(BUILTIN_SEGMENTS))]


@dataclass(frozen=True)
class ResponseRate:
    program: str
    sent: int
    answered: int

    @property
    def rate(self) -> float | None:
        return self.answered / self.sent if self.sent else None


def response_rates(
    conn: Connection, *, program: str | None = None, since: datetime | None = None
) -> list[ResponseRate]:
    """Per program: survey sends that went out (state ``sent``, reminders not counted) and how many
    of them were answered. ``since`` filters on the send time, so late answers to early sends count."""
    s, r = schema.sends, schema.responses
    query = (
        select(s.c.program, func.count(s.c.id), func.count(r.c.id))
        .select_from(s.outerjoin(r, r.c.send_id == s.c.id))
        .where(s.c.kind == "survey", s.c.state == "sent")
        .group_by(s.c.program)
        .order_by(s.c.program)
    )
    if program is not None:
        query = query.where(s.c.program == program)
    if since is not None:
        query = query.where(s.c.sent_at >= since)
    return [
        ResponseRate(program=p, sent=int(sent), answered=int(answered))
        for p, sent, answered in conn.execute(query)
    ]
