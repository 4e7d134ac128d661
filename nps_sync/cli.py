"""The ``nps-sync`` command."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import desc, select

from nps_sync import __version__
from nps_sync import config as config_mod
from nps_sync.cli_options import config_option
from nps_sync.errors import ConfigError, NpsSyncError

EX_CONFIG = 78  # sysexits EX_CONFIG: systemd's RestartPreventExitStatus stops a restart loop on it

console = Console(width=None if sys.stdout.isatty() else 220)
err = Console(stderr=True)


def load_config(path: Path) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {escape(problem)}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(EX_CONFIG)


def runtime(path: Path) -> Any:
    from nps_sync.logs import configure
    from nps_sync.runtime import Runtime

    cfg = load_config(path)
    configure("console", "warning")
    try:
        return Runtime(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
        sys.exit(EX_CONFIG)


@click.group()
@click.version_option(__version__, prog_name="nps-sync")
def main() -> None:
    """nps-sync: NPS surveys from your CRM, answers back into it, and follow-up tasks for account managers."""


@main.command()
@config_option
def run(config_path: Path) -> None:
    """Run the daemon: scheduler, web server and workers (until SIGTERM)."""
    import faulthandler

    from nps_sync.daemon import SWITCH_INTERVAL, Daemon
    from nps_sync.logs import configure

    cfg = load_config(config_path)
    configure(cfg.daemon.log_format, cfg.daemon.log_level)
    faulthandler.enable()  # a watchdog kill (SIGABRT) prints every thread's stack to the journal
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        sys.exit(Daemon(config_path).run())
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(EX_CONFIG)
    except NpsSyncError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


@main.command()
@config_option
@click.option(
    "--online", is_flag=True, help="Also ask the CRM and the providers (fields, scopes, credentials)."
)
def check(config_path: Path, online: bool) -> None:
    """Validate the config and the playbooks; exit non-zero naming every problem."""
    rt = runtime(config_path)
    problems: list[str] = []
    problems += [f"crm ({rt.crm.name}): {p}" for p in rt.crm.check(online=online)]
    for kind, channel in rt.channels.items():
        problems += [f"channels.{kind} ({channel.name}): {p}" for p in channel.check(online=online)]
    rt.close()
    if problems:
        for problem in problems:
            err.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    console.print(
        f"{config_path}: ok — {len(rt.config.program)} program(s), {len(rt.playbooks)} playbook(s)",
        highlight=False,
    )


@main.group()
def db() -> None:
    """The state database."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path) -> None:
    """Apply database migrations (the daemon also does this at start-up)."""
    from nps_sync.store.db import Store

    cfg = load_config(config_path)
    store = Store(cfg.database_url)
    store.upgrade()
    console.print(f"database at revision {store.current_revision()}")
    store.dispose()


@main.command()
@config_option
@click.argument("program")
@click.option(
    "--dry-run", is_flag=True, help="Show who would be surveyed now and why others are not; change nothing."
)
def wave(config_path: Path, program: str, dry_run: bool) -> None:
    """Run a survey wave of PROGRAM now (or, with --dry-run, explain it)."""
    rt = runtime(config_path)
    try:
        rt.config.program_named(program)
    except ConfigError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        rt.close()
        sys.exit(2)
    summary = rt.run_wave(program, dry_run=dry_run)
    if dry_run:
        table = Table(title=f"Wave of {program} (dry run): {summary.total} contacts")
        for col in ("contact", "name", "decision", "reason", "detail"):
            table.add_column(col, overflow="fold")
        for d in summary.decisions:
            table.add_row(d.contact.id, d.contact.name, d.decision, d.reason, d.detail)
        console.print(table)
    else:
        rt.drain()
    counts = Counter(summary.counts)
    console.print(
        ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "no contacts in the audience"
    )
    rt.close()


