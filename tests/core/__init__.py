"""Tests of the core (config, waves, scheduler, rendering, tokens, CLI) against a real SQLite or
PostgreSQL store, the real sandbox CRM and the real outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store.db import Store
from tests.e2e.daemon import merge, toml_dumps

REPO = Path(__file__).resolve().parents[2]
#: A window that is open all day long (an empty "00:00-24:00" window is refused as ambiguous).
ALL_DAY = "00:00-23:59"


def program(name: str = "p", **options: Any) -> dict[str, Any]:
    """A [[program]] table: open all day in UTC, no reminders, unless ``options`` say otherwise."""
    table: dict[str, Any] = {
        "name": name,
        "send_window": ALL_DAY,
        "default_time_zone": "UTC",
        "reminders": {"count": 0},
        "account_max": 0,
    }
    return merge(table, options)


def config_data(*programs: dict[str, Any], **tables: Any) -> dict[str, Any]:
    """A whole config document: state in the test's folder, the shipped playbooks, outbox channels."""
    data: dict[str, Any] = {
        "daemon": {
            "state_dir": "state",
            "public_url": "https://nps.example.com",
            "time_zone": "Europe/Berlin",
            "playbooks": [f"{REPO / 'playbooks'}/*.toml"],
            "company_name": "Example Inc.",
        },
        "channels": {"email": {"kind": "outbox", "postal_address": "Example Inc., 1 Main St, Springfield"}},
        "program": list(programs),
    }
    return merge(data, tables)


def write_config(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "config.toml"
    path.write_text(toml_dumps(data))
    return path


def make_runtime(folder: Path, store: Store, data: dict[str, Any]) -> Runtime:
    """A Runtime on ``store`` (the sandbox CRM seeds itself into it) with no secrets in the environment."""
    cfg = config_mod.parse(data, source=folder / "config.toml")
    return Runtime(cfg, store=store, environ={})
