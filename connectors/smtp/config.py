"""Options of the ``[channels.email.smtp]`` table.

The common ``[channels.email]`` keys (``kind``, ``from_address``, ``from_name``, ``reply_to``,
``postal_address``) belong to the core and are not repeated here. The password is a secret *name*
resolved through ``ConnectorContext.secrets``; the config file never holds it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

from nps_sync.connectors.smtp.mapping import DEFAULT_PORTS, is_loopback

Security = Literal["starttls", "tls", "none"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$")


class SmtpOptions(BaseModel):
    """``[channels.email.smtp]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The relay's host name (it must match the relay's certificate).
    host: str = Field(min_length=1)
    #: Defaults to 587 (submission with STARTTLS), 465 for ``security = "tls"``, 25 for ``"none"``.
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ``starttls`` (upgrade after connecting), ``tls`` (implicit TLS, port 465) or ``none``
    #: (plain text: only for a relay on this machine, such as a local Postfix).
    security: Security = "starttls"
    #: Account to log in with; leave unset for a relay that accepts this host without AUTH.
    username: str | None = None
    #: Name of the secret holding the password (env var or ``$CREDENTIALS_DIRECTORY`` file).
    password_secret: str = "SMTP_PASSWORD"  # noqa: S105 (a secret's name, not its value)
    #: Seconds to wait for the relay on each command before giving up (``30``, ``"30s"``, ``"1m"``).
    timeout: float = 30.0
    #: PEM file with the CA (or self-signed certificate) of a private relay, trusted in addition
    #: to the system's certificate store.
    ca_file: FilePath | None = None
    #: Messages sent over one connection before reconnecting (relays limit this, Postfix at 100).
    max_per_connection: int = Field(default=50, ge=1, le=1000)
    #: Envelope sender (``MAIL FROM``, where bounces go); defaults to the From address.
    envelope_from: str | None = None
    #: Name announced in EHLO; defaults to this machine's fully qualified name.
    helo_name: str | None = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(f"timeout must be seconds or a duration like '30s', got: {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * (60 if match.group(2) == "m" else 1)
        else:
            raise ValueError(f"timeout must be seconds or a duration like '30s', got: {value!r}")
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got: {value!r}")
        return seconds

    @field_validator("envelope_from")
    @classmethod
    def _envelope_from(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
            raise ValueError(f"envelope_from must be a bare address like bounces@example.com, got: {value!r}")
        return value

    @model_validator(mode="after")
    def _plain_text_only_on_loopback(self) -> SmtpOptions:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                f'security = "none" sends mail and the password in clear text, so it is only allowed '
                f"for a relay on this machine (127.0.0.1, ::1 or localhost), got host: {self.host!r}; "
                f'use security = "starttls" (port 587) or "tls" (port 465)'
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]
