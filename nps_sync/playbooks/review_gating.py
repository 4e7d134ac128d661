"""The review-gating guard: a playbook may not send a public-review link only to happy customers.

Asking only satisfied customers for public reviews ("review gating") breaks Google's review policy
(since April 2018: "don't selectively solicit positive reviews") and UK and US consumer-review rules
(the UK DMCC Act 2024 and CMA guidance on fake and concealed-incentive reviews; in the US the FTC rule
on consumer reviews, 16 CFR Part 465, 2024). A private testimonial request to promoters is fine; a
public-review request must go to every respondent of the program, or not at all
(../shared/docs/reliability-and-compliance.md §4).

What counts as "not every respondent": who gets the message depends on how they answered. A
``send_email`` / ``send_sms`` step that links to a review site (``[testimonials] review_sites``) is
refused when its playbook

- has ``conditions.category`` that leaves out any category (``["promoter"]``, but also
  ``["passive", "promoter"]``: leaving out detractors is the same gate);
- has ``conditions.score`` narrower than 0-10 (``"9-10"``, ``[7, 10]``, ``10``);
- has ``conditions.previous_category`` (selecting by an earlier answer is the same gate, one step
  removed), or ``conditions.comment_contains`` (selecting by what people wrote);
- is triggered by ``category_changed`` (it only ever fires for some answers) or ``task_overdue``
  (it only fires for people another playbook picked, e.g. detractor callbacks).

Not counted: ``programs`` and CRM ``field`` conditions (segments, not sentiment), and the
``no_response`` trigger (it does not depend on an answer). A link the template builds from a CRM
field (``{{ contact.fields.review_url }}``) cannot be seen here; the rendered sample is checked too,
so a link built from literal parts is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nps_sync.playbooks import templates
from nps_sync.playbooks.model import Playbook, Step

MESSAGE_ACTIONS = ("send_email", "send_sms")
SCORES_BY_CATEGORY = {"detractor": range(0, 7), "passive": range(7, 9), "promoter": range(9, 11)}
WHY = (
    "asking only satisfied customers for public reviews ('review gating') breaks Google's review "
    "policy (since 2018) and UK and US consumer-review rules (CMA/DMCC Act 2024, FTC 16 CFR 465)"
)
FIX = (
    "send the review link to every respondent of the program (no category, score, previous_category "
    "or comment_contains condition and a response or no_response trigger), or not at all; "
    "a private testimonial request ({{ testimonial_url }}) to promoters is fine"
)
#: Host-and-path candidates in message text, with or without a scheme.
_URL = re.compile(r"(?:https?://)?(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?(?:/[^\s\"'<>)\]]*)?", re.I)


@dataclass(frozen=True)
class ReviewLink:
    site: str
    url: str


def find_review_links(text: str, sites: Iterable[str]) -> list[ReviewLink]:
    """Review-site links in ``text``: the host is the site's host or a subdomain of it, and the path
    starts with the site's path (``google.com/maps`` matches ``https://www.google.com/maps/place/…``)."""
    found: list[ReviewLink] = []
    for match in _URL.finditer(text):
        url = match.group(0)
        bare = re.sub(r"^https?://", "", url, flags=re.I).lower()
        host, _, path = bare.partition("/")
        host = host.split(":")[0]
        for site in sites:
            site_host, _, site_path = site.lower().partition("/")
            on_host = host == site_host or host.endswith("." + site_host)
            on_path = not site_path or path == site_path or path.startswith(site_path + "/")
            if on_host and on_path:
                found.append(ReviewLink(site, url))
                break
    return found


def audience_restriction(book: Playbook) -> str | None:
    """Why ``book`` does not reach every respondent of its programs, or None when it does."""
    cond = book.conditions
    trigger = book.trigger.on
    if trigger == "category_changed":
        return "trigger.on = 'category_changed' (it fires only for some answers)"
    if trigger == "task_overdue":
        return "trigger.on = 'task_overdue' (it fires only for people another playbook picked)"
    scores = set(range(11))
    reasons: list[str] = []
    if cond.category:
        allowed = {s for c in cond.category for s in SCORES_BY_CATEGORY[c]}
        if allowed != scores:
            reasons.append(f"conditions.category = {list(cond.category)!r}")
        scores &= allowed
    if cond.score is not None:
        lo, hi = cond.score
        if (lo, hi) != (0, 10):
            reasons.append(f"conditions.score = '{lo}-{hi}'")
        scores &= set(range(lo, hi + 1))
    if cond.previous_category:
        reasons.append(f"conditions.previous_category = {list(cond.previous_category)!r}")
    if cond.comment_contains:
        reasons.append(f"conditions.comment_contains = {list(cond.comment_contains)!r}")
    if not reasons:
        return None
    reach = _describe(scores)
    return f"{' and '.join(reasons)} (it reaches {reach})"


def _describe(scores: set[int]) -> str:
    if not scores:
        return "nobody: it can never fire"
    who = "only promoters" if scores <= set(SCORES_BY_CATEGORY["promoter"]) else "only some respondents"
    lo, hi = min(scores), max(scores)
    return (
        f"{who}: scores {lo}-{hi}" if scores == set(range(lo, hi + 1)) else f"{who}: scores {sorted(scores)}"
    )


def _step_texts(step: Step) -> list[str]:
    """The step's template sources, and each rendered with the sample context (links from parts)."""
    texts: list[str] = []
    for key in type(step.params).TEMPLATES:
        source = getattr(step.params, key, None)
        if isinstance(source, str):
            texts.append(source)
    for template in step.templates.values():
        try:
            texts.append(templates.render(template, templates.sample_context(task=False)))
        except Exception:  # noqa: S112 - template problems are reported by check_playbooks itself
            continue
    return texts


def check_review_gating(playbooks: Sequence[Playbook], review_sites: Sequence[str]) -> list[str]:
    """One problem per message step that sends a review-site link to only part of the respondents:
    file, step, action, site and link, why the audience is partial, why that is refused, the fix.
    Disabled playbooks are checked too: enabling one must not need another review."""
    problems: list[str] = []
    if not review_sites:
        return problems
    for book in playbooks:
        restriction = None
        checked = False
        for step in book.steps:
            if step.action not in MESSAGE_ACTIONS:
                continue
            links: dict[str, ReviewLink] = {}
            for text in _step_texts(step):
                for link in find_review_links(text, review_sites):
                    links.setdefault(link.url, link)
            if not links:
                continue
            if not checked:
                restriction, checked = audience_restriction(book), True
            if restriction is None:
                continue
            where = book.source or book.name
            for link in links.values():
                problems.append(
                    f"{where}: step[{step.index}] ({step.action}): links to the public review site "
                    f"{link.site!r} ({link.url}) but the playbook picks people by their answer: "
                    f"{restriction}; refused: {WHY}; {FIX}"
                )
    return problems
