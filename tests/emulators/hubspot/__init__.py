"""HubSpot CRM v3 emulator for hubspot-api-client tests (see ``server.py``)."""

from tests.emulators.hubspot.server import ALL_SCOPES, HubSpotEmulator

__all__ = ["ALL_SCOPES", "HubSpotEmulator"]
