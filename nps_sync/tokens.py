"""Signed, opaque tokens for the links in messages (itsdangerous).

Payloads carry only opaque ids (a send id and, for score links, the score), never an email address
or phone number: itsdangerous payloads are readable without the key. Each purpose has its own salt, so
an unsubscribe token can never be replayed as a survey answer. Keys rotate through a list, newest
last: tokens signed with an older key still verify until it is removed.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from nps_sync.errors import TokenError
from nps_sync.secrets import Secrets

Purpose = Literal["survey", "unsubscribe", "testimonial"]
SALTS: dict[Purpose, str] = {
    "survey": "nps-sync/survey-response/v1",
    "unsubscribe": "nps-sync/unsubscribe/v1",
    "testimonial": "nps-sync/testimonial/v1",
}


class Tokens:
    def __init__(self, keys: Sequence[str], *, max_age: dict[Purpose, timedelta]) -> None:
        if not keys or any(len(k) < 32 for k in keys):
            raise TokenError("signing keys must be at least 32 characters each (256 bits of hex)")
        self._serializers = {
            purpose: URLSafeTimedSerializer(list(keys), salt=salt) for purpose, salt in SALTS.items()
        }
        self._max_age = max_age

    def sign(self, purpose: Purpose, payload: dict[str, Any]) -> str:
        return str(self._serializers[purpose].dumps(payload))

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
