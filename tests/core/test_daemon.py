"""The daemon as systemd runs it: a real ``nps-sync run`` subprocess, signals, sd_notify, the SQLite
lock, and a SIGKILL in the middle of sending."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.e2e.daemon import REPO, DaemonProcess, free_port, wait_for, write_config

SIGNING_ENV = {"NPS_SYNC_SIGNING_KEYS": "0123456789abcdef" * 4}
SECTIONS = ['[crm]\nkind = "sandbox"\n', '[channels.email]\nkind = "outbox"\n']


def always_open_window() -> str:
    """A 23-hour window whose closed hour is twelve hours from now (UTC recipients)."""
    gap = (datetime.now(timezone.utc).hour + 12) % 24
    return f"{(gap + 1) % 24:02d}:00-{gap:02d}:00"


def program(name: str = "nps", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "email",
        "schedule": "0 3 1 1 *",
        "send_window": always_open_window(),
        "default_time_zone": "UTC",
        **extra,
    }


def config(
    tmp_path: Path,
    port: int,
    *,
    programs: list[dict[str, Any]] | None = None,
    sandbox: dict[str, Any] | None = None,
    **daemon: Any,
) -> Path:
    return write_config(
        tmp_path / "config.toml",
        port=port,
        sections=SECTIONS,
        overrides={
            "daemon": {"run_on_start": False, **daemon},
            "crm": {"sandbox": sandbox or {}},
            "channels": {"email": {"postal_address": "Example Inc., 1 Main St"}},
            "program": programs if programs is not None else [program()],
        },
    )


def events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    found = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in events(daemon) if e.get("event") == event]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(env: dict[str, str] | None = None, **kwargs: Any) -> DaemonProcess:
        port = free_port()
        path = config(tmp_path, port, **kwargs)
        daemon = DaemonProcess(path, f"http://127.0.0.1:{port}", env={**SIGNING_ENV, **(env or {})})
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:  # a test that failed half-way must not leave a daemon behind
        daemon.stop(signal.SIGKILL, timeout=10)


def test_a_bad_config_exits_78_naming_the_file_and_the_toml_path(tmp_path: Path) -> None:
    path = config(tmp_path, free_port(), programs=[program(resurvey_after="ninety")])
    done = subprocess.run(
        [sys.executable, "-m", "nps_sync", "run", "--config", str(path)],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert 78 == done.returncode
    assert f"{path}: program[0].resurvey_after" in done.stderr
    assert "'ninety'" in done.stderr


def refusals(daemon: DaemonProcess, *, at_least: int) -> list[dict[str, Any]] | None:
    found = logged(daemon, "config.reload_refused")
    return found if len(found) >= at_least else None


def test_sighup_refuses_an_invalid_config_and_applies_a_valid_one(daemon_factory: Any) -> None:
    daemon: DaemonProcess = daemon_factory()
    assert daemon.proc is not None
    good = daemon.config_path.read_text()
    unreachable = free_port()  # nothing listens there: the new database cannot be opened
    bad = [
        (good + '\n[bogus]\nkey = "x"\n', "bogus"),
        (
            good.replace(
                "[daemon]\n",
                f'[daemon]\ndatabase_url = "postgresql+psycopg://nps@127.0.0.1:{unreachable}/nps"\n',
            ),
            "OperationalError",
        ),
    ]
    for n, (text, reason) in enumerate(bad, start=1):
        daemon.config_path.write_text(text)
        daemon.proc.send_signal(signal.SIGHUP)
        refused = wait_for(partial(refusals, daemon, at_least=n), what=f"config.reload_refused #{n}")
        assert str(daemon.config_path) == refused[-1]["file"]
        assert reason in refused[-1]["error"]
        assert 200 == httpx.get(f"{daemon.url}/healthz", timeout=5).status_code

    daemon.config_path.write_text(good.replace('name = "nps"', 'name = "nps-renamed"'))
    daemon.proc.send_signal(signal.SIGHUP)
    [reloaded] = wait_for(lambda: logged(daemon, "config.reloaded"), what="config.reloaded")
    assert ["nps-renamed"] == reloaded["programs"]
    assert 200 == httpx.get(f"{daemon.url}/healthz", timeout=5).status_code
    assert 0 == daemon.stop()


def test_a_second_daemon_on_the_same_sqlite_state_dir_is_refused(daemon_factory: Any, tmp_path: Path) -> None:
    first: DaemonProcess = daemon_factory()
    assert first.proc is not None
    other = write_config(
        tmp_path / "second.toml",
        port=free_port(),
        sections=SECTIONS,
        overrides={"daemon": {"run_on_start": False}, "program": [program()]},
    )
    done = subprocess.run(
        [sys.executable, "-m", "nps_sync", "run", "--config", str(other)],
        env={**os.environ, **SIGNING_ENV, "PYTHONPATH": str(REPO), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert 1 == done.returncode
    state = (tmp_path / "state").resolve()
    assert f"another nps-sync daemon (pid {first.proc.pid}) already uses {state} with SQLite" in done.stderr
    assert 200 == httpx.get(f"{first.url}/healthz", timeout=5).status_code


class NotifySocket:
    """systemd's side of sd_notify: an AF_UNIX datagram socket collecting what the daemon says."""

    def __init__(self) -> None:
        # A short path: AF_UNIX paths are limited to 108 bytes and pytest's tmp_path can be longer.
        self.folder = Path(tempfile.mkdtemp(prefix="nps-notify-"))
        self.path = self.folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def states(self) -> list[str]:
        """Every KEY=VALUE received, in order, without STATUS and MONOTONIC_USEC details."""
        return [
            line
            for message in self.collect()
            for line in message.splitlines()
            if not line.startswith(("STATUS=", "MONOTONIC_USEC="))
        ]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_sd_notify_sequence_and_sigterm_exits_0_logging_daemon_stopped(
    daemon_factory: Any, notify_socket: NotifySocket
) -> None:
    daemon: DaemonProcess = daemon_factory(
        env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
    )
    assert daemon.proc is not None

    wait_for(lambda: "READY=1" in notify_socket.states(), what="READY=1")
    wait_for(lambda: "WATCHDOG=1" in notify_socket.states(), timeout=10, what="a WATCHDOG=1 ping")

    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: logged(daemon, "config.reloaded"), what="config.reloaded")
    assert 0 == daemon.stop(signal.SIGTERM)

    assert [1.0] == [e["switch_interval_ms"] for e in logged(daemon, "daemon.ready")]
    # What start-up built is out of the collector's sight, again after the reload (settle_heap).
    frozen = [e["heap_frozen"] for e in logged(daemon, "daemon.ready") + logged(daemon, "config.reloaded")]
    assert 2 == len(frozen) and min(frozen) > 10_000, frozen
    assert 1 == len(logged(daemon, "daemon.stopped")), daemon.log()
    lifecycle = [s for s in notify_socket.states() if s != "WATCHDOG=1"]
    assert ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"] == lifecycle
    first_ready = notify_socket.states().index("READY=1")
    assert "WATCHDOG=1" in notify_socket.states()[first_ready:]


