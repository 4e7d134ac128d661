"""Options of the HubSpot CRM (``[crm.hubspot]``) and its audience filter (``[program.audience]``)."""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nps_sync.connectors.hubspot.mapping import (
    DEFAULT_BASE_URL,
    LIST_PAGE_LIMIT,
    MAX_FILTER_GROUPS,
    MAX_FILTERS_PER_GROUP,
    MAX_FILTERS_TOTAL,
    SEARCH_PAGE_LIMIT,
)

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Operator = Literal[
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
    "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
]  # fmt: skip


class ContactProperties(BaseModel):
    """Logical name → HubSpot contact property. The NPS ones are created by ``nps-sync setup hubspot``."""

    model_config = _FROZEN

    score: str = "nps_score"
    category: str = "nps_category"
    comment: str = "nps_comment"
    responded_at: str = "nps_responded_at"
    surveyed_at: str = "nps_surveyed_at"
    #: Read as the SMS opt-out (contacts with it set come back with ``sms_opt_out``) and written on STOP.
    sms_opt_out: str = "nps_sms_opt_out"
    #: Written when someone unsubscribes from the survey e-mails, and read as an opt-out. HubSpot's
    #: own ``hs_email_optout`` (always honoured when reading) cannot be written through the API.
    email_opt_out: str = "nps_email_opt_out"


class CompanyProperties(BaseModel):
    """Logical name → HubSpot company property for the account roll-up."""

    model_config = _FROZEN

    nps: str = "nps_account_score"
    responses: str = "nps_account_responses"


