"""Write-back to the CRM: batched calls, the account roll-up (queued with the answers, coalesced:
written once answers pause, or after a maximum delay, while their contacts' write-back may still
wait), and retry of transient failures.

The CRM is the real sandbox behind a counting wrapper (the far side of the ``CRM`` interface)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import update
from structlog.testing import capture_logs

from nps_sync import config as config_mod
from nps_sync.abc import CRM
from nps_sync.errors import ConfigError
from nps_sync.models import AccountUpdate, BatchResult, ContactUpdate, RecordFailure
from nps_sync.queue import JobQueue, enqueue
from nps_sync.responses import ANSWER_JOB
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.writeback import ROLLUP_JOB, WriteBack, account_rollup
from tests.connectors.sandbox.fixtures import SandboxProbe
from tests.core.test_sending import (  # noqa: F401 - the *_fixture names are fixtures
    add_send,
    config_data,
    core_store_fixture,
    jobs,
    make_runtime,
    pg_module_store_fixture,
    send_row,
)


def write_seed(folder: Path, accounts: int, per_account: int) -> Path:
    """A sandbox seed: accounts A01.. each with ``per_account`` contacts C0001.."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "owners.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "email", "username", "manager_id"])
        w.writerow(["U01", "Maria Lopez", "maria.lopez@example.com", "mlopez", ""])
    with (folder / "accounts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "owner_id"])
        for a in range(1, accounts + 1):
            w.writerow([f"A{a:02d}", f"Account {a}", "U01"])
    with (folder / "contacts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "account_id", "owner_id", "first_name", "last_name", "email", "phone", "country"])
        n = 0
        for a in range(1, accounts + 1):
            for _ in range(per_account):
                n += 1
                w.writerow(
                    [
                        f"C{n:04d}",
                        f"A{a:02d}",
                        "U01",
                        f"First{n}",
                        f"Last{n}",
                        f"p{n}@example.com",
                        f"+1212555{n:04d}",
                        "US",
                    ]
                )
    return folder


class CountingCrm:
    """The sandbox CRM, counting write calls; chosen record ids fail (transiently or for good)."""

    def __init__(self, inner: CRM) -> None:
        self.inner = inner
        self.name = inner.name
        self.contact_calls: list[list[ContactUpdate]] = []
        self.account_calls: list[list[AccountUpdate]] = []
        self.failing: dict[str, RecordFailure] = {}

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        self.contact_calls.append(list(updates))
        ok = [u for u in updates if u.contact_id not in self.failing]
        result = self.inner.update_contacts(ok)
        failed = [self.failing[u.contact_id] for u in updates if u.contact_id in self.failing]
        return BatchResult(result.succeeded, (*result.failed, *failed))

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        self.account_calls.append(list(updates))
        return self.inner.update_accounts(updates)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def rt(tmp_path: Path, core_store: Store) -> Iterator[Runtime]:
    seed = write_seed(tmp_path / "seed", accounts=10, per_account=20)
    runtime = make_runtime(tmp_path, core_store, sandbox={"seed": str(seed)}, account_window="30d")
    yield runtime
    runtime.close()


def counting_queue(rt: Runtime) -> tuple[JobQueue, CountingCrm]:
    """The runtime's queue settings (batch sizes, lingers, coalescing) around a counting CRM."""
    crm = CountingCrm(rt.crm)
    writeback = WriteBack(rt.store, crm, account_window=rt.config.daemon.account_window)
    queue = JobQueue(
        rt.store,
        {"writeback": writeback.handle, ROLLUP_JOB: writeback.rollup, "crm_opt_out": writeback.opt_out},
        batch_sizes=rt.queue.batch_sizes,
        lingers=rt.queue.lingers,
        coalesce=rt.queue.coalesce,
    )
    return queue, crm


def answer(rt: Runtime, contact: str, score: int, comment: str | None = None, key: str | None = None) -> int:
    send_id = add_send(rt, contact, state="sent", sent_at=utcnow(), key=key)
    rt.responses.record(send_id, score, comment, channel="email")
    return send_id


def test_200_responses_become_one_contacts_call_and_one_accounts_call(rt: Runtime) -> None:
    contacts = [f"C{n:04d}" for n in range(1, 201)]
    for n, contact in enumerate(contacts):
        answer(rt, contact, n % 11, f"comment {n}")
    assert (200, 10) == (len(jobs(rt.store, "writeback")), len(jobs(rt.store, ROLLUP_JOB)))
    queue, crm = counting_queue(rt)

    assert 210 == queue.drain()  # one batch of write-backs, one of roll-ups (a job per account)
    assert 0 == queue.run_once(linger=False)
    assert [200] == [len(call) for call in crm.contact_calls]

    assert sorted(contacts) == sorted(u.contact_id for u in crm.contact_calls[0])
    assert [[f"A{a:02d}" for a in range(1, 11)]] == [
        [u.account_id for u in call] for call in crm.account_calls
    ]
    assert {"done"} == {j["state"] for j in jobs(rt.store)}
    probe = SandboxProbe(rt.store)
    assert ("7", "passive", "comment 194") == tuple(
        probe.contact_value("C0195", k) for k in ("score", "category", "comment")
    )


def test_account_nps_counts_each_contacts_latest_response_within_the_window(rt: Runtime) -> None:
    # Account A01: C0001 detractor then promoter (latest counts), C0002 promoter, C0003 passive,
    # C0004 a detractor 40 days ago (outside the 30-day window). → P=2, D=0, n=3: NPS 66.7.
    # Account A02: C0021 detractor, C0022 detractor, C0023 promoter, C0024 passive → (1-2)/4: -25.0.
    with time_machine.travel(utcnow() - timedelta(days=40)):
        answer(rt, "C0004", 1, key="old")
    with time_machine.travel(utcnow() - timedelta(days=2)):
        answer(rt, "C0001", 2, key="first")
    answer(rt, "C0001", 10, key="second")
    answer(rt, "C0002", 9)
    answer(rt, "C0003", 8)
    for contact, score in (("C0021", 0), ("C0022", 6), ("C0023", 10), ("C0024", 7)):
        answer(rt, contact, score)

    rollup = account_rollup(rt.store, ["A01", "A02", "A03"], timedelta(days=30))

    assert [
        AccountUpdate("A01", 66.7, 3, promoters=2, passives=1, detractors=0),
        AccountUpdate("A02", -25.0, 4, promoters=1, passives=1, detractors=2),
        AccountUpdate("A03", None, 0),
    ] == rollup

    queue, _ = counting_queue(rt)
    assert 11 == queue.drain()  # 9 write-backs, and the roll-ups of A01 and A02 queued with them
    probe = SandboxProbe(rt.store)
    assert [("66.7", "3"), ("-25.0", "4")] == [
        (probe.account_value(a, "nps"), probe.account_value(a, "responses")) for a in ("A01", "A02")
    ]


def test_a_transient_record_failure_retries_the_job_later(rt: Runtime) -> None:
    answer(rt, "C0001", 3, "slow")
    queue, crm = counting_queue(rt)
    crm.failing["C0001"] = RecordFailure("C0001", "UNABLE_TO_LOCK_ROW", transient=True)

    assert 1 == queue.run_once("writeback")
    [job] = jobs(rt.store, "writeback")
    assert ("queued", 1) == (job["state"], job["attempts"])
    assert "ConnectorUnavailable" in job["last_error"]
    assert 0 == queue.run_once("writeback")  # backing off

    crm.failing.clear()
    with time_machine.travel(utcnow() + timedelta(minutes=1)):
        assert 1 == queue.run_once("writeback")
    [job] = jobs(rt.store, "writeback")
    assert ("done", 2) == (job["state"], job["attempts"])
    assert 2 == len(crm.contact_calls)
    assert "3" == SandboxProbe(rt.store).contact_value("C0001", "score")


def test_a_permanent_record_failure_is_logged_and_not_retried(rt: Runtime) -> None:
    answer(rt, "C0001", 3, "slow")
    answer(rt, "C0002", 9)
    queue, crm = counting_queue(rt)
    crm.failing["C0001"] = RecordFailure("C0001", "FIELD_CUSTOM_VALIDATION_EXCEPTION")

    with capture_logs() as logs:
        assert 2 == queue.run_once("writeback")
    assert [{"contact_id": "C0001", "reason": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "transient": False}] == [
        {k: e[k] for k in ("contact_id", "reason", "transient")}
        for e in logs
        if e["event"] == "writeback.contact_failed"
    ]
    assert {"done"} == {j["state"] for j in jobs(rt.store, "writeback")}
    with time_machine.travel(utcnow() + timedelta(hours=1)):
        assert 0 == queue.run_once("writeback")
    assert 1 == len(crm.contact_calls)
    assert "9" == SandboxProbe(rt.store).contact_value("C0002", "score")


def test_opt_outs_are_mirrored_to_the_crm_and_a_refused_one_is_logged(rt: Runtime) -> None:
    with rt.store.begin() as conn:
        for contact in ("C0001", "C0002"):
            enqueue(rt.store, conn, "crm_opt_out", {"contact_id": contact, "channel": "sms"})
    queue, crm = counting_queue(rt)
    crm.failing["C0002"] = RecordFailure("C0002", "INVALID_FIELD_FOR_INSERT_UPDATE")

    with capture_logs() as logs:
        assert 2 == queue.run_once(linger=False)

    probe = SandboxProbe(rt.store)
    assert ("true", "false") == (
        probe.contact_value("C0001", "sms_opt_out"),
        probe.contact_value("C0002", "sms_opt_out"),
    )
    assert [("C0002", "INVALID_FIELD_FOR_INSERT_UPDATE")] == [
        (e["contact_id"], e["reason"]) for e in logs if e["event"] == "writeback.opt_out_failed"
    ]
    assert [2] == [len(call) for call in crm.contact_calls]  # one batched call for both


# --- account roll-ups: once answers pause, or after the maximum delay -----------------------------


def test_answers_of_a_burst_share_one_account_roll_up_once_they_pause(rt: Runtime) -> None:
    """Two bursts of answers (A01–A03, then A03–A05) cost one contacts call, once they paused for
    the write-back's 0.5 s, and one accounts call right after it: the roll-ups' own quiet gap
    (``account_rollup_quiet``, 0.1 s) counts from the last answer, but while a write-back waits
    for more answers the stream may not be over."""
    queue, crm = counting_queue(rt)
    with time_machine.travel(utcnow(), tick=False) as clock:
        for n in range(1, 51):
            answer(rt, f"C{n:04d}", 10)
        clock.shift(timedelta(seconds=0.05))
        for n in range(51, 101):
            answer(rt, f"C{n:04d}", 0)
        assert 5 == len(jobs(rt.store, ROLLUP_JOB))  # A03 was asked for twice: still one job
        clock.shift(timedelta(seconds=0.49))
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=0.01))
        assert 100 == queue.run_once()  # the write-back first
        assert [] == crm.account_calls
        assert 5 == queue.run_once()  # then the roll-ups, their gap long over
    assert [100] == [len(call) for call in crm.contact_calls]
    assert [[f"A{a:02d}" for a in range(1, 6)]] == [[u.account_id for u in c] for c in crm.account_calls]
    probe = SandboxProbe(rt.store)
    assert [("100.0", "20"), ("0.0", "20"), ("-100.0", "20")] == [
        (probe.account_value(a, "nps"), probe.account_value(a, "responses")) for a in ("A01", "A03", "A05")
    ]


