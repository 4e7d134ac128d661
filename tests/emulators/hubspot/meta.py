"""Property, property group, owner and list-membership endpoints."""

from __future__ import annotations

import re
from typing import Any

from tests.emulators.hubspot.common import (
    MEMBERSHIP_LIMIT,
    OWNERS_LIMIT,
    Request,
    Response,
    int_param,
    not_found,
    validation_error,
)
from tests.emulators.hubspot.state import ApiError, Portal, PropertyDef, now_iso


def _property(portal: Portal, object_type: str, prop: PropertyDef) -> dict[str, Any]:
    return prop.to_json(now_iso())


def properties_list(portal: Portal, req: Request, object_type: str) -> Response:
    return Response(
        200, {"results": [_property(portal, object_type, p) for p in portal.properties[object_type].values()]}
    )


def property_get(portal: Portal, req: Request, object_type: str, name: str) -> Response:
    prop = portal.properties[object_type].get(name)
    if prop is None:
        raise not_found(f"Property {name}")
    return Response(200, _property(portal, object_type, prop))


VALID_FIELD_TYPES = {
    "string": {"text", "textarea", "file"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}


def property_create(portal: Portal, req: Request, object_type: str) -> Response:
    body = req.body if isinstance(req.body, dict) else {}
    for key in ("name", "label", "type", "fieldType", "groupName"):
        if not body.get(key):
            raise validation_error(f"'{key}' is required to create a property")
    name = str(body["name"])
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise validation_error(f"Property name {name!r} must be lowercase letters, digits and underscores")
    if name in portal.properties[object_type]:
        raise ApiError(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
    if body["fieldType"] not in VALID_FIELD_TYPES.get(body["type"], set()):
        raise validation_error(f"fieldType {body['fieldType']!r} is not valid for type {body['type']!r}")
    if body["groupName"] not in portal.groups[object_type]:
        raise validation_error(
            f"Property group {body['groupName']!r} does not exist", groupName=[body["groupName"]]
        )
    options = [
        {
            "value": o["value"],
            "label": o["label"],
            "displayOrder": o.get("displayOrder", i),
            "hidden": bool(o.get("hidden")),
        }
        for i, o in enumerate(body.get("options") or [])
    ]
    if body["type"] in ("enumeration", "bool") and not options:
        raise validation_error(f"Property {name!r} of type {body['type']} needs options")
    prop = PropertyDef(
        name,
        body["label"],
        body["type"],
        body["fieldType"],
        body["groupName"],
        options,
        hubspot_defined=False,
        description=str(body.get("description") or ""),
    )
    portal.properties[object_type][name] = prop
    return Response(201, _property(portal, object_type, prop))


def group_create(portal: Portal, req: Request, object_type: str) -> Response:
    body = req.body if isinstance(req.body, dict) else {}
    name, label = body.get("name"), body.get("label")
    if not name or not label:
        raise validation_error("'name' and 'label' are required to create a property group")
    if name in portal.groups[object_type]:
        raise ApiError(409, f"Property group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
    portal.groups[object_type][name] = label
    return Response(201, {"name": name, "label": label, "displayOrder": -1, "archived": False})


def groups_list(portal: Portal, req: Request, object_type: str) -> Response:
    return Response(
        200,
        {
            "results": [
                {"name": n, "label": lbl, "displayOrder": -1, "archived": False}
                for n, lbl in portal.groups[object_type].items()
            ]
        },
    )


def owners_list(portal: Portal, req: Request) -> Response:
    limit = int_param(req, "limit", 100, OWNERS_LIMIT)
    after = int(req.param("after") or 0)
    email = (req.param("email") or "").lower()
    owners = sorted((o for o in portal.owners.values() if int(o.id) > after), key=lambda o: int(o.id))
    if email:
        owners = [o for o in owners if o.email.lower() == email]
    page = owners[:limit]
    body: dict[str, Any] = {"results": [o.to_json() for o in page]}
    if len(owners) > limit:
        body["paging"] = {"next": {"after": page[-1].id, "link": ""}}
    return Response(200, body)


def owner_get(portal: Portal, req: Request, owner_id: str) -> Response:
    owner = portal.owners.get(owner_id)
    if owner is None:
        raise not_found(f"Owner {owner_id}")
    return Response(200, owner.to_json())


def memberships(portal: Portal, req: Request, list_id: str) -> Response:
    members = portal.lists.get(list_id)
    if members is None:
        raise not_found(f"List {list_id}")
    limit = int_param(req, "limit", 100, MEMBERSHIP_LIMIT)
    after = int(req.param("after") or 0)
    page = members[after : after + limit]
    stamp = now_iso()
    body: dict[str, Any] = {
        "results": [{"recordId": rid, "membershipTimestamp": stamp} for rid in page],
        "total": len(members),
    }
    if after + limit < len(members):
        body["paging"] = {"next": {"after": str(after + limit), "link": ""}}
    return Response(200, body)
