"""Hostile input, fuzzed with hypothesis: the config and playbook loaders raise only ConfigError, token
verification raises only TokenError and accepts no forgery, the SMS parser never raises."""

from __future__ import annotations

import string
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nps_sync import config as config_mod
from nps_sync.errors import ConfigError, TokenError
from nps_sync.playbooks import load_playbooks
from nps_sync.sms_text import parse_sms
from nps_sync.tokens import Tokens
from tests.e2e.daemon import REPO, toml_dumps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

CONFIG_KEYS = [
    "daemon", "state_dir", "database_url", "public_url", "listen", "time_zone", "workers", "limits",
    "max_body_bytes", "requests_per_minute", "trusted_proxies", "business_calendar", "hours",
    "holidays", "crm", "kind", "sandbox", "seed", "channels", "email", "sms", "outbox", "quiet_hours",
    "program", "name", "channel", "schedule", "send_window", "resurvey_after", "account_max",
    "reminders", "count", "after", "sample", "audience", "where", "text", "en", "de", "question",
]  # fmt: skip
PLAYBOOK_KEYS = [
    "name", "enabled", "trigger", "on", "after", "conditions", "category", "score", "step", "action",
    "subject", "body", "owner", "fallback_owner", "due", "priority", "type", "wait", "unless",
    "comment_contains", "field", "op", "value", "programs", "channel", "url",
]  # fmt: skip

scalars = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["90d", "1 business day", "09:00-18:00", "* * * * *", "sandbox", "email", "x"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.dates(),
)


def documents(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    key = st.one_of(st.sampled_from(keys), st.text(string.ascii_lowercase + "_", min_size=1, max_size=8))
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(key, inner, max_size=4)),
        max_leaves=12,
    )
    return st.dictionaries(key, values, max_size=6)


def as_toml(doc: dict[str, Any]) -> str:
    try:
        return toml_dumps(doc)
    except Exception:  # the test writer's small TOML subset; fall back to something TOML-ish
        return repr(doc)


def refusal(load: Callable[[Any], object], arg: Any) -> str | None:
    """The ConfigError's message, or None when ``load`` accepted the input; any other exception fails."""
    try:
        load(arg)
    except ConfigError as exc:
        return str(exc)
    return None


noise = st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


@FAST
@given(doc=documents(CONFIG_KEYS), tail=noise)
def test_config_loader_raises_only_config_error(tmp_path: Path, doc: dict[str, Any], tail: str) -> None:
    for text in (as_toml(doc), as_toml(doc) + "\n" + tail):
        path = tmp_path / "config.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        assert refusal(config_mod.load, path) != ""  # every refusal says something
    path.write_bytes(b"\xff\xfe" + tail.encode("utf-8", "surrogateescape"))
    assert refusal(config_mod.load, path)


@FAST
@given(doc=documents(PLAYBOOK_KEYS))
def test_playbook_loader_raises_only_config_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "book.toml"
    path.write_text(as_toml(doc), encoding="utf-8", errors="surrogateescape")
    assert refusal(load_playbooks, [path]) != ""


@FAST
@given(data=st.data())
def test_shipped_playbooks_with_one_value_replaced_raise_only_config_error(tmp_path: Path, data: Any) -> None:
    source = data.draw(st.sampled_from(sorted((REPO / "playbooks").glob("*.toml"))))
    doc = tomllib.loads(source.read_text())
    steps = doc.get("step", [])
    table = data.draw(st.sampled_from([doc, doc.get("trigger", {}), doc.get("conditions", {}), *steps]))
    if table:
        table[data.draw(st.sampled_from(sorted(table)))] = data.draw(scalars)
    path = tmp_path / "book.toml"
    path.write_text(as_toml(doc), encoding="utf-8", errors="surrogateescape")
    assert refusal(load_playbooks, [path]) != ""


TOKENS = Tokens(["old-key-" + "0" * 32, "new-key-" + "1" * 32], max_age={"survey": timedelta(days=60)})
GENUINE = TOKENS.sign("survey", {"s": 42, "v": 7})


@settings(max_examples=400, deadline=None)
@given(
    token=st.one_of(
        st.text(max_size=120), st.text(string.ascii_letters + string.digits + "-_.", max_size=120)
    )
)
def test_random_tokens_raise_token_error_and_never_verify(token: str) -> None:
    try:
        payload = TOKENS.verify("survey", token)
    except TokenError:
        return
    raise AssertionError(f"forgery accepted: {token!r} → {payload!r}")


@settings(max_examples=400, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from(string.ascii_letters + string.digits + "-_."))
def test_tampered_tokens_never_carry_another_payload(position: int, char: str) -> None:
    i = position % len(GENUINE)
    tampered = GENUINE[:i] + char + GENUINE[i + 1 :]
    try:
        payload = TOKENS.verify("survey", tampered)
    except TokenError:
        return
    # Base64's unused low bits can change without changing a byte: same payload, not a forgery.
    assert {"s": 42, "v": 7} == payload


def test_a_token_for_another_purpose_is_refused() -> None:
    other = TOKENS.sign("unsubscribe", {"s": 42})
    try:
        TOKENS.verify("survey", other)
    except TokenError:
        return
    raise AssertionError("an unsubscribe token opened a survey")


@settings(max_examples=500, deadline=None)
@given(body=st.text(max_size=300))
def test_sms_parser_classifies_any_text(body: str) -> None:
    intent = parse_sms(body)
    assert intent.kind in {"score", "stop", "start", "help", "text"}
