"""index playbook runs by response

Every recorded answer looks up the playbook runs of its response (to supersede a replaced answer's
run and to skip a redelivery); without an index that is a scan of every run ever started.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_playbook_runs_response_id"), "playbook_runs", ["response_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_playbook_runs_response_id"), table_name="playbook_runs")