def test_an_answer_not_yet_recorded_holds_the_account_roll_up(rt: Runtime) -> None:
    """A web answer is committed as an ``answer`` job before it is recorded: while it waits, the
    roll-ups' quiet gap does not count (recording it touches its account's roll-up)."""
    crm = CountingCrm(rt.crm)
    writeback = WriteBack(rt.store, crm, account_window=rt.config.daemon.account_window)
    queue = JobQueue(
        rt.store,
        {
            ANSWER_JOB: rt.responses.handle_answers,
            "writeback": writeback.handle,
            ROLLUP_JOB: writeback.rollup,
        },
        batch_sizes=rt.queue.batch_sizes,
        lingers=rt.queue.lingers,
        coalesce=rt.queue.coalesce,
    )
    with time_machine.travel(utcnow(), tick=False) as clock:
        for n in range(1, 51):
            answer(rt, f"C{n:04d}", 10)  # roll-ups of A01–A03 asked for
        assert 50 == queue.run_once("writeback", linger=False)
        clock.shift(timedelta(seconds=0.05))
        late = add_send(rt, "C0051", state="sent", sent_at=utcnow())
        rt.responses.accept(late, 0, None, channel="email")  # C0051 is in account A03
        clock.shift(timedelta(seconds=0.1))  # the roll-ups' quiet gap has passed since their request
        assert 1 == queue.run_once()  # … but the answer goes first: it is recorded, not rolled up
        assert [] == crm.account_calls
        # Recording it touched A03's roll-up and queued C0051's write-back, which waits 0.5 s for
        # more answers; the roll-ups wait with it.
        clock.shift(timedelta(seconds=0.49))
        assert 0 == queue.run_once()
        clock.shift(timedelta(seconds=0.01))
        assert 1 == queue.run_once()
        assert 3 == queue.run_once()
    assert [50, 1] == [len(call) for call in crm.contact_calls]
    assert [["A01", "A02", "A03"]] == [[u.account_id for u in c] for c in crm.account_calls]
    probe = SandboxProbe(rt.store)
    # A03: ten promoters (C0041–C0050) and the late detractor.
    assert ("81.8", "11") == (probe.account_value("A03", "nps"), probe.account_value("A03", "responses"))


