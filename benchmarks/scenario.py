"""One scenario: a full wave through a real daemon process, or a pull-and-eligibility pass."""

# ruff: noqa: S603, S607 - the benchmark starts its own processes (python, psql) with fixed argument lists

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from sqlalchemy import and_

from benchmarks.bounds import soql_job
from benchmarks.harness import (
    WORK,
    Emulators,
    Helpers,
    count,
    peak_rss_mb,
    start_daemon,
    wait_until,
    wave_row,
)
from benchmarks.loadgen import form_post, json_post, open_loop
from nps_sync.store import schema
from tests.e2e.daemon import afternoon_zone

RESPONSE_SHARE = 0.30
RESPONSE_RATE = 100.0  # responses a second
DETRACTOR_SCORE = "3"


@dataclass
class Result:
    name: str
    crm: str
    channel: str
    contacts: int
    mode: str  # "wave" | "pull" | "baseline"
    responses: int = 0
    tasks: int = 0
    accounts_written: int = 0
    wave_seconds: float = 0.0  # wave start → every survey accepted by the provider
    tail_seconds: float = 0.0  # last response → every write-back and task in the CRM
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    latency_p50: float | None = None
    latency_p99: float | None = None
    calls: dict[str, int] = field(default_factory=dict)
    #: The CRM reads (pages) of the wave phase, one after another: how many, their time at the
    #: emulator (its latency included) and the time between one's answer and the next's request.
    reads: int = 0
    reads_at_emulator: float = 0.0
    reads_between: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def run_wave(
    emu: Emulators,
    crm: str,
    channel: str,
    n: int,
    *,
    accounts: int | None = None,
    web_processes: int = 0,
    task_batch_wait: float | None = None,
) -> Result:
    name = f"{crm}-{channel}-{n}"
    accounts = accounts or max(10, n // 100)
    emu.call("/reset")
    emu.call("/seed", crm=crm, n=n, zone=afternoon_zone(), accounts=accounts)
    result = Result(name, crm, channel, n, "wave")
    if web_processes:
        result.notes.append(f"web_processes = {web_processes}")
    if task_batch_wait is not None:
        result.notes.append(f"task_batch_wait = {task_batch_wait:g}")
    daemon, store = start_daemon(
        emu, name, crm, channel, web_processes=web_processes, task_batch_wait=task_batch_wait
    )
    assert daemon.proc is not None
    helpers = Helpers(daemon.proc.pid)
    sends = schema.sends
    try:
        timeout = 120 + n * 0.05
        wait_until(
            lambda: (w := wave_row(store)) is not None and w["state"] == "done",
            timeout=timeout,
            what=f"{name}: the wave to finish",
        )
        wave = wave_row(store)
        eligible = int(wave["counts"].get("eligible", 0))
        if eligible != n:
            result.notes.append(f"only {eligible} of {n} eligible: {dict(wave['counts'])}")
        survey = and_(sends.c.kind == "survey", sends.c.state.in_(("queued", "sending")))
        wait_until(
            lambda: count(store, sends, survey) == 0,
            timeout=timeout,
            interval=0.1,
            what=f"{name}: every survey sent",
        )
        started = _utc(wave["started_at"]).timestamp()
        sent = count(store, sends, and_(sends.c.kind == "survey", sends.c.state == "sent"))
        if sent != eligible:
            result.notes.append(f"{eligible - sent} of {eligible} surveys not 'sent' (unknown/failed)")
        wait_until(
            lambda: emu.call("/received")[channel] >= sent,
            timeout=60,
            what=f"{name}: surveys at the provider",
        )

        surveys = emu.call("/surveys", channel=channel)
        step = max(1, round(1 / RESPONSE_SHARE))
        chosen = [s for i, s in enumerate(surveys) if i % step == 0][
            : int(len(surveys) * RESPONSE_SHARE) or 1
        ]
        posted = asyncio.run(_respond(emu, daemon.url, channel, chosen))
        last_post = max(posted.values())
        result.responses = len(posted)
        writeback_due = and_(
            schema.jobs.c.kind.in_(("writeback", "account_rollup", "playbook_step")),
            schema.jobs.c.state.in_(("queued", "running")),
            schema.jobs.c.run_at <= datetime.now(timezone.utc),
        )
        wait_until(
            lambda: emu.call("/task_count") >= len(posted),
            timeout=120 + n * 0.02,
            what=f"{name}: a task per detractor",
        )
        wait_until(
            lambda: count(store, schema.jobs, writeback_due) == 0,
            timeout=120 + n * 0.02,
            what=f"{name}: write-back jobs done",
        )
        # Both ends come from the emulators' own clock: the moment the provider answered the last
        # survey's send, and the moment the CRM answered the last write or task after the last answer
        # (the runner's polling only tells that everything is done, not when it was).
        served = emu.call("/served")
        first_post = min(posted.values())
        _time_reads(served, crm, result, before=first_post)
        result.wave_seconds = max(b for _, b, m, p in served if b < first_post and _is_send(m, p)) - started
        result.tail_seconds = max(0.0, max(b for _, b, _, p in served if _is_crm(p)) - last_post)
        seen = emu.call("/tasks_seen", contact_ids=list(posted))
        lat = sorted(seen[c] - t for c, t in posted.items() if c in seen)
        result.tasks = len(seen)
        if lat:
            result.latency_p50 = statistics.median(lat)
            result.latency_p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        result.accounts_written = len({s["contact_id"] for s in chosen})  # refined by bounds
        result.wall_seconds = result.wave_seconds + result.tail_seconds
        result.peak_rss_mb = peak_rss_mb(daemon.proc.pid) + helpers.stop()
        # The calls' timeline, for reading a wave's critical path after the run.
        (WORK / f"served-{name}.json").write_text(
            json.dumps({"started": started, "last_post": last_post, "served": served})
        )
        counts = emu.call("/counts")
        result.calls = _calls(counts, crm, channel)
        result.rejected = counts.get("hubspot_rejected", {}) if crm == "hubspot" else {}
    finally:
        daemon.stop()
        store.dispose()
    return result


def run_pull(emu: Emulators, crm: str, n: int) -> Result:
    """Pull and eligibility only (sending paused with the kill switch): the memory pass."""
    name = f"{crm}-pull-{n}"
    emu.call("/reset")
    emu.call("/seed", crm=crm, n=n, zone=afternoon_zone(), accounts=max(10, n // 100))
    result = Result(name, crm, "email", n, "pull")
    daemon, store = start_daemon(emu, name, crm, "email", paused=True)
    assert daemon.proc is not None
    helpers = Helpers(daemon.proc.pid)
    try:
        wait_until(
            lambda: (w := wave_row(store)) is not None and w["state"] == "done",
            timeout=300 + n * 0.01,
            interval=1.0,
            what=f"{name}: the wave to finish",
        )
        wave = wave_row(store)
        result.wave_seconds = (_utc(wave["finished_at"]) - _utc(wave["started_at"])).total_seconds()
        result.wall_seconds = result.wave_seconds
        _time_reads(emu.call("/served"), crm, result)
        result.peak_rss_mb = peak_rss_mb(daemon.proc.pid) + helpers.stop()
        result.calls = _calls(emu.call("/counts"), crm, "email")
        if int(wave["counts"].get("eligible", 0)) != n:
            result.notes.append(f"counts: {dict(wave['counts'])}")
    finally:
        daemon.stop()
        store.dispose()
    return result


def _is_send(method: str, path: str) -> bool:
    """A survey handed to the provider: SendGrid's mail send or Twilio's message create."""
    return method == "POST" and (path.startswith("/v3/mail/send") or path.endswith("/Messages.json"))


def _is_crm(path: str) -> bool:
    """A call to either CRM's emulator (Salesforce REST and SOAP, HubSpot's CRM API)."""
    return path.startswith(("/services/", "/crm/"))


def _time_reads(
    served: list[tuple[float, float, str, str]], crm: str, result: Result, *, before: float | None = None
) -> None:
    """Split the audience reads (answered ``before`` the answers began, in a wave) into time at the
    emulator and time in the daemon between them (HubSpot: the contacts list pages; Salesforce: REST
    query pages, Bulk job status and results)."""
    reads = []
    for arrived, answered, method, target in served:
        if method != "GET" or (before is not None and answered >= before):
            continue
        path, _, query = target.partition("?")
        if crm == "hubspot":
            audience = path == "/crm/v3/objects/contacts"
        else:  # not the owners' or task keys' queries
            audience = "/query" in path and soql_job(unquote_plus(query)) == "read"
        if audience:
            reads.append((arrived, answered))
    result.reads = len(reads)
    result.reads_at_emulator = sum(b - a for a, b in reads)
    result.reads_between = sum(max(0.0, nxt[0] - prev[1]) for prev, nxt in itertools.pairwise(reads))


def _calls(counts: dict[str, dict[str, int]], crm: str, channel: str) -> dict[str, int]:
    out = {f"{crm}:{k}": v for k, v in counts[crm].items()}
    provider = "sendgrid" if channel == "email" else "twilio"
    out.update({f"{provider}:{k}": v for k, v in counts[provider].items()})
    return out


async def _respond(
    emu: Emulators, daemon_url: str, channel: str, chosen: list[dict[str, Any]]
) -> dict[str, float]:
    """Answer at RESPONSE_RATE a second, open loop: email through POST /r/{token} (the web form),
    SMS through Twilio's signed inbound webhook (the emulator host posts it). Returns contact id →
    the wall-clock time the answer was due to leave."""
    target = urlsplit(daemon_url if channel == "email" else emu.info["control"])
    host, port = target.hostname or "127.0.0.1", target.port or 80
    if channel == "email":
        requests = [
            form_post(urlsplit(s["link"]).path, host, port, {"score": DETRACTOR_SCORE, "comment": "slow"})
            for s in chosen
        ]
    else:
        requests = [
            json_post("/sms_reply", host, port, {"number": s["to"], "body": DETRACTOR_SCORE}) for s in chosen
        ]
    bodies: dict[int, bytes] = {}
    due, _, status = await open_loop(host, port, requests, RESPONSE_RATE, connections=128, refused=bodies)
    if bodies:
        shown = "; ".join(f"HTTP {status[i]} {body[:300]!r}" for i, body in list(bodies.items())[:3])
        raise RuntimeError(f"{len(bodies)} answers refused: {shown}")
    return {s["contact_id"]: due[i] for i, s in enumerate(chosen)}


def run_load(
    emu: Emulators, database: str, rate: float, seconds: float, web_processes: int, runs: int = 1
) -> list[dict[str, Any]]:
    """POST /r/{token} at ``rate`` a second from the load generator's own process, the daemon serving
    HTTP from ``web_processes`` processes of their own (0: from a thread of the daemon). ``runs``
    runs on one wave, each with surveys not answered before, each once the daemon has caught up
    with the previous one (one 10 s run's p99 moves by a factor of 2 to 3 on a busy 2-core machine)."""
    import json
    import subprocess
    import sys

    from benchmarks.harness import WORK
    from tests.e2e.daemon import REPO

    per_run = int(rate * seconds)
    n = per_run * runs + 100
    url = ""
    if database == "postgresql":
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", "DROP DATABASE IF EXISTS nps_bench"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", "CREATE DATABASE nps_bench"],
            check=True,
            capture_output=True,
        )
        url = "postgresql+psycopg://postgres@127.0.0.1:5432/nps_bench"
    emu.call("/reset")
    emu.call("/seed", crm="salesforce", n=n, zone=afternoon_zone(), accounts=max(10, n // 100))
    daemon, store = start_daemon(
        emu, f"load-{database}", "salesforce", "email", database_url=url, web_processes=web_processes
    )
    sends, jobs = schema.sends, schema.jobs
    results: list[dict[str, Any]] = []
    try:
        wait_until(
            lambda: (w := wave_row(store)) is not None and w["state"] == "done",
            timeout=300,
            what="load: the wave",
        )
        survey = and_(sends.c.kind == "survey", sends.c.state.in_(("queued", "sending")))
        wait_until(lambda: count(store, sends, survey) == 0, timeout=300, what="load: every survey sent")
        wait_until(lambda: emu.call("/received")["email"] >= n, timeout=60, what="load: surveys at SendGrid")
        time.sleep(2)  # let SendGrid's delivery events land first
        links = [s["link"] for s in emu.call("/surveys", channel="email")]
        for run in range(runs):
            # The daemon has recorded and acted on every earlier answer: each run starts alike.
            busy = and_(jobs.c.state.in_(("queued", "running")), jobs.c.run_at <= datetime.now(timezone.utc))
            wait_until(lambda busy=busy: count(store, jobs, busy) == 0, timeout=300, what="load: caught up")
            path = WORK / f"links-{database}.txt"
            path.write_text("\n".join(links[run * per_run : (run + 1) * per_run]))
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.loadgen",
                    "--links",
                    str(path),
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            )
            if out.returncode:
                raise RuntimeError(f"the load generator exited with {out.returncode}: {out.stderr[-2000:]}")
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            result["database"] = "SQLite" if database == "sqlite" else "PostgreSQL"
            result["web_processes"] = web_processes
            result["run"] = run + 1
            results.append(result)
        return results
    finally:
        daemon.stop()
        store.dispose()
