"""Backup and restore on PostgreSQL (pg_dump, pg_restore): accounts, workflows and
encrypted secrets come back, readable with the key the archive carried."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdeck.domain.privilege import Actor
from flowdeck.errors import Conflict
from flowdeck.services.backup import backup, restore
from flowdeck.services.context import build_context
from tests.helpers import STRONG, fresh_pg_database, make_settings

SPEC = b'name: hello\nversion: "1"\nsteps:\n  t: {run: [echo, hi]}\n'


def test_a_postgresql_backup_restores_into_an_empty_database(tmp_path: Path) -> None:
    from flowdeck.domain.workflows import Visibility

    archive = tmp_path / "pg.tar.gz"
    with fresh_pg_database() as first, fresh_pg_database() as second:
        settings = make_settings(tmp_path / "a", database_url=first)
        ctx = build_context(settings)
        try:
            user = ctx.accounts.register("ada", STRONG)
            actor = Actor(user.id, user.username, user.role)
            ctx.workflows.push_spec(actor, SPEC, Visibility.PRIVATE)
            ctx.secrets.set(actor, "token", "the value")
            made = backup(settings, archive, include_key=True)
        finally:
            ctx.close()
        assert made.database == "postgresql" and made.key_included
        # not into the database it came from: it has tables
        with pytest.raises(Conflict, match="not empty"):
            restore(make_settings(tmp_path / "b", database_url=first), archive)
        target = make_settings(tmp_path / "c", database_url=second)
        report = restore(target, archive)
        assert report.key_restored
        ctx = build_context(target)
        try:
            assert ctx.accounts.login("ada", STRONG).token
            assert ctx.workflows.get(actor, "hello@1").name == "hello"
            with ctx.store.read() as tx:
                (stored,) = tx.list_secrets(None)
            assert ctx.secrets.vault.decrypt(stored.ciphertext) == "the value"
        finally:
            ctx.close()
