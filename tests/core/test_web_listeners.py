"""How web processes share the daemon's port: the daemon holds it, each child listens on it with a
socket of its own, and the kernel spreads new connections over the children."""

from __future__ import annotations

import errno
import socket

import pytest

from nps_sync.errors import NpsSyncError
from nps_sync.web.processes import hold_port, own_listener


def accept_all(sock: socket.socket) -> int:
    sock.setblocking(False)
    accepted = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return accepted
        conn.close()
        accepted += 1


def test_new_connections_are_spread_over_the_children() -> None:
    held = hold_port("127.0.0.1", 0)
    first, second = own_listener(held), own_listener(held)
    port = held.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
    try:
        counts = [accept_all(first), accept_all(second)]
        # Both queues were filled while neither child accepted: with one shared socket, the first
        # child to accept would have taken all 64. (All 64 on one socket by chance: 2 in 2**64.)
        assert sum(counts) == 64
        assert min(counts) > 0, counts
    finally:
        for c in (*clients, first, second, held):
            c.close()


def test_the_daemon_socket_holds_the_port_but_takes_no_connection() -> None:
    held = hold_port("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        # A process that does not share the port (no SO_REUSEPORT) cannot take it.
        with socket.socket() as other, pytest.raises(OSError, match="Address already in use") as refused:
            other.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        held.close()


def test_a_port_in_use_is_reported_with_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(NpsSyncError, match=f"could not listen on 127.0.0.1:{port}"):
            hold_port("127.0.0.1", port)
