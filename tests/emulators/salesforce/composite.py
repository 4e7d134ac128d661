"""The Composite API (``POST /composite``): subrequests in one transaction, later ones referring to
earlier results as ``@{referenceId.id}``. Only sObject creates are emulated (what the connector
sends: a ContentNote and its ContentDocumentLink). With ``allOrNone`` one failure rolls back every
subrequest, and the others answer ``PROCESSING_HALTED``, as Salesforce does."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from tests.emulators.salesforce.rest import Rest, error

MAX_SUBREQUESTS = 25
_SOBJECT_URL = re.compile(r"/services/data/v\d+\.\d/sobjects/(?P<t>\w+)")
_REFERENCE = re.compile(r"@\{(?P<ref>\w+)\.id\}")
#: Markup a ContentNote body may hold; anything else (or a bare '&' or '<') is refused.
_NOTE_TAG = re.compile(r"</?(p|br|b|i|u|strong|em|ul|ol|li)\s*/?>", re.I)
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.I)
HALTED = {
    "errorCode": "PROCESSING_HALTED",
    "message": "The transaction was rolled back since another operation in the same transaction failed.",
}


def note_content_problem(text: str) -> str | None:
    bare = _ENTITY.sub("", _NOTE_TAG.sub("", text))
    if "<" in bare or ">" in bare or "&" in bare:
        return (
            "Note can't be saved because it contains HTML tags or unescaped characters that are not "
            "allowed in a Note."
        )
    return None


def run(rest: Rest, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
        return error(400, "JSON_PARSER_ERROR", "expected an object with a compositeRequest array")
    subrequests = body["compositeRequest"]
    if not 0 < len(subrequests) <= MAX_SUBREQUESTS:
        return error(400, "INVALID_BATCH_REQUEST", f"between 1 and {MAX_SUBREQUESTS} subrequests")
    all_or_none = bool(body.get("allOrNone"))
    ids: dict[str, str] = {}
    created: list[tuple[str, str]] = []
    answers: list[dict[str, Any]] = []
    failed = False
    for sub in subrequests:
        ref = str(sub.get("referenceId", ""))
        m = _SOBJECT_URL.fullmatch(str(sub.get("url", "")))
        if failed and all_or_none:
            answers.append({"body": [HALTED], "httpHeaders": {}, "httpStatusCode": 400, "referenceId": ref})
            continue
        if sub.get("method") != "POST" or m is None:
            return error(400, "INVALID_BATCH_REQUEST", f"only sObject creates are emulated, got {sub!r}")
        sobject = m["t"]
        values = {
            k: _REFERENCE.sub(lambda r: ids.get(r["ref"], r.group(0)), v) if isinstance(v, str) else v
            for k, v in (sub.get("body") or {}).items()
        }
        status, out = _create(rest, sobject, values)
        if status == 201:
            ids[ref] = out["id"]
            created.append((sobject, out["id"]))
            answers.append({"body": out, "httpHeaders": {}, "httpStatusCode": 201, "referenceId": ref})
        else:
            failed = True
            answers.append({"body": out, "httpHeaders": {}, "httpStatusCode": status, "referenceId": ref})
    if failed and all_or_none:
        for sobject, record_id in created:
            rest.org.records[sobject].pop(record_id, None)
        for answer in answers:
            if answer["httpStatusCode"] == 201:
                answer.update(body=[HALTED], httpStatusCode=400)
    return 200, {"compositeResponse": answers}


def _create(rest: Rest, sobject: str, values: dict[str, Any]) -> tuple[int, Any]:
    if sobject == "ContentNote":
        status, decoded = _decoded(values.get("Content"))
        if status != 200:
            return status, decoded
        problem = note_content_problem(decoded or "")
        if problem is not None:
            return 400, [
                {"errorCode": "FIELD_INTEGRITY_EXCEPTION", "message": problem, "fields": ["Content"]}
            ]
    status, out = rest.create_one(sobject, values)
    if status != 201:
        return status, [
            {"errorCode": e["errorCode"], "message": e["message"], "fields": e.get("fields", [])} for e in out
        ]
    return 201, {"id": out["id"], "success": True, "errors": []}


def _decoded(value: Any) -> tuple[int, Any]:
    if value is None:
        return 200, ""
    try:
        return 200, base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return 400, [
            {"errorCode": "JSON_PARSER_ERROR", "message": "Content: not base64", "fields": ["Content"]}
        ]
