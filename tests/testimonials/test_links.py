"""Signed links: a changed character, a link of another purpose, or a token for a response that does
not exist is refused, and nothing is written."""

from __future__ import annotations

import re

import pytest

from nps_sync.store import schema
from tests.testimonials.conftest import SCORE_LINE, TESTIMONIAL_LINK, World, path_of
from tests.testimonials.test_flow import everything, form


def tampered(token: str) -> str:
    """The same token with one character of its signature changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


@pytest.fixture
def links(world: World) -> dict[str, str]:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    [survey] = [m for m in world.outbox() if m["purpose"] == "survey" and "alice" in m["to_addr"]]
    score_link = dict(SCORE_LINE.findall(survey["text"]))["10"]
    page = path_of(match.group(0))
    assert 200 == world.client.post(page, data=form(world)).status_code
    withdraw = re.search(r"/t/w/[A-Za-z0-9_.-]+", world.client.get(page).text)
    assert withdraw is not None
    return {"testimonial": page, "survey": path_of(score_link), "withdraw": withdraw.group(0)}


def test_tampered_testimonial_link_is_refused_on_get_and_post(world: World, links: dict[str, str]) -> None:
    bad = tampered(links["testimonial"])
    before = everything(world)
    assert 400 == world.client.get(bad).status_code
    assert 400 == world.client.post(bad, data=form(world, quote="forged")).status_code
    assert before == everything(world)


def test_tampered_withdrawal_link_withdraws_nothing(world: World, links: dict[str, str]) -> None:
    bad = tampered(links["withdraw"])
    assert 400 == world.client.get(bad).status_code
    assert 400 == world.client.post(bad).status_code
    assert [None] == [t["withdrawn_at"] for t in world.rows(schema.testimonials)]


def test_a_link_of_another_purpose_is_refused(world: World, links: dict[str, str]) -> None:
    survey_token = links["survey"].rsplit("/", 1)[1]
    testimonial_token = links["testimonial"].rsplit("/", 1)[1]
    withdraw_token = links["withdraw"].rsplit("/", 1)[1]
    assert 400 == world.client.get(f"/t/{survey_token}").status_code
    assert 400 == world.client.get(f"/t/{withdraw_token}").status_code
    assert 400 == world.client.post(f"/t/w/{testimonial_token}").status_code
    assert 400 == world.client.post(f"/t/w/{survey_token}").status_code
    assert [None] == [t["withdrawn_at"] for t in world.rows(schema.testimonials)]


def test_a_valid_link_for_an_unknown_answer_is_not_found(world: World) -> None:
    url = world.rt.testimonials.request_url(999)
    assert 404 == world.client.get(path_of(url)).status_code
    assert 404 == world.client.post(path_of(url), data=form(world)).status_code
    assert [] == world.rows(schema.testimonials)


def test_the_link_carries_only_the_response_id(world: World) -> None:
    import base64
    import json

    token = world.rt.testimonials.request_url(42).rsplit("/", 1)[1]
    payload = token.split(".")[0]
    assert {"r": 42} == json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
