"""Salesforce notes on the wire (simple-salesforce against the emulator): a Lightning note
(ContentNote) linked to the contact in one all-or-none Composite call, found by our key before any
retry, escaped as Salesforce requires."""

from __future__ import annotations

import pytest

from nps_sync.errors import PermanentError
from tests.conftest import CRM_BACKENDS
from tests.harness import CrmUnderTest

pytestmark = pytest.mark.skipif(
    "salesforce" not in CRM_BACKENDS, reason="tests/connectors/salesforce/fixtures.py is absent"
)
KEY = "nps:testimonial:7:consent"
BODY = 'Quote: "Fast & friendly <3"\nShown as: Alice Smith'


@pytest.fixture
def sf(crm_under_test_salesforce: CrmUnderTest) -> CrmUnderTest:
    return crm_under_test_salesforce


def test_a_note_is_one_content_note_linked_to_the_contact(sf: CrmUnderTest) -> None:
    org = sf.probe.org  # type: ignore[attr-defined]
    alice = sf.probe.contact_id("alice.smith@northwind.example")
    emulator = sf.probe.emulator  # type: ignore[attr-defined]
    sf.crm.add_note(KEY, alice, "NPS testimonial: consent to publish", BODY)  # logs in, describes
    emulator.reset_counts()

    note_id = sf.crm.add_note(KEY, alice, "NPS testimonial: consent to publish", BODY)

    [note] = org.records["ContentNote"].values()
    [link] = org.records["ContentDocumentLink"].values()
    assert (note_id, f"NPS testimonial: consent to publish [{KEY}]") == (note["Id"], note["Title"])
    assert 'Quote: "Fast &amp; friendly &lt;3"<br>Shown as: Alice Smith' == note["Content"]
    assert (note_id, alice, "I") == (link["ContentDocumentId"], link["LinkedEntityId"], link["ShareType"])
    assert {"query": 1} == {k: v for k, v in sf.probe.call_counts().items() if v}


def test_a_lost_composite_answer_is_resolved_by_the_key_not_by_sending_again(sf: CrmUnderTest) -> None:
    org = sf.probe.org  # type: ignore[attr-defined]
    emulator = sf.probe.emulator  # type: ignore[attr-defined]
    alice = sf.probe.contact_id("alice.smith@northwind.example")
    emulator.drop_next_response("composite")

    note_id = sf.crm.add_note(KEY, alice, "NPS testimonial: consent to publish", BODY)

    assert [note_id] == list(org.records["ContentNote"])
    assert 1 == sf.probe.call_counts()["composite"]


def test_a_refused_link_rolls_the_note_back(sf: CrmUnderTest) -> None:
    org = sf.probe.org  # type: ignore[attr-defined]
    with pytest.raises(PermanentError, match="INVALID_CROSS_REFERENCE_KEY"):
        sf.crm.add_note(KEY, sf.probe.missing_contact_id(), "NPS testimonial", BODY)
    assert ({}, {}) == (org.records["ContentNote"], org.records["ContentDocumentLink"])
