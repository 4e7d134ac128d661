"""Loading playbook files: every problem names the file, the TOML path, the value and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from nps_sync.durations import BusinessDays
from nps_sync.errors import ConfigError
from nps_sync.playbooks import ACTIONS, check_playbooks, load_playbooks
from nps_sync.playbooks.actions import CrmTaskParams
from tests.playbooks.conftest import SHIPPED

GOOD = """
name = "{name}"
[trigger]
on = "response"
[conditions]
category = ["detractor"]
[[step]]
action = "crm_task"
subject = "Call {{{{ contact.name }}}}"
owner = "account_owner"
due = "1 business day"
[[step]]
wait = "2 business days"
unless = ["task_completed"]
action = "crm_task"
subject = "Escalate {{{{ contact.name }}}}"
owner = "manager"
"""


def problems_of(tmp_path: Path, text: str, name: str = "bad") -> list[str]:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_playbooks([path])
    return info.value.problems


def test_the_shipped_playbooks_load_and_pass_the_check() -> None:
    books = load_playbooks(sorted(SHIPPED.glob("*.toml")))

    assert ["detractor-callback", "passive-offer", "promoter-testimonial"] == [b.name for b in books]
    assert [] == check_playbooks(books)
    callback = books[0]
    assert BusinessDays(2) == callback.steps[1].wait
    assert ("task_completed", "responded_again") == callback.steps[1].unless
    params = callback.steps[0].params
    assert isinstance(params, CrmTaskParams)
    assert ("account_owner", "high", "call", BusinessDays(1)) == (
        params.owner,
        params.priority,
        params.type,
        params.due,
    )


def test_a_good_file_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD.format(name="ok"), encoding="utf-8")

    [book] = load_playbooks([path])

    assert (True, "response", 2, path) == (book.enabled, book.trigger.on, len(book.steps), book.source)


def test_an_unknown_key_names_file_path_value_and_the_keys_allowed(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace(
        'due = "1 business day"', 'due = "1 business day"\npriorty = "high"'
    )

    [problem] = problems_of(tmp_path, text)

    assert problem.startswith(f"{tmp_path / 'bad.toml'}: step[0].priorty: unknown key (value 'high'); ")
    assert (
        "expected one of: action, body, due, fallback_owner, name, owner, priority, subject, type" in problem
    )


def test_a_bad_duration_names_the_step_key_and_the_forms_expected(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace('wait = "2 business days"', 'wait = "2 working days"')

    assert [
        f"{tmp_path / 'bad.toml'}: step[1].wait: expected a delay such as '90d', '12h', '2w' or "
        "'2 business days', got: '2 working days'"
    ] == problems_of(tmp_path, text)


def test_a_bad_owner_names_the_choices(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace('owner = "manager"', 'owner = "the boss"')

    assert [
        f"{tmp_path / 'bad.toml'}: step[1].owner: expected account_owner, contact_owner, manager or "
        "user:<username or email>, got: 'the boss'"
    ] == problems_of(tmp_path, text)


def test_an_unknown_template_variable_is_caught_at_load(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace("Call {{ contact.name }}", "Call {{ contact.nmae }}")

    [problem] = problems_of(tmp_path, text)

    assert problem.startswith(f"{tmp_path / 'bad.toml'}: step[0].subject: unknown variable 'contact.nmae'; ")
    assert "expected one of: contact.id, contact.first_name" in problem
    assert problem.endswith("(in 'Call {{ contact.nmae }}')")


def test_a_template_syntax_error_is_caught_at_load(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace("Call {{ contact.name }}", "Call {{ contact.name ")

    [problem] = problems_of(tmp_path, text)

    assert problem.startswith(f"{tmp_path / 'bad.toml'}: step[0].subject: template error: ")


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        """
name = "a"
colour = "red"
[trigger]
on = "answer"
[[step]]
action = "send_fax"
""",
        encoding="utf-8",
    )
    (tmp_path / "b.toml").write_text(
        """
