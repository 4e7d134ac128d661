"""The TOML an ops person writes for HubSpot validates, and the daemon's end-to-end table is usable."""

from __future__ import annotations

import sys

from nps_sync.connectors.hubspot import CONNECTOR
from nps_sync.connectors.hubspot.config import HubSpotAudience, HubSpotOptions
from tests.harness import E2ECrm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

OPS_TOML = """
[crm]
kind = "hubspot"

[crm.hubspot]
access_token_secret = "HUBSPOT_ACCESS_TOKEN"
rate_limit_calls = 190
task_due_time = "16:30"
contact_properties = { sms_opt_out = "sms_stop" }
managers = { "tom.becker@example.com" = "sam.carter@example.com" }

[[program]]
[program.audience]
filter_groups = [
  { filters = [ { property = "lifecyclestage", operator = "EQ", value = "customer" },
                { property = "hs_object_id", operator = "HAS_PROPERTY" } ] },
  { filters = [ { property = "country", operator = "IN", values = ["DE", "AT"] } ] },
]
page_size = 200
"""


def test_the_documented_toml_validates() -> None:
    data = tomllib.loads(OPS_TOML)
    options = HubSpotOptions.model_validate(data["crm"]["hubspot"])
    audience = HubSpotAudience.model_validate(data["program"][0]["audience"])
    assert (190, "16:30:00", "sms_stop") == (
        options.rate_limit_calls,
        options.task_due_time.isoformat(),
        options.contact_properties.sms_opt_out,
    )
    assert [2, 1] == [len(g.filters) for g in audience.filter_groups or ()]


def test_the_end_to_end_table_points_the_daemon_at_the_emulator(crm_e2e_hubspot: E2ECrm) -> None:
    data = tomllib.loads(crm_e2e_hubspot.config_toml)
    options = CONNECTOR.options.model_validate(data["crm"]["hubspot"])
    assert "hubspot" == data["crm"]["kind"]
    assert isinstance(options, HubSpotOptions)
    assert options.base_url.startswith("http://127.0.0.1:")
    assert {options.access_token_secret} == set(crm_e2e_hubspot.env)
    HubSpotAudience.model_validate(crm_e2e_hubspot.audience_all)
