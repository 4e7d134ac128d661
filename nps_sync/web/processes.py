"""The web server in processes of its own (``[daemon] web_processes``).

With ``web_processes = 0`` (the default) the daemon serves HTTP from a thread, sharing one GIL with
the workers. With N > 0 the daemon binds the listening socket itself and starts N child processes
(``python -m nps_sync.web.processes``) that listen on it: answers and webhooks are committed by the
children while the daemon's workers record and act on them, each on its own CPU.

- Each child listens on a socket of its own (SO_REUSEPORT, same address) and the kernel spreads
  new connections over them. With one shared listening socket, the first child awake took every
  connection waiting (uvloop accepts until none is left): 58 of the load generator's 64 keep-alive
  connections went to one child. The daemon's socket only holds the port (bound, never listening),
  so a port in use is reported at start, and no one else's process can take it while children come
  and go. A connection still waiting in the queue of a child that stops is reset (the client
  retries); ``net.ipv4.tcp_migrate_req = 1`` hands such connections to another child instead.

- Everything a child does ends in a database commit (answers and events are jobs), so a child holds
  nothing the daemon needs; a child that dies is started again, its in-flight requests unanswered
  (the client retries; an acknowledged answer was committed first).
- A child tells the daemon through a pipe when it is ready and when it queued work (so idle
  workers wake at once instead of at their next poll); the daemon's end of a second pipe closing is
  how a child learns the daemon died (even by SIGKILL): it stops accepting, finishes what it has,
  and exits, freeing the port for the daemon's next start.
- ``/healthz`` in a child reports the channels the daemon disabled (refused credentials): the
  daemon publishes them as a setting named after its replica id.
- SIGHUP: the daemon starts children on the new config, waits for them, then stops the old ones.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from nps_sync.errors import NpsSyncError
from nps_sync.store.db import Store

log = structlog.get_logger("nps_sync.web.processes")

READY = b"R"
WORK = b"W"
#: A child that has not said READY by then is stopped and counted as a failed start.
START_TIMEOUT = 30.0
#: Requests in flight get this long to finish when a child stops.
GRACEFUL_SECONDS = 5.0
# Connections a child's socket queues before it accepts them.
LISTEN_BACKLOG = 2048
#: Respawn back-off for a child that keeps dying soon after its start.
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 10.0


def disabled_key(replica_id: str) -> str:
    return f"disabled_channels:{replica_id}"


def published_disabled(store: Store, replica_id: str) -> dict[str, str]:
    raw = store.get_setting(disabled_key(replica_id))
    return dict(json.loads(raw)) if raw else {}


def _port_socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def hold_port(host: str, port: int) -> socket.socket:
    """Bound with SO_REUSEPORT and never listening: the port is ours (another user's process cannot
    bind it), the children listen on it, and the daemon's socket takes no connections itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _port_socket(family)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NpsSyncError(f"the web server could not listen on {host}:{port}: {exc}") from exc
    sock.set_inheritable(True)
    return sock


def own_listener(held: socket.socket) -> socket.socket:
    """A child's listening socket, on the address of the daemon's (SO_REUSEPORT)."""
    sock = _port_socket(held.family)
    try:
        sock.bind(held.getsockname()[:2])
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Child:
    number: int
    proc: subprocess.Popen[bytes]
    life: int  # our write end: closing it (or dying) tells the child to stop
    started: float = field(default_factory=time.monotonic)
    ready: threading.Event = field(default_factory=threading.Event)

    def close_life(self) -> None:
        if self.life >= 0:  # once: the number may belong to another file afterwards
            os.close(self.life)
            self.life = -1


