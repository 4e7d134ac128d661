"""Playbook actions, registered by name: ``action = "crm_task"`` in a TOML step maps to :func:`crm_task`.

An action is a plain callable taking the batch of :class:`StepCall` s of its kind (one per run whose
current step uses it) and the services, returning one :class:`Outcome` per call in order. Actions do
the outside-world work only (CRM calls, webhook POSTs); the engine records outcomes, tasks and
messages in one database transaction afterwards, so an action must be safe to repeat after a crash:
``crm_task`` relies on the CRM's lookup by ``TaskSpec.key``, ``webhook`` on the ``Idempotency-Key``
header, and messages are only *returned* (the engine enqueues them, at most once per key).

Transient trouble for the whole call (``ConnectorUnavailable``) propagates so the queue retries the
job; a per-record refusal fails only that run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import requests
import structlog
import tenacity
from pydantic import Field

from nps_sync.durations import BusinessDays
from nps_sync.models import Contact, ContactUpdate, Owner, Priority, TaskSpec, TaskType
from nps_sync.playbooks.events import PlaybookMessage, PlaybookServices
from nps_sync.playbooks.model import DelayField, OwnerField, Scalar, Step, StepParams

log = structlog.get_logger("nps_sync.playbooks.actions")

DEFAULT_TASK_BODY = (
    "{{ contact.name }} ({{ contact.account_name }}) answered {{ response.score }} "
    "({{ response.category }}) in the {{ program }} survey.\n"
    'Comment: {{ response.comment or "(none)" }}\n'
    "Response: {{ response.url }}"
)


class CrmTaskParams(StepParams):
    TEMPLATES = ("subject", "body")
    subject: str = Field(min_length=1)
    body: str = DEFAULT_TASK_BODY
    owner: OwnerField = "account_owner"
    fallback_owner: tuple[OwnerField, ...] = ()
    due: DelayField = BusinessDays(1)
    priority: Priority = "normal"
    type: TaskType = "todo"


class SendEmailParams(StepParams):
    TEMPLATES = ("subject", "body")
    subject: str = Field(min_length=1)
    body: str = Field(min_length=1)


class SendSmsParams(StepParams):
    TEMPLATES = ("body",)
    body: str = Field(min_length=1)


class UpdateFieldParams(StepParams):
    TEMPLATES = ("value",)
    field: str = Field(min_length=1)
    value: Scalar


class WebhookParams(StepParams):
    url: str = Field(pattern=r"^https?://\S+$")


@dataclass(frozen=True)
class StepCall:
    """One run's current step, ready to execute: templates rendered, owner and due resolved."""

    run_id: int
    step: Step
    playbook: str
    program: str
    contact: Contact
    survey_send_id: int | None
    context: Mapping[str, Any]
    rendered: Mapping[str, str]
    owner: Owner | None = None
    due: date | None = None
    #: No earlier attempt of this step can have acted (see ``runner.StepBatch.first_try``).
    first_try: bool = False

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.step.index}"


@dataclass(frozen=True)
class TaskRecord:
    key: str
    task_id: str
    owner_id: str | None
    subject: str
    due: date


@dataclass
class Outcome:
    """``done``/``skipped`` advance the run, ``failed`` ends it, ``retry`` runs the step again later."""

    state: Literal["done", "skipped", "failed", "retry"]
    result: dict[str, Any] = field(default_factory=dict)
    task: TaskRecord | None = None
    message: PlaybookMessage | None = None


