"""Test-wide set-up: loopback only, and the connector backends that join the shared suites."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# Test traffic goes to 127.0.0.1 only: never through a proxy a developer's shell may have set.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = "127.0.0.1,localhost"
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

#: CRM backends the contract and end-to-end suites run over (a backend joins by having its fixtures).
CRM_CANDIDATES = ("sandbox", "salesforce", "hubspot")
#: Channel backends the end-to-end suite runs over.
CHANNEL_CANDIDATES = ("outbox", "smtp", "sendgrid", "twilio")


def _fixture_module(name: str) -> str:
    return f"tests.connectors.{name}.fixtures"


def _present(name: str) -> bool:
    return (Path(__file__).parent / "connectors" / name / "fixtures.py").is_file()


CRM_BACKENDS = [name for name in CRM_CANDIDATES if _present(name)]
CHANNEL_BACKENDS = [name for name in CHANNEL_CANDIDATES if _present(name)]

pytest_plugins = [
    "tests.fixtures",
    *(_fixture_module(name) for name in (*CRM_BACKENDS, *CHANNEL_BACKENDS)),
]


@pytest.fixture(autouse=True)
def _restore_structlog_config() -> Iterator[None]:
    """CLI commands configure logging for their process; inside the test process that would leak
    into later tests, so every test gets the configuration it started with back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
