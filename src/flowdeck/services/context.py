"""Wiring: the store and the services of one flowdeck server, built from its settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowdeck.config import Settings
from flowdeck.domain.runs import Event
from flowdeck.errors import ConfigError
from flowdeck.events.bus import EventBus, LocalEventBus
from flowdeck.events.order import EventOrder
from flowdeck.runtime.ports import PortHub
from flowdeck.services.accounts import Accounts
from flowdeck.services.cwl_workflows import CwlWorkflows
from flowdeck.services.events import Events
from flowdeck.services.graphs import Graphs
from flowdeck.services.metrics import Metrics
from flowdeck.services.ports import Ports
from flowdeck.services.quotas import Quotas
from flowdeck.services.retention import Retention, RetentionTask
from flowdeck.services.runs import Runs
from flowdeck.services.secrets import Secrets
from flowdeck.services.webhooks import Webhooks
from flowdeck.services.workflows import Workflows
from flowdeck.store import Store, open_store

if TYPE_CHECKING:
    from flowdeck.executors.base import Executor
    from flowdeck.runtime.scheduler import Scheduler
    from flowdeck.store.pg_listen import Listener
    from flowdeck.store.sql import SqlStore

log = logging.getLogger("flowdeck")
SWEEP_AFTER_S = 600.0


@dataclass
class Context:
    settings: Settings
    store: Store
    accounts: Accounts
    workflows: Workflows
    runs: Runs
    bus: EventBus
    events: Events
    webhooks: Webhooks
    ports: Ports
    graphs: Graphs
    cwl: CwlWorkflows
    metrics: Metrics
    secrets: Secrets
    retention: Retention
    _retention_task: RetentionTask | None = field(default=None, init=False, repr=False)
    quotas: Quotas
    _order: EventOrder | None = field(default=None, init=False, repr=False)
    _listener: Listener | None = field(default=None, init=False, repr=False)

    def ordered_events(self) -> EventOrder:
        """Once other processes commit events too (the scheduler process, other servers of
        the database): every commit's events are handed on through this, in id order."""
        if self._order is None:
            with self.store.read() as tx:
                last = tx.last_event_id()
            self._order = EventOrder(self.store.deliver, self._fetch_events, last)
            self.store.order = self._order.offer
        return self._order

    def _fetch_events(self, first: int, end: int) -> list[Event]:
        with self.store.read() as tx:
            return [e for e in tx.list_events(after_id=first - 1, limit=end - first) if e.id < end]

    def claim_server(self) -> None:
        """This process serves the database: on SQLite, the only server (else ConfigError)."""
        from flowdeck.store.sql import SqlStore

        if isinstance(self.store, SqlStore):
            self.store.claim_sole_server()

    def listen_to_other_servers(self) -> None:
        """PostgreSQL: follow the events and changes other servers of the database commit
        (store/pg_listen): event streams see every event, caches forget what changed."""
        from flowdeck.store.sql import SqlStore

        if self._listener is not None or not isinstance(self.store, SqlStore):
            return
        if self.store.dialect != "postgresql":
            return
        from flowdeck.store.pg_listen import Listener

        order = self.ordered_events()
        self._listener = Listener(
            self.settings.resolved_database_url,
            on_events=order.reach,
            on_change=self._forget,
            on_connected=self._caught_up,
            on_port=self.ports.hub.told_elsewhere,
        )
        self._listener.start()

    def _forget(self, change: str) -> None:
        if change == "accounts":
            self.accounts.forget_tokens()
        elif change == "workflows":
            self.workflows.forget_resolved()
        elif change == "webhooks":
            self.webhooks.changed_here()

    def _caught_up(self) -> None:
        """(Re)connected: what was missed meanwhile is unknown, so read every event since
        the last one handed on, and forget every cache."""
        with self.store.read() as tx:
            last = tx.last_event_id()
        self.ordered_events().reach(last)
        for change in ("accounts", "workflows", "webhooks"):
            self._forget(change)

    def start_scheduler(self) -> None:
        """Start running queued runs (the server does; CLI commands do not)."""
        if self.runs.scheduler is not None:
            return
        from flowdeck import durable

        # what interrupted uploads and unpacking left (younger entries may be in use by
        # another instance on this data directory)
        durable.sweep(self.settings.data_dir / "tmp" / "uploads", SWEEP_AFTER_S)
        durable.sweep(self.settings.data_dir / "tmp", SWEEP_AFTER_S, keep=frozenset({"uploads"}))
        if self.settings.scheduler_process:
            from flowdeck.services.scheduler_process import SchedulerProcess

            handle = SchedulerProcess(self)
            self.metrics.watch_scheduler(handle)
            self.runs.scheduler = handle
        else:
            self.metrics.watch_scheduler(self.start_local_scheduler())
        from flowdeck.services.graph_driver import GraphDriver

        GraphDriver(self.graphs).start()
        self.start_webhooks()
        self.listen_to_other_servers()
        if self.retention.enabled and self._retention_task is None:
            self._retention_task = RetentionTask(self.retention)
            self._retention_task.start()

    def start_local_scheduler(self) -> Scheduler:
        """The scheduler in this process, started."""
        from flowdeck.executors.inprocess import InProcessExecutor
        from flowdeck.executors.supervised import SupervisedExecutor
        from flowdeck.runtime.ports import PortRuntime
        from flowdeck.runtime.scheduler import Scheduler
        from flowdeck.runtime.subflows import SubflowExecutor
        from flowdeck.services.subflows import child_creator

        subflow = SubflowExecutor(self.store, child_creator(self.runs), self.settings.stop_grace_s)
        warn_if_unsandboxed(self.settings)
        executors: dict[str, Executor] = {
            "local": SupervisedExecutor(
                self.settings.data_dir,
                self.settings.supervisor_idle_s,
                self.settings.step_cgroups,
            ),
            "inprocess": InProcessExecutor(workers=self.settings.inprocess_workers),
            "subflow": subflow,
        }
        if self.settings.slurm:
            executors["slurm"] = slurm_executor(self.settings)
        if self.settings.dask:
            executors["dask"] = dask_executor(self.settings)
        scheduler = Scheduler(
            self.store,
            self.settings,
            executors,
            lambda wid: self.workflows.root / wid,
            ports=PortRuntime(self.store, self.ports.hub),
        )
        subflow.scheduler = scheduler
        scheduler.start()
        self.runs.scheduler = scheduler
        return scheduler

    def start_webhooks(self) -> None:
        """Start sending webhook deliveries (with the scheduler)."""
        if self.webhooks.dispatcher is not None:
            return
        from flowdeck.runtime.webhooks import Dispatcher

        dispatcher = Dispatcher(self.store, self.settings, on_disabled=self.webhooks.changed)
        self.metrics.watch_dispatcher(dispatcher)
        dispatcher.start()
        self.webhooks.dispatcher = dispatcher

    def close(self) -> None:
        if self._retention_task is not None:
            self._retention_task.close()
            self._retention_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.bus.close()
        if self.graphs.driver is not None:
            self.graphs.driver.close()
        if self.runs.scheduler is not None:
            self.runs.scheduler.close()
            self.runs.scheduler = None
        self.runs.close()
        if self.webhooks.dispatcher is not None:
            self.webhooks.dispatcher.close()
            self.webhooks.dispatcher = None
        if self._order is not None:
            self._order.close()
            self._order = None
            self.store.order = None
        self.store.close()


def prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    from flowdeck.security.vault import create_key_file

    create_key_file(settings.resolved_secret_key_file)  # at the first start


def build_context(settings: Settings, *, migrate: bool | None = None) -> Context:
    """Open the store (upgrading its schema when asked) and build the services."""
    prepare_data_dir(settings)
    store = open_store(
        settings.resolved_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        timeout_s=settings.db_timeout_s,
    )
    from flowdeck.store.sql import SqlStore

    if isinstance(store, SqlStore):
        if settings.auto_migrate if migrate is None else migrate:
            from flowdeck.store.migrate import upgrade

            upgrade(store.engine)
        seal_webhook_secrets(settings, store)
    ctx = make_context(settings, store)
    if isinstance(store, SqlStore):
        measure_archives(ctx, store)
    return ctx


def measure_archives(ctx: Context, store: SqlStore) -> None:
    """Archives stored before their size was kept count in their owners' stored bytes once
    measured (schema 0018 on): measured now, where the schema is current."""
    from sqlalchemy.exc import SQLAlchemyError

    from flowdeck.errors import StoreUnavailable
    from flowdeck.store.migrate import current_revision, head_revision

    try:
        with store.engine.connect() as conn:
            if current_revision(conn) != head_revision():
                return  # not upgraded (yet)
        measured = ctx.workflows.measure_archives()
    except (StoreUnavailable, SQLAlchemyError) as exc:  # e.g. started during an outage
        log.warning("workflow archives not measured yet (at the next start): %s", exc)
        return
    if measured:
        log.info("measured the archives of %d workflow version(s)", measured)


