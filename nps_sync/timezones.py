"""Where (in time) a contact is, and when an SMS may reach them; phone and email normalisation.

TCPA (47 CFR §64.1200(c)(1)) forbids messages before 08:00 or after 21:00 at the recipient's
location. When the location is uncertain (a phone number whose region spans zones, a country with
several zones) every candidate zone must be inside the window: :func:`in_window` is the
intersection, and :func:`next_window_start` finds its next opening, possibly none.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import email_validator
import phonenumbers
import structlog
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from phonenumbers import timezone as phone_timezone

from nps_sync.business_time import local_datetime
from nps_sync.durations import TimeWindow

__all__ = [
    "ResolvedZone",
    "country_code",
    "in_window",
    "next_window_start",
    "normalize_email",
    "normalize_phone",
    "resolve_zone",
    "zones_for_country",
]

log = structlog.get_logger("nps_sync.timezones")

ZoneSource = Literal["crm", "phone", "country", "default"]

# Common English names that are not spelled like iso3166.tab's entry ("Britain (UK)", …).
_COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US",
    "us": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "u.k.": "GB",
    "united kingdom": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "deutschland": "DE",
    "holland": "NL",
    "the netherlands": "NL",
    "schweiz": "CH",
    "suisse": "CH",
    "österreich": "AT",
    "espana": "ES",
    "españa": "ES",
    "south korea": "KR",
    "korea": "KR",
    "russia": "RU",
    "uae": "AE",
    "czech republic": "CZ",
    "czechia": "CZ",
    "vietnam": "VN",
    "ivory coast": "CI",
}


@dataclass(frozen=True)
class ResolvedZone:
    """Candidate zones for one contact; ``zones[0]`` is the one shown to people."""

    zones: tuple[ZoneInfo, ...]
    source: ZoneSource

    def __post_init__(self) -> None:
        if not self.zones:
            raise ValueError(f"a resolved zone needs at least one candidate zone (source {self.source})")

    @property
    def primary(self) -> ZoneInfo:
        return self.zones[0]

    @property
    def certain(self) -> bool:
        return len(self.zones) == 1


def resolve_zone(
    *, crm_zone: str | None, phone: str | None, country: str | None, default: ZoneInfo
) -> ResolvedZone:
    """The contact's candidate zones: CRM field, else phone number, else country, else ``default``.

    An invalid CRM zone name is logged and ignored. A national-format phone number is read in the
    contact's country when that is known.
    """
    if crm_zone and crm_zone.strip():
        zone = _crm_zone(crm_zone)
        if zone is not None:
            return ResolvedZone((zone,), "crm")
        _warn_invalid_zone(crm_zone)
    region = country_code(country)
    if phone:
        zones = _zones_for_phone(phone, region)
        if zones:
            return ResolvedZone(zones, "phone")
    if region is not None:
        zones = zones_for_country(region)
        if zones:
            return ResolvedZone(zones, "country")
    return ResolvedZone((default,), "default")


def country_code(country: str | None) -> str | None:
    """ISO 3166 alpha-2 code for a code (``"de"``) or a common English name (``"Germany"``, ``"UK"``)."""
    if not country or not country.strip():
        return None
    key = " ".join(country.strip().casefold().split())
    if len(key) == 2 and key.upper() in _zone_tab():
        return key.upper()
    return _COUNTRY_ALIASES.get(key) or _country_names().get(key)


def zones_for_country(code: str) -> tuple[ZoneInfo, ...]:
    """The zones zone.tab lists for an ISO alpha-2 code, most populous region first; () if unknown."""
    names = _zone_tab().get(code.upper(), ())
    return tuple(z for z in (_zone_or_none(name) for name in names) if z is not None)


def in_window(at: datetime, zones: Sequence[ZoneInfo], window: TimeWindow) -> bool:
    """True only when the local time of ``at`` is inside ``window`` in every one of ``zones``."""
    _check_args(at, zones)
    return all(window.contains(at.astimezone(zone).time()) for zone in zones)


def next_window_start(
    at: datetime,
    zones: Sequence[ZoneInfo],
    window: TimeWindow,
    *,
    horizon: timedelta = timedelta(days=8),
) -> datetime | None:
    """The earliest instant ``>= at`` (and ``<= at + horizon``) for which :func:`in_window` holds.

    Returns ``at`` itself when already inside, ``None`` when the zones never overlap within the
    horizon (Guam and Hawaii for a 09:00–10:00 window; UTC, UTC+8 and UTC−8 for 08:00–21:00).
    The result keeps ``at``'s tzinfo.

    Leapfrog search: while some zone is outside its window at ``t``, no instant before that zone's
    next entry can qualify, so ``t`` jumps to the latest such entry among the zones outside. A zone
    enters its window only where its wall clock reaches ``window.start`` (any date, either fold) or
    a UTC-offset change makes it jump inside; :func:`_next_entry` checks exactly those instants.
    """
    _check_args(at, zones)
    t = at.astimezone(timezone.utc)
    end = t + horizon
    while t <= end:
        outside = [zone for zone in zones if not window.contains(t.astimezone(zone).time())]
        if not outside:
            return at if t == at else t.astimezone(at.tzinfo)
        t = max(_next_entry(zone, window, t) for zone in outside)
    return None


_ENTRY_SPAN = timedelta(hours=24)


def _next_entry(zone: ZoneInfo, window: TimeWindow, t: datetime) -> datetime:
    """The first instant after ``t`` (outside the window in ``zone``) when ``zone`` is inside it.

    Looks one day ahead; if the zone stays outside all that time (a window inside a DST gap),
    returns ``t`` + one day, still a lower bound for the caller.
    """
    limit = t + _ENTRY_SPAN
    candidates = {c for c in _openings(zone, window, t, limit) if t < c <= limit}
    candidates.update(_offset_changes(zone, t, limit))
    for candidate in sorted(candidates):
        if t < candidate and window.contains(candidate.astimezone(zone).time()):
            return candidate
    return limit


#: Normalised addresses remembered (pure functions of their input): a wave asks about each
#: contact's address twice, and parsing one costs tens of microseconds.
_ADDRESS_CACHE = 16384


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def normalize_phone(raw: str | None, *, default_region: str | None = None) -> str | None:
    """E.164 (``+4930123456``) for a valid number; ``None`` for empty, unparseable or invalid input."""
    if raw is None or not raw.strip():
        return None
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def normalize_email(raw: str | None) -> str | None:
    """email-validator's normalised form (domain lower-cased, IDNA), without DNS; ``None`` if invalid.

    The common address (a plain dot-atom before a single ``@``, letters, digits, dots and hyphens
    after it) takes a shorter path with the same verdicts: email-validator accepts such a local part
    as it is, so only the domain needs its checks, and a wave's contacts share a few domains.
    """
    if raw is None or not raw.strip():
        return None
    address = raw.strip()
    local, at, domain = address.partition("@")
    if at and _DOT_ATOM.match(local) and _PLAIN_DOMAIN.match(domain):
        checked = _email_domain(domain)
        if checked is None:
            return None
        normal_domain, ascii_domain = checked
        if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
            local = local.lower()
        normalized = f"{local}@{normal_domain}"
        # email-validator's length checks: as given, normalised, and with the IDNA ASCII domain.
        forms = (address, normalized, f"{local}@{ascii_domain}")
        if any(len(form.encode()) > EMAIL_MAX_LENGTH for form in forms):
            return None
        return normalized
    try:
        result = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return result.normalized


#: email-validator's own dot-atom (RFC 5322 ``atext``), and a domain without anything unusual.
_DOT_ATOM = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.\-]+\Z")


@functools.lru_cache(maxsize=1024)
def _email_domain(domain: str) -> tuple[str, str] | None:
    """The domain's normalised and ASCII forms as email-validator gives them, or None if it refuses
    the domain. Checked with a one-letter local part: the domain's checks do not depend on it, and
    a longer one only makes the length checks (done by the caller) stricter."""
    try:
        result = email_validator.validate_email(f"x@{domain}", check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return str(result.domain), str(result.ascii_domain)


def _check_args(at: datetime, zones: Sequence[ZoneInfo]) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"quiet-hours checks need a timezone-aware datetime, got naive: {at.isoformat()}")
    if not zones:
        raise ValueError("quiet-hours checks need at least one candidate zone, got none")


def _openings(zone: ZoneInfo, window: TimeWindow, begin: datetime, end: datetime) -> Iterable[datetime]:
    """Every instant in [begin, end] where ``zone``'s wall clock reads ``window.start``, and a few more.

    In a DST gap the reading never happens; :func:`local_datetime` then gives the jump, harmlessly.
    """
    day = begin.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        for fold in (0, 1):
            yield local_datetime(day, window.start, zone, fold=fold).astimezone(timezone.utc)
        day += timedelta(days=1)


# Real zones change offset at most a few times a year, never twice within hours of each other.
_SAMPLE_STEP = timedelta(hours=3)


def _offset_changes(zone: ZoneInfo, begin: datetime, end: datetime) -> Iterable[datetime]:
    """Instants (to the minute) in [begin, end] where ``zone``'s UTC offset changes."""
    left = begin.replace(second=0, microsecond=0)
    while left < end:
        right = min(left + _SAMPLE_STEP, end)
        if left.astimezone(zone).utcoffset() != right.astimezone(zone).utcoffset():
            yield _first_change(zone, left, right)
        left = right


