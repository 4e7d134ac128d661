"""An audience's pages, read in a process of its own (``[crm.hubspot] read_pages_in_process``).

HubSpot hands out contacts 100 at a time, each page after the previous one's cursor: a wave of
10,000 contacts is 100 round trips in a row, and every moment between one page's answer and the
next page's request adds to the wave. In the daemon that moment was the page reader waiting for
the GIL, which the sender, the recorder and the webhooks hold most of a wave: about 4 ms a page.
A process of its own has an interpreter of its own and reads the next page as soon as it has a
cursor, on the machine's other core.

- The process is forked from a ``multiprocessing`` fork server that imported this module (so the
  HubSpot SDK) once; a read costs a fork, not an interpreter start. ``warm`` starts the server
  early, off the caller's thread.
- It makes its calls through a copy of the daemon's client and counts them in the daemon's own
  rate windows (``SlidingWindow`` is in shared memory): HubSpot's 10-second and search limits are
  the app's, whichever process calls.
- Pages, the daily allowance HubSpot reported, log lines and the error that ended the read come back
  through a pipe, in order. An error is raised again in the daemon as the same kind
  (``AuthFailed``, ``RateLimited`` ...), so callers see what they saw before.
- The process stops when the last page is sent, when the read fails, or when the daemon stops
  reading (its end of the pipe closes; the process is not killed mid-call, which could leave the
  shared window locked). A process that dies is a ``ConnectorUnavailable``: the wave is retried
  like any unreachable CRM.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import threading
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from nps_sync.connectors.hubspot.ratelimit import SlidingWindow
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)
from nps_sync.readahead import prefetched

from .client import NAME, HubSpotClient, Record
from .mapping import MEMBERSHIP_PAGE_LIMIT, OBJECT_ID, SEARCH_RESULT_CAP, chunks

log = structlog.get_logger("nps_sync.connectors.hubspot.reader")

_CTX = multiprocessing.get_context("forkserver")
# "__main__": the server imports the main module once, so a child does not import it again.
_CTX.set_forkserver_preload(["__main__", __name__])
_ERRORS: dict[str, type[ConnectorError]] = {
    cls.__name__: cls
    for cls in (
        ConnectorError,
        ConnectorUnavailable,
        RateLimited,
        AuthFailed,
        PermanentError,
        AmbiguousOutcome,
    )
}
#: Seconds the daemon waits for a dead reader's exit code before reporting it.
JOIN_SECONDS = 5.0
#: The pages' pipe: room for more than ``ahead`` pages (Linux lets anyone ask for up to 1 MiB).
PIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class PageSource:
    """Which pages an audience is: every contact, a list's members, or a search (plain data, so
    it crosses to the reader's process)."""

    kind: str  # "all", "list" or "search"
    properties: tuple[str, ...]
    limit: int
    list_id: str | None = None
    #: Search filter groups as the SDK's ``Filter`` keyword arguments.
    filter_groups: tuple[tuple[Mapping[str, Any], ...], ...] = field(default=())

    def pages(self, client: HubSpotClient) -> Iterator[list[Record]]:
        if self.kind == "all":
            return _all_pages(client, self.properties, self.limit)
        if self.kind == "list":
            assert self.list_id is not None
            return _list_pages(client, self.list_id, self.properties, self.limit)
        return _search_pages(client, self.filter_groups, self.properties, self.limit)


def _all_pages(client: HubSpotClient, props: Sequence[str], limit: int) -> Iterator[list[Record]]:
    after: str | None = None
    while True:
        page = client.list_page("contacts", props, limit, after)
        if page.records:
            yield page.records
        if page.after is None:
            return
        after = page.after


def _list_pages(
    client: HubSpotClient, list_id: str, props: Sequence[str], chunk: int
) -> Iterator[list[Record]]:
    after: str | None = None
    while True:
        ids, after = client.list_members(list_id, MEMBERSHIP_PAGE_LIMIT, after)
        for part in chunks(ids, chunk):
            records = client.batch_read("contacts", part, props)
            if records:
                yield records
        if after is None:
            return


def _search_pages(
    client: HubSpotClient,
    groups: Sequence[Sequence[Mapping[str, Any]]],
    props: Sequence[str],
    limit: int,
) -> Iterator[list[Record]]:
    """Search sorted by hs_object_id; past 10,000 results a new query starts after the last id."""
    base = [[dict(f) for f in group] for group in groups]
    last_id: str | None = None
    while True:
        query = (
            base
            if last_id is None
            else [[*g, {"property_name": OBJECT_ID, "operator": "GT", "value": last_id}] for g in base]
        )
        fetched, after = 0, None
        while True:
            page = client.search("contacts", query, props, limit=limit, after=after)
            if page.records:
                last_id = page.records[-1].id
                yield page.records
            fetched += len(page.records)
            if page.after is None or not page.records:
                return
            if fetched + limit > SEARCH_RESULT_CAP:
                log.info("hubspot.search_partition", after_id=last_id, fetched=fetched)
                break
            after = page.after


class _Server:
    """The fork server's start (``warm``): pending, up, or failed (then reads use a thread)."""

    def __init__(self) -> None:
        self.started = False
        self.done = threading.Event()
        self.error: str | None = None
        self.lock = threading.Lock()


