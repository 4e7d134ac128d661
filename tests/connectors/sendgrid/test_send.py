"""Sending through the real sendgrid SDK to the emulator: batching, per-recipient content, headers."""

from __future__ import annotations

import json
import math

import pytest
from sendgrid import SendGridAPIClient

from tests.connectors.sendgrid.fixtures import API_KEY, ChannelFactory, tagged_message
from tests.emulators.sendgrid import SendGridEmulator, spec_skip_reason

ONE_CLICK = "List-Unsubscribe=One-Click"


def test_ten_thousand_emails_go_out_in_exactly_ten_mail_send_calls(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    channel = make_sendgrid_channel()
    messages = [tagged_message(n) for n in range(10_000)]
    outcomes = []
    for start in range(0, len(messages), channel.max_batch):
        outcomes.extend(channel.send(messages[start : start + channel.max_batch]))

    assert {"mail_send": math.ceil(10_000 / 1000)} == sendgrid_emulator.call_counts()
    assert [m.send_key for m in messages] == [o.send_key for o in outcomes]
    assert {"sent"} == {o.status for o in outcomes}
    received = {m.to: m for m in sendgrid_emulator.messages()}
    assert 10_000 == len(received)
    for message in messages:
        got = received[message.to]
        assert (message.subject, message.text, message.html) == (got.subject, got.text, got.html)
        assert message.send_key == got.send_key
        assert message.headers["List-Unsubscribe"] == got.headers["List-Unsubscribe"]
        assert ONE_CLICK == got.headers["List-Unsubscribe-Post"]
    assert [] == sendgrid_emulator.state.spec_violations


def test_each_recipient_gets_only_their_own_links(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    make_sendgrid_channel().send([tagged_message(n) for n in range(3)])

    for n in range(3):
        (got,) = sendgrid_emulator.messages(f"person{n}@example.test")
        own = f"/s/tok{n:05d}/"
        others = [f"/s/tok{m:05d}/" for m in range(3) if m != n]
        assert 11 == got.text.count(own)
        assert [0, 0] == [got.text.count(o) + (got.html or "").count(o) for o in others]
        assert f"<https://nps.acme.test/u/tok{n:05d}>" in got.headers["List-Unsubscribe"]
        assert "<mailto:" in got.headers["List-Unsubscribe"]


def test_messages_with_different_content_go_in_one_call_per_group(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    messages = [tagged_message(n, language="en" if n % 2 else "de") for n in range(10)]

    outcomes = make_sendgrid_channel().send(messages)

    assert {"mail_send": 2} == sendgrid_emulator.call_counts()
    assert [m.send_key for m in messages] == [o.send_key for o in outcomes]
    assert {m.to: m.text for m in messages} == {m.to: m.text for m in sendgrid_emulator.messages()}


def test_an_address_repeated_in_a_batch_is_split_into_another_request(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    messages = [
        tagged_message(1, to="same@example.test"),
        tagged_message(2),
        tagged_message(3, to="SAME@example.test"),
    ]

    outcomes = make_sendgrid_channel().send(messages)

    assert ["sent", "sent", "sent"] == [o.status for o in outcomes]
    assert {"mail_send": 2} == sendgrid_emulator.call_counts()
    assert [2, 1] == [len(a.body["personalizations"]) for a in sendgrid_emulator.state.accepted]


def test_a_message_whose_tags_do_not_reproduce_it_is_sent_as_rendered(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    # A first name that is itself a tag: one-pass substitution would not give the core's text.
    odd = tagged_message(2, first_name="-unsubscribe_url-")
    broken = odd.__class__(**{**odd.__dict__, "text": odd.text + "\nP.S."})
    messages = [tagged_message(1), broken]

    make_sendgrid_channel().send(messages)

    assert {"mail_send": 2} == sendgrid_emulator.call_counts()
    assert broken.text == sendgrid_emulator.messages(broken.to)[0].text


def test_every_request_carries_the_asm_group_and_categories(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    channel = make_sendgrid_channel(asm_group_id=4242, categories=["nps", "survey"])

    channel.send([tagged_message(n, language=lang) for n, lang in enumerate(["en", "de"])])

    bodies = [a.body for a in sendgrid_emulator.state.accepted]
    assert [{"group_id": 4242}] * 2 == [b["asm"] for b in bodies]
    assert [["nps", "survey"]] * 2 == [b["categories"] for b in bodies]
    assert [{"email": "nps@acme.test", "name": "Acme Customer Team"}] * 2 == [b["from"] for b in bodies]
    assert [{"email": "support@acme.test", "name": "Support"}] * 2 == [b["reply_to"] for b in bodies]


def test_dynamic_templates_are_chosen_by_purpose_and_language_with_template_data(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.state.templates.update(
        {
            "d-survey-en": (
                "Hi {{first_name}}",
                "{{question}} {{#each score_links}}[{{this}}]{{/each}}",
                None,
            ),
            "d-survey-de": ("Hallo {{first_name}}", "{{question}}", None),
            "d-reminder-en": ("Reminder {{first_name}}", "{{unsubscribe_url}}", None),
        }
    )
    channel = make_sendgrid_channel(
        templates="dynamic",
        dynamic_templates={
            "survey": {"en": "d-survey-en", "de": "d-survey-de"},
            "reminder": {"en": "d-reminder-en"},
        },
    )
    messages = [
        tagged_message(1, language="en"),
        tagged_message(2, language="de"),
        tagged_message(3, language="fr"),  # no French template: the default language's
        tagged_message(4, language="de", purpose="reminder"),  # no German reminder: English
        tagged_message(5, purpose="playbook"),  # no playbook template: nps-sync's own rendering
    ]

    outcomes = channel.send(messages)

    assert ["sent"] * 5 == [o.status for o in outcomes]
    assert {"mail_send": 4} == sendgrid_emulator.call_counts()
    by_to = {m.to: m for m in sendgrid_emulator.messages()}
    links = "".join(f"[https://nps.acme.test/s/tok00001/{s}]" for s in range(11))
    assert ("Hi Person1", f"How likely are you to recommend Acme? {links}") == (
        by_to["person1@example.test"].subject,
        by_to["person1@example.test"].text,
    )
    assert "Hallo Person2" == by_to["person2@example.test"].subject
    assert "Hi Person3" == by_to["person3@example.test"].subject
    assert ("Reminder Person4", "https://nps.acme.test/u/tok00004") == (
        by_to["person4@example.test"].subject,
        by_to["person4@example.test"].text,
    )
    assert messages[4].text == by_to["person5@example.test"].text
    assert {ONE_CLICK} == {m.headers["List-Unsubscribe-Post"] for m in by_to.values()}
    first = sendgrid_emulator.state.accepted[0].body["personalizations"][0]
    assert {**messages[0].template_data, "subject": messages[0].subject} == first["dynamic_template_data"]
    assert {"nps_send_key": messages[0].send_key} == first["custom_args"]


def test_sandbox_mode_is_validated_but_not_delivered(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    outcomes = make_sendgrid_channel(sandbox_mode=True).send([tagged_message(1)])

    assert ["sent"] == [o.status for o in outcomes]
    assert ({"mail_send": 1}, []) == (sendgrid_emulator.call_counts(), sendgrid_emulator.messages())


def test_emulator_checks_requests_against_the_official_openapi_document(
    sendgrid_emulator: SendGridEmulator,
) -> None:
    reason = spec_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    sdk = SendGridAPIClient(api_key=API_KEY, host=sendgrid_emulator.url)
    body = {
        "from": {"email": "nps@acme.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
        "personalizations": [{"to": [{"email": "a@example.test"}]}],
        "custom_args": {"not": "a string, as the spec wants at this level"},
    }
    from python_http_client.exceptions import BadRequestsError

    with pytest.raises(BadRequestsError) as refused:
        sdk.client.mail.send.post(request_body=body)

    errors = json.loads(refused.value.body)["errors"]
    assert ["custom_args"] == [e["field"] for e in errors]
    assert 1 == len(sendgrid_emulator.state.spec_violations)


def test_emulator_enforces_the_documented_limits(sendgrid_emulator: SendGridEmulator) -> None:
    from python_http_client.exceptions import BadRequestsError

    sdk = SendGridAPIClient(api_key=API_KEY, host=sendgrid_emulator.url)
    base = {
        "from": {"email": "nps@acme.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
    }
    too_many = [{"to": [{"email": f"p{n}@example.test"}]} for n in range(1001)]
    too_many_recipients = [
        {"to": [{"email": f"p{n}-{k}@example.test"} for k in range(2)]} for n in range(501)
    ]
    duplicate = [{"to": [{"email": "a@example.test"}]}, {"to": [{"email": "A@example.test"}]}]
    fields = []
    for people in (too_many, too_many_recipients, duplicate):
        with pytest.raises(BadRequestsError) as refused:
            sdk.client.mail.send.post(request_body={**base, "personalizations": people})
        fields.append(json.loads(refused.value.body)["errors"][0]["field"])

    assert ["personalizations", "personalizations", "personalizations.1.to"] == fields
    assert [] == sendgrid_emulator.messages()
