"""The floor set by the APIs themselves (../shared/docs/sdk-facts.md §6): minimum calls per kind and
the wall-time lower bound, for one scenario's sizes.

Symbols: N contacts read, A accounts, E emails, S SMS, W scores written, Aw accounts whose roll-up
changes, T tasks, O owners, L the emulators' round-trip latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SF_PAGE = 2000
SF_COLLECTION = 200
SF_BULK_THRESHOLD = 10_000  # the connector's default bulk_query_threshold
SF_BULK_PAGE = 50_000
HS_PAGE = 100
HS_BATCH = 100
HS_WINDOW_CALLS = 190
HS_WINDOW_SECONDS = 10.0
SG_BATCH = 1000
TWILIO_CONCURRENCY = 100
OWNERS = 10

#: Emulator call kind → the job it belongs to (the rows of the table).
GROUPS = {
    "salesforce:query": "read",
    "salesforce:queryMore": "read",
    "salesforce:bulk_query_create": "read",
    "salesforce:bulk_query_status": "read",
    "salesforce:bulk_query_results": "read",
    "salesforce:collections_update": "write-back",
    "salesforce:collections_create": "tasks",
    "salesforce:soap_login": "fixed",
    "salesforce:token": "fixed",
    "salesforce:describe": "fixed",
    "hubspot:contacts.list": "read",
    "hubspot:companies.batch_read": "read",
    "hubspot:contacts.batch_update": "write-back",
    "hubspot:companies.batch_update": "write-back",
    "hubspot:tasks.batch_create": "tasks",
    "hubspot:tasks.search": "task-key lookup",
    "salesforce:query_task_keys": "task-key lookup",
    "salesforce:query_owners": "owners",
    "hubspot:owners.list": "owners",
    "hubspot:properties.list": "fixed",
    "sendgrid:mail_send": "send",
    # The baseline's one-record calls.
    "salesforce:sobject_get": "read",
    "salesforce:sobject_update": "write-back",
    "salesforce:sobject_create": "tasks",
    "hubspot:contacts.get": "read",
    "hubspot:tasks.create": "tasks",
    "twilio:messages.create": "send",
}


def soql_job(soql: str) -> str:
    """The job a Salesforce query does: task-key lookup, owners, or reading the audience."""
    lowered = soql.lower()
    if " from task" in lowered:
        return "task-key lookup"
    if " from user" in lowered:
        return "owners"
    return "read"


def c(x: float, y: float) -> int:
    return math.ceil(x / y) if x > 0 else 0


@dataclass
class Floor:
    calls: dict[str, int]  # job → minimum calls
    seconds: float
    how: str


def floor(
    crm: str,
    channel: str,
    n: int,
    *,
    accounts: int,
    responses: int,
    latency: float,
    sms_mps: float,
    mode: str = "wave",
) -> Floor:
    """The minimum for a wave (or, with mode="pull", a pull-and-eligibility pass)."""
    w = t = responses
    aw = min(accounts, responses)
    e, s = (n, 0) if channel == "email" else (0, n)
    if mode == "pull":
        w = t = aw = e = s = 0
    calls: dict[str, int] = {}
    if crm == "salesforce":
        calls["read"] = c(n, SF_PAGE) if n <= SF_BULK_THRESHOLD else 2 + c(n, SF_BULK_PAGE)
        calls["write-back"] = c(w, SF_COLLECTION) + c(aw, SF_COLLECTION)
        calls["tasks"] = c(t, SF_COLLECTION)
        calls["task-key lookup"] = 0  # §6 has none: only a retried step looks its task's key up
        calls["owners"] = 1 if t else 0
        calls["fixed"] = 1 + (2 if t else 1)  # login; describe Contact (and Task when tasks are made), cached
        sequential = calls["read"] * latency
        rate = 0.0
    else:
        calls["read"] = c(n, HS_PAGE) + c(accounts, HS_BATCH)
        calls["write-back"] = c(w, HS_BATCH) + c(aw, HS_BATCH)
        calls["tasks"] = c(t, HS_BATCH)
        calls["task-key lookup"] = 0  # §6 has none: only a retried step looks its task's key up
        calls["owners"] = 1 if t else 0
        # One property read (kept) per object type written before its first write: contacts, and
        # companies for the roll-up. HubSpot has no call that reads two object types' properties.
        calls["fixed"] = (1 if w else 0) + (1 if aw else 0)
        # Wall time is the wave phase plus the tail after the last answer; the answers' own calls
        # (write-backs, tasks, searches) are made while answers arrive, which is not timed. So the
        # rate bound counts the wave phase's calls: the reads (HubSpot's window starts empty).
        wave_calls = calls["read"]
        rate = HS_WINDOW_SECONDS * ((wave_calls - 1) // HS_WINDOW_CALLS)
        sequential = c(n, HS_PAGE) * latency  # cursor paging: each page needs the previous one's cursor
    if channel == "email":
        calls["send"] = c(e, SG_BATCH)
        send = calls["send"] * latency
    else:
        calls["send"] = s
        send = max(s * latency / TWILIO_CONCURRENCY, s / sms_mps)
    tail = 0.0 if mode == "pull" else 2 * latency  # the last answer's write-back and task
    seconds = max(rate, sequential, send) + tail
    how = f"max(rate {rate:.1f} s, paging {sequential:.1f} s, send {send:.1f} s) + tail {tail:.2f} s"
    return Floor(calls, seconds, how)


#: Emulator-side counters that are not calls made to the API (webhooks the emulator posted).
NOT_CALLS = ("twilio:messages.accepted", "twilio:webhooks.status", "twilio:webhooks.inbound")


def grouped(calls: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, v in calls.items():
        if kind in NOT_CALLS:
            continue
        group = GROUPS.get(kind, f"other ({kind.split(':', 1)[1]})")
        out[group] = out.get(group, 0) + v
    return out
