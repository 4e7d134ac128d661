"""REST resources of the emulated org: query/queryMore, describe, sObject CRUD, sObject Collections.

Each handler returns ``(status, body)``; bodies follow Salesforce's shapes, errors included
(``[{"message": …, "errorCode": …}]`` for whole-request errors, SaveResults for Collections).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.emulators.salesforce import soql
from tests.emulators.salesforce.codec import parse_value, to_json
from tests.emulators.salesforce.org import PREFIXES, Org

API = "/services/data/v59.0"
MAX_COLLECTION = 200
MAX_BATCH = 2000
MIN_BATCH = 200


def error(status: int, code: str, message: str, fields: list[str] | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return status, [body]


def save_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": fields or []}]}


@dataclass
class Cursor:
    query: soql.Query
    ids: list[str]
    batch: int


@dataclass
class Rest:
    org: Org
    #: Ids whose next save fails with UNABLE_TO_LOCK_ROW (value: how many more times).
    locked: dict[str, int] = field(default_factory=dict)
    #: When set, the server returns at most this many records a page, whatever the client asked.
    server_page_cap: int | None = None
    cursors: dict[str, Cursor] = field(default_factory=dict)

    # --- query -------------------------------------------------------------------------------------

    def run_query(self, text: str) -> tuple[soql.Query, list[str]]:
        """Parse, check and evaluate a query; return it with the matching record ids, ordered."""
        query = soql.parse(text, datetime.now(timezone.utc).date())
        if query.sobject not in self.org.schemas:
            raise soql.SoqlError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported.")
        filtered = set(soql.where_fields(query.where))
        if query.sobject == "ContentDocumentLink" and not filtered & {"ContentDocumentId", "LinkedEntityId"}:
            raise soql.SoqlError(
                "MALFORMED_QUERY",
                "Implementation restriction: ContentDocumentLink requires a filter by a single Id on "
                "ContentDocumentId or LinkedEntityId using the equals operator or multiple Id's using "
                "the IN operator.",
            )
        for path in [*query.fields, *soql.where_fields(query.where), *(o[0] for o in query.order)]:
            try:
                self.org.check_path(query.sobject, path)
            except KeyError as exc:
                raise soql.SoqlError("INVALID_FIELD", str(exc.args[0])) from None
        table = self.org.records[query.sobject]

        def resolve(record: dict[str, Any], path: str) -> Any:
            return self.org.resolve(query.sobject, record, path)

        where = soql.prepared(query.where)
        rows = [r for r in table.values() if where is None or soql.evaluate(where, r, resolve)]
        for name, desc, nulls_last in reversed(query.order):
            present = [r for r in rows if resolve(r, name) is not None]
            absent = [r for r in rows if resolve(r, name) is None]
            present.sort(key=lambda r, n=name: soql._norm(resolve(r, n)), reverse=desc)
            rows = present + absent if nulls_last else absent + present
        if query.limit is not None:
            rows = rows[: query.limit]
        return query, [r["Id"] for r in rows]

    def serialize(self, sobject: str, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": sobject, "url": f"{API}/sobjects/{sobject}/{record['Id']}"}
        }
        for path in fields:
            self._put(out, sobject, record, path.split("."))
        return out

    def _put(self, out: dict[str, Any], sobject: str, record: dict[str, Any], parts: list[str]) -> None:
        if len(parts) == 1:
            d = self.org.field_def(sobject, parts[0])
            assert d is not None
            out[d.name] = to_json(d, record.get(d.name))
            return
        rel = self.org.relationship(sobject, parts[0])
        assert rel is not None
        assert rel.reference_to is not None
        name = rel.relationship_name or parts[0]
        parent = self.org.records[rel.reference_to].get(record.get(rel.name) or "")
        if parent is None:
            out[name] = None
            return
        child = out.get(name) or {
            "attributes": {
                "type": rel.reference_to,
                "url": f"{API}/sobjects/{rel.reference_to}/{parent['Id']}",
            }
        }
        out[name] = child
        self._put(child, rel.reference_to, parent, parts[1:])

    def _batch_size(self, options: str | None) -> int:
        batch = MAX_BATCH
        for part in (options or "").split(","):
            key, _, value = part.strip().partition("=")
            if key == "batchSize" and value.isdigit():
                batch = min(MAX_BATCH, max(MIN_BATCH, int(value)))
        if self.server_page_cap is not None:
            batch = min(batch, self.server_page_cap)
        return batch

    def query(self, text: str, options: str | None) -> tuple[int, Any]:
        try:
            query, ids = self.run_query(text)
        except soql.SoqlError as exc:
            return error(400, exc.code, str(exc))
        if query.count:
            return 200, {"totalSize": len(ids), "done": True, "records": []}
        cursor = Cursor(query, ids, self._batch_size(options))
        token = "01gDx" + secrets.token_hex(5)
        self.cursors[token] = cursor
        return 200, self._page(token, 0)

    def query_more(self, locator: str, options: str | None) -> tuple[int, Any]:
        token, _, offset = locator.rpartition("-")
        cursor = self.cursors.get(token)
        if cursor is None or not offset.isdigit():
            return error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return 200, self._page(token, int(offset))

    def _page(self, token: str, offset: int) -> dict[str, Any]:
        cursor = self.cursors[token]
        chunk = cursor.ids[offset : offset + cursor.batch]
        table = self.org.records[cursor.query.sobject]
        records = [
            self.serialize(cursor.query.sobject, table[i], cursor.query.fields) for i in chunk if i in table
        ]
        end = offset + len(chunk)
        page: dict[str, Any] = {
            "totalSize": len(cursor.ids),
            "done": end >= len(cursor.ids),
            "records": records,
        }
        if not page["done"]:
            page["nextRecordsUrl"] = f"{API}/query/{token}-{end}"
        else:
            del self.cursors[token]
        return page

    # --- describe and single records ---------------------------------------------------------------

    def describe(self, sobject: str) -> tuple[int, Any]:
        if sobject not in self.org.schemas:
            return error(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        return 200, {
            "name": sobject,
            "label": sobject,
            "keyPrefix": PREFIXES[sobject],
            "createable": True,
            "updateable": True,
            "queryable": True,
            "fields": [d.describe() for d in self.org.schemas[sobject].values()],
        }

    def get_record(self, sobject: str, record_id: str) -> tuple[int, Any]:
        record = self.org.records.get(sobject, {}).get(record_id)
        if record is None:
            return error(404, "NOT_FOUND", "The requested resource does not exist")
        return 200, self.serialize(sobject, record, list(self.org.schemas[sobject]))

    def create_one(self, sobject: str, body: Any) -> tuple[int, Any]:
        if sobject not in self.org.schemas or not isinstance(body, dict):
            return error(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        problem = self._check_fields(sobject, [body])
        if problem is not None:
            return problem
        result = self._save(sobject, None, body)
        if not result["success"]:
            err = result["errors"][0]
            return error(400, err["statusCode"], err["message"], err["fields"])
        return 201, result

    def update_one(self, sobject: str, record_id: str, body: Any) -> tuple[int, Any]:
        if record_id not in self.org.records.get(sobject, {}):
            return error(404, "NOT_FOUND", "The requested resource does not exist")
        problem = self._check_fields(sobject, [body])
        if problem is not None:
            return problem
        result = self._save(sobject, record_id, body)
        if not result["success"]:
            err = result["errors"][0]
            return error(400, err["statusCode"], err["message"], err["fields"])
        return 204, None

    def delete_one(self, sobject: str, record_id: str) -> tuple[int, Any]:
        if self.org.records.get(sobject, {}).pop(record_id, None) is None:
            return error(404, "NOT_FOUND", "The requested resource does not exist")
        return 204, None

    # --- sObject Collections -----------------------------------------------------------------------

    def collections(self, method: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return error(400, "JSON_PARSER_ERROR", "expected an object with a records array")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            return error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        if body.get("allOrNone"):
            return error(400, "INVALID_FIELD", "allOrNone=true is not emulated")
        by_type: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            sobject = (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
            if not sobject:
                return error(400, "INVALID_TYPE", "Must send a concrete entity type.")
            if sobject not in self.org.schemas:
                return error(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            if method == "POST" and (record.get("id") or record.get("Id")):
                return error(400, "INVALID_FIELD", "Can't create records with an id set")
            by_type.setdefault(sobject, []).append(record)
        for sobject, group in by_type.items():
            problem = self._check_fields(sobject, group)
            if problem is not None:
                return problem
        results: list[dict[str, Any]] = []
        for record in records:
            sobject = record["attributes"]["type"]
            if method == "POST":
                results.append(self._save(sobject, None, record))
                continue
            record_id = record.get("id") or record.get("Id")
            if not record_id:
                results.append(save_error("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"]))
            elif record_id not in self.org.records[sobject]:
                results.append(save_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"))
            else:
                results.append(self._save(sobject, record_id, record))
        return 200, results

    def _check_fields(self, sobject: str, records: list[dict[str, Any]]) -> tuple[int, Any] | None:
        """Whole-request errors, as Salesforce's JSON reader raises them: unknown field, wrong type."""
        for record in records:
            for name, value in record.items():
                if name in ("attributes", "id", "Id"):
                    continue
                d = self.org.field_def(sobject, name)
                if d is None:
                    return error(
                        400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                    )
                try:
                    parse_value(d, value)
                except ValueError as exc:
                    return error(400, "JSON_PARSER_ERROR", str(exc))
                except (OverflowError, LookupError):
                    pass  # per-record errors, reported by _save
        return None

    def _save(self, sobject: str, record_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in body.items():
            if name in ("attributes", "id", "Id"):
                continue
            d = self.org.field_def(sobject, name)
            assert d is not None
            if not d.updateable:
                return save_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {d.name}.", [d.name]
                )
            try:
                value = parse_value(d, raw)
            except OverflowError as exc:
                return save_error("STRING_TOO_LONG", str(exc), [d.name])
            except LookupError as exc:
                return save_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"{d.name}: {exc}", [d.name])
            if d.reference_to and value is not None:
                target = self.org.records[d.reference_to].get(value)
                if target is None or (d.reference_to == "User" and not target.get("IsActive")):
                    return save_error(
                        "INVALID_CROSS_REFERENCE_KEY" if target is None else "INACTIVE_OWNER_OR_USER",
                        f"{d.name}: id value of incorrect type or not found: {value}",
                        [d.name],
                    )
            values[d.name] = value
        key_target = record_id or "new"
        if self.locked.get(key_target, 0) > 0:
            self.locked[key_target] -= 1
            return save_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
        merged = dict(self.org.records[sobject].get(record_id or "", {}))
        merged.update(values)
        missing = [
            d.name
            for d in self.org.schemas[sobject].values()
            if d.required and merged.get(d.name) in (None, "")
        ]
        if missing:
            return save_error("REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", missing)
        for d in self.org.schemas[sobject].values():
            value = values.get(d.name)
            if d.unique and value is not None:
                clash = next(
                    (r["Id"] for r in self.org.find(sobject, d.name, value) if r["Id"] != record_id), None
                )
                if clash is not None:
                    return save_error(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {d.name} duplicates value on record with id: {clash}",
                        [d.name],
                    )
        for rule in self.org.validation_rules:
            if rule.sobject == sobject and rule.error_when(merged):
                fields = [rule.field] if rule.field else []
                return save_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, fields)
        if record_id is None:
            new_id = self.org.insert(sobject, values)
            return {"id": new_id, "success": True, "errors": []}
        self.org.update(sobject, record_id, values)
        return {"id": record_id, "success": True, "errors": []}
