"""Tables of the state database (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

Times are stored as timezone-aware UTC. JSON columns hold small documents (snapshots, payloads).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nps_sync.store.types import UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _ts(name: str, nullable: bool = True) -> Column[object]:
    return Column(name, UtcDateTime(), nullable=nullable)


# --- the core -------------------------------------------------------------------------------------

waves = Table(
    "waves",
    metadata,
    Column("id", String(200), primary_key=True),  # "{program}@{fire_at ISO}"
    Column("program", String(100), nullable=False),
    Column("state", String(20), nullable=False),  # running | done | failed
    Column("counts", JSON, nullable=False, default=dict),
    _ts("started_at", False),
    _ts("finished_at"),
)

wave_decisions = Table(
    "wave_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("wave_id", String(200), nullable=False, index=True),
    Column("program", String(100), nullable=False),
    Column("contact_id", String(100), nullable=False, index=True),
    Column("decision", String(10), nullable=False),  # send | defer | skip
    Column("reason", String(40), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    _ts("created_at", False),
)

sends = Table(
    "sends",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("send_key", String(300), nullable=False, unique=True),
    Column("program", String(100), nullable=False),
    Column("wave_id", String(200), nullable=True),
    Column("contact_id", String(100), nullable=False),
    Column("account_id", String(100), nullable=True, index=True),
    Column("kind", String(20), nullable=False),  # survey | reminder | playbook | preview
    Column("channel", String(10), nullable=False),  # email | sms
    Column("address", String(320), nullable=False),
    Column("language", String(10), nullable=False),
    Column("time_zone", String(64), nullable=False),
    # queued -> sending -> sent | failed | unknown ; queued -> cancelled
    Column("state", String(12), nullable=False),
    _ts("not_before", False),
    Column("claimed_by", String(100), nullable=True),
    _ts("claimed_at"),
    _ts("sent_at"),
    Column("provider_id", String(200), nullable=True),
    Column("error", Text, nullable=True),
    Column("survey_send_id", Integer, nullable=True),  # reminders and playbook messages point here
    Column("template", String(100), nullable=True),  # playbook message template name
    Column(
        "content", JSON, nullable=True
    ),  # playbook messages: {"subject": …, "text": …} rendered by the playbook
    Column("snapshot", JSON, nullable=False),  # the contact as the CRM showed it at send time
    _ts("created_at", False),
    _ts("updated_at", False),
    Index("ix_sends_state_not_before", "state", "not_before"),
    Index("ix_sends_contact_program", "contact_id", "program"),
    Index("ix_sends_address", "channel", "address"),
)

responses = Table(
    "responses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("send_id", Integer, ForeignKey("sends.id"), nullable=False, unique=True),
    Column("program", String(100), nullable=False),
    Column("contact_id", String(100), nullable=False, index=True),
    Column("account_id", String(100), nullable=True, index=True),
    Column("score", Integer, nullable=False),
    Column("category", String(10), nullable=False),
    Column("previous_category", String(10), nullable=True),
    Column("comment", Text, nullable=True),
    Column("channel", String(10), nullable=False),
    _ts("responded_at", False),
    _ts("updated_at", False),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(10), nullable=False),  # email | sms
    Column("address", String(320), nullable=False),  # normalised e-mail or E.164
    Column("reason", String(40), nullable=False),  # unsubscribed | bounced | stop | spamreport | …
    Column("source", String(40), nullable=False),
    _ts("created_at", False),
    UniqueConstraint("channel", "address"),
)

inbound_events = Table(
    "inbound_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(40), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("send_key", String(300), nullable=True, index=True),
    Column("detail", Text, nullable=False, default=""),
    _ts("received_at", False),
    UniqueConstraint("provider", "event_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("dedupe_key", String(300), nullable=True, unique=True),
    Column("state", String(10), nullable=False),  # queued | running | done | failed
    _ts("run_at", False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("locked_by", String(100), nullable=True),
    _ts("locked_at"),
    _ts("created_at", False),
    _ts("updated_at", False),
    Index("ix_jobs_state_run_at", "state", "run_at"),
)

ticks = Table(
    "ticks",
    metadata,
    Column("schedule", String(200), primary_key=True),
    Column("fire_at", UtcDateTime(), primary_key=True),
    Column("claimed_by", String(100), nullable=False),
    _ts("claimed_at", False),
)

playbook_runs = Table(
    "playbook_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("playbook", String(100), nullable=False),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("trigger", String(30), nullable=False),
    Column("contact_id", String(100), nullable=False, index=True),
    Column("response_id", Integer, nullable=True, index=True),
    Column("send_id", Integer, nullable=True),
    Column("state", String(10), nullable=False),  # running | done | stopped | failed
    Column("step", Integer, nullable=False, default=0),
    Column("context", JSON, nullable=False),
    _ts("created_at", False),
    _ts("updated_at", False),
)

playbook_steps = Table(
    "playbook_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("playbook_runs.id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("action", String(40), nullable=False),
    Column("state", String(10), nullable=False),  # done | skipped | failed
    Column("result", JSON, nullable=False),
    _ts("executed_at", False),
    UniqueConstraint("run_id", "step"),
)

crm_tasks = Table(
    "crm_tasks",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("task_id", String(100), nullable=True),
    Column("run_id", Integer, nullable=True, index=True),
    Column("contact_id", String(100), nullable=False, index=True),
    Column("account_id", String(100), nullable=True, index=True),
    Column("owner_id", String(100), nullable=True),
    Column("playbook", String(100), nullable=False),
    Column("subject", Text, nullable=False),
    Column("due", Date, nullable=False),
    Column("completed", Boolean, nullable=False, default=False),
    Column("overdue_fired", Boolean, nullable=False, default=False),
    _ts("created_at", False),
    _ts("checked_at"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    _ts("updated_at", False),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    _ts("started_at", False),
    _ts("heartbeat_at", False),
)

# --- the sandbox CRM and the outbox (embedded defaults, kept in the same database) ---------------

sandbox_owners = Table(
    "sandbox_owners",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=True),
    Column("username", String(200), nullable=True),
    Column("manager_id", String(40), nullable=True),
)

sandbox_accounts = Table(
    "sandbox_accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_id", String(40), nullable=True),
    Column("fields", JSON, nullable=False),
)

sandbox_contacts = Table(
    "sandbox_contacts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=True, index=True),
    Column("owner_id", String(40), nullable=True),
    Column("first_name", String(100), nullable=False),
    Column("last_name", String(100), nullable=False),
    Column("email", String(320), nullable=True),
    Column("phone", String(40), nullable=True),
    Column("locale", String(20), nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("country", String(2), nullable=True),
    Column("email_opt_out", Boolean, nullable=False, default=False),
    Column("sms_opt_out", Boolean, nullable=False, default=False),
    Column("fields", JSON, nullable=False),
)

sandbox_tasks = Table(
    "sandbox_tasks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("contact_id", String(40), nullable=False, index=True),
    Column("account_id", String(40), nullable=True),
    Column("owner_id", String(40), nullable=True),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("due", Date, nullable=False),
    Column("priority", String(10), nullable=False),
    Column("type", String(10), nullable=False),
    Column("status", String(20), nullable=False),  # open | completed
    _ts("created_at", False),
    _ts("completed_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),  # out | in
    Column("send_key", String(300), nullable=True, unique=True),
    Column("channel", String(10), nullable=False),
    Column("to_addr", String(320), nullable=False),
    Column("from_addr", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("html", Text, nullable=True),
    Column("headers", JSON, nullable=False),
    Column("purpose", String(20), nullable=False),
    _ts("created_at", False),
)

# --- testimonials (migration 0002) ----------------------------------------------------------------

testimonials = Table(
    "testimonials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # One per survey answer: the signed link carries only this response id.
    Column("response_id", Integer, ForeignKey("responses.id"), nullable=False, unique=True),
    Column("program", String(100), nullable=False),
    Column("contact_id", String(100), nullable=False, index=True),
    Column("account_id", String(100), nullable=True),
    Column("quote", Text, nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("title", String(200), nullable=False, default=""),
    Column("company", String(200), nullable=False, default=""),
    Column("language", String(10), nullable=False),
    # The consent exactly as shown on the page when the person ticked it.
    Column("consent_text", Text, nullable=False),
    _ts("consented_at", False),
    _ts("withdrawn_at"),
    _ts("created_at", False),
    _ts("updated_at", False),
)

sandbox_notes = Table(
    "sandbox_notes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("contact_id", String(40), nullable=False, index=True),
    Column("title", String(255), nullable=False),
    Column("body", Text, nullable=False),
    _ts("created_at", False),
)
