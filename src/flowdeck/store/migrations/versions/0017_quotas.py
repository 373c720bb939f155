"""Fair share and quotas: a run's admin priority (global, apart from its owner's own
priority), why a queued run waits (a user's quota), per-user quota overrides, and each
user's decayed usage for fair share.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdeck.store.schema import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("admin_priority", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("waiting", sa.String(200), nullable=True))
    op.create_table(
        "user_quotas",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=True),
        sa.Column("max_cpus", sa.Float(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_quotas_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_quotas"),
    )
    op.create_table(
        "user_usage",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("slot_seconds", sa.Float(), nullable=False),
        sa.Column("as_of", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_usage_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_usage"),
    )


def downgrade() -> None:
    op.drop_table("user_usage")
    op.drop_table("user_quotas")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("waiting")
        batch.drop_column("admin_priority")
