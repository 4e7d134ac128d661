"""SendGrid v3 emulator (``mail/send``, ``scopes``) and a signed Event Webhook sender."""

from tests.emulators.sendgrid.events import EventSigner, make_event
from tests.emulators.sendgrid.server import SendGridEmulator
from tests.emulators.sendgrid.spec import spec_skip_reason

__all__ = ["EventSigner", "SendGridEmulator", "make_event", "spec_skip_reason"]
