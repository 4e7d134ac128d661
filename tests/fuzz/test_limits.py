"""The limits middleware's pieces: who the client is behind proxies, and the token bucket."""

from __future__ import annotations

import pytest

from nps_sync import config as config_mod
from nps_sync.errors import ConfigError
from nps_sync.limits import Buckets, client_ip, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "192.168.1.5"])


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # an untrusted peer cannot name another client
        ("10.1.2.3", "198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # left-most hops are the client's own words
        ("10.1.2.3", "198.51.100.7, 192.168.1.5", "198.51.100.7"),  # skip trusted hops from the right
        ("10.1.2.3", "10.9.9.9", "10.1.2.3"),  # only proxies: the nearest one
        ("10.1.2.3", "not-an-ip", "10.1.2.3"),
        ("10.1.2.3", "", "10.1.2.3"),
    ],
)
def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    assert expected == client_ip(scope(peer, forwarded), PROXIES)


def test_bucket_allows_a_minute_of_burst_then_one_per_interval() -> None:
    now = [0.0]
    buckets = Buckets(clock=lambda: now[0])
    waits = [buckets.take(("page", "a"), 6) for _ in range(8)]
    assert [0.0] * 6 == waits[:6]
    assert 10.0 == pytest.approx(waits[6])
    assert 0.0 == buckets.take(("page", "b"), 6)  # another client has its own bucket
    now[0] += 10.0
    assert 0.0 == buckets.take(("page", "a"), 6)
    assert 0.0 < buckets.take(("page", "a"), 6)


def test_a_bad_trusted_proxy_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "config.toml"
    path.write_text('[daemon.limits]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n')
    with pytest.raises(ConfigError, match=r"proxy\.local"):
        config_mod.load(path)
