"""The configuration file: one frozen typed model per TOML table, parsed and checked once, at load.

Unknown keys are errors (a typo must not be silently ignored). Every error names the file, the TOML
path, the bad value and what was expected. Connector tables (``[crm.<kind>]``,
``[channels.email.<kind>]``, ``[program.audience]``) are validated by the connector's own models.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import date, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nps_sync import registry
from nps_sync.durations import BusinessDays, TimeWindow, parse_delay, parse_duration, parse_window
from nps_sync.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LANGUAGES: tuple[Literal["en", "de"], ...] = ("en", "de")


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _delay(value: Any) -> Any:
    return parse_delay(value) if isinstance(value, str) else value


def _window(value: Any) -> Any:
    return parse_window(value) if isinstance(value, str) else value


def _zone(value: Any) -> Any:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an IANA time zone such as 'Europe/Berlin', got: {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"expected an IANA time zone such as 'Europe/Berlin' or 'America/New_York', got: {value!r}"
        ) from exc


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Delay = Annotated[timedelta | BusinessDays, BeforeValidator(_delay)]
Window = Annotated[TimeWindow, BeforeValidator(_window), PlainSerializer(str)]
Zone = Annotated[ZoneInfo, BeforeValidator(_zone), PlainSerializer(str)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class BusinessCalendarConfig(Frozen):
    work_days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = (
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
    )
    hours: Window = TimeWindow(time(9), time(17))
    holidays: tuple[date, ...] = ()

    @field_validator("hours")
    @classmethod
    def _no_wrap(cls, value: TimeWindow) -> TimeWindow:
        if value.end <= value.start:
            raise ValueError(f"business hours must not cross midnight, got: {value}")
        return value

    @field_validator("work_days")
    @classmethod
    def _some_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one work day is needed, got: []")
        return value


class LimitsConfig(Frozen):
    """``[daemon.limits]``: what one client IP may send to the public endpoints (nps_sync.limits)."""

    max_body_bytes: int = Field(default=65_536, ge=1_024)
    webhook_max_body_bytes: int = Field(default=5_000_000, ge=1_024)
    requests_per_minute: int = Field(default=120, ge=1)
    webhook_requests_per_minute: int = Field(default=6_000, ge=1)
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from nps_sync.limits import parse_networks

        parse_networks(value)
        return value


class DaemonConfig(Frozen):
    state_dir: Path = Path("state")
    database_url: str = ""
    public_url: str = "http://127.0.0.1:8080"
    listen: str = "127.0.0.1:8080"
    time_zone: Zone = Field(default_factory=lambda: ZoneInfo("UTC"))
    company_name: str = "Example Inc."
    playbooks: tuple[str, ...] = ("playbooks/*.toml",)
    signing_keys_secret: str = "NPS_SYNC_SIGNING_KEYS"  # noqa: S105 - the secret's name, not its value
    run_on_start: bool = True
    workers: int = Field(default=2, ge=1, le=32)
    #: 0: HTTP is served from a thread of the daemon; N: from N processes of their own.
    web_processes: int = Field(default=0, ge=0, le=16)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    survey_link_max_age: Duration = timedelta(days=60)
    unsubscribe_link_max_age: Duration = timedelta(days=400)
    account_window: Duration = timedelta(days=365)
    #: Account roll-ups are written once answers have paused this long …
    account_rollup_quiet: Duration = timedelta(seconds=0.1)
    #: … or at the latest this long after an account first needed one (a steady stream of answers).
    account_rollup_max_delay: Duration = timedelta(minutes=10)
    #: A playbook step waits at most this long for others to share its CRM task call.
    task_batch_wait: Duration = timedelta(seconds=1.5)
    business_calendar: BusinessCalendarConfig = BusinessCalendarConfig()
    limits: LimitsConfig = LimitsConfig()

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL such as 'https://nps.example.com', got: {value!r}")
        return value.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT such as '127.0.0.1:8080', got: {value!r}")
        return value

    @field_validator("account_rollup_quiet", "account_rollup_max_delay", "task_batch_wait")
    @classmethod
    def _positive_delay(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"{info.field_name} must be positive, got: {value}")
        return value

    @model_validator(mode="after")
    def _quiet_within_max_delay(self) -> DaemonConfig:
        if self.account_rollup_quiet > self.account_rollup_max_delay:
            raise ValueError(
                "account_rollup_quiet must not exceed account_rollup_max_delay, got: "
                f"{self.account_rollup_quiet} > {self.account_rollup_max_delay}"
            )
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ConnectorTable(Frozen):
    """``kind`` plus the connector's own sub-table named after the kind."""

    kind: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if isinstance(kind, str) and isinstance(data.get(kind), dict):
            data["options"] = data.pop(kind)
        return data


