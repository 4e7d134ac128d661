"""Twilio emulator: REST (Messages, Account, Messaging Service) and the signed webhooks it sends."""

from tests.emulators.twilio.hooks import Posted, WebhookSender, twiml_messages
from tests.emulators.twilio.server import ApiError, Fault, TwilioEmulator
from tests.emulators.twilio.spec import SPEC_MISSING

__all__ = ["SPEC_MISSING", "ApiError", "Fault", "Posted", "TwilioEmulator", "WebhookSender", "twiml_messages"]
