"""Alembic environment: flowdeck always passes the connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from flowdeck.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - flowdeck never runs alembic without one
    raise RuntimeError("run migrations through 'flowdeck db upgrade'")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
context.run_migrations()
