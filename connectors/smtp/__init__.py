"""Email through the company's own SMTP relay (Postfix, Office 365, Google Workspace, …)."""

from __future__ import annotations

from nps_sync.abc import ConnectorSpec
from nps_sync.connectors.smtp.config import SmtpOptions
from nps_sync.connectors.smtp.connector import SmtpChannel, build

CONNECTOR = ConnectorSpec(name="smtp", role="channel", kinds=("email",), options=SmtpOptions, factory=build)

__all__ = ["CONNECTOR", "SmtpChannel", "SmtpOptions"]
