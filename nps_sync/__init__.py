"""nps-sync: close the loop on customer feedback.

Pulls customers from a CRM, sends NPS surveys by email or SMS, records answers, writes scores back
to the CRM and runs playbooks that open CRM tasks for account managers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nps-sync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