# --- roll-ups are queued by the answers that can change them --------------------------------------


def rollup_jobs(rt: Runtime) -> list[tuple[str, str | None, dict[str, Any]]]:
    """``(state, dedupe key, payload)`` of each ``account_rollup`` job."""
    return [(j["state"], j["dedupe_key"], j["payload"]) for j in jobs(rt.store, ROLLUP_JOB)]


def queued_rollup(account_id: str) -> tuple[str, str, dict[str, Any]]:
    return ("queued", f"{ROLLUP_JOB}:{account_id}", {"account_id": account_id})


def test_an_answer_queues_its_accounts_roll_up_in_its_own_transaction(rt: Runtime) -> None:
    send_id = add_send(rt, "C0001", state="sent", sent_at=utcnow())

    def answer_then_fail() -> None:
        with rt.store.begin() as conn:
            rt.responses.record_in(conn, send_id, 9, None, channel="email")
            raise RuntimeError("the caller's transaction fails after the answer")

    with pytest.raises(RuntimeError, match="after the answer"):
        answer_then_fail()
    assert ([], []) == (rollup_jobs(rt), jobs(rt.store, "writeback"))

    rt.responses.record(send_id, 9, None, channel="email")

    assert [queued_rollup("A01")] == rollup_jobs(rt)
    assert 1 == len(jobs(rt.store, "writeback"))