ActionFn = Callable[[Sequence[StepCall], PlaybookServices], list[Outcome]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    params: type[StepParams]
    run: ActionFn
    #: The step routes work to a person: resolve ``owner``/``fallback_owner`` before running.
    routes_owner: bool = False


def task_key(run_id: int, step: int) -> str:
    """``TaskSpec.key`` of a run's step: stable, so a retry finds the task instead of duplicating it."""
    return f"nps:{run_id}:{step}"


def crm_task(calls: Sequence[StepCall], services: PlaybookServices) -> list[Outcome]:
    """Create every task of the batch in ONE ``create_tasks`` call."""
    specs = []
    for call in calls:
        params = call.step.params
        assert isinstance(params, CrmTaskParams)
        assert call.due is not None
        if call.owner is None:
            # The CRM's default owner gets the task: better than no task for a detractor.
            log.warning("playbook.owner_unresolved", run_id=call.run_id, chain=list(owner_chain(call.step)))
        specs.append(
            TaskSpec(
                key=task_key(call.run_id, call.step.index),
                contact_id=call.contact.id,
                account_id=call.contact.account_id,
                owner_id=call.owner.id if call.owner else None,
                subject=call.rendered["subject"],
                body=call.rendered["body"],
                due=call.due,
                priority=params.priority,
                type=params.type,
                recheck=not call.first_try,
            )
        )
    results = {r.key: r for r in services.crm.create_tasks(specs)}
    outcomes = []
    for spec in specs:
        res = results.get(spec.key)
        if res is not None and res.task_id:
            record = TaskRecord(spec.key, res.task_id, spec.owner_id, spec.subject, spec.due)
            outcomes.append(
                Outcome(
                    "done",
                    {
                        "task_key": spec.key,
                        "task_id": res.task_id,
                        "owner_id": spec.owner_id,
                        "due": spec.due.isoformat(),
                        "existed": res.existed,
                    },
                    task=record,
                )
            )
        elif res is not None and res.transient:
            outcomes.append(Outcome("retry", {"error": res.error or "transient CRM error"}))
        else:
            reason = res.error if res is not None else "the CRM returned no result for this task"
            outcomes.append(Outcome("failed", {"error": f"task {spec.key} refused: {reason}"}))
    return outcomes


def _message(call: StepCall, channel: Literal["email", "sms"]) -> Outcome:
    address = call.contact.email if channel == "email" else call.contact.phone
    opted_out = call.contact.email_opt_out if channel == "email" else call.contact.sms_opt_out
    # Skipped, not failed: later steps (the owner's TODO task) still matter without a message.
    if not address:
        return Outcome("skipped", {"reason": f"contact {call.contact.id} has no {channel} address"})
    if opted_out:
        return Outcome("skipped", {"reason": f"contact {call.contact.id} opted out of {channel}"})
    message = PlaybookMessage(
        key=f"pb:{call.run_id}:{call.step.index}",
        contact=call.contact,
        program=call.program,
        channel=channel,
        subject=call.rendered.get("subject", ""),
        text=call.rendered["body"],
        survey_send_id=call.survey_send_id,
        playbook=call.playbook,
    )
    return Outcome("done", {"message_key": message.key, "channel": channel}, message=message)


def send_email(calls: Sequence[StepCall], services: PlaybookServices) -> list[Outcome]:
    """An email to the respondent; the engine hands it to ``services.send_message``."""
    return [_message(call, "email") for call in calls]


def send_sms(calls: Sequence[StepCall], services: PlaybookServices) -> list[Outcome]:
    """A text message to the respondent; the engine hands it to ``services.send_message``."""
    return [_message(call, "sms") for call in calls]


def update_field(calls: Sequence[StepCall], services: PlaybookServices) -> list[Outcome]:
    """Write one raw CRM field per call, all in one ``update_contacts`` call."""
    updates = []
    for call in calls:
        params = call.step.params
        assert isinstance(params, UpdateFieldParams)
        value = call.rendered["value"] if isinstance(params.value, str) else params.value
        updates.append(ContactUpdate(call.contact.id, {params.field: value}))
    result = services.crm.update_contacts(updates)
    failures = {f.record_id: f for f in result.failed}
    outcomes = []
    for call, upd in zip(calls, updates, strict=True):
        failure = failures.get(call.contact.id)
        if failure is None:
            [(name, written)] = upd.values.items()
            outcomes.append(Outcome("done", {"field": name, "value": str(written)}))
        elif failure.transient:
            outcomes.append(Outcome("retry", {"error": failure.reason}))
        else:
            outcomes.append(Outcome("failed", {"error": f"field update refused: {failure.reason}"}))
    return outcomes


class _RetryableHttpError(Exception):
    pass


def webhook(calls: Sequence[StepCall], services: PlaybookServices) -> list[Outcome]:
    """POST a JSON document per call. Retries 5xx answers and connection errors (tenacity) with the
    same ``Idempotency-Key: <run>:<step>`` header, so a receiver can drop repeats."""
    return [_post(call, services) for call in calls]


def _post(call: StepCall, services: PlaybookServices) -> Outcome:
    params = call.step.params
    assert isinstance(params, WebhookParams)
    document = {
        "playbook": call.playbook,
        "run_id": call.run_id,
        "step": call.step.index,
        "program": call.program,
        "contact": dict(call.context["contact"]),
        "account": call.context["account"],
        "response": call.context["response"],
    }
    headers = {"Idempotency-Key": call.key, "Content-Type": "application/json"}

    def attempt() -> requests.Response:
        try:
            resp = services.http.post(params.url, json=document, headers=headers, timeout=10)
        except requests.ConnectionError as exc:
            raise _RetryableHttpError(f"connection failed: {exc}") from exc
        if resp.status_code >= 500:
            raise _RetryableHttpError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return resp

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, services.webhook_attempts)),
        wait=tenacity.wait_exponential(multiplier=services.webhook_backoff, max=30),
        retry=tenacity.retry_if_exception_type(_RetryableHttpError),
        reraise=True,
    )
    try:
        resp = retrying(attempt)
    except _RetryableHttpError as exc:
        return Outcome(
            "failed",
            {"error": f"webhook {params.url} gave up after {services.webhook_attempts} attempts: {exc}"},
        )
    except requests.RequestException as exc:
        # A read timeout: the receiver may have acted; not retried blindly (it can dedupe, but says
        # nothing), so the run stops with the reason for ops.
        return Outcome("failed", {"error": f"webhook {params.url} outcome unknown: {exc}"})
    if resp.status_code >= 400:
        return Outcome(
            "failed", {"error": f"webhook {params.url} refused: HTTP {resp.status_code} {resp.text[:200]}"}
        )
    return Outcome("done", {"status": resp.status_code})


