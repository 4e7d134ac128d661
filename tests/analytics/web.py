"""The daemon's web app with the seeded data set, served by a real uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store.db import Store
from nps_sync.web import create_app
from tests.analytics.seed import PROGRAM, seed

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


class Server:
    def __init__(self, rt: Runtime) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        # proxy_headers=False: the app sees the TCP peer, which a trusted-proxy check needs (the daemon
        # should serve the same way; uvicorn's default rewrites the peer from X-Forwarded-For).
        config = uvicorn.Config(
            create_app(rt),
            interface="asgi3",
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> Server:
        self._thread.start()
        for _ in range(1000):
            if self._server.started:
                return self
            time.sleep(0.01)
        raise RuntimeError("uvicorn did not start within 10 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


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
