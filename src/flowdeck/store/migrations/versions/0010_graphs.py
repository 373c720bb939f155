"""Composition: run graphs and their nodes, links between runs, the step cache.

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdeck.store.schema import UTCDateTime

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "graphs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("state_since", UTCDateTime(), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_graphs_owner_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_graphs"),
    )
    op.create_index("ix_graphs_owner_id_state", "graphs", ["owner_id", "state"])
    op.create_index("ix_graphs_state", "graphs", ["state"])
    op.create_table(
        "graph_nodes",
        sa.Column("graph_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["graph_id"],
            ["graphs.id"],
            name="fk_graph_nodes_graph_id_graphs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("graph_id", "name", name="pk_graph_nodes"),
    )
    op.create_index("ix_graph_nodes_run_id", "graph_nodes", ["run_id"])
    op.create_table(
        "run_links",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(40), nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_links_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_links"),
    )
    op.create_index("ix_run_links_parent_id", "run_links", ["parent_id"])
    op.create_table(
        "step_cache",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_step_cache_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step", "idx", name="pk_step_cache"),
    )
    op.create_index("ix_step_cache_owner_id_key", "step_cache", ["owner_id", "key"])


def downgrade() -> None:
    op.drop_table("step_cache")
    op.drop_table("run_links")
    op.drop_table("graph_nodes")
    op.drop_table("graphs")
