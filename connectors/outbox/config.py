"""Options of the outbox channel (``[channels.email.outbox]`` / ``[channels.sms.outbox]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class OutboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The sender shown on SMS in the outbox (email uses ``[channels.email] from_address``).
    sender: str = "+15550100"
