"""Run a real ``nps-sync run`` process for tests: a config file, a free port, health polling."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll until ``check`` returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def afternoon_zone() -> str:
    """A fixed-offset zone where it is 13:00–13:59 now, so any send window and SMS quiet hours allow
    sending whenever a test or benchmark runs."""
    offset = ((13 - datetime.now(timezone.utc).hour + 12) % 24) - 12
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX signs are inverted


@dataclass
class DaemonProcess:
    config_path: Path
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.config_path.parent / "daemon.log"

    def start(self, *, timeout: float = 30.0) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nps_sync", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.config_path.parent,
            )

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=timeout, what="the daemon's /healthz")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_dumps(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """Enough TOML for test configs: scalars, arrays, tables and arrays of tables."""
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict) and (value or prefix == ()):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            scalars.append(f"{toml_key(key)} = {toml_value(value)}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in tables:
        path = ".".join(toml_key(k) for k in (*prefix, key))
        out += f"\n[{path}]\n" + toml_dumps(value, (*prefix, key))
    for key, items in arrays:
        path = ".".join(toml_key(k) for k in (*prefix, key))
        for item in items:
            out += f"\n[[{path}]]\n" + toml_dumps(item, (*prefix, key))
    return out


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def write_config(
    path: Path, *, port: int, sections: list[str], overrides: dict[str, Any] | None = None
) -> Path:
    """A config file: [daemon] for this test, the backends' TOML sections, then ``overrides``
    merged table by table (so a key lands in the table it names, whatever the sections' order)."""
    data: dict[str, Any] = {
        "daemon": {
            "state_dir": "state",
            "public_url": f"http://127.0.0.1:{port}",
            "listen": f"127.0.0.1:{port}",
            "time_zone": "Europe/Berlin",
            "playbooks": [f"{REPO / 'playbooks'}/*.toml"],
            "log_format": "json",
        }
    }
    for section in sections:
        merge(data, tomllib.loads(section))
    merge(data, overrides or {})
    path.write_text(toml_dumps(data))
    return path
