"""Object endpoints (contacts, companies, tasks): pages, batches, search, associations."""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.emulators.hubspot import query
from tests.emulators.hubspot.common import (
    DEFAULT_PROPERTIES,
    LIST_LIMIT,
    OBJECT_NAMES,
    SEARCH_CAP,
    SEARCH_LIMIT,
    SINGULAR,
    Request,
    Response,
    batch_inputs,
    int_param,
    not_found,
    validation_error,
)
from tests.emulators.hubspot.state import ASSOCIATION_TYPES, ApiError, CrmObject, Portal, now_iso


def _object_json(
    portal: Portal,
    object_type: str,
    obj: CrmObject,
    properties: Sequence[str],
    associations: Sequence[str] = (),
) -> dict[str, Any]:
    wanted = list(DEFAULT_PROPERTIES) + [p for p in properties if p not in DEFAULT_PROPERTIES]
    known = portal.properties[object_type]
    out: dict[str, Any] = {
        "id": obj.id,
        "properties": {p: obj.properties.get(p) for p in wanted if p in known},
        "createdAt": obj.created_at,
        "updatedAt": obj.updated_at,
        "archived": False,
    }
    if associations:
        assoc: dict[str, Any] = {}
        for to_type in associations:
            linked = obj.associations.get(to_type, {})
            if linked:
                assoc[to_type] = {
                    "results": [
                        {"id": to_id, "type": f"{SINGULAR[object_type]}_to_{SINGULAR[to_type]}"}
                        for to_id in sorted(linked, key=int)
                    ]
                }
        if assoc:
            out["associations"] = assoc
    return out


def _properties_error(object_type: str, problems: list[dict[str, Any]]) -> ApiError:
    return ApiError(
        400,
        f"Property values were not valid: {json.dumps(problems)}",
        "VALIDATION_ERROR",
        errors=[
            {
                "message": p["message"],
                "code": p["error"],
                "context": {"propertyName": [p["name"]]},
            }
            for p in problems
        ],
    )


def list_page(portal: Portal, req: Request, object_type: str) -> Response:
    limit = int_param(req, "limit", 10, LIST_LIMIT)
    after = int(req.param("after") or 0)
    order = portal.order[object_type]
    start = bisect.bisect_right(order, after)
    page = [str(i) for i in order[start : start + limit]]
    remaining = len(order) - start
    props, assoc = req.params("properties"), req.params("associations")
    body: dict[str, Any] = {
        "results": [
            _object_json(portal, object_type, portal.objects[object_type][i], props, assoc) for i in page
        ]
    }
    if remaining > limit:
        body["paging"] = {"next": {"after": page[-1], "link": f"?after={page[-1]}"}}
    return Response(200, body)


def get_one(portal: Portal, req: Request, object_type: str, object_id: str) -> Response:
    obj = portal.objects[object_type].get(object_id)
    if obj is None:
        raise not_found(f"{OBJECT_NAMES[object_type]} {object_id}")
    return Response(
        200, _object_json(portal, object_type, obj, req.params("properties"), req.params("associations"))
    )


def batch_read(portal: Portal, req: Request, object_type: str) -> Response:
    inputs = batch_inputs(req.body)
    if req.body.get("idProperty") not in (None, "hs_object_id"):
        raise validation_error("Only hs_object_id is supported as idProperty by this emulator")
    props = list(req.body.get("properties") or [])
    results, missing = [], []
    for item in inputs:
        obj = portal.objects[object_type].get(str(item.get("id")))
        if obj is None:
            missing.append(str(item.get("id")))
        else:
            results.append(_object_json(portal, object_type, obj, props))
    stamp = now_iso()
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": stamp,
        "completedAt": stamp,
    }
    if missing:
        body["numErrors"] = 1
        body["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": f"Could not get some {OBJECT_NAMES[object_type]} objects, "
                "they may be deleted or not exist.",
                "context": {"ids": missing},
            }
        ]
        return Response(207, body)
    return Response(200, body)


def batch_update(portal: Portal, req: Request, object_type: str) -> Response:
    """All or nothing, like HubSpot: any bad id or value fails the whole batch with a 400."""
    inputs = batch_inputs(req.body)
    known = portal.properties[object_type]
    missing = [str(i.get("id")) for i in inputs if str(i.get("id")) not in portal.objects[object_type]]
    if missing:
        raise ApiError(
            400,
            f"Could not get some {OBJECT_NAMES[object_type]} objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "VALIDATION_ERROR",
            context={"ids": missing},
        )
    staged: list[tuple[CrmObject, dict[str, str]]] = []
    problems: list[dict[str, Any]] = []
    for item in inputs:
        values = item.get("properties")
        if not isinstance(values, dict):
            raise validation_error("Each input needs 'properties'")
        stored, bad = query.validate_properties(object_type, values, known, portal.owners)
        problems.extend(bad)
        staged.append((portal.objects[object_type][str(item["id"])], stored))
    if problems:
        raise _properties_error(object_type, problems)
    stamp = now_iso()
    for obj, stored in staged:
        for name, value in stored.items():
            if value == "":
                obj.properties.pop(name, None)
            else:
                obj.properties[name] = value
        obj.updated_at = stamp
        obj.properties["lastmodifieddate"] = stamp
    portal.touch()
    results = [_object_json(portal, object_type, obj, list(stored)) for obj, stored in staged]
    return Response(200, {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp})


