"""The emulator's own behaviour where tests and benchmarks lean on it: status callbacks for many
messages at once (as Twilio posts them), each message's in order, and look-up by SID."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import pytest

from nps_sync.models import OutboundMessage
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import make_channel
from tests.emulators.listener import EmulatorHTTPServer
from tests.emulators.twilio import TwilioEmulator, WebhookSender


class _Recorder:
    """A webhook target that holds the first ``together`` callbacks until that many are in flight."""

    def __init__(self, together: int) -> None:
        self.barrier = threading.Barrier(together, timeout=2)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                with recorder.lock:
                    recorder.seen.append((form["MessageSid"][0], form["MessageStatus"][0]))
                    first = len(recorder.seen) <= recorder.barrier.parties
                if first:
                    recorder.barrier.wait()  # BrokenBarrierError (a 500) unless enough came at once
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = EmulatorHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder(together=4)
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def _send(emulator: TwilioEmulator, count: int) -> list[str]:
    store = Store("sqlite://")
    channel = make_channel(emulator, store)
    try:
        outcomes = channel.send(
            [OutboundMessage(f"k{i}", "sms", f"+1415555{i:04d}", "", "Rate us 0-10") for i in range(count)]
        )
    finally:
        channel.close()
        store.dispose()
    return [o.provider_id or "" for o in outcomes]


def test_status_callbacks_go_out_for_several_messages_at_once_each_sent_before_delivered(
    twilio_emulator: TwilioEmulator, recorder: _Recorder
) -> None:
    sender = WebhookSender(twilio_emulator, target_url=recorder.url)
    sender.start_auto_status(senders=4)
    try:
        sids = _send(twilio_emulator, 10)
        sender.drain()
    finally:
        sender.stop()

    assert not recorder.barrier.broken  # four callbacks were in flight together
    assert 20 == len(recorder.seen) == twilio_emulator.call_counts()["webhooks.status"]
    for sid in sids:
        assert ["sent", "delivered"] == [status for s, status in recorder.seen if s == sid]
    assert {"delivered"} == {twilio_emulator.state.find(sid).status for sid in sids}  # type: ignore[union-attr]


def test_one_sender_posts_one_callback_at_a_time(
    twilio_emulator: TwilioEmulator, recorder: _Recorder
) -> None:
    sender = WebhookSender(twilio_emulator, target_url=recorder.url)
    sender.start_auto_status()
    try:
        _send(twilio_emulator, 4)
        sender.drain()
    finally:
        sender.stop()

    assert recorder.barrier.broken  # the first callback waited alone, and the barrier gave up


def test_messages_are_found_by_sid_until_forgotten(twilio_emulator: TwilioEmulator) -> None:
    sids = _send(twilio_emulator, 3)

    assert sids == [twilio_emulator.state.find(sid).sid for sid in sids]  # type: ignore[union-attr]
    twilio_emulator.state.forget_messages()
    assert ([], [None, None, None]) == (
        twilio_emulator.messages(),
        [twilio_emulator.state.find(sid) for sid in sids],
    )
