"""The testimonial flow from the promoter's email, through the daemon's web app over HTTP: GET
changes nothing, no consent stores nothing, consent is stored verbatim with its time, the CRM gets a
note, every export has the quote until the withdrawal link is used, then none has it and a second
note says consent was withdrawn."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from nps_sync.store import schema
from nps_sync.testimonials import export
from tests.testimonials.conftest import (
    ALICE,
    START,
    TESTIMONIAL_LINK,
    WITHDRAW_LINK,
    World,
    path_of,
)

QUOTE = "Setting up took an afternoon; support answers within the hour."
TABLES = (schema.testimonials, schema.jobs, schema.sends, schema.sandbox_notes, schema.outbox)


def everything(world: World) -> dict[str, list[dict[str, Any]]]:
    return {t.name: world.rows(t) for t in TABLES}


def form(world: World, **values: str) -> dict[str, str]:
    consent = world.rt.testimonials.consent_text("en")
    base = {
        "quote": QUOTE,
        "display_name": "Alice Smith",
        "title": "Ops Manager",
        "company": "Northwind Traders",
        "consent": "yes",
        "consent_digest": world.rt.testimonials.consent_digest(consent),
    }
    return {**base, **values}


def test_promoter_email_to_consented_quote_to_crm_note_to_exports_to_withdrawal(world: World) -> None:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    page_path = path_of(match.group(0))

    before = everything(world)
    shown = world.client.get(page_path)
    assert 200 == shown.status_code
    for prefilled in ('value="Alice Smith"', 'value="Ops Manager"', 'value="Northwind Traders"'):
        assert prefilled in shown.text
    consent = world.rt.testimonials.consent_text("en")
    assert "Acme Analytics" in consent and consent in shown.text
    assert before == everything(world), "a GET must not write anything"

    refused = world.client.post(page_path, data=form(world, consent=""))
    assert 422 == refused.status_code
    assert "tick the box" in refused.text
    assert before == everything(world), "no consent, nothing stored or queued"

    world.later(timedelta(minutes=5))
    thanks = world.client.post(page_path, data=form(world, quote=QUOTE))
    assert 200 == thanks.status_code
    [stored] = world.rows(schema.testimonials)
    [response] = world.rows(schema.responses)
    assert (response["id"], "C001", QUOTE, consent, START + timedelta(hours=2, minutes=5), None) == (
        stored["response_id"],
        stored["contact_id"],
        stored["quote"],
        stored["consent_text"],
        stored["consented_at"],
        stored["withdrawn_at"],
    )
    page_withdraw = WITHDRAW_LINK.search(thanks.text)
    assert page_withdraw is not None

    world.rt.drain()
    [note] = world.notes("C001")
    assert "NPS testimonial: consent to publish" == note["title"]
    assert QUOTE in note["body"] and consent in note["body"]
    [mail] = [m for m in world.outbox(ALICE) if m["subject"] == "Thank you for your testimonial"]
    assert "confirmation" == mail["purpose"]
    mail_withdraw = WITHDRAW_LINK.search(mail["text"])
    assert mail_withdraw is not None and page_withdraw.group(0) == mail_withdraw.group(0)

    row = {
        "quote": QUOTE,
        "display_name": "Alice Smith",
        "title": "Ops Manager",
        "company": "Northwind Traders",
        "date": "2026-01-07",
    }
    store = world.rt.store
    assert [row] == json.loads(export(store, "json"))
    assert [row] == list(csv.DictReader(io.StringIO(export(store, "csv"))))
    html = export(store, "html")
    assert QUOTE in html and "Alice Smith, Ops Manager, Northwind Traders" in html

    withdraw_path = path_of(mail_withdraw.group(0))
    before = everything(world)
    confirm = world.client.get(withdraw_path)
    assert 200 == confirm.status_code and "Withdraw my consent" in confirm.text
    assert before == everything(world), "opening the withdrawal link must not withdraw (mail scanners)"

    world.later(timedelta(days=3))
    done = world.client.post(withdraw_path)
    assert 200 == done.status_code and "consent is withdrawn" in done.text
    [stored] = world.rows(schema.testimonials)
    assert START + timedelta(days=3, hours=2, minutes=5) == stored["withdrawn_at"]
    assert [] == json.loads(export(store, "json"))
    assert ["quote,display_name,title,company,date"] == export(store, "csv").splitlines()
    assert QUOTE not in export(store, "html")

    world.rt.drain()
    titles = [n["title"] for n in world.notes("C001")]
    assert ["NPS testimonial: consent to publish", "NPS testimonial: consent withdrawn"] == titles

    # Withdrawing twice keeps the first time and adds no third note.
    assert 200 == world.client.post(withdraw_path).status_code
    world.rt.drain()
    assert stored["withdrawn_at"] == world.rows(schema.testimonials)[0]["withdrawn_at"]
    assert 2 == len(world.notes("C001"))


def test_a_second_post_for_the_same_answer_stores_and_notes_nothing_more(world: World) -> None:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    page_path = path_of(match.group(0))
    assert 200 == world.client.post(page_path, data=form(world)).status_code
    assert 200 == world.client.post(page_path, data=form(world, quote="Changed my mind")).status_code
    world.rt.drain()
    assert [QUOTE] == [t["quote"] for t in world.rows(schema.testimonials)]
    assert 1 == len(world.notes("C001"))
    assert 1 == len([m for m in world.outbox(ALICE) if m["subject"] == "Thank you for your testimonial"])
    # The page now shows the stored quote and the withdrawal link instead of an empty form.
    again = world.client.get(page_path)
    assert QUOTE in again.text and WITHDRAW_LINK.search(again.text) is not None


def test_changed_consent_wording_is_not_stored_as_agreed(world: World) -> None:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    answer = world.client.post(path_of(match.group(0)), data=form(world, consent_digest="0" * 32))
    assert 409 == answer.status_code
    assert [] == world.rows(schema.testimonials)


def test_empty_quote_or_name_is_refused_with_the_form_kept(world: World) -> None:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    path = path_of(match.group(0))
    no_quote = world.client.post(path, data=form(world, quote="  ", title="CTO"))
    assert 422 == no_quote.status_code and 'value="CTO"' in no_quote.text
    no_name = world.client.post(path, data=form(world, display_name=""))
    assert 422 == no_name.status_code and QUOTE in no_name.text
    assert [] == world.rows(schema.testimonials)
