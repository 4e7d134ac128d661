"""Several real ``nps-sync run`` processes on one database, for crash tests.

Each replica has its own config file (its own port) and state folder, but all share the database and
the signing key, the way an ops person runs replicas behind a load balancer.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.e2e.daemon import REPO, free_port, wait_for, write_config
from tests.harness import SEED_DIR

#: Long runs are opt-in: ``NPS_CHAOS_FULL=1`` runs the sizes of the reliability doc's table.
FULL = os.environ.get("NPS_CHAOS_FULL") == "1"
SIGNING_KEY = "chaos-test-signing-key-0123456789abcdef"


def afternoon_zone() -> str:
    """A fixed-offset zone where it is 13:00–13:59 now, so send windows and SMS quiet hours allow."""
    offset = ((13 - datetime.now(timezone.utc).hour + 12) % 24) - 12
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX signs are inverted


def write_seed(folder: Path, contacts: int) -> Path:
    """``contacts`` people, one account each (no quota interplay), distinct numbers and addresses."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SEED_DIR / "owners.csv", folder / "owners.csv")
    zone = afternoon_zone()
    with (folder / "accounts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "owner_id"])
        w.writerows([f"B{i:05d}", f"Account {i}", "U02"] for i in range(contacts))
    with (folder / "contacts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                *("id", "account_id", "owner_id", "first_name", "last_name", "email", "phone", "locale"),
                *("time_zone", "country", "email_opt_out", "sms_opt_out"),
            ]
        )
        w.writerows(
            [
                *(f"K{i:05d}", f"B{i:05d}", "U02", "Pat", f"Number{i}", f"pat{i}@example.com"),
                *(f"+1212{2000000 + i:07d}", "en", zone, "US", "false", "false"),
            ]
            for i in range(contacts)
        )
    return folder


@dataclass
class Replica:
    name: str
    folder: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "daemon.log"

    def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nps_sync", "run", "--config", str(self.folder / "config.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def ok() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            return self.healthy()

        wait_for(ok, timeout=timeout, interval=0.1, what=f"{self.name}'s /healthz")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return int(code)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    root: Path
    database_url: str
    sections: list[str]
    overrides: dict[str, Any]
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)

    def add(self, count: int) -> list[Replica]:
        """Write ``count`` replica configs (one port and state folder each) sharing the database."""
        public = None
        for _ in range(count):
            n = len(self.replicas)
            folder = self.root / f"replica{n}"
            folder.mkdir(parents=True, exist_ok=True)
            port = free_port()
            public = public or f"http://127.0.0.1:{port}"
            overrides = {
                **self.overrides,
                "daemon": {
                    **self.overrides.get("daemon", {}),
                    "database_url": self.database_url,
                    "public_url": public,
                },
            }
            write_config(folder / "config.toml", port=port, sections=self.sections, overrides=overrides)
            env = {"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY, **self.env}
            self.replicas.append(Replica(f"replica{n}", folder, port, env))
        return self.replicas[-count:]

    def start_all(self) -> None:
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            r.wait_healthy()

    def stop_all(self) -> list[int]:
        return [r.stop() for r in self.replicas]

    def random_running(self, rng: random.Random) -> Replica:
        return wait_for(
            lambda: rng.choice(up) if (up := [r for r in self.replicas if r.healthy()]) else None,
            timeout=60,
            interval=0.05,
            what="a running replica",
        )

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log()[-3000:]}" for r in self.replicas)


def count(store: Store, table: Any, *where: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def sends_by_state(store: Store) -> dict[str, int]:
    s = schema.sends
    with store.read() as conn:
        return {
            str(r[0]): int(r[1]) for r in conn.execute(select(s.c.state, func.count()).group_by(s.c.state))
        }


def pause(seconds: float) -> None:
    time.sleep(seconds)