def _first_change(zone: ZoneInfo, left: datetime, right: datetime) -> datetime:
    """The first whole minute after ``left`` (up to ``right``) whose offset differs from ``left``'s."""
    before = left.astimezone(zone).utcoffset()
    minutes = int((right - left) / timedelta(minutes=1)) + 1
    step = bisect.bisect_left(
        range(1, minutes + 1),
        True,
        key=lambda m: (left + timedelta(minutes=m)).astimezone(zone).utcoffset() != before,
    )
    return left + timedelta(minutes=step + 1)


def _zones_for_phone(phone: str, region: str | None) -> tuple[ZoneInfo, ...]:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return ()
    if not phonenumbers.is_possible_number(number):
        return ()
    names = phone_timezone.time_zones_for_number(number)
    zones = (_zone_or_none(name) for name in names if name != "Etc/Unknown")
    return _unique(z for z in zones if z is not None)


@functools.lru_cache(maxsize=1024)
def _warn_invalid_zone(value: str) -> None:
    # Once per distinct value: the same bad CRM field is met again on every wave.
    log.warning("timezones.crm_zone_invalid", value=value)


def _crm_zone(value: str) -> ZoneInfo | None:
    """A CRM field is free text: accept any IANA name, ignoring case, but nothing else.

    ``ZoneInfo`` alone would also open system paths such as ``right/UTC`` (leap-second clocks).
    """
    name = _iana_names().get(value.strip().casefold())
    return None if name is None else _zone_or_none(name)


