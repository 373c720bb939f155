"""Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flowdeck.errors import StoreUnavailable
from flowdeck.store.migrate import head_revision, upgrade
from flowdeck.store.schema import metadata
from flowdeck.store.sql import SqlStore
from tests.helpers import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with fresh_pg_database() as url:
        yield url


def test_upgrade_from_empty_matches_the_declared_schema(empty_url: str) -> None:
    store = SqlStore(empty_url)
    with pytest.raises(StoreUnavailable, match="flowdeck db upgrade"):
        store.ping()  # readiness fails until the schema is there
    assert upgrade(store.engine) == (None, head_revision())
    assert upgrade(store.engine) == (head_revision(), head_revision())  # idempotent
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.ping()
    store.close()
    assert diff == []