@pytest.mark.parametrize("path", ["web", "sms"])
def test_answers_by_web_form_and_sms_queue_their_accounts_roll_up(rt: Runtime, path: str) -> None:
    """Every way an answer arrives is recorded through ``record_in``, which queues the roll-up."""
    if path == "web":
        send_id = add_send(rt, "C0021", state="sent", sent_at=utcnow())
        rt.responses.accept(send_id, 3, None, channel="email")
        assert [] == rollup_jobs(rt)  # accepted, not yet recorded
        rt.queue.run_once(ANSWER_JOB)
    else:
        add_send(rt, "C0021", channel="sms", state="sent", sent_at=utcnow(), key="sms-survey")
        phone = send_row(rt.store, "sms-survey")["address"]
        rt.responses.sms_received(
            provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="3"
        )
    assert [queued_rollup("A02")] == rollup_jobs(rt)


def test_a_second_answer_in_the_account_touches_the_queued_roll_up(rt: Runtime) -> None:
    """C0001 and C0002 are both in A01: one queued job, touched by the later answer (its quiet gap
    counts from then) and still due when the first answer asked."""
    with time_machine.travel(utcnow(), tick=False) as clock:
        first = utcnow()
        answer(rt, "C0001", 9)
        clock.shift(timedelta(seconds=0.05))
        answer(rt, "C0002", 2)
        [job] = jobs(rt.store, ROLLUP_JOB)
    assert (queued_rollup("A01"), first, first + timedelta(seconds=0.05)) == (
        (job["state"], job["dedupe_key"], job["payload"]),
        job["run_at"],
        job["updated_at"],
    )