@main.command()
@config_option
@click.argument("program")
@click.option("--contact", "contact_id", required=True, help="The CRM contact id.")
@click.option(
    "--to", "to", default=None, help="Send this one rendering to a test address instead of showing it."
)
@click.option("--channel", type=click.Choice(["email", "sms"]), default=None)
def preview(config_path: Path, program: str, contact_id: str, to: str | None, channel: str | None) -> None:
    """Render the survey exactly as CONTACT would receive it (or send that rendering --to a test address)."""
    from nps_sync.preview import preview_message, send_preview

    rt = runtime(config_path)
    try:
        message = preview_message(rt, program, contact_id, channel)
    except NpsSyncError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        rt.close()
        sys.exit(2)
    if to:
        outcome = send_preview(rt, message, to)
        console.print(
            f"preview sent to {to}: {outcome.status} {outcome.provider_id or outcome.reason or ''}",
            highlight=False,
        )
    else:
        # soft_wrap: a header or link longer than the console must stay on one line, as sent.
        head = [f"To: {message.to}", f"Subject: {message.subject}"]
        head += [f"{k}: {v}" for k, v in message.headers.items()]
        console.print("\n".join([*head, "", message.text]), highlight=False, markup=False, soft_wrap=True)
    rt.close()


@main.command()
@config_option
@click.option("--limit", default=20, show_default=True)
def outbox(config_path: Path, limit: int) -> None:
    """List the newest messages in the local outbox."""
    from nps_sync.store import schema

    rt = runtime(config_path)
    with rt.store.read() as conn:
        rows = (
            conn.execute(select(schema.outbox).order_by(desc(schema.outbox.c.id)).limit(limit))
            .mappings()
            .all()
        )
    table = Table(title="Outbox (newest first)")
    for col in ("#", "when (UTC)", "channel", "to", "subject / text"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            r["channel"] + (" (reply)" if r["direction"] == "in" else ""),
            r["to_addr"],
            (r["subject"] or r["text"])[:80],
        )
    console.print(table)
    rt.close()


@main.group()
def sandbox() -> None:
    """Look into the sandbox CRM."""


@sandbox.command("tasks")
@config_option
def sandbox_tasks(config_path: Path) -> None:
    """Tasks nps-sync opened in the sandbox CRM."""
    rt = runtime(config_path)
    owners = {o.id: o.name for o in rt.crm.get_owners([f"U{i:02d}" for i in range(100)]).values()}
    table = Table(title="Sandbox CRM tasks")
    for col in ("id", "subject", "contact", "owner", "due", "priority", "status"):
        table.add_column(col, overflow="fold")
    for t in rt.crm.db.tasks():
        table.add_row(
            t["id"],
            t["subject"],
            t["contact_id"],
            owners.get(t["owner_id"], t["owner_id"] or ""),
            str(t["due"]),
            t["priority"],
            t["status"],
        )
    console.print(table)
    rt.close()


@sandbox.command("contact")
@config_option
@click.argument("contact_id")
def sandbox_contact(config_path: Path, contact_id: str) -> None:
    """A sandbox contact with the fields nps-sync wrote."""
    rt = runtime(config_path)
    found = rt.crm.db.contacts([contact_id])
    if not found:
        err.print(f"error: no sandbox contact {contact_id!r}", markup=False, soft_wrap=True)
        rt.close()
        sys.exit(2)
    row, account = found[0]
    table = Table(title=f"Sandbox contact {contact_id}", show_header=False)
    for key in (
        "first_name",
        "last_name",
        "email",
        "phone",
        "account_id",
        "owner_id",
        "locale",
        "time_zone",
        "country",
        "email_opt_out",
        "sms_opt_out",
    ):
        table.add_row(key, str(row[key]))
    for key, value in sorted((row["fields"] or {}).items()):
        table.add_row(key, str(value))
    if account:
        fields = account["fields"]
        table.add_row(
            "account",
            f"{account['name']} (NPS {fields.get('nps_score', '—')}, "
            f"{fields.get('nps_responses', '0')} responses)",
        )
    console.print(table)
    rt.close()


@main.group()
def playbooks() -> None:
    """Playbooks."""


