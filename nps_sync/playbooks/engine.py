"""The playbook engine: starts runs for events, executes their steps as durable queue jobs.

A run is a row in ``playbook_runs`` (its event and contact snapshot in ``context``); each executed
step is a row in ``playbook_steps`` (unique per run and step). Between steps the run waits as a
``playbook_step`` job whose ``run_at`` is the end of the wait, so a wait survives a restart.

Dedupe: a run's ``dedupe_key`` is ``"{playbook}:{trigger}:{ref}"`` where ``ref`` is the response id
(``response``, ``category_changed``), the survey send id (``no_response``) or the CRM task key
(``task_overdue``), so a repeated event never starts a playbook twice. A later answer to the same
survey *replaces* the earlier response (same response id):

- same category (3 → 5): nothing new starts; the runs of the first answer continue;
- category changed (3 → 9): the running runs of that response whose category no longer holds are
  stopped ("answer replaced") and the playbooks matching the new answer start, keyed
  ``"…:{response id}@{occurred_at}"`` so a redelivery of that same replacement is still ignored;
  changing back later (9 → 3) starts the detractor playbooks again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

import structlog
from sqlalchemy import Connection, bindparam, select, update

from nps_sync import queue
from nps_sync.durations import BusinessDays, Delay
from nps_sync.errors import PlaybookError
from nps_sync.models import Owner
from nps_sync.playbooks import conditions, templates
from nps_sync.playbooks.actions import CrmTaskParams, OwnerResolver, StepCall, owner_chain
from nps_sync.playbooks.events import (
    PlaybookEvent,
    PlaybookServices,
    SimulatedStep,
    contact_from_json,
    event_from_json,
    event_to_json,
)
from nps_sync.playbooks.model import Playbook, Step
from nps_sync.playbooks.runner import RECHECK, StepBatch
from nps_sync.store import schema

log = structlog.get_logger("nps_sync.playbooks")

JOB_KIND = "playbook_step"
#: How far past its trigger delay an unanswered send is still considered (bounds the scan).
NO_RESPONSE_LOOKBACK = timedelta(days=30)


def template_context(
    event: PlaybookEvent,
    public_url: str,
    owner: Owner | None,
    due: date | None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The variables a playbook template sees (documented in :mod:`nps_sync.playbooks.templates`)."""
    c = event.contact
    base = public_url.rstrip("/")
    rid = event.response_id
    return {
        "contact": {
            "id": c.id,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "name": c.name,
            "email": c.email,
            "phone": c.phone,
            "account_name": c.account_name,
            "fields": templates.FieldMap(c.fields),
        },
        "account": {"id": c.account_id, "name": c.account_name},
        "response": {
            "id": rid,
            "score": event.score,
            "category": event.category,
            "previous_category": event.previous_category,
            "comment": event.comment,
            "url": f"{base}/responses/{rid}" if rid is not None else None,
        },
        "program": event.program,
        "owner": {"name": owner.name if owner else "", "email": owner.email if owner else None},
        "due": due,
        "public_url": base,
        "testimonial_url": None,
        **(links or {}),
    }


# Every recorded answer runs these: built once, they are compiled and keyed once.
_runs = schema.playbook_runs
_LATEST_RUN = (
    select(_runs.c.context)
    .where(
        _runs.c.playbook == bindparam("playbook"),
        _runs.c.trigger == bindparam("trigger"),
        _runs.c.response_id == bindparam("response_id"),
    )
    .order_by(_runs.c.id.desc())
    .limit(1)
)
_RUN_BY_KEY = select(_runs.c.id).where(_runs.c.dedupe_key == bindparam("key"))
_ANSWERED_RUNS = select(_runs.c.id, _runs.c.step, _runs.c.context).where(
    _runs.c.response_id == bindparam("response_id"),
    _runs.c.state == "running",
    _runs.c.trigger.in_(("response", "category_changed")),
)


