"""The ``[crm.salesforce]`` options and the ``[program.audience]`` table of a Salesforce program.

Secrets are never here: the options hold the *names* under which ``ConnectorContext.secrets`` finds
them (an environment variable, or a file in ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nps_sync.durations import parse_duration

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_API_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


class ContactFields(BaseModel):
    """Logical write-back name → Contact field API name (``[crm.salesforce.contact_fields]``)."""

    model_config = _FROZEN

    score: str = Field(default="NPS_Score__c", pattern=_API_NAME)
    category: str = Field(default="NPS_Category__c", pattern=_API_NAME)
    comment: str = Field(default="NPS_Comment__c", pattern=_API_NAME)
    responded_at: str = Field(default="NPS_Responded_At__c", pattern=_API_NAME)
    surveyed_at: str = Field(default="NPS_Surveyed_At__c", pattern=_API_NAME)
    sms_opt_out: str = Field(default="NPS_SMS_Opt_Out__c", pattern=_API_NAME)
    email_opt_out: str = Field(default="HasOptedOutOfEmail", pattern=_API_NAME)


class AccountFields(BaseModel):
    """Account roll-up fields (``[crm.salesforce.account_fields]``); an empty name is not written."""

    model_config = _FROZEN

    nps: str = Field(default="NPS_Score__c", pattern=_API_NAME)
    responses: str = Field(default="NPS_Responses__c", pattern=_API_NAME)
    promoters: str = Field(default="", pattern=r"^$|" + _API_NAME)
    passives: str = Field(default="", pattern=r"^$|" + _API_NAME)
    detractors: str = Field(default="", pattern=r"^$|" + _API_NAME)


class SalesforceOptions(BaseModel):
    """``[crm.salesforce]``."""

    model_config = _FROZEN

    #: jwt (server-to-server, recommended) | client_credentials | password (trials: user + password +
    #: security token through the SOAP login).
    auth: Literal["jwt", "client_credentials", "password"] = "jwt"
    #: The integration user's Salesforce username (jwt and password flows).
    username: str | None = None
    #: Login host prefix: "login" (production), "test" (sandboxes) or a My Domain such as
    #: "acme.my" / "acme--uat.sandbox.my" (required for client_credentials).
    domain: str | None = None
    #: Your My Domain URL (https://acme.my.salesforce.com); another way to give ``domain``.
    instance_url: str | None = Field(default=None, pattern=r"^https://[A-Za-z0-9.-]+\.salesforce\.com/?$")
    #: Shortcut for domain = "test" when no My Domain is given.
    sandbox: bool = False
    api_version: str = Field(default="59.0", pattern=r"^\d{2,3}\.0$")

    consumer_key_secret: str = "SALESFORCE_CONSUMER_KEY"  # noqa: S105 - the name of a secret, not its value
    consumer_secret_secret: str = "SALESFORCE_CONSUMER_SECRET"  # noqa: S105 - the name of a secret, not its value
    #: The value is the PEM private key itself or the path of a PEM file.
    private_key_secret: str = "SALESFORCE_PRIVATE_KEY"  # noqa: S105 - the name of a secret, not its value
    password_secret: str = "SALESFORCE_PASSWORD"  # noqa: S105 - the name of a secret, not its value
    security_token_secret: str = "SALESFORCE_SECURITY_TOKEN"  # noqa: S105 - the name of a secret, not its value

    #: For tests and proxies only: send every https request the SDK makes to this http(s) base URL.
    transport_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    timeout_seconds: float = Field(default=120.0, gt=0)

    contact_fields: ContactFields = ContactFields()
    account_fields: AccountFields = AccountFields()
    #: Read-only Contact fields; "" means the org has none (the value is then always None).
    locale_field: str = Field(default="NPS_Locale__c", pattern=r"^$|" + _API_NAME)
    time_zone_field: str = Field(default="NPS_Time_Zone__c", pattern=r"^$|" + _API_NAME)
    task_key_field: str = Field(default="NPS_Task_Key__c", pattern=_API_NAME)

    #: Audiences larger than this are read through Bulk API 2.0 instead of query/queryMore.
    bulk_query_threshold: int = Field(default=10_000, ge=0)
    #: Write-backs larger than this go through a Bulk API 2.0 ingest job instead of Collections.
    bulk_write_threshold: int = Field(default=10_000, ge=0)
    bulk_page_size: int = Field(default=50_000, ge=1, le=250_000)
    bulk_poll_seconds: float = Field(default=2.0, gt=0)

    #: Seconds a user (a task owner, a manager) read from Salesforce is kept before it is read again
    #: (a day: a wave's answers arrive over hours). An id not read yet is read when first needed.
    owner_cache_seconds: float = Field(default=86_400.0, ge=0)

    #: Stop starting new work once this share of the org's daily API allowance is used.
    limit_share: float = Field(default=0.9, gt=0, le=1)
    #: How long to pause after REQUEST_LIMIT_EXCEEDED, or once ``limit_share`` is reached.
    limit_pause: timedelta = timedelta(hours=1)

    @field_validator("limit_pause", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @property
    def login_domain(self) -> str:
        if self.domain:
            return self.domain
        if self.instance_url:
            host = self.instance_url.removeprefix("https://").rstrip("/")
            return host.removesuffix(".salesforce.com")
        return "test" if self.sandbox else "login"

    @model_validator(mode="after")
    def _check_flow(self) -> SalesforceOptions:
        if self.domain and self.instance_url:
            raise ValueError(
                f"give domain or instance_url, not both (got domain={self.domain!r}, "
                f"instance_url={self.instance_url!r})"
            )
        if self.auth in ("jwt", "password") and not self.username:
            raise ValueError(f"auth = {self.auth!r} needs username (the integration user's Salesforce login)")
        if self.auth == "client_credentials" and self.login_domain in ("login", "test"):
            raise ValueError(
                "auth = 'client_credentials' needs domain set to your My Domain (for example 'acme.my'), "
                f"got: {self.login_domain!r}"
            )
        return self


class SalesforceAudience(BaseModel):
    """A Salesforce program's ``[program.audience]`` table."""

    model_config = _FROZEN

    #: A SOQL WHERE fragment over Contact (relationship fields such as Account.Type allowed); "" = all.
    soql_where: str = ""
    #: Records per query page (Sforce-Query-Options batchSize, 200–2,000); default the server's 2,000.
    page_size: int | None = Field(default=None, ge=200, le=2000)

    @field_validator("soql_where")
    @classmethod
    def _fragment(cls, value: str) -> str:
        text = value.strip()
        unquoted = re.sub(r"'(?:\\.|[^'\\])*'", "''", text)
        if unquoted.replace("''", "").count("'"):
            raise ValueError(f"soql_where has an unterminated string literal, got: {value!r}")
        words = f" {' '.join(unquoted.lower().split())} "
        for word in (" select ", " from ", " order by ", " limit ", " group by "):
            if word in words:
                raise ValueError(
                    f"soql_where must be a WHERE condition only (no {word.strip().upper()}), got: {value!r}"
                )
        if unquoted.count("(") != unquoted.count(")"):
            raise ValueError(f"soql_where has unbalanced parentheses, got: {value!r}")
        return text
