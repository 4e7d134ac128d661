"""HubSpot notes on the wire (hubspot-api-client against the emulator): one note associated with the
contact, found by our key through the contact's associations before any create, escaped HTML."""

from __future__ import annotations

import pytest

from nps_sync.errors import PermanentError
from tests.conftest import CRM_BACKENDS
from tests.harness import CrmUnderTest

pytestmark = pytest.mark.skipif(
    "hubspot" not in CRM_BACKENDS, reason="tests/connectors/hubspot/fixtures.py is absent"
)
KEY = "nps:testimonial:7:consent"
TITLE = "NPS testimonial: consent to publish"
BODY = 'Quote: "Fast & friendly <3"\nShown as: Alice Smith'


@pytest.fixture
def hs(crm_under_test_hubspot: CrmUnderTest) -> CrmUnderTest:
    return crm_under_test_hubspot


def counts(cut: CrmUnderTest) -> dict[str, int]:
    return {k: v for k, v in cut.probe.call_counts().items() if v}


def test_a_note_is_created_once_on_the_contacts_timeline(hs: CrmUnderTest) -> None:
    portal = hs.probe.emu.portal  # type: ignore[attr-defined]
    alice = hs.probe.contact_id("alice.smith@northwind.example")
    hs.probe.emu.reset_counts()  # type: ignore[attr-defined]

    note_id = hs.crm.add_note(KEY, alice, TITLE, BODY)
    assert {"contacts.associations": 1, "notes.create": 1} == counts(hs)
    assert note_id == hs.crm.add_note(KEY, alice, TITLE, BODY)
    assert {"contacts.associations": 2, "notes.batch_read": 1, "notes.create": 1} == counts(hs)

    [note] = portal.objects["notes"].values()
    assert (
        "<p><strong>NPS testimonial: consent to publish</strong></p>"
        "<p>Quote: &quot;Fast &amp; friendly &lt;3&quot;<br>Shown as: Alice Smith</p>"
        f"<p>[{KEY}]</p>"
    ) == note.properties["hs_note_body"]
    assert note.properties["hs_timestamp"].endswith("Z")
    assert {"contacts": {alice: {202}}} == note.associations


def test_a_lost_create_answer_is_resolved_by_the_key_not_by_sending_again(hs: CrmUnderTest) -> None:
    portal = hs.probe.emu.portal  # type: ignore[attr-defined]
    alice = hs.probe.contact_id("alice.smith@northwind.example")
    hs.probe.emu.fail_next("notes.create", drop_response=True)  # type: ignore[attr-defined]

    note_id = hs.crm.add_note(KEY, alice, TITLE, BODY)

    assert [note_id] == list(portal.objects["notes"])
    assert 1 == hs.probe.call_counts()["notes.create"]


def test_a_note_for_an_unknown_contact_is_refused_for_good(hs: CrmUnderTest) -> None:
    with pytest.raises(PermanentError):
        hs.crm.add_note(KEY, hs.probe.missing_contact_id(), TITLE, BODY)
    assert {} == hs.probe.emu.portal.objects["notes"]  # type: ignore[attr-defined]
