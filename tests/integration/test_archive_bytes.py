"""Archives pushed before their size was kept (schema 0018) are measured on disk when a
server starts, so that they count in their owners' stored bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flowdeck.services.workflows import Workflows
from flowdeck.store import open_store
from flowdeck.store.migrate import upgrade
from flowdeck.store.sql import SqlStore
from tests.helpers import make_settings
from tests.integration.test_store_contract import user, workflow


def test_archives_without_a_size_are_measured_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert isinstance(store, SqlStore)
    upgrade(store.engine)
    try:
        old = dataclasses.replace(workflow("wf_old", "alice"), has_archive=True)
        plain = dataclasses.replace(workflow("wf_plain", "alice", version="2"))
        with store.write() as tx:
            tx.add_user(user("alice"))
            tx.add_workflow(old)
            tx.add_workflow(plain)
        workflows = Workflows(store, settings)
        folder = workflows.archive_dir(old)
        (folder / "scripts").mkdir(parents=True)
        (folder / "flowdeck.yaml").write_text("x" * 100)
        (folder / "scripts" / "run.sh").write_text("y" * 23)
        assert workflows.measure_archives() == 1
        with store.read() as tx:
            assert tx.stored_bytes_by_owner() == {"u_alice": 123}
        assert workflows.measure_archives() == 0  # once
    finally:
        store.close()