ACTIONS: dict[str, ActionSpec] = {
    "crm_task": ActionSpec("crm_task", CrmTaskParams, crm_task, routes_owner=True),
    "send_email": ActionSpec("send_email", SendEmailParams, send_email),
    "send_sms": ActionSpec("send_sms", SendSmsParams, send_sms),
    "update_field": ActionSpec("update_field", UpdateFieldParams, update_field),
    "webhook": ActionSpec("webhook", WebhookParams, webhook),
}


class OwnerResolver:
    """Resolves ``owner`` chains for a batch with as few CRM calls as possible (read-only calls:
    one ``get_owners`` for account/contact owners, one more for managers, one ``find_owner`` per
    distinct ``user:`` query)."""

    def __init__(self, crm: Any) -> None:
        self.crm = crm
        self.owners: dict[str, Owner] = {}
        self.found: dict[str, Owner | None] = {}

    def prefetch(self, wanted: Sequence[tuple[Contact, Sequence[str]]]) -> None:
        ids: set[str] = set()
        managers = False
        for contact, chain in wanted:
            for spec in chain:
                if spec == "account_owner" and contact.account_owner_id:
                    ids.add(contact.account_owner_id)
                elif spec == "contact_owner" and contact.owner_id:
                    ids.add(contact.owner_id)
                elif spec == "manager" and contact.account_owner_id:
                    ids.add(contact.account_owner_id)
                    managers = True
                elif spec.startswith("user:"):
                    query = spec.removeprefix("user:")
                    if query not in self.found:
                        self.found[query] = self.crm.find_owner(query)
        self._fetch(ids)
        if managers:
            bosses: set[str] = set()
            for contact, chain in wanted:
                boss = self.owners.get(contact.account_owner_id or "")
                if "manager" in chain and boss is not None and boss.manager_id:
                    bosses.add(boss.manager_id)
            self._fetch(bosses)

    def _fetch(self, ids: set[str]) -> None:
        missing = sorted(i for i in ids if i not in self.owners)
        if missing:
            self.owners.update(self.crm.get_owners(missing))

    def resolve(self, contact: Contact, chain: Sequence[str]) -> tuple[Owner | None, str | None]:
        """The first owner of ``chain`` that exists, and which spec gave it."""
        for spec in chain:
            owner: Owner | None = None
            if spec == "account_owner" and contact.account_owner_id:
                owner = self.owners.get(contact.account_owner_id)
            elif spec == "contact_owner" and contact.owner_id:
                owner = self.owners.get(contact.owner_id)
            elif spec == "manager" and contact.account_owner_id:
                boss = self.owners.get(contact.account_owner_id)
                owner = self.owners.get(boss.manager_id) if boss and boss.manager_id else None
            elif spec.startswith("user:"):
                owner = self.found.get(spec.removeprefix("user:"))
            if owner is not None:
                return owner, spec
        return None, None


def owner_chain(step: Step) -> tuple[str, ...]:
    """The owner specs a step tries in order (non-task steps: the account owner, then the contact's)."""
    params = step.params
    if isinstance(params, CrmTaskParams):
        return (params.owner, *params.fallback_owner)
    return ("account_owner", "contact_owner")
