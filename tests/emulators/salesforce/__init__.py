"""An in-memory Salesforce org behind a REST emulator, for tests of the Salesforce connector."""

from tests.emulators.salesforce.auth import Credentials
from tests.emulators.salesforce.org import ValidationRule
from tests.emulators.salesforce.server import SalesforceEmulator

__all__ = ["Credentials", "SalesforceEmulator", "ValidationRule"]
