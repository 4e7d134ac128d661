"""A small, hand-checked data set written straight into the real store (sends, responses, playbook
runs, CRM tasks). Expected figures in the tests are worked out by hand from the table below."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from nps_sync.models import Category
from nps_sync.store import schema
from nps_sync.store.db import Store

PROGRAM = "relationship"
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc)

#: contact -> (account id, account name, plan)
CONTACTS = {
    "C1": ("A1", "Acme Corp", "pro"),
    "C2": ("A1", "Acme Corp", "pro"),
    "C3": ("A1", "Acme Corp", "basic"),
    "C4": ("A2", "Globex", "basic"),
    "C5": ("A2", "Globex", "pro"),
    "C6": ("A2", "Globex", "basic"),
    "C7": ("A3", "Initech", "pro"),
    "C8": ("A3", "Initech", "basic"),
    "C9": ("A3", "Initech", "pro"),
    "C10": ("A3", "Initech", "pro"),
}


@dataclass(frozen=True)
class Planted:
    contact: str
    when: datetime
    score: int
    region: str
    comment: str | None
    language: str = "en"


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=timezone.utc)


ANSWERS = [
    Planted("C1", at(1, 5), 9, "EU", "Great support team, always helpful"),
    Planted("C2", at(1, 6), 10, "EU", "Love the reports and dashboards"),
    Planted("C3", at(1, 7), 3, "US", "The invoice portal is confusing"),
    Planted("C4", at(1, 8), 7, "US", "Solid product but pricey"),
    Planted("C5", at(1, 9), 8, "US", "Pricey for what it does"),
    Planted("C6", at(1, 12), 5, "EU", "Invoice portal keeps timing out", language="de"),
    Planted("C6", at(1, 20), 8, "EU", "Better now, thanks", language="de"),
    Planted("C4", at(2, 3), 9, "EU", "Reports are great now"),
    Planted("C5", at(2, 4), 6, "US", "Support took ages to answer"),
    Planted("C7", at(2, 5), 10, "EU", "Great reports, great people"),
    Planted("C8", at(2, 6), 2, "US", "Invoice portal lost my data!"),
    Planted("C1", at(2, 10), 6, "EU", "Support was slow this month"),
    Planted("C3", at(3, 2), 9, "US", None),
    Planted("C9", at(3, 3), 8, "EU", "Pricey"),
    Planted("C10", at(3, 4), 9, "US", "Great onboarding"),
    Planted("C2", at(3, 5), 10, "EU", "Love the reports"),
]
UNANSWERED = ["C11", "C12", "C13", "C14", "C15"]


def _snapshot(contact: str, region: str) -> dict[str, object]:
    account_id, account_name, plan = CONTACTS.get(contact, ("A9", "Umbrella", "basic"))
    return {
        "id": contact,
        "first_name": "Pat",
        "last_name": contact,
        "email": f"{contact.lower()}@example.com",
        "phone": None,
        "account_id": account_id,
        "account_name": account_name,
        "owner_id": "U01" if account_id in ("A1", "A2") else "U02",
        "account_owner_id": "U01",
        "locale": None,
        "time_zone": "UTC",
        "country": "US",
        "email_opt_out": False,
        "sms_opt_out": False,
        "fields": {"plan": plan, "region": region},
    }


def _send(
    store: Store, key: str, contact: str, sent_at: datetime, *, region: str = "US", **kw: object
) -> int:
    values: dict[str, object] = {
        "send_key": key,
        "program": PROGRAM,
        "wave_id": None,
        "contact_id": contact,
        "account_id": CONTACTS.get(contact, ("A9",))[0],
        "kind": "survey",
        "channel": "email",
        "address": f"{contact.lower()}@example.com",
        "language": "en",
        "time_zone": "UTC",
        "state": "sent",
        "not_before": sent_at,
        "sent_at": sent_at,
        "snapshot": _snapshot(contact, region),
        "created_at": sent_at,
        "updated_at": sent_at,
    }
    values.update(kw)
    with store.begin() as conn:
        result = conn.execute(schema.sends.insert().values(**values))
        assert result.inserted_primary_key is not None
        return int(result.inserted_primary_key[0])


def seed(store: Store) -> dict[str, int]:
    """Write the data set; returns response ids by "contact@month-day"."""
    ids: dict[str, int] = {}
    for i, a in enumerate(ANSWERS):
        send_id = _send(
            store, f"s{i}", a.contact, a.when - timedelta(days=1), region=a.region, language=a.language
        )
        with store.begin() as conn:
            result = conn.execute(
                schema.responses.insert().values(
                    send_id=send_id,
                    program=PROGRAM,
                    contact_id=a.contact,
                    account_id=CONTACTS[a.contact][0],
                    score=a.score,
                    category=Category.of(a.score).value,
                    comment=a.comment,
                    channel="email",
                    responded_at=a.when,
                    updated_at=a.when,
                )
            )
            assert result.inserted_primary_key is not None
            ids[f"{a.contact}@{a.when:%m-%d}"] = int(result.inserted_primary_key[0])
    for contact in UNANSWERED:
        _send(store, f"u-{contact}", contact, at(1, 15))
    # Not survey sends that went out: a failed survey and a sent reminder do not count in the rate.
    _send(store, "failed-C16", "C16", at(1, 15), state="failed")
    _send(store, "reminder-C11", "C11", at(1, 18), kind="reminder")
    _tasks(store, ids)
    return ids


def _run(store: Store, response_id: int, contact: str, playbook: str) -> int:
    with store.begin() as conn:
        result = conn.execute(
            schema.playbook_runs.insert().values(
                playbook=playbook,
                dedupe_key=f"{playbook}|{response_id}",
                trigger="response",
                contact_id=contact,
                response_id=response_id,
                state="done",
                step=1,
                context={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        assert result.inserted_primary_key is not None
        return int(result.inserted_primary_key[0])


def _task(
    store: Store,
    run_id: int,
    contact: str,
    key: str,
    *,
    created: datetime,
    due: date,
    completed: bool,
    overdue_fired: bool,
    checked_at: datetime | None,
) -> None:
    with store.begin() as conn:
        conn.execute(
            schema.crm_tasks.insert().values(
                key=key,
                task_id=f"T-{key}",
                run_id=run_id,
                contact_id=contact,
                account_id=CONTACTS[contact][0],
                owner_id="U01",
                playbook="detractor-callback",
                subject=f"Call {contact}",
                due=due,
                completed=completed,
                overdue_fired=overdue_fired,
                created_at=created,
                checked_at=checked_at,
            )
        )


def _tasks(store: Store, ids: dict[str, int]) -> None:
    # C3: done and seen done the morning after the due date -> within the SLA.
    run = _run(store, ids["C3@01-07"], "C3", "detractor-callback")
    _task(store, run, "C3", "cb-C3", created=at(1, 7), due=date(2026, 1, 8), completed=True,
          overdue_fired=False, checked_at=at(1, 9, 0))  # fmt: skip
    # C6: seen open past its due date, completed later -> late.
    run = _run(store, ids["C6@01-12"], "C6", "detractor-callback")
    _task(store, run, "C6", "cb-C6", created=at(1, 12), due=date(2026, 1, 13), completed=True,
          overdue_fired=True, checked_at=at(1, 15))  # fmt: skip
    # C5: never done -> overdue; its escalation task is not a second callback.
    run = _run(store, ids["C5@02-04"], "C5", "detractor-callback")
    _task(store, run, "C5", "cb-C5", created=at(2, 4), due=date(2026, 2, 5), completed=False,
          overdue_fired=True, checked_at=at(2, 6, 0))  # fmt: skip
    _task(store, run, "C5", "esc-C5", created=at(2, 9), due=date(2026, 2, 10), completed=False,
          overdue_fired=False, checked_at=None)  # fmt: skip
    # C8: never done -> overdue.
    run = _run(store, ids["C8@02-06"], "C8", "detractor-callback")
    _task(store, run, "C8", "cb-C8", created=at(2, 6), due=date(2026, 2, 9), completed=False,
          overdue_fired=True, checked_at=at(2, 10, 0))  # fmt: skip
    # C1: done on time.
    run = _run(store, ids["C1@02-10"], "C1", "detractor-callback")
    _task(store, run, "C1", "cb-C1", created=at(2, 10), due=date(2026, 2, 11), completed=True,
          overdue_fired=False, checked_at=at(2, 12, 0))  # fmt: skip
    # A passive's task is not a detractor callback.
    run = _run(store, ids["C4@01-08"], "C4", "passive-offer")
    _task(store, run, "C4", "offer-C4", created=at(1, 8), due=date(2026, 1, 9), completed=False,
          overdue_fired=True, checked_at=at(1, 10, 0))  # fmt: skip
