"""``nps-sync testimonials export``: only consented, not withdrawn quotes; values escaped for HTML and
defused for spreadsheets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from nps_sync.cli import main
from nps_sync.store import schema
from tests.testimonials.conftest import TESTIMONIAL_LINK, World, path_of
from tests.testimonials.test_flow import form

HOSTILE = '<script>alert("x")</script> & more'


def consented(world: World, **values: str) -> None:
    request = world.promoter_email()
    match = TESTIMONIAL_LINK.search(request["text"])
    assert match is not None
    assert 200 == world.client.post(path_of(match.group(0)), data=form(world, **values)).status_code


def run_export(tmp_path: Path, fmt: str) -> str:
    # The same state directory as the world's Runtime: the CLI reads the daemon's database.
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nstate_dir = "state"\n')
    result = CliRunner().invoke(main, ["testimonials", "export", "--format", fmt, "--config", str(config)])
    assert 0 == result.exit_code, result.output
    return result.output


def test_html_export_escapes_every_value(world: World, tmp_path: Path) -> None:
    consented(world, quote=HOSTILE, display_name="<b>Al</b>", title='"CTO"', company="A & B")
    html = run_export(tmp_path, "html")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in html
    assert "&lt;b&gt;Al&lt;/b&gt;, &quot;CTO&quot;, A &amp; B" in html
    assert '<time datetime="2026-01-07">2026-01-07</time>' in html


def test_json_and_csv_keep_the_text_and_csv_defuses_formulas(world: World, tmp_path: Path) -> None:
    consented(world, quote='=HYPERLINK("http://evil.example","win")', company="Northwind, Inc.")
    [row] = json.loads(run_export(tmp_path, "json"))
    assert ('=HYPERLINK("http://evil.example","win")', "Northwind, Inc.") == (row["quote"], row["company"])
    [cells] = list(csv.DictReader(io.StringIO(run_export(tmp_path, "csv"))))
    assert ('\'=HYPERLINK("http://evil.example","win")', "Northwind, Inc.") == (
        cells["quote"],
        cells["company"],
    )
    assert ["quote", "display_name", "title", "company", "date"] == list(cells)


def test_cli_withdraw_removes_it_from_the_export_and_notes_the_crm(world: World, tmp_path: Path) -> None:
    consented(world)
    [stored] = world.rows(schema.testimonials)
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nstate_dir = "state"\nplaybooks = []\n[[program]]\nname = "relationship"\n')
    result = CliRunner().invoke(
        main,
        ["testimonials", "withdraw", str(stored["id"]), "--config", str(config)],
        env={"NPS_SYNC_SIGNING_KEYS": "0123456789abcdef" * 4},
    )
    assert 0 == result.exit_code, result.output
    assert [] == json.loads(run_export(tmp_path, "json"))
    assert ["NPS testimonial: consent to publish", "NPS testimonial: consent withdrawn"] == [
        n["title"] for n in world.notes("C001")
    ]
