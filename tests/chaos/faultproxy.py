"""A small asyncio TCP fault proxy for tests (no toxiproxy on Debian 12, no ``tc netem`` here).

``FaultProxy(upstream_port).start()`` listens on 127.0.0.1 and forwards to the upstream; ``mode``
says what the next connections suffer:

- ``"pass"``: forwarded untouched;
- ``"latency"``: every chunk, both ways, waits ``latency`` seconds;
- ``"reset"``: the connection is accepted and reset at once (nothing reaches the upstream);
- ``"blackhole"``: accepted, read and never answered (a 30 s stall, as long as the client waits);
- ``"drop_after_request"``: the request goes to the upstream, which handles it; when its answer comes
  back the client's connection is reset instead — the ambiguous failure: done, but nobody was told;
- ``"hold_answer"``: like that, but the connection stays open and silent (a client crashing while it
  waits for the answer of a request the upstream has handled).

``methods`` limits the fault to requests of those HTTP methods (say ``("POST",)``: sends fail,
reconciliation's GETs pass); other requests on the same connection go through untouched.

Counts connections by the mode they met, so tests assert exact numbers.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter
from typing import Literal

Mode = Literal["pass", "latency", "reset", "blackhole", "drop_after_request", "hold_answer"]
METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")


class FaultProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.methods: tuple[bytes, ...] = ()
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: Mode, *, latency: float = 0.0, methods: tuple[str, ...] = ()) -> None:
        with self._lock:
            self.mode, self.latency = mode, latency
            self.methods = tuple(m.encode() + b" " for m in methods)

    def start(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    # --- the proxy ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The mode is read again for every chunk the client sends: HTTP clients keep connections
        # alive, so a fault set between two requests must hit the next request, not the next socket.
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        drop_answer = asyncio.Event()
        hold_answer = asyncio.Event()
        mode: Mode = "pass"

        async def client_to_upstream() -> None:
            nonlocal mode
            while chunk := await reader.read(65536):
                with self._lock:
                    latency = self.latency
                    if chunk.startswith(METHODS):  # a new request: decide its fault once
                        wanted = not self.methods or chunk.startswith(self.methods)
                        mode = self.mode if wanted else "pass"
                        self.counts[mode] += 1
                if mode == "reset":
                    break
                if mode == "blackhole":
                    continue
                if mode == "latency":
                    await asyncio.sleep(latency)
                if mode == "drop_after_request":
                    drop_answer.set()
                if mode == "hold_answer":
                    hold_answer.set()
                up_writer.write(chunk)
                await up_writer.drain()

        async def upstream_to_client() -> None:
            while chunk := await up_reader.read(65536):
                if hold_answer.is_set():
                    with self._lock:
                        self.counts["held_answers"] += 1
                    continue
                if drop_answer.is_set():  # the upstream has handled the request; the client never hears
                    with self._lock:
                        self.counts["dropped_answers"] += 1
                    break
                with self._lock:
                    latency = self.latency if self.mode == "latency" else 0.0
                if latency:
                    await asyncio.sleep(latency)
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            _reset(writer)
            up_writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), the way a crashed middlebox or peer ends a connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
