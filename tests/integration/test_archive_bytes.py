"""Archives pushed before their size was kept (schema 0018) are measured on disk when a
server starts, so that they count in their owners' stored bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flowdeck.services.context import build_context
from flowdeck.store import open_store
from flowdeck.store.migrate import upgrade
from flowdeck.store.sql import SqlStore
from tests.helpers import make_settings
from tests.integration.test_store_contract import user, workflow


def test_archives_without_a_size_are_measured_once_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    store = open_store(settings.resolved_database_url)
    assert isinstance(store, SqlStore)
    upgrade(store.engine)
    old = dataclasses.replace(workflow("wf_old", "alice"), has_archive=True)
    try:
        with store.write() as tx:
            tx.add_user(user("alice"))
            tx.add_workflow(old)
            tx.add_workflow(dataclasses.replace(workflow("wf_plain", "alice", version="2")))
    finally:
        store.close()
    folder = settings.data_dir / "workflows" / old.id
    (folder / "scripts").mkdir(parents=True)
    (folder / "flowdeck.yaml").write_text("x" * 100)
    (folder / "scripts" / "run.sh").write_text("y" * 23)
    ctx = build_context(settings)  # as a server starts
    try:
        with ctx.store.read() as tx:
            assert tx.stored_bytes_by_owner() == {"u_alice": 123}
        assert ctx.workflows.measure_archives() == 0  # measured once
    finally:
        ctx.close()