def seal_webhook_secrets(settings: Settings, store: SqlStore) -> None:
    """Webhook signing secrets are kept encrypted with the key of secret_key_file; those
    an earlier version stored in clear are sealed now (deliveries go on: they are signed
    with the same secrets)."""
    from sqlalchemy.exc import SQLAlchemyError

    from flowdeck.errors import StoreUnavailable
    from flowdeck.security.vault import Vault
    from flowdeck.store.migrate import current_revision, head_revision

    store.sealer = Vault.load(settings.resolved_secret_key_file)
    try:
        with store.engine.connect() as conn:
            if current_revision(conn) != head_revision():
                return  # not upgraded (yet): the server answers 503 until it is
        with store.write() as tx:
            sealed = tx.seal_subscriptions()
    except (StoreUnavailable, SQLAlchemyError) as exc:  # e.g. started during an outage
        log.warning("webhook secrets kept in clear not sealed yet (at the next start): %s", exc)
        return
    if sealed:
        log.info("encrypted the signing secrets of %d webhook(s) kept in clear", sealed)
        if store.dialect == "sqlite":  # no copy in clear left in free pages or the WAL
            raw = store.engine.raw_connection()  # no BEGIN: the driver's own connection
            try:
                raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
            finally:
                raw.close()


def make_context(settings: Settings, store: Store) -> Context:
    """The services around an open store."""
    accounts = Accounts(store, settings)
    workflows = Workflows(store, settings)
    accounts.on_workflows_deleted = workflows.remove_files
    runs = Runs(store, settings, workflows)
    bus = LocalEventBus()
    store.add_commit_listener(bus.publish)
    webhooks = Webhooks(store, settings)
    webhooks.install()
    runs.webhooks = webhooks
    hub = PortHub()
    store.add_commit_listener(hub.on_commit)
    if getattr(store, "dialect", None) == "postgresql":  # other servers may read the ports
        from flowdeck.store.pg_listen import port_message

        hub.announce = lambda msg: store.announce(port_message(msg))
    events = Events(store, settings, runs, bus)
    graphs = Graphs(store, settings, runs, workflows)
    events.loaders["graph"] = graphs.load
    metrics = Metrics(store)
    metrics.watch_bus(bus)
    store.add_commit_listener(metrics.on_commit)
    return Context(
        settings=settings,
        store=store,
        accounts=accounts,
        workflows=workflows,
        runs=runs,
        bus=bus,
        events=events,
        webhooks=webhooks,
        ports=Ports(store, settings, runs, hub),
        graphs=graphs,
        cwl=CwlWorkflows(workflows),
        metrics=metrics,
        secrets=Secrets(store, settings),
        retention=Retention(store, settings),
        quotas=runs.quotas,
    )


def slurm_executor(settings: Settings) -> Executor:
    """The slurm executor, once a probe job showed the data directory is shared."""
    from flowdeck.executors.slurm import SlurmConfig, SlurmExecutor
    from flowdeck.executors.slurm_jobs import JobOptions

    options = JobOptions(
        job_name=settings.slurm_job_name,
        partition=settings.slurm_partition,
        account=settings.slurm_account,
        qos=settings.slurm_qos,
    )
    config = SlurmConfig(
        options, settings.slurm_bin_dir, settings.slurm_poll_s, settings.stop_grace_s
    )
    executor = SlurmExecutor(config)
    problem = executor.check_shared(settings.data_dir)
    if problem is not None:
        raise ConfigError(f"invalid setting slurm (FLOWDECK_SLURM): {problem}")
    if settings.sandbox != "off":
        logging.getLogger("flowdeck").info(
            "slurm = true: steps on Slurm run in the step sandbox where their node has "
            "bubblewrap; on a node without it, without (said in the job's .slurm.log; "
            "docs/slurm.md)"
        )
    if not executor.operator_rights():
        logging.getLogger("flowdeck").info(
            "slurm: runs on Slurm can pause with mode drain only (no operator rights)"
        )
    return executor


def dask_executor(settings: Settings) -> Executor:
    """The dask executor, connected, once a worker showed it reads the data directory."""
    from flowdeck.executors.dask import DaskConfig, DaskExecutor

    assert settings.dask_scheduler is not None  # (the settings' own check)
    config = DaskConfig(
        scheduler=settings.dask_scheduler,
        tls_ca_file=settings.dask_tls_ca_file,
        tls_cert=settings.dask_tls_cert,
        tls_key=settings.dask_tls_key,
        worker_user=settings.dask_worker_user,
        poll_s=settings.dask_poll_s,
        grace_s=settings.stop_grace_s,
    )
    executor = DaskExecutor(config)
    problem = executor.check(settings.data_dir)
    if problem is not None:
        executor.close()
        raise ConfigError(f"invalid setting dask (FLOWDECK_DASK): {problem}")
    if settings.sandbox != "off":
        logging.getLogger("flowdeck").info(
            "dask = true: steps on Dask run as their worker's user, in the step sandbox "
            "where the worker has bubblewrap (docs/dask.md)"
        )
    return executor


def warn_if_unsandboxed(settings: Settings) -> None:
    """sandbox = "off" is said at every start (docs/operations.md, threat model)."""
    if settings.sandbox == "off":
        logging.getLogger("flowdeck").warning(
            'sandbox = "off": steps run unsandboxed, with the server\'s rights; anyone who '
            "may start a run can read the database and act as an admin"
        )
