"""Bulk API 2.0: query jobs (CSV results paged by ``Sforce-Locator``) and ingest jobs (CSV upload).

Jobs finish as soon as they are queried or closed: there is no artificial processing time, so the
client sees ``JobComplete`` on its first poll.
"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass, field
from typing import Any

from tests.emulators.salesforce import soql
from tests.emulators.salesforce.codec import to_csv
from tests.emulators.salesforce.org import Org
from tests.emulators.salesforce.rest import Rest, error

DEFAULT_MAX_RECORDS = 50_000


@dataclass
class Job:
    id: str
    kind: str  # query | ingest
    info: dict[str, Any]
    query: soql.Query | None = None
    ids: list[str] = field(default_factory=list)
    upload: str = ""
    successes: list[list[str]] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return out.getvalue()


@dataclass
class Bulk:
    org: Org
    rest: Rest
    jobs: dict[str, Job] = field(default_factory=dict)

    def _new_id(self) -> str:
        return "750Dx" + secrets.token_hex(5)

    def create_query(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or body.get("operation") not in ("query", "queryAll"):
            return error(400, "INVALIDJOB", "operation must be query or queryAll")
        text = str(body.get("query") or "")
        try:
            query, ids = self.rest.run_query(text)
        except soql.SoqlError as exc:
            return error(400, "INVALIDJOB", f"{exc.code}: {exc}")
        if query.count:
            return error(
                400, "INVALIDJOB", "FeatureNotEnabled : Aggregate queries are not supported by Bulk API"
            )
        job_id = self._new_id()
        info = {
            "id": job_id,
            "operation": body["operation"],
            "object": query.sobject,
            "state": "UploadComplete",
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": 59.0,
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        self.jobs[job_id] = Job(job_id, "query", info, query=query, ids=ids)
        return 200, info

    def job_info(self, kind: str, job_id: str) -> tuple[int, Any]:
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind:
            return error(404, "NOT_FOUND", f"Job not found: {job_id}")
        if kind == "query" and job.info["state"] == "UploadComplete":
            job.info.update(state="JobComplete", numberRecordsProcessed=len(job.ids), retries=0)
        if kind == "ingest" and job.info["state"] == "UploadComplete":
            job.info["state"] = "JobComplete"
        return 200, dict(job.info)

    def query_results(self, job_id: str, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "query" or job.query is None:
            status, body = error(404, "NOT_FOUND", f"Job not found: {job_id}")
            return status, body, {}
        if job.info["state"] != "JobComplete":
            status, body = error(400, "INVALIDJOB", "job is not complete")
            return status, body, {}
        size = int(params.get("maxRecords") or DEFAULT_MAX_RECORDS)
        offset = int(params.get("locator") or "0", 36) if params.get("locator") else 0
        chunk = job.ids[offset : offset + size]
        query = job.query
        table = self.org.records[query.sobject]
        rows = [list(query.fields)]
        for record_id in chunk:
            record = table[record_id]
            row = []
            for path in query.fields:
                value = self.org.resolve(query.sobject, record, path)
                d = self._leaf(query.sobject, path)
                row.append(to_csv(d, value))
            rows.append(row)
        end = offset + len(chunk)
        locator = _base36(end) if end < len(job.ids) else "null"
        headers = {"Sforce-NumberOfRecords": str(len(chunk)), "Sforce-Locator": locator}
        return 200, _csv(rows), headers

    def _leaf(self, sobject: str, path: str) -> Any:
        head, _, rest = path.partition(".")
        if not rest:
            return self.org.field_def(sobject, head)
        rel = self.org.relationship(sobject, head)
        assert rel is not None
        assert rel.reference_to is not None
        return self._leaf(rel.reference_to, rest)

    def create_ingest(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or body.get("operation") not in ("insert", "update"):
            return error(400, "INVALIDJOB", "operation must be insert or update in this emulator")
        sobject = body.get("object")
        if sobject not in self.org.schemas:
            return error(400, "INVALIDJOB", f"InvalidJob : Invalid object: {sobject}")
        job_id = self._new_id()
        info = {
            "id": job_id,
            "operation": body["operation"],
            "object": sobject,
            "state": "Open",
            "contentType": "CSV",
            "apiVersion": 59.0,
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        self.jobs[job_id] = Job(job_id, "ingest", info)
        return 200, info

    def upload(self, job_id: str, data: bytes) -> tuple[int, Any]:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "ingest":
            return error(404, "NOT_FOUND", f"Job not found: {job_id}")
        if job.info["state"] != "Open":
            return error(409, "INVALIDJOBSTATE", "Job is not open for uploads")
        job.upload += data.decode("utf-8")
        return 201, None

    def set_state(self, job_id: str, body: Any) -> tuple[int, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            return error(404, "NOT_FOUND", f"Job not found: {job_id}")
        state = (body or {}).get("state")
        if state == "Aborted":
            job.info["state"] = "Aborted"
        elif state == "UploadComplete" and job.kind == "ingest" and job.info["state"] == "Open":
            self._process(job)
        else:
            return error(400, "INVALIDJOBSTATE", f"cannot change state to {state}")
        return 200, dict(job.info)

    def _process(self, job: Job) -> None:
        sobject = job.info["object"]
        reader = list(csv.reader(io.StringIO(job.upload)))
        if not reader:
            job.info.update(state="Failed", errorMessage="InvalidBatch : no data uploaded")
            return
        header, rows = reader[0], reader[1:]
        for name in header:
            if name != "Id" and self.org.field_def(sobject, name) is None:
                job.info.update(state="Failed", errorMessage=f"InvalidBatch : Field name not found : {name}")
                return
        job.columns = header
        for row in rows:
            values: dict[str, Any] = {}
            for name, text in zip(header, row, strict=False):
                if text == "":
                    continue  # Bulk API leaves empty cells unchanged; #N/A clears a field
                values[name] = None if text == "#N/A" else text
            record_id = values.pop("Id", None)
            bad = self.rest._check_fields(sobject, [values])
            if bad is not None:
                result = {
                    "success": False,
                    "errors": [
                        {"statusCode": bad[1][0]["errorCode"], "message": bad[1][0]["message"], "fields": []}
                    ],
                }
            elif job.info["operation"] == "update" and record_id not in self.org.records[sobject]:
                result = {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "INVALID_CROSS_REFERENCE_KEY",
                            "message": "invalid cross reference id",
                            "fields": [],
                        }
                    ],
                }
            else:
                result = self.rest._save(
                    sobject, record_id if job.info["operation"] == "update" else None, values
                )
            if result["success"]:
                job.successes.append([result["id"], "false", *row])
            else:
                err = result["errors"][0]
                job.failures.append([record_id or "", f"{err['statusCode']}:{err['message']}:--", *row])
        job.info.update(
            state="UploadComplete",
            numberRecordsProcessed=len(rows),
            numberRecordsFailed=len(job.failures),
        )

    def ingest_results(self, job_id: str, which: str) -> tuple[int, Any]:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "ingest":
            return error(404, "NOT_FOUND", f"Job not found: {job_id}")
        if which == "failedResults":
            return 200, _csv([["sf__Id", "sf__Error", *job.columns], *job.failures])
        if which == "successfulResults":
            return 200, _csv([["sf__Id", "sf__Created", *job.columns], *job.successes])
        return 200, _csv([job.columns])


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