def write_utc_seed(folder: Path, contacts: int) -> Path:
    """A sandbox seed of ``contacts`` people in UTC, all with valid addresses."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "owners.csv").write_text("id,name,email\nU01,Maria Lopez,maria.lopez@example.com\n")
    (folder / "accounts.csv").write_text(
        "id,name,owner_id\n" + "".join(f"A{a:02d},Account {a},U01\n" for a in range(10))
    )
    with (folder / "contacts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["id", "account_id", "owner_id", "first_name", "last_name", "email", "time_zone", "country"]
        )
        for n in range(contacts):
            w.writerow(
                [
                    f"C{n:05d}",
                    f"A{n % 10:02d}",
                    "U01",
                    f"First{n}",
                    f"Last{n}",
                    f"p{n}@example.com",
                    "UTC",
                    "GB",
                ]
            )
    return folder


@pytest.mark.chaos
def test_sigkill_while_sending_then_restart_sends_each_key_at_most_once(tmp_path: Path) -> None:
    contacts = 600
    seed = write_utc_seed(tmp_path / "seed", contacts)
    port = free_port()
    path = config(tmp_path, port, run_on_start=True, workers=2, sandbox={"seed": str(seed)})
    store = Store(f"sqlite:///{tmp_path / 'state' / 'nps-sync.db'}")

    def count(query: Any) -> int:
        with store.read() as conn:
            return int(conn.execute(query).scalar_one())

    def by_state() -> dict[str, int]:
        with store.read() as conn:
            rows = conn.execute(select(schema.sends.c.state, func.count()).group_by(schema.sends.c.state))
            return {r[0]: r[1] for r in rows}

    crashed = DaemonProcess(path, f"http://127.0.0.1:{port}", env=SIGNING_ENV)
    restarted = DaemonProcess(path, crashed.url, env=SIGNING_ENV)
    restarted.log_path = tmp_path / "restarted.log"
    try:
        crashed.start()
        wait_for(
            lambda: count(select(func.count()).select_from(schema.outbox)),
            interval=0.005,
            what="the first messages in the outbox",
        )
        assert crashed.proc is not None
        crashed.proc.kill()  # SIGKILL: no handler runs, the claim may be half done
        crashed.proc.wait(timeout=10)
        crashed.proc = None
        at_kill = by_state()

        restarted.start()

        def settled() -> bool:
            pending = count(
                select(func.count())
                .select_from(schema.sends)
                .where(schema.sends.c.state.in_(("queued", "sending", "unknown")))
            )
            return pending == 0 and count(select(func.count()).select_from(schema.sends)) == contacts

        wait_for(settled, timeout=60, interval=0.2, what=f"all {contacts} sends to settle after the restart")
        assert 0 == restarted.stop()
    finally:
        crashed.stop(signal.SIGKILL, timeout=10)
        restarted.stop(signal.SIGKILL, timeout=10)

    with store.read() as conn:
        rows = conn.execute(
            select(schema.outbox.c.send_key, func.count())
            .where(schema.outbox.c.direction == "out")
            .group_by(schema.outbox.c.send_key)
        )
        per_key = {r[0]: r[1] for r in rows}
    final = by_state()
    store.dispose()
    assert [] == [k for k, n in per_key.items() if n != 1]
    assert {"sent": contacts} == final, f"states when killed: {at_kill}"
    assert contacts == len(per_key)
