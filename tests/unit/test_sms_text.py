"""Inbound SMS bodies: scores, opt-outs (FCC 24-24), opt-ins, HELP, and free text."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nps_sync.sms_text import SmsIntent, parse_sms

FAST = settings(max_examples=200, deadline=None)

TWILIO_OPT_OUT = ["STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT", "CANCEL"]


@pytest.mark.parametrize(
    ("body", "score", "comment"),
    [
        ("9", 9, None),
        ("9!", 9, None),
        (" 10 great service", 10, "great service"),
        ("10/10", 10, None),
        ("10 / 10 would recommend", 10, "would recommend"),
        ("7.", 7, None),
        ("0", 0, None),
        ("8 out of 10", 8, None),
        ("10 - great service", 10, "great service"),
        ("3, slow support", 3, "slow support"),
        ("6\nthe app crashes", 6, "the app crashes"),
        ("5 stars", 5, "stars"),
    ],
)
def test_a_number_from_0_to_10_at_the_start_is_a_score(body: str, score: int, comment: str | None) -> None:
    assert SmsIntent("score", score=score, comment=comment, text=body.strip()) == parse_sms(body)


@pytest.mark.parametrize(
    "body", ["11", "-1", "99", "100", "7.5", "7,5", "9am", "I'd say 7", "4/5", "score: 9", "−3"]
)
def test_other_numbers_are_text_never_a_score(body: str) -> None:
    assert SmsIntent("text", text=body.strip()) == parse_sms(body)


@pytest.mark.parametrize(
    "body",
    [
        *TWILIO_OPT_OUT,
        *(k.lower() for k in TWILIO_OPT_OUT),
        *(k.capitalize() + "." for k in TWILIO_OPT_OUT),
        "Stop.",
        " stop!! ",
        "STOP ALL",
        "stop all",
        "opt out",
        "Opt-Out",
        "OPT-OUT!",
        "Un-subscribe",
        "STOP STOP STOP",
        "please stop",
        "Stop it",
        "Stop it now!",
        "Cancel please",
        "End.",
        "stop 🙏",
    ],
)
def test_opt_out_keywords_in_any_case_and_punctuation_are_stop(body: str) -> None:
    assert "stop" == parse_sms(body).kind


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me",
        "stop sending me messages",
        "unsubscribe me",
        "remove me from this list",
        "don't text me",
        "Don’t text me",
        "do not contact me again",
        "Never message me again",
        "How do I unsubscribe?",
        "I want to opt out",
        "I revoke my consent",
        "No more texts please",
        "no more of these surveys",
        "I do not want any more of these texts",
        "Leave me alone",
        "Wrong number",
        "Sorry, wrong number",
        "stop these messages",
        "Stop this!",
        "stop bothering me",
        "Take me off your list",
        "please delete my number",
        "End these texts",
        "Great service. STOP",
        "Love you guys but quit texting",
    ],
)
def test_plain_requests_to_stop_messaging_are_stop(body: str) -> None:
    assert "stop" == parse_sms(body).kind


@pytest.mark.parametrize(
    "body",
    [
        "don't stop the good work",
        "the end of support was great",
        "I had to cancel my order but support was great",
        "Couldn't stop smiling",
        "The agent didn't quit until it was fixed",
        "Stop by anytime, great team",
        "Please fix the bug and stop this from happening",
        "In the end these guys helped",
        "I won't unsubscribe, love it",
        "don't stop texting me, I like the tips",
        "I called the wrong number first but support fixed it",
        "Take me to your leader",
        "Non-stop great service",
        "It was the end of a long week",
    ],
)
def test_messages_that_merely_contain_an_opt_out_word_are_not_stop(body: str) -> None:
    assert "stop" != parse_sms(body).kind


def test_a_score_followed_by_an_opt_out_is_stop_and_keeps_the_score() -> None:
    assert SmsIntent("stop", score=9, comment="stop texting me", text="9, stop texting me") == parse_sms(
        "9, stop texting me"
    )


@pytest.mark.parametrize(
    "body", ["START", "start", "Yes", "YES!", "unstop", "Unstop.", "yes please", " Start "]
)
def test_opt_in_keywords_are_start(body: str) -> None:
    assert SmsIntent("start", text=body.strip()) == parse_sms(body)


@pytest.mark.parametrize("body", ["HELP", "help?", "Info", "INFO please", "Help!"])
def test_help_keywords_are_help(body: str) -> None:
    assert SmsIntent("help", text=body.strip()) == parse_sms(body)


@pytest.mark.parametrize(
    "body", ["yes it was great", "help me understand the survey", "info was clear", "hello", "", "   ", "👍"]
)
def test_keywords_inside_a_sentence_and_everything_else_are_text(body: str) -> None:
    assert SmsIntent("text", text=body.strip()) == parse_sms(body)


# --- properties ----------------------------------------------------------------------------------

punctuation = st.text(alphabet=" .!?,;:-\t\n", max_size=4)
SAFE_COMMENTS = ["", "great service", "slow support", "the app is nice", "thanks!", "good, not great", "👍"]


def random_case(draw: st.DrawFn, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


@st.composite
def decorated_keywords(draw: st.DrawFn, keywords: list[str]) -> str:
    word = random_case(draw, draw(st.sampled_from(keywords)))
    return draw(punctuation) + word + draw(punctuation)


@FAST
@given(st.text(max_size=200))
def test_any_body_parses_and_keeps_its_stripped_text(body: str) -> None:
    intent = parse_sms(body)
    assert body.strip() == intent.text
    assert intent.kind in {"score", "stop", "start", "help", "text"}
    if intent.kind == "score":
        assert intent.score is not None
        assert 0 <= intent.score <= 10
    elif intent.kind != "stop":
        assert (None, None) == (intent.score, intent.comment)


@FAST
@given(
    st.integers(0, 10), st.sampled_from(["", "!", ".", "/10", " out of 10"]), st.sampled_from(SAFE_COMMENTS)
)
def test_every_score_from_0_to_10_round_trips(score: int, suffix: str, comment: str) -> None:
    body = f"{score}{suffix} {comment}"
    intent = parse_sms(body)
    assert ("score", score) == (intent.kind, intent.score)
    assert (comment or None) == intent.comment


@FAST
@given(st.one_of(st.integers(11, 10**6), st.integers(-(10**6), -1)), st.sampled_from(SAFE_COMMENTS))
def test_numbers_outside_0_to_10_are_never_a_score(number: int, comment: str) -> None:
    intent = parse_sms(f"{number} {comment}")
    assert ("text", None) == (intent.kind, intent.score)


@FAST
@given(decorated_keywords([*TWILIO_OPT_OUT, "stop all", "opt out", "opt-out"]))
def test_opt_out_keywords_are_stop_whatever_the_case_and_punctuation(body: str) -> None:
    assert "stop" == parse_sms(body).kind


@FAST
@given(decorated_keywords(["START", "YES", "UNSTOP"]))
def test_opt_in_keywords_are_start_whatever_the_case_and_punctuation(body: str) -> None:
    assert "start" == parse_sms(body).kind


@FAST
@given(decorated_keywords(["HELP", "INFO"]))
def test_help_keywords_are_help_whatever_the_case_and_punctuation(body: str) -> None:
    assert "help" == parse_sms(body).kind


@FAST
@given(st.sampled_from(SAFE_COMMENTS), decorated_keywords(TWILIO_OPT_OUT))
def test_a_comment_then_a_bare_opt_out_sentence_is_stop(comment: str, keyword: str) -> None:
    assert "stop" == parse_sms(f"{comment}. {keyword}").kind
