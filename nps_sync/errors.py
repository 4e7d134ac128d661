"""The project's exceptions: one root, and below it the kinds that drive behaviour.

- ``ConfigError``: bad config or playbook; start-up stops, a reload is refused.
- ``ConnectorUnavailable``: transient (network, 5xx, rate limit); back off and retry later.
- ``RateLimited``: a ``ConnectorUnavailable`` that knows when to try again.
- ``AuthFailed``: credentials refused; the connector is disabled loudly until ops act.
- ``PermanentError``: the provider refused this one request for good (validation); never retried.
- ``AmbiguousOutcome``: the request may or may not have taken effect (reset after send); the caller
  must reconcile, never blindly repeat it.
- ``PlaybookError``: a playbook step could not run.
"""

from __future__ import annotations


class NpsSyncError(Exception):
    """Root of every error nps-sync raises on purpose."""


class ConfigError(NpsSyncError):
    """A config or playbook file is invalid. The message names file, TOML path, value and expectation."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message)


class ConnectorError(NpsSyncError):
    """Something went wrong talking to a CRM or a channel provider."""

    def __init__(self, message: str, *, connector: str = "", status: int | None = None) -> None:
        self.connector = connector
        self.status = status
        super().__init__(message)


class ConnectorUnavailable(ConnectorError):
    """Transient: network failure, 5xx, timeout. Retry with backoff."""


class RateLimited(ConnectorUnavailable):
    """The provider asked us to slow down; ``retry_after`` is seconds to wait (None if unknown)."""

    def __init__(
        self,
        message: str,
        *,
        connector: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, connector=connector, status=status)


class AuthFailed(ConnectorError):
    """Credentials were refused. Disable the connector and tell ops; retrying will not help."""


class PermanentError(ConnectorError):
    """The provider rejected this request for good (bad field, validation rule). Do not retry."""


class AmbiguousOutcome(ConnectorError):
    """The request was sent but no answer came back: it may have taken effect. Reconcile first."""


class PlaybookError(NpsSyncError):
    """A playbook step could not be executed."""


class TokenError(NpsSyncError):
    """A survey, unsubscribe or testimonial token is tampered, expired or foreign."""