@pytest.mark.parametrize(
    ("score", "comment", "rolled_up"),
    [
        (10, None, False),  # promoter → promoter
        (9, "Great support", False),  # a comment only
        (7, None, True),  # promoter → passive
        (3, None, True),  # promoter → detractor
    ],
)
def test_a_changed_answer_queues_a_roll_up_only_when_its_category_changed(
    rt: Runtime, score: int, comment: str | None, rolled_up: bool
) -> None:
    queue, crm = counting_queue(rt)
    send_id = answer(rt, "C0001", 9)
    assert 2 == queue.drain()  # the write-back and A01's roll-up
    assert [] == [j for j in rollup_jobs(rt) if j[0] != "done"]

    with time_machine.travel(utcnow() + timedelta(minutes=5)):
        rt.responses.record(send_id, score, comment, channel="email")

        assert ([queued_rollup("A01")] if rolled_up else []) == [j for j in rollup_jobs(rt) if j[0] != "done"]
        assert 1 == len([j for j in jobs(rt.store, "writeback") if j["state"] == "queued"])
        assert 1 + rolled_up == queue.drain()  # the write-back, and a roll-up if one was queued
    assert [["A01"]] * (1 + rolled_up) == [[u.account_id for u in c] for c in crm.account_calls]


def test_an_answer_without_an_account_queues_no_roll_up(rt: Runtime) -> None:
    send_id = add_send(rt, "C0001", state="sent", sent_at=utcnow())
    with rt.store.begin() as conn:
        conn.execute(update(schema.sends).where(schema.sends.c.id == send_id).values(account_id=None))

    rt.responses.record(send_id, 2, None, channel="email")

    assert [] == rollup_jobs(rt)
    assert [{"contact_id": "C0001", "account_id": None}] == [
        j["payload"] for j in jobs(rt.store, "writeback")
    ]


def test_the_roll_up_runs_as_soon_as_the_last_write_back_is_done(rt: Runtime) -> None:
    """The runtime's queue: the roll-up's quiet gap (0.1 s) counts from the answer, so it is over by
    the time the write-back's (0.5 s) is, and it is claimed right after the write-back is done
    (before, it was asked for by the write-back and waited 0.1 s more)."""
    with time_machine.travel(utcnow(), tick=False) as clock:
        answer(rt, "C0001", 9)
        clock.shift(timedelta(seconds=0.1))
        assert [] == rt.queue.claim()  # the write-back may still get company
        clock.shift(timedelta(seconds=0.4))
        assert 1 == rt.queue.run_once()
        assert ["done"] == [j["state"] for j in jobs(rt.store, "writeback")]
        assert [(ROLLUP_JOB, {"account_id": "A01"})] == [(c[1], c[2]) for c in rt.queue.claim()]


