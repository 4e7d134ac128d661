"""Options of the sandbox CRM (``[crm.sandbox]``) and its audience filter (``[program.audience]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SandboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Folder with owners.csv, accounts.csv and contacts.csv; empty = the example data shipped inside.
    seed: str = ""
    #: Wipe the sandbox and load the seed again at every start (a demo reset). Responses stay.
    reseed: bool = False


class SandboxAudience(BaseModel):
    """Which sandbox contacts a program surveys: equality (or list membership) on contact columns,
    contact custom fields, or account fields written ``account.<name>``. Empty = everybody."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    where: dict[str, str | list[str]] = Field(default_factory=dict)
    page_size: int = Field(default=200, ge=1, le=2000)
