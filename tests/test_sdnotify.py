"""The sd_notify helper, against a real AF_UNIX datagram socket standing in for systemd's."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nps_sync.sdnotify import Notifier


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: a bound datagram socket we read back."""

    def __init__(self, address: str, env_value: str) -> None:
        self.env_value = env_value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        # Only a guard against a hung test run; every assertion is on content, never on time.
        self.sock.settimeout(10)

    def received(self) -> str:
        return self.sock.recv(65536).decode()

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(10)
        return False


@pytest.fixture
def socket_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory name: AF_UNIX paths are capped at 107 bytes and test names are long.
    return tmp_path_factory.mktemp("sd")


@pytest.fixture
def path_systemd(socket_dir: Path) -> Iterator[FakeSystemd]:
    path = str(socket_dir / "notify")
    fake = FakeSystemd(path, path)
    yield fake
    fake.sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"nps-sync-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name, "@" + name)
    yield fake
    fake.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest) -> FakeSystemd:
    fixture = "path_systemd" if request.param == "path" else "abstract_systemd"
    fake: FakeSystemd = request.getfixturevalue(fixture)
    return fake


def notifier_for(fake: FakeSystemd) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": fake.env_value})


def test_ready_sends_ready_alone(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)

    assert notifier.enabled
    assert notifier.ready() is True
    assert "READY=1" == systemd.received()


def test_ready_with_status_sends_both_lines_in_one_datagram(systemd: FakeSystemd) -> None:
    assert notifier_for(systemd).ready("polling 2 programs") is True
    assert "READY=1\nSTATUS=polling 2 programs" == systemd.received()


def test_each_state_sends_its_exact_datagram(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)

    assert notifier.stopping() is True
    assert notifier.status("sending wave 3") is True
    assert notifier.watchdog() is True
    assert notifier.notify("ERRNO=5", "BUSERROR=x") is True

    assert "STOPPING=1" == systemd.received()
    assert "STATUS=sending wave 3" == systemd.received()
    assert "WATCHDOG=1" == systemd.received()
    assert "ERRNO=5\nBUSERROR=x" == systemd.received()
    assert systemd.nothing_pending()


def test_status_with_newlines_stays_one_assignment(path_systemd: FakeSystemd) -> None:
    """A newline in the text would otherwise smuggle a second KEY=VALUE (e.g. READY=1) in."""
    assert notifier_for(path_systemd).status("line one\nREADY=1") is True
    assert "STATUS=line one READY=1" == path_systemd.received()


def test_reloading_carries_the_monotonic_clock_in_microseconds(systemd: FakeSystemd) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier_for(systemd).reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = systemd.received().split("\n")
    key, _, value = second.partition("=")
    assert "RELOADING=1" == first
    assert "MONOTONIC_USEC" == key
    assert before <= int(value) <= after


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/notify"}],
    ids=["absent", "empty", "relative-path"],
)
def test_disabled_without_a_usable_notify_socket(environ: dict[str, str]) -> None:
    notifier = Notifier(environ)

    assert notifier.enabled is False
    assert [False] * 6 == [
        notifier.ready("x"),
        notifier.reloading(),
        notifier.stopping(),
        notifier.status("x"),
        notifier.watchdog(),
        notifier.notify("READY=1"),
    ]


def test_reads_the_process_environment_by_default(
    path_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_systemd.env_value)

    assert Notifier().watchdog() is True
    assert "WATCHDOG=1" == path_systemd.received()


def test_gone_socket_returns_false_and_logs_once_per_failure_streak(socket_dir: Path) -> None:
    path = socket_dir / "notify"
    first = FakeSystemd(str(path), str(path))
    notifier = notifier_for(first)
    first.sock.close()
    path.unlink()

    with capture_logs() as failing:
        results = [notifier.watchdog(), notifier.status("x"), notifier.ready()]
    again = FakeSystemd(str(path), str(path))
    with capture_logs() as recovering:
        recovered = notifier.watchdog()
    again.sock.close()

    assert [False, False, False] == results
    assert ["sdnotify.failed"] == [entry["event"] for entry in failing]
    assert str(path) == failing[0]["socket"]
    assert recovered is True
    assert ["sdnotify.recovered"] == [entry["event"] for entry in recovering]


def test_socket_that_refuses_returns_false_without_raising(socket_dir: Path) -> None:
    """A path that exists but is no socket (a stale file) is an OSError too, not a crash."""
    stale = socket_dir / "stale"
    stale.write_text("")

    with capture_logs() as logs:
        assert Notifier({"NOTIFY_SOCKET": str(stale)}).ready() is False
    assert ["sdnotify.failed"] == [entry["event"] for entry in logs]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "1500000"}, 0.75),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "60s"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
    ],
    ids=["usec", "own-pid", "other-pid", "fraction", "unset", "zero", "not-a-number", "negative"],
)
def test_watchdog_interval_is_half_the_timeout_when_the_watchdog_is_ours(
    environ: dict[str, str], expected: float | None
) -> None:
    assert expected == Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **environ}).watchdog_interval()
