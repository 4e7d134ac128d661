"""Salesforce CRM connector (simple-salesforce): audience by SOQL, write-back, tasks, roll-ups."""

from __future__ import annotations

from nps_sync.abc import ConnectorSpec
from nps_sync.connectors.salesforce.config import SalesforceAudience, SalesforceOptions
from nps_sync.connectors.salesforce.connector import SalesforceCRM, build

CONNECTOR = ConnectorSpec(
    name="salesforce",
    role="crm",
    kinds=(),
    options=SalesforceOptions,
    factory=build,
    audience=SalesforceAudience,
)

__all__ = ["CONNECTOR", "SalesforceCRM", "SalesforceOptions"]
