"""``nps-sync run``: the scheduler, the web server and the workers, until SIGTERM.

- READY is sent to systemd after migrations, recovery and the web server are up; WATCHDOG from the
  worker loop (a hung loop stops the pings and systemd restarts the service).
- SIGHUP reloads the config: an invalid new config is refused, the old one kept, the error logged.
- SIGTERM stops taking new work, lets in-flight work finish (or leaves it claimable), then exits.
- On SQLite a second daemon on the same state directory is refused (a lock file).
- On PostgreSQL any number of replicas share the database: each beats in ``replicas``, only the leader
  (nps_sync.leader) runs the scheduler and the periodic scans, and every replica sends and serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from nps_sync import config as config_mod
from nps_sync.errors import ConfigError, NpsSyncError
from nps_sync.leader import (
    HEARTBEAT_EVERY,
    Leadership,
    Maintenance,
    Replicas,
    recover_sends,
    resume_from_ticks,
)
from nps_sync.runtime import Runtime, settle_heap
from nps_sync.scheduler import Scheduler
from nps_sync.sdnotify import Notifier
from nps_sync.web import create_app
from nps_sync.web.processes import WebProcesses, disabled_key, hold_port

log = structlog.get_logger("nps_sync.daemon")

IDLE_SLEEP = 0.25
#: After a round that found nothing ready, a worker polls again no sooner than this, however often
#: work is queued meanwhile: a stream of answers (100 a second) wakes it on every answer, and each
#: round costs queries (pause flag, queued sends, due jobs) that found nothing while batches linger.
MIN_IDLE = 0.05
PERIODIC_EVERY = 30.0
ELECTION_EVERY = 0.5


#: With web processes, the workers' threads run at this nice value: a web process with a request to
#: answer gets a CPU first, and the workers catch up on recording answers when the burst is over.
WORKER_NICE = 10
#: The daemon process's GIL switch interval (Python's default is 5 ms). The thread that pages through
#: the CRM needs the GIL after every socket read; while a send batch is being rendered it waited up to
#: 5 ms each time, 15-48 ms a page: 0.9 s of a HubSpot 10,000-contact wave's 5.7 s (0.5 s at 1 ms).
#: Web processes keep the default (a shorter interval measured worse for their p99).
SWITCH_INTERVAL = 0.001


def lower_priority(thread: str) -> None:
    """Linux: the calling thread only (each thread has its own nice value); no privilege needed."""
    try:
        if os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except OSError as exc:  # a seccomp filter without setpriority: the workers compete as equals
        log.warning("worker.priority_unchanged", worker=thread, error=str(exc))


class SwappableApp:
    """The ASGI app the server runs; a reload swaps what it delegates to without dropping the socket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@contextlib.contextmanager
