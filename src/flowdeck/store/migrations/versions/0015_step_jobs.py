"""Each step keeps its latest attempt's job id in its executor (a Slurm job id), and why
a submitted job waits in the queue: a restarted server re-adopts jobs by the stored id,
and a step whose job waits in Slurm shows as pending with Slurm's reason.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("job_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("waiting", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("waiting")
        batch.drop_column("job_id")