class CrmConfig(ConnectorTable):
    kind: str = "sandbox"


class EmailChannelConfig(ConnectorTable):
    kind: str = "outbox"
    from_address: str = "nps@example.com"
    from_name: str = ""
    reply_to: str = ""
    postal_address: str = ""
    unsubscribe_mailto: str = ""


class SmsChannelConfig(ConnectorTable):
    kind: str = "outbox"
    help_text: str = "Reply with a number from 0 to 10. Reply STOP to opt out."
    quiet_hours: Window = TimeWindow(time(8), time(21))


class ChannelsConfig(Frozen):
    email: EmailChannelConfig = Field(default_factory=lambda: EmailChannelConfig.model_validate({}))
    sms: SmsChannelConfig = Field(default_factory=lambda: SmsChannelConfig.model_validate({}))


class ReminderConfig(Frozen):
    count: int = Field(default=0, ge=0, le=5)
    after: Duration = timedelta(days=3)


class SurveyText(Frozen):
    """Survey wording for one language; empty strings fall back to the shipped text."""

    subject: str = ""
    intro: str = ""
    question: str = ""
    sms: str = ""
    follow_up_detractor: str = ""
    follow_up_passive: str = ""
    follow_up_promoter: str = ""
    thanks: str = ""
    reminder_subject: str = ""


class ProgramConfig(Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    enabled: bool = True
    channel: Literal["email", "sms", "email_then_sms"] = "email"
    schedule: str = "0 10 * * mon-fri"
    send_window: Window = TimeWindow(time(9), time(18))
    default_time_zone: Zone = Field(default_factory=lambda: ZoneInfo("UTC"))
    default_language: Literal["en", "de"] = "en"
    languages: tuple[Literal["en", "de"], ...] = LANGUAGES
    resurvey_after: Duration = timedelta(days=90)
    account_max: int = Field(default=0, ge=0)  # 0 = no account quota
    account_interval: Duration = timedelta(days=30)
    skip_open_callbacks: bool = True
    reminders: ReminderConfig = ReminderConfig()
    sample: float = Field(default=1.0, gt=0.0, le=1.0)
    drip_over: Duration = timedelta(0)
    sms_after: Duration = timedelta(days=2)
    extra_fields: tuple[str, ...] = ()
    audience: dict[str, Any] = Field(default_factory=dict)
    text: dict[Literal["en", "de"], SurveyText] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(
                f"expected a 5-field cron expression such as '0 10 * * mon-fri' ({exc}), got: {value!r}"
            ) from exc
        return value


#: Public-review sites: a link to one of these in a playbook message must not go only to happy
#: customers (review gating, see nps_sync.playbooks.review_gating).
DEFAULT_REVIEW_SITES = (
    "google.com/maps",
    "g.page",
    "search.google.com/local/writereview",
    "g2.com",
    "trustpilot.com",
    "capterra.com",
)


class PromoterTestimonialsConfig(Frozen):
    """``[testimonials]``: the testimonial page and the review-gating guard."""

    review_sites: tuple[str, ...] = DEFAULT_REVIEW_SITES

    @field_validator("review_sites")
    @classmethod
    def _sites(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}(/\S*)?", v)]
        if bad:
            raise ValueError(
                f"expected host names with an optional path such as 'g2.com' or 'google.com/maps' "
                f"(no scheme), got: {bad!r}"
            )
        return tuple(v.lower().rstrip("/") for v in value)


class DashboardConfig(Frozen):
    """``[dashboard]``: who may open /dashboard. With neither a password hash in the secret nor a
    trusted header it answers only to this machine (loopback), like the other admin pages."""

    #: The NAME of the secret holding the hash printed by ``nps-sync dashboard hash-password``.
    password_hash_secret: str = "NPS_SYNC_DASHBOARD_PASSWORD_HASH"  # noqa: S105 - a name, not a value
    #: A header set by an authenticating reverse proxy (e.g. "X-Forwarded-User"); honoured only on
    #: requests whose peer address is in ``trusted_proxies``.
    trusted_header: str = ""
    trusted_proxies: tuple[str, ...] = ()
    session_max_age: Duration = timedelta(hours=12)

    @field_validator("trusted_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9-]+", value):
            raise ValueError(f"expected an HTTP header name such as 'X-Forwarded-User', got: {value!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"expected IP addresses or networks such as '127.0.0.1' or '10.0.0.0/8', got: {item!r}"
                ) from exc
        return value

    @field_validator("session_max_age")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"session_max_age must be positive, got: {value}")
        return value

    @model_validator(mode="after")
    def _header_needs_proxies(self) -> DashboardConfig:
        if self.trusted_header and not self.trusted_proxies:
            raise ValueError(
                f"trusted_header {self.trusted_header!r} needs trusted_proxies (the proxy addresses "
                "allowed to set it), got: []"
            )
        return self


