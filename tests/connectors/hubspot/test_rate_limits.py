"""Rate limits: the client-side limiter keeps HubSpot's windows, 429s are recovered from exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.errors import RateLimited
from nps_sync.models import Audience, ContactUpdate, TaskSpec
from nps_sync.store.db import Store
from tests.connectors.hubspot.fixtures import HubSpotProbe, build_hubspot, hubspot_options
from tests.connectors.hubspot.test_tasks import specs_for
from tests.emulators.hubspot import HubSpotEmulator
from tests.harness import SEED_DIR


def read_all(crm: HubSpotCrm, table: dict[str, object], page_size: int = 200) -> list[str]:
    audience = Audience(program="p", filter=table, channel="email", page_size=page_size)
    return [c.id for page in crm.iter_audience(audience) for c in page]


def test_normal_operation_stays_inside_both_windows(sqlite_store: Store, tmp_path: Path) -> None:
    emu = HubSpotEmulator(seed_dir=SEED_DIR, window_calls=20, window_seconds=1.0, search_per_second=5).start()
    try:
        emu.add_contacts(1_100, jobtitle="Volume buyer")
        options = hubspot_options(
            emu, rate_limit_calls=20, rate_limit_window_seconds=1.0, search_per_second=5
        )
        crm = build_hubspot(emu, sqlite_store, tmp_path, options)
        everyone = read_all(crm, {"all_contacts": True})
        buyers = read_all(
            crm, {"filter_groups": [{"filters": [{"property": "jobtitle", "value": "Volume buyer"}]}]}, 100
        )
        result = crm.update_contacts([ContactUpdate(i, {"score": 8}) for i in everyone])
        assert (1_150, 1_100, 1_150) == (len(everyone), len(buyers), len(result.succeeded))
        assert {} == dict(emu.rejected)
        expected = {
            "contacts.list": 12,
            "contacts.search": 11,
            "contacts.batch_update": 12,
            "companies.batch_read": 1,
            "properties.list": 1,
        }
        assert expected == dict(emu.calls)
        assert emu.daily_limit - emu.daily_used == crm.client.daily_remaining
    finally:
        emu.stop()


def test_a_429_burst_on_writes_is_recovered_with_nothing_lost(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    ids = hubspot_emulator.add_contacts(250)
    hubspot_crm.update_contacts([ContactUpdate(ids[0], {"score": 1})])
    hubspot_emulator.reset_counts()
    hubspot_emulator.fail_next("contacts.batch_update", 3)
    result = hubspot_crm.update_contacts([ContactUpdate(i, {"score": 6}) for i in ids])
    assert (250, ()) == (len(result.succeeded), result.failed)
    probe = HubSpotProbe(hubspot_emulator)
    assert {"6"} == {probe.contact_value(i, "score") for i in ids}
    assert ({"contacts.batch_update": 6}, {"contacts.batch_update": 3}) == (
        dict(hubspot_emulator.calls),
        dict(hubspot_emulator.rejected),
    )


def test_a_429_burst_on_task_creation_creates_each_task_once(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    specs = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 120)
    hubspot_emulator.reset_counts()
    hubspot_emulator.fail_next("tasks.batch_create", 2)
    hubspot_emulator.fail_next("tasks.search", 1)
    results = hubspot_crm.create_tasks(specs)
    assert 120 == len({r.task_id for r in results if r.task_id})
    assert 120 == len(hubspot_emulator.portal.objects["tasks"])
    # 429s are refusals: repeating the POST is safe, and nothing was created twice
    assert {"tasks.search": 3, "tasks.batch_create": 4} == dict(hubspot_emulator.calls)


def test_a_persistent_429_is_tried_max_attempts_times_not_multiplied_by_sdk_retries(
    hubspot_emulator: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    crm = build_hubspot(
        hubspot_emulator, sqlite_store, tmp_path, hubspot_options(hubspot_emulator, max_attempts=3)
    )
    # with Retry-After on a GET, the SDK's default urllib3 retry would repeat it on its own
    hubspot_emulator.fail_next("contacts.list", 50, retry_after="0")
    with pytest.raises(RateLimited) as caught:
        read_all(crm, {"all_contacts": True})
    assert 0.0 == caught.value.retry_after
    assert {"contacts.list": 3} == dict(hubspot_emulator.calls)


def test_the_daily_limit_is_not_retried(hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm) -> None:
    hubspot_emulator.daily_limit = 0
    with pytest.raises(RateLimited, match="DAILY"):
        hubspot_crm.get_contacts(["101"])
    assert {"contacts.batch_read": 1} == dict(hubspot_emulator.calls)


def test_server_errors_on_reads_are_retried(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    alice = HubSpotProbe(hubspot_emulator).contact_id("alice.smith@northwind.example")
    hubspot_emulator.fail_next("contacts.batch_read", 2, status=502)
    assert [alice] == list(hubspot_crm.get_contacts([alice]))
    assert 3 == hubspot_emulator.calls["contacts.batch_read"]


def test_a_server_error_on_task_creation_is_never_repeated_blindly(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    spec: TaskSpec = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 1)[0]
    hubspot_emulator.reset_counts()
    hubspot_emulator.fail_next("tasks.batch_create", 1, status=500)
    [first] = hubspot_crm.create_tasks([spec])
    assert (None, True) == (first.task_id, first.transient)
    assert {"tasks.search": 2, "tasks.batch_create": 1} == dict(hubspot_emulator.calls)
    [second] = hubspot_crm.create_tasks([spec])
    assert (False, 1) == (second.existed, len(hubspot_emulator.portal.objects["tasks"]))
