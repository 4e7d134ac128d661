"""Check requests the SDK sends against Twilio's official OpenAPI document (twilio-oai)."""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest

from tests.harness import SHARED_SPECS

SPEC_FILE = SHARED_SPECS / "twilio" / "twilio_api_v2010.json"
SPEC_MISSING = f"Twilio OpenAPI spec not found: {SPEC_FILE} (the ../shared/specs folder is absent)"
#: The spec's server; the emulator's own host is replaced by it so paths match.
SPEC_HOST = "https://api.twilio.com"


@functools.lru_cache(maxsize=1)
def _load() -> OpenAPI | None:
    # Once per test session. Checking the 1.8 MB document itself takes seconds and is twilio-oai's
    # business, not ours: requests are still validated against it in full.
    if not SPEC_FILE.is_file():
        return None
    return OpenAPI.from_dict(json.loads(SPEC_FILE.read_text()), config=Config(spec_validator_cls=None))


class SpecCheck:
    """Validates requests one at a time (openapi-core is not documented as thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return _load() is not None

    def problem(
        self, *, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> str | None:
        """None when the request matches the spec (or the spec is absent), else what is wrong."""
        api = _load()
        if api is None:
            return None
        request = MockRequest(
            SPEC_HOST,
            method,
            path,
            args=_flatten(query),
            headers=headers,
            data=body,
            content_type=headers.get("Content-Type", "application/x-www-form-urlencoded"),
        )
        with self._lock:
            try:
                api.validate_request(request)
            except Exception as exc:
                causes = getattr(exc.__cause__, "schema_errors", None) or [exc.__cause__ or exc]
                return f"{method} {path}: {type(exc).__name__}: " + "; ".join(
                    str(c).splitlines()[0] for c in causes
                )
        return None


def _flatten(query: dict[str, list[str]]) -> dict[str, Any]:
    return {key: values[-1] for key, values in query.items()}
