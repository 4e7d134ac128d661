"""Rendering and link tokens: 11 signed score links that carry only opaque ids, one-click
unsubscribe (RFC 8058) plus a footer link and the postal address (CAN-SPAM), a tagged rendering that
substitutes back to exactly the message, and signing keys that rotate and are generated once."""

from __future__ import annotations

import itertools
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import time_machine
from itsdangerous import URLSafeTimedSerializer

from nps_sync import config as config_mod
from nps_sync.config import Config
from nps_sync.errors import TokenError
from nps_sync.models import OutboundMessage
from nps_sync.render import Renderer, choose_language
from nps_sync.secrets import Secrets
from nps_sync.tokens import SALTS, Purpose, Tokens, load_keys
from tests.core import config_data, program

OLD_KEY, NEW_KEY = "a" * 64, "b" * 64
MAX_AGE: dict[Purpose, timedelta] = {
    "survey": timedelta(days=60),
    "unsubscribe": timedelta(days=400),
    "testimonial": timedelta(days=60),
}
PURPOSES: tuple[Purpose, ...] = ("survey", "unsubscribe", "testimonial")
POSTAL = "Example Inc., 1 Main St, Springfield"


def tokens(*keys: str) -> Tokens:
    return Tokens(list(keys or (NEW_KEY,)), max_age=MAX_AGE)


def make_config(**email: Any) -> Config:
    data = config_data(program("p"), channels={"email": email})
    return config_mod.parse(data, source=Path("/srv/nps/config.toml"))


def survey(config: Config | None = None, *, language: str = "en", send_id: int = 42) -> OutboundMessage:
    config = config or make_config()
    return Renderer(config, tokens()).survey_email(
        send_id=send_id,
        send_key="p|w1|C001|survey",
        to="alice.smith@northwind.example",
        first_name="Alice",
        program=config.program[0],
        language=language,
    )


def unsigned_payload(token: str, purpose: Purpose) -> Any:
    """What anyone who holds the link can read, without the key."""
    _valid, payload = URLSafeTimedSerializer("not-the-key", salt=SALTS[purpose]).loads_unsafe(token)
    return payload


def substitute(content: str, substitutions: dict[str, str]) -> str:
    """What a provider does with a tagged body and one recipient's substitutions."""
    for tag, value in substitutions.items():
        content = content.replace(tag, value)
    return content


# --- score links ------------------------------------------------------------------------------------


def test_survey_email_has_eleven_score_links_sharing_one_token_that_carries_only_the_send_id() -> None:
    message = survey()
    links = list(message.template_data["score_links"])
    prefix = "https://nps.example.com/r/"
    token, _, _ = links[0].removeprefix(prefix).partition("?")

    assert 11 == len(set(links))
    assert [f"{prefix}{token}?score={score}" for score in range(11)] == links
    assert {"s": 42} == unsigned_payload(token, "survey") == tokens().verify("survey", token)
    assert all(link in message.text and link in (message.html or "") for link in links)


@pytest.mark.parametrize(("signed_for", "used_for"), list(itertools.permutations(PURPOSES, 2)))
def test_a_token_signed_for_one_purpose_is_refused_for_another(
    signed_for: Purpose, used_for: Purpose
) -> None:
    token = tokens().sign(signed_for, {"s": 7})

    with pytest.raises(TokenError, match="not valid"):
        tokens().verify(used_for, token)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-5] + ("A" if t[-5] != "A" else "Q") + t[-4:],  # signature (not its padding bits)
        lambda t: t.replace(t.split(".")[0], URLSafeTimedSerializer("x").dump_payload({"s": 8}).decode()),
        lambda t: "x" * 600,
        lambda t: "",
        lambda t: "é" + t,
    ],
    ids=["signature", "payload", "too-long", "empty", "not-ascii"],
)
def test_tampered_tokens_raise_token_error(tamper: Any) -> None:
    token = tokens().sign("survey", {"s": 7, "v": 3})

    with pytest.raises(TokenError):
        tokens().verify("survey", tamper(token))


def test_score_links_expire_after_survey_link_max_age() -> None:
    signed_at = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    with time_machine.travel(signed_at, tick=False):
        token = tokens().sign("survey", {"s": 7, "v": 3})
    with time_machine.travel(signed_at + timedelta(days=59), tick=False):
        assert {"s": 7, "v": 3} == tokens().verify("survey", token)
    with (
        time_machine.travel(signed_at + timedelta(days=60, seconds=2), tick=False),
        pytest.raises(TokenError, match="expired"),
    ):
        tokens().verify("survey", token)


