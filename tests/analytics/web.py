"""The daemon's web app with the seeded data set, served by a real uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store.db import Store
from tests.analytics.seed import PROGRAM, seed
from tests.harness import Server

KEYS = "0123456789abcdef" * 4


def config_data(dashboard: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "daemon": {
            "state_dir": "state",
            "time_zone": "UTC",
            "playbooks": [],
            "public_url": "http://127.0.0.1:1",
        },
        "program": [{"name": PROGRAM, "default_time_zone": "UTC"}],
    }
    if dashboard is not None:
        data["dashboard"] = dashboard
    return data


@contextmanager
def serve(
    folder: Path,
    *,
    dashboard: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    seeder: Callable[[Store], object] = seed,
) -> Iterator[str]:
    """Seed a store in ``folder``, start the web app on it, yield its base URL."""
    cfg = config_mod.parse(config_data(dashboard), source=folder / "config.toml")
    store = Store(cfg.database_url)
    store.upgrade()
    seeder(store)
    rt = Runtime(cfg, store=store, environ={"NPS_SYNC_SIGNING_KEYS": KEYS, **(env or {})})
    server = Server(rt).start()
    try:
        yield server.url
    finally:
        server.stop()
        rt.close()
