"""Playbooks: TOML-defined follow-up for survey answers (CRM tasks, emails, SMS, field updates,
webhooks), executed as durable steps of the job queue.

The core loads them with :func:`load_playbooks` (all problems at once, in one ``ConfigError``),
checks them with :func:`check_playbooks`, and drives a :class:`PlaybookEngine`: ``on_event`` in the
transaction that recorded a response, ``run_steps`` as the ``playbook_step`` job handler,
``scan_no_response`` and ``check_overdue`` periodically, ``simulate`` for previews.
"""

from nps_sync.playbooks.actions import ACTIONS, ActionSpec, Outcome, StepCall
from nps_sync.playbooks.engine import JOB_KIND, PlaybookEngine
from nps_sync.playbooks.events import PlaybookEvent, PlaybookMessage, PlaybookServices, SimulatedStep
from nps_sync.playbooks.model import Playbook, Step, check_playbooks, load_playbooks

__all__ = [
    "ACTIONS",
    "JOB_KIND",
    "ActionSpec",
    "Outcome",
    "Playbook",
    "PlaybookEngine",
    "PlaybookEvent",
    "PlaybookMessage",
    "PlaybookServices",
    "SimulatedStep",
    "Step",
    "StepCall",
    "check_playbooks",
    "load_playbooks",
]
