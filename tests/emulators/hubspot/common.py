"""Shared request/response types, limits and error helpers of the emulator's endpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.emulators.hubspot.state import ApiError, Portal

BATCH_LIMIT = 100
LIST_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_CAP = 10_000
MEMBERSHIP_LIMIT = 250
OWNERS_LIMIT = 500
DEFAULT_PROPERTIES = ("hs_object_id", "createdate", "lastmodifieddate")
SINGULAR = {"contacts": "contact", "companies": "company", "tasks": "task"}
OBJECT_NAMES = {"contacts": "CONTACT", "companies": "COMPANY", "tasks": "TASK", "notes": "NOTE"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    body: Any

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def params(self, name: str) -> list[str]:
        return [v for item in self.query.get(name, []) for v in item.split(",") if v]


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


Handler = Callable[[Portal, Request], Response]


def validation_error(message: str, **context: list[str]) -> ApiError:
    return ApiError(400, message, "VALIDATION_ERROR", context=context)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "OBJECT_NOT_FOUND")


def int_param(req: Request, name: str, default: int, maximum: int) -> int:
    raw = req.param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(f"{name} must be an integer, got: {raw}") from None
    if not 1 <= value <= maximum:
        raise validation_error(f"{name} must be between 1 and {maximum}, got: {value}")
    return value


def batch_inputs(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error("Invalid input JSON: 'inputs' is required")
    inputs: list[dict[str, Any]] = body["inputs"]
    if len(inputs) > BATCH_LIMIT:
        raise validation_error(f"Batch input limit is {BATCH_LIMIT}, got: {len(inputs)}")
    return inputs
