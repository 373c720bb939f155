"""Indexes for listing runs at a million rows: a user's runs by state, newest first, and a
user's runs newest first, both read in id order without a sort.

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0010"  # the head before this one (0006 -> 0011 -> 0007 -> 0010)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_owner_id_state_id", "runs", ["owner_id", "state", "id"])
    op.create_index("ix_runs_owner_id_id", "runs", ["owner_id", "id"])
    op.drop_index("ix_runs_owner_id_state", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_owner_id_state", "runs", ["owner_id", "state"])
    op.drop_index("ix_runs_owner_id_id", table_name="runs")
    op.drop_index("ix_runs_owner_id_state_id", table_name="runs")
