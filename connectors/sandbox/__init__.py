"""The sandbox CRM: the embedded default CRM, kept in the state database and seeded from CSV."""

from __future__ import annotations

from nps_sync.abc import ConnectorContext, ConnectorSpec

from .config import SandboxAudience, SandboxOptions
from .connector import SandboxCrm


def create(options: SandboxOptions, ctx: ConnectorContext) -> SandboxCrm:
    crm = SandboxCrm(options, ctx)
    crm.ensure_seeded()
    return crm


CONNECTOR = ConnectorSpec(
    name="sandbox",
    role="crm",
    kinds=(),
    options=SandboxOptions,
    factory=create,
    audience=SandboxAudience,
)

__all__ = ["CONNECTOR", "SandboxCrm"]
