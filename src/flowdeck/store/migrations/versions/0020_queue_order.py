"""An index that reads one user's queued runs in admission order (admin priority, their
priority, age, id), so that the scheduler holds a bounded window of each user's queued
runs and refills it from the store (``Tx.next_queued_runs``).  Queued runs always have
``queued_at`` (older rows without it get their creation time): the order needs no
expression.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE runs SET queued_at = created_at WHERE state = 'queued' AND queued_at IS NULL"
    )
    op.create_index(
        "ix_runs_queue_order",
        "runs",
        [
            "owner_id",
            "state",
            sa.text("admin_priority DESC"),
            sa.text("priority DESC"),
            "queued_at",
            "id",
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_runs_queue_order", table_name="runs")
