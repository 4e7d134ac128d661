"""The three shipped playbooks, end to end through the job queue, the sandbox CRM and the store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from nps_sync.store import schema
from tests.playbooks.conftest import BOTH_STORES, PUBLIC_URL, SHIPPED, World, d, on

ALL = sorted(SHIPPED.glob("*.toml"))


def test_detractor_on_friday_gets_a_high_priority_call_task_for_the_account_owner_due_monday(
    world: World,
) -> None:
    world.use(ALL)
    world.answer("C001", 3, "Support took a week to answer.")
    world.drain()

    [task] = world.tasks()
    [response] = world.rows(schema.responses)
    assert "U02" == task["owner_id"]  # Jonas Weber owns Northwind Traders
    assert d(12) == task["due"]  # Friday + 1 business day = Monday
    assert ("high", "call") == (task["priority"], task["type"])
    assert "Call Alice Smith (Northwind Traders): NPS 3" == task["subject"]
    assert "answered 3/10" in task["body"]
    assert "Support took a week to answer." in task["body"]
    assert f"{PUBLIC_URL}/responses/{response['id']}" in task["body"]
    [record] = world.rows(schema.crm_tasks)
    assert (task["key"], task["id"], d(12), False) == (
        record["key"],
        record["task_id"],
        record["due"],
        record["completed"],
    )


def test_detractor_escalates_to_the_managers_after_two_business_days_when_the_call_is_open(
    world: World,
) -> None:
    world.use(ALL)
    world.answer("C001", 2)
    world.drain()
    world.move_to(on(12, 17))  # Monday evening: one business day later, still waiting
    world.drain()
    assert 1 == len(world.tasks())

    world.move_to(on(13, 10))  # Tuesday 10:00 = Friday 10:00 + 2 business days
    world.drain()

    callback, escalation = world.tasks()
    assert "U02" == callback["owner_id"]
    assert "U01" == escalation["owner_id"]  # Maria Lopez manages Jonas Weber
    assert escalation["subject"].startswith("Escalation: detractor Alice Smith")
    assert d(14) == escalation["due"]
    [run] = world.rows(schema.playbook_runs)
    assert ("done", 2) == (run["state"], run["step"])


@BOTH_STORES
def test_detractor_escalation_stops_when_the_callback_task_was_completed(world: World) -> None:
    world.use(ALL)
    world.answer("C001", 2)
    world.drain()
    [task] = world.tasks()
    world.crm.complete_task(task["id"])

    world.move_to(on(13, 10))
    world.drain()

    assert 1 == len(world.tasks())
    [run] = world.rows(schema.playbook_runs)
    steps = world.rows(schema.playbook_steps)
    assert "stopped" == run["state"]
    assert ("done", task["key"]) == (steps[0]["state"], steps[0]["result"]["task_key"])
    assert ("skipped", {"stopped_by": "task_completed"}) == (steps[1]["state"], steps[1]["result"])
    assert [True] == [r["completed"] for r in world.rows(schema.crm_tasks)]


@BOTH_STORES
def test_detractor_escalation_stops_when_the_contact_answered_again(world: World) -> None:
    world.use(ALL)
    world.answer("C001", 2)
    world.drain()
    world.move_to(on(12, 11))
    world.answer("C001", 9, program="onboarding")  # a new survey, answered on Monday
    world.drain()

    world.move_to(on(13, 10))
    world.drain()

    assert ["Call Alice Smith (Northwind Traders): NPS 2"] == [t["subject"] for t in world.tasks()]
    states = {r["playbook"]: r["state"] for r in world.rows(schema.playbook_runs)}
    assert {"detractor-callback": "stopped", "promoter-testimonial": "done"} == states


def test_passive_gets_one_offer_email_and_a_todo_task(world: World) -> None:
    world.use(ALL)
    event = world.answer("C003", 8, "Fine, but pricey.")
    world.drain()

    [message] = world.messages
    assert ("email", "C003", event.send_id, "passive-offer") == (
        message.channel,
        message.contact.id,
        message.survey_send_id,
        message.playbook,
    )
    assert "Thanks for your feedback, Carla" == message.subject
    assert 'You wrote: "Fine, but pricey."' in message.text
    assert "Tom Becker, your account manager" in message.text  # the account owner of Fabrikam
    [task] = world.tasks()
    assert ("todo", "normal", "U04", d(14)) == (task["type"], task["priority"], task["owner_id"], task["due"])
    [send] = [s for s in world.rows(schema.sends) if s["kind"] == "playbook"]
    assert message.key == send["send_key"]


def test_promoter_gets_the_testimonial_request_an_hour_later(world: World) -> None:
    world.use(ALL)
    world.answer("C005", 10, "Love it")
    world.drain()
    assert [] == world.messages

    world.move_to(on(9, 11, 1))
    world.drain()

    [message] = world.messages
    assert "Would you share a few words about Initech?" == message.subject
    assert 'You wrote: "Love it"' in message.text
    assert [] == world.tasks()


@BOTH_STORES
def test_a_lost_create_tasks_answer_retried_by_the_queue_creates_no_second_task(world: World) -> None:
    world.use(ALL)
    world.crm.lose_next_create = True
    world.answer("C001", 1)
    world.drain()  # first attempt: the task is created in the CRM, the answer is lost, the job fails
    assert 1 == len(world.tasks())
    assert [] == world.rows(schema.crm_tasks)

    world.move_to(on(9, 10, 5))  # the queue retries after its backoff
    world.drain()

    [task] = world.tasks()
    [record] = world.rows(schema.crm_tasks)
    assert 2 == world.crm.calls["create_tasks"]
    assert (task["key"], task["id"]) == (record["key"], record["task_id"])
    [step] = world.rows(schema.playbook_steps)
    assert True is step["result"]["existed"]
    # The first try creates without a key look-up; the queue's second claim asks for one.
    assert [[False], [True]] == [[s.recheck for s in call] for call in world.crm.task_calls]


def test_a_step_whose_worker_died_after_claiming_it_looks_its_task_key_up(world: World) -> None:
    world.use(ALL)
    world.answer("C001", 1)
    assert world.queue is not None
    [(_, kind, _, attempt)] = world.queue.claim("playbook_step", linger=False)
    assert ("playbook_step", 1) == (kind, attempt)
    # The worker dies here: its claim is committed, what it did in the CRM is unknown.
    assert 1 == world.queue.release_abandoned()
    world.drain()

    [call] = world.crm.task_calls
    assert [("nps:1:0", True)] == [(s.key, s.recheck) for s in call]
    assert 1 == len(world.tasks())


def test_the_same_job_run_twice_does_not_repeat_the_step(world: World) -> None:
    engine = world.use(ALL)
    world.answer("C001", 1)
    [run] = world.rows(schema.playbook_runs)
    payload = {"run_id": run["id"], "step": 0}
    engine.run_steps([payload])
    engine.run_steps([payload])
    engine.run_steps([{"run_id": run["id"]}])

    assert 1 == len(world.tasks())
    assert 1 == len(world.rows(schema.crm_tasks))
    assert [0] == [s["step"] for s in world.rows(schema.playbook_steps)]


@BOTH_STORES
def test_fifty_detractors_in_one_batch_make_exactly_one_create_tasks_call(world: World) -> None:
    world.use(ALL)
    ids = [f"C{n:03d}" for n in range(1, 51)]
    for contact_id in ids:
        world.answer(contact_id, 4)
    world.drain()

    assert 50 == len(world.tasks())
    assert 1 == world.crm.calls["create_tasks"]
    assert world.crm.calls["get_owners"] <= 2  # owners, then managers for the fallback chain
    assert 50 == len(world.rows(schema.crm_tasks))


def test_a_refused_task_fails_only_its_own_run(world: World) -> None:
    world.use(ALL)
    world.crm.refuse_tasks_for = {"C002"}
    world.answer("C001", 4)
    world.answer("C002", 4)
    world.drain()

    runs = {r["contact_id"]: r for r in world.rows(schema.playbook_runs)}
    assert ("running", "failed") == (runs["C001"]["state"], runs["C002"]["state"])
    failed = [s for s in world.rows(schema.playbook_steps) if s["run_id"] == runs["C002"]["id"]]
    assert "closed account" in failed[0]["result"]["error"]
    assert ["C001"] == [t["contact_id"] for t in world.tasks()]


def test_a_replaced_answer_with_another_category_stops_the_old_run_and_starts_the_new_one(
    world: World,
) -> None:
    world.use(ALL)
    first = world.answer("C001", 3)
    world.move_to(on(9, 10, 2))
    world.answer("C001", 9, send_id=first.send_id)  # the person changed their answer
    world.answer("C001", 9, send_id=first.send_id)  # a redelivery of the same change
    world.drain()

    runs = {r["playbook"]: r["state"] for r in world.rows(schema.playbook_runs)}
    assert {"detractor-callback": "stopped", "promoter-testimonial": "running"} == runs
    assert [] == world.tasks()


@BOTH_STORES
def test_wait_survives_a_restart_as_a_queued_job(world: World) -> None:
    world.use(ALL)
    world.answer("C001", 2)
    world.drain()
    with world.store.read() as conn:
        run_at = conn.execute(
            select(schema.jobs.c.run_at).where(schema.jobs.c.state == "queued")
        ).scalar_one()
    assert on(13, 10) == run_at

    world.use(ALL)  # a new engine and queue, as after a restart
    world.move_to(on(13, 10) + timedelta(seconds=1))
    world.drain()
    assert 2 == len(world.tasks())


@BOTH_STORES
def test_an_answer_changed_back_starts_the_first_playbook_again(world: World) -> None:
    world.use(ALL)
    first = world.answer("C001", 3)
    world.move_to(on(9, 10, 2))
    world.answer("C001", 9, send_id=first.send_id)
    world.move_to(on(9, 10, 4))
    world.answer("C001", 2, send_id=first.send_id)
    world.answer("C001", 4, send_id=first.send_id)  # same category again: the new run covers it
    world.drain()

    runs = [(r["playbook"], r["state"]) for r in world.rows(schema.playbook_runs)]
    assert [
        ("detractor-callback", "stopped"),
        ("promoter-testimonial", "stopped"),
        ("detractor-callback", "running"),
    ] == runs
    assert ["Call Alice Smith (Northwind Traders): NPS 2"] == [t["subject"] for t in world.tasks()]


def test_a_transient_task_error_runs_the_step_again_a_minute_later(world: World) -> None:
    world.use(ALL)
    world.crm.busy_for = {"C002"}
    world.answer("C001", 4)
    world.answer("C002", 4)
    world.drain()
    assert ["C001"] == [t["contact_id"] for t in world.tasks()]

    world.crm.busy_for = set()
    world.move_to(on(9, 10, 1))
    world.drain()

    assert ["C001", "C002"] == sorted(t["contact_id"] for t in world.tasks())
    assert {"running"} == {r["state"] for r in world.rows(schema.playbook_runs)}
    assert 2 == world.crm.calls["create_tasks"]
    # The retry may follow a create the CRM made after all: only it looks its key up.
    first, retry = world.crm.task_calls
    assert [("C001", False), ("C002", False)] == sorted((s.contact_id, s.recheck) for s in first)
    assert [("C002", True)] == [(s.contact_id, s.recheck) for s in retry]


def test_a_template_failing_at_run_time_fails_only_its_run(world: World, tmp_path: Path) -> None:
    book = tmp_path / "ratio.toml"
    book.write_text(
        """
name = "ratio"
[trigger]
on = "response"
[[step]]
action = "send_sms"
body = "{{ 100 // response.score }}"
""",
        encoding="utf-8",
    )
    world.use([book])
    world.answer("C001", 0)
    world.answer("C002", 5)
    world.drain()

    states = {r["contact_id"]: r["state"] for r in world.rows(schema.playbook_runs)}
    assert {"C001": "failed", "C002": "done"} == states
    failed = next(s for s in world.rows(schema.playbook_steps) if s["state"] == "failed")
    assert "template failed to render: ZeroDivisionError" in failed["result"]["error"]
    assert ["20"] == [m.text for m in world.messages]


def test_a_passive_without_an_email_address_still_gets_the_owners_todo(world: World) -> None:
    world.use(ALL)
    world.answer("C012", 7)  # the seed has no email for C012
    world.drain()

    assert [] == world.messages
    first, second = world.rows(schema.playbook_steps)
    assert ("skipped", "contact C012 has no email address") == (first["state"], first["result"]["reason"])
    assert "done" == second["state"]
    assert 1 == len(world.tasks())
