"""Build everything a config describes — store, connectors, services — once, for the daemon, the CLI
and tests. The core passes these objects in; nothing reaches for globals."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import requests
import structlog
from sqlalchemy import Connection

from nps_sync import registry
from nps_sync.abc import CRM, Channel, ConnectorContext
from nps_sync.business_time import BusinessCalendar
from nps_sync.config import WEEKDAYS, Config, ConnectorTable
from nps_sync.errors import ConfigError
from nps_sync.playbooks import (
    PlaybookEngine,
    PlaybookEvent,
    PlaybookMessage,
    PlaybookServices,
    check_playbooks,
    load_playbooks,
)
from nps_sync.playbooks.review_gating import check_review_gating
from nps_sync.queue import JobQueue, Linger
from nps_sync.render import Renderer, check_texts, choose_language
from nps_sync.responses import ANSWER_JOB, RecordedResponse, Responses
from nps_sync.secrets import Secrets
from nps_sync.sending import Sender
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.survey import contact_from_snapshot, next_opening, snapshot
from nps_sync.testimonials import NOTE_JOB, Testimonials
from nps_sync.timezones import normalize_email, normalize_phone, resolve_zone
from nps_sync.tokens import Tokens, load_keys
from nps_sync.waves import WaveSummary, run_wave, schedule_followups, wave_id_for
from nps_sync.writeback import ROLLUP_JOB, WriteBack

log = structlog.get_logger("nps_sync.runtime")

#: A partial batch of answers' work waits for more unless answers paused this long (the burst ended).
QUIET = timedelta(seconds=0.5)
#: Write-back latency is no target: wait long enough for full CRM batches at 100 answers a second.
WRITEBACK_LINGER = Linger(quiet=QUIET, longest=timedelta(seconds=3))
#: Account roll-ups recomputed at once, one job per account, up to this many accounts.
ROLLUP_BATCH = 2000
#: Seconds start-up waits for connectors' background start (``Runtime.wait_ready``).
READY_TIMEOUT = 30.0


def calendar_for(config: Config) -> BusinessCalendar:
    cal = config.daemon.business_calendar
    return BusinessCalendar(
        tz=config.daemon.time_zone,
        work_days=frozenset(WEEKDAYS.index(d) for d in cal.work_days),
        hours=cal.hours,
        holidays=frozenset(cal.holidays),
    )


def settle_heap() -> None:
    """Collect what start-up left, then put the survivors out of the collector's sight (config,
    connectors and their SDKs' modules, SQLAlchemy tables, templates: 130,000 objects with HubSpot).
    They live as long as the runtime, and a full collection walked them all holding the GIL for
    70-100 ms: three times in a HubSpot 10,000-contact wave in the daemon, each time stalling the
    thread that reads the CRM's pages and every answer being recorded. The daemon calls it after
    start-up and after a reload (``gc.unfreeze()`` first), each web process before it serves."""
    gc.collect()
    gc.freeze()


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.store = store or Store(config.database_url)
        self.store.upgrade()
        self.secrets = Secrets(environ)
        self.tokens = Tokens(
            load_keys(self.secrets, config.daemon.signing_keys_secret, config.state_dir),
            max_age={
                "survey": config.daemon.survey_link_max_age,
                "unsubscribe": config.daemon.unsubscribe_link_max_age,
                "testimonial": config.daemon.survey_link_max_age,
            },
        )
        self.renderer = Renderer(config, self.tokens)
        problems = check_texts(config)
        if problems:
            raise ConfigError("\n".join(problems), problems=problems)
        self.calendar = calendar_for(config)
        self.responses = Responses(self.store, config, self.renderer, on_response=self._on_response)
        self._overrides = overrides
        self.crm: CRM = self._build(config.crm, "crm", "crm")
        self.channels: dict[str, Channel] = {
            "email": self._build(config.channels.email, "email", "channel"),
            "sms": self._build(config.channels.sms, "sms", "channel"),
        }
        self.playbooks = load_playbooks(config.playbook_paths())
        problems = check_playbooks(self.playbooks)
        problems += check_review_gating(self.playbooks, config.testimonials.review_sites)
        if problems:
            raise ConfigError("\n".join(problems), problems=problems)
        self.http = requests.Session()
        self.testimonials = Testimonials(
            self.store,
            config,
            self.tokens,
            load_keys(self.secrets, config.daemon.signing_keys_secret, config.state_dir),
            self.crm,
        )
        self.engine = PlaybookEngine(
            self.playbooks,
            PlaybookServices(
                store=self.store,
                crm=self.crm,
                calendar=self.calendar,
                public_url=config.daemon.public_url,
                send_message=self._send_message,
                http=self.http,
                now=utcnow,
                links=self.testimonials.links,
            ),
        )
        self.writeback = WriteBack(self.store, self.crm, account_window=config.daemon.account_window)
        # Records per batched CRM write: Salesforce Collections take 200, HubSpot's batch APIs 100.
        crm_batch = int(getattr(self.crm, "batch_size", 200))
        self.queue = JobQueue(
            self.store,
            {
                ANSWER_JOB: self.responses.handle_answers,
                "writeback": self.writeback.handle,
                ROLLUP_JOB: self.writeback.rollup,
                "crm_opt_out": self.writeback.opt_out,
                "playbook_step": self.engine.run_steps,
                "wave": self._wave_job,
                NOTE_JOB: self.testimonials.handle_notes,
            },
            batch_sizes={
                # Accepted web answers, several to a transaction, but few enough (~20 ms of work) that
                # a web process waiting to commit answers (SQLite: one writer) is not kept long.
                ANSWER_JOB: 10,
                "writeback": crm_batch,
                ROLLUP_JOB: ROLLUP_BATCH,
                "crm_opt_out": 200,
                "playbook_step": crm_batch,
                "wave": 1,
                NOTE_JOB: 50,
            },
            # Answers arrive one by one: waiting for a full batch turns a stream into one CRM call per
            # 100–200 answers; roll-ups wait for answers to pause, so each account is written once.
            # Recording an answer queues (or touches) its account's roll-up, so the quiet gap counts
            # from the last answer; while an answer waits to be recorded, or a write-back waits for
            # more answers (their stream has not paused for its 0.5 s), the gap does not count. So a
            # stream of answers a few a second apart still writes each account once, and after a
            # burst the roll-up runs as soon as the last write-back is done and the gap is over.
            lingers={
                "writeback": WRITEBACK_LINGER,
                # ``task_batch_wait`` (1.5 s): answer → task stays under two seconds; at 100 answers
                # a second a Salesforce batch then holds about 150 tasks, not the 200 a Collection
                # takes (full batches and a 2 s p99 conflict there: ops choose).
                "playbook_step": Linger(quiet=QUIET, longest=config.daemon.task_batch_wait),
                ROLLUP_JOB: Linger(
                    quiet=config.daemon.account_rollup_quiet,
                    longest=config.daemon.account_rollup_max_delay,
                    after=(ANSWER_JOB, "writeback"),
                ),
            },
            coalesce={ROLLUP_JOB},
        )
        self.sender = Sender(self.store, config, self.channels, self.renderer)

    def _build(self, table: ConnectorTable, role: Literal["crm", "email", "sms"], kind: str) -> Any:
        path = "crm" if role == "crm" else f"channels.{role}"
        spec = registry.get(table.kind, role=kind, path=f"{self.config.source}: {path}.kind")
        options = spec.options.model_validate(table.options)
        ctx = ConnectorContext(
            role=role,
            state_dir=self.config.state_dir,
            public_url=self.config.daemon.public_url,
            time_zone=self.config.daemon.time_zone,
            secrets=self.secrets,
            store=self.store,
            inbound=self.responses,
            overrides=self._overrides,
        )
        return spec.factory(options, ctx)

    # --- hooks ----------------------------------------------------------------------------------

    def _on_response(self, conn: Connection, response: RecordedResponse) -> None:
        self.engine.on_event(
            conn,
            PlaybookEvent(
                trigger="response",
                contact=contact_from_snapshot(response.snapshot),
                program=response.program,
                occurred_at=utcnow(),
                send_id=response.send_id,
                response_id=response.id,
                score=response.score,
                category=response.category.value,
                previous_category=response.previous_category,
                comment=response.comment,
            ),
        )

    def _send_message(self, conn: Connection, message: PlaybookMessage) -> None:
        """Queue a playbook message to the respondent through the normal at-most-once send path."""
        contact = message.contact
        raw = contact.email if message.channel == "email" else contact.phone
        address = normalize_email(raw) if message.channel == "email" else normalize_phone(raw)
        if address is None:
            log.warning(
                "playbook.message_skipped", key=message.key, reason=f"no valid {message.channel} address"
            )
            return
        program = next((p for p in self.config.program if p.name == message.program), None)
        default_zone = program.default_time_zone if program else self.config.daemon.time_zone
        zone = resolve_zone(
            crm_zone=contact.time_zone, phone=contact.phone, country=contact.country, default=default_zone
        )
        now = utcnow()
        not_before = now
        if message.channel == "sms":
            not_before = next_opening(now, zone.zones, [self.config.channels.sms.quiet_hours]) or now
        self.store.insert_ignore(
            conn,
            schema.sends,
            {
                "send_key": message.key,
                "program": message.program,
                "wave_id": None,
                "contact_id": contact.id,
                "account_id": contact.account_id,
                "kind": "playbook",
                "channel": message.channel,
                "address": address,
                "language": choose_language(contact.locale, program) if program else "en",
                "time_zone": zone.zones[0].key,
                "state": "queued",
                "not_before": not_before,
                "survey_send_id": message.survey_send_id,
                "template": message.playbook,
                "content": {"subject": message.subject, "text": message.text},
                "snapshot": snapshot(contact),
                "created_at": now,
                "updated_at": now,
            },
            "send_key",
        )

    def _wave_job(self, payloads: Any) -> None:
        for payload in payloads:
            program = self.config.program_named(payload["program"])
            self.run_wave(program.name, wave_id=payload["wave_id"])

    # --- operations -------------------------------------------------------------------------------

    def run_wave(
        self,
        program_name: str,
        *,
        wave_id: str | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> WaveSummary:
        program = self.config.program_named(program_name)
        wave_id = wave_id or wave_id_for(program.name, now or utcnow())
        batch = min((c.max_batch for c in self.channels.values()), default=1)
        queued = 0

        def wake_at_full_batches(count: int) -> None:
            # An idle worker polls the sender only every quarter second: wake one each time a batch
            # may have filled, so a full batch goes at once (a wave's last one, above all).
            nonlocal queued
            if (queued + count) // batch > queued // batch:
                self.responses.work_queued.set()
            queued += count

        summary = run_wave(
            self.store,
            self.config,
            self.crm,
            program,
            wave_id,
            dry_run=dry_run,
            now=now,
            on_queued=wake_at_full_batches,
        )
        if queued:
            self.responses.work_queued.set()
        return summary

    def background_once(self, *, linger: bool = True) -> int:
        """One round of background work: sends, queued jobs, follow-ups. Returns work items done.
        ``linger=False`` runs partial batches at once (one-shot commands and tests drain)."""
        done = self.sender.run_once(linger=linger)
        done += self.queue.run_once(linger=linger)
        return done

    def periodic(self) -> None:
        """Work that scans the store on a timer (every minute in the daemon)."""
        schedule_followups(self.store, self.config)
        with self.store.begin() as conn:
            self.engine.scan_no_response(conn)
        self.engine.check_overdue()
        self.queue.prune()

    def drain(self, *, rounds: int = 200) -> int:
        """Run sends and jobs until nothing is due (tests and one-shot CLI commands)."""
        total = 0
        for _ in range(rounds):
            done = self.background_once(linger=False)
            if not done:
                break
            total += done
        return total

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for what connectors start in the background (HubSpot's page reader server), so the
        first wave does not wait for it. A connector without such work has no ``wait_ready``."""
        for connector in (self.crm, *self.channels.values()):
            ready = getattr(connector, "wait_ready", None)
            if ready is not None:
                ready(timeout)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.crm.close()
        self.http.close()
        self.store.dispose()