def _unique(zones: Iterable[ZoneInfo]) -> tuple[ZoneInfo, ...]:
    return tuple(dict.fromkeys(zones))


def _zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a normalised relative key ("../x", "/etc/…"); OSError: a directory name.
        return None


@functools.cache
def _iana_names() -> dict[str, str]:
    # "localtime" is the host's zone and "Factory" a placeholder: neither locates a person.
    names = zoneinfo.available_timezones() - {"localtime", "Factory"}
    return {name.casefold(): name for name in names}


@functools.cache
def _zone_tab() -> dict[str, tuple[str, ...]]:
    text = (importlib.resources.files("tzdata") / "zoneinfo" / "zone.tab").read_text(encoding="utf-8")
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fields = line.split("\t")
            table.setdefault(fields[0], []).append(fields[2])
    return {code: tuple(names) for code, names in table.items()}


@functools.cache
def _country_names() -> dict[str, str]:
    """casefolded iso3166.tab name → code; "Britain (UK)" is also reachable as "britain"."""
    text = (importlib.resources.files("tzdata") / "zoneinfo" / "iso3166.tab").read_text(encoding="utf-8")
    names: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t", 1)
            name = name.strip().casefold()
            names[name] = code
            names.setdefault(name.split(" (")[0], code)
    return names
