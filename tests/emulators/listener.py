"""The HTTP server every emulator listens with."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A vendor's front door takes thousands of connections at once; socketserver's default queue
    is 5. When a client opened many at once (Twilio's 50 concurrent sends, the daemon's sessions
    after an idle spell), the kernel dropped the connections that did not fit, and each drop cost
    the client a 1 s SYN retransmit: a delay the vendor does not cause, charged to nps-sync."""

    request_queue_size = 1024
