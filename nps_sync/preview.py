"""``nps-sync preview``: render the survey exactly as one contact would receive it."""

from __future__ import annotations

import uuid
from typing import Any

from nps_sync.errors import NpsSyncError
from nps_sync.models import OutboundMessage, SendOutcome
from nps_sync.render import choose_language
from nps_sync.timezones import normalize_email, normalize_phone


def preview_message(
    rt: Any, program_name: str, contact_id: str, channel: str | None = None
) -> OutboundMessage:
    program = rt.config.program_named(program_name)
    contacts = rt.crm.get_contacts([contact_id])
    if contact_id not in contacts:
        raise NpsSyncError(f"no contact {contact_id!r} in the CRM ({rt.crm.name})")
    contact = contacts[contact_id]
    kind = channel or ("sms" if program.channel == "sms" else "email")
    language = choose_language(contact.locale, program)
    key = f"preview|{program.name}|{contact.id}|{uuid.uuid4().hex[:8]}"
    if kind == "sms":
        to = normalize_phone(contact.phone) or (contact.phone or "")
        return rt.renderer.survey_sms(send_key=key, to=to, program=program, language=language)  # type: ignore[no-any-return]
    to = normalize_email(contact.email) or (contact.email or "")
    # Send id 0 belongs to no survey: links in a preview show "survey not found" and record nothing.
    return rt.renderer.survey_email(  # type: ignore[no-any-return]
        send_id=0,
        send_key=key,
        to=to,
        first_name=contact.first_name,
        program=program,
        language=language,
        purpose="preview",
    )


def send_preview(rt: Any, message: OutboundMessage, to: str) -> SendOutcome:
    """Send the rendering to a test address (not the contact), straight through the channel."""
    from dataclasses import replace

    outcome: SendOutcome = rt.channels[message.channel].send([replace(message, to=to, purpose="preview")])[0]
    return outcome
