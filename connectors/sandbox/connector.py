"""The sandbox CRM: the embedded default, kept in the state database, implementing ``nps_sync.abc.CRM``
exactly as the Salesforce and HubSpot connectors do, so the whole loop can be tried without an account."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from nps_sync.abc import ConnectorContext
from nps_sync.errors import PermanentError
from nps_sync.models import (
    AccountUpdate,
    Audience,
    BatchResult,
    Contact,
    ContactUpdate,
    Owner,
    RecordFailure,
    TaskResult,
    TaskSpec,
    TaskState,
)

from .client import SEED_DIR, SandboxDb, task_id_for
from .config import SandboxAudience, SandboxOptions
from .mapping import ACCOUNT_FIELDS, CONTACT_FIELDS, CONTACT_FLAGS, as_text, to_contact, to_owner

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.sandbox")


class SandboxCrm:
    name = "sandbox"

    def __init__(self, options: SandboxOptions, ctx: ConnectorContext) -> None:
        self.options = options
        self.db = SandboxDb(ctx.store)
        self.seed_dir = Path(options.seed) if options.seed else SEED_DIR
        if not self.seed_dir.is_absolute() and options.seed:
            self.seed_dir = (ctx.state_dir.parent / self.seed_dir).resolve()

    def ensure_seeded(self) -> int:
        """Load the seed when the sandbox is empty (or always, with ``reseed``). Returns rows loaded."""
        if self.options.reseed or self.db.is_empty():
            count = self.db.seed(self.seed_dir, wipe=True)
            log.info("sandbox.seeded", contacts=count, seed=str(self.seed_dir))
            return count
        return 0

    def iter_audience(self, audience: Audience) -> Iterator[Sequence[Contact]]:
        spec = SandboxAudience.model_validate(dict(audience.filter))
        page_size = min(audience.page_size, spec.page_size) if audience.page_size else spec.page_size
        for page in self.db.contact_pages(spec.where, page_size):
            yield [to_contact(row, account) for row, account in page]

    def get_contacts(self, ids: Sequence[str]) -> dict[str, Contact]:
        return {row["id"]: to_contact(row, account) for row, account in self.db.contacts(ids)}

    def get_owners(self, ids: Sequence[str]) -> dict[str, Owner]:
        return {row["id"]: to_owner(row) for row in self.db.owners(ids)}

    def find_owner(self, query: str) -> Owner | None:
        row = self.db.owner_by(query)
        return to_owner(row) if row else None

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        ok: list[str] = []
        failed: list[RecordFailure] = []
        with self.db.store.begin() as conn:
            for upd in updates:
                fields = {
                    CONTACT_FIELDS.get(k, k): as_text(v)
                    for k, v in upd.values.items()
                    if k not in CONTACT_FLAGS
                }
                flags = {CONTACT_FLAGS[k]: bool(v) for k, v in upd.values.items() if k in CONTACT_FLAGS}
                if self.db.write_contact(conn, upd.contact_id, fields, flags):
                    ok.append(upd.contact_id)
                else:
                    failed.append(RecordFailure(upd.contact_id, "no such contact in the sandbox"))
        return BatchResult(tuple(ok), tuple(failed))

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        ok: list[str] = []
        failed: list[RecordFailure] = []
        with self.db.store.begin() as conn:
            for upd in updates:
                fields = {
                    ACCOUNT_FIELDS["nps"]: "" if upd.nps is None else f"{upd.nps:.1f}",
                    ACCOUNT_FIELDS["responses"]: str(upd.responses),
                }
                if self.db.write_account(conn, upd.account_id, fields):
                    ok.append(upd.account_id)
                else:
                    failed.append(RecordFailure(upd.account_id, "no such account in the sandbox"))
        return BatchResult(tuple(ok), tuple(failed))

    def create_tasks(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        results: list[TaskResult] = []
        with self.db.store.begin() as conn:
            existing = self.db.task_keys(conn, [t.key for t in tasks])
            for spec in tasks:
                if spec.key in existing:
                    results.append(TaskResult(spec.key, existing[spec.key], existed=True))
                    continue
                task_id = task_id_for(spec.key)
                self.db.insert_task(
                    conn,
                    {
                        "id": task_id,
                        "key": spec.key,
                        "contact_id": spec.contact_id,
                        "account_id": spec.account_id,
                        "owner_id": spec.owner_id,
                        "subject": spec.subject,
                        "body": spec.body,
                        "due": spec.due,
                        "priority": spec.priority,
                        "type": spec.type,
                        "status": "open",
                    },
                )
                existing[spec.key] = task_id
                results.append(TaskResult(spec.key, task_id))
        return results

    def get_tasks(self, ids: Sequence[str]) -> dict[str, TaskState]:
        return {
            row["id"]: TaskState(
                id=row["id"],
                completed=row["status"] == "completed",
                due=row["due"],
                owner_id=row["owner_id"],
                status=row["status"],
            )
            for row in self.db.tasks(ids)
        }

    def add_note(self, key: str, contact_id: str, title: str, body: str) -> str:
        note_id, existed = self.db.add_note(key, contact_id, title[:255], body)
        if not note_id:
            raise PermanentError(
                f"cannot add note {key!r}: no contact {contact_id!r} in the sandbox", connector=self.name
            )
        if not existed:
            log.info("sandbox.note_added", key=key, contact_id=contact_id, note_id=note_id)
        return note_id

    def complete_task(self, task_id: str) -> bool:
        """Mark a task done, as an account manager would in the CRM (the sandbox's UI and CLI)."""
        return self.db.set_task_status(task_id, True)

    def check(self, *, online: bool) -> list[str]:
        problems = []
        for name in ("owners.csv", "accounts.csv", "contacts.csv"):
            if not (self.seed_dir / name).is_file():
                problems.append(f"sandbox seed file missing: {self.seed_dir / name}")
        return problems

    def routes(self) -> Sequence[BaseRoute]:
        from .pages import routes

        return routes(self)

    def close(self) -> None:
        """Nothing to release: the sandbox shares the daemon's database engine."""