def test_a_steady_stream_of_answers_writes_each_account_once_per_maximum_delay(
    tmp_path: Path, core_store: Store
) -> None:
    seed = write_seed(tmp_path / "seed", accounts=2, per_account=100)
    rt = make_runtime(
        tmp_path,
        core_store,
        sandbox={"seed": str(seed)},
        account_rollup_quiet="2s",
        account_rollup_max_delay="1m",
    )
    queue, crm = counting_queue(rt)
    written: list[int] = []  # the second of the stream each accounts call was made in
    try:
        with time_machine.travel(utcnow(), tick=False) as clock:
            for second in range(90):  # an answer a second: each is written back on its own
                answer(rt, f"C{second + 1:04d}", 9)
                clock.shift(timedelta(seconds=0.6))
                while queue.run_once():
                    pass
                clock.shift(timedelta(seconds=0.4))
                written += [second] * (len(crm.account_calls) - len(written))
            assert 90 == len(crm.contact_calls)
            assert [60] == written  # the first roll-up job was queued with the first answer: due at 60 s
            clock.shift(timedelta(seconds=2))  # the stream ends
            assert 1 == queue.run_once()
    finally:
        rt.close()
    assert [["A01"], ["A01"]] == [[u.account_id for u in call] for call in crm.account_calls]
    assert "90" == SandboxProbe(rt.store).account_value("A01", "responses")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"account_rollup_quiet": "0s"},
            "daemon.account_rollup_quiet: account_rollup_quiet must be positive",
        ),
        ({"account_rollup_max_delay": "soon"}, "daemon.account_rollup_max_delay: expected a duration"),
        ({"account_rollup_quiet": "20m"}, "account_rollup_quiet must not exceed account_rollup_max_delay"),
        ({"task_batch_wait": "0s"}, "daemon.task_batch_wait: task_batch_wait must be positive"),
        ({"task_batch_wait": "a while"}, "daemon.task_batch_wait: expected a duration"),
    ],
)
def test_bad_roll_up_delays_are_config_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_mod.parse(config_data(**options), source=Path("config.toml"))


@pytest.mark.parametrize(
    ("setting", "claimed_at"),
    [({}, 1.6), ({"task_batch_wait": "4s"}, 4.0)],  # the default 1.5 s: the first 0.4 s tick after it
)
def test_playbook_steps_wait_task_batch_wait_for_a_fuller_task_call(
    tmp_path: Path, core_store: Store, setting: dict[str, str], claimed_at: float
) -> None:
    """Steps arriving every 0.4 s (no quiet gap) run together once the oldest waited the setting."""
    rt = make_runtime(tmp_path, core_store, **setting)
    ran_at: list[float] = []
    try:
        with time_machine.travel(utcnow(), tick=False) as clock:
            for tick in range(15):
                with rt.store.begin() as conn:
                    enqueue(rt.store, conn, "playbook_step", {"run_id": tick, "step": 0})
                clock.shift(timedelta(seconds=0.4))
                claimed = rt.queue.claim()
                if claimed:
                    ran_at.append(round((tick + 1) * 0.4, 1))
                    assert {"playbook_step"} == {c[1] for c in claimed}
                    break
    finally:
        rt.close()
    assert [claimed_at] == ran_at


def test_the_queue_tells_when_its_first_lingering_batch_is_due(tmp_path: Path, core_store: Store) -> None:
    """An idle worker sleeps until then (``idle``): a step waits its quiet gap (0.5 s) or at most
    ``task_batch_wait`` after the oldest step, whichever ends first."""
    rt = make_runtime(tmp_path, core_store)
    try:
        with time_machine.travel(utcnow(), tick=False) as clock:
            assert rt.queue.seconds_to_linger_end() is None
            with rt.store.begin() as conn:
                enqueue(rt.store, conn, "playbook_step", {"run_id": 1, "step": 0})
            assert [] == rt.queue.claim()
            assert 0.5 == rt.queue.seconds_to_linger_end()  # the quiet gap
            for _ in range(3):
                clock.shift(timedelta(seconds=0.4))
                with rt.store.begin() as conn:
                    enqueue(rt.store, conn, "playbook_step", {"run_id": 2, "step": 0})
                assert [] == rt.queue.claim()
            assert 0.3 == pytest.approx(rt.queue.seconds_to_linger_end())  # 1.5 s after the oldest
            clock.shift(timedelta(seconds=0.3))
            assert 4 == len(rt.queue.claim())
    finally:
        rt.close()
