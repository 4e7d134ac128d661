"""The emulator answers like HubSpot: shapes the SDK's model classes accept, caps, limits, error bodies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import hubspot.crm.contacts as hs_contacts
import hubspot.crm.lists as hs_lists
import hubspot.crm.objects.tasks as hs_tasks
import hubspot.crm.owners as hs_owners
import hubspot.crm.properties as hs_properties
import pytest
from hubspot import HubSpot

from tests.emulators.hubspot import HubSpotEmulator
from tests.harness import SEED_DIR


def call(emu: HubSpotEmulator, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(emu.url + path, data=data, method=method)  # noqa: S310 - http to loopback
    request.add_header("Authorization", f"Bearer {emu.token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http to loopback
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def wire_names(model: type) -> set[str]:
    return set(model.attribute_map.values())  # type: ignore[attr-defined]


@pytest.fixture
def emu() -> Iterator[HubSpotEmulator]:
    emulator = HubSpotEmulator(seed_dir=SEED_DIR).start()
    yield emulator
    emulator.stop()


def test_sdk_model_classes_accept_every_response_the_connector_reads(emu: HubSpotEmulator) -> None:
    """Deserialising through the SDK's models checks required fields and enum values."""
    sdk = HubSpot(access_token=emu.token, host=emu.url)
    contacts = sdk.crm.contacts
    page = contacts.basic_api.get_page(limit=2, properties=["email"], associations=["companies"])
    first = page.results[0]
    assert (first.id, "companies") == (
        page.results[0].properties["hs_object_id"],
        next(iter(first.associations)),
    )
    batch = contacts.batch_api.read(
        batch_read_input_simple_public_object_id=hs_contacts.BatchReadInputSimplePublicObjectId(
            inputs=[hs_contacts.SimplePublicObjectId(id=first.id), hs_contacts.SimplePublicObjectId(id="1")],
            properties=["email"],
            properties_with_history=[],
        )
    )
    assert ([first.id], {"ids": ["1"]}) == ([r.id for r in batch.results], batch.errors[0].context)
    japan = hs_contacts.Filter(property_name="country", operator="EQ", value="JP")
    found = contacts.search_api.do_search(
        public_object_search_request=hs_contacts.PublicObjectSearchRequest(
            filter_groups=[hs_contacts.FilterGroup(filters=[japan])],
            properties=["email"],
            limit=2,
            after="0",
            sorts=[],
        )
    )
    assert (5, "2") == (found.total, found.paging.next.after)
    owners = sdk.crm.owners.owners_api.get_page(limit=100)
    assert isinstance(owners.results[0], hs_owners.PublicOwner)
    props = sdk.crm.properties.core_api.get_all(object_type="contacts")
    assert isinstance(props.results[0], hs_properties.ModelProperty)
    list_id = emu.add_list([first.id])
    members = sdk.crm.lists.memberships_api.get_page(list_id=list_id)
    assert isinstance(members.results[0], hs_lists.JoinTimeAndRecordId)
    task = sdk.crm.objects.tasks.basic_api.create(
        simple_public_object_input_for_create=hs_tasks.SimplePublicObjectInputForCreate(
            properties={"hs_timestamp": "2026-12-01T16:00:00Z", "hs_task_subject": "s"},
            associations=[
                hs_tasks.PublicAssociationsForObject(
                    to=hs_tasks.PublicObjectId(id=first.id),
                    types=[
                        hs_tasks.AssociationSpec(
                            association_category="HUBSPOT_DEFINED", association_type_id=204
                        )
                    ],
                )
            ],
        )
    )
    assert "2026-12-01T16:00:00.000Z" == task.properties["hs_timestamp"]


PAGE_MODEL = hs_contacts.CollectionResponseSimplePublicObjectWithAssociationsForwardPaging
OBJECT_MODEL = hs_contacts.SimplePublicObjectWithAssociations


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/crm/v3/objects/contacts?limit=1&properties=email", PAGE_MODEL),
        ("/crm/v3/objects/contacts/101?associations=companies", OBJECT_MODEL),
        ("/crm/v3/owners/?limit=1", hs_owners.CollectionResponsePublicOwnerForwardPaging),
        ("/crm/v3/owners/1001", hs_owners.PublicOwner),
        ("/crm/v3/properties/contacts/nps_category", hs_properties.ModelProperty),
    ],
)  # fmt: skip
def test_responses_use_only_field_names_the_sdk_models_know(
    emu: HubSpotEmulator, path: str, model: type
) -> None:
    status, _, body = call(emu, "GET", path)
    assert 200 == status
    assert set() == set(body) - wire_names(model)


