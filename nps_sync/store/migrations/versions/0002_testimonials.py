"""testimonials and sandbox notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "testimonials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("program", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=100), nullable=False),
        sa.Column("account_id", sa.String(length=100), nullable=True),
        sa.Column("quote", sa.Text(), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("language", sa.String(length=10), nullable=False),
        sa.Column("consent_text", sa.Text(), nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_id"], ["responses.id"], name=op.f("fk_testimonials_response_id_responses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_testimonials")),
        sa.UniqueConstraint("response_id", name=op.f("uq_testimonials_response_id")),
    )
    with op.batch_alter_table("testimonials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_testimonials_contact_id"), ["contact_id"], unique=False)

    op.create_table(
        "sandbox_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_notes")),
        sa.UniqueConstraint("key", name=op.f("uq_sandbox_notes_key")),
    )
    with op.batch_alter_table("sandbox_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sandbox_notes_contact_id"), ["contact_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sandbox_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_notes_contact_id"))
    op.drop_table("sandbox_notes")
    with op.batch_alter_table("testimonials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_testimonials_contact_id"))
    op.drop_table("testimonials")
