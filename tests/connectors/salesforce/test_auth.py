"""Login flows, secrets by name, and session renewal."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from nps_sync.connectors.salesforce.config import SalesforceOptions
from nps_sync.errors import AuthFailed
from nps_sync.models import Audience
from tests.connectors.salesforce.fixtures import MakeCrm, SalesforceProbe, secrets_env
from tests.emulators.salesforce import Credentials, SalesforceEmulator


@pytest.mark.parametrize(
    ("auth", "login_kind"),
    [("jwt", "token"), ("client_credentials", "token"), ("password", "soap_login")],
)
def test_each_login_flow_reaches_the_org(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm, auth: str, login_kind: str
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    crm = make_salesforce_crm(auth=auth)

    owners = crm.get_owners([probe.owner_id("maria.lopez@example.com")])

    assert ["Maria Lopez"] == [o.name for o in owners.values()]
    assert {login_kind: 1, "query": 1} == salesforce_emulator.call_counts()


def test_jwt_private_key_may_be_a_file_path(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm, tmp_path: Path
) -> None:
    key_file = tmp_path / "server.key"
    key_file.write_text(salesforce_emulator.credentials.private_key_pem)
    env = {
        "SALESFORCE_CONSUMER_KEY": salesforce_emulator.credentials.consumer_key,
        "SALESFORCE_PRIVATE_KEY": str(key_file),
    }
    crm = make_salesforce_crm(env=env)

    assert [] == crm.check(online=True)


def test_secrets_are_read_from_the_credentials_directory(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm, tmp_path: Path
) -> None:
    for name, value in secrets_env(salesforce_emulator, "client_credentials").items():
        (tmp_path / name.lower().replace("_", "-")).write_text(value + "\n")
    crm = make_salesforce_crm(auth="client_credentials", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})

    assert 50 == len([c for page in crm.iter_audience(_all()) for c in page])


def _all() -> Audience:
    return Audience(program="auth", filter={}, channel="email")


def test_a_jwt_signed_with_another_key_is_refused_as_auth_failed(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    other = Credentials()
    env = {
        "SALESFORCE_CONSUMER_KEY": salesforce_emulator.credentials.consumer_key,
        "SALESFORCE_PRIVATE_KEY": other.private_key_pem,
    }
    crm = make_salesforce_crm(env=env)

    with pytest.raises(AuthFailed, match="refused the jwt login at login: invalid_grant: invalid assertion"):
        crm.get_owners(["005Dx0000000001AAA"])


def test_a_wrong_password_is_auth_failed(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    crm = make_salesforce_crm(
        auth="password", env={"SALESFORCE_PASSWORD": "wrong", "SALESFORCE_SECURITY_TOKEN": "x"}
    )

    with pytest.raises(AuthFailed, match="INVALID_LOGIN"):
        crm.find_owner("jweber")


def test_a_missing_secret_names_where_it_was_looked_for(make_salesforce_crm: MakeCrm) -> None:
    crm = make_salesforce_crm(env={"SALESFORCE_CONSUMER_KEY": "k"})

    with pytest.raises(AuthFailed, match="environment variable SALESFORCE_PRIVATE_KEY"):
        crm.find_owner("jweber")


def test_an_expired_session_is_renewed_once_and_the_call_repeated(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    crm = make_salesforce_crm()
    assert crm.find_owner("jonas.weber@example.com") is not None
    salesforce_emulator.expire_sessions()

    tom = crm.find_owner("tom.becker@example.com")  # another user: the first one is kept

    assert tom is not None
    assert {"token": 2, "query": 3} == salesforce_emulator.call_counts()


def test_a_session_refused_right_after_login_is_auth_failed_not_a_loop(
    make_salesforce_crm: MakeCrm, salesforce_emulator: SalesforceEmulator
) -> None:
    salesforce_emulator.sessions.session_ttl = 0  # every token is dead on arrival
    crm = make_salesforce_crm()

    with pytest.raises(AuthFailed, match="session invalid right after a new login"):
        crm.find_owner("jonas.weber@example.com")
    assert {"token": 2, "query": 2} == salesforce_emulator.call_counts()


def test_login_domain_comes_from_domain_instance_url_or_sandbox() -> None:
    assert "login" == SalesforceOptions(username="u").login_domain
    assert "test" == SalesforceOptions(username="u", sandbox=True).login_domain
    assert (
        "acme.my"
        == SalesforceOptions(username="u", instance_url="https://acme.my.salesforce.com").login_domain
    )
    assert (
        "acme--uat.sandbox.my" == SalesforceOptions(username="u", domain="acme--uat.sandbox.my").login_domain
    )


def test_client_credentials_without_my_domain_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="needs domain set to your My Domain"):
        SalesforceOptions(auth="client_credentials")


def test_jwt_without_username_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="needs username"):
        SalesforceOptions(auth="jwt")
