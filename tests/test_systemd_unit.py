"""The shipped systemd unit (target R14): it verifies cleanly and its sandbox rates at most 1.5.

Only ``systemd-analyze`` runs here; it needs no systemd as PID 1 (never boot one in tests: its
sysinit units wipe /tmp on a shared machine).
"""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nps_sync.config import DaemonConfig
from nps_sync.secrets import Secrets

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "nps-sync.service"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 1.5

needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (apt-get install -y systemd procps); R14 cannot be checked",
)


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    section = ""
    found: list[tuple[str, str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{UNIT}: line {raw!r} is neither a section, a comment nor KEY=VALUE"
        found.append((section, key.strip(), value.strip()))
    return found


def service_values(key: str) -> list[str]:
    return [value for section, k, value in directives(UNIT.read_text()) if section == "Service" and k == key]


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary swapped for one that exists here; every other line untouched.

    ``verify`` reports a missing ExecStart binary, and /opt/nps-sync is not installed on a test box.
    """
    original = UNIT.read_text()
    rewritten, count = re.subn(
        r"^ExecStart=\S+", lambda _: f"ExecStart={sys.executable}", original, flags=re.MULTILINE
    )
    assert 1 == count, f"expected exactly one ExecStart= line in {UNIT}, found {count}"
    copy = tmp_path / "nps-sync.service"
    copy.write_text(rewritten)
    return copy


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {
        **os.environ,
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_PAGER": "",
        "SYSTEMD_LOG_LEVEL": "info",
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [ANALYZE, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120
    )


@needs_analyze
def test_verify_prints_nothing_on_stderr(checkable_unit: Path) -> None:
    """verify exits 0 on unknown keys and bad values and only warns, so the gate is empty stderr."""
    result = analyze("verify", str(checkable_unit), cwd=checkable_unit.parent)

    assert "" == result.stderr
    assert 0 == result.returncode


@needs_analyze
def test_verify_gate_catches_a_bad_directive(checkable_unit: Path) -> None:
    """The empty-stderr gate above is only worth something if a typo in the unit makes noise."""
    checkable_unit.write_text(checkable_unit.read_text().replace("WatchdogSec=60", "WatchdogSec=sixty"))

    result = analyze("verify", str(checkable_unit), cwd=checkable_unit.parent)

    assert "Failed to parse" in result.stderr
    assert 0 == result.returncode


def exposure_of(output: str, unit_name: str) -> float:
    match = re.search(rf"Overall exposure level for {re.escape(unit_name)}: (\d+\.\d+)", output)
    assert match is not None, f"no 'Overall exposure level' line in systemd-analyze output:\n{output}"
    return float(match.group(1))


@needs_analyze
def test_security_exposure_is_at_most_1_5(checkable_unit: Path) -> None:
    result = analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--threshold={int(MAX_EXPOSURE * 10)}",
        str(checkable_unit),
        cwd=checkable_unit.parent,
    )

    exposure = exposure_of(result.stdout, checkable_unit.name)
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"
    assert 0 == result.returncode, result.stderr


@needs_analyze
def test_security_check_rates_an_unhardened_unit_above_the_limit(tmp_path: Path) -> None:
    """The parser and the limit would also pass a rating that never came: show they can fail."""
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={sys.executable}\n")

    result = analyze("security", "--offline=true", "--no-pager", str(bare), cwd=tmp_path)

    assert exposure_of(result.stdout, bare.name) > MAX_EXPOSURE


# --- The contract between the unit and the daemon (no systemd-analyze needed) ---------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", ["notify"]),
        ("NotifyAccess", ["main"]),
        ("ExecStart", ["/opt/nps-sync/.venv/bin/nps-sync run --config /etc/nps-sync/config.toml"]),
        # systemd 252 (Debian 12) has no Type=notify-reload: reload is SIGHUP to the main process.
        ("ExecReload", ["/bin/kill -HUP $MAINPID"]),
        ("WatchdogSec", ["60"]),
        ("Restart", ["on-failure"]),
        ("TimeoutStopSec", ["60"]),
        ("DynamicUser", ["yes"]),
        # config.example.toml points state_dir at /var/lib/nps-sync.
        ("StateDirectory", ["nps-sync"]),
        ("ConfigurationDirectory", ["nps-sync"]),
        ("RestrictAddressFamilies", ["AF_INET AF_INET6 AF_UNIX"]),
    ],
)
def test_unit_states_what_the_daemon_relies_on(key: str, expected: list[str]) -> None:
    assert expected == service_values(key)


def commented_credentials() -> list[str]:
    return re.findall(r"^#\s+LoadCredential=([a-z-]+):", UNIT.read_text(), flags=re.MULTILINE)


def test_only_the_signing_keys_are_loaded_by_default() -> None:
    """LoadCredential= of a missing file fails the start, so optional secrets stay commented out."""
    assert ["nps-sync-signing-keys:/etc/credstore/nps-sync/nps-sync-signing-keys"] == service_values(
        "LoadCredential"
    )
    assert [
        "sendgrid-api-key",
        "sendgrid-webhook-public-key",
        "smtp-password",
        "twilio-auth-token",
        "salesforce-private-key",
        "hubspot-access-token",
    ] == commented_credentials()


def test_the_loaded_credential_is_the_signing_keys_secret_the_daemon_reads(tmp_path: Path) -> None:
    (tmp_path / "nps-sync-signing-keys").write_text("k1,k2\n")
    name = DaemonConfig().signing_keys_secret

    found = Secrets({"CREDENTIALS_DIRECTORY": str(tmp_path)}).get(name)

    assert found is not None, f"{name} is not found in a credential called nps-sync-signing-keys"
    assert "k1,k2" == found.get_secret_value()


def test_each_suggested_credential_resolves_to_its_env_var_name(tmp_path: Path) -> None:
    """The unit's comment promises ID = lower-case env var name with dashes; Secrets must agree."""
    for credential in commented_credentials():
        (tmp_path / credential).write_text(f"value of {credential}\n")
    secrets = Secrets({"CREDENTIALS_DIRECTORY": str(tmp_path)})

    found = {
        credential: secrets.get(credential.upper().replace("-", "_"))
        for credential in commented_credentials()
    }

    assert {c: f"value of {c}" for c in commented_credentials()} == {
        c: (v.get_secret_value() if v is not None else None) for c, v in found.items()
    }