class PlaybookEngine:
    """Matches events to playbooks and runs them. Disabled playbooks start nothing; a run whose
    playbook was removed or disabled by a reload stops at its next step."""

    def __init__(self, playbooks: Sequence[Playbook], services: PlaybookServices) -> None:
        self.playbooks = [p for p in playbooks if p.enabled]
        self.by_name = {p.name: p for p in playbooks}
        self.services = services

    # --- starting runs ----------------------------------------------------------------------------

    def _triggers(self, event: PlaybookEvent) -> list[str]:
        triggers: list[str] = [event.trigger]
        if event.trigger == "response" and event.previous_category not in (None, event.category):
            triggers.append("category_changed")
        return triggers

    def on_event(self, conn: Connection, event: PlaybookEvent) -> list[int]:
        """Start the matching playbooks in the caller's transaction; returns the new run ids."""
        now = self.services.now()
        if event.trigger == "response" and event.response_id is not None:
            self._supersede(conn, event, now)
        started = []
        for trigger in self._triggers(event):
            for book in self.playbooks:
                if conditions.matches(book, event, trigger):
                    run_id = self._start(conn, book, event, trigger, now)
                    if run_id is not None:
                        started.append(run_id)
        return started

    def _start(
        self, conn: Connection, book: Playbook, event: PlaybookEvent, trigger: str, now: datetime
    ) -> int | None:
        runs = schema.playbook_runs
        answered = trigger in ("response", "category_changed")
        ref = {"no_response": event.send_id, "task_overdue": event.task_key}.get(trigger, event.response_id)
        key = f"{book.name}:{trigger}:{ref}"
        if answered and event.response_id is not None:
            latest = conn.execute(
                _LATEST_RUN, {"playbook": book.name, "trigger": trigger, "response_id": event.response_id}
            ).scalar_one_or_none()
            if latest is not None:
                # Same category and still standing: a redelivery, or a replacement the run covers.
                if latest["event"].get("category") == event.category and not latest.get("superseded"):
                    return None
                key = f"{key}@{event.occurred_at.isoformat()}"
        values = {
            "playbook": book.name,
            "dedupe_key": key,
            "trigger": trigger,
            "contact_id": event.contact.id,
            "response_id": event.response_id,
            "send_id": event.send_id,
            "state": "running",
            "step": 0,
            "context": event_to_json(dataclasses.replace(event, trigger=trigger)),  # type: ignore[arg-type]
            "created_at": now,
            "updated_at": now,
        }
        if not self.services.store.insert_ignore(conn, runs, values, "dedupe_key"):
            return None
        run_id = conn.execute(_RUN_BY_KEY, {"key": key}).scalar_one()
        self.enqueue_step(conn, run_id, book.steps[0], now)
        log.info(
            "playbook.run_started",
            playbook=book.name,
            run_id=run_id,
            trigger=trigger,
            contact_id=event.contact.id,
        )
        return int(run_id)

    def enqueue_step(self, conn: Connection, run_id: int, step: Step, now: datetime) -> None:
        run_at = now if step.wait is None else self.services.calendar.add(now, step.wait)
        self.enqueue_step_at(conn, run_id, step.index, run_at)

    def enqueue_step_at(
        self, conn: Connection, run_id: int, step: int, run_at: datetime, *, recheck: bool = False
    ) -> None:
        """Queue the ``playbook_step`` job for ``step``; the payload's step lets a stale job no-op.
        ``recheck``: an earlier attempt may have acted (see ``runner.RECHECK``)."""
        payload: dict[str, Any] = {"run_id": run_id, "step": step}
        if recheck:
            payload[RECHECK] = True
        queue.enqueue(
            self.services.store,
            conn,
            JOB_KIND,
            payload,
            run_at=run_at.astimezone(timezone.utc),
        )

    def _supersede(self, conn: Connection, event: PlaybookEvent, now: datetime) -> None:
        runs = schema.playbook_runs
        rows = conn.execute(_ANSWERED_RUNS, {"response_id": event.response_id}).all()
        for row in rows:
            if row.context["event"].get("category") == event.category:
                continue
            reason = f"answer replaced (now {event.category}, score {event.score})"
            if self.finish_run(conn, row.id, row.step, "stopped", "skipped", {"stopped_by": reason}, now):
                conn.execute(
                    update(runs)
                    .where(runs.c.id == row.id)
                    .values(context={**row.context, "superseded": True})
                )
                log.info("playbook.run_stopped", run_id=row.id, reason="answer_replaced")

    def finish_run(
        self,
        conn: Connection,
        run_id: int,
        step: int,
        run_state: str,
        step_state: str,
        result: dict[str, Any],
        now: datetime,
        action: str = "",
    ) -> bool:
        """End a running run at ``step`` (stopped, failed or done) and record that step's row.
        False when the run had already moved on (another worker, a superseding answer)."""
        done = conn.execute(
            update(schema.playbook_runs)
            .where(
                schema.playbook_runs.c.id == run_id,
                schema.playbook_runs.c.step == step,
                schema.playbook_runs.c.state == "running",
            )
            .values(state=run_state, updated_at=now)
        ).rowcount
        if done:
            self.services.store.insert_ignore(
                conn,
                schema.playbook_steps,
                {
                    "run_id": run_id,
                    "step": step,
                    "action": action or "-",
                    "state": step_state,
                    "result": result,
                    "executed_at": now,
                },
                "run_id",
                "step",
            )
        return bool(done)

    # --- executing steps --------------------------------------------------------------------------

    def run_steps(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """The ``playbook_step`` job handler: execute the current step of each run in the batch."""
        StepBatch(self, payloads).run()

    # --- periodic scans ---------------------------------------------------------------------------

    def scan_no_response(self, conn: Connection) -> int:
        """Start ``no_response`` playbooks for survey sends unanswered past the trigger delay."""
        now = self.services.now()
        sends, responses, runs = schema.sends, schema.responses, schema.playbook_runs
        fired = 0
        for book in self.playbooks:
            if book.trigger.on != "no_response" or book.trigger.after is None:
                continue
            delay: Delay = book.trigger.after
            latest = now - (timedelta(days=delay.days) if isinstance(delay, BusinessDays) else delay)
            already = (
                select(runs.c.id)
                .where(
                    runs.c.playbook == book.name,
                    runs.c.trigger == "no_response",
                    runs.c.send_id == sends.c.id,
                )
                .exists()
            )
            rows = conn.execute(
                select(sends.c.id, sends.c.program, sends.c.sent_at, sends.c.snapshot)
                .outerjoin(responses, responses.c.send_id == sends.c.id)
                .where(
                    sends.c.kind == "survey",
                    sends.c.state == "sent",
                    responses.c.id.is_(None),
                    sends.c.sent_at <= latest,
                    sends.c.sent_at > latest - NO_RESPONSE_LOOKBACK,
                    ~already,
                )
                .order_by(sends.c.id)
            ).all()
            for row in rows:
                if self.services.calendar.add(row.sent_at, delay) > now:
                    continue
                event = PlaybookEvent(
                    trigger="no_response",
                    contact=contact_from_json(row.snapshot),
                    program=row.program,
                    occurred_at=now,
                    send_id=row.id,
                )
                if (
                    conditions.matches(book, event, "no_response")
                    and self._start(conn, book, event, "no_response", now) is not None
                ):
                    fired += 1
        return fired

    def check_overdue(self) -> int:
        """Refresh open tasks past their due date (one ``get_tasks``), record completions, and fire
        ``task_overdue`` once per task still open. Returns the overdue events fired."""
        store, tasks, runs = self.services.store, schema.crm_tasks, schema.playbook_runs
        now = self.services.now()
        today = now.astimezone(self.services.calendar.tz).date()
        with store.read() as conn:
            rows = conn.execute(
                select(tasks, runs.c.context)
                .outerjoin(runs, runs.c.id == tasks.c.run_id)
                .where(
                    tasks.c.completed.is_(False),
                    tasks.c.overdue_fired.is_(False),
                    tasks.c.due < today,
                    tasks.c.task_id.is_not(None),
                )
            ).all()
        if not rows:
            return 0
        states = self.services.crm.get_tasks([r.task_id for r in rows])
        fired = 0
        with store.begin() as conn:
            for row in rows:
                state = states.get(row.task_id)
                where = tasks.c.key == row.key
                if state is not None and state.completed:
                    conn.execute(update(tasks).where(where).values(completed=True, checked_at=now))
                    continue
                if state is not None and state.due is not None and state.due >= today:
                    conn.execute(update(tasks).where(where).values(due=state.due, checked_at=now))
                    continue
                conn.execute(update(tasks).where(where).values(overdue_fired=True, checked_at=now))
                if state is None or row.context is None:
                    log.warning("playbook.task_missing", task_key=row.key, task_id=row.task_id)
                    continue
                fired += 1
                origin = event_from_json(row.context)
                event = dataclasses.replace(origin, trigger="task_overdue", task_key=row.key, occurred_at=now)
                for book in self.playbooks:
                    # A playbook never escalates its own tasks: that would chain forever.
                    if book.name == row.playbook or (
                        book.trigger.playbooks and row.playbook not in book.trigger.playbooks
                    ):
                        continue
                    if conditions.matches(book, event, "task_overdue"):
                        self._start(conn, book, event, "task_overdue", now)
                log.info("playbook.task_overdue", task_key=row.key, task_id=row.task_id, due=str(row.due))
        return fired

    # --- preview ----------------------------------------------------------------------------------

    def simulate(self, event: PlaybookEvent) -> list[SimulatedStep]:
        """What ``event`` would start, step by step, without writing anything anywhere (owners are
        looked up with read-only CRM calls). Waits are counted from now; ``unless`` is listed, not
        evaluated."""
        now = self.services.now()
        resolver = OwnerResolver(self.services.crm)
        out: list[SimulatedStep] = []
        for trigger in self._triggers(event):
            for book in self.playbooks:
                if not conditions.matches(book, event, trigger):
                    continue
                resolver.prefetch([(event.contact, owner_chain(s)) for s in book.steps])
                at = now
                for step in book.steps:
                    if step.wait is not None:
                        at = self.services.calendar.add(at, step.wait)
                    call = self.prepare_call(0, book, step, event, resolver, at)
                    if isinstance(call, str):
                        raise PlaybookError(f"{book.name} step[{step.index}]: {call}")
                    params = step.params
                    out.append(
                        SimulatedStep(
                            playbook=book.name,
                            step=step.index,
                            action=step.action,
                            run_at=at.astimezone(timezone.utc),
                            wait=step.wait_text,
                            unless=step.unless,
                            subject=call.rendered.get("subject"),
                            body=call.rendered.get("body", call.rendered.get("value")),
                            owner=call.owner if isinstance(params, CrmTaskParams) else None,
                            due=call.due,
                            priority=params.priority if isinstance(params, CrmTaskParams) else None,
                            detail=params.model_dump(exclude=set(type(params).TEMPLATES), mode="json"),
                        )
                    )
        return out

    def prepare_call(
        self,
        run_id: int,
        book: Playbook,
        step: Step,
        event: PlaybookEvent,
        resolver: OwnerResolver,
        at: datetime,
    ) -> StepCall | str:
        """Resolve owner and due date and render the step's templates; a string is the failure."""
        params = step.params
        owner: Owner | None = None
        if isinstance(params, CrmTaskParams) or "owner" in step.uses:
            owner, _ = resolver.resolve(event.contact, owner_chain(step))
        due = None
        if isinstance(params, CrmTaskParams):
            due = self.due_date(at, params.due)
        links = self.services.links
        extra = links(event.response_id) if links is not None and event.response_id is not None else None
        context = template_context(event, self.services.public_url, owner, due, extra)
        try:
            rendered = {k: templates.render(t, context) for k, t in step.templates.items()}
        except PlaybookError as exc:
            return str(exc)
        return StepCall(
            run_id=run_id,
            step=step,
            playbook=book.name,
            program=event.program,
            contact=event.contact,
            survey_send_id=event.send_id,
            context=context,
            rendered=rendered,
            owner=owner,
            due=due,
        )

    def due_date(self, at: datetime, delay: Delay) -> date:
        cal = self.services.calendar
        if isinstance(delay, BusinessDays):
            return cal.due_date(at, delay.days)
        return cal.add(at, delay).astimezone(cal.tz).date()
