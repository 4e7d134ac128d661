"""Comment themes without a language model: keyword and bigram statistics.

Comments are split into tokens of unicode letters (so any script works), lower-cased, and stripped of
a small stop-word list per shipped language (en, de) and of tokens so frequent that they say nothing
(in more than ``max_share`` of all comments, once there are enough comments to tell). Unigrams and
bigrams of the remaining tokens are the candidate themes. For one category (detractor, passive,
promoter) a term is ranked by its lift: its share of that category's comments over its share of all
comments — "invoice portal" in 30 % of detractor comments but 10 % of all comments has lift 3.
Terms in fewer than ``min_count`` comments of the category are left out, and so is a term whose
comments are mostly (``overlap``) those of a theme ranked above it: themes group different comments,
so "invoice" does not follow "invoice portal". On equal lift a bigram ranks before its words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from nps_sync.analytics.data import Answer

_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS: dict[str, frozenset[str]] = {
    "en": _words(
        """a about after again all also am an and any are as at be because been before being but by
        can could did do does doing don done for from get got had has have having he her here him his
        how i if in into is it its just let me more most much my no not now of on one only or other
        our out over really so some such than that the their them then there these they this those
        to too up us very was we were what when where which while who why will with would you your
        yours i'm it's thanks thank"""
    ),
    "de": _words(
        """aber alle als also am an auch auf aus bei bin bis bitte da dann das dass dem den der des
        die dies diese dieser doch du durch ein eine einem einen einer es für gar gibt hat hatte
        haben ich ihr im in ist ja jetzt kann kein keine mal man mehr mein mich mir mit muss nach
        nicht noch nur ob oder schon sehr sein sich sie sind so über um und uns unser vom von vor
        war waren was weil wenn wer wie wir wird wo zu zum zur danke"""
    ),
}
ALL_STOP_WORDS = frozenset().union(*STOP_WORDS.values())


def tokens(text: str) -> list[str]:
    """Letters-only tokens, case-folded, stop words and single letters dropped."""
    return [t for t in (m.casefold() for m in _TOKEN.findall(text)) if len(t) > 1 and t not in ALL_STOP_WORDS]


def terms(text: str) -> set[str]:
    """The unigrams and bigrams of a comment (a set: a comment counts once per term)."""
    toks = tokens(text)
    return set(toks) | {f"{a} {b}" for a, b in pairwise(toks)}


@dataclass(frozen=True)
class Theme:
    term: str
    count: int
    lift: float
    examples: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "term": self.term,
            "count": self.count,
            "lift": round(self.lift, 2),
            "examples": list(self.examples),
        }


def themes(
    answers: Sequence[Answer],
    category: str,
    *,
    top: int = 8,
    min_count: int = 2,
    max_share: float = 0.5,
    overlap: float = 0.8,
    examples: int = 3,
) -> list[Theme]:
    """The top themes of one category's comments, ranked by lift over all comments, then count."""
    corpus = [(a, terms(a.comment)) for a in answers if a.comment and a.comment.strip()]
    if not corpus:
        return []
    df_all: Counter[str] = Counter()
    for _, ts in corpus:
        df_all.update(ts)
    mine = [(a, ts) for a, ts in corpus if a.category == category]
    if not mine:
        return []
    df_mine: Counter[str] = Counter()
    for _, ts in mine:
        df_mine.update(ts)
    n_all, n_mine = len(corpus), len(mine)
    # Only once there are enough comments is "in most comments" evidence of a filler word.
    too_common = {t for t, n in df_all.items() if " " not in t and n_all >= 10 and n / n_all > max_share}
    ranked = []
    for term, n in df_mine.items():
        if n < min_count or any(part in too_common for part in term.split(" ")):
            continue
        lift = (n / n_mine) / (df_all[term] / n_all)
        # Rounded so that float noise never outranks a larger count at the same lift.
        ranked.append((round(lift, 6), n, " " in term, term))
    ranked.sort(key=lambda r: (-r[0], -r[1], not r[2], r[3]))
    chosen: list[Theme] = []
    members: list[set[int]] = []
    for lift, n, _, term in ranked:
        if len(chosen) >= top:
            break
        ids = {a.response_id for a, ts in mine if term in ts}
        # A theme must bring comments of its own: "invoice" adds nothing after "invoice portal".
        if any(len(ids & seen) >= overlap * len(ids) for seen in members):
            continue
        members.append(ids)
        quotes = _examples((a for a, ts in mine if term in ts), examples)
        chosen.append(Theme(term=term, count=n, lift=lift, examples=quotes))
    return chosen


def _examples(answers: Iterable[Answer], limit: int) -> tuple[str, ...]:
    newest = sorted(answers, key=lambda a: (a.responded_at, a.response_id), reverse=True)
    out = []
    for a in newest[:limit]:
        text = " ".join((a.comment or "").split())
        out.append(text if len(text) <= 160 else text[:157] + "…")
    return tuple(out)
