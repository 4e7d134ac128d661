"""An audience's pages read in a process of its own (``read_pages_in_process``), on the emulator."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.connectors.hubspot.connector import RAW_PAGES_AHEAD
from nps_sync.errors import ConnectorUnavailable
from nps_sync.models import Audience
from nps_sync.store.db import Store
from tests.connectors.hubspot.fixtures import build_hubspot, hubspot_options
from tests.e2e.daemon import wait_for
from tests.emulators.hubspot import HubSpotEmulator

READER = "nps-sync-hubspot-pages"
EVERYONE = Audience(program="p", filter={"all_contacts": True}, channel="email")


def readers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == READER]


@pytest.fixture
def emu() -> Iterator[HubSpotEmulator]:
    emulator = HubSpotEmulator().start()
    yield emulator
    emulator.stop()


def crm_on(emu: HubSpotEmulator, store: Store, tmp_path: Path, **overrides: object) -> HubSpotCrm:
    return build_hubspot(emu, store, tmp_path, hubspot_options(emu, **overrides))


#: Pages read while the daemon works on the first: ten sent ahead of it, one more waiting for room.
HELD = 1 + RAW_PAGES_AHEAD + 1


def reading_ahead(emu: HubSpotEmulator, store: Store, tmp_path: Path) -> tuple[HubSpotCrm, Iterator[Any]]:
    """3,000 contacts, the first page taken: the reader has read as far ahead as it may."""
    emu.add_contacts(3_000)
    crm = crm_on(emu, store, tmp_path)
    pages = crm.iter_audience(EVERYONE)
    assert 100 == len(next(pages))
    wait_for(lambda: emu.calls["contacts.list"] == HELD, timeout=10, what="the read-ahead")
    return crm, pages


def test_the_pages_come_from_a_process_of_their_own_with_the_same_calls_as_a_thread(
    emu: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    emu.add_contacts(1_050)
    results = {}
    for in_process in (True, False):
        emu.reset_counts()
        crm = crm_on(emu, sqlite_store, tmp_path, read_pages_in_process=in_process)
        pages = crm.iter_audience(EVERYONE)
        first = next(pages)
        alive = len(readers())
        ids = [c.id for c in first] + [c.id for page in pages for c in page]
        results[in_process] = (alive, len(ids), len(set(ids)), dict(emu.calls))
        crm.close()
    calls = {"contacts.list": 11}
    assert results == {True: (1, 1_050, 1_050, calls), False: (0, 1_050, 1_050, calls)}


def test_the_reader_and_the_daemon_share_one_rate_window(sqlite_store: Store, tmp_path: Path) -> None:
    """HubSpot counts the app's calls: with a window of its own each process would make 10 a
    second and the portal would refuse the excess."""
    emu = HubSpotEmulator(window_calls=10, window_seconds=1.0).start()
    try:
        ids = emu.add_contacts(2_000)
        crm = crm_on(emu, sqlite_store, tmp_path, rate_limit_calls=10, rate_limit_window_seconds=1.0)
        found: dict[str, object] = {}

        def look_up() -> None:
            for start in range(0, 1_000, 100):
                found.update(crm.get_contacts(ids[start : start + 100]))

        other = threading.Thread(target=look_up)
        other.start()
        read = [c.id for page in crm.iter_audience(EVERYONE) for c in page]
        other.join()
        assert (len(read), len(found)) == (2_000, 1_000)
        assert {} == dict(emu.rejected)
        assert {"contacts.list": 20, "contacts.batch_read": 10} == {
            k: v for k, v in emu.calls.items() if k.startswith("contacts.")
        }
    finally:
        emu.stop()


def test_the_readers_log_lines_are_the_daemons_and_its_retries_are_counted(
    emu: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    emu.add_contacts(300)
    crm = crm_on(emu, sqlite_store, tmp_path)
    emu.fail_next("contacts.list", 1, status=429, retry_after="0")
    with capture_logs() as logs:
        read = [c.id for page in crm.iter_audience(EVERYONE) for c in page]
    retries = [e for e in logs if e["event"] == "hubspot.retrying"]
    assert (len(read), emu.calls["contacts.list"], emu.rejected["contacts.list"]) == (300, 4, 1)
    assert [(r["kind"], r["attempt"]) for r in retries] == [("contacts.list", 1)]


def test_a_reader_that_dies_is_an_unavailable_crm_after_the_pages_it_sent(
    emu: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    crm, pages = reading_ahead(emu, sqlite_store, tmp_path)
    got = 100
    [reader] = readers()
    assert reader.pid is not None
    os.kill(reader.pid, signal.SIGKILL)
    got += sum(len(page) for page in itertools.islice(pages, RAW_PAGES_AHEAD - 2))
    with pytest.raises(ConnectorUnavailable, match=r"page reader \(pid \d+\) stopped before the last page"):
        next(pages)
    # What was sent before it died came through: the first page and the eight it had credit for.
    assert got == 100 * (1 + RAW_PAGES_AHEAD - 2)
    crm.close()


def test_a_reader_stops_when_the_daemon_stops_reading(
    emu: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    crm, pages = reading_ahead(emu, sqlite_store, tmp_path)
    assert 1 == len(readers())
    pages.close()  # type: ignore[attr-defined]  # a generator
    wait_for(lambda: not readers(), timeout=10, what="the reader to exit")
    assert emu.calls["contacts.list"] == HELD
    crm.close()
