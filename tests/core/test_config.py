"""The config file: defaults, the shipped example, and one line per problem naming the file, the TOML
path, the bad value and what was expected — also through ``nps-sync check`` (exit 78, stderr)."""

from __future__ import annotations

import shutil
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from nps_sync import config as config_mod
from nps_sync.cli import EX_CONFIG, main
from nps_sync.config import Config, DaemonConfig, ProgramConfig
from nps_sync.durations import TimeWindow
from nps_sync.errors import ConfigError
from tests.core import REPO, config_data, program, write_config

SOURCE = Path("/etc/nps-sync/config.toml")


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_mod.parse(data, source=SOURCE)
    return caught.value.problems


def allowed(model: type[Any]) -> str:
    return ", ".join(k for k in model.model_fields if k not in ("source", "options"))


def test_an_empty_file_gives_the_documented_defaults() -> None:
    config = config_mod.parse({}, source=SOURCE)

    assert ((), "sandbox", "outbox", "outbox") == (
        config.program,
        config.crm.kind,
        config.channels.email.kind,
        config.channels.sms.kind,
    )
    assert (ZoneInfo("UTC"), "http://127.0.0.1:8080", 2) == (
        config.daemon.time_zone,
        config.daemon.public_url,
        config.daemon.workers,
    )
    assert (timedelta(days=60), timedelta(days=400)) == (
        config.daemon.survey_link_max_age,
        config.daemon.unsubscribe_link_max_age,
    )
    assert TimeWindow(time(8), time(21)) == config.channels.sms.quiet_hours
    assert Path("/etc/nps-sync/state") == config.state_dir
    assert "sqlite:////etc/nps-sync/state/nps-sync.db" == config.database_url


def test_a_minimal_program_gets_the_documented_defaults() -> None:
    [p] = config_mod.parse({"program": [{"name": "rel"}]}, source=SOURCE).program

    assert ("email", "0 10 * * mon-fri", TimeWindow(time(9), time(18)), timedelta(days=90)) == (
        p.channel,
        p.schedule,
        p.send_window,
        p.resurvey_after,
    )
    assert (0, 1.0, ("en", "de"), "en", True) == (
        p.account_max,
        p.sample,
        p.languages,
        p.default_language,
        p.skip_open_callbacks,
    )


