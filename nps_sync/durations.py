"""Parse the human-written durations, delays and daily time windows of config and playbook files.

``"90d"``, ``"1h30m"``, ``"2 weeks"`` are :class:`~datetime.timedelta`; ``"2 business days"`` or
``"3bd"`` is :class:`BusinessDays` (resolved later against a
:class:`~nps_sync.business_time.BusinessCalendar`); ``"21:00-08:00"`` is a :class:`TimeWindow`
that wraps midnight. Everything here raises ``ValueError`` whose message names what was expected
and the value received; the config loader wraps it in a ``ConfigError`` that adds the TOML path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta
from typing import TypeAlias

__all__ = [
    "BusinessDays",
    "Delay",
    "TimeWindow",
    "format_delay",
    "format_duration",
    "parse_delay",
    "parse_duration",
    "parse_window",
]


@dataclass(frozen=True)
class BusinessDays:
    """A delay counted in business days of some calendar (weekends and holidays skipped)."""

    days: int

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 0:
            raise ValueError(f"business days must be an integer >= 0, got: {self.days!r}")

    def __str__(self) -> str:
        return f"{self.days} business day" + ("" if self.days == 1 else "s")


Delay: TypeAlias = timedelta | BusinessDays

_UNIT_SECONDS: dict[str, int] = {
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
}
_UNIT_WORDS: dict[str, str] = {
    "w": "w|wk|wks|week|weeks",
    "d": "d|day|days",
    "h": "h|hr|hrs|hour|hours",
    "m": "m|min|mins|minute|minutes",
    "s": "s|sec|secs|second|seconds",
}
# Units in descending order, each at most once: "1h30m" is fine, "30m1h" or "1h1h" is a typo.
_DURATION_RE = re.compile(
    r"\A"
    + "".join(rf"(?:\s*(?P<{unit}>[0-9]+)\s*(?:{words})(?![a-z]))?" for unit, words in _UNIT_WORDS.items())
    + r"\s*\Z",
    re.IGNORECASE,
)
_BUSINESS_RE = re.compile(r"\A\s*(?P<n>[0-9]+)\s*(?:bd|business\s*days?)\s*\Z", re.IGNORECASE)
_DURATION_EXPECTED = "expected a duration such as '90d', '12h', '30m' or '2w'"


def parse_duration(text: str) -> timedelta:
    """``"90d"``, ``"90 days"``, ``"12h"``, ``"1h30m"``, ``"2 weeks"`` → timedelta. Raises ValueError."""
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"{_DURATION_EXPECTED}, got: {text!r}")
    seconds = sum(int(value) * _UNIT_SECONDS[unit] for unit, value in match.groupdict().items() if value)
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{_DURATION_EXPECTED} (at most 999999999 days), got: {text!r}") from None


def parse_delay(text: str) -> Delay:
    """:func:`parse_duration`'s forms, plus ``"2 business days"``, ``"1 business day"``, ``"3bd"``."""
    match = _BUSINESS_RE.match(text) if isinstance(text, str) else None
    if match is not None:
        return BusinessDays(int(match["n"]))
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(
            f"expected a delay such as '90d', '12h', '2w' or '2 business days', got: {text!r}"
        ) from None


def format_duration(delta: timedelta) -> str:
    """The shortest string :func:`parse_duration` reads back as ``delta`` (``"1h30m"``, ``"0s"``).

    Raises ValueError for negative or sub-second durations, which the config cannot express.
    """
    if delta < timedelta(0) or delta.microseconds:
        raise ValueError(f"duration must be a whole number of seconds >= 0, got: {delta!r}")
    remaining = int(delta.total_seconds())
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_delay(delay: Delay) -> str:
    """The string :func:`parse_delay` reads back as ``delay``."""
    if isinstance(delay, BusinessDays):
        return str(delay)
    return format_duration(delay)


@dataclass(frozen=True)
class TimeWindow:
    """A daily span of wall-clock time; ``start > end`` wraps midnight (``21:00-08:00``).

    ``start`` is inclusive and ``end`` exclusive. An empty (``start == end``) window is refused:
    it would be ambiguous between "never" and "always".
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time):
                raise ValueError(f"time window {name} must be a datetime.time, got: {value!r}")
        # Windows are wall-clock only; dropping tzinfo keeps comparisons from raising TypeError.
        object.__setattr__(self, "start", self.start.replace(tzinfo=None, fold=0))
        object.__setattr__(self, "end", self.end.replace(tzinfo=None, fold=0))
        if self.start == self.end:
            raise ValueError(f"time window must not be empty (start == end), got: {self}")

    @property
    def wraps_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, t: time) -> bool:
        """Whether the wall-clock time ``t`` (any tzinfo ignored) falls in the window."""
        t = t.replace(tzinfo=None, fold=0)
        if self.wraps_midnight:
            return t >= self.start or t < self.end
        return self.start <= t < self.end

    def __str__(self) -> str:
        return f"{_format_time(self.start)}-{_format_time(self.end)}"


def _format_time(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second or t.microsecond else "%H:%M")


_WINDOW_RE = re.compile(
    r"\A\s*(?P<h1>[0-9]{1,2}):(?P<m1>[0-9]{2})\s*[-–—]\s*(?P<h2>[0-9]{1,2}):(?P<m2>[0-9]{2})\s*\Z"
)
_WINDOW_EXPECTED = "expected a time window 'HH:MM-HH:MM' such as '09:00-17:00' or '21:00-08:00'"


def parse_window(text: str) -> TimeWindow:
    """``"09:00-17:00"``, ``"9:00 - 17:30"``, ``"21:00-08:00"`` (wraps), ``"18:00-24:00"``.

    Raises ValueError naming the value and what was expected.
    """
    match = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{_WINDOW_EXPECTED}, got: {text!r}")
    h1, m1, h2, m2 = (int(match[g]) for g in ("h1", "m1", "h2", "m2"))
    if h2 == 24 and m2 == 0:  # "…-24:00" is the common way to say "until midnight"
        h2 = 0
    if not (0 <= h1 <= 23 and 0 <= h2 <= 23 and m1 <= 59 and m2 <= 59):
        raise ValueError(f"{_WINDOW_EXPECTED}; hours 00–23, minutes 00–59, got: {text!r}")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"{_WINDOW_EXPECTED}; start and end must differ, got: {text!r}")
    return TimeWindow(time(h1, m1), time(h2, m2))
