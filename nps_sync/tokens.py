"""Signed, opaque tokens for the links in messages (itsdangerous).

Payloads carry only opaque ids (a send id and, for score links, the score), never an email address
or phone number: itsdangerous payloads are readable without the key. Each purpose has its own salt, so
an unsubscribe token can never be replayed as a survey answer. Keys rotate through a list, newest
last: tokens signed with an older key still verify until it is removed.

A wave signs two tokens per survey email (its survey link, which its 11 score links share, and its
unsubscribe link), so signing has a fast path: the HMAC key itsdangerous derives is computed once
per purpose and the small payloads are never worth compressing, which gives the same bytes
``URLSafeTimedSerializer.dumps`` gives (checked at start-up; any other payload, or a library that
signs differently, goes through itsdangerous itself).
"""

from __future__ import annotations

import binascii
import hmac
import json
import secrets as _secrets
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.signer import HMACAlgorithm

from nps_sync.errors import TokenError
from nps_sync.secrets import Secrets

Purpose = Literal["survey", "unsubscribe", "testimonial"]
SALTS: dict[Purpose, str] = {
    "survey": "nps-sync/survey-response/v1",
    "unsubscribe": "nps-sync/unsubscribe/v1",
    "testimonial": "nps-sync/testimonial/v1",
}


#: The scores a survey email links to (its survey link with ``?score=N``).
SCORES = tuple(range(11))


class Tokens:
    def __init__(self, keys: Sequence[str], *, max_age: dict[Purpose, timedelta]) -> None:
        if not keys or any(len(k) < 32 for k in keys):
            raise TokenError("signing keys must be at least 32 characters each (256 bits of hex)")
        self._serializers = {
            purpose: URLSafeTimedSerializer(list(keys), salt=salt) for purpose, salt in SALTS.items()
        }
        self._max_age = max_age
        self._macs: dict[Purpose, Any] = {}
        for purpose, serializer in self._serializers.items():
            signer = serializer.make_signer()
            algorithm = signer.algorithm
            if (
                isinstance(algorithm, HMACAlgorithm)
                and algorithm.digest_method is HMACAlgorithm.default_digest_method
            ):
                self._macs[purpose] = hmac.new(signer.derive_key(), digestmod="sha1")
        for purpose in list(self._macs):
            if not self._fast_path_agrees(purpose):
                del self._macs[purpose]

    def sign(self, purpose: Purpose, payload: dict[str, Any]) -> str:
        mac = self._macs.get(purpose)
        if mac is not None:
            data = _compact_json(payload)
            if _incompressible(data):
                return _fast_sign(mac, data, int(time.time()))
        return str(self._serializers[purpose].dumps(payload))

    def _fast_path_agrees(self, purpose: Purpose) -> bool:
        probe = {"s": 1234567, "v": 10}
        for _ in range(3):  # a second boundary between the two calls changes the timestamp
            now = int(time.time())
            slow = str(self._serializers[purpose].dumps(probe))
            data = _compact_json(probe)
            if int(time.time()) == now:
                return slow == _fast_sign(self._macs[purpose], data, now)
        return False

    def verify(self, purpose: Purpose, token: str) -> dict[str, Any]:
        """Return the payload or raise TokenError (tampered, expired, or for another purpose)."""
        if len(token) > 512:
            raise TokenError("token too long")
        max_age = self._max_age.get(purpose)
        try:
            payload = self._serializers[purpose].loads(
                token, max_age=int(max_age.total_seconds()) if max_age else None
            )
        except SignatureExpired as exc:
            raise TokenError("this link has expired") from exc
        except BadSignature as exc:
            raise TokenError("this link is not valid") from exc
        if not isinstance(payload, dict):
            raise TokenError("this link is not valid")
        return payload


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """itsdangerous' ``base64_encode``: URL-safe alphabet, no padding."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _timestamp_bytes(timestamp: int) -> bytes:
    return timestamp.to_bytes(8, "big").lstrip(b"\x00")


def _fast_sign(mac: Any, data: bytes, timestamp: int) -> str:
    """What ``URLSafeTimedSerializer.dumps`` returns for JSON ``data`` it would not compress."""
    value = _b64(data) + b"." + _b64(_timestamp_bytes(timestamp))
    signed = mac.copy()
    signed.update(value)
    return (value + b"." + _b64(signed.digest())).decode("ascii")


def _compact_json(payload: dict[str, Any]) -> bytes:
    """itsdangerous' JSON (``separators=(",", ":")``, ``ensure_ascii=False``), written directly for
    the usual payload of plain ints under plain keys."""
    keys = tuple(payload)
    plain_keys = keys in _PLAIN_KEYS or all(k.isidentifier() and k.isascii() for k in keys)
    if plain_keys and all(type(v) is int for v in payload.values()):
        if len(_PLAIN_KEYS) < 64:
            _PLAIN_KEYS.add(keys)
        return ("{" + ",".join([f'"{k}":{v}' for k, v in payload.items()]) + "}").encode()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


#: Key tuples known to need no JSON escaping.
_PLAIN_KEYS: set[tuple[str, ...]] = set()


def _incompressible(data: bytes) -> bool:
    """True when itsdangerous would not compress ``data`` (it keeps zlib's output only when that
    saves two bytes). Deflate saves only by repeating earlier runs of three bytes or more: in at most
    24 bytes where at most three 3-byte runs repeat, fixed codes cannot gain the 10 bytes zlib's
    header, checksum and block framing cost, nor can dynamic codes pay for their code table. Calling
    zlib for a survey link's 10 bytes would cost more than signing them."""
    if len(data) > 24:
        return False
    repeated = (len(data) - 2) - len(set(zip(data, data[1:], data[2:], strict=False)))
    return repeated <= 3


def load_keys(secrets: Secrets, name: str, state_dir: Path) -> list[str]:
    """Signing keys from the secret ``name`` (comma or newline separated, newest last).

    Without one, a key is generated once into ``state_dir/signing-keys`` (mode 0600), so a first run
    needs no set-up and links stay valid across restarts.
    """
    value = secrets.get(name)
    if value is not None:
        keys = [k.strip() for k in value.get_secret_value().replace("\n", ",").split(",") if k.strip()]
        if keys:
            return keys
    path = state_dir / "signing-keys"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(_secrets.token_hex(32) + "\n")
    return [k.strip() for k in path.read_text().splitlines() if k.strip()]
