"""Tell systemd how the daemon is doing (sd_notify), without libsystemd or a third-party package.

The protocol is one AF_UNIX datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``; a leading ``@``
names a socket in the abstract namespace. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op returning False, so the daemon never needs to know how it was started. A failed send is logged
once per failure streak and never raised: losing a status line must not take the daemon down (a
missed watchdog ping is what systemd itself acts on).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("nps_sync.sdnotify")


class Notifier:
    """Sends sd_notify messages to the socket named in the environment at construction."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        socket_name = env.get("NOTIFY_SOCKET", "")
        # systemd only ever hands out absolute paths or abstract names; anything else is not for us.
        self._address: str | None = None
        if socket_name.startswith("@"):
            self._address = "\0" + socket_name[1:]
        elif socket_name.startswith("/"):
            self._address = socket_name
        self._watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        self._watchdog_pid = _positive_int(env.get("WATCHDOG_PID"))
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a notification socket."""
        return self._address is not None

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"KEY=VALUE"`` each) as one datagram; True when the socket took it."""
        if self._address is None:
            return False
        payload = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sdnotify.failed", socket=self._address.replace("\0", "@"), error=str(exc))
                self._failing = True
            return False
        if self._failing:
            log.info("sdnotify.recovered", socket=self._address.replace("\0", "@"))
            self._failing = False
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up finished: ``systemctl start`` returns and the watchdog starts counting."""
        return self.notify("READY=1", *((_status(status),) if status else ()))

    def reloading(self) -> bool:
        """A reload began; send :meth:`ready` when it is done (applied or refused)."""
        # systemd >= 253 matches RELOADING=1 to the reload it started by this timestamp; 252 ignores it.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        """Shutdown began: systemd shows "deactivating" instead of thinking the daemon hangs."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status``."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """Still alive; call from the loop that does real work, every :meth:`watchdog_interval`."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half the timeout), or None when no watchdog is ours."""
        if self._watchdog_usec is None:
            return None
        # Like sd_watchdog_enabled(): a WATCHDOG_PID of another process means the watchdog is its.
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2_000_000


def _status(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment inside the datagram.
    return "STATUS=" + " ".join(text.splitlines())


def _positive_int(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or int(value) == 0:
        return None
    return int(value)
