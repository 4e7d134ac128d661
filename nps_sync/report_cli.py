"""``nps-sync report`` (NPS analytics in the terminal, as CSV, JSON or Markdown, or as a PNG chart) and
``nps-sync dashboard hash-password``."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import click
from rich.console import Console
from rich.table import Table

from nps_sync.analytics.nps import PERIODS, NpsStat, Period
from nps_sync.analytics.report import Report, build_report, parse_since
from nps_sync.analytics.transitions import CATEGORIES
from nps_sync.cli_options import config_option

FORMATS = ("table", "csv", "json", "markdown")
CSV_COLUMNS = (
    "section",
    "group",
    "responses",
    "promoters",
    "passives",
    "detractors",
    "nps",
    "ci_low",
    "ci_high",
    "sent",
    "rate",
)


@dataclass(frozen=True)
class Section:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _nps_cells(s: NpsStat) -> tuple[str, ...]:
    ci = s.ci
    return (
        str(s.responses),
        _num(s.nps),
        f"{ci[0]:.1f} to {ci[1]:.1f}" if ci else "—",
        f"{s.promoters} / {s.passives} / {s.detractors}",
    )


NPS_HEADERS = ("responses", "NPS", "95% CI", "pro / pas / det")


def sections(report: Report) -> list[Section]:
    """The report as titled tables, shared by the terminal and Markdown output."""
    rates = {r.program: r for r in report.rates}
    out = [
        Section(
            "NPS by program",
            ("program", *NPS_HEADERS, "surveys sent", "response rate"),
            [
                (
                    name,
                    *_nps_cells(s),
                    str(rates[name].sent) if name in rates else "0",
                    _num(100 * rate, 1) + " %"
                    if name in rates and (rate := rates[name].rate) is not None
                    else "—",
                )
                for name, s in report.programs
            ]
            + [("all", *_nps_cells(report.overall), "", "")],
            "Each person counts once, with their latest answer.",
        ),
        Section(
            f"NPS by {report.period}",
            (report.period, *NPS_HEADERS),
            [(p.label, *_nps_cells(p.stat)) for p in report.periods],
        ),
    ]
    if report.segment:
        out.append(
            Section(
                f"NPS by {report.segment}",
                (report.segment, *NPS_HEADERS),
                [(value, *_nps_cells(s)) for value, s in report.segments],
                "Segments use the CRM values captured when each survey was sent.",
            )
        )
    out.append(
        Section(
            "NPS by account",
            ("account", *NPS_HEADERS),
            [(a.name, *_nps_cells(a.stat)) for a in report.accounts[:20]],
            f"{len(report.accounts)} accounts" + (", 20 largest shown" if len(report.accounts) > 20 else ""),
        )
    )
    t = report.transitions
    out.append(
        Section(
            "Movement between consecutive answers (rows: before, columns: after)",
            ("before \\ after", *CATEGORIES),
            [(a, *(str(t.count(a, b)) for b in CATEGORIES)) for a in CATEGORIES],
            f"{t.total} pairs: {t.improved} improved, {t.slipped} slipped; "
            f"passive → promoter {t.count('passive', 'promoter')}, "
            f"promoters who slipped {t.count('promoter', 'passive') + t.count('promoter', 'detractor')}.",
        )
    )
    o = report.outcomes
    rate = o.on_time_rate
    out.append(
        Section(
            "Detractor callbacks",
            ("callbacks", "within SLA", "completed late", "overdue", "open", "within SLA %"),
            [
                (
                    str(o.callbacks),
                    str(o.on_time),
                    str(o.late),
                    str(o.overdue),
                    str(o.open),
                    _num(None if rate is None else 100 * rate),
                )
            ],
            "Completion counts when nps-sync saw the task done (checked_at): on time is a lower bound.",
        )
    )
    out.append(
        Section(
            "Next answer after a detractor answer",
            ("group", "detractors", "answered again", "mean later score", "later NPS"),
            [
                (
                    label,
                    str(f.detractors),
                    str(f.answered_again),
                    _num(f.mean_score, 2),
                    _num(f.later.nps),
                )
                for label, f in (("called back", o.called_back), ("not called back", o.not_called_back))
            ],
        )
    )
    if o.overdue_tasks:
        out.append(
            Section(
                "Overdue callbacks",
                ("due", "contact", "owner", "task"),
                [(c.due.isoformat(), c.contact_id, c.owner_id or "", c.subject) for c in o.overdue_tasks],
            )
        )
    out.append(
        Section(
            "Comment themes",
            ("category", "theme", "comments", "lift", "example"),
            [
                (cat, th.term, str(th.count), f"{th.lift:.2f}", th.examples[0] if th.examples else "")
                for cat in CATEGORIES
                for th in report.themes[cat]
            ],
            "Lift: how much more often the theme appears in this category's comments than in all comments.",
        )
    )
    return out


def render_table(report: Report, console: Console) -> None:
    scope = report.program or "all programs"
    since = f" since {report.since:%Y-%m-%d %H:%M}" if report.since else ""
    console.print(f"[bold]NPS report[/bold] — {scope}{since} (periods in {report.time_zone})")
    for sec in sections(report):
        table = Table(title=sec.title, caption=sec.note or None, title_justify="left")
        for h in sec.headers:
            table.add_column(h, overflow="fold")
        for row in sec.rows:
            table.add_row(*row)
        console.print(table)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    scope = report.program or "all programs"
    since = f" since {report.since:%Y-%m-%d %H:%M}" if report.since else ""
    lines = [f"# NPS report — {scope}{since}", ""]
    for sec in sections(report):
        lines += [f"## {sec.title}", ""]
        lines.append("| " + " | ".join(_md_cell(h) for h in sec.headers) + " |")
        lines.append("|" + "|".join("---" for _ in sec.headers) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in sec.rows]
        if sec.note:
            lines += ["", f"_{sec.note}_"]
        lines.append("")
    return "\n".join(lines)


def render_csv(report: Report) -> str:
    """NPS rows in one tidy table (section, group, counts, NPS, CI) plus response rates."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def nps_row(section: str, group: str, s: NpsStat) -> None:
        d = s.as_dict()
        writer.writerow([section, group, *("" if d[k] is None else d[k] for k in CSV_COLUMNS[2:9]), "", ""])

    nps_row("overall", "all", report.overall)
    for name, s in report.programs:
        nps_row("program", name, s)
    for p in report.periods:
        nps_row(report.period, p.label, p.stat)
    for value, s in report.segments:
        nps_row(f"segment:{report.segment}", value, s)
    for a in report.accounts:
        nps_row("account", a.name, a.stat)
    for r in report.rates:
        rate = "" if r.rate is None else f"{r.rate:.4f}"
        writer.writerow(["response_rate", r.program, r.answered, "", "", "", "", "", "", r.sent, rate])
    return buf.getvalue()


