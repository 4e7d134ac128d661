"""The web app over real HTTP (uvicorn in a thread, as the daemon runs it): survey pages never record
on GET, tokens are checked, unsubscribe is one click, admin pages are local only, health and metrics."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
import uvicorn
from sqlalchemy import select

from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.web import create_app
from tests.core.test_sending import add_send, jobs, make_runtime, seeded_contacts, send_row, suppressions
from tests.e2e.daemon import free_port, wait_for


class Web:
    def __init__(self, rt: Runtime, url: str) -> None:
        self.rt = rt
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def responses(self) -> list[dict[str, Any]]:
        with self.rt.store.read() as conn:
            return [dict(r) for r in conn.execute(select(schema.responses)).mappings()]


@pytest.fixture
def web(tmp_path: Path, sqlite_store: Store) -> Iterator[Web]:
    rt = make_runtime(tmp_path, sqlite_store)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    client = Web(rt, f"http://127.0.0.1:{port}")
    yield client
    client.http.close()
    server.should_exit = True
    thread.join(timeout=10)
    rt.close()


@pytest.fixture
def survey(web: Web) -> int:
    return add_send(web.rt, seeded_contacts(web.rt, 1)[0], state="sent", sent_at=utcnow(), key="survey")


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_opening_all_11_score_links_records_nothing(web: Web, survey: int) -> None:
    links = [path_of(u) for u in web.rt.renderer.score_links(survey)]
    assert 11 == len(links)
    for score, link in enumerate(links):
        page = web.http.get(link)
        assert 200 == page.status_code
        assert f'value="{score}" checked' in page.text
    assert [] == web.responses()
    assert [] == jobs(web.rt.store)


def test_the_query_only_preselects_a_score_and_links_signed_with_the_score_still_work(
    web: Web, survey: int
) -> None:
    link = path_of(web.rt.renderer.survey_link(survey))
    for query in ("?score=11", "?score=-1", "?score=%C2%B2", "?score=abc", "?score=" + "9" * 5000, ""):
        page = web.http.get(link + query)
        assert (200, False) == (page.status_code, " checked " in page.text), query
    # A link from before the score moved to the query: the token itself says score 6.
    older = f"/r/{web.rt.tokens.sign('survey', {'s': survey, 'v': 6})}"
    assert 'value="6" checked' in web.http.get(older).text
    assert 'value="2" checked' in web.http.get(older + "?score=2").text
    # What is recorded is what the form says, whatever the link preselected.
    assert 200 == web.http.post(link + "?score=10", data={"score": "4"}).status_code
    web.rt.drain()
    assert [4] == [r["score"] for r in web.responses()]


def test_posting_the_form_records_the_score_and_a_later_post_replaces_it(web: Web, survey: int) -> None:
    links = [path_of(u) for u in web.rt.renderer.score_links(survey)]

    posted = web.http.post(links[3], data={"score": "3", "comment": "Support took a week."})
    assert 200 == posted.status_code
    assert "We recorded your score of 3." in posted.text
    # The page is served once the answer is committed as a job; a worker records it.
    assert (["answer"], []) == ([j["kind"] for j in jobs(web.rt.store)], web.responses())
    web.rt.drain()
    assert [(survey, 3, "Support took a week.")] == [
        (r["send_id"], r["score"], r["comment"]) for r in web.responses()
    ]

    assert 200 == web.http.post(links[3], data={"score": "8", "comment": ""}).status_code
    web.rt.drain()
    assert [(8, None)] == [(r["score"], r["comment"]) for r in web.responses()]


def test_answers_are_applied_in_the_order_received_whatever_order_they_are_recorded_in(
    web: Web, survey: int
) -> None:
    link = path_of(web.rt.renderer.survey_link(survey))
    for score in ("2", "9"):
        assert 200 == web.http.post(link, data={"score": score}).status_code
    queued = [j for j in jobs(web.rt.store) if j["kind"] == "answer"]
    assert [2, 9] == [j["payload"]["score"] for j in queued]
    # A second worker records the later answer first; the earlier one, recorded after it, is stale.
    web.rt.responses.handle_answers([queued[1]["payload"]])
    web.rt.responses.handle_answers([queued[0]["payload"]])
    assert [(survey, 9, "promoter")] == [(r["send_id"], r["score"], r["category"]) for r in web.responses()]


def tampered(token: str) -> str:
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


def test_bad_tokens_get_a_friendly_4xx_page_and_record_nothing(web: Web, survey: int) -> None:
    tokens = web.rt.tokens
    survey_token = tokens.sign("survey", {"s": survey, "v": 9})
    foreign = tokens.sign("unsubscribe", {"s": survey})
    for path in (f"/r/{tampered(survey_token)}", f"/r/{foreign}", "/r/not-a-token", f"/u/{survey_token}"):
        for method in ("GET", "POST"):
            page = web.http.request(method, path, data={"score": "9"} if method == "POST" else None)
            assert (400, True) == (page.status_code, "This link is not valid" in page.text), (method, path)
            assert page.headers["content-type"].startswith("text/html")

    with time_machine.travel(utcnow() + timedelta(days=61)):
        expired = web.http.post(f"/r/{survey_token}", data={"score": "9"})
    assert 400 == expired.status_code
    assert ([], [], []) == (web.responses(), suppressions(web.rt.store), jobs(web.rt.store))


def test_a_score_outside_0_to_10_is_refused_with_422(web: Web, survey: int) -> None:
    link = path_of(web.rt.renderer.survey_link(survey))
    # "²" and "٣" pass str.isdigit(); 5,000 digits are more than int() converts
    for raw in ("11", "-1", "abc", "", "\u00b2", "\u0663", " 7", "9" * 5000):
        page = web.http.post(link, data={"score": raw})
        assert (422, True) == (page.status_code, "Please choose a score from 0 to 10." in page.text), raw
    assert ([], []) == (web.responses(), jobs(web.rt.store))


def test_unsubscribe_get_changes_nothing_and_one_click_post_suppresses_at_once(web: Web, survey: int) -> None:
    token = web.rt.renderer.unsubscribe_token(survey)
    address = send_row(web.rt.store, "survey")["address"]

    page = web.http.get(f"/u/{token}")
    assert (200, True) == (page.status_code, address in page.text)
    assert [] == suppressions(web.rt.store)

    done = web.http.post(
        f"/u/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (200, "unsubscribed\n") == (done.status_code, done.text)
    assert [("email", address, "unsubscribed")] == suppressions(web.rt.store)
    assert [{"contact_id": send_row(web.rt.store, "survey")["contact_id"], "channel": "email"}] == [
        j["payload"] for j in jobs(web.rt.store, "crm_opt_out")
    ]


def test_the_unsubscribe_link_still_works_30_days_after_the_send(web: Web, survey: int) -> None:
    token = web.rt.renderer.unsubscribe_token(survey)
    address = send_row(web.rt.store, "survey")["address"]
    with time_machine.travel(utcnow() + timedelta(days=31)):
        assert 200 == web.http.get(f"/u/{token}").status_code
        done = web.http.post(
            f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers={"accept": "text/html"}
        )
    assert 200 == done.status_code
    assert [("email", address, "unsubscribed")] == suppressions(web.rt.store)


@pytest.mark.parametrize(
    "relay",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"X-Real-IP": "203.0.113.7"},
        {"CF-Connecting-IP": "203.0.113.7"},
    ],
    ids=["x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip"],
)
def test_admin_pages_refuse_a_relayed_client(web: Web, survey: int, relay: dict[str, str]) -> None:
    web.rt.responses.record(survey, 4, "meh", channel="email")
    response_id = web.responses()[0]["id"]
    pages = ["/", "/outbox", "/sandbox/tasks", f"/responses/{response_id}"]

    assert dict.fromkeys(pages, 200) == {p: web.http.get(p).status_code for p in pages}
    relayed = {p: web.http.get(p, headers=relay) for p in pages}
    assert dict.fromkeys(pages, 403) == {p: r.status_code for p, r in relayed.items()}
    assert all("meh" not in r.text for r in relayed.values())
    assert 403 == web.http.post("/outbox/1/reply", data={"body": "STOP"}, headers=relay).status_code
    # The customer-facing pages work through the proxy, of course.
    survey_link = path_of(web.rt.renderer.survey_link(survey))
    assert 200 == web.http.get(survey_link, headers=relay).status_code


def test_healthz_and_metrics(web: Web, survey: int) -> None:
    add_send(web.rt, seeded_contacts(web.rt, 2)[1], key="queued")
    assert {"status": "ok", "paused": False} == web.http.get("/healthz").json()

    metrics = web.http.get("/metrics")
    assert 200 == metrics.status_code
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(metrics.text.splitlines())
    assert 'nps_sync_sends{channel="email",kind="survey",state="sent"} 1.0' in lines
    assert 'nps_sync_sends{channel="email",kind="survey",state="queued"} 1.0' in lines
    assert "# TYPE nps_sync_sends gauge" in lines
    assert "nps_sync_paused 0.0" in lines
