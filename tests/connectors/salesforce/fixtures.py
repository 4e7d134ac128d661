"""The Salesforce connector on the emulator, for its own tests and the contract and end-to-end suites."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.salesforce import CONNECTOR, SalesforceCRM
from nps_sync.connectors.salesforce.config import SalesforceOptions
from nps_sync.connectors.salesforce.connector import AUDIENCE_SIZE_SETTING
from nps_sync.secrets import Secrets
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.emulators.salesforce import Credentials, SalesforceEmulator
from tests.emulators.salesforce.org import id18
from tests.harness import CrmUnderTest, E2ECrm, ProbedTask

_CREDENTIALS: list[Credentials] = []


def credentials() -> Credentials:
    """One RSA key pair for the whole run: generating one per test would dominate the runtime."""
    if not _CREDENTIALS:
        _CREDENTIALS.append(Credentials())
    return _CREDENTIALS[0]


def secrets_env(emulator: SalesforceEmulator, auth: str) -> dict[str, str]:
    c = emulator.credentials
    if auth == "jwt":
        return {"SALESFORCE_CONSUMER_KEY": c.consumer_key, "SALESFORCE_PRIVATE_KEY": c.private_key_pem}
    if auth == "client_credentials":
        return {"SALESFORCE_CONSUMER_KEY": c.consumer_key, "SALESFORCE_CONSUMER_SECRET": c.consumer_secret}
    return {"SALESFORCE_PASSWORD": c.password, "SALESFORCE_SECURITY_TOKEN": c.security_token}


def base_options(emulator: SalesforceEmulator, auth: str = "jwt", **options: Any) -> dict[str, Any]:
    c = emulator.credentials
    table: dict[str, Any] = {"auth": auth, "transport_url": emulator.url, "bulk_poll_seconds": 0.01}
    if auth in ("jwt", "password"):
        table["username"] = c.username
    if auth == "client_credentials":
        table["domain"] = c.my_domain
    table.update(options)
    return table


class SalesforceProbe:
    """Looks into the emulated org directly."""

    def __init__(self, emulator: SalesforceEmulator, options: SalesforceOptions | None = None) -> None:
        self.emulator = emulator
        self.org = emulator.org
        self.options = options or SalesforceOptions(username="probe")

    def _one(self, sobject: str, name: str, value: str) -> str:
        found = self.org.find(sobject, name, value)
        assert len(found) == 1, f"expected one {sobject} with {name}={value!r}, found {len(found)}"
        return str(found[0]["Id"])

    def contact_id(self, email: str) -> str:
        return self._one("Contact", "Email", email)

    def missing_contact_id(self) -> str:
        return id18("003Dx9999999999")

    def account_id(self, name: str) -> str:
        return self._one("Account", "Name", name)

    def owner_id(self, email: str) -> str:
        return self._one("User", "Email", email)

    @staticmethod
    def text(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return str(value)

    def contact_value(self, contact_id: str, logical: str) -> str | None:
        name = getattr(self.options.contact_fields, logical, logical)
        return self.text(self.org.records["Contact"][contact_id].get(name))

    def account_value(self, account_id: str, logical: str) -> str | None:
        name = getattr(self.options.account_fields, logical, logical)
        return self.text(self.org.records["Account"][account_id].get(name))

    def tasks(self) -> list[ProbedTask]:
        return [
            ProbedTask(
                id=t["Id"],
                key=t.get(self.options.task_key_field),
                contact_id=t.get("WhoId"),
                account_id=t.get("WhatId"),
                owner_id=t.get("OwnerId"),
                subject=t.get("Subject") or "",
                body=t.get("Description") or "",
                due=t.get("ActivityDate"),
                completed=bool(t.get("IsClosed")),
                priority=(t.get("Priority") or "").lower(),
            )
            for t in sorted(self.org.records["Task"].values(), key=lambda t: (t["CreatedDate"], t["Id"]))
        ]

    def complete_task(self, task_id: str) -> None:
        self.org.update("Task", task_id, {"Status": "Completed"})

    def call_counts(self) -> Mapping[str, int]:
        return self.emulator.call_counts()


@pytest.fixture
def salesforce_emulator() -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator(credentials=credentials()).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def salesforce_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One migrated database serves every test (the connector keeps only the sizes of its audience
    pulls there, which ``make_salesforce_crm`` clears after each test)."""
    store = Store("sqlite:///" + str(tmp_path_factory.mktemp("salesforce") / "state.db"))
    store.upgrade()
    yield store
    store.dispose()


MakeCrm = Callable[..., SalesforceCRM]


@pytest.fixture
def make_salesforce_crm(
    salesforce_emulator: SalesforceEmulator, salesforce_store: Store, tmp_path: Path
) -> Iterator[MakeCrm]:
    """Build connectors on the running emulator: ``make(auth="password", bulk_query_threshold=10)``."""
    built: list[SalesforceCRM] = []

    def make(auth: str = "jwt", env: Mapping[str, str] | None = None, **options: Any) -> SalesforceCRM:
        ctx = ConnectorContext(
            role="crm",
            state_dir=tmp_path,
            public_url="http://127.0.0.1:8080",
            time_zone=ZoneInfo("UTC"),
            secrets=Secrets(environ=dict(env if env is not None else secrets_env(salesforce_emulator, auth))),
            store=salesforce_store,
        )
        parsed = CONNECTOR.options.model_validate(base_options(salesforce_emulator, auth, **options))
        crm = CONNECTOR.factory(parsed, ctx)
        assert isinstance(crm, SalesforceCRM)
        built.append(crm)
        return crm

    yield make
    for crm in built:
        crm.close()
    settings = schema.settings
    with salesforce_store.begin() as conn:
        conn.execute(delete(settings).where(settings.c.key.startswith(AUDIENCE_SIZE_SETTING)))


@pytest.fixture
def crm_under_test_salesforce(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> CrmUnderTest:
    crm = make_salesforce_crm()
    return CrmUnderTest(
        crm=crm,
        probe=SalesforceProbe(salesforce_emulator, crm.options),
        audience_all={},
        audience_fabrikam={"soql_where": "Account.Name = 'Fabrikam GmbH'"},
    )


@pytest.fixture
def crm_e2e_salesforce(salesforce_emulator: SalesforceEmulator) -> E2ECrm:
    """A daemon logs in with the username-password flow; its https traffic goes to the emulator."""
    c = salesforce_emulator.credentials
    toml = (
        "[crm]\n"
        'kind = "salesforce"\n\n'
        "[crm.salesforce]\n"
        'auth = "password"\n'
        f'username = "{c.username}"\n'
        f'transport_url = "{salesforce_emulator.url}"\n'
        "bulk_poll_seconds = 0.05\n"
    )
    return E2ECrm(
        config_toml=toml,
        probe=SalesforceProbe(salesforce_emulator),
        audience_all={},
        env=secrets_env(salesforce_emulator, "password"),
    )
