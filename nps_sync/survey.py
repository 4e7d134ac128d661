"""Survey waves: read a program's audience page by page and decide, for each contact, send / defer /
skip — recording the reason for every contact not surveyed now, the question ops ask most.

Reasons (stable names, shown by ``nps-sync wave PROGRAM --dry-run`` and stored in ``wave_decisions``):

=================  ===========================================================================
eligible           surveyed now (decision ``send``)
outside_window     outside the recipient's local send window: deferred to its next opening
no_address         no email address / phone number for the program's channel
invalid_address    the address in the CRM is not a valid email address or phone number
crm_opt_out        the CRM's own opt-out field is set for this channel
suppressed         unsubscribed, bounced, spam report or STOP (our suppression list)
recently_surveyed  surveyed within the program's re-survey interval
account_quota      the account already got the program's maximum number of surveys
open_callback      the account has an open detractor callback task
sampled_out        not drawn by the program's sampling
no_window          the recipient's possible time zones share no send window opening
bad_record         the CRM record could not be read (detail says why); the wave goes on
=================  ===========================================================================
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection, and_, func, select

from nps_sync.abc import CRM
from nps_sync.config import Config, ProgramConfig
from nps_sync.durations import TimeWindow
from nps_sync.forget import tombstones_for
from nps_sync.models import Audience, ChannelKind, Contact
from nps_sync.readahead import prefetched
from nps_sync.render import choose_language
from nps_sync.store import schema
from nps_sync.store.db import Store, unindexed, utcnow
from nps_sync.timezones import in_window, next_window_start, normalize_email, normalize_phone, resolve_zone

log = structlog.get_logger("nps_sync.survey")

ACTIVE_SEND_STATES = ("queued", "sending", "sent", "unknown")


@dataclass(frozen=True)
class Decision:
    contact: Contact
    decision: Literal["send", "defer", "skip"]
    reason: str
    detail: str = ""
    channel: ChannelKind | None = None
    address: str | None = None
    not_before: datetime | None = None
    language: str = "en"
    time_zone: str = "UTC"


_CONTACT_FIELDS = tuple(f.name for f in fields(Contact))


def snapshot(contact: Contact) -> dict[str, object]:
    """The contact as stored with a send (JSON-safe: every field but ``fields`` is a str, bool or
    None, so a shallow copy is what ``dataclasses.asdict`` would give, at a fraction of its cost)."""
    data: dict[str, object] = {name: getattr(contact, name) for name in _CONTACT_FIELDS}
    data["fields"] = dict(contact.fields)
    return data


def contact_from_snapshot(data: dict[str, object]) -> Contact:
    return Contact(**data)  # type: ignore[arg-type]


def survey_key(program: str, wave_id: str, contact_id: str) -> str:
    return f"{program}|{wave_id}|{contact_id}|survey"


class WavePlanner:
    """Decides who gets surveyed in one wave of one program."""

    def __init__(self, store: Store, config: Config, crm: CRM, *, now: datetime | None = None) -> None:
        self.store = store
        self.config = config
        self.crm = crm
        self.now = now or utcnow()

    def decisions(self, program: ProgramConfig, wave_id: str) -> Iterator[list[Decision]]:
        """Yield decisions page by page (the audience is never held in memory whole)."""
        channel: ChannelKind = "sms" if program.channel == "sms" else "email"
        audience = Audience(
            program=program.name,
            filter=program.audience,
            channel=channel,
            extra_fields=program.extra_fields,
        )
        planned_per_account: Counter[str] = Counter()
        callbacks = self._accounts_with_open_callbacks()
        for page in prefetched(self.crm.iter_audience(audience), ahead=PREFETCH_CONTACTS):
            with self.store.read() as conn:
                context = _PageContext.load(conn, page, program, self.now, channel)
            out = []
            for contact in page:
                try:
                    out.append(
                        self._decide(
                            contact, program, channel, wave_id, context, planned_per_account, callbacks
                        )
                    )
                except Exception as exc:  # one bad CRM record never breaks the wave
                    out.append(Decision(contact, "skip", "bad_record", f"{type(exc).__name__}: {exc}"))
            yield out

    def _decide(
        self,
        contact: Contact,
        program: ProgramConfig,
        channel: ChannelKind,
        wave_id: str,
        ctx: _PageContext,
        planned_per_account: Counter[str],
        callbacks: set[str],
    ) -> Decision:
        raw = contact.email if channel == "email" else contact.phone
        if not raw:
            return Decision(
                contact,
                "skip",
                "no_address",
                f"no {'email address' if channel == 'email' else 'phone number'} in the CRM",
            )
        address = (
            normalize_email(raw)
            if channel == "email"
            else normalize_phone(raw, default_region=_region(contact))
        )
        if address is None:
            return Decision(
                contact,
                "skip",
                "invalid_address",
                f"not a valid {'email address' if channel == 'email' else 'phone number'}: {raw!r}",
            )
        if contact.email_opt_out if channel == "email" else contact.sms_opt_out:
            return Decision(contact, "skip", "crm_opt_out", f"the CRM's {channel} opt-out field is set")
        if (channel, address) in ctx.suppressed:
            return Decision(
                contact,
                "skip",
                "suppressed",
                f"{address} is suppressed: {ctx.suppressed[(channel, address)]}",
            )
        last = ctx.last_survey.get(contact.id)
        if last is not None and last[0] > self.now - program.resurvey_after:
            next_at = (last[0] + program.resurvey_after).date().isoformat()
            return Decision(
                contact,
                "skip",
                "recently_surveyed",
                f"surveyed {last[0].date().isoformat()} ({last[1]}); next survey after {next_at}",
            )
        if program.skip_open_callbacks and contact.account_id in callbacks:
            return Decision(
                contact,
                "skip",
                "open_callback",
                f"account {contact.account_name or contact.account_id} has an open detractor callback",
            )
        if program.account_max and contact.account_id:
            used = ctx.account_counts.get(contact.account_id, 0) + planned_per_account[contact.account_id]
            if used >= program.account_max:
                return Decision(
                    contact,
                    "skip",
                    "account_quota",
                    f"account {contact.account_name or contact.account_id} already has {used} of "
                    f"{program.account_max} surveys in {program.account_interval.days} days",
                )
        if program.sample < 1.0 and _fraction(f"{wave_id}|{contact.id}") >= program.sample:
            return Decision(
                contact, "skip", "sampled_out", f"sampling keeps {program.sample:.0%} of the audience"
            )

        zone = resolve_zone(
            crm_zone=contact.time_zone,
            phone=contact.phone,
            country=contact.country,
            default=program.default_time_zone,
        )
        windows = [program.send_window]
        if channel == "sms":
            windows.append(self.config.channels.sms.quiet_hours)
        earliest = (
            self.now + program.drip_over * _fraction(f"drip|{contact.id}") if program.drip_over else self.now
        )
        start = next_opening(earliest, zone.zones, windows)
        tz_name = zone.zones[0].key
        language = choose_language(contact.locale, program)
        if start is None:
            return Decision(
                contact,
                "skip",
                "no_window",
                f"no common {program.send_window} window in {', '.join(z.key for z in zone.zones)}",
                channel=channel,
                address=address,
                language=language,
                time_zone=tz_name,
            )
        if contact.account_id:
            planned_per_account[contact.account_id] += 1
        if start <= self.now + timedelta(minutes=1):
            return Decision(
                contact,
                "send",
                "eligible",
                f"time zone {zone.zones[0].key} ({zone.source})",
                not_before=self.now,
                channel=channel,
                address=address,
                language=language,
                time_zone=tz_name,
            )
        local = start.astimezone(zone.zones[0])
        why = "drip" if start == earliest else f"outside {program.send_window} in {zone.zones[0].key}"
        return Decision(
            contact,
            "defer",
            "outside_window",
            f"{why}; sends at {local:%Y-%m-%d %H:%M} local",
            not_before=start,
            channel=channel,
            address=address,
            language=language,
            time_zone=tz_name,
        )

    def _accounts_with_open_callbacks(self) -> set[str]:
        tasks, runs, responses = schema.crm_tasks, schema.playbook_runs, schema.responses
        with self.store.read() as conn:
            rows = conn.execute(
                select(tasks.c.account_id, tasks.c.task_id)
                .join(runs, runs.c.id == tasks.c.run_id)
                .join(responses, responses.c.id == runs.c.response_id)
                .where(
                    tasks.c.completed.is_(False),
                    responses.c.category == "detractor",
                    tasks.c.account_id.is_not(None),
                )
            ).all()
        if not rows:
            return set()
        states = self.crm.get_tasks([r.task_id for r in rows if r.task_id])
        done = [tid for tid, st in states.items() if st.completed]
        if done:
            with self.store.begin() as conn:
                conn.execute(tasks.update().where(tasks.c.task_id.in_(done)).values(completed=True))
        return {r.account_id for r in rows if r.task_id not in done}


@dataclass
class _PageContext:
    """What the store knows about one page of contacts, read in three queries."""

    suppressed: dict[tuple[str, str], str]
    last_survey: dict[str, tuple[datetime, str]]
    account_counts: dict[str, int]

    @classmethod
    def load(
        cls,
        conn: Connection,
        page: Sequence[Contact],
        program: ProgramConfig,
        now: datetime,
        channel: ChannelKind,
    ) -> _PageContext:
        # Only the wave's own channel is looked up: _decide asks about no other address.
        emails = (
            [e for e in (normalize_email(c.email) for c in page if c.email) if e]
            if channel == "email"
            else []
        )
        # Read national numbers in the contact's country, exactly as _decide does.
        phones = (
            [p for p in (normalize_phone(c.phone, default_region=_region(c)) for c in page if c.phone) if p]
            if channel == "sms"
            else []
        )
        sup = schema.suppressions
        # Erased people are suppressed under a keyed hash of their address (nps_sync.forget).
        hashed = tombstones_for(conn, [("email", e) for e in emails] + [("sms", p) for p in phones])
        suppressed = {
            hashed.get(r.address, (r.channel, r.address)): r.reason
            for r in conn.execute(
                select(sup.c.channel, sup.c.address, sup.c.reason).where(
                    # With the channel the unique (channel, address) index serves the lookup.
                    sup.c.channel == channel,
                    sup.c.address.in_(emails + phones + list(hashed)),
                )
            )
        }
        sends = schema.sends
        ids = [c.id for c in page]
        # The latest survey inside the interval wins (rows come oldest first), with its own program:
        # max(program) next to max(created_at) would name a program that did not send it.
        last = {
            r.contact_id: (r.created_at, r.program)
            for r in conn.execute(
                select(sends.c.contact_id, sends.c.created_at, sends.c.program)
                .where(
                    sends.c.contact_id.in_(ids),
                    sends.c.kind == "survey",
                    unindexed(sends.c.state).in_(ACTIVE_SEND_STATES),
                    sends.c.created_at > now - program.resurvey_after,
                )
                .order_by(sends.c.created_at, sends.c.id)
            )
        }
        accounts = sorted({c.account_id for c in page if c.account_id})
        counts: dict[str, int] = {}
        if program.account_max and accounts:
            counts = {
                r.account_id: r.n
                for r in conn.execute(
                    select(sends.c.account_id, func.count().label("n"))
                    .where(
                        and_(
                            sends.c.account_id.in_(accounts),
                            sends.c.program == program.name,
                            sends.c.kind == "survey",
                            unindexed(sends.c.state).in_(ACTIVE_SEND_STATES),
                            sends.c.created_at > now - program.account_interval,
                        )
                    )
                    .group_by(sends.c.account_id)
                )
            }
        return cls(suppressed, last, counts)


#: How many contacts the audience reader may hold ahead of the decisions (always at least one page).
#: Paging is sequential — each page needs the previous one's cursor — so a page not asked for while
#: the decisions wait (for SQLite's writer during a send batch's claim, say) is time the wave never
#: gets back. A thousand contacts is ten HubSpot pages, about 0.4 s of round trips; a 2,000-row
#: Salesforce page still waits alone, so memory stays at one page ahead.
PREFETCH_CONTACTS = 1000


def next_opening(at: datetime, zones: Sequence[ZoneInfo], windows: Sequence[TimeWindow]) -> datetime | None:
    """The first instant at or after ``at`` inside every window in every zone (None if none within 8 days)."""
    candidate: datetime | None = at
    for _ in range(20):
        if candidate is None:
            return None
        moved = False
        for window in windows:
            if not in_window(candidate, zones, window):
                candidate = next_window_start(candidate, zones, window)
                moved = True
                if candidate is None:
                    return None
        if not moved:
            return candidate
    return None


def _fraction(text: str) -> float:
    """A stable number in [0, 1) from text (sampling and drip must not change between runs)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / float(1 << 48)


def _region(contact: Contact) -> str | None:
    country = (contact.country or "").strip()
    return country.upper() if len(country) == 2 else None
