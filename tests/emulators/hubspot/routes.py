"""The CRM v3 routing table: which handler, call kind (for counting) and scope each request has.

Shapes follow the hubspot-api-client model classes (see tests/connectors/hubspot/test_emulator.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.emulators.hubspot.common import Request, Response
from tests.emulators.hubspot.meta import (
    group_create,
    groups_list,
    memberships,
    owner_get,
    owners_list,
    properties_list,
    property_create,
    property_get,
)
from tests.emulators.hubspot.objects import (
    associations,
    batch_create,
    batch_read,
    batch_update,
    create_one,
    get_one,
    list_page,
    search,
)
from tests.emulators.hubspot.state import OBJECT_TYPES, ApiError, Portal

_OBJ = "(contacts|companies|tasks|notes)"
# Engagements (tasks, notes) are covered by the contacts scopes.
_SCHEMA_SCOPE = {"contacts": "contacts", "companies": "companies", "tasks": "contacts", "notes": "contacts"}
_OBJECT_SCOPE = {"contacts": "contacts", "companies": "companies", "tasks": "contacts", "notes": "contacts"}


def _obj_scope(object_type: str, write: bool) -> str:
    return f"crm.objects.{_OBJECT_SCOPE[object_type]}.{'write' if write else 'read'}"


def _schema_scope(object_type: str, write: bool) -> str:
    return f"crm.schemas.{_SCHEMA_SCOPE[object_type]}.{'write' if write else 'read'}"


_ROUTES: list[tuple[str, str, Callable[..., tuple[Callable[..., Response], str, str]]]] = [
    (
        "GET",
        rf"/crm/v3/objects/{_OBJ}",
        lambda t: (lambda p, r: list_page(p, r, t), f"{t}.list", _obj_scope(t, False)),
    ),
    (
        "POST",
        rf"/crm/v3/objects/{_OBJ}",
        lambda t: (lambda p, r: create_one(p, r, t), f"{t}.create", _obj_scope(t, True)),
    ),
    (
        "POST",
        rf"/crm/v3/objects/{_OBJ}/search",
        lambda t: (lambda p, r: search(p, r, t), f"{t}.search", _obj_scope(t, False)),
    ),
    (
        "POST",
        rf"/crm/v3/objects/{_OBJ}/batch/read",
        lambda t: (lambda p, r: batch_read(p, r, t), f"{t}.batch_read", _obj_scope(t, False)),
    ),
    (
        "POST",
        rf"/crm/v3/objects/{_OBJ}/batch/update",
        lambda t: (lambda p, r: batch_update(p, r, t), f"{t}.batch_update", _obj_scope(t, True)),
    ),
    (
        "POST",
        rf"/crm/v3/objects/{_OBJ}/batch/create",
        lambda t: (lambda p, r: batch_create(p, r, t), f"{t}.batch_create", _obj_scope(t, True)),
    ),
    (
        "GET",
        rf"/crm/v[34]/objects/{_OBJ}/(\d+)/associations/{_OBJ}",
        lambda t, i, to: (
            lambda p, r: associations(p, r, t, i, to),
            f"{t}.associations",
            _obj_scope(t, False),
        ),
    ),
    (
        "GET",
        rf"/crm/v3/objects/{_OBJ}/([^/]+)",
        lambda t, i: (lambda p, r: get_one(p, r, t, i), f"{t}.get", _obj_scope(t, False)),
    ),
    (
        "GET",
        rf"/crm/v3/properties/{_OBJ}/groups",
        lambda t: (lambda p, r: groups_list(p, r, t), "groups.list", _schema_scope(t, False)),
    ),
    (
        "POST",
        rf"/crm/v3/properties/{_OBJ}/groups",
        lambda t: (lambda p, r: group_create(p, r, t), "groups.create", _schema_scope(t, True)),
    ),
    (
        "GET",
        rf"/crm/v3/properties/{_OBJ}",
        lambda t: (lambda p, r: properties_list(p, r, t), "properties.list", _schema_scope(t, False)),
    ),
    (
        "POST",
        rf"/crm/v3/properties/{_OBJ}",
        lambda t: (lambda p, r: property_create(p, r, t), "properties.create", _schema_scope(t, True)),
    ),
    (
        "GET",
        rf"/crm/v3/properties/{_OBJ}/([^/]+)",
        lambda t, n: (lambda p, r: property_get(p, r, t, n), "properties.get", _schema_scope(t, False)),
    ),
    ("GET", r"/crm/v3/owners", lambda: (owners_list, "owners.list", "crm.objects.owners.read")),
    (
        "GET",
        r"/crm/v3/owners/(\d+)",
        lambda i: (lambda p, r: owner_get(p, r, i), "owners.get", "crm.objects.owners.read"),
    ),
    (
        "GET",
        r"/crm/v3/lists/(\d+)/memberships",
        lambda i: (lambda p, r: memberships(p, r, i), "lists.memberships", "crm.lists.read"),
    ),
]


def route(req: Request) -> tuple[Callable[[Portal, Request], Response], str, str]:
    """The handler, the call kind (for counting) and the scope the call needs."""
    for method, pattern, build in _ROUTES:
        match = re.fullmatch(pattern, req.path)
        if match and method == req.method:
            return build(*match.groups())
    raise ApiError(404, f"No route for {req.method} {req.path}", "OBJECT_NOT_FOUND")


assert set(OBJECT_TYPES) == set(_OBJECT_SCOPE)
