"""How people move between categories when surveyed more than once.

Each pair of a person's consecutive answers counts once in the matrix (from → to). The passive
playbook aims at passive → promoter; promoter → passive/detractor is slippage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from nps_sync.analytics.data import Answer

CATEGORIES = ("detractor", "passive", "promoter")
_RANK = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass(frozen=True)
class Transitions:
    #: counts[from][to] for consecutive answers of the same person.
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, source: str, target: str) -> int:
        return self.counts.get(source, {}).get(target, 0)

    @property
    def total(self) -> int:
        return sum(sum(row.values()) for row in self.counts.values())

    @property
    def improved(self) -> int:
        return sum(self.count(a, b) for a in CATEGORIES for b in CATEGORIES if _RANK[b] > _RANK[a])

    @property
    def slipped(self) -> int:
        return sum(self.count(a, b) for a in CATEGORIES for b in CATEGORIES if _RANK[b] < _RANK[a])

    def share_from(self, source: str, target: str) -> float | None:
        """Of the pairs starting in ``source``, the share that went to ``target``."""
        row = sum(self.counts.get(source, {}).values())
        return self.count(source, target) / row if row else None

    def as_dict(self) -> dict[str, object]:
        return {
            "matrix": {a: {b: self.count(a, b) for b in CATEGORIES} for a in CATEGORIES},
            "pairs": self.total,
            "improved": self.improved,
            "slipped": self.slipped,
            "passive_to_promoter": self.count("passive", "promoter"),
            "promoter_slipped": self.count("promoter", "passive") + self.count("promoter", "detractor"),
        }


def transitions(answers: Iterable[Answer], *, since: datetime | None = None) -> Transitions:
    """The matrix over consecutive answers; with ``since``, only pairs whose later answer is in it
    (the earlier answer may be older, so pass every answer, not only the window's)."""
    per_person: dict[str, list[Answer]] = {}
    for a in answers:
        per_person.setdefault(a.contact_id, []).append(a)
    counts = {a: dict.fromkeys(CATEGORIES, 0) for a in CATEGORIES}
    for history in per_person.values():
        history.sort(key=lambda a: (a.responded_at, a.response_id))
        for before, after in pairwise(history):
            if since is not None and after.responded_at < since:
                continue
            counts[before.category][after.category] += 1
    return Transitions(counts=counts)