def write_png(report: Report, path: Path) -> None:
    """NPS per period with its 95 % band. Needs matplotlib (the ``report`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise click.ClickException(
            "--png needs matplotlib, which is not installed: pip install 'nps-sync[report]'"
        ) from exc
    points = [
        (p.label, p.stat.nps, p.stat.ci)
        for p in report.periods
        if p.stat.ci is not None and p.stat.nps is not None
    ]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=120)
    xs = list(range(len(points)))
    ax.fill_between(
        xs,
        [c[0] for _, _, c in points],
        [c[1] for _, _, c in points],
        color="#3b5bdb",
        alpha=0.15,
        label="95% confidence interval",
    )
    ax.plot(xs, [n for _, n, _ in points], marker="o", color="#3b5bdb", label="NPS")
    ax.axhline(0, color="#9aa5b1", linewidth=0.8)
    ax.set_xticks(xs, [label for label, _, _ in points], rotation=45 if len(points) > 8 else 0)
    ax.set_ylim(-100, 100)
    ax.set_ylabel("NPS")
    ax.set_title(f"NPS by {report.period} — {report.program or 'all programs'}")
    ax.legend(loc="lower left")
    ax.grid(axis="y", color="#e4e7eb")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@click.command("report")
@config_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--program", default=None, help="One program (default: all).")
@click.option("--since", default=None, help="A date (2026-01-31) or a duration back from now (90d, 12w).")
@click.option(
    "--segment", default=None, help="Also break NPS down by this CRM field (plan, region, language…)."
)
@click.option("--period", type=click.Choice(PERIODS), default="month", show_default=True)
@click.option(
    "--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the trend chart."
)
def report(
    config_path: Path,
    fmt: str,
    program: str | None,
    since: str | None,
    segment: str | None,
    period: str,
    png: Path | None,
) -> None:
    """NPS with confidence intervals per program, period and segment; movement; callbacks; themes."""
    from nps_sync.cli import console, load_config
    from nps_sync.errors import ConfigError
    from nps_sync.store.db import Store, utcnow

    cfg = load_config(config_path)
    if program is not None:
        try:
            cfg.program_named(program)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    tz, now = cfg.daemon.time_zone, utcnow()
    try:
        start = parse_since(since, now=now, tz=tz) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    store = Store(cfg.database_url)
    try:
        store.upgrade()
        rep = build_report(
            store,
            tz=tz,
            now=now,
            program=program,
            since=start,
            period=cast(Period, period),
            segment=segment,
        )
    finally:
        store.dispose()
    if segment and segment not in rep.segment_names:
        click.echo(
            f"warning: no answer has a field {segment!r}; known: {', '.join(rep.segment_names)}", err=True
        )
    if fmt == "json":
        click.echo(json.dumps(rep.as_dict(), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        click.echo(render_csv(rep), nl=False)
    elif fmt == "markdown":
        click.echo(render_markdown(rep))
    else:
        render_table(rep, console)
    if png is not None:
        write_png(rep, png)
        click.echo(f"wrote {png}", err=True)


@click.group("dashboard")
def dashboard() -> None:
    """The /dashboard web page."""


@dashboard.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def hash_password_cmd(from_stdin: bool) -> None:
    """Print a salted scrypt hash of a password, to store in the [dashboard] password_hash_secret."""
    from nps_sync.web.auth import MIN_PASSWORD, hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.BadParameter(
            f"use at least {MIN_PASSWORD} characters, got {len(password)}", param_hint="password"
        )
    click.echo(hash_password(password))


__all__: Sequence[str] = ["dashboard", "render_csv", "render_markdown", "report", "sections"]