class Config(Frozen):
    daemon: DaemonConfig = DaemonConfig()
    dashboard: DashboardConfig = DashboardConfig()
    testimonials: PromoterTestimonialsConfig = PromoterTestimonialsConfig()
    crm: CrmConfig = Field(default_factory=lambda: CrmConfig.model_validate({}))
    channels: ChannelsConfig = ChannelsConfig()
    program: tuple[ProgramConfig, ...] = ()

    #: Where the file was read from (not a TOML key); relative paths resolve against its folder.
    source: Path = Field(default=Path("config.toml"), exclude=True)

    @field_validator("program")
    @classmethod
    def _unique_names(cls, value: tuple[ProgramConfig, ...]) -> tuple[ProgramConfig, ...]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"program names must be unique, got: {', '.join(map(repr, dupes))} more than once"
            )
        return value

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    @property
    def state_dir(self) -> Path:
        return (self.base_dir / self.daemon.state_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.daemon.database_url or f"sqlite:///{self.state_dir / 'nps-sync.db'}"

    def program_named(self, name: str) -> ProgramConfig:
        for program in self.program:
            if program.name == name:
                return program
        known = ", ".join(p.name for p in self.program) or "(none configured)"
        raise ConfigError(f"{self.source}: no [[program]] named {name!r}; configured: {known}")

    def playbook_paths(self) -> list[Path]:
        paths: list[Path] = []
        for pattern in self.daemon.playbooks:
            base = Path(pattern)
            if base.is_absolute():
                paths.extend(sorted(Path(base.anchor).glob(str(base.relative_to(base.anchor)))))
            else:
                paths.extend(sorted(self.base_dir.glob(pattern)))
        return paths


# --- loading and error messages ------------------------------------------------------------------


def _toml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [k for k in current.model_fields if k not in ("source", "options")]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_errors(
    exc: ValidationError, *, source: Path, model: type[BaseModel], prefix: tuple[int | str, ...] = ()
) -> list[str]:
    """Turn pydantic errors into one line each: file: TOML path: what was wrong (got value)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _toml_path(prefix + loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{source}: {path}: unknown key{hint}")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        if "got:" in msg or isinstance(got, dict):
            lines.append(f"{source}: {path}: {msg}")
        else:
            lines.append(f"{source}: {path}: {msg} (got {got!r})")
    return lines


def parse(data: Mapping[str, Any], *, source: Path) -> Config:
    """Validate a parsed TOML document, including connector tables. Raises ConfigError."""
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = format_errors(exc, source=source, model=Config)
        raise ConfigError("\n".join(problems), problems=problems) from exc
    problems = validate_connectors(config)
    if problems:
        raise ConfigError("\n".join(problems), problems=problems)
    return config


def validate_connectors(config: Config) -> list[str]:
    """Check each connector's own table and each program's audience against the connector models."""
    problems: list[str] = []
    src = config.source
    tables: list[tuple[str, ConnectorTable, str]] = [
        ("crm", config.crm, "crm"),
        ("channels.email", config.channels.email, "channel"),
        ("channels.sms", config.channels.sms, "channel"),
    ]
    for path, table, role in tables:
        try:
            spec = registry.get(table.kind, role=role, path=f"{src}: {path}.kind")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if role == "channel":
            kind = path.rsplit(".", 1)[1]
            if kind not in spec.kinds:
                problems.append(
                    f"{src}: {path}.kind: {table.kind!r} cannot send {kind}; "
                    f"it sends: {', '.join(spec.kinds)}"
                )
                continue
        try:
            spec.options.model_validate(table.options)
        except ValidationError as exc:
            problems += format_errors(
                exc, source=src, model=spec.options, prefix=(*path.split("."), table.kind)
            )
        if role == "crm" and spec.audience is not None:
            for i, program in enumerate(config.program):
                try:
                    spec.audience.model_validate(program.audience)
                except ValidationError as exc:
                    problems += format_errors(
                        exc, source=src, model=spec.audience, prefix=("program", i, "audience")
                    )
    return problems


def load(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError naming the file on any problem."""
    source = Path(path).absolute()
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse(data, source=source)


def connector_options(table: ConnectorTable, role: str, path: str) -> tuple[Any, BaseModel]:
    """The connector spec and its validated options for a table that passed ``parse``."""
    spec = registry.get(table.kind, role=role, path=path)
    return spec, spec.options.model_validate(table.options)