def test_an_old_key_still_verifies_while_listed_and_not_once_removed() -> None:
    old_token = tokens(OLD_KEY).sign("survey", {"s": 1, "v": 9})
    new_token = tokens(OLD_KEY, NEW_KEY).sign("survey", {"s": 2, "v": 9})

    assert {"s": 1, "v": 9} == tokens(OLD_KEY, NEW_KEY).verify("survey", old_token)
    assert {"s": 2, "v": 9} == tokens(NEW_KEY).verify("survey", new_token)  # the newest key signs
    with pytest.raises(TokenError):
        tokens(NEW_KEY).verify("survey", old_token)


@pytest.mark.parametrize("keys", [[], ["short"], [NEW_KEY, "x" * 31]])
def test_signing_keys_shorter_than_32_characters_are_refused(keys: list[str]) -> None:
    with pytest.raises(TokenError, match="at least 32 characters"):
        Tokens(keys, max_age=MAX_AGE)


# --- the message ------------------------------------------------------------------------------------


def test_tagged_content_substitutes_back_to_exactly_the_rendered_message() -> None:
    message = survey()
    tagged = message.tagged

    assert tagged is not None
    assert message.subject == tagged.subject
    assert message.text == substitute(tagged.text, dict(tagged.substitutions))
    assert message.html == substitute(tagged.html or "", dict(tagged.substitutions))
    # The shared body holds nothing of one recipient: no name, no link token.
    shared = tagged.text + (tagged.html or "")
    assert "Alice" not in shared
    assert not any(link in shared for link in message.template_data["score_links"])


@pytest.mark.parametrize(
    ("purpose", "payload"),
    [
        ("survey", {"s": 42}),
        ("survey", {"s": 42, "v": 7}),  # a score link signed before the score moved to the query
        ("unsubscribe", {"s": 10_000}),
        ("survey", {"s": 111_111_111_111, "v": 1}),  # repetitive enough for zlib to shorten it
        ("testimonial", {"s": 5, "note": "x" * 120}),
    ],
    ids=["survey", "score", "unsubscribe", "compressible", "long"],
)
def test_tokens_are_byte_for_byte_what_itsdangerous_signs(purpose: Purpose, payload: dict[str, Any]) -> None:
    reference = URLSafeTimedSerializer([OLD_KEY, NEW_KEY], salt=SALTS[purpose])
    signer = tokens(OLD_KEY, NEW_KEY)

    with time_machine.travel(datetime(2026, 3, 10, 12, 0, 5, tzinfo=timezone.utc), tick=False):
        assert reference.dumps(payload) == signer.sign(purpose, payload)
        assert payload == signer.verify(purpose, signer.sign(purpose, payload))


def test_each_recipients_name_and_links_are_filled_in_escaped_in_html_and_as_is_in_text() -> None:
    config = make_config()
    renderer = Renderer(config, tokens())
    messages = [
        renderer.survey_email(
            send_id=send_id,
            send_key=f"p|w1|C{send_id}|survey",
            to="someone@northwind.example",
            first_name=name,
            program=config.program[0],
            language="en",
        )
        for send_id, name in ((1, "Alice"), (2, 'Jean & "Luc" <jl>'), (3, "Alice"))
    ]

    assert messages[0].text.startswith("Hi Alice,")
    assert messages[1].text.startswith('Hi Jean & "Luc" <jl>,')
    assert "Hi Jean &amp; &#34;Luc&#34; &lt;jl&gt;," in (messages[1].html or "")
    for message in messages:
        tagged = message.tagged
        assert tagged is not None
        assert message.text == substitute(tagged.text, dict(tagged.substitutions))
        assert message.html == substitute(tagged.html or "", dict(tagged.substitutions))
        for link in message.template_data["score_links"]:
            assert link in message.text
            assert f'href="{link}"' in (message.html or "")
    assert {"s": 3} == tokens().verify(
        "survey", messages[2].template_data["score_links"][0].rsplit("/", 1)[1].partition("?")[0]
    )


def test_a_public_url_that_needs_escaping_is_escaped_in_html_and_not_offered_for_batching() -> None:
    data = config_data(program("p"))
    data["daemon"]["public_url"] = "https://nps.example.com/a&b"
    message = survey(config_mod.parse(data, source=Path("/srv/nps/config.toml")))

    link = message.template_data["score_links"][0]
    assert link.startswith("https://nps.example.com/a&b/r/")
    assert f'href="{link.replace("&", "&amp;")}"' in (message.html or "")
    assert link in message.text
    assert message.tagged is None


