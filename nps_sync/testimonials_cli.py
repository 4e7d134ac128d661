"""``nps-sync testimonials``: export consented testimonials for the website, list, withdraw."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from nps_sync.cli_options import config_option
from nps_sync.testimonials import ExportFormat, all_testimonials, export


def _store(config_path: Path) -> Any:
    from nps_sync.cli import load_config
    from nps_sync.store.db import Store

    store = Store(load_config(config_path).database_url)
    store.upgrade()
    return store


@click.group("testimonials")
def testimonials() -> None:
    """Promoters' testimonials: only consented, not withdrawn ones are ever exported."""


@testimonials.command("export")
@config_option
@click.option(
    "--format", "fmt", type=click.Choice(["json", "csv", "html"]), default="json", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (default: standard output).",
)
def export_cmd(config_path: Path, fmt: ExportFormat, output: Path | None) -> None:
    """Consented, not withdrawn testimonials (quote, display name, title, company, date) for the
    website: JSON, CSV, or an HTML fragment with every value escaped. Run it again after a withdrawal."""
    store = _store(config_path)
    text = export(store, fmt)
    store.dispose()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@testimonials.command("list")
@config_option
def list_cmd(config_path: Path) -> None:
    """Every testimonial with its consent time and, when withdrawn, the withdrawal time."""
    store = _store(config_path)
    for t in all_testimonials(store):
        state = f"withdrawn {t.withdrawn_at:%Y-%m-%d %H:%M}" if t.withdrawn_at else "published"
        click.echo(
            f"#{t.id}  response {t.response_id}  contact {t.contact_id}  "
            f"consented {t.consented_at:%Y-%m-%d %H:%M} UTC  {state}\n    {t.signature}: {t.quote!r}"
        )
    store.dispose()


@testimonials.command("withdraw")
@config_option
@click.argument("testimonial_id", type=int)
def withdraw_cmd(config_path: Path, testimonial_id: int) -> None:
    """Withdraw consent for a testimonial on the person's behalf (they asked by email or phone):
    it leaves every export at once and a note goes to the CRM contact."""
    from nps_sync.cli import runtime
    from nps_sync.testimonials import TestimonialError

    rt = runtime(config_path)
    try:
        stored = rt.testimonials.withdraw(testimonial_id)
    except TestimonialError as exc:
        click.echo(f"error: {exc}", err=True)
        rt.close()
        sys.exit(1)
    rt.drain()
    rt.close()
    click.echo(f"testimonial #{stored.id} withdrawn at {stored.withdrawn_at:%Y-%m-%d %H:%M} UTC")