Staged = tuple[dict[str, str], list[tuple[str, str, int]]]


NOTE_BODY_MAX = 65_536


def _stage_create(portal: Portal, object_type: str, item: Mapping[str, Any]) -> Staged:
    """Validate one create input: its stored values and associations, or an ApiError."""
    values = item.get("properties")
    if not isinstance(values, dict):
        raise validation_error("Each input needs 'properties'")
    stored, problems = query.validate_properties(
        object_type, values, portal.properties[object_type], portal.owners
    )
    if problems:
        raise _properties_error(object_type, problems)
    if object_type in ("tasks", "notes") and not stored.get("hs_timestamp"):
        raise validation_error(f"hs_timestamp is required for {object_type}", propertyName=["hs_timestamp"])
    if object_type == "notes" and len(stored.get("hs_note_body") or "") > NOTE_BODY_MAX:
        raise validation_error(f"hs_note_body is longer than {NOTE_BODY_MAX} characters")
    links: list[tuple[str, str, int]] = []
    for assoc in item.get("associations") or []:
        to_id = str((assoc.get("to") or {}).get("id"))
        for spec in assoc.get("types") or []:
            type_id = int(spec.get("associationTypeId", -1))
            to_type = next(
                (t for (f, t), ids in ASSOCIATION_TYPES.items() if f == object_type and type_id in ids), None
            )
            if spec.get("associationCategory") != "HUBSPOT_DEFINED" or to_type is None:
                raise validation_error(f"Invalid association type {type_id} for {object_type}")
            if to_id not in portal.objects[to_type]:
                raise validation_error(f"Association target {to_type} {to_id} does not exist", ids=[to_id])
            links.append((to_type, to_id, type_id))
    return stored, links


def _insert(portal: Portal, object_type: str, staged: Staged) -> CrmObject:
    stored, links = staged
    obj = portal.insert(object_type, stored)
    for to_type, to_id, type_id in links:
        portal.associate(object_type, obj.id, to_type, to_id, type_id)
    return obj


def batch_create(portal: Portal, req: Request, object_type: str) -> Response:
    inputs = batch_inputs(req.body)
    # All inputs are validated before any is created: a refused batch creates nothing.
    staged = [_stage_create(portal, object_type, item) for item in inputs]
    created = [_insert(portal, object_type, item) for item in staged]
    stamp = now_iso()
    results = [_object_json(portal, object_type, obj, list(obj.properties)) for obj in created]
    return Response(201, {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp})


def create_one(portal: Portal, req: Request, object_type: str) -> Response:
    obj = _insert(portal, object_type, _stage_create(portal, object_type, req.body or {}))
    return Response(201, _object_json(portal, object_type, obj, list(obj.properties)))


def search(portal: Portal, req: Request, object_type: str) -> Response:
    body = req.body if isinstance(req.body, dict) else {}
    props = portal.properties[object_type]
    limit = int(body.get("limit") or 10)
    if not 1 <= limit <= SEARCH_LIMIT:
        raise validation_error(f"limit must be between 1 and {SEARCH_LIMIT}, got: {limit}")
    after = int(body.get("after") or 0)
    if after + limit > SEARCH_CAP:
        raise validation_error(
            f"The search API returns at most {SEARCH_CAP} results per query; after={after} limit={limit}"
        )
    groups = body.get("filterGroups") or []
    query.check_filter_groups(groups, props)
    key = json.dumps([object_type, groups, body.get("sorts")], sort_keys=True)
    cached = portal.search_cache.get(key)
    if cached is not None and cached[0] == portal.version:
        found = cached[1]
    else:
        objects = portal.objects[object_type]
        found = [
            objects[str(i)]
            for i in portal.order[object_type]
            if query.matches(objects[str(i)], groups, props)
        ]
        found = query.sort_objects(found, body.get("sorts") or [], props)
        portal.search_cache = {key: (portal.version, found)}
    page = found[after : after + limit]
    wanted = list(body.get("properties") or [])
    out: dict[str, Any] = {
        "total": len(found),
        "results": [_object_json(portal, object_type, o, wanted) for o in page],
    }
    if after + limit < len(found):
        out["paging"] = {"next": {"after": str(after + limit), "link": ""}}
    return Response(200, out)


def associations(portal: Portal, req: Request, object_type: str, object_id: str, to_type: str) -> Response:
    obj = portal.objects[object_type].get(object_id)
    if obj is None:
        raise not_found(f"{OBJECT_NAMES[object_type]} {object_id}")
    linked = obj.associations.get(to_type, {})
    results = [
        {
            "toObjectId": int(to_id),
            "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": t, "label": None} for t in sorted(types)
            ],
        }
        for to_id, types in sorted(linked.items(), key=lambda kv: int(kv[0]))
    ]
    return Response(200, {"results": results})