def test_wording_that_contains_a_tag_by_accident_is_not_offered_for_batching() -> None:
    config = config_mod.parse(
        config_data(program("p", text={"en": {"question": "Score us: -survey_url- or -intro-?"}})),
        source=Path("/srv/nps/config.toml"),
    )

    message = survey(config)

    assert message.tagged is None
    assert "Score us: -survey_url- or -intro-?" in message.text


def test_list_unsubscribe_offers_https_and_mailto_with_the_one_click_header() -> None:
    message = survey()
    header = message.headers["List-Unsubscribe"]
    https_part, mailto_part = (part.strip().strip("<>") for part in header.split(","))
    token = https_part.removeprefix("https://nps.example.com/u/")

    assert "List-Unsubscribe=One-Click" == message.headers["List-Unsubscribe-Post"]
    assert f"https://nps.example.com/u/{token}" == https_part
    assert f"mailto:nps@example.com?subject={quote('unsubscribe ' + token)}" == mailto_part
    assert {"s": 42} == tokens().verify("unsubscribe", token)
    assert https_part in message.text
    assert f'href="{https_part}"' in (message.html or "")


def test_unsubscribe_mailto_can_be_another_address() -> None:
    message = survey(make_config(unsubscribe_mailto="optout@example.com"))

    assert "<mailto:optout@example.com?subject=unsubscribe%20" in message.headers["List-Unsubscribe"]


def test_postal_address_is_in_the_text_and_the_html_part() -> None:
    message = survey(make_config(postal_address=POSTAL))

    assert POSTAL in message.text
    assert POSTAL in (message.html or "")


def test_german_rendering_uses_the_shipped_german_wording() -> None:
    message = survey(language="de")

    assert "Wie wahrscheinlich ist es, dass Sie Example Inc. empfehlen?" == message.subject
    assert message.text.startswith("Hallo Alice,")
    assert '<html lang="de">' in (message.html or "")


def test_playbook_email_escapes_its_body_in_the_html_part() -> None:
    config = make_config()
    message = Renderer(config, tokens()).plain_email(
        send_id=5,
        send_key="k",
        to="a@example.com",
        subject="Hi",
        body="<b>5 & 6</b>\n\nbye",
        language="en",
        program=None,
    )

    assert "<p>&lt;b&gt;5 &amp; 6&lt;/b&gt;</p><p>bye</p>" in (message.html or "")
    assert "<b>5 & 6</b>\n\nbye" in message.text
    assert [] == message.template_data["score_links"]


@pytest.mark.parametrize(
    ("locale", "languages", "expected"),
    [
        ("de_DE", ("en", "de"), "de"),
        ("DE-ch", ("en", "de"), "de"),
        ("fr_FR", ("en", "de"), "en"),
        (None, ("en", "de"), "en"),
        ("de", ("en",), "en"),
    ],
)
def test_choose_language_takes_the_locales_language_when_the_program_offers_it(
    locale: str | None, languages: tuple[str, ...], expected: str
) -> None:
    config = config_mod.parse(config_data(program("p", languages=list(languages))), source=Path("/x/c.toml"))

    assert expected == choose_language(locale, config.program[0])


# --- signing keys ---------------------------------------------------------------------------------


def test_load_keys_generates_a_0600_key_file_once_and_reuses_it(tmp_path: Path) -> None:
    state = tmp_path / "state"

    first = load_keys(Secrets(environ={}), "NPS_SYNC_SIGNING_KEYS", state)
    written = (state / "signing-keys").read_text()
    again = load_keys(Secrets(environ={}), "NPS_SYNC_SIGNING_KEYS", state)

    assert 1 == len(first)
    assert 64 == len(first[0])
    int(first[0], 16)  # hex
    assert first == again
    assert written == (state / "signing-keys").read_text() == first[0] + "\n"
    assert 0o600 == stat.S_IMODE((state / "signing-keys").stat().st_mode)


@pytest.mark.parametrize("separator", [",", "\n", " , "])
def test_load_keys_prefers_the_secret_and_writes_no_file(tmp_path: Path, separator: str) -> None:
    secrets = Secrets(environ={"NPS_SYNC_SIGNING_KEYS": OLD_KEY + separator + NEW_KEY})

    keys = load_keys(secrets, "NPS_SYNC_SIGNING_KEYS", tmp_path / "state")

    assert [OLD_KEY, NEW_KEY] == keys
    assert not (tmp_path / "state").exists()