def error_shape(body: Mapping[str, Any]) -> set[str]:
    return {"status", "message", "correlationId", "category"} - set(body)


def test_more_than_100_batch_inputs_is_a_400_with_hubspot_error_body(emu: HubSpotEmulator) -> None:
    inputs = [{"id": str(100 + n), "properties": {"nps_score": "1"}} for n in range(101)]
    status, _, body = call(emu, "POST", "/crm/v3/objects/contacts/batch/update", {"inputs": inputs})
    assert (400, "VALIDATION_ERROR", set()) == (status, body["category"], error_shape(body))
    assert set() == set(body) - wire_names(hs_contacts.Error) - {"status"}


def test_search_refuses_to_page_past_10000_results(emu: HubSpotEmulator) -> None:
    emu.add_contacts(10_050)
    request = {"filterGroups": [], "limit": 200, "after": "9800", "sorts": ["hs_object_id"], "properties": []}
    assert 200 == call(emu, "POST", "/crm/v3/objects/contacts/search", request)[0]
    status, _, body = call(emu, "POST", "/crm/v3/objects/contacts/search", {**request, "after": "9900"})
    assert (400, set()) == (status, error_shape(body))


def test_the_ten_second_window_answers_429_with_rate_limit_headers(emu: HubSpotEmulator) -> None:
    emu.window_calls = 2
    statuses = [call(emu, "GET", "/crm/v3/owners/")[:2] for _ in range(3)]
    assert [200, 200, 429] == [s for s, _ in statuses]
    assert ("1", "0") == (
        statuses[0][1]["X-HubSpot-RateLimit-Remaining"],
        statuses[2][1]["X-HubSpot-RateLimit-Remaining"],
    )
    body = call(emu, "GET", "/crm/v3/owners/")[2]
    assert ("TEN_SECONDLY_ROLLING", "RATE_LIMIT", set()) == (
        body["policyName"],
        body["errorType"],
        error_shape(body),
    )


def test_the_search_limit_answers_429_without_rate_limit_headers(emu: HubSpotEmulator) -> None:
    emu.search_per_second = 1
    request = {"filterGroups": [], "limit": 1}
    first = call(emu, "POST", "/crm/v3/objects/contacts/search", request)
    status, headers, body = call(emu, "POST", "/crm/v3/objects/contacts/search", request)
    assert (200, 429, "SECONDLY") == (first[0], status, body["policyName"])
    assert [] == [h for h in (*first[1], *headers) if h.lower().startswith("x-hubspot-ratelimit")]


def test_creating_an_existing_property_is_a_409(emu: HubSpotEmulator) -> None:
    definition = {
        "name": "nps_score",
        "label": "NPS",
        "type": "number",
        "fieldType": "number",
        "groupName": "nps",
    }
    status, _, body = call(emu, "POST", "/crm/v3/properties/contacts", definition)
    assert (409, "OBJECT_ALREADY_EXISTS") == (status, body["category"])


def test_a_property_value_outside_the_options_is_refused(emu: HubSpotEmulator) -> None:
    update = {"inputs": [{"id": "101", "properties": {"nps_category": "fan"}}]}
    status, _, body = call(emu, "POST", "/crm/v3/objects/contacts/batch/update", update)
    assert (400, "INVALID_OPTION") == (status, body["errors"][0]["code"])


def test_calls_are_counted_by_kind(emu: HubSpotEmulator) -> None:
    call(emu, "GET", "/crm/v3/owners/")
    call(emu, "GET", "/crm/v3/objects/contacts?limit=1")
    call(emu, "POST", "/crm/v3/objects/tasks/search", {"filterGroups": []})
    assert {"owners.list": 1, "contacts.list": 1, "tasks.search": 1} == dict(emu.calls)
