"""Wiring: the store and the services of one flowdeck server, built from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from flowdeck.config import Settings
from flowdeck.events.bus import EventBus, LocalEventBus
from flowdeck.services.accounts import Accounts
from flowdeck.services.cwl_workflows import CwlWorkflows
from flowdeck.services.events import Events
from flowdeck.services.runs import Runs
from flowdeck.services.workflows import Workflows
from flowdeck.store import Store, open_store


@dataclass
class Context:
    settings: Settings
    store: Store
    accounts: Accounts
    workflows: Workflows
    runs: Runs
    bus: EventBus
    events: Events
    cwl: CwlWorkflows

    def start_scheduler(self) -> None:
        """Start running queued runs (the server does; CLI commands do not)."""
        if self.runs.scheduler is not None:
            return
        from flowdeck.executors.inprocess import InProcessExecutor
        from flowdeck.executors.local import LocalExecutor
        from flowdeck.runtime.scheduler import Scheduler

        executors = {
            "local": LocalExecutor(),
            "inprocess": InProcessExecutor(workers=self.settings.inprocess_workers),
        }
        scheduler = Scheduler(
            self.store, self.settings, executors, lambda wid: self.workflows.root / wid
        )
        scheduler.start()
        self.runs.scheduler = scheduler

    def close(self) -> None:
        self.bus.close()
        if self.runs.scheduler is not None:
            self.runs.scheduler.close()
            self.runs.scheduler = None
        self.store.close()


def prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def build_context(settings: Settings, *, migrate: bool | None = None) -> Context:
    """Open the store (upgrading its schema when asked) and build the services."""
    prepare_data_dir(settings)
    store = open_store(
        settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
    )
    if settings.auto_migrate if migrate is None else migrate:
        from flowdeck.store.sql import SqlStore

        if isinstance(store, SqlStore):
            from flowdeck.store.migrate import upgrade

            upgrade(store.engine)
    return make_context(settings, store)


def make_context(settings: Settings, store: Store) -> Context:
    """The services around an open store."""
    accounts = Accounts(store, settings)
    workflows = Workflows(store, settings)
    accounts.on_workflows_deleted = workflows.remove_files
    runs = Runs(store, settings, workflows)
    bus = LocalEventBus()
    store.add_commit_listener(bus.publish)
    return Context(
        settings=settings,
        store=store,
        accounts=accounts,
        workflows=workflows,
        runs=runs,
        bus=bus,
        events=Events(store, settings, runs, bus),
        cwl=CwlWorkflows(workflows),
    )
