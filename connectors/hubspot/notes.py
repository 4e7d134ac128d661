"""HubSpot notes: an engagement of type note (``hs_note_body``, ``hs_timestamp``) associated with the
contact, shown on its timeline.

Notes take no custom property of ours, so the key lives at the end of the body (``[nps:…]``). Before
creating, the contact's notes are listed through its associations (read from the record itself,
never trailing a write as search does) and their bodies checked for the key; a create whose answer
was lost is resolved the same way, never by sending it again.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime, timezone

import structlog

from nps_sync.errors import AmbiguousOutcome, ConnectorUnavailable, PermanentError

from .client import NAME, HubSpotClient
from .mapping import BATCH_LIMIT, chunks, is_record_id

log = structlog.get_logger("nps_sync.connectors.hubspot.notes")

NOTE_BODY = "hs_note_body"
NOTE_TIMESTAMP = "hs_timestamp"
#: HubSpot-defined association type: note → contact.
ASSOC_NOTE_TO_CONTACT = 202
#: hs_note_body holds at most 65,536 characters.
MAX_BODY = 65_536


def marker(key: str) -> str:
    return f"[{key}]"


def note_body(key: str, title: str, body: str) -> str:
    """The HTML HubSpot shows: the title in bold, the text escaped with its line breaks, our key last."""
    text = html.escape(body).replace("\r\n", "\n").replace("\n", "<br>")
    tail = f"<p>{html.escape(marker(key))}</p>"
    head = f"<p><strong>{html.escape(title)}</strong></p><p>"
    room = MAX_BODY - len(head) - len("</p>") - len(tail)
    return f"{head}{text[:room]}</p>{tail}"


def find_note(client: HubSpotClient, contact_id: str, key: str) -> str | None:
    ids = client.associated_ids("contacts", contact_id, "notes")
    wanted = html.escape(marker(key))
    for chunk in chunks(ids, BATCH_LIMIT):
        for record in client.batch_read("notes", chunk, [NOTE_BODY]):
            if wanted in (record.properties.get(NOTE_BODY) or ""):
                return record.id
    return None


def add_note(
    client: HubSpotClient,
    key: str,
    contact_id: str,
    title: str,
    body: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> str:
    if not is_record_id(contact_id):
        raise PermanentError(f"not a HubSpot contact id: {contact_id!r}", connector=NAME)
    existing = find_note(client, contact_id, key)
    if existing is not None:
        return existing
    stamp = now().astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    properties = {NOTE_BODY: note_body(key, title, body), NOTE_TIMESTAMP: stamp}
    try:
        created = client.create_note(properties, contact_id, ASSOC_NOTE_TO_CONTACT)
    except AmbiguousOutcome:
        found = find_note(client, contact_id, key)
        if found is not None:
            return found
        raise ConnectorUnavailable(
            f"note {key!r}: the create call got no answer and the note is not there yet", connector=NAME
        ) from None
    log.info("hubspot.note_added", key=key, note_id=created.id, contact_id=contact_id)
    return created.id