class WebProcesses:
    """The daemon's side: start, watch, replace and stop the web processes."""

    def __init__(
        self,
        count: int,
        sock: socket.socket,
        *,
        replica_id: str,
        environ: Mapping[str, str] | None,
        on_work: Callable[[], None],
    ) -> None:
        self.count = count
        self.sock = sock
        self.replica_id = replica_id
        self.environ = dict(os.environ if environ is None else environ)
        # Only the daemon speaks to systemd (NotifyAccess=main).
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.environ.pop(name, None)
        self.on_work = on_work
        self.children: list[Child] = []
        self._next_number = 1
        self._backoff = BACKOFF_FIRST
        self._respawn_at = 0.0
        self.config_path: Path | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self, config_path: Path) -> None:
        """``count`` children on ``config_path``, ready to serve; after a reload the new ones start
        first, then the old ones stop."""
        fresh = self._spawn_ready(config_path)
        old, self.children, self.config_path = self.children, fresh, config_path
        self._stop(old)

    def stop(self) -> None:
        self._stop(self.children)
        self.children = []

    def check(self) -> None:
        """From the daemon's main loop: start a child again in place of one that died."""
        alive = []
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                alive.append(child)
                continue
            child.close_life()
            if time.monotonic() - child.started >= STABLE_AFTER:  # at once, and forget earlier deaths
                self._backoff, self._respawn_at = BACKOFF_FIRST, 0.0
            else:  # dying soon after each start: wait 1 s, 2 s, 4 s … 30 s
                self._respawn_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            log.error("web.process_exited", process=child.number, pid=child.proc.pid, returncode=code)
        self.children = alive
        missing = self.count - len(self.children)
        if missing and self.config_path is not None and time.monotonic() >= self._respawn_at:
            for _ in range(missing):
                self.children.append(self._spawn(self.config_path))

    # --- internals --------------------------------------------------------------------------------

    def _spawn_ready(self, config_path: Path) -> list[Child]:
        children = [self._spawn(config_path) for _ in range(self.count)]
        deadline = time.monotonic() + START_TIMEOUT
        for child in children:
            while not child.ready.wait(0.05):
                if child.proc.poll() is not None or time.monotonic() > deadline:
                    self._stop(children)
                    raise NpsSyncError(
                        f"web process {child.number} did not start (exit status {child.proc.poll()}); "
                        "its error is in the log above"
                    )
        return children

    def _spawn(self, config_path: Path) -> Child:
        number, self._next_number = self._next_number, self._next_number + 1
        life_read, life_write = os.pipe()
        talk_read, talk_write = os.pipe()
        fd = self.sock.fileno()
        command = [
            sys.executable,
            "-m",
            "nps_sync.web.processes",
            "--config",
            str(config_path),
            "--fd",
            str(fd),
            "--life-fd",
            str(life_read),
            "--talk-fd",
            str(talk_write),
            "--replica",
            self.replica_id,
            "--number",
            str(number),
        ]
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            command, pass_fds=(fd, life_read, talk_write), env=self.environ
        )
        os.close(life_read)
        os.close(talk_write)
        child = Child(number, proc, life_write)
        threading.Thread(
            target=self._listen, args=(child, talk_read), name=f"web-{number}-pipe", daemon=True
        ).start()
        log.info("web.process_started", process=number, pid=proc.pid)
        return child

    def _listen(self, child: Child, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while data := pipe.read(512):
                if READY in data:
                    child.ready.set()
                if WORK in data:
                    self.on_work()

    def _stop(self, children: list[Child]) -> None:
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SECONDS + 5.0
        for child in children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            child.close_life()


# --- the child ----------------------------------------------------------------------------------

#: Threads for the pages' database work (Starlette's thread pool; AnyIO's default is 40). Answers wait
#: in them for their group commit: with more of them a commit takes more answers at once.
THREADS = 200
PG_POOL = 20


class ThreadTokens:
    """Sets the event loop's thread-pool size before the first request (AnyIO keeps it per loop)."""

    def __init__(self, app: ASGIApp, threads: int) -> None:
        self.app = app
        self.threads = threads
        self.set = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.set:
            anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            self.set = True
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nps_sync.web.processes")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--life-fd", type=int, required=True)
    parser.add_argument("--talk-fd", type=int, required=True)
    parser.add_argument("--replica", required=True)
    parser.add_argument("--number", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    from nps_sync import config as config_mod
    from nps_sync.logs import configure
    from nps_sync.runtime import Runtime, settle_heap
    from nps_sync.web import create_app
    from nps_sync.web import render as web_render

    config = config_mod.load(args.config)
    configure(config.daemon.log_format, config.daemon.log_level)
    structlog.contextvars.bind_contextvars(web_process=args.number)
    # PostgreSQL: a fixed pool, larger than the daemon's 5 (pages read while answers commit; none
    # opened and closed per burst), not pinged before each use (a round trip per request; a dead
    # connection fails one request and the pool is renewed).
    # SQLite: this process's commits go before the daemon's (nps_sync.store.write_turn).
    store = Store(config.database_url, pool_size=PG_POOL, max_overflow=0, write_first=True, pre_ping=False)
    rt = Runtime(config, store=store)
    # Open the pool's connections now: a burst should not wait for PostgreSQL to start backends.
    opened = [store.engine.connect() for _ in range(PG_POOL)]
    for conn in opened:
        conn.close()
    app = create_app(rt, disabled_channels=lambda: published_disabled(rt.store, args.replica))
    server = uvicorn.Server(
        uvicorn.Config(
            ThreadTokens(app, THREADS),
            log_level="warning",
            proxy_headers=False,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        )
    )
    talk = os.fdopen(args.talk_fd, "wb", buffering=0)

    def tell(message: bytes) -> None:
        try:
            talk.write(message)
        except OSError:  # the daemon is gone: the life pipe stops us too
            server.should_exit = True

    def relay() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        tell(READY)
        while not server.should_exit:
            if rt.responses.work_queued.wait(0.5):
                rt.responses.work_queued.clear()
                tell(WORK)

    def watch_daemon() -> None:
        with os.fdopen(args.life_fd, "rb", buffering=0) as life:
            life.read()  # returns at EOF: the daemon closed its end or died
        if not server.should_exit:
            log.warning("web.daemon_gone", action="stopping")
        server.should_exit = True

    # Compile the customer-facing pages now, not during the first answers of a burst.
    for name in ("survey.html", "message.html", "base.html"):
        web_render.env.get_template(name)
    settle_heap()  # what start-up built lives as long as the process
    threading.Thread(target=relay, name="relay", daemon=True).start()
    threading.Thread(target=watch_daemon, name="life", daemon=True).start()
    with socket.socket(fileno=args.fd) as held:
        sock = own_listener(held)
    try:
        server.run(sockets=[sock])
    finally:
        rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
