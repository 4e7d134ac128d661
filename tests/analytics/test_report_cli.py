"""``nps-sync report`` in each format and ``nps-sync dashboard hash-password``, run through click on
a config file whose database holds the seeded data set."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nps_sync.cli import main
from nps_sync.store.db import Store
from nps_sync.web.auth import verify_password
from tests.analytics.seed import seed
from tests.e2e.daemon import toml_dumps

CONFIG = {
    "daemon": {"state_dir": "state", "time_zone": "UTC", "playbooks": []},
    "program": [{"name": "relationship"}],
}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(toml_dumps(CONFIG))
    store = Store(f"sqlite:///{tmp_path / 'state' / 'nps-sync.db'}")
    store.upgrade()
    seed(store)
    store.dispose()
    return path


def run(config_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", "--config", str(config_path), *args])
    return result.exit_code, result.output


def test_json_holds_every_figure(config_path: Path) -> None:
    code, out = run(config_path, "--format", "json", "--segment", "plan")
    assert 0 == code, out
    data = json.loads(out)
    assert {
        "responses": 10,
        "promoters": 5,
        "passives": 2,
        "detractors": 3,
        "nps": 20.0,
        "ci_low": -34.0,
        "ci_high": 74.0,
    } == data["overall"]
    assert [("2026-01", 16.7), ("2026-02", -20.0), ("2026-03", 75.0)] == [
        (p["period"], p["nps"]) for p in data["periods"]
    ]
    assert [("pro", 6, 16.7), ("basic", 4, 25.0)] == [
        (s["value"], s["responses"], s["nps"]) for s in data["segments"]
    ]
    assert [{"program": "relationship", "sent": 21, "answered": 16, "rate": 0.7619}] == data["response_rates"]
    assert 1 == data["transitions"]["passive_to_promoter"]
    assert (5, 2, 2) == (
        data["callbacks"]["callbacks"],
        data["callbacks"]["within_sla"],
        data["callbacks"]["overdue"],
    )
    assert "invoice portal" == data["themes"]["detractor"][0]["term"]
    assert [0, 0, 1, 0, 0, 0, 2, 0, 2, 3, 2] == data["scores"]


def test_csv_is_one_tidy_table(config_path: Path) -> None:
    code, out = run(config_path, "--format", "csv", "--segment", "region", "--period", "quarter")
    assert 0 == code, out
    rows = list(csv.DictReader(io.StringIO(out)))
    by_key = {(r["section"], r["group"]): r for r in rows}
    overall = by_key[("overall", "all")]
    assert ("10", "20.0", "-34.0", "74.0") == (
        overall["responses"],
        overall["nps"],
        overall["ci_low"],
        overall["ci_high"],
    )
    assert "10" == by_key[("quarter", "2026-Q1")]["responses"]
    assert ("6", "33.3") == (
        by_key[("segment:region", "EU")]["responses"],
        by_key[("segment:region", "EU")]["nps"],
    )
    assert ("21", "16", "0.7619") == (
        by_key[("response_rate", "relationship")]["sent"],
        by_key[("response_rate", "relationship")]["responses"],
        by_key[("response_rate", "relationship")]["rate"],
    )
    assert {"overall", "program", "quarter", "segment:region", "account", "response_rate"} == {
        r["section"] for r in rows
    }


def test_markdown_has_a_table_per_section(config_path: Path) -> None:
    code, out = run(config_path, "--format", "markdown", "--since", "2026-01-01")
    assert 0 == code, out
    assert out.startswith("# NPS report — all programs since 2026-01-01 00:00")
    assert "| 2026-02 | 5 | -20.0 | -100.0 to 65.9 | 2 / 0 / 3 |" in out
    assert "| detractor | invoice portal | 3 | 3.00 | Invoice portal lost my data! |" in out
    assert "| passive | 1 | 0 | 1 |" in out


def test_table_output(config_path: Path) -> None:
    code, out = run(config_path, "--program", "relationship", "--since", "2026-02-01")
    assert 0 == code, out
    assert "NPS report — relationship since 2026-02-01" in out
    assert "22.2" in out  # Feb + Mar: 5 promoters, 3 detractors of 9
    # From February on, "support" is the one detractor theme; its newest comment is the example.
    assert "Support was slow this month" in out
    assert "invoice portal" not in out


def test_png_writes_the_trend_chart(config_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the optional 'report' extra) is not installed")
    png = tmp_path / "trend.png"
    code, out = run(config_path, "--format", "json", "--png", str(png))
    assert 0 == code, out
    assert png.read_bytes().startswith(b"\x89PNG\r\n")


def test_bad_arguments_name_the_value(config_path: Path) -> None:
    code, out = run(config_path, "--since", "lately")
    assert 2 == code
    assert "got: 'lately'" in out
    code, out = run(config_path, "--program", "nope")
    assert 2 == code
    assert "no [[program]] named 'nope'" in out


def test_hash_password_prints_a_verifiable_hash() -> None:
    result = CliRunner().invoke(main, ["dashboard", "hash-password", "--stdin"], input="a long passphrase\n")
    assert 0 == result.exit_code, result.output
    assert verify_password("a long passphrase", result.output.strip())
    short = CliRunner().invoke(main, ["dashboard", "hash-password", "--stdin"], input="short\n")
    assert 2 == short.exit_code
    assert "at least 10 characters, got 5" in short.output