@playbooks.command("simulate")
@config_option
@click.option("--score", type=click.IntRange(0, 10), required=True)
@click.option("--contact", "contact_id", required=True)
@click.option("--program", default=None, help="Defaults to the first program.")
@click.option("--comment", default="")
@click.option(
    "--previous", "previous_category", type=click.Choice(["detractor", "passive", "promoter"]), default=None
)
def playbooks_simulate(
    config_path: Path,
    score: int,
    contact_id: str,
    program: str | None,
    comment: str,
    previous_category: str | None,
) -> None:
    """Show what would fire for an answer, doing nothing."""
    from nps_sync.models import Category
    from nps_sync.playbooks import PlaybookEvent
    from nps_sync.store.db import utcnow

    rt = runtime(config_path)
    contacts = rt.crm.get_contacts([contact_id])
    if contact_id not in contacts:
        err.print(f"error: no contact {contact_id!r} in the CRM", markup=False, soft_wrap=True)
        rt.close()
        sys.exit(2)
    name = program or (rt.config.program[0].name if rt.config.program else "default")
    event = PlaybookEvent(
        trigger="response",
        contact=contacts[contact_id],
        program=name,
        occurred_at=utcnow(),
        score=score,
        category=Category.of(score).value,
        previous_category=previous_category,
        comment=comment or None,
    )
    steps = rt.engine.simulate(event)
    if not steps:
        console.print("nothing would fire")
    for step in steps:
        console.print(step, highlight=False, markup=False)
    rt.close()


@main.group()
def setup() -> None:
    """Prepare the CRM for nps-sync (create the fields it writes)."""


@setup.command("hubspot")
@config_option
def setup_hubspot(config_path: Path) -> None:
    """Create the NPS property group and properties in HubSpot (idempotent)."""
    rt = runtime(config_path)
    create = getattr(rt.crm, "setup", None)
    if rt.crm.name != "hubspot" or create is None:
        err.print(
            f'error: [crm] kind is {rt.crm.name!r}; `setup hubspot` needs kind = "hubspot"', markup=False
        )
        sys.exit(2)
    try:
        created = create()
    except NpsSyncError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    console.print(
        "created: " + ", ".join(created) if created else "every NPS property already exists", highlight=False
    )
    rt.close()


@main.command()
@config_option
def pause(config_path: Path) -> None:
    """Stop all outbound sending at once (survives restarts) — the kill switch after a bad template."""
    from nps_sync.sending import set_paused
    from nps_sync.store.db import Store

    store = Store(load_config(config_path).database_url)
    store.upgrade()
    set_paused(store, True)
    store.dispose()
    console.print("sending paused: nothing is sent until `nps-sync resume`")


@main.command()
@config_option
def resume(config_path: Path) -> None:
    """Resume outbound sending."""
    from nps_sync.sending import set_paused
    from nps_sync.store.db import Store

    store = Store(load_config(config_path).database_url)
    store.upgrade()
    set_paused(store, False)
    store.dispose()
    console.print("sending resumed")


@main.command()
@config_option
def status(config_path: Path) -> None:
    """Queue depth, sends by state, waves."""
    from sqlalchemy import func

    from nps_sync.sending import is_paused
    from nps_sync.store import schema
    from nps_sync.store.db import Store

    store = Store(load_config(config_path).database_url)
    store.upgrade()
    with store.read() as conn:
        sends = conn.execute(select(schema.sends.c.state, func.count()).group_by(schema.sends.c.state)).all()
        jobs = conn.execute(
            select(schema.jobs.c.kind, schema.jobs.c.state, func.count()).group_by(
                schema.jobs.c.kind, schema.jobs.c.state
            )
        ).all()
        waves = (
            conn.execute(select(schema.waves).order_by(desc(schema.waves.c.started_at)).limit(5))
            .mappings()
            .all()
        )
    console.print(f"sending: {'PAUSED' if is_paused(store) else 'active'}")
    console.print("sends: " + (", ".join(f"{s}: {n}" for s, n in sends) or "none"))
    console.print("jobs: " + (", ".join(f"{k}/{s}: {n}" for k, s, n in jobs) or "none"))
    for w in waves:
        console.print(f"wave {w['id']}: {w['state']} {dict(w['counts'])}", highlight=False)
    _status_cluster(store)
    store.dispose()


