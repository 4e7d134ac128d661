"""Triggers other than a plain response, previews, and the remaining actions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nps_sync.store import schema
from tests.playbooks.conftest import BOTH_STORES, SHIPPED, World, d, insert_send, on

ONE_TASK = """
name = "{name}"
[trigger]
{trigger}
[[step]]
action = "crm_task"
subject = "{subject}"
owner = "{owner}"
due = "1 business day"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_category_changed_from_promoter_to_passive_fires_only_for_that_transition(
    world: World, tmp_path: Path
) -> None:
    book = write(
        tmp_path,
        "slipped",
        ONE_TASK.format(
            name="slipped",
            trigger='on = "category_changed"\nfrom = ["promoter"]\nto = ["passive", "detractor"]',
            subject="{{ contact.name }}: {{ response.previous_category }} -> {{ response.category }}",
            owner="account_owner",
        ),
    )
    world.use([book])
    world.answer("C001", 7, previous_category="promoter")
    world.answer("C002", 7, previous_category="passive")  # no change
    world.answer("C003", 9, previous_category="passive")  # a change, but not from promoter
    world.drain()

    assert ["Alice Smith: promoter -> passive"] == [t["subject"] for t in world.tasks()]
    [run] = world.rows(schema.playbook_runs)
    assert "category_changed" == run["trigger"]


@BOTH_STORES
def test_no_response_fires_once_after_the_delay_and_never_for_answered_sends(
    world: World, tmp_path: Path
) -> None:
    book = write(
        tmp_path,
        "nudge",
        """
name = "nudge"
[trigger]
on = "no_response"
after = "3d"
[[step]]
action = "send_email"
subject = "Still there, {{ contact.first_name }}?"
body = "Two minutes: {{ public_url }}"
""",
    )
    engine = world.use([book])
    world.answer("C002", 8)  # sent an hour ago and answered: never nudged
    with world.store.begin() as conn:
        unanswered = insert_send(conn, world.contact("C001"), "relationship", on(9, 10))

    world.move_to(on(12, 9, 59))
    with world.store.begin() as conn:
        assert 0 == engine.scan_no_response(conn)
    world.move_to(on(12, 10, 1))
    with world.store.begin() as conn:
        assert 1 == engine.scan_no_response(conn)
    with world.store.begin() as conn:
        assert 0 == engine.scan_no_response(conn)
    world.drain()

    [message] = world.messages
    assert ("C001", unanswered, "Still there, Alice?") == (
        message.contact.id,
        message.survey_send_id,
        message.subject,
    )


@BOTH_STORES
def test_task_overdue_fires_once_per_open_task_and_records_completed_ones(
    world: World, tmp_path: Path
) -> None:
    callback = write(
        tmp_path,
        "callback",
        ONE_TASK.format(
            name="callback",
            trigger='on = "response"',
            subject="Call {{ contact.name }}",
            owner="account_owner",
        ),
    )
    nudge = write(
        tmp_path,
        "nudge",
        ONE_TASK.format(
            name="nudge",
            trigger='on = "task_overdue"\nplaybooks = ["callback"]',
            subject="Overdue callback: {{ contact.name }}",
            owner="manager",
        ),
    )
    engine = world.use([callback, nudge])
    world.answer("C001", 2)
    world.answer("C002", 2)
    world.drain()
    done = next(t for t in world.tasks() if t["contact_id"] == "C002")
    world.crm.complete_task(done["id"])

    world.move_to(on(12, 18))  # due Monday: not overdue on Monday
    assert 0 == engine.check_overdue()
    world.move_to(on(13, 9))
    assert 1 == engine.check_overdue()
    assert 0 == engine.check_overdue()
    world.drain()

    subjects = sorted(t["subject"] for t in world.tasks())
    assert ["Call Alice Smith", "Call Bob Jones", "Overdue callback: Alice Smith"] == subjects
    escalation = next(t for t in world.tasks() if t["subject"].startswith("Overdue"))
    assert "U01" == escalation["owner_id"]
    records = {
        (r["playbook"], r["contact_id"]): (r["completed"], r["overdue_fired"])
        for r in world.rows(schema.crm_tasks)
    }
    expected = {
        ("callback", "C001"): (False, True),
        ("callback", "C002"): (True, False),
        ("nudge", "C001"): (False, False),
    }
    assert expected == records
    assert 1 == world.crm.calls["get_tasks"]  # both candidate tasks in one call; later checks find none


@BOTH_STORES
def test_simulate_shows_every_step_and_writes_nothing(world: World) -> None:
    from nps_sync.playbooks import PlaybookEvent

    engine = world.use(sorted(SHIPPED.glob("*.toml")))
    before = world.counts()
    sandbox_before = world.tasks()
    event = PlaybookEvent(
        trigger="response",
        contact=world.contact("C001"),
        program="relationship",
        occurred_at=on(9, 10),
        response_id=41,
        send_id=7,
        score=5,
        category="detractor",
        comment="Too slow",
    )

    first, second = engine.simulate(event)

    assert before == world.counts()
    assert sandbox_before == world.tasks()
    assert {"get_owners": 2} == dict(world.crm.calls)  # owners, then the manager: reads only
    assert (0, "crm_task", "Jonas Weber", d(12), "high", None) == (
        first.step,
        first.action,
        first.owner.name if first.owner else None,
        first.due,
        first.priority,
        first.wait,
    )
    assert "https://nps.example.com/responses/41" in (first.body or "")
    assert (1, "Maria Lopez", d(14), "2 business days", ("task_completed", "responded_again")) == (
        second.step,
        second.owner.name if second.owner else None,
        second.due,
        second.wait,
        second.unless,
    )
    assert on(13, 10) == second.run_at