_SERVER = _Server()


def warm() -> None:
    """Start the fork server in the background, once; a daemon waits for it with ``wait_warm``
    before its first wave (starting it takes ~0.5 s: an interpreter importing the HubSpot SDK)."""
    with _SERVER.lock:
        if _SERVER.started:
            return
        _SERVER.started = True
    threading.Thread(target=_start_server, name="hubspot-reader-warm", daemon=True).start()


def _start_server() -> None:
    try:
        probe = _CTX.Process(target=_probe, name="nps-sync-hubspot-pages-probe", daemon=True)
        probe.start()
        probe.join()
        if probe.exitcode != 0:
            raise RuntimeError(f"a test process exited with code {probe.exitcode}")
    except Exception as exc:
        _SERVER.error = f"{exc.__class__.__name__}: {exc}"
        log.warning(
            "hubspot.page_reader_unavailable", error=_SERVER.error, effect="pages are read in a thread"
        )
    finally:
        _SERVER.done.set()


def _probe() -> None:
    """Run in a forked reader: proves the server forks working readers."""


def wait_warm(timeout: float) -> bool:
    """Wait until ``warm``'s server is up (or failed); False if it was not started or is not done."""
    return _SERVER.started and _SERVER.done.wait(timeout)


def pages(
    client: HubSpotClient, source: PageSource, *, in_process: bool, ahead: int
) -> Iterator[list[Record]]:
    """``source``'s pages, read up to ``ahead`` pages ahead of the caller (and one more waiting for
    room) by ``client`` in a thread, or by a copy of it in a process of its own."""
    if not in_process or _SERVER.error is not None:
        return prefetched(source.pages(client), ahead=ahead * source.limit)
    return _from_process(client, source, ahead)


def _from_process(client: HubSpotClient, source: PageSource, ahead: int) -> Iterator[list[Record]]:
    receive, send = _CTX.Pipe(duplex=False)
    # A credit per page taken: the reader sends at most ``ahead`` pages the daemon has not taken.
    credits_in, credits_out = _CTX.Pipe(duplex=False)
    with contextlib.suppress(OSError):  # a bigger pipe, so a page is never held up by the buffer
        fcntl.fcntl(send.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    proc = _CTX.Process(
        target=_serve,
        args=(send, credits_in, ahead, client.settings, client.windows, source),
        name="nps-sync-hubspot-pages",
        daemon=True,
    )
    proc.start()
    send.close()
    credits_in.close()
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:
                proc.join(JOIN_SECONDS)
                raise ConnectorUnavailable(
                    f"contacts: the HubSpot page reader (pid {proc.pid}) stopped before the last "
                    f"page (exit code {proc.exitcode})",
                    connector=NAME,
                ) from None
            kind = message[0]
            if kind == "page":
                with contextlib.suppress(OSError):  # the reader is gone: the next recv says so
                    credits_out.send_bytes(b"c")
                _, records, remaining, limit = message
                if remaining is not None:
                    client.note_daily(remaining, limit)
                yield records
            elif kind == "log":
                _, method, event_dict = message
                getattr(log, method, log.info)(**event_dict)
            elif kind == "end":
                return
            else:
                _, name, text, status, retry_after = message
                cls = _ERRORS.get(name, ConnectorUnavailable)
                if cls is RateLimited:
                    raise RateLimited(text, connector=NAME, status=status, retry_after=retry_after)
                raise cls(text, connector=NAME, status=status)
    finally:
        # A reader still at work meets a closed pipe at its next page and stops there.
        receive.close()
        credits_out.close()
        proc.join(0)
        if proc.exitcode is None:
            threading.Thread(target=proc.join, name="hubspot-reader-reap", daemon=True).start()


class _Forward:
    """The reader's log lines go to the daemon, which logs them as its own."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        plain = {
            k: v if isinstance(v, str | int | float | bool | type(None)) else str(v)
            for k, v in event_dict.items()
        }
        self.conn.send(("log", method, plain))
        raise structlog.DropEvent


def _serve(
    conn: Connection,
    credits: Connection,
    ahead: int,
    settings: dict[str, Any],
    windows: tuple[SlidingWindow, SlidingWindow],
    source: PageSource,
) -> None:
    structlog.configure(processors=[_Forward(conn)])
    # The daemon warns about the daily allowance from the figures sent with each page, once.
    client = HubSpotClient(**{**settings, "daily_warn_fraction": 0.0}, windows=windows)
    # The next page is asked for while this one is pickled and sent: a thread reads one page ahead
    # (and holds one more waiting for room), so the pipe gets two credits fewer.
    left = max(ahead - 2, 1)
    try:
        try:
            for records in prefetched(source.pages(client), ahead=source.limit):
                while left == 0:
                    left += len(credits.recv_bytes())
                conn.send(("page", records, client.daily_remaining, client.daily_limit))
                left -= 1
            conn.send(("end",))
        except ConnectorError as exc:
            conn.send(("error", type(exc).__name__, str(exc), exc.status, getattr(exc, "retry_after", None)))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(exc)).strip()
            conn.send(
                ("error", "ConnectorUnavailable", f"the HubSpot page reader failed: {detail}", None, None)
            )
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the daemon stopped reading
    finally:
        client.close()
        conn.close()
        credits.close()
