"""One batch of ``playbook_step`` jobs: check ``unless``, run the actions, record everything at once.

The batch reads first, then does the outside-world work with as few CRM calls as the batch allows
(one ``get_tasks`` for every ``task_completed`` check, one ``get_owners`` for owners, one more for
managers, one ``create_tasks`` for every ``crm_task`` step), then records steps, tasks, messages,
run states and next jobs in ONE write transaction. A crash anywhere before that commit leaves the
database as it was, and the retried job repeats only idempotent work: the CRM finds tasks by
``TaskSpec.key``, webhook receivers see the same ``Idempotency-Key``, and messages are enqueued only
in that commit. Looking keys up costs a CRM call per batch, so it is done only when an earlier
attempt may have acted: a job claimed again (after a crash, a failure or a lapsed lease, see
``queue.ATTEMPT``) or queued again after a transient error (``RECHECK``). A job's first claim is
committed before it runs, so a first attempt is never mistaken for a retry.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, select, update

from nps_sync.faults import crash_point
from nps_sync.playbooks.actions import ACTIONS, Outcome, OwnerResolver, StepCall, owner_chain
from nps_sync.playbooks.events import PlaybookEvent, PlaybookServices, event_from_json
from nps_sync.playbooks.model import Playbook, Step
from nps_sync.queue import ATTEMPT
from nps_sync.store import schema

if TYPE_CHECKING:
    from nps_sync.playbooks.engine import PlaybookEngine

log = structlog.get_logger("nps_sync.playbooks")

#: A step whose CRM record failed transiently runs again after this long.
RETRY_STEP_AFTER = timedelta(minutes=1)
#: Payload flag of a step job queued again after a transient error: an earlier attempt may have
#: created the step's task, so its key is looked up before creating.
RECHECK = "recheck"
#: Step outcomes recorded per transaction.
RECORD_CHUNK = 25


@dataclass
class _Live:
    run_id: int
    created_at: datetime
    response_id: int | None
    book: Playbook
    step: Step
    event: PlaybookEvent


class StepBatch:
    def __init__(self, engine: PlaybookEngine, payloads: Sequence[Mapping[str, Any]]) -> None:
        self.engine = engine
        self.services = engine.services
        self.wanted: dict[int, int | None] = {}
        #: Runs whose step no earlier attempt can have acted on: the job's first claim, not a retry.
        #: Their tasks are created without first looking their keys up in the CRM.
        self.first_try: set[int] = set()
        retried: set[int] = set()
        for p in payloads:
            step = p.get("step")
            run_id = int(p["run_id"])
            self.wanted[run_id] = None if step is None else int(step)
            if p.get(ATTEMPT) == 1 and not p.get(RECHECK):
                self.first_try.add(run_id)
            else:
                retried.add(run_id)
        self.first_try -= retried
        self.now = self.services.now()
        self.closing: list[tuple[_Live | None, int, int, str, str, dict[str, Any]]] = []
        self.completed_keys: list[str] = []

    def run(self) -> None:
        live = self._load()
        stops = self._unless(live)
        resolver = OwnerResolver(self.services.crm)
        todo = [r for r in live if r.run_id not in stops]
        resolver.prefetch(
            [
                (r.event.contact, owner_chain(r.step))
                for r in todo
                if ACTIONS[r.step.action].routes_owner or "owner" in r.step.uses
            ]
        )
        calls: list[StepCall] = []
        for r in todo:
            call = self.engine.prepare_call(r.run_id, r.book, r.step, r.event, resolver, self.now)
            if isinstance(call, str):
                self.closing.append((r, r.run_id, r.step.index, "failed", "failed", {"error": call}))
            else:
                calls.append(dataclasses.replace(call, first_try=r.run_id in self.first_try))
        for r in live:
            if r.run_id in stops:
                self.closing.append(
                    (r, r.run_id, r.step.index, "stopped", "skipped", {"stopped_by": stops[r.run_id]})
                )
        outcomes = run_actions(calls, self.services)
        crash_point("playbook.after_create_tasks")
        by_run = {r.run_id: r for r in live}
        if self.completed_keys or self.closing:
            with self.services.store.begin() as conn:
                if self.completed_keys:
                    conn.execute(
                        update(schema.crm_tasks)
                        .where(schema.crm_tasks.c.key.in_(self.completed_keys))
                        .values(completed=True, checked_at=self.now)
                    )
                for closing, run_id, step, run_state, step_state, result in self.closing:
                    action = closing.step.action if closing else "-"
                    if self.engine.finish_run(
                        conn, run_id, step, run_state, step_state, result, self.now, action
                    ):
                        fields = {k: str(v) for k, v in result.items()}
                        if run_state == "failed":
                            log.warning("playbook.run_failed", run_id=run_id, step=step, **fields)
                        else:
                            log.info(f"playbook.run_{run_state}", run_id=run_id, step=step, **fields)
        # A few runs to a transaction: on SQLite every other writer (a web process committing
        # answers, too) waits while one is open. A crash between two leaves the rest's jobs to run
        # again, and their task keys find the tasks already made.
        for start in range(0, len(calls), RECORD_CHUNK):
            with self.services.store.begin() as conn:
                for call in calls[start : start + RECORD_CHUNK]:
                    self._record(conn, by_run[call.run_id], call, outcomes[call.run_id])

    def _load(self) -> list[_Live]:
        runs = schema.playbook_runs
        with self.services.store.read() as conn:
            rows = conn.execute(select(runs).where(runs.c.id.in_(list(self.wanted)))).all()
            steps = schema.playbook_steps
            executed = {
                (s.run_id, s.step): s.executed_at
                for s in conn.execute(
                    select(steps.c.run_id, steps.c.step, steps.c.executed_at).where(
                        steps.c.run_id.in_(list(self.wanted))
                    )
                )
            }
        live = []
        for row in rows:
            expected = self.wanted[row.id]
            if row.state != "running" or (expected is not None and expected != row.step):
                continue  # a stale or repeated job: the run moved on
            book = self.engine.by_name.get(row.playbook)
            if book is None or not book.enabled:
                self.closing.append(
                    (
                        None,
                        row.id,
                        row.step,
                        "stopped",
                        "skipped",
                        {"stopped_by": f"playbook {row.playbook!r} is no longer loaded"},
                    )
                )
                continue
            if row.step >= len(book.steps):
                self.closing.append(
                    (
                        None,
                        row.id,
                        row.step,
                        "done",
                        "skipped",
                        {"stopped_by": "the playbook has fewer steps than when the run started"},
                    )
                )
                continue
            step = book.steps[row.step]
            if step.wait is not None:
                # The wait counts from the previous step (or the start); a stray early job must not
                # cut it short: the job enqueued for the end of the wait will come.
                since = executed.get((row.id, row.step - 1), row.created_at)
                if self.services.calendar.add(since, step.wait) > self.now:
                    continue
            live.append(
                _Live(
                    row.id,
                    row.created_at,
                    row.response_id,
                    book,
                    book.steps[row.step],
                    event_from_json(row.context),
                )
            )
        return live

    def _unless(self, live: Sequence[_Live]) -> dict[int, str]:
        """Runs whose ``unless`` holds now, with the reason."""
        stops: dict[int, str] = {}
        tasks, responses = schema.crm_tasks, schema.responses
        check_tasks = [r.run_id for r in live if "task_completed" in r.step.unless]
        check_answers = [r for r in live if "responded_again" in r.step.unless]
        with self.services.store.read() as conn:
            task_rows = (
                conn.execute(
                    select(tasks.c.key, tasks.c.task_id, tasks.c.run_id, tasks.c.completed).where(
                        tasks.c.run_id.in_(check_tasks), tasks.c.task_id.is_not(None)
                    )
                ).all()
                if check_tasks
                else []
            )
            answers = (
                conn.execute(
                    select(responses.c.id, responses.c.contact_id, responses.c.responded_at).where(
                        responses.c.contact_id.in_({r.event.contact.id for r in check_answers}),
                        responses.c.responded_at > min(r.created_at for r in check_answers),
                    )
                ).all()
                if check_answers
                else []
            )
        if task_rows:
            states = self.services.crm.get_tasks(sorted({t.task_id for t in task_rows}))
            per_run: dict[int, list[bool]] = defaultdict(list)
            for t in task_rows:
                state = states.get(t.task_id)
                done = bool(t.completed or (state is not None and state.completed))
                per_run[t.run_id].append(done)
                if done and not t.completed:
                    self.completed_keys.append(t.key)
            for run_id, done_list in per_run.items():
                if all(done_list):
                    stops[run_id] = "task_completed"
        for r in check_answers:
            if r.run_id not in stops and any(
                a.contact_id == r.event.contact.id and a.id != r.response_id and a.responded_at > r.created_at
                for a in answers
            ):
                stops[r.run_id] = "responded_again"
        return stops

    def _record(self, conn: Connection, r: _Live, call: StepCall, outcome: Outcome) -> None:
        engine, store = self.engine, self.services.store
        if outcome.task is not None:
            t = outcome.task
            store.insert_ignore(
                conn,
                schema.crm_tasks,
                {
                    "key": t.key,
                    "task_id": t.task_id,
                    "run_id": r.run_id,
                    "contact_id": call.contact.id,
                    "account_id": call.contact.account_id,
                    "owner_id": t.owner_id,
                    "playbook": r.book.name,
                    "subject": t.subject,
                    "due": t.due,
                    "completed": False,
                    "overdue_fired": False,
                    "created_at": self.now,
                },
                "key",
            )
        if outcome.state == "retry":
            # The transient error may have come after the CRM made the task: the retry looks first.
            engine.enqueue_step_at(conn, r.run_id, r.step.index, self.now + RETRY_STEP_AFTER, recheck=True)
            log.warning("playbook.step_retry", run_id=r.run_id, step=r.step.index, **outcome.result)
            return
        if outcome.state == "failed":
            if engine.finish_run(
                conn, r.run_id, r.step.index, "failed", "failed", outcome.result, self.now, r.step.action
            ):
                log.warning(
                    "playbook.run_failed",
                    run_id=r.run_id,
                    playbook=r.book.name,
                    step=r.step.index,
                    error=outcome.result.get("error"),
                )
            return
        last = r.step.index + 1 >= len(r.book.steps)
        runs = schema.playbook_runs
        advanced = conn.execute(
            update(runs)
            .where(runs.c.id == r.run_id, runs.c.step == r.step.index, runs.c.state == "running")
            .values(step=r.step.index + 1, state="done" if last else "running", updated_at=self.now)
        ).rowcount
        if not advanced:
            return  # another worker finished this step first
        store.insert_ignore(
            conn,
            schema.playbook_steps,
            {
                "run_id": r.run_id,
                "step": r.step.index,
                "action": r.step.action,
                "state": outcome.state,
                "result": outcome.result,
                "executed_at": self.now,
            },
            "run_id",
            "step",
        )
        if outcome.message is not None:
            self.services.send_message(conn, outcome.message)
        if last:
            log.info("playbook.run_done", run_id=r.run_id, playbook=r.book.name)
        else:
            engine.enqueue_step(conn, r.run_id, r.book.steps[r.step.index + 1], self.now)


def run_actions(calls: Sequence[StepCall], services: PlaybookServices) -> dict[int, Outcome]:
    """Run each action once over its calls. Webhooks go last: they cannot be taken back, so a
    transient CRM error (which aborts the batch for a retry) should come before them."""
    grouped: dict[str, list[StepCall]] = defaultdict(list)
    for call in calls:
        grouped[call.step.action].append(call)
    outcomes: dict[int, Outcome] = {}
    for name in sorted(grouped, key=lambda n: n == "webhook"):
        batch = grouped[name]
        results = ACTIONS[name].run(batch, services)
        for call, outcome in zip(batch, results, strict=True):
            outcomes[call.run_id] = outcome
    return outcomes
