"""Read an inbound SMS: a score, an opt-out, an opt-in, a HELP request, or free text.

Opt-out rule (FCC 24-24: consent may be revoked "in any reasonable manner"; *stop, quit, end,
revoke, opt out, cancel, unsubscribe* are revocations per se). A body is ``"stop"`` when either:

1. **Keyword**: some sentence of it (split on ``. ! ? ; ,`` and newlines) is made only of opt-out
   keywords once digits and filler words (*please, now, just, it, me, all, thanks, texts, …*) are
   dropped. Keywords: Twilio's ``STOP STOPALL UNSUBSCRIBE END QUIT REVOKE OPTOUT CANCEL``, with
   ``OPT OUT``/``OPT-OUT``/``UN-SUBSCRIBE`` joined, any case. So ``"Stop."``, ``" stop!! "``,
   ``"STOP ALL"``, ``"Opt-Out"``, ``"please stop"``, ``"Cancel it"``, ``"10. Stop"`` are stop, and
   ``"the end of support was great"`` is not (*the*, *of*, *support* are not filler).
2. **Phrase**: a request to stop messaging anywhere in the body:
   *stop/quit/cease/halt* + *texting, sending, messaging, contacting, bothering, …* or a messaging
   noun (*texts, messages, sms, surveys*, optionally after *these/the/your/all*) or a sentence-final
   *this/these*; *end* + a messaging noun; *unsubscribe*, *opt out*, *revoke* anywhere;
   *remove me, delete me, take me off, remove my number*; *don't/do not/never text|message|contact|
   send|call me*; *don't want (any more) texts*; *no more messages*; *leave me alone*; a sentence
   starting *wrong number* / *this is the wrong person*.
   A negation as the last word before *stop…/end…/unsubscribe/opt out/revoke* in the same sentence
   cancels that match: *don't stop the good work*, *never stop texting me*, *I won't unsubscribe*.

The rules lean towards stopping: a false positive loses one respondent, a false negative breaks
the law. A stop that also starts with a score keeps that score in ``score``/``comment`` so the core
may still record it. ``START``/``YES``/``UNSTOP`` (opt-in) and ``HELP``/``INFO`` count only when
they are the whole message (filler allowed): ``"yes it was great"`` is a comment.

Scores: a whole number 0–10 at the very start (``"9"``, ``"9!"``, ``"10/10"``, ``"7."``,
``"8 out of 10"``, ``"10 great service"``); anything else numeric (``"11"``, ``"-1"``, ``"7.5"``,
``"I'd say 7"``) is ``"text"`` and the core keeps it as a comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["SmsIntent", "SmsKind", "parse_sms"]

SmsKind = Literal["score", "stop", "start", "help", "text"]


@dataclass(frozen=True)
class SmsIntent:
    """What an inbound SMS body means. ``text`` is the original body, stripped."""

    kind: SmsKind
    score: int | None = None
    comment: str | None = None
    text: str = ""


_STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "end", "quit", "revoke", "optout", "cancel"})
_START_WORDS = frozenset({"start", "yes", "unstop"})
_HELP_WORDS = frozenset({"help", "info"})
_FILLER = frozenset(
    {
        "please", "pls", "plz", "pleas", "now", "just", "it", "me", "all", "thanks", "thank", "you",
        "thx", "ty", "already", "asap", "immediately", "ok", "okay", "oh", "and", "so", "hi", "hello",
        "hey", "again", "right", "away", "sms", "txt", "text", "texts", "messages", "msgs",
    }
)  # fmt: skip

# Words that, right before "stop"/"unsubscribe", turn a request into its opposite.
_NEGATIONS = frozenset(
    {
        "not", "never", "don't", "dont", "won't", "wont", "didn't", "didnt", "can't", "cant",
        "couldn't", "couldnt", "wouldn't", "wouldnt", "shouldn't", "shouldnt",
    }
)  # fmt: skip
_NOUN = r"(?:texts?|txts?|sms|messages?|msgs?|surveys?|notifications?)"
_VERB_ING = r"(?:texting|txting|messaging|sending|contacting|spamming|bothering|emailing|calling)"
_VERB = r"(?:text|txt|sms|message|msg|send|contact|spam|bother|email|call)"
_DETERMINER = r"(?:(?:these|this|those|the|all|your|any|all\s+(?:these|the|your))\s+)"
_SENTENCE_END = r"(?=\s*(?:[.!?;,]|$))"
#: (pattern, cancelled by a negation right before it)
_STOP_PHRASES: list[tuple[re.Pattern[str], bool]] = [
    (
        re.compile(
            rf"\b(?:stop|quit|cease|halt)\s+(?:{_VERB_ING}|{_DETERMINER}?{_NOUN}\b|(?:these|this|those){_SENTENCE_END})"
        ),
        True,
    ),
    (re.compile(rf"\bend\s+{_DETERMINER}?(?:{_NOUN}|texting|messaging)\b"), True),
    (re.compile(r"\b(?:unsubscribe|opt\s*-?\s*out|revoke)\b"), True),
    (
        re.compile(
            r"\b(?:remove\s+me|delete\s+me|take\s+me\s+off|(?:remove|delete)\s+my\s+(?:number|phone|details))\b"
        ),
        False,
    ),
    (re.compile(rf"\b(?:don't|dont|do\s+not|never)\s+(?:ever\s+)?{_VERB}\s+me\b"), False),
    (
        re.compile(
            rf"\b(?:don't|dont|do\s+not)\s+(?:want|wish)\s+(?:to\s+(?:get|receive)\s+)?(?:any\s+)?(?:more\s+)?(?:of\s+)?{_DETERMINER}?{_NOUN}"
        ),
        False,
    ),
    (re.compile(rf"\bno\s+more\s+(?:of\s+)?{_DETERMINER}?{_NOUN}"), False),
    (re.compile(r"\bleave\s+me\s+alone\b"), False),
    (
        re.compile(
            r"(?:^|[.!?;,]\s*)(?:sorry\s+)?(?:(?:this\s+is|you\s+have|you've\s+got)\s+(?:a\s+|the\s+)?)?wrong\s+(?:number|person)\b"
        ),
        False,
    ),
]
_SENTENCE_SPLIT = re.compile(r"[.!?;,\n]+")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SCORE = re.compile(
    r"\A\s*(?P<score>[0-9]{1,2})(?![0-9]|[.,][0-9])"
    r"(?:\s*(?:/|out\s+of|of)\s*10(?![0-9]))?"
    r"(?P<rest>.*)\Z",
    re.IGNORECASE | re.DOTALL,
)
_COMMENT_LEAD = re.compile(r"\A[\s.,;:!?)\]\-–—/*]+")


def parse_sms(body: str) -> SmsIntent:
    """Classify one inbound SMS body (see the module docstring for the rules)."""
    text = body.strip()
    normal = _normalize(text)
    score, comment = _score(text)
    if _is_stop(normal):
        return SmsIntent("stop", score=score, comment=comment, text=text)
    words = _keywords(normal)
    if words and words <= _START_WORDS:
        return SmsIntent("start", text=text)
    if words and words <= _HELP_WORDS:
        return SmsIntent("help", text=text)
    if score is not None:
        return SmsIntent("score", score=score, comment=comment, text=text)
    return SmsIntent("text", text=text)


def _normalize(text: str) -> str:
    # Phones send typographic apostrophes ("don’t"), which the phrase rules must see as "'".
    text = text.casefold().replace("\u2019", "'").replace("\u02bc", "'").replace("`", "'")
    return " ".join(text.split())


def _keywords(fragment: str) -> frozenset[str]:
    """The distinct non-filler words of ``fragment``; "opt-out", "opt out", "un-subscribe" joined."""
    words = [w for w in _WORD.findall(fragment.replace("-", " ")) if w not in _FILLER]
    joined: list[str] = []
    for word in words:
        if joined and (joined[-1], word) in {("opt", "out"), ("un", "subscribe"), ("un", "stop")}:
            joined[-1] += word
        else:
            joined.append(word)
    return frozenset(joined)


def _is_stop(normal: str) -> bool:
    for sentence in _SENTENCE_SPLIT.split(normal):
        words = _keywords(sentence)
        if words and words <= _STOP_WORDS:
            return True
    for pattern, negatable in _STOP_PHRASES:
        for match in pattern.finditer(normal):
            if not (negatable and _negated(normal[: match.start()])):
                return True
    return False


def _negated(before: str) -> bool:
    """Whether the last word before a match, in the same sentence, is a negation."""
    words = _WORD.findall(_SENTENCE_SPLIT.split(before)[-1])
    return bool(words) and words[-1] in _NEGATIONS


def _score(text: str) -> tuple[int | None, str | None]:
    match = _SCORE.match(text)
    if match is None:
        return None, None
    value = int(match["score"])
    if not 0 <= value <= 10:
        return None, None
    rest = match["rest"]
    if re.match(r"\s*/\s*[0-9]", rest):
        return None, None  # "4/5": another scale, not ours
    if rest and not _COMMENT_LEAD.match(rest) and not rest[0].isspace():
        return None, None  # "9am", "7pm works": a number glued to a word is not a score
    comment = _COMMENT_LEAD.sub("", rest).strip()
    return value, comment or None