name = "b"
[trigger]
on = "no_response"
[conditions]
score = "0-11"
[[conditions.field]]
field = "plan"
op = ">"
value = "big"
[[step]]
action = "send_email"
subject = "{{ foo }}"
body = "x"
""",
        encoding="utf-8",
    )

    with pytest.raises(ConfigError) as info:
        load_playbooks([tmp_path / "a.toml", tmp_path / "b.toml"])

    located = sorted(p.split(": ")[1] for p in info.value.problems)
    assert [
        "colour",
        "conditions.field[0]",
        "conditions.score",
        "step[0].action",
        "step[0].subject",
        "trigger.after",
        "trigger.on",
    ] == located
    assert f"{len(info.value.problems)} problem(s) in playbooks" in str(info.value)


def test_two_files_with_the_same_name_are_refused(tmp_path: Path) -> None:
    for file in ("one", "two"):
        (tmp_path / f"{file}.toml").write_text(GOOD.format(name="same"), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_playbooks([tmp_path / "one.toml", tmp_path / "two.toml"])

    assert [
        f"{tmp_path / 'two.toml'}: name: 'same' is already used by {tmp_path / 'one.toml'}; "
        "expected a unique name"
    ] == info.value.problems


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, 'name = "x"\n[trigger\n')

    assert problem.startswith(f"{tmp_path / 'bad.toml'}: not valid TOML: ")


def test_check_reports_task_overdue_playbooks_naming_unknown_playbooks(tmp_path: Path) -> None:
    path = tmp_path / "nudge.toml"
    path.write_text(
        """
name = "nudge"
[trigger]
on = "task_overdue"
playbooks = ["detractor-calback"]
[[step]]
action = "crm_task"
subject = "Overdue"
""",
        encoding="utf-8",
    )

    with pytest.raises(ConfigError) as info:
        load_playbooks([path])

    assert [
        f"{path}: trigger.playbooks: 'detractor-calback' is not a loaded playbook; expected one of: nudge"
    ] == (info.value.problems)


def test_the_action_registry_maps_names_to_plain_callables() -> None:
    assert ["crm_task", "send_email", "send_sms", "update_field", "webhook"] == sorted(ACTIONS)
    assert all(callable(spec.run) and spec.name == name for name, spec in ACTIONS.items())


def test_methods_and_crm_fields_in_templates_pass_the_check(tmp_path: Path) -> None:
    text = GOOD.format(name="ok").replace(
        "Call {{ contact.name }}",
        "Call {{ contact.name.upper() }} by {{ due.strftime('%d.%m.') }}"
        " ({{ contact.fields['account.plan'] }})",
    )
    path = tmp_path / "ok.toml"
    path.write_text(text, encoding="utf-8")

    [book] = load_playbooks([path])

    assert [] == check_playbooks([book])


def test_a_bad_choice_names_the_choices(tmp_path: Path) -> None:
    text = GOOD.format(name="bad").replace(
        'due = "1 business day"', 'due = "1 business day"\npriority = "urgent"'
    )

    assert [
        f"{tmp_path / 'bad.toml'}: step[0].priority: expected 'high', 'normal' or 'low', got: 'urgent'"
    ] == problems_of(tmp_path, text)


def test_templates_are_checked_against_what_the_step_and_trigger_provide(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
name = "bad"
[trigger]
on = "no_response"
after = "3d"
[[step]]
action = "send_email"
subject = "Reply by {{ due.day }}"
body = "You gave {{ response.score + 1 }}"
""",
        encoding="utf-8",
    )

    with pytest.raises(ConfigError) as info:
        load_playbooks([path])

    subject, body = info.value.problems
    assert subject.startswith(f"{path}: step[0].subject: template does not render with the sample context: ")
    assert "'None' has no attribute 'day'" in subject
    assert body.startswith(f"{path}: step[0].body: template does not render with the sample context: ")


def test_a_playbook_is_named_after_its_file_unless_it_says_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "Callback Now.toml"
    path.write_text(GOOD.format(name="x").replace('name = "x"\n', ""), encoding="utf-8")

    assert [
        f"{path}: name: expected a name of lowercase letters, digits, '-' and '_' (at most 99), "
        "got: 'Callback Now'"
    ] == problems_of_path(path)


def problems_of_path(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_playbooks([path])
    return info.value.problems
