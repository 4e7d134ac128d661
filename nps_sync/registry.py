"""Find connectors: built-in ones through a static table, plugins through entry points.

A plugin registers ``name = "package.module:CONNECTOR"`` in the entry-point group
``nps_sync.connectors``; ``CONNECTOR`` is a :class:`nps_sync.abc.ConnectorSpec`. A plugin that fails
to import is skipped with a warning, never a crash.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import structlog

from nps_sync.abc import ConnectorSpec
from nps_sync.errors import ConfigError

log = structlog.get_logger("nps_sync.registry")

BUILTIN: dict[str, str] = {
    "sandbox": "nps_sync.connectors.sandbox:CONNECTOR",
    "salesforce": "nps_sync.connectors.salesforce:CONNECTOR",
    "hubspot": "nps_sync.connectors.hubspot:CONNECTOR",
    "outbox": "nps_sync.connectors.outbox:CONNECTOR",
    "smtp": "nps_sync.connectors.smtp:CONNECTOR",
    "sendgrid": "nps_sync.connectors.sendgrid:CONNECTOR",
    "twilio": "nps_sync.connectors.twilio:CONNECTOR",
}

GROUP = "nps_sync.connectors"


def _load(target: str) -> ConnectorSpec:
    module_name, _, attr = target.partition(":")
    spec = getattr(importlib.import_module(module_name), attr)
    if not isinstance(spec, ConnectorSpec):
        raise TypeError(f"{target} is not a ConnectorSpec, got: {type(spec).__name__}")
    return spec


def available() -> dict[str, str]:
    """Every connector name with where it comes from (built-ins win over plugins of the same name)."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    found.update(BUILTIN)
    return found


def get(name: str, *, role: str, path: str) -> ConnectorSpec:
    """Return the connector ``name`` for ``role`` ("crm" or "channel").

    ``path`` is the TOML path of the ``kind`` key, for the error message.
    """
    targets = available()
    if name not in targets:
        raise ConfigError(
            f"{path}: unknown connector {name!r}; expected one of: {', '.join(sorted(targets))}"
        )
    try:
        spec = _load(targets[name])
    except Exception as exc:
        if name in BUILTIN:
            raise
        log.warning("connector.plugin_broken", connector=name, target=targets[name], error=str(exc))
        raise ConfigError(f"{path}: connector plugin {name!r} failed to load: {exc}") from exc
    if spec.role != role:
        raise ConfigError(f"{path}: {name!r} is a {spec.role} connector, not a {role} connector")
    return spec
