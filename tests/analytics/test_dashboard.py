"""/dashboard over HTTP (a real uvicorn on 127.0.0.1): the login, the trusted proxy header, the
loopback-only default, and what the page shows for the seeded data set."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import time_machine
from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from nps_sync import config as config_mod
from nps_sync.errors import ConfigError
from nps_sync.runtime import Runtime
from nps_sync.web import create_app
from nps_sync.web.auth import COOKIE, SESSION_SALT, DashboardAuth, hash_password, verify_password
from tests.analytics.web import KEYS, config_data, serve

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)
HASH_ENV = {"NPS_SYNC_DASHBOARD_PASSWORD_HASH": HASH}


@pytest.fixture
def password_site(tmp_path: Path) -> Iterator[httpx.Client]:
    with serve(tmp_path, env=HASH_ENV) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def sign_in(client: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    return client.post("/dashboard/login", data={"password": password, "next": "/dashboard?period=week"})


def test_password_hash_round_trip_with_a_fresh_salt_each_time() -> None:
    assert verify_password(PASSWORD, HASH)
    assert not verify_password("correct horse battery!", HASH)
    assert HASH != hash_password(PASSWORD)
    assert HASH.startswith("scrypt$16384$8$1$")
    with pytest.raises(ValueError, match="expected 'scrypt"):
        verify_password(PASSWORD, "md5$abc")


def test_without_a_session_the_dashboard_sends_you_to_the_login(password_site: httpx.Client) -> None:
    response = password_site.get("/dashboard?period=week")
    assert 303 == response.status_code
    assert "/dashboard/login?next=%2Fdashboard%3Fperiod%3Dweek" == response.headers["location"]
    assert 200 == password_site.get("/dashboard/login").status_code


def test_a_wrong_password_is_refused_without_a_cookie(password_site: httpx.Client) -> None:
    response = sign_in(password_site, "wrong password")
    assert 401 == response.status_code
    assert "Wrong password." in response.text
    assert "set-cookie" not in response.headers
    assert 303 == password_site.get("/dashboard").status_code


def test_the_right_password_sets_an_httponly_samesite_cookie(password_site: httpx.Client) -> None:
    response = sign_in(password_site)
    assert 303 == response.status_code
    assert "/dashboard?period=week" == response.headers["location"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert {"httponly", "samesite=lax", "path=/dashboard"} <= {p.strip().lower() for p in cookie.split(";")}
    page = password_site.get("/dashboard")
    assert 200 == page.status_code
    assert "NPS dashboard" in page.text
    assert "Sign out" in page.text
    out = password_site.post("/dashboard/logout")
    assert 303 == out.status_code
    assert 303 == password_site.get("/dashboard").status_code


def test_a_tampered_or_foreign_cookie_is_refused(password_site: httpx.Client) -> None:
    sign_in(password_site)
    token = password_site.cookies[COOKIE]
    payload, rest = token.split(".", 1)
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    password_site.cookies.clear()
    password_site.cookies.set(COOKIE, forged, path="/dashboard")
    assert 303 == password_site.get("/dashboard").status_code
    # A link token signed with the same keys but another salt is not a session.
    other = URLSafeTimedSerializer([KEYS], salt="nps-sync/survey-response/v1").dumps({"u": "admin"})
    password_site.cookies.clear()
    password_site.cookies.set(COOKIE, other, path="/dashboard")
    assert 303 == password_site.get("/dashboard").status_code


def test_login_never_redirects_off_site(password_site: httpx.Client) -> None:
    response = password_site.post("/dashboard/login", data={"password": PASSWORD, "next": "//evil.example/x"})
    assert "/dashboard" == response.headers["location"]


def test_a_trusted_header_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    header = {"X-Forwarded-User": "alice@example.com"}
    far_proxy = {"trusted_header": "X-Forwarded-User", "trusted_proxies": ["10.0.0.0/8"]}
    with serve(tmp_path / "a", dashboard=far_proxy) as url:
        # The request comes from 127.0.0.1, not from 10/8: the header is ignored, loopback is not enough.
        response = httpx.get(f"{url}/dashboard", headers=header)
        assert 403 == response.status_code
    near_proxy = {"trusted_header": "X-Forwarded-User", "trusted_proxies": ["127.0.0.1/32"]}
    with serve(tmp_path / "b", dashboard=near_proxy) as url:
        response = httpx.get(f"{url}/dashboard", headers={**header, "X-Forwarded-For": "203.0.113.9"})
        assert 200 == response.status_code
        assert "signed in as alice@example.com" in response.text
        assert 403 == httpx.get(f"{url}/dashboard").status_code


def test_without_password_or_header_only_loopback_gets_in(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        assert 200 == httpx.get(f"{url}/dashboard").status_code
        relayed = httpx.get(f"{url}/dashboard", headers={"X-Forwarded-For": "203.0.113.9"})
        assert 403 == relayed.status_code
        assert "only served to the machine" in relayed.text


def test_a_malformed_hash_stops_the_web_app_at_start(tmp_path: Path) -> None:
    cfg = config_mod.parse(config_data(), source=tmp_path / "config.toml")
    rt = Runtime(cfg, environ={"NPS_SYNC_SIGNING_KEYS": KEYS, "NPS_SYNC_DASHBOARD_PASSWORD_HASH": "hunter2"})
    try:
        with pytest.raises(
            ConfigError, match="NPS_SYNC_DASHBOARD_PASSWORD_HASH does not hold a password hash"
        ):
            create_app(rt)
    finally:
        rt.close()


def test_dashboard_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dashboard: .*needs trusted_proxies"):
        config_mod.parse(config_data({"trusted_header": "X-User"}), source=tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"dashboard.trusted_proxies: .*got: 'ten'"):
        config_mod.parse(
            config_data({"trusted_header": "X-User", "trusted_proxies": ["ten"]}), source=tmp_path / "c.toml"
        )


def categories(html: str) -> list[str]:
    return re.findall(r'class="comment" data-category="(\w+)"', html)


def test_page_shows_charts_and_filters_comments(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        page = httpx.get(f"{url}/dashboard").text
        # Three months -> three points on the trend; 15 comments in all categories.
        assert 3 == len(re.findall(r'<circle class="point"', page))
        assert ['data-nps="16.7"', 'data-nps="-20"', 'data-nps="75"'] == re.findall(
            r'data-period="2026-0\d" (data-nps="[-\d.]+")', page
        )
        assert 15 == len(categories(page))
        assert "invoice portal" in page
        detractors = httpx.get(f"{url}/dashboard", params={"category": "detractor"}).text
        assert ["detractor"] * 5 == categories(detractors)
        by_region = httpx.get(
            f"{url}/dashboard", params={"segment": "region", "value": "EU", "category": "passive"}
        )
        # Passive EU comments: C6 "Better now", C9 "Pricey".
        assert ["passive", "passive"] == categories(by_region.text)
        assert ['data-segment="EU"', 'data-segment="US"'] == re.findall(r'data-segment="\w+"', by_region.text)
        weeks = httpx.get(f"{url}/dashboard", params={"period": "week", "since": "2026-02-01"}).text
        assert 3 == len(re.findall(r'<circle class="point"', weeks))
        bad = httpx.get(f"{url}/dashboard", params={"since": "whenever"})
        assert 200 == bad.status_code
        assert "got: &#39;whenever&#39;" in bad.text


def test_ten_wrong_passwords_lock_the_address_out(password_site: httpx.Client) -> None:
    for _ in range(10):
        assert 401 == sign_in(password_site, "guess").status_code
    locked = sign_in(password_site)
    assert 429 == locked.status_code
    assert 0 < int(locked.headers["retry-after"]) <= 900
    assert "set-cookie" not in locked.headers


def _request_with(token: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/dashboard",
        "query_string": b"",
        "headers": [(b"cookie", f"{COOKIE}={token}".encode())],
        "client": ("127.0.0.1", 50000),
    }
    return Request(scope)


def _auth(password_hash: str) -> DashboardAuth:
    return DashboardAuth(
        password_hash=password_hash,
        trusted_header="",
        proxies=(),
        serializer=URLSafeTimedSerializer([KEYS], salt=SESSION_SALT),
        max_age=timedelta(hours=12),
        secure_cookie=True,
    )


def test_sessions_expire_and_end_with_a_new_password() -> None:
    auth = _auth(HASH)
    start = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
    with time_machine.travel(start, tick=False):
        response = Response()
        auth.sign_in(response)
        cookie = response.headers["set-cookie"]
        token = cookie.split(";")[0].split("=", 1)[1]
        assert "secure" in cookie.lower()
        assert "admin" == auth.from_session(_request_with(token))
    with time_machine.travel(start + timedelta(hours=11, minutes=59), tick=False):
        assert "admin" == auth.from_session(_request_with(token))
        assert _auth(hash_password("a different password")).from_session(_request_with(token)) is None
    with time_machine.travel(start + timedelta(hours=12, minutes=1), tick=False):
        assert auth.from_session(_request_with(token)) is None


def test_an_empty_database_renders_a_page_without_data(tmp_path: Path) -> None:
    with serve(tmp_path, seeder=lambda store: None) as url:
        response = httpx.get(f"{url}/dashboard")
    assert 200 == response.status_code
    assert "No answers yet" in response.text
    assert "No comments match." in response.text
    assert 0 == response.text.count('<circle class="point"')