class HubSpotOptions(BaseModel):
    """``[crm.hubspot]``. Secrets are named here and resolved through ``ConnectorContext.secrets``."""

    model_config = _FROZEN

    #: Name of the env var / credential file holding the private app access token.
    access_token_secret: str = "HUBSPOT_ACCESS_TOKEN"  # noqa: S105 - a secret's name, not its value
    #: API root; change only for a proxy or the test emulator.
    base_url: str = DEFAULT_BASE_URL
    #: The account's 10-second allowance per app: 100 (Free/Starter), 190 (Professional/Enterprise).
    rate_limit_calls: int = Field(default=100, ge=1)
    rate_limit_window_seconds: float = Field(default=10.0, gt=0)
    #: Search requests per second (HubSpot documents 5 per account; older tokens 4).
    search_per_second: int = Field(default=4, ge=1)
    #: Attempts per call for refusals that are safe to repeat (429, 5xx on reads, refused connections).
    max_attempts: int = Field(default=5, ge=1, le=20)
    #: First backoff wait; doubles per attempt, capped at ``retry_max_wait_seconds``.
    retry_wait_seconds: float = Field(default=1.0, ge=0)
    retry_max_wait_seconds: float = Field(default=20.0, ge=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: Warn once when the portal's daily allowance left falls below this share (0–1).
    daily_warn_fraction: float = Field(default=0.1, ge=0, le=1)
    #: Read an audience's pages in a process of its own (see ``reader``): the next page is asked
    #: for as soon as the last one's cursor is known, whatever the daemon's threads are doing.
    #: false reads them in a thread of the daemon (one process fewer, slower waves).
    read_pages_in_process: bool = True
    contact_properties: ContactProperties = Field(default_factory=ContactProperties)
    company_properties: CompanyProperties = Field(default_factory=CompanyProperties)
    #: Contact property with the contact's time zone (HubSpot's ``hs_timezone`` by default).
    time_zone_property: str = "hs_timezone"
    #: Task property carrying nps-sync's task key, so a retry finds the task instead of duplicating it.
    task_key_property: str = "nps_task_key"
    #: Local time (in the daemon's time zone) a task is due on its due date.
    task_due_time: time = time(17, 0)
    #: Internal name and label of the property group ``setup`` creates the NPS properties in.
    property_group: str = "nps"
    property_group_label: str = "NPS"
    #: HubSpot's owners API has no managers: owner email → manager email, for escalations.
    managers: dict[str, str] = Field(default_factory=dict)
    #: Seconds the owner list is kept before it is read again.
    owner_cache_seconds: float = Field(default=600.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"base_url must start with https:// or http://, got: {value!r}")
        return value.rstrip("/")

    @field_validator("managers")
    @classmethod
    def _managers(cls, value: dict[str, str]) -> dict[str, str]:
        for owner, manager in value.items():
            if "@" not in owner or "@" not in manager:
                raise ValueError(f"managers maps owner email to manager email, got: {owner!r} = {manager!r}")
        return {k.lower(): v.lower() for k, v in value.items()}


class SearchFilter(BaseModel):
    """One condition on a contact property (HubSpot search filter)."""

    model_config = _FROZEN

    property: str = Field(min_length=1)
    operator: Operator = "EQ"
    value: str | None = None
    values: tuple[str, ...] | None = None
    high_value: str | None = None

    @model_validator(mode="after")
    def _operands(self) -> SearchFilter:
        needs_values = self.operator in ("IN", "NOT_IN")
        needs_none = self.operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY")
        if needs_values and not self.values:
            raise ValueError(f"operator {self.operator} needs 'values' (a list), on {self.property!r}")
        if self.operator == "BETWEEN" and (self.value is None or self.high_value is None):
            raise ValueError(f"operator BETWEEN needs 'value' and 'high_value', on {self.property!r}")
        if not needs_values and not needs_none and self.value is None:
            raise ValueError(f"operator {self.operator} needs 'value', on {self.property!r}")
        return self


class FilterGroup(BaseModel):
    model_config = _FROZEN

    filters: tuple[SearchFilter, ...] = Field(min_length=1)


class HubSpotAudience(BaseModel):
    """``[program.audience]`` for HubSpot: exactly one of

    - ``list_id``: members of a HubSpot list (its ILS id), read with list memberships + batch reads;
    - ``filter_groups``: a search (groups ORed, filters in a group ANDed) on contact properties;
    - ``all_contacts = true``: every contact, through the plain list endpoint (cheapest per contact).
    """

    model_config = _FROZEN

    list_id: str | None = None
    filter_groups: tuple[FilterGroup, ...] | None = None
    all_contacts: bool = False
    page_size: int | None = Field(default=None, ge=1, le=SEARCH_PAGE_LIMIT)

    @model_validator(mode="after")
    def _one_source(self) -> HubSpotAudience:
        chosen = [
            name
            for name, set_ in (
                ("list_id", self.list_id is not None),
                ("filter_groups", self.filter_groups is not None),
                ("all_contacts", self.all_contacts),
            )
            if set_
        ]
        if len(chosen) != 1:
            raise ValueError(
                "a HubSpot audience needs exactly one of list_id, filter_groups or all_contacts = true, "
                f"got: {', '.join(chosen) or 'none'}"
            )
        if self.list_id is not None and not self.list_id.isdigit():
            raise ValueError(f"list_id must be the list's numeric ILS id, got: {self.list_id!r}")
        groups = self.filter_groups or ()
        if self.filter_groups is not None and not groups:
            raise ValueError("filter_groups must hold at least one group")
        # One filter per group is kept free for the hs_object_id partition of large audiences.
        if len(groups) > MAX_FILTER_GROUPS:
            raise ValueError(f"filter_groups allows at most {MAX_FILTER_GROUPS} groups, got: {len(groups)}")
        for n, group in enumerate(groups):
            if len(group.filters) > MAX_FILTERS_PER_GROUP - 1:
                raise ValueError(
                    f"filter_groups[{n}] allows at most {MAX_FILTERS_PER_GROUP - 1} filters, "
                    f"got: {len(group.filters)}"
                )
        total = sum(len(g.filters) for g in groups) + len(groups)
        if total > MAX_FILTERS_TOTAL:
            raise ValueError(
                f"filter_groups allows at most {MAX_FILTERS_TOTAL - len(groups)} filters in all, "
                f"got: {total - len(groups)}"
            )
        return self

    def page_limit(self, requested: int) -> int:
        """The page size to ask HubSpot for: this table's, else the program's, within the API cap."""
        cap = SEARCH_PAGE_LIMIT if self.filter_groups is not None else LIST_PAGE_LIMIT
        return max(1, min(self.page_size or requested, cap))
