"""Shared plumbing: the emulator host process, daemon configs and processes, database polling."""

# ruff: noqa: S603, S607 - the benchmark starts its own processes (python, psql) with fixed argument lists

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID
from tests.e2e.daemon import REPO, DaemonProcess, free_port, wait_for, write_config

T = TypeVar("T")
WORK = REPO / "benchmarks" / ".work"


# The waiting helper and the afternoon time zone are the test harness's (tests/e2e/daemon.py).
wait_until = wait_for


class Emulators:
    """The emulator host process and its control API."""

    def __init__(self, latency_ms: float) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        ready = WORK / f"emulators-{os.getpid()}.json"
        ready.unlink(missing_ok=True)
        self.log = (WORK / "emulators.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.emulators",
                "--latency-ms",
                str(latency_ms),
                "--ready-file",
                str(ready),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        wait_until(lambda: ready.exists() or self._died(), timeout=60, interval=0.1, what="the emulator host")
        self.info: dict[str, Any] = json.loads(ready.read_text())
        ready.unlink()
        self.http = httpx.Client(base_url=self.info["control"], timeout=600)

    def _died(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"emulator host exited; see {WORK / 'emulators.log'}")
        return False

    def call(self, path: str, **body: Any) -> Any:
        r = self.http.post(path, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"emulator control {path}: {r.text}")
        return r.json()

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def daemon_env(emu: Emulators) -> dict[str, str]:
    i = emu.info
    return {
        "SALESFORCE_PASSWORD": i["salesforce_password"],
        "SALESFORCE_SECURITY_TOKEN": i["salesforce_security_token"],
        "HUBSPOT_ACCESS_TOKEN": i["hubspot_token"],
        "SENDGRID_API_KEY": "SG.bench-key",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": i["sendgrid_public_key"],
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }


def crm_section(emu: Emulators, crm: str) -> str:
    i = emu.info
    if crm == "salesforce":
        return (
            '[crm]\nkind = "salesforce"\n\n[crm.salesforce]\nauth = "password"\n'
            f'username = "{i["salesforce_username"]}"\ntransport_url = "{i["salesforce"]}"\n'
            "bulk_poll_seconds = 0.5\n"
        )
    return (
        '[crm]\nkind = "hubspot"\n\n[crm.hubspot]\n'
        f'base_url = "{i["hubspot"]}"\naccess_token_secret = "HUBSPOT_ACCESS_TOKEN"\n'
        "rate_limit_calls = 190\nsearch_per_second = 5\nretry_wait_seconds = 0.5\n"
    )


def channel_sections(emu: Emulators, sms_mps: float) -> list[str]:
    i = emu.info
    email = (
        '[channels.email]\nkind = "sendgrid"\nfrom_address = "nps@acme.test"\n'
        'from_name = "Acme Customer Team"\npostal_address = "Acme Inc., 1 Main St"\n'
        f'sendgrid = {{ base_url = "{i["sendgrid"]}", api_key_secret = "SENDGRID_API_KEY", '
        'webhook_public_key_secret = "SENDGRID_WEBHOOK_PUBLIC_KEY" }\n'
    )
    sms = (
        '[channels.sms]\nkind = "twilio"\n\n[channels.sms.twilio]\n'
        f'account_sid = "{ACCOUNT_SID}"\nauth_token_secret = "TWILIO_AUTH_TOKEN"\n'
        f'messaging_service_sid = "{SERVICE_SID}"\nbase_url = "{i["twilio"]}"\n'
        f"messages_per_second = {sms_mps}\nconcurrency = 50\nmax_batch = 500\n"
        'stop_confirmation = "nps-sync"\n'
    )
    return [email, sms]


def program(crm: str, channel: str) -> dict[str, Any]:
    """A program that skips no one: no quota, no sampling, no drip, a window open now."""
    return {
        "name": "bench",
        "channel": channel,
        "schedule": "0 3 1 1 *",
        "send_window": "09:00-18:00",
        "default_time_zone": "UTC",
        "reminders": {"count": 0},
        "audience": {} if crm == "salesforce" else {"all_contacts": True},
    }


def start_daemon(
    emu: Emulators,
    name: str,
    crm: str,
    channel: str,
    *,
    database_url: str = "",
    sms_mps: float = 100.0,
    paused: bool = False,
    run_on_start: bool = True,
    web_processes: int = 0,
    task_batch_wait: float | None = None,
) -> tuple[DaemonProcess, Store]:
    folder = WORK / name
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    port = free_port()
    daemon_table: dict[str, Any] = {
        "run_on_start": run_on_start,
        "log_level": "warning",
        # Every simulated customer and provider posts from 127.0.0.1: the per-IP guard would see one
        # client sending a whole customer base's answers and refuse it (429).
        "limits": {"requests_per_minute": 10_000_000, "webhook_requests_per_minute": 10_000_000},
    }
    if database_url:
        daemon_table["database_url"] = database_url
    if web_processes:
        daemon_table["web_processes"] = web_processes
    if task_batch_wait is not None:
        daemon_table["task_batch_wait"] = task_batch_wait
    config = write_config(
        folder / "config.toml",
        port=port,
        sections=[crm_section(emu, crm), *channel_sections(emu, sms_mps)],
        overrides={"daemon": daemon_table, "program": [program(crm, channel)]},
    )
    env = daemon_env(emu)
    url = database_url or f"sqlite:///{folder / 'state' / 'nps-sync.db'}"
    if paused:
        subprocess.run(
            [sys.executable, "-m", "nps_sync", "pause", "--config", str(config)],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            cwd=folder,
            check=True,
            capture_output=True,
        )
    daemon = DaemonProcess(config, f"http://127.0.0.1:{port}", env=env)
    emu.call("/connect", url=daemon.url)
    daemon.start(timeout=60)
    return daemon, Store(url)


def count(store: Store, table: Any, *where: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def wave_row(store: Store) -> Any:
    with store.read() as conn:
        return conn.execute(select(schema.waves)).mappings().first()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def pss_mb(pid: int) -> float:
    """A process's proportional set size: its own pages, plus its share of pages it shares."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class Helpers:
    """The memory of the processes a daemon started, directly or not (HubSpot's page reader, the
    fork server it is forked from, multiprocessing's resource tracker; the web processes when there
    are any), sampled every ``interval`` s: a page reader lives only as long as its pull. A reader
    shares most of its pages with the fork server, so each is counted by its proportional set size
    (a shared page split between them); ``stop`` gives the sum of each one's largest sample."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="helpers-rss", daemon=True)
        self._thread.start()

    def _descendants(self) -> list[int]:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
        found, frontier = [], [self.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found.extend(children)
            frontier.extend(children)
        return found

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self._descendants():
                try:
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), pss_mb(pid))
                except OSError:
                    continue

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.peaks.values())
