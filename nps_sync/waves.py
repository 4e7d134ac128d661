"""Run a wave: plan it (nps_sync.survey), record every decision, and queue the sends.

A wave's id is the program plus its scheduled fire time, and every send key includes it, so running
the same wave again after a crash continues it instead of surveying anyone twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, select, update

from nps_sync.abc import CRM
from nps_sync.config import Config, ProgramConfig
from nps_sync.store import schema
from nps_sync.store.db import Store, unindexed, utcnow
from nps_sync.survey import Decision, WavePlanner, next_opening, snapshot, survey_key
from nps_sync.timezones import normalize_phone, resolve_zone

log = structlog.get_logger("nps_sync.waves")


@dataclass
class WaveSummary:
    wave_id: str
    program: str
    counts: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)  # only kept for dry runs

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def wave_id_for(program: str, fire_at: datetime) -> str:
    """The same id on every machine (UTC), so replicas in different zones agree on a wave."""
    return f"{program}@{fire_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%MZ')}"


def run_wave(
    store: Store,
    config: Config,
    crm: CRM,
    program: ProgramConfig,
    wave_id: str,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    on_page: Callable[[list[Decision]], None] | None = None,
    on_queued: Callable[[int], None] | None = None,
) -> WaveSummary:
    """Decide and record the program's audience page by page. ``on_page`` sees each page's
    decisions before they are recorded, ``on_queued`` the number of sends each recorded page queued."""
    now = now or utcnow()
    summary = WaveSummary(wave_id, program.name)
    planner = WavePlanner(store, config, crm, now=now)
    if not dry_run:
        with store.begin() as conn:
            store.insert_ignore(
                conn,
                schema.waves,
                {"id": wave_id, "program": program.name, "state": "running", "counts": {}, "started_at": now},
                "id",
            )
        log.info("wave.started", program=program.name, wave_id=wave_id)
    for page in planner.decisions(program, wave_id):
        for d in page:
            summary.counts[d.reason] += 1
        if on_page is not None:
            on_page(page)
        if dry_run:
            summary.decisions.extend(page)
            continue
        queued = _record_page(store, program, wave_id, page, now)
        if on_queued is not None:
            on_queued(queued)
    if not dry_run:
        decisions = schema.wave_decisions
        with store.begin() as conn:
            # Counted from what was recorded, so a wave resumed after a crash reports the whole wave.
            summary.counts = Counter(
                {
                    str(reason): int(n)
                    for reason, n in conn.execute(
                        select(decisions.c.reason, func.count())
                        .where(decisions.c.wave_id == wave_id)
                        .group_by(decisions.c.reason)
                    )
                }
            )
            conn.execute(
                update(schema.waves)
                .where(schema.waves.c.id == wave_id)
                .values(state="done", counts=dict(summary.counts), finished_at=utcnow())
            )
        log.info("wave.finished", program=program.name, wave_id=wave_id, **dict(summary.counts))
    return summary


def _record_page(
    store: Store, program: ProgramConfig, wave_id: str, page: list[Decision], now: datetime
) -> int:
    """Record a page's decisions and queue its sends; returns how many sends it queued."""
    decisions = schema.wave_decisions
    with store.begin() as conn:
        # A wave resumed after a crash meets contacts it already decided (their survey is queued in
        # this very wave): the first decision stands, so nothing is recorded or queued twice.
        decided = set(
            conn.execute(
                select(decisions.c.contact_id).where(
                    unindexed(decisions.c.wave_id) == wave_id,
                    decisions.c.contact_id.in_([d.contact.id for d in page]),
                )
            ).scalars()
        )
        page = [d for d in page if d.contact.id not in decided]
        if not page:
            return 0
        conn.execute(
            schema.wave_decisions.insert(),
            [
                {
                    "wave_id": wave_id,
                    "program": program.name,
                    "contact_id": d.contact.id,
                    "decision": d.decision,
                    "reason": d.reason,
                    "detail": d.detail,
                    "created_at": now,
                }
                for d in page
            ],
        )
        rows = []
        for d in page:
            if d.decision == "skip":
                continue
            assert d.channel is not None
            assert d.address is not None
            assert d.not_before is not None
            rows.append(
                {
                    "send_key": survey_key(program.name, wave_id, d.contact.id),
                    "program": program.name,
                    "wave_id": wave_id,
                    "contact_id": d.contact.id,
                    "account_id": d.contact.account_id,
                    "kind": "survey",
                    "channel": d.channel,
                    "address": d.address,
                    "language": d.language,
                    "time_zone": d.time_zone,
                    "state": "queued",
                    "not_before": d.not_before,
                    "snapshot": snapshot(d.contact),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        # One statement for the page (a row already there from an interrupted run is kept as it is).
        store.insert_ignore_many(conn, schema.sends, rows, "send_key")
    return len(rows)


def schedule_followups(store: Store, config: Config, *, now: datetime | None = None) -> int:
    """Queue reminders to non-respondents and the SMS step of ``email_then_sms`` programs. Idempotent:
    each follow-up has its own send key. Returns how many were queued."""
    now = now or utcnow()
    queued = 0
    sends, responses = schema.sends, schema.responses
    for program in config.program:
        if not program.enabled:
            continue
        wanted = []
        if program.reminders.count:
            wanted.append("reminder")
        if program.channel == "email_then_sms":
            wanted.append("sms")
        if not wanted:
            continue
        with store.read() as conn:
            rows = (
                conn.execute(
                    select(sends)
                    .where(
                        sends.c.program == program.name,
                        sends.c.kind == "survey",
                        sends.c.state == "sent",
                        ~exists().where(responses.c.send_id == sends.c.id),
                    )
                    .limit(5000)
                )
                .mappings()
                .all()
            )
            followups = {
                (r.survey_send_id, r.send_key.rsplit("|", 1)[1]): r.sent_at or r.created_at
                for r in conn.execute(
                    select(
                        sends.c.survey_send_id, sends.c.send_key, sends.c.sent_at, sends.c.created_at
                    ).where(
                        and_(sends.c.program == program.name, sends.c.kind.in_(("reminder", "followup_sms")))
                    )
                )
            }
        new_rows = []
        for row in rows:
            sent_at = row["sent_at"] or row["created_at"]
            if "reminder" in wanted and row["channel"] in ("email", "sms"):
                done = [
                    n
                    for n in range(1, program.reminders.count + 1)
                    if (row["id"], f"reminder{n}") in followups
                ]
                nxt = len(done) + 1
                last_at = followups.get((row["id"], f"reminder{len(done)}"), sent_at) if done else sent_at
                if nxt <= program.reminders.count and last_at + program.reminders.after <= now:
                    new_rows.append(
                        _followup(
                            row,
                            f"reminder{nxt}",
                            "reminder",
                            row["channel"],
                            row["address"],
                            now,
                            config,
                            program,
                        )
                    )
            if (
                "sms" in wanted
                and row["channel"] == "email"
                and (row["id"], "sms") not in followups
                and sent_at + program.sms_after <= now
            ):
                contact = row["snapshot"]
                country = str(contact.get("country") or "").upper()
                phone = normalize_phone(
                    contact.get("phone"), default_region=country if len(country) == 2 else None
                )
                if phone and not contact.get("sms_opt_out"):
                    new_rows.append(_followup(row, "sms", "followup_sms", "sms", phone, now, config, program))
        if not new_rows:
            continue
        with store.begin() as conn:
            sup = schema.suppressions
            suppressed = {
                (r.channel, r.address)
                for r in conn.execute(
                    select(sup.c.channel, sup.c.address).where(
                        sup.c.address.in_([r["address"] for r in new_rows])
                    )
                )
            }
            for values in new_rows:
                if (values["channel"], values["address"]) in suppressed or values["not_before"] is None:
                    continue
                if store.insert_ignore(conn, sends, values, "send_key"):
                    queued += 1
    if queued:
        log.info("followups.queued", count=queued)
    return queued


def _followup(
    row: Any,
    suffix: str,
    kind: str,
    channel: str,
    address: str,
    now: datetime,
    config: Config,
    program: ProgramConfig,
) -> dict[str, object]:
    r = dict(row)
    contact = r["snapshot"]
    zone = resolve_zone(
        crm_zone=contact.get("time_zone"),
        phone=contact.get("phone"),
        country=contact.get("country"),
        default=program.default_time_zone,
    )
    windows = [program.send_window] + ([config.channels.sms.quiet_hours] if channel == "sms" else [])
    base_key = str(r["send_key"]).rsplit("|", 1)[0]
    return {
        "send_key": f"{base_key}|{suffix}",
        "program": r["program"],
        "wave_id": r["wave_id"],
        "contact_id": r["contact_id"],
        "account_id": r["account_id"],
        "kind": kind,
        "channel": channel,
        "address": address,
        "language": r["language"],
        "time_zone": r["time_zone"],
        "state": "queued",
        "not_before": next_opening(now, zone.zones, windows),
        "survey_send_id": r["id"],
        "snapshot": contact,
        "created_at": now,
        "updated_at": now,
    }
