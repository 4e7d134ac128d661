"""Waves: one decision per contact with a stable reason, recorded for real waves and never for dry runs;
follow-ups (reminders, the SMS of ``email_then_sms``) queued once each. Real SQLite store, real
sandbox CRM (the 50 shipped contacts unless a test seeds its own), real outbox."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from nps_sync.models import Audience, Contact
from nps_sync.render import shipped_texts
from nps_sync.runtime import Runtime
from nps_sync.sending import suppress
from nps_sync.store import schema
from nps_sync.store.db import Store
from nps_sync.survey import Decision
from nps_sync.waves import run_wave, schedule_followups
from tests.core import config_data, make_runtime, program

UTC = timezone.utc
#: A Tuesday: 11:00 in Los Angeles, 14:00 in New York, 19:00 in Berlin (US clocks moved on March 8).
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)

MakeRuntime = Callable[..., Runtime]


@pytest.fixture
def make(tmp_path: Path, sqlite_store: Store) -> Iterator[MakeRuntime]:
    made: list[Runtime] = []

    def build(*programs: dict[str, Any], **tables: Any) -> Runtime:
        rt = make_runtime(tmp_path, sqlite_store, config_data(*programs, **tables))
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.close()


def decide(
    rt: Runtime, name: str, wave_id: str = "w1", *, now: datetime = T0, dry_run: bool = False, crm: Any = None
) -> dict[str, Decision]:
    """Run a wave and return its decisions by contact id."""
    seen: list[Decision] = []
    run_wave(
        rt.store,
        rt.config,
        crm or rt.crm,
        rt.config.program_named(name),
        wave_id,
        dry_run=dry_run,
        now=now,
        on_page=seen.extend,
    )
    return {d.contact.id: d for d in seen}


def outcome(d: Decision) -> tuple[str, str, str]:
    return d.decision, d.reason, d.detail


def count(store: Store, table: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def sends(store: Store, **where: Any) -> list[dict[str, Any]]:
    t = schema.sends
    query = select(t).order_by(t.c.id)
    for column, value in where.items():
        query = query.where(t.c[column] == value)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def decisions_stored(store: Store, wave_id: str) -> dict[str, str]:
    t = schema.wave_decisions
    with store.read() as conn:
        rows = conn.execute(select(t.c.contact_id, t.c.reason).where(t.c.wave_id == wave_id)).all()
    return {r.contact_id: r.reason for r in rows}


def only(*ids: str) -> dict[str, Any]:
    return {"where": {"id": list(ids)}}


# --- one test per reason ----------------------------------------------------------------------------


def test_eligible_contact_is_queued_now_and_the_detail_names_zone_and_its_source(make: MakeRuntime) -> None:
    rt = make(program("p", send_window="09:00-18:00", audience=only("C002")))

    decided = decide(rt, "p")

    assert ("send", "eligible", "time zone America/Los_Angeles (crm)") == outcome(decided["C002"])
    [row] = sends(rt.store)
    expected = ("C002", "survey", "email", "bob.jones@contoso.example", "queued", T0, "America/Los_Angeles")
    actual = tuple(
        row[k] for k in ("contact_id", "kind", "channel", "address", "state", "not_before", "time_zone")
    )
    assert expected == actual
    assert {"C002": "eligible"} == decisions_stored(rt.store, "w1")


def test_outside_window_is_deferred_to_the_next_opening_shown_in_the_recipients_zone(
    make: MakeRuntime,
) -> None:
    rt = make(program("p", send_window="09:00-18:00", audience=only("C003")))

    decided = decide(rt, "p")

    detail = "outside 09:00-18:00 in Europe/Berlin; sends at 2026-03-11 09:00 local"
    assert ("defer", "outside_window", detail) == outcome(decided["C003"])
    [row] = sends(rt.store)
    assert ("queued", datetime(2026, 3, 11, 8, 0, tzinfo=UTC)) == (row["state"], row["not_before"])


@pytest.mark.parametrize(
    ("channel", "contact", "reason", "detail"),
    [
        ("email", "C012", "no_address", "no email address in the CRM"),
        ("sms", "C015", "no_address", "no phone number in the CRM"),
        ("email", "C011", "invalid_address", "not a valid email address: 'not-an-email'"),
        ("sms", "C017", "invalid_address", "not a valid phone number: '+49 30 12'"),
        ("email", "C013", "crm_opt_out", "the CRM's email opt-out field is set"),
        ("sms", "C014", "crm_opt_out", "the CRM's sms opt-out field is set"),
    ],
)
def test_contacts_without_a_usable_address_are_skipped_with_the_reason(
    make: MakeRuntime, channel: str, contact: str, reason: str, detail: str
) -> None:
    rt = make(program("p", channel=channel, audience=only(contact)))

    decided = decide(rt, "p")

    assert ("skip", reason, detail) == outcome(decided[contact])
    assert [] == sends(rt.store)
    assert {contact: reason} == decisions_stored(rt.store, "w1")


@pytest.mark.parametrize(
    ("channel", "address", "reason"),
    [("email", "bob.jones@contoso.example", "unsubscribed"), ("sms", "+14155551001", "stop")],
)
def test_suppressed_address_is_skipped_naming_the_suppression(
    make: MakeRuntime, channel: str, address: str, reason: str
) -> None:
    rt = make(program("p", channel=channel, audience=only("C002", "C022")))
    with rt.store.begin() as conn:
        suppress(rt.store, conn, channel, address, reason, "test")

    decided = decide(rt, "p")

    assert ("skip", "suppressed", f"{address} is suppressed: {reason}") == outcome(decided["C002"])
    assert "eligible" == decided["C022"].reason
    assert ["C022"] == [r["contact_id"] for r in sends(rt.store)]


def test_recently_surveyed_counts_surveys_of_every_program_and_names_the_next_date(
    make: MakeRuntime,
) -> None:
    rt = make(program("a", audience=only("C002")), program("b", audience=only("C002")))
    assert "eligible" == decide(rt, "a", "a1")["C002"].reason

    ten_days_later = decide(rt, "b", "b1", now=T0 + timedelta(days=10))["C002"]
    after_interval = decide(rt, "b", "b2", now=T0 + timedelta(days=91))["C002"]

    detail = "surveyed 2026-03-10 (a); next survey after 2026-06-08"
    assert ("skip", "recently_surveyed", detail) == outcome(ten_days_later)
    assert "eligible" == after_interval.reason


def test_account_quota_counts_sends_planned_earlier_in_the_same_wave_and_stored_ones(
    make: MakeRuntime,
) -> None:
    rt = make(program("p", account_max=2, account_interval="30d", audience={"where": {"account_id": "A01"}}))

    first = decide(rt, "p", "w1")
    next_day = decide(rt, "p", "w2", now=T0 + timedelta(days=1))
    after_interval = decide(rt, "p", "w3", now=T0 + timedelta(days=31))

    quota = "account Northwind Traders already has 2 of 2 surveys in 30 days"
    assert {
        "C001": ("send", "eligible"),
        "C011": ("skip", "invalid_address"),
        "C021": ("send", "eligible"),
        "C031": ("skip", "account_quota"),
        "C041": ("skip", "account_quota"),
    } == {cid: (d.decision, d.reason) for cid, d in first.items()}
    assert quota == first["C031"].detail
    assert ("account_quota", quota) == (next_day["C031"].reason, next_day["C031"].detail)
    assert ["eligible", "eligible"] == [after_interval["C031"].reason, after_interval["C041"].reason]


def test_open_detractor_callback_blocks_the_account_until_the_crm_shows_the_task_completed(
    make: MakeRuntime,
) -> None:
    rt = make(
        program("first", audience=only("C001")), program("second", audience={"where": {"account_id": "A01"}})
    )
    with time_machine.travel(T0):
        decide(rt, "first", "f1")
        rt.drain()
        [survey] = sends(rt.store, contact_id="C001")
        rt.responses.record(survey["id"], 3, "too slow", channel="email")
        rt.drain()
        [task] = rt.crm.db.tasks()
        assert ("open", "U02") == (task["status"], task["owner_id"])

        blocked = decide(rt, "second", "s1", now=T0 + timedelta(hours=1))
        rt.crm.db.set_task_status(task["id"], True)
        unblocked = decide(rt, "second", "s2", now=T0 + timedelta(hours=2))

    detail = "account Northwind Traders has an open detractor callback"
    assert {("skip", "open_callback", detail)} == {outcome(blocked[c]) for c in ("C021", "C031", "C041")}
    assert "recently_surveyed" == blocked["C001"].reason
    assert ["eligible"] * 3 == [unblocked[c].reason for c in ("C021", "C031", "C041")]
    with rt.store.read() as conn:
        assert [True] == list(conn.execute(select(schema.crm_tasks.c.completed)).scalars())


def test_sampling_is_deterministic_for_a_wave_id(make: MakeRuntime) -> None:
    rt = make(program("p", sample=0.5))

    def sampled_out(wave_id: str) -> set[str]:
        decided = decide(rt, "p", wave_id, dry_run=True)
        return {cid for cid, d in decided.items() if d.reason == "sampled_out"}

    first, again, other_wave = sampled_out("w1"), sampled_out("w1"), sampled_out("w2")

    assert first == again
    assert first != other_wave
    assert 10 < len(first) < 37  # about half of the 47 contacts with a usable address
    d = decide(rt, "p", "w1", dry_run=True)[min(first)]
    assert ("skip", "sampled_out", "sampling keeps 50% of the audience") == outcome(d)


def test_no_window_when_the_candidate_zones_never_share_an_opening(make: MakeRuntime) -> None:
    # C015 has neither a zone nor a phone: "US" leaves every US zone, New York to Honolulu.
    rt = make(program("p", send_window="09:00-10:00", audience=only("C015")))

    d = decide(rt, "p")["C015"]

    assert ("skip", "no_window") == (d.decision, d.reason)
    assert d.detail.startswith("no common 09:00-10:00 window in America/New_York, ")
    assert "Pacific/Honolulu" in d.detail
    assert [] == sends(rt.store)


class CrmWithOneUnreadableRecord:
    """The real sandbox CRM, plus one record as a sloppy mapping hands it over: a multi-select list
    where the time zone name belongs."""

    def __init__(self, crm: Any) -> None:
        self.crm = crm

    def iter_audience(self, audience: Audience) -> Iterator[Sequence[Contact]]:
        broken = Contact(id="C999", first_name="Broken", email="broken@example.com", time_zone=["UTC"])  # type: ignore[arg-type]
        for page in self.crm.iter_audience(audience):
            yield [*page, broken]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.crm, name)


def test_bad_record_is_skipped_with_the_error_and_the_wave_goes_on(make: MakeRuntime) -> None:
    rt = make(program("p", audience=only("C002", "C003")))

    decided = decide(rt, "p", crm=CrmWithOneUnreadableRecord(rt.crm))

    assert ("skip", "bad_record", "AttributeError: 'list' object has no attribute 'strip'") == outcome(
        decided["C999"]
    )
    assert ["C002", "C003"] == [r["contact_id"] for r in sends(rt.store)]
    assert {"C002": "eligible", "C003": "eligible", "C999": "bad_record"} == decisions_stored(rt.store, "w1")


# --- recording ------------------------------------------------------------------------------------


def test_dry_run_explains_every_contact_and_records_nothing(make: MakeRuntime) -> None:
    rt = make(program("p"))
    tables = (schema.waves, schema.wave_decisions, schema.sends, schema.jobs)

    summary = run_wave(rt.store, rt.config, rt.crm, rt.config.program[0], "w1", dry_run=True, now=T0)

    assert 50 == summary.total == len(summary.decisions) == len({d.contact.id for d in summary.decisions})
    assert {"eligible": 47, "no_address": 1, "invalid_address": 1, "crm_opt_out": 1} == dict(summary.counts)
    assert [0, 0, 0, 0] == [count(rt.store, t) for t in tables]


def test_running_the_same_wave_id_twice_queues_each_survey_once(make: MakeRuntime) -> None:
    rt = make(program("p", send_window="09:00-18:00", default_time_zone="America/New_York"))

    first = decide(rt, "p", "p@2026-03-10T19:00+0100")
    again = decide(rt, "p", "p@2026-03-10T19:00+0100", now=T0 + timedelta(minutes=5))

    surveyed = sorted(cid for cid, d in first.items() if d.decision in ("send", "defer"))
    rows = sends(rt.store)
    assert surveyed == sorted(r["contact_id"] for r in rows)
    assert len(rows) == len({r["send_key"] for r in rows})
    assert {"send", "defer"} == {
        d.decision for d in first.values() if d.reason in ("eligible", "outside_window")
    }
    assert {"recently_surveyed"} == {again[c].reason for c in surveyed}


# --- time zones and language ------------------------------------------------------------------------


def seed_folder(folder: Path, contacts: list[str]) -> Path:
    folder.mkdir()
    (folder / "owners.csv").write_text("id,name,email\nU01,Olive Owner,olive@example.com\n")
    (folder / "accounts.csv").write_text("id,name,owner_id\nA01,Zoned Ltd,U01\n")
    header = "id,account_id,first_name,last_name,email,phone,locale,time_zone,country\n"
    (folder / "contacts.csv").write_text(header + "\n".join(contacts) + "\n")
    return folder


def test_time_zone_comes_from_crm_field_then_phone_then_country_then_program_default(
    make: MakeRuntime, tmp_path: Path
) -> None:
    seed = seed_folder(
        tmp_path / "seed",
        [
            "Z1,A01,Crm,Zone,z1@example.com,+81355551005,en,Europe/Lisbon,DE",
            "Z2,A01,Phone,Zone,z2@example.com,+81355551005,en,,DE",
            "Z3,A01,Country,Zone,z3@example.com,,en,,DE",
            "Z4,A01,Default,Zone,z4@example.com,,en,,",
            "Z5,A01,Bad,Zone,z5@example.com,+81355551005,en,Not/AZone,DE",
        ],
    )
    rt = make(
        program("p", default_time_zone="Asia/Kolkata"),
        crm={"kind": "sandbox", "sandbox": {"seed": str(seed)}},
    )

    decided = decide(rt, "p")

    assert {
        "Z1": "time zone Europe/Lisbon (crm)",
        "Z2": "time zone Asia/Tokyo (phone)",
        "Z3": "time zone Europe/Berlin (country)",
        "Z4": "time zone Asia/Kolkata (default)",
        "Z5": "time zone Asia/Tokyo (phone)",
    } == {cid: d.detail for cid, d in decided.items()}
    assert ["Europe/Lisbon", "Asia/Tokyo", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo"] == [
        r["time_zone"] for r in sends(rt.store)
    ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # US clocks jump from 02:00 EST to 03:00 EDT at 07:00 UTC on 2026-03-08.
        (datetime(2026, 3, 8, 6, 30, tzinfo=UTC), ("defer", datetime(2026, 3, 8, 13, 0, tzinfo=UTC))),
        (datetime(2026, 3, 8, 12, 0, tzinfo=UTC), ("defer", datetime(2026, 3, 8, 13, 0, tzinfo=UTC))),
        (datetime(2026, 3, 8, 13, 30, tzinfo=UTC), ("send", datetime(2026, 3, 8, 13, 30, tzinfo=UTC))),
        # And back from 02:00 EDT to 01:00 EST at 06:00 UTC on 2026-11-01.
        (datetime(2026, 11, 1, 12, 0, tzinfo=UTC), ("defer", datetime(2026, 11, 1, 14, 0, tzinfo=UTC))),
        (datetime(2026, 11, 1, 22, 30, tzinfo=UTC), ("send", datetime(2026, 11, 1, 22, 30, tzinfo=UTC))),
    ],
)
def test_send_window_follows_new_york_wall_clock_on_dst_change_days(
    make: MakeRuntime, now: datetime, expected: tuple[str, datetime]
) -> None:
    rt = make(program("p", send_window="09:00-18:00", audience=only("C008")))

    d = decide(rt, "p", now=now)["C008"]

    assert expected == (d.decision, d.not_before)
    if d.decision == "defer":
        assert (
            f"outside 09:00-18:00 in America/New_York; sends at {expected[1].date()} 09:00 local" == d.detail
        )


def test_german_locale_gets_the_german_survey_and_others_the_english_one(make: MakeRuntime) -> None:
    rt = make(program("p", audience=only("C002", "C003")))
    with time_machine.travel(T0):
        decide(rt, "p")
        rt.drain()
    with rt.store.read() as conn:
        rows = conn.execute(select(schema.outbox.c.to_addr, schema.outbox.c.subject)).all()

    assert {
        "bob.jones@contoso.example": "How likely are you to recommend Example Inc.?",
        "carla.brown@fabrikam.example": "Wie wahrscheinlich ist es, dass Sie Example Inc. empfehlen?",
    } == dict(rows)
    assert ["en", "de"] == [r["language"] for r in sends(rt.store)]
    assert "Wie wahrscheinlich ist es, dass Sie {{ company }} empfehlen?" == shipped_texts("de")["subject"]


def test_program_wording_overrides_the_shipped_text_for_its_language(make: MakeRuntime) -> None:
    rt = make(program("p", audience=only("C003"), text={"de": {"subject": "Ihre Meinung zu {{ company }}"}}))
    with time_machine.travel(T0):
        decide(rt, "p")
        rt.drain()
    with rt.store.read() as conn:
        subjects = list(conn.execute(select(schema.outbox.c.subject)).scalars())

    assert ["Ihre Meinung zu Example Inc."] == subjects


# --- follow-ups -------------------------------------------------------------------------------------


def surveyed_and_sent(rt: Runtime, name: str) -> None:
    with time_machine.travel(T0):
        decide(rt, name)
        rt.drain()
    assert {"sent"} == {r["state"] for r in sends(rt.store, kind="survey")}


def test_reminders_follow_after_the_delay_up_to_the_count_each_once(make: MakeRuntime) -> None:
    rt = make(program("p", audience=only("C002"), reminders={"count": 2, "after": "3d"}))
    surveyed_and_sent(rt, "p")

    queued = [
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=2)),
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=3, minutes=1)),
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=3, minutes=2)),
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=5)),
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=6, minutes=2)),
        schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=30)),
    ]

    assert [0, 1, 0, 0, 1, 0] == queued
    reminders = sends(rt.store, kind="reminder")
    survey = sends(rt.store, kind="survey")[0]
    assert [survey["send_key"].replace("|survey", f"|reminder{n}") for n in (1, 2)] == [
        r["send_key"] for r in reminders
    ]
    assert {("email", "bob.jones@contoso.example", survey["id"])} == {
        (r["channel"], r["address"], r["survey_send_id"]) for r in reminders
    }


def test_no_reminder_after_a_response(make: MakeRuntime) -> None:
    rt = make(program("p", audience=only("C002", "C022"), reminders={"count": 1, "after": "3d"}))
    surveyed_and_sent(rt, "p")
    answered = sends(rt.store, contact_id="C002")[0]
    with time_machine.travel(T0 + timedelta(hours=1)):
        rt.responses.record(answered["id"], 9, None, channel="email")

    queued = schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=4))

    assert 1 == queued
    assert ["C022"] == [r["contact_id"] for r in sends(rt.store, kind="reminder")]


def test_email_then_sms_texts_only_non_respondents_with_a_valid_unsuppressed_phone(
    make: MakeRuntime,
) -> None:
    # C002 qualifies; C005 answers; C008's number sent STOP; C014 opted out of SMS in the CRM;
    # C015 has no phone; C017's phone is not a valid number.
    rt = make(
        program(
            "p",
            channel="email_then_sms",
            sms_after="2d",
            audience=only("C002", "C005", "C008", "C014", "C015", "C017"),
        )
    )
    surveyed_and_sent(rt, "p")
    with time_machine.travel(T0 + timedelta(hours=1)):
        rt.responses.record(sends(rt.store, contact_id="C005")[0]["id"], 10, None, channel="email")
        with rt.store.begin() as conn:
            suppress(rt.store, conn, "sms", "+16465551007", "stop", "test")

    too_early = schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=1))
    due = schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=2, minutes=1))
    again = schedule_followups(rt.store, rt.config, now=T0 + timedelta(days=3))

    assert [0, 1, 0] == [too_early, due, again]
    [sms] = sends(rt.store, kind="followup_sms")
    assert ("C002", "sms", "+14155551001") == (sms["contact_id"], sms["channel"], sms["address"])


def test_recently_surveyed_names_the_program_of_the_latest_survey(make: MakeRuntime) -> None:
    rt = make(*(program(name, audience=only("C002")) for name in ("zeta", "alpha", "beta")))
    decide(rt, "zeta", "z1")
    decide(rt, "alpha", "a1", now=T0 + timedelta(days=91))

    d = decide(rt, "beta", "b1", now=T0 + timedelta(days=100))["C002"]

    assert (
        "skip",
        "recently_surveyed",
        "surveyed 2026-06-09 (alpha); next survey after 2026-09-07",
    ) == outcome(d)


def test_a_suppressed_national_format_number_is_found_in_the_contacts_country(
    make: MakeRuntime, tmp_path: Path
) -> None:
    seed = seed_folder(tmp_path / "seed", ["N1,A01,Nat,Ional,n1@example.com,030 1231002,de,,DE"])
    rt = make(program("p", channel="sms"), crm={"kind": "sandbox", "sandbox": {"seed": str(seed)}})
    with rt.store.begin() as conn:
        suppress(rt.store, conn, "sms", "+49301231002", "stop", "test")

    d = decide(rt, "p")["N1"]

    assert ("skip", "suppressed", "+49301231002 is suppressed: stop") == outcome(d)


class CountingEvent(threading.Event):
    """The runtime's work-queued event, counting how often it was set."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


