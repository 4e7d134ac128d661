"""Every SDK sub-package's ApiException, and network failures, become nps_sync.errors kinds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.hubspot import CONNECTOR, HubSpotCrm
from nps_sync.errors import AuthFailed, ConfigError, ConnectorUnavailable, PermanentError
from nps_sync.models import Audience
from nps_sync.secrets import Secrets
from nps_sync.store.db import Store
from tests.connectors.hubspot.fixtures import TIME_ZONE, build_hubspot, hubspot_options
from tests.emulators.hubspot import ALL_SCOPES, HubSpotEmulator
from tests.harness import SEED_DIR


def audience(table: dict[str, object]) -> Audience:
    return Audience(program="p", filter=table, channel="email")


OPERATIONS: dict[str, Callable[[HubSpotCrm], Any]] = {
    "contacts": lambda crm: list(crm.iter_audience(audience({"all_contacts": True}))),
    "lists": lambda crm: list(crm.iter_audience(audience({"list_id": "11"}))),
    "owners": lambda crm: crm.find_owner("jonas.weber@example.com"),
    "properties": lambda crm: crm.setup(),
    "tasks": lambda crm: crm.get_tasks(["90001"]),
}


@pytest.mark.parametrize("package", sorted(OPERATIONS))
def test_a_refused_token_is_auth_failed_in_every_sdk_package(
    package: str, hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    hubspot_emulator.token = "pat-na1-revoked"
    with pytest.raises(AuthFailed, match="401"):
        OPERATIONS[package](hubspot_crm)


def test_a_missing_scope_is_auth_failed_naming_the_scope(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    hubspot_emulator.scopes = set(ALL_SCOPES - {"crm.objects.companies.read"})
    with pytest.raises(AuthFailed, match=r"crm\.objects\.companies\.read") as caught:
        hubspot_crm.get_contacts(["101"])  # the contact reads, its company does not
    assert 403 == caught.value.status


def test_an_unknown_list_is_a_permanent_error(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    with pytest.raises(PermanentError, match="404"):
        list(hubspot_crm.iter_audience(audience({"list_id": "424242"})))
    assert {"lists.memberships": 1} == dict(hubspot_emulator.calls)


def test_an_unreachable_hubspot_is_unavailable_after_the_attempts(
    sqlite_store: Store, tmp_path: Path
) -> None:
    emu = HubSpotEmulator(seed_dir=SEED_DIR).start()
    options = hubspot_options(emu, max_attempts=2)
    emu.stop()
    crm = build_hubspot(emu, sqlite_store, tmp_path, options)
    with pytest.raises(ConnectorUnavailable, match="cannot reach HubSpot"):
        crm.get_contacts(["101"])


def test_check_reports_a_refused_token_instead_of_raising(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    hubspot_emulator.token = "pat-na1-revoked"
    [problem] = hubspot_crm.check(online=True)
    assert "401" in problem


def test_a_missing_token_names_where_it_was_looked_for(sqlite_store: Store, tmp_path: Path) -> None:
    ctx = ConnectorContext(
        role="crm", state_dir=tmp_path, public_url="http://127.0.0.1:8080", time_zone=TIME_ZONE,
        secrets=Secrets(environ={}), store=sqlite_store,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN"):
        CONNECTOR.factory(CONNECTOR.options.model_validate({}), ctx)