def single_instance(runtime_config: config_mod.Config) -> Iterator[None]:
    """SQLite cannot be shared by two daemons: hold a lock on the state directory while running."""
    if not runtime_config.database_url.startswith("sqlite"):
        yield
        return
    state = runtime_config.state_dir
    state.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (state / "nps-sync.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise NpsSyncError(
            f"another nps-sync daemon ({holder}) already uses {state} with SQLite; SQLite allows one "
            "daemon per state directory. For several replicas use PostgreSQL ([daemon] database_url)."
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def idle(stop: threading.Event, work_queued: threading.Event, due_in: float | None = None) -> None:
    """A worker's wait after a round that did nothing: at least ``MIN_IDLE``, then until work is
    queued (a response, a web process's answer), ``IDLE_SLEEP`` has passed, or ``due_in`` seconds
    (when a lingering batch is due to run: the last answers' roll-up and tasks go then, not at the
    next poll)."""
    if stop.wait(MIN_IDLE):
        return
    wait = IDLE_SLEEP if due_in is None else min(IDLE_SLEEP, due_in)
    if work_queued.wait(max(0.0, wait - MIN_IDLE)):
        work_queued.clear()


class Daemon:
    def __init__(self, config_path: Path, *, environ: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.environ = environ
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self.notifier = Notifier(environ)
        self.beats: dict[str, float] = {}
        self.rt: Runtime | None = None
        self.beating_stop = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        # First of all: SIGHUP's default action ends the process, and /healthz answers before start-up
        # is over; the handlers only set flags that the main loop reads once it runs.
        self._install_signals()
        config = config_mod.load(self.config_path)
        with single_instance(config):
            self.rt = Runtime(config, environ=self.environ)
            replicas = Replicas(self.rt.store)
            replicas.register()
            # Only our own predecessor's and dead replicas' sends: the others' are still in flight.
            recover_sends(self.rt, replicas, startup=True)
            beating = threading.Thread(
                target=self._heartbeat, args=(replicas,), name="heartbeat", daemon=True
            )
            beating.start()
            leadership = Leadership(self.rt.store, replicas)
            app = SwappableApp(create_app(self.rt))
            server: uvicorn.Server | None = None
            web: threading.Thread | None = None
            processes: WebProcesses | None = None
            if config.daemon.web_processes:
                processes = WebProcesses(
                    config.daemon.web_processes,
                    hold_port(config.daemon.listen_host, config.daemon.listen_port),
                    replica_id=replicas.id,
                    environ=self.environ,
                    on_work=self._wake_workers,
                )
                processes.start(self.config_path)
            else:
                server, web = self._serve_in_thread(app, config)
            # What the web processes read as this replica's disabled channels (kept across reloads:
            # a reload's new sender starts with none, and that must replace what was published).
            published: dict[str, str] = {}
            scheduler = Scheduler(self.rt.store, config)
            maintenance: Maintenance | None = None
            if leadership.check() and config.daemon.run_on_start:
                scheduler.fire_now()
            # HubSpot's page reader server starts in the background; a first wave must not wait.
            self.rt.wait_ready()
            settle_heap()
            workers = self._start_workers(config.daemon.workers)
            self.notifier.ready(status=f"listening on {config.daemon.listen}")
            log.info(
                "daemon.ready",
                listen=config.daemon.listen,
                public_url=config.daemon.public_url,
                programs=[p.name for p in config.program if p.enabled],
                pid=os.getpid(),
                switch_interval_ms=round(sys.getswitchinterval() * 1000, 3),
                heap_frozen=gc.get_freeze_count(),
            )
            last_periodic = 0.0
            last_election = time.monotonic()
            watchdog = self.notifier.watchdog_interval()
            last_ping = 0.0
            while not self.stop.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    scheduler = self._reload(app, scheduler, workers, processes)
                    assert self.rt is not None
                    replicas.store = self.rt.store
                    maintenance = None  # rebuilt on the new store, resuming from the claimed ticks
                if processes is not None:
                    processes.check()
                    published = self._publish_disabled(replicas.id, published)
                try:
                    if time.monotonic() - last_election >= ELECTION_EVERY:
                        last_election = time.monotonic()
                        leadership.check()
                    if not leadership.is_leader:
                        maintenance = None
                    else:
                        assert self.rt is not None
                        if maintenance is None:  # just elected: resume where the last leader stopped
                            maintenance = Maintenance(self.rt.store, replicas.id)
                            scheduler = Scheduler(self.rt.store, self.rt.config)
                            resume_from_ticks(scheduler, self.rt.store)
                        scheduler.due()
                        if maintenance.due():
                            recover_sends(self.rt, replicas)
                        if time.monotonic() - last_periodic >= PERIODIC_EVERY:
                            last_periodic = time.monotonic()
                            maintenance.prune()
                            replicas.prune()
                            self.rt.periodic()
                except Exception as exc:
                    log.error("scheduler.error", error=f"{type(exc).__name__}: {exc}")
                if watchdog and time.monotonic() - last_ping >= watchdog and self._workers_alive():
                    self.notifier.watchdog()
                    last_ping = time.monotonic()
                self.stop.wait(0.2)
            self.notifier.stopping()
            log.info("daemon.stopping")
            self._stop_workers(workers)
            if processes is not None:
                processes.stop()
                processes.sock.close()
            if server is not None and web is not None:
                server.should_exit = True
                web.join(timeout=10)
            leadership.release()
            self.beating_stop.set()
            beating.join(timeout=5)
            replicas.deregister()
            self.rt.close()
            log.info("daemon.stopped")
        return 0

    def _serve_in_thread(
        self, app: SwappableApp, config: config_mod.Config
    ) -> tuple[uvicorn.Server, threading.Thread]:
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.daemon.listen_host,
                port=config.daemon.listen_port,
                log_level="warning",
                # The app reads the peer address itself (admin pages, trusted proxies, rate limits).
                proxy_headers=False,
                access_log=False,
                lifespan="off",
            )
        )
        web = threading.Thread(target=server.run, name="web", daemon=True)
        web.start()
        deadline = time.monotonic() + 15
        while not server.started and web.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise NpsSyncError(f"the web server could not listen on {config.daemon.listen}")
        return server, web

    def _wake_workers(self) -> None:
        # A web process queued work (an answer, a testimonial note): idle workers start at once.
        if self.rt is not None:
            self.rt.responses.work_queued.set()

    def _publish_disabled(self, replica_id: str, published: dict[str, str]) -> dict[str, str]:
        """Web processes answer /healthz: they read the channels this replica disabled from the database."""
        assert self.rt is not None
        disabled = dict(self.rt.sender.disabled)
        if disabled != published:
            self.rt.store.set_setting(disabled_key(replica_id), json.dumps(disabled))
        return disabled

    def _install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def _reload(
        self, app: SwappableApp, scheduler: Scheduler, workers: list[Any], processes: WebProcesses | None
    ) -> Scheduler:
        self.notifier.reloading()
        try:
            config = config_mod.load(self.config_path)
            new_rt = Runtime(config, environ=self.environ)
            new_app = create_app(new_rt)
        except Exception as exc:  # a new database or connector that cannot start is refused too
            error = (
                str(exc) if isinstance(exc, (ConfigError, NpsSyncError)) else f"{type(exc).__name__}: {exc}"
            )
            log.error("config.reload_refused", file=str(self.config_path), error=error)
            self.notifier.ready(status="reload refused; running on the previous config")
            return scheduler
        self._stop_workers(workers)
        old, self.rt = self.rt, new_rt
        app.app = new_app
        workers[:] = self._start_workers(config.daemon.workers)
        if old is not None and (
            (config.daemon.web_processes > 0) != (processes is not None)
            or config.daemon.listen != old.config.daemon.listen
        ):
            log.warning(
                "config.restart_needed",
                file=str(self.config_path),
                keys=["daemon.listen", "daemon.web_processes"],
                effect="the web server keeps its address and mode until the daemon restarts",
            )
        if processes is not None and config.daemon.web_processes:
            processes.count = config.daemon.web_processes
            try:
                processes.start(self.config_path)
            except NpsSyncError as exc:
                log.error(
                    "web.reload_failed", error=str(exc), effect="the previous web processes keep serving"
                )
        if old is not None:
            old.close()
        # The old runtime was out of the collector's sight: let it collect what the old one left
        # (cycles among its objects), then put the new runtime out of sight instead.
        gc.unfreeze()
        settle_heap()
        log.info(
            "config.reloaded",
            file=str(self.config_path),
            programs=[p.name for p in config.program],
            heap_frozen=gc.get_freeze_count(),
        )
        self.notifier.ready(status="config reloaded")
        scheduler = Scheduler(new_rt.store, config)
        resume_from_ticks(scheduler, new_rt.store)
        return scheduler

    # --- workers --------------------------------------------------------------------------------

    def _start_workers(self, count: int) -> list[Any]:
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._work, args=(stop, f"worker-{i}"), name=f"worker-{i}", daemon=True)
            for i in range(count)
        ]
        for t in threads:
            t.start()
        return [stop, *threads]

    def _stop_workers(self, workers: list[Any]) -> None:
        stop, *threads = workers
        stop.set()
        for t in threads:
            t.join(timeout=30)

    def _work(self, stop: threading.Event, name: str) -> None:
        rt = self.rt
        assert rt is not None
        if rt.config.daemon.web_processes:
            lower_priority(name)
        while not stop.is_set() and not self.stop.is_set():
            self.beats[name] = time.monotonic()
            try:
                done = rt.background_once()
            except Exception as exc:
                log.error("worker.error", worker=name, error=f"{type(exc).__name__}: {exc}")
                done = 0
            if not done:
                idle(stop, rt.responses.work_queued, rt.queue.seconds_to_linger_end())

    def _heartbeat(self, replicas: Replicas) -> None:
        # Its own thread: a long wave or scan in the main loop must not make this replica look dead.
        while not self.beating_stop.wait(HEARTBEAT_EVERY):
            try:
                replicas.beat()
            except Exception as exc:
                log.warning("replica.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")

    def _workers_alive(self) -> bool:
        now = time.monotonic()
        return bool(self.beats) and all(now - beat < 120 for beat in self.beats.values())