@pytest.mark.parametrize("batch", [10_000, 1])
def test_a_wave_wakes_idle_workers_when_a_batch_may_be_full_and_when_it_ends(
    make: MakeRuntime, batch: int
) -> None:
    """A worker polls the sender every quarter second at most; a wave's full batch should not wait."""
    rt = make(program("p", audience={"page_size": 10}))
    for channel in rt.channels.values():
        channel.max_batch = batch  # type: ignore[misc]
    woken = CountingEvent()
    rt.responses.work_queued = woken
    with time_machine.travel(T0):
        rt.run_wave("p", wave_id="w1")
    pages = rt.crm.iter_audience(Audience(program="p", filter={"page_size": 10}, channel="email"))
    page_of = {c.id: n for n, page in enumerate(pages) for c in page}
    with_sends = {page_of[s["contact_id"]] for s in sends(rt.store, wave_id="w1")}
    assert len(page_of) == 50
    assert len(with_sends) == 5
    # One batch never fills: only the wave's end wakes. A batch of one fills on every page with a send.
    assert woken.sets == (1 if batch == 10_000 else 1 + len(with_sends))


def test_a_wave_that_queues_nothing_wakes_nobody(make: MakeRuntime) -> None:
    rt = make(program("p", audience={"where": {"email": "nobody@example.invalid"}}))
    woken = CountingEvent()
    rt.responses.work_queued = woken
    with time_machine.travel(T0):
        summary = rt.run_wave("p", wave_id="w1")
    assert (sum(summary.counts.values()), sends(rt.store), woken.sets) == (0, [], 0)