def test_the_shipped_example_loads_as_documented() -> None:
    config = config_mod.load(REPO / "config.example.toml")

    [p] = config.program
    assert ("relationship", "email", ZoneInfo("America/New_York")) == (p.name, p.channel, p.default_time_zone)
    assert (1, timedelta(days=3)) == (p.reminders.count, p.reminders.after)
    assert (5, timedelta(days=30)) == (p.account_max, p.account_interval)
    assert {"where": {}} == p.audience
    assert "Das tut uns leid. Was hätten wir besser machen können?" == p.text["de"].follow_up_detractor
    assert ZoneInfo("Europe/Berlin") == config.daemon.time_zone
    assert date(2026, 12, 24) in config.daemon.business_calendar.holidays
    assert {"seed": "", "reseed": False} == config.crm.options
    assert {"sender": "+15550100"} == config.channels.sms.options
    assert REPO / "state" == config.state_dir
    assert sorted((REPO / "playbooks").glob("*.toml")) == config.playbook_paths()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"daemon": {"statedir": "x"}},
            f"{SOURCE}: daemon.statedir: unknown key; expected one of: {allowed(DaemonConfig)}",
        ),
        (
            {"program": [{"name": "a"}, {"name": "b", "sched": "0 9 * * *"}]},
            f"{SOURCE}: program[1].sched: unknown key; expected one of: {allowed(ProgramConfig)}",
        ),
        (
            {"program": [{"name": "a", "resurvey_after": "ninety"}]},
            f"{SOURCE}: program[0].resurvey_after: expected a duration such as '90d', '12h', '30m' or '2w', "
            "got: 'ninety'",
        ),
        (
            {"program": [{"name": "a", "send_window": "9-17"}]},
            f"{SOURCE}: program[0].send_window: expected a time window 'HH:MM-HH:MM' such as "
            "'09:00-17:00' or '21:00-08:00', got: '9-17'",
        ),
        (
            {"daemon": {"time_zone": "Mars/Olympus"}},
            f"{SOURCE}: daemon.time_zone: expected an IANA time zone such as 'Europe/Berlin' or "
            "'America/New_York', got: 'Mars/Olympus'",
        ),
        (
            {"program": [{"name": "a", "default_time_zone": ""}]},
            f"{SOURCE}: program[0].default_time_zone: expected an IANA time zone such as 'Europe/Berlin', "
            "got: ''",
        ),
        (
            {"program": [{"name": "rel"}, {"name": "other"}, {"name": "rel"}]},
            f"{SOURCE}: program: program names must be unique, got: 'rel' more than once",
        ),
        (
            {"channels": {"email": {"kind": "twilio"}}},
            f"{SOURCE}: channels.email.kind: 'twilio' cannot send email; it sends: sms",
        ),
        (
            {"crm": {"kind": "outbox"}},
            f"{SOURCE}: crm.kind: 'outbox' is a channel connector, not a crm connector",
        ),
        (
            {"crm": {"kind": "sandbox", "sandbox": {"reseed": "maybe"}}},
            f"{SOURCE}: crm.sandbox.reseed: Input should be a valid boolean, unable to interpret input "
            "(got 'maybe')",
        ),
        (
            {"crm": {"kind": "sandbox", "sandbox": {"reseeed": True}}},
            f"{SOURCE}: crm.sandbox.reseeed: unknown key; expected one of: seed, reseed",
        ),
        (
            {"program": [{"name": "a"}, {"name": "b", "audience": {"where": 5}}]},
            f"{SOURCE}: program[1].audience.where: Input should be a valid dictionary (got 5)",
        ),
        (
            {"program": [{"name": "a", "audience": {"soql_where": "Type = 'Customer'"}}]},
            f"{SOURCE}: program[0].audience.soql_where: unknown key; expected one of: where, page_size",
        ),
        (
            {"program": [{"name": "Rel!"}]},
            f"{SOURCE}: program[0].name: String should match pattern '^[a-z0-9][a-z0-9_-]{{0,63}}$' "
            "(got 'Rel!')",
        ),
        (
            {"daemon": {"public_url": "[bold]nps.example.com"}},
            f"{SOURCE}: daemon.public_url: expected an http(s) URL such as 'https://nps.example.com', "
            "got: '[bold]nps.example.com'",
        ),
    ],
    ids=[
        "daemon-key",
        "program-key",
        "duration",
        "window",
        "zone",
        "empty-zone",
        "duplicate-names",
        "channel-kind",
        "crm-role",
        "connector-option",
        "connector-key",
        "audience-type",
        "audience-key",
        "program-name",
        "url",
    ],
)
def test_each_problem_names_file_toml_path_value_and_expectation(data: dict[str, Any], expected: str) -> None:
    assert [expected] == problems(data)


def test_an_unknown_top_level_key_lists_the_tables_allowed() -> None:
    assert [f"{SOURCE}: progam: unknown key; expected one of: {allowed(Config)}"] == problems({"progam": []})
    assert {"daemon", "crm", "channels", "program"} <= set(allowed(Config).split(", "))


def test_a_bad_cron_schedule_names_the_field_that_is_wrong() -> None:
    [line] = problems({"program": [{"name": "a", "schedule": "61 * * * *"}]})

    assert line.startswith(
        f"{SOURCE}: program[0].schedule: expected a 5-field cron expression such as '0 10 * * mon-fri'"
    )
    assert "the last value (61) is higher than the maximum value (59)" in line
    assert line.endswith("got: '61 * * * *'")


