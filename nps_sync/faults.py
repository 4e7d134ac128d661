"""A test hook for crash tests: inert unless ``NPS_SYNC_CRASH_AT`` is set.

``crash_point(name)`` ends the process at once with ``os._exit(137)`` (the exit code of a SIGKILL,
no clean-up, no flushed buffers, no committed transaction) when ``NPS_SYNC_CRASH_AT`` equals
``name``. The variable is read once at import, so in production each call costs one comparison.

The points (tests/chaos/test_r2_crash_points.py holds the expected end state of each):

- ``send.claimed_uncommitted``: inside the claim transaction, before its commit;
- ``send.claimed``: after the claim commit, before the provider is called;
- ``send.before_record``: after the provider answered, before the outcome commit;
- ``send.recorded``: after the outcome commit;
- ``writeback.after_crm``: after ``CRM.update_contacts`` returned, before the job is marked done;
- ``playbook.after_create_tasks``: after the step actions (``CRM.create_tasks``) returned, before
  the step is recorded.

"The provider accepted but our code has not seen the answer" is not a hook: the tests make it with
the fault proxy holding the provider's answer, then SIGKILL.
"""

from __future__ import annotations

import os

_CRASH_AT = os.environ.get("NPS_SYNC_CRASH_AT") or None


def crash_point(name: str) -> None:
    if name == _CRASH_AT:
        os._exit(137)
