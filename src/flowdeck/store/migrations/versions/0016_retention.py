"""Retention: a run can be kept (exempt from purging), when retention removed its files
is noted, and ended runs are found oldest first by their end.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdeck.store.schema import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("keep", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("files_purged_at", UTCDateTime(), nullable=True))
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_finished_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("files_purged_at")
        batch.drop_column("keep")
