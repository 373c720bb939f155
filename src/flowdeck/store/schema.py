"""Table definitions (SQLAlchemy Core).  Alembic migrations create exactly these; a test
compares the migrated database with this metadata."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's DATETIME stores (microseconds always shown), made
        by ``isoformat`` instead of a format string over seven fields: the scheduler's
        commits bind several datetimes per run."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store")
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(100), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    UniqueConstraint("user_id", "name", name="uq_tokens_user_id_name"),
    Index("ix_tokens_user_id", "user_id"),
)

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=True),
)

shares = Table(
    "shares",
    metadata,
    Column("object_kind", String(32), primary_key=True),
    Column("object_id", String(40), primary_key=True),
    Column(
        "user_id",
        String(40),
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Index("ix_shares_user_id", "user_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor_id", String(40), nullable=True),  # no FK: entries outlive their actor
    Column("actor_name", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=True),
    Column("address", String(64), nullable=True),
    Column("details", JSON, nullable=False),
    Index("ix_audit_log_action", "action"),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("has_archive", Boolean, nullable=False),
    Column("archive_bytes", BigInteger, nullable=False, server_default="0"),
    Column("visibility", String(16), nullable=False),
    Column("trusted", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("owner_id", "name", "version", name="uq_workflows_owner_id_name_version"),
    Index("ix_workflows_name", "name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # A finished run outlives its workflow's deletion: it keeps the reference it was made of.
    Column(
        "workflow_id",
        String(40),
        ForeignKey("workflows.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("workflow_ref", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("resources", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("priority", Integer, nullable=False),  # set by its owner: orders their own runs
    Column("admin_priority", Integer, nullable=False, server_default="0"),  # by an admin: global
    Column("created_at", UTCDateTime, nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    Column("queued_at", UTCDateTime, nullable=True),
    Column("waiting", String(200), nullable=True),  # why a queued run waits (a quota)
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("paused_at", UTCDateTime, nullable=True),
    Column("paused_s", Float, nullable=False, server_default="0"),
    Column("pause_mode", String(16), nullable=True),
    Column("error", JSON, nullable=True),
    Column("outputs", JSON, nullable=True),
    # ownership and fencing (see flowdeck.domain.leases)
    Column("owner_instance", String(40), nullable=True),
    Column("fence", Integer, nullable=False, server_default="0"),
    # exempt from retention (flowdeck run keep)
    Column("keep", Boolean, nullable=False, server_default=false()),
    Column("files_purged_at", UTCDateTime, nullable=True),  # its folder removed by retention
    # a user's runs by state, or all of them, newest first: read in order, never sorted
    Index("ix_runs_owner_id_state_id", "owner_id", "state", "id"),
    Index("ix_runs_owner_id_id", "owner_id", "id"),
    Index("ix_runs_workflow_id_state", "workflow_id", "state"),
    Index("ix_runs_state_id", "state", "id"),
    Index("ix_runs_finished_at", "finished_at"),  # retention: the oldest ended runs first
)
# a user's queued runs in admission order (the scheduler's window refills from it)
Index(
    "ix_runs_queue_order",
    runs.c.owner_id,
    runs.c.state,
    runs.c.admin_priority.desc(),
    runs.c.priority.desc(),
    runs.c.queued_at,
    runs.c.id,
)

# Per-user quota overrides (null: the setting's default applies).
user_quotas = Table(
    "user_quotas",
    metadata,
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("max_active_runs", Integer, nullable=True),
    Column("max_cpus", Float, nullable=True),
    Column("max_stored_bytes", BigInteger, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Each user's recent usage for fair share: CPU-slot-seconds, decayed to ``as_of``.
user_usage = Table(
    "user_usage",
    metadata,
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("slot_seconds", Float, nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index("ix_run_tags_tag", "tag"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),  # -1: no foreach; else the instance
    Column("state", String(16), nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("item", JSON, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("signal", Integer, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("max_rss_kb", Integer, nullable=True),
    Column("cpu_time_s", Float, nullable=True),
    Column("outputs", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("job_id", String(64), nullable=True),  # the latest attempt's Slurm job
    Column("waiting", String(200), nullable=True),  # why its submitted job waits
)

# Server instances and their heartbeat leases (see flowdeck.domain.leases).
instances = Table(
    "instances",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", BigInteger, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    # The number of the instance's last scheduler commit that went in (see mark_commit).
    Column("commit_seq", BigInteger, nullable=False, server_default="0"),
    # What its users hold on it (quotas across servers): {user id: [active runs, CPU slots]}
    Column("holdings", JSON, nullable=True),
)

# Every state change and what else happens to a subject (a run; a graph later), written in
# the transaction of the change it describes.  seq counts per subject, without gaps.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_kind", String(16), nullable=False),
    Column("subject_id", String(40), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=True),
    Column("data", JSON, nullable=False),
    # the subject's owner, so that a user's events are listed and streamed without a join
    Column("owner_id", String(40), nullable=True),
    UniqueConstraint("subject_kind", "subject_id", "seq", name="uq_events_subject_seq"),
    Index("ix_events_owner_id", "owner_id", "id"),
)

event_counters = Table(
    "event_counters",
    metadata,
    Column("subject_kind", String(16), primary_key=True),
    Column("subject_id", String(40), primary_key=True),
    Column("last_seq", Integer, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("media_type", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_products_run_id", "run_id"),
)

staged_files = Table(
    "staged_files",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("input", String(64), primary_key=True),
    Column("filename", String(255), primary_key=True),
    Column("path", String(4096), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("source", String(300), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Webhook subscriptions of a user: to one run (run_id) or to all the owner's runs.  The
# secrets sign deliveries, so they are kept as they are (not hashed).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", String(40), nullable=True),  # no FK: a run's deletion keeps its log
    Column("url", String(2048), nullable=False),
    Column("events", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("secret", String(200), nullable=False),
    Column("previous_secret", String(200), nullable=True),
    Column("previous_secret_until", UTCDateTime, nullable=True),
    Column("disabled_reason", String(300), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhooks_owner_id", "owner_id"),
)

# The outbox: one row per (event, subscription), written in the event's transaction.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "subscription_id",
        String(40),
        ForeignKey("webhooks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", Integer, nullable=False),  # no FK: deliveries outlive their run
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("give_up_after", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("deadline", UTCDateTime, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_webhook_deliveries_subscription_id", "subscription_id", "id"),
    Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        String(40),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("number", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("latency_ms", Float, nullable=False),
)

# Stream ports of a run: records pushed into its stream inputs, or written by a step to its
# stream outputs.  ``length`` is the next offset; records are numbered from 0 without gaps.
stream_ports = Table(
    "stream_ports",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("direction", String(8), primary_key=True),  # "input" or "output"
    Column("name", String(64), primary_key=True),
    Column("length", BigInteger, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
)

stream_records = Table(
    "stream_records",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("port", String(64), primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("attempt", Integer, nullable=True),  # output records: the attempt that wrote it
    Column("data", JSON, nullable=True),
    Column("at", UTCDateTime, nullable=False),
)

# Run graphs (the composition issue): the definition of a graph is one JSON document edited
# while it is a draft; its nodes' progress is kept per node once it is submitted.
graphs = Table(
    "graphs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    Column("submitted_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("error", JSON, nullable=True),
    Index("ix_graphs_owner_id_state", "owner_id", "state"),
    Index("ix_graphs_state", "state"),
)

graph_nodes = Table(
    "graph_nodes",
    metadata,
    Column("graph_id", String(40), ForeignKey("graphs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    Column("run_id", String(40), nullable=True),  # no FK: a node outlives its run's deletion
    Column("error", Text, nullable=True),
    Index("ix_graph_nodes_run_id", "run_id"),
)

# A child run of a `uses:` step, or a rerun, and the run it belongs to / reruns.
run_links = Table(
    "run_links",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("parent_id", String(40), nullable=False),
    Column("step", String(64), nullable=True),
    Column("idx", Integer, nullable=False),
    Index("ix_run_links_parent_id", "parent_id"),
)

# What each step instance produced under its cache key (reruns and memoization).
step_cache = Table(
    "step_cache",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("key", String(64), nullable=False),
    Column("owner_id", String(40), nullable=False),
    Column("workflow_id", String(40), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("outputs", JSON, nullable=False),
    Index("ix_step_cache_owner_id_key", "owner_id", "key"),
)

# A user's secrets, by name; the value is encrypted (security/vault.py), never kept in clear.
secrets = Table(
    "secrets",
    metadata,
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
