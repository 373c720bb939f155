"""Events carry their subject's owner (listed and streamed per user without a join).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(40), nullable=True))
    op.execute(
        "UPDATE events SET owner_id = (SELECT runs.owner_id FROM runs "
        "WHERE runs.id = events.subject_id) WHERE subject_kind = 'run'"
    )
    op.create_index("ix_events_owner_id", "events", ["owner_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_owner_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("owner_id")