def _status_cluster(store: Any) -> None:
    """Replicas, the scheduler leader, what waits in the queue, and sends awaiting reconciliation."""
    from sqlalchemy import func

    from nps_sync.leader import LEADER_SETTING, REPLICA_DEAD_AFTER
    from nps_sync.store import schema
    from nps_sync.store.db import utcnow

    now = utcnow()
    s, j = schema.sends, schema.jobs
    with store.read() as conn:
        replicas = conn.execute(select(schema.replicas).order_by(schema.replicas.c.started_at)).all()
        queued = conn.execute(
            select(j.c.kind, func.count()).where(j.c.state.in_(("queued", "running"))).group_by(j.c.kind)
        ).all()
        waiting = conn.execute(
            select(s.c.channel, func.count()).where(s.c.state == "queued").group_by(s.c.channel)
        ).all()
        unknown = conn.execute(select(func.count()).select_from(s).where(s.c.state == "unknown")).scalar_one()
    leader = (store.get_setting(LEADER_SETTING) or "").rsplit(" ", 1)[0]
    table = Table(title="Replicas")
    for col in ("replica", "started (UTC)", "last heartbeat", "state"):
        table.add_column(col)
    for r in replicas:
        age = (now - r.heartbeat_at).total_seconds()
        state = "alive" if age <= REPLICA_DEAD_AFTER.total_seconds() else "dead"
        table.add_row(
            r.id + (" (leader)" if r.id == leader else ""),
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{age:.0f} s ago",
            state,
        )
    console.print(table)
    console.print(f"leader: {leader or 'none'}", highlight=False)
    depth = [f"sends/{c}: {n}" for c, n in waiting] + [f"{k}: {n}" for k, n in queued]
    console.print("queue depth: " + (", ".join(depth) or "empty"), highlight=False)
    console.print(
        f"unknown sends: {unknown}" + (" (run `nps-sync reconcile`)" if unknown else ""), highlight=False
    )


@main.command()
@config_option
def reconcile(config_path: Path) -> None:
    """Resolve sends left `unknown` by a crash from provider evidence; list what stays unresolved."""
    from nps_sync.leader import Replicas, abandoned_claimers

    rt = runtime(config_path)
    # Sends of replicas that died (no heartbeat) become unknown too; live replicas' are left alone.
    dead = [] if rt.store.is_sqlite else abandoned_claimers(rt.store, Replicas(rt.store, "nps-sync-cli"))
    rt.sender.mark_abandoned(worker_ids=dead)
    sent, requeued, unresolved = rt.sender.reconcile()
    console.print(
        f"confirmed sent: {sent}, provably not sent (queued again): {requeued}, unresolved: {len(unresolved)}"
    )
    for key in unresolved:
        console.print(f"  unresolved: {key}", highlight=False, markup=False)
    rt.close()


from nps_sync.testimonials_cli import testimonials as testimonials_group  # noqa: E402 - after main exists

main.add_command(testimonials_group)

from nps_sync.report_cli import dashboard as dashboard_group  # noqa: E402 - after main exists
from nps_sync.report_cli import report as report_command  # noqa: E402

main.add_command(report_command)
main.add_command(dashboard_group)


@main.command()
@config_option
@click.option("--email", default=None, help="The person's email address.")
@click.option("--phone", default=None, help="The person's phone number (E.164, such as +14155550100).")
def forget(config_path: Path, email: str | None, phone: str | None) -> None:
    """Erase a person from every table (GDPR Art. 17); keep only a hashed tombstone so a CRM re-import
    cannot bring them back."""
    from nps_sync.forget import forget as erase
    from nps_sync.store.db import Store

    store = Store(load_config(config_path).database_url)
    store.upgrade()
    try:
        result = erase(store, email=email, phone=phone)
    except NpsSyncError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        store.dispose()
        sys.exit(2)
    store.dispose()
    rows = ", ".join(f"{table}: {n}" for table, n in sorted(result.deleted.items())) or "nothing stored"
    console.print(
        f"erased {len(result.contact_ids)} contact id(s); rows deleted: {rows}; "
        f"tombstones kept: {result.tombstones}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
