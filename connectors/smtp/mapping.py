"""Constants and conversions: an ``OutboundMessage`` → an RFC 5322 message, SMTP replies → outcomes.

No smtplib here (``client.py`` is the only module that talks SMTP); the stdlib ``email`` package
builds the message.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from nps_sync.models import OutboundMessage

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}

#: Our key on every message, so a bounce or a complaint can be traced back to the send.
SEND_KEY_HEADER = "X-NPS-Send-Key"

#: Headers we set from the message itself; the core's extra headers never replace these.
_OWN_HEADERS = frozenset(
    h.lower()
    for h in ("From", "To", "Subject", "Reply-To", "Date", "Message-ID", "MIME-Version", SEND_KEY_HEADER)
)

#: CRLF line ends and a 7-bit body (quoted-printable), so the message passes any relay unchanged
#: whether it offers 8BITMIME or not. ``refold_source="none"`` keeps the core's headers exactly as we
#: fold them: the email package would otherwise turn a List-Unsubscribe line longer than 78 characters
#: into RFC 2047 encoded words, which mailbox providers do not decode, breaking one-click unsubscribe.
WIRE_POLICY = policy.SMTP.clone(refold_source="none")
#: The same for addresses that need SMTPUTF8 (the relay must offer it).
WIRE_POLICY_UTF8 = policy.SMTPUTF8.clone(refold_source="none")
#: RFC 5322 §2.1.1: lines MUST NOT exceed 998 characters (78 is only a SHOULD).
MAX_LINE = 998
_LIST_ENTRY = re.compile(r",\s*(?=<)")

#: RCPT replies that mean "this mailbox does not exist" (RFC 3463 X.1.x address status): the core
#: suppresses the address. Policy refusals (5.7.x: spam, relaying denied) and full mailboxes do not.
_SUPPRESS_BASIC = frozenset({550, 551, 553})
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS_STATUS = frozenset({"1.1", "1.2", "1.3", "1.6", "1.10"})
_NO_SUCH_USER = re.compile(
    r"no such (user|mailbox|recipient)|user unknown|unknown (user|recipient|mailbox)|"
    r"does not exist|doesn't exist|mailbox unavailable|invalid (recipient|mailbox|address)|"
    r"recipient address rejected",
    re.IGNORECASE,
)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def should_suppress(code: int, text: str) -> bool:
    """True when an SMTP refusal says the mailbox does not exist (550/551/553 "no such user")."""
    if code not in _SUPPRESS_BASIC:
        return False
    enhanced = _ENHANCED.match(text)
    if enhanced is not None:
        return f"{enhanced.group(2)}.{enhanced.group(3)}" in _ADDRESS_STATUS
    return _NO_SUCH_USER.search(text) is not None


def bare_address(value: str) -> str:
    """``"Name <a@b>"`` or ``"a@b"`` → ``"a@b"``; raises ValueError when there is no address."""
    _, address = parseaddr(value)
    if "@" not in address or any(c.isspace() for c in address):
        raise ValueError(f"expected an email address like 'Name <user@example.com>', got: {value!r}")
    return address


def needs_smtputf8(*addresses: str) -> bool:
    """Non-ASCII in an address (not in names or text) needs the relay's SMTPUTF8 extension."""
    return any(not a.isascii() for a in addresses)


def fold_ascii(name: str, value: str) -> str:
    """Fold an ASCII header between ``<…>`` list entries only, never inside a URL.

    Raises ValueError for line breaks in the value (header injection) or a line over 998 characters.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} must be one line, got: {value!r}")
    if len(name) + 2 + len(value) <= 78:
        return value
    lines = _LIST_ENTRY.split(value.strip())
    folded = ",\n ".join(lines)
    # The first line carries "Name: ", the others a leading space; all but the last a comma.
    widths = [len(name) + 3 + len(lines[0]), *(len(line) + 2 for line in lines[1:])]
    if max(widths) > MAX_LINE:
        raise ValueError(f"header {name} has an entry longer than {MAX_LINE} characters: {value[:80]!r}…")
    return folded


@dataclass(frozen=True)
class Built:
    """A message ready for the wire, with the envelope the relay gets."""

    message_id: str
    envelope_from: str
    recipient: str
    data: bytes
    smtputf8: bool


def build(message: OutboundMessage, *, now: datetime, envelope_from: str | None = None) -> Built:
    """Build the RFC 5322 message for ``message``. Raises ValueError for an unusable address."""
    sender = bare_address(message.sender)
    recipient = bare_address(message.to)
    mail_from = envelope_from or sender
    domain = sender.rpartition("@")[2]
    smtputf8 = needs_smtputf8(sender, recipient, mail_from)

    msg = EmailMessage(policy=WIRE_POLICY_UTF8 if smtputf8 else WIRE_POLICY)
    name, _ = parseaddr(message.sender)
    msg["From"] = Address(display_name=name, addr_spec=sender) if name else sender
    msg["To"] = message.to
    msg["Subject"] = message.subject
    if message.reply_to:
        msg["Reply-To"] = message.reply_to
    msg["Date"] = format_datetime(now)
    message_id = make_msgid(domain=domain.encode("idna").decode("ascii"))
    msg["Message-ID"] = message_id
    for header, value in message.headers.items():
        if header.lower() in _OWN_HEADERS or header.lower().startswith("content-"):
            continue
        del msg[header]
        if value.isascii():
            msg.set_raw(header, fold_ascii(header, value))
        else:
            msg[header] = value
    msg[SEND_KEY_HEADER] = message.send_key
    msg.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return Built(
        message_id=message_id,
        envelope_from=mail_from,
        recipient=recipient,
        data=msg.as_bytes(),
        smtputf8=smtputf8,
    )