def test_an_unknown_connector_lists_the_available_ones() -> None:
    [line] = problems({"crm": {"kind": "pipedrive"}})

    prefix = f"{SOURCE}: crm.kind: unknown connector 'pipedrive'; expected one of: "
    assert line.startswith(prefix)
    assert {"sandbox", "salesforce", "hubspot"} <= set(line.removeprefix(prefix).split(", "))


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "daemon": {"workers": 0, "log_level": "loud"},
            "program": [{"name": "a", "sample": 0, "drip_over": "soon"}],
        }
    )

    assert [
        "daemon.workers",
        "daemon.log_level",
        "program[0].sample",
        "program[0].drip_over",
    ] == [line.removeprefix(f"{SOURCE}: ").split(":")[0] for line in found]


def test_invalid_toml_names_the_file_and_the_position(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\ntime_zone = "Europe/Berlin\n')

    with pytest.raises(ConfigError) as caught:
        config_mod.load(path)

    [line] = caught.value.problems
    assert line.startswith(f"{path}: not valid TOML: ")
    assert "(at line 2, column" in line


def test_an_unreadable_file_names_the_file_and_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        config_mod.load(path)

    assert [f"{path}: cannot read the config file: No such file or directory"] == caught.value.problems


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[daemon]\ncompany_name = "M\xfcller"\n')

    with pytest.raises(ConfigError, match=r"not UTF-8 text"):
        config_mod.load(path)


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "pb").mkdir()
    shutil.copy(REPO / "playbooks" / "detractor-callback.toml", tmp_path / "pb" / "mine.toml")
    path = write_config(tmp_path, {"daemon": {"state_dir": "var/state", "playbooks": ["pb/*.toml"]}})

    config = config_mod.load(path)

    assert (tmp_path / "var" / "state", [tmp_path / "pb" / "mine.toml"]) == (
        config.state_dir,
        config.playbook_paths(),
    )


def test_program_named_lists_the_configured_programs_when_the_name_is_unknown() -> None:
    config = config_mod.parse({"program": [{"name": "rel"}, {"name": "onboarding"}]}, source=SOURCE)

    with pytest.raises(ConfigError) as caught:
        config.program_named("relationship")

    assert f"{SOURCE}: no [[program]] named 'relationship'; configured: rel, onboarding" == str(caught.value)


# --- nps-sync check -----------------------------------------------------------------------------------


def test_check_exits_78_with_one_line_per_problem_on_stderr(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        config_data(
            program("rel", resurvey_after="ninety"),
            daemon={"public_url": "[/x]", "bogus": 1},
        ),
    )

    result = CliRunner().invoke(main, ["check", "--config", str(path)])

    assert EX_CONFIG == result.exit_code == 78
    assert [
        f"error: {path}: daemon.public_url: expected an http(s) URL such as 'https://nps.example.com', "
        "got: '[/x]'",
        f"error: {path}: daemon.bogus: unknown key; expected one of: {allowed(DaemonConfig)}",
        f"error: {path}: program[0].resurvey_after: expected a duration such as '90d', '12h', '30m' or '2w', "
        "got: 'ninety'",
    ] == result.stderr.splitlines()
    assert "" == result.stdout
    assert not (tmp_path / "state").exists()


def test_check_of_a_missing_file_exits_78(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "nope.toml")])

    assert (
        78,
        [f"error: {tmp_path / 'nope.toml'}: cannot read the config file: No such file or directory"],
    ) == (
        result.exit_code,
        result.stderr.splitlines(),
    )


def test_check_of_the_shipped_example_says_ok(tmp_path: Path) -> None:
    example = (REPO / "config.example.toml").read_text()
    path = tmp_path / "config.toml"
    path.write_text(
        example.replace('playbooks = ["playbooks/*.toml"]', f'playbooks = ["{REPO}/playbooks/*.toml"]')
    )

    result = CliRunner().invoke(main, ["check", "--config", str(path)])

    assert (0, f"{path}: ok — 1 program(s), 3 playbook(s)\n") == (result.exit_code, result.stdout)
