"""``[daemon] web_processes``: the web server in processes of its own, against a running daemon.

An answer posted to a child is recorded and acted on by the daemon's workers; a child that dies is
replaced; SIGHUP replaces the children; a SIGKILLed daemon takes its children with it (the port is
free for the next start); a channel the daemon disabled shows in a child's /healthz."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.connectors.outbox.fixtures import OutboxProbe
from tests.connectors.sandbox.fixtures import SandboxProbe
from tests.e2e.daemon import DaemonProcess, free_port, wait_for, write_config
from tests.e2e.test_loop import program, score_links
from tests.harness import E2EChannel

CHILD_MODULE = "nps_sync.web.processes"


def web_children(pid: int) -> set[int]:
    """Live (not zombie) children of ``pid`` running the web process module."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z" and CHILD_MODULE in cmdline:
            found.add(int(proc.name))
    return found


def thread_nice(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its nice value (/proc/PID/task/TID/stat, field 19)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = int(fields[16])
    return out


def any_web_process_alive(pids: set[int]) -> bool:
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return True
    return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def web_config(tmp_path: Path, port: int, channel: E2EChannel, *, processes: int) -> Path:
    """The sandbox CRM, ``channel`` for email, one program, ``processes`` web processes."""
    return write_config(
        tmp_path / "config.toml",
        port=port,
        sections=['[crm]\nkind = "sandbox"\n', channel.config_toml],
        overrides={
            "daemon": {"web_processes": processes},
            "channels": {"email": {"postal_address": "Example Inc., 1 Main St"}},
            "program": [program({})],
        },
    )


@pytest.fixture
def daemon(
    tmp_path: Path, channel_e2e_outbox: E2EChannel
) -> Iterator[tuple[DaemonProcess, Store, OutboxProbe, int]]:
    port = free_port()
    config = web_config(tmp_path, port, channel_e2e_outbox, processes=2)
    process = DaemonProcess(config, f"http://127.0.0.1:{port}", env={})
    process.start()
    store = Store(f"sqlite:///{tmp_path / 'state' / 'nps-sync.db'}")
    probe = channel_e2e_outbox.probe
    assert isinstance(probe, OutboxProbe)
    probe.attach(store)
    yield process, store, probe, port
    process.stop(signal.SIGKILL)
    store.dispose()


def test_answers_go_through_web_processes_that_are_replaced_when_they_die(
    daemon: tuple[DaemonProcess, Store, OutboxProbe, int],
) -> None:
    process, store, outbox, port = daemon
    assert process.proc is not None
    pid = process.proc.pid
    first = wait_for(lambda: c if len(c := web_children(pid)) == 2 else None, what="2 web processes")

    # The daemon's worker threads yield the CPU to the web processes (nice 10); its main thread and
    # the web processes keep the normal priority.
    niced = wait_for(
        lambda: n if len(n := [t for t, v in thread_nice(pid).items() if v == 10]) >= 2 else None,
        what="the two worker threads at nice 10",
    )
    assert pid not in niced
    assert 0 == thread_nice(pid)[pid]
    assert all(0 == thread_nice(child)[child] for child in first)

    survey = wait_for(
        lambda: next((m for m in outbox.messages() if len(score_links(m)) == 11), None), what="a survey"
    )
    tasks_before = len(SandboxProbe(store).tasks())
    with httpx.Client(timeout=10) as http:
        assert 200 == http.post(score_links(survey)[2], data={"score": "2", "comment": "slow"}).status_code

    def responses() -> int:
        with store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.responses)).scalar_one())

    wait_for(lambda: responses() == 1, what="the answer recorded by the daemon's workers")
    wait_for(
        lambda: len(SandboxProbe(store).tasks()) == tasks_before + 1, what="the detractor's callback task"
    )

    # A child killed outright: logged and replaced; the other one keeps serving meanwhile.
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert 200 == httpx.get(f"{process.url}/healthz", timeout=5).status_code
    second = wait_for(
        lambda: c if len(c := web_children(pid)) == 2 and victim not in c else None,
        what="a new web process in place of the killed one",
    )
    assert 1 == len(second - first)
    assert '"web.process_exited"' in process.log()
    assert '"returncode": -9' in process.log()

    # SIGHUP: both children replaced, the port served throughout.
    process.proc.send_signal(signal.SIGHUP)
    third = wait_for(
        lambda: c if len(c := web_children(pid)) == 2 and not c & second else None,
        what="web processes started again on the reloaded config",
    )
    assert 200 == httpx.get(f"{process.url}/healthz", timeout=5).status_code

    # The daemon SIGKILLed: its web processes stop on their own and free the port.
    process.proc.kill()
    process.proc.wait()
    wait_for(lambda: not any_web_process_alive(third), what="the web processes to exit after the daemon")
    wait_for(lambda: port_free(port), what="the port to be free again")
    assert '"web.daemon_gone"' in process.log()


def test_a_web_process_reports_the_channels_the_daemon_disabled(
    tmp_path: Path, channel_e2e_sendgrid: E2EChannel
) -> None:
    """SendGrid refuses the API key: the daemon's sender disables email, and /healthz — answered by a
    web process, which never sends — says so."""
    port = free_port()
    config = web_config(tmp_path, port, channel_e2e_sendgrid, processes=1)
    env = {**channel_e2e_sendgrid.env, "SENDGRID_API_KEY": "SG.not-the-right-key"}
    process = DaemonProcess(config, f"http://127.0.0.1:{port}", env=env)
    process.start()
    try:
        assert process.proc is not None
        assert 1 == len(web_children(process.proc.pid))
        body = wait_for(
            lambda: (
                b if (b := httpx.get(f"{process.url}/healthz", timeout=5).json())["status"] != "ok" else None
            ),
            what="/healthz to report the disabled channel",
        )
        assert "degraded" == body["status"]
        assert ["email"] == list(body["disabled_channels"])
        assert "401" in body["disabled_channels"]["email"] or "refused" in body["disabled_channels"]["email"]
    finally:
        assert 0 == process.stop(), process.log()
