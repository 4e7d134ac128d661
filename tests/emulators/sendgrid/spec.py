"""Validate requests against SendGrid's official OpenAPI document, when ``../shared/specs`` exists."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from tests.harness import SHARED_SPECS

SPEC_FILE = SHARED_SPECS / "sendgrid" / "tsg_mail_v3.json"
#: The host the spec's ``servers`` list names; requests are validated as if sent there.
SPEC_HOST = "https://api.sendgrid.com"

_lock = threading.Lock()
_cached: Any = None


def spec_skip_reason() -> str | None:
    """Why requests cannot be checked against the spec (None when they can)."""
    if not SPEC_FILE.is_file():
        return f"SendGrid OpenAPI spec not found at {SPEC_FILE} (the ../shared/specs folder is absent)"
    return None


def _openapi() -> Any:
    global _cached
    with _lock:
        if _cached is None:
            from openapi_core import OpenAPI

            _cached = OpenAPI.from_dict(json.loads(SPEC_FILE.read_text()))
        return _cached


def validate(method: str, path: str, headers: Mapping[str, str], body: bytes) -> list[dict[str, Any]]:
    """SendGrid-style error objects for every way the request breaks the spec (empty when valid)."""
    from openapi_core.testing import MockRequest

    request = MockRequest(
        SPEC_HOST,
        method.lower(),
        path,
        headers=dict(headers),
        data=body,
        content_type=headers.get("Content-Type", "application/json").split(";")[0],
    )
    try:
        _openapi().validate_request(request)
    except Exception as exc:
        cause = exc.__cause__
        inner = getattr(cause, "schema_errors", None)
        if inner:
            return [
                {
                    "field": ".".join(str(p) for p in err.path) or None,
                    "message": err.message[:300],
                    "help": None,
                }
                for err in inner
            ]
        return [{"field": None, "message": f"{type(exc).__name__}: {str(exc)[:300]}", "help": None}]
    return []