def test_update_field_writes_the_raw_crm_field(world: World, tmp_path: Path) -> None:
    book = write(
        tmp_path,
        "tag",
        """
name = "tag"
[trigger]
on = "response"
[conditions]
[[conditions.field]]
field = "account.plan"
op = "in"
value = ["enterprise"]
[[step]]
action = "update_field"
field = "nps_followup"
value = "{{ response.category }} on {{ program }}"
""",
    )
    world.use([book])
    world.answer("C001", 4)  # Northwind: enterprise
    world.answer("C002", 4)  # Contoso: pro, not matched
    world.drain()

    with world.store.read() as conn:
        fields = dict(
            conn.execute(select(schema.sandbox_contacts.c.id, schema.sandbox_contacts.c.fields)).all()
        )
    assert "detractor on relationship" == fields["C001"].get("nps_followup")
    assert None is fields["C002"].get("nps_followup")
    assert 1 == world.crm.calls["update_contacts"]


class _Receiver(BaseHTTPRequestHandler):
    statuses: list[int]
    seen: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers["Idempotency-Key"], json.loads(body)))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"statuses": [503, 502], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_retries_5xx_with_the_same_idempotency_key(
    world: World, tmp_path: Path, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    book = write(
        tmp_path,
        "hook",
        f"""
name = "hook"
[trigger]
on = "response"
[[step]]
action = "webhook"
url = "{url}"
""",
    )
    world.use([book])
    event = world.answer("C001", 6, "meh")
    world.drain()

    [run] = world.rows(schema.playbook_runs)
    assert [f"{run['id']}:0"] * 3 == [key for key, _ in handler.seen]
    document = handler.seen[-1][1]
    assert ("hook", "C001", 6, event.response_id) == (
        document["playbook"],
        document["contact"]["id"],
        document["response"]["score"],
        document["response"]["id"],
    )
    assert "done" == run["state"]


def test_webhook_that_keeps_failing_fails_only_its_run(
    world: World, tmp_path: Path, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    handler.statuses = [500] * 10
    book = write(
        tmp_path,
        "hook",
        f'name = "hook"\n[trigger]\non = "response"\n[[step]]\naction = "webhook"\nurl = "{url}"\n',
    )
    world.use([book])
    world.answer("C001", 6)
    world.drain()

    [run] = world.rows(schema.playbook_runs)
    [step] = world.rows(schema.playbook_steps)
    assert ("failed", 3) == (run["state"], len(handler.seen))
    assert "gave up after 3 attempts: HTTP 500" in step["result"]["error"]


def test_a_first_step_wait_delays_the_first_action(world: World, tmp_path: Path) -> None:
    book = write(
        tmp_path,
        "later",
        """
name = "later"
[trigger]
on = "response"
[[step]]
wait = "3d"
action = "send_sms"
body = "Thanks {{ contact.first_name }}"
""",
    )
    world.use([book])
    world.answer("C001", 9)
    world.drain()
    assert [] == world.messages
    world.move_to(on(9, 10) + timedelta(days=3))
    world.drain()
    assert [("sms", "Thanks Alice")] == [(m.channel, m.text) for m in world.messages]


def test_each_overdue_task_of_one_response_fires_its_own_event(world: World, tmp_path: Path) -> None:
    nudge = write(
        tmp_path,
        "nudge",
        ONE_TASK.format(
            name="nudge",
            trigger='on = "task_overdue"\nplaybooks = ["detractor-callback"]',
            subject="Overdue: {{ contact.name }}",
            owner="user:sam.carter@example.com",
        ),
    )
    engine = world.use([SHIPPED / "detractor-callback.toml", nudge])
    world.answer("C001", 2)
    world.drain()
    world.move_to(on(13, 10))  # the callback (due Monday) is overdue; the escalation is created
    assert 1 == engine.check_overdue()
    world.drain()
    world.move_to(on(15, 10))  # Thursday: the escalation and the first nudge (due Wednesday) too
    assert 2 == engine.check_overdue()  # the nudge's own task starts nothing: no self-escalation
    world.drain()

    nudges = [r for r in world.rows(schema.playbook_runs) if r["playbook"] == "nudge"]
    assert [("task_overdue", "done")] * 2 == [(r["trigger"], r["state"]) for r in nudges]
    assert ["U06", "U06"] == [t["owner_id"] for t in world.tasks() if t["subject"].startswith("Overdue")]


def test_owner_user_lookup_falls_back_along_the_chain(world: World, tmp_path: Path) -> None:
    book = write(
        tmp_path,
        "routed",
        """
name = "routed"
[trigger]
on = "response"
[[step]]
action = "crm_task"
subject = "For {{ owner.name }}"
owner = "user:nobody@example.com"
fallback_owner = ["user:pshah", "account_owner"]
""",
    )
    world.use([book])
    for contact_id in ("C001", "C002", "C003"):
        world.answer(contact_id, 5)
    world.drain()

    assert [("U03", "For Priya Shah")] * 3 == [(t["owner_id"], t["subject"]) for t in world.tasks()]
    assert 2 == world.crm.calls["find_owner"]  # once per distinct query for the whole batch


def test_a_disabled_playbook_starts_nothing(world: World, tmp_path: Path) -> None:
    text = (SHIPPED / "detractor-callback.toml").read_text(encoding="utf-8")
    book = write(tmp_path, "off", text.replace("enabled = true", "enabled = false"))
    world.use([book])
    world.answer("C001", 1)
    world.drain()

    assert ([], []) == (world.rows(schema.playbook_runs), world.tasks())
