"""The store boundary: a transaction object with every operation the services need.

Services open a transaction with :meth:`Store.read` or :meth:`Store.write` and call
:class:`Tx` methods inside it; a change and the audit or event rows that describe it are
therefore committed together or not at all.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from flowdeck.domain.accounts import AccountStatus, AuditEntry, Role, Throttle, Token, User
from flowdeck.domain.composition import CacheEntry, RunLink
from flowdeck.domain.graphs import Graph, GraphNode, GraphState
from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.ports import Direction, StreamPort, StreamRecord
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import Event, Product, Run, RunState, StagedFile, StepRecord
from flowdeck.domain.secrets import Secret
from flowdeck.domain.webhooks import Attempt, Delivery, Subscription
from flowdeck.domain.workflows import Visibility, Workflow

log = logging.getLogger("flowdeck.store")

# An event to append: (subject kind, subject id, type, time, actor, data).
EventRow = tuple[str, str, str, datetime, str | None, dict[str, Any]]
# Called inside a transaction with the events it just added (e.g. to write an outbox).
EventHook = Callable[["Tx", list[Event]], None]
# Called after a commit with the events it made durable, in id order.
CommitListener = Callable[[list[Event]], None]


class Sealer(Protocol):
    """Encrypts what a store keeps of other systems' secrets (webhook signing secrets);
    :class:`flowdeck.security.vault.Vault` is one."""

    def encrypt(self, value: str) -> str: ...

    def decrypt(self, token: str) -> str: ...


#: a row refers to one that does not exist (deleted meanwhile, perhaps by another server)
REFERENCE_GONE = "an object this refers to was deleted meanwhile"


class Tx(ABC):
    """One transaction.  Methods raise :class:`~flowdeck.errors.AlreadyExists` on duplicates
    and return ``None`` (or ``False``) for what is absent; they never check privileges."""

    #: the events this transaction added, in id order (published after its commit)
    added: list[Event]
    event_hooks: list[EventHook]

    def _events_added(self, events: list[Event]) -> None:
        """Record events just written and run the store's event hooks on them, in this
        transaction."""
        self.added.extend(events)
        for hook in self.event_hooks:
            hook(self, events)

    def announce(self, change: str) -> None:  # noqa: B027 - a store with one server: no-op
        """Tell the other servers of this database, once this transaction commits, that
        ``change`` (one of ``store.pg_listen.CHANGES``) changed: their caches forget it."""

    # -- users ----------------------------------------------------------------------------
    @abstractmethod
    def add_user(self, user: User) -> None: ...

    @abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    def get_user_by_name(self, username: str) -> User | None:
        """Usernames are unique regardless of case."""

    @abstractmethod
    def list_users(self) -> list[User]: ...

    @abstractmethod
    def count_admins(self) -> int:
        """Active admins."""

    @abstractmethod
    def update_user(
        self,
        user_id: str,
        now: datetime,
        *,
        role: Role | None = None,
        status: AccountStatus | None = None,
        password_hash: str | None = None,
    ) -> User | None: ...

    @abstractmethod
    def delete_user(self, user_id: str) -> bool: ...

    # -- secrets (values encrypted by the services; the store sees ciphertext) -------------
    @abstractmethod
    def put_secret(self, secret: Secret) -> bool:
        """Create or replace ``(owner_id, name)``'s secret (a replacement keeps its
        ``created_at``); True when it was created."""

    @abstractmethod
    def get_secret(self, owner_id: str, name: str) -> Secret | None: ...

    @abstractmethod
    def get_secrets(self, owner_id: str, names: list[str]) -> list[Secret]:
        """The owner's secrets among ``names`` (those that exist)."""

    @abstractmethod
    def list_secrets(self, owner_id: str | None) -> list[Secret]:
        """An owner's secrets by name (None: everyone's, by owner then name)."""

    @abstractmethod
    def delete_secret(self, owner_id: str, name: str) -> bool: ...

    def seal_subscriptions(self, *, again: bool = False) -> int:
        """Encrypt the webhook signing secrets still kept in clear (``again``: every one,
        again, with the sealer's first key); how many subscriptions were written.  A store
        that keeps nothing on disk has nothing to seal."""
        return 0

    # -- tokens ---------------------------------------------------------------------------
    @abstractmethod
    def add_token(self, token: Token) -> None: ...

    @abstractmethod
    def find_token(self, token_hash: str) -> tuple[Token, User] | None:
        """The token with this hash and its user, valid or not."""

    @abstractmethod
    def list_tokens(self, user_id: str) -> list[Token]:
        """All tokens of a user, newest first, revoked ones included."""

    @abstractmethod
    def get_token(self, token_id: str) -> Token | None: ...

    @abstractmethod
    def revoke_token(self, token_id: str, now: datetime) -> bool:
        """False when there is no such token or it was already revoked."""

    @abstractmethod
    def revoke_user_tokens(
        self, user_id: str, now: datetime, *, keep_token_id: str | None = None
    ) -> int: ...

    @abstractmethod
    def touch_token(self, token_id: str, now: datetime) -> None: ...

    # -- login throttling -----------------------------------------------------------------
    @abstractmethod
    def get_throttles(self, keys: list[str]) -> list[Throttle]: ...

    @abstractmethod
    def update_throttle(
        self, key: str, change: Callable[[Throttle | None], Throttle | None]
    ) -> Throttle | None:
        """Read ``key``'s counter under a write lock, store ``change(counter)`` (None
        deletes it) and return it."""

    # -- sharing (the read-only part of the privilege rule) -------------------------------
    @abstractmethod
    def share(self, kind: str, object_id: str, user_id: str) -> None: ...

    @abstractmethod
    def unshare(self, kind: str, object_id: str, user_id: str) -> bool: ...

    @abstractmethod
    def shared_with(self, kind: str, object_id: str) -> set[str]: ...

    # -- audit log ------------------------------------------------------------------------
    @abstractmethod
    def add_audit(
        self,
        at: datetime,
        action: str,
        *,
        actor_id: str | None,
        actor_name: str | None,
        target: str | None = None,
        address: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int: ...

    @abstractmethod
    def list_audit(
        self, *, limit: int = 100, before_id: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """Newest first."""

    # -- workflows ------------------------------------------------------------------------
    @abstractmethod
    def add_workflow(self, workflow: Workflow) -> None: ...

    @abstractmethod
    def get_workflow(self, workflow_id: str) -> Workflow | None: ...

    @abstractmethod
    def find_workflow(self, owner_id: str, name: str, version: str | None) -> Workflow | None:
        """``version=None``: the newest version of that name."""

    @abstractmethod
    def list_workflows(
        self,
        viewer_id: str | None,
        *,
        name: str | None = None,
        owner_id: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[Workflow]:
        """Newest first; ``viewer_id=None`` (an admin) sees all, a user sees their own,
        the public ones and those shared with them."""

    @abstractmethod
    def update_workflow(
        self,
        workflow_id: str,
        *,
        visibility: Visibility | None = None,
        trusted: bool | None = None,
        archive_bytes: int | None = None,
    ) -> Workflow | None: ...

    @abstractmethod
    def delete_workflow(self, workflow_id: str) -> bool:
        """Also removes its shares."""

    # -- runs -----------------------------------------------------------------------------
    @abstractmethod
    def add_run(self, run: Run) -> None: ...

    def add_runs(self, runs: list[Run]) -> None:
        """:meth:`add_run` for many runs (one statement per table where the backend can)."""
        for run in runs:
            self.add_run(run)

    @abstractmethod
    def get_run(self, run_id: str) -> Run | None: ...

    @abstractmethod
    def update_run(self, run_id: str, **changes: Any) -> Run:
        """Change fields of a run (names of :class:`Run` fields); returns the new record."""

    def set_run(self, run_id: str, **changes: Any) -> None:
        """:meth:`update_run` without reading the run back."""
        self.update_run(run_id, **changes)

    def set_runs(self, changes: dict[str, dict[str, Any]]) -> None:
        """:meth:`set_run` for many runs (run id -> its changes), in as few statements as
        the backend allows."""
        for run_id, change in changes.items():
            self.set_run(run_id, **change)

    # -- retention (services/retention.py) ----------------------------------------------
    @abstractmethod
    def expired_runs(
        self, before: datetime, *, files_only: bool, limit: int | None = None
    ) -> list[Run]:
        """Ended runs, not kept, that ended before ``before``, oldest end first;
        ``files_only``: those whose folder retention has not removed yet."""

    @abstractmethod
    def mark_files_purged(self, run_ids: list[str], now: datetime) -> list[str]:
        """Claim the folders of those of these runs that are ended, not kept and not yet
        purged: note when, forget their products and staged files, and answer their ids
        (the caller removes those folders, after the commit: a run kept meanwhile is not
        claimed, so its folder stays)."""

    @abstractmethod
    def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete those of these runs that are ended and not kept, with their events (files
        are the caller's): their ids."""

    @abstractmethod
    def old_rows(self, kind: str, before: datetime, *, limit: int | None = None) -> list[Any]:
        """Keys of what retention lets go, oldest first: ``kind`` "events" (not of a stored
        run), "deliveries" (finished ones) or "audit"."""

    @abstractmethod
    def delete_rows(self, kind: str, keys: list[Any]) -> int:
        """Delete rows :meth:`old_rows` gave: how many were."""

    @abstractmethod
    def delete_run(self, run_id: str) -> bool: ...

    @abstractmethod
    def list_runs(
        self,
        viewer_id: str | None,
        *,
        states: list[RunState] | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        after_id: str | None = None,
        newest_first: bool = True,
        limit: int = 50,
        search: str | None = None,
        order_by: str = "created",
    ) -> list[Run]:
        """Runs ``viewer_id`` owns (None: all), filtered; ``after_id`` continues a page in
        the chosen order; ``workflow`` is a name or name@version; ``search`` is found,
        case-insensitively, in the run id, the workflow reference or a tag; ``order_by`` is
        ``created``, ``workflow`` or ``state`` (then the id), descending if
        ``newest_first``."""

    @abstractmethod
    def count_runs_by_state(self, viewer_id: str | None) -> dict[RunState, int]:
        """How many runs ``viewer_id`` owns (None: all) are in each state (absent: 0)."""

    # -- operators' summaries (metrics, admin status) -------------------------------------
    @abstractmethod
    def count_runs_in(self, states: list[RunState]) -> dict[RunState, int]:
        """How many runs (of every owner) are in each of ``states`` (absent: 0)."""

    @abstractmethod
    def count_running_steps(self) -> int:
        """Steps now running, of every run."""

    @abstractmethod
    def load_by_instance(self) -> dict[str | None, tuple[int, int]]:
        """Per owning server instance (None: no owner): its active runs and their running
        steps (instances with neither are absent)."""

    @abstractmethod
    def oldest_queued_at(self) -> datetime | None:
        """When the run queued longest ago was queued (None: the queue is empty)."""

    # -- quotas and usage -------------------------------------------------------------------
    @abstractmethod
    def get_quota(self, user_id: str) -> Quota | None:
        """A user's quota override (None: none, the defaults apply)."""

    @abstractmethod
    def set_quota(self, user_id: str, quota: Quota, now: datetime) -> None:
        """Set a user's quota override (an empty one removes it)."""

    @abstractmethod
    def list_quotas(self) -> dict[str, Quota]:
        """Every quota override, by user id."""

    @abstractmethod
    def add_usage(self, amounts: dict[str, float], now: datetime, half_life_s: float) -> None:
        """Add CPU-slot-seconds to users' fair-share usage, each stored value first decayed
        to ``now`` with ``half_life_s`` (users that no longer exist are left out)."""

    @abstractmethod
    def list_usage(self) -> dict[str, tuple[float, datetime]]:
        """Every user's stored usage and the time it is decayed to."""

    @abstractmethod
    def stored_bytes_by_owner(self, owner_id: str | None = None) -> dict[str, int]:
        """Bytes of the staged files (not those read in place under the data root) and
        products of each user's runs (of ``owner_id`` alone when given); users with none
        are absent."""

    @abstractmethod
    def count_active_runs(
        self, *, workflow_id: str | None = None, owner_id: str | None = None
    ) -> int:
        """Runs not yet in a terminal state, of a workflow or of an owner."""

    # -- steps ----------------------------------------------------------------------------
    @abstractmethod
    def save_step(self, step: StepRecord) -> None:
        """Insert or replace the record of (run, name, index)."""

    def save_steps(self, steps: list[StepRecord]) -> None:
        """Many :meth:`save_step` at once (backends may do it in one statement)."""
        for step in steps:
            self.save_step(step)

    @abstractmethod
    def list_steps(self, run_id: str) -> list[StepRecord]: ...

    @abstractmethod
    def delete_step(self, run_id: str, name: str, index: int) -> bool: ...

    @abstractmethod
    def step_summary(self, run_id: str, limit: int = 100) -> tuple[dict[str, int], list[str]]:
        """Step instances counted by state, and the labels of those running or paused."""

    @abstractmethod
    def step_counts(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        """Each run's step instances counted by state, in one read (runs without steps are
        left out)."""

    # -- events ---------------------------------------------------------------------------
    @abstractmethod
    def add_event(
        self,
        subject_kind: str,
        subject_id: str,
        type: str,
        at: datetime,
        actor: str | None,
        data: dict[str, Any],
    ) -> Event:
        """Append an event; its seq is the subject's next number (no gaps)."""

    @abstractmethod
    def add_events(self, events: list[EventRow]) -> list[Event]:
        """Many :meth:`add_event` at once, in order: (kind, id, type, at, actor, data).
        Each event carries its subject's owner."""

    @abstractmethod
    def list_events(
        self,
        *,
        subject_kind: str | None = None,
        subject_id: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        owner_id: str | None = None,
        types: list[str] | None = None,
        subject_ids: list[str] | None = None,
    ) -> list[Event]:
        """Oldest first.  ``types`` are patterns where ``*`` matches any characters
        (``run.*``, ``step.failed``); ``owner_id`` keeps the events of that owner's
        subjects; ``subject_ids`` keeps those subjects."""

    # -- server instances and run ownership (flowdeck.domain.leases) -----------------------
    @abstractmethod
    def add_instance(self, instance: ServerInstance) -> None: ...

    @abstractmethod
    def heartbeat(
        self,
        instance_id: str,
        now: datetime,
        holdings: dict[str, list[float]] | None = None,
    ) -> bool:
        """Renew the lease (and, given, say what its users hold on it); False when the
        instance was stopped (or is unknown)."""

    @abstractmethod
    def stop_instance(self, instance_id: str, now: datetime) -> None: ...

    @abstractmethod
    def mark_commit(self, instance_id: str, seq: int) -> None:
        """Record, in the transaction of a scheduler commit, that commit number ``seq`` of
        the instance is in: after a failure whose outcome is unknown (the connection cut
        during COMMIT), :meth:`commit_mark` says whether it went in."""

    @abstractmethod
    def commit_mark(self, instance_id: str) -> int:
        """The number of the instance's last scheduler commit that went in (0: none)."""

    @abstractmethod
    def list_instances(self) -> list[ServerInstance]: ...

    @abstractmethod
    def claim_run(self, run_id: str, instance_id: str, fence: int) -> int | None:
        """Make ``instance_id`` the run's owner if its fence is still ``fence``; the new
        fence, or None when someone else changed it first."""

    def claim_runs(self, instance_id: str, fences: dict[str, int]) -> set[str]:
        """:meth:`claim_run` for many runs (run id -> the fence expected); the runs whose
        claim failed."""
        return {
            run_id
            for run_id, fence in fences.items()
            if self.claim_run(run_id, instance_id, fence) is None
        }

    @abstractmethod
    def queued_runs(self, *, exclude_owners: list[str], unowned: bool) -> list[Run]:
        """Queued runs owned by an instance not in ``exclude_owners`` (and, with
        ``unowned``, those no instance owns), oldest first."""

    @abstractmethod
    def queued_owners(
        self, *, exclude_owners: list[str], unowned: bool
    ) -> set[tuple[str, str | None]]:
        """(user, owner instance) of each kind of run :meth:`queued_runs` would list: whose
        queued runs an instance may take over, without reading the runs themselves."""

    @abstractmethod
    def next_queued_runs(
        self, owner_id: str, *, instances: list[str], unowned: bool, limit: int
    ) -> list[Run]:
        """The first ``limit`` queued runs of user ``owner_id`` owned by one of
        ``instances`` (and, with ``unowned``, those no instance owns) in admission order:
        admin priority and the user's priority, highest first, then queued time and id
        (served by an index: the scheduler refills its window of a user's runs)."""

    @abstractmethod
    def set_queued_waiting(
        self, owner_id: str, reason: str | None, *, instances: list[str], unowned: bool
    ) -> None:
        """Say why every queued run of ``owner_id`` that :meth:`next_queued_runs` would
        list waits (None: it no longer does), in one statement."""

    @abstractmethod
    def run_fences(self, run_ids: list[str]) -> dict[str, tuple[str | None, int]]:
        """(owner instance, fence) of each run that exists."""

    @abstractmethod
    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""

    # -- products and staged files --------------------------------------------------------
    @abstractmethod
    def add_product(self, product: Product) -> None: ...

    @abstractmethod
    def list_products(self, run_id: str) -> list[Product]: ...

    @abstractmethod
    def get_product(self, product_id: str) -> Product | None: ...

    @abstractmethod
    def put_staged_file(self, staged: StagedFile) -> None:
        """Insert or replace (run, input, filename)."""

    @abstractmethod
    def delete_staged_file(self, run_id: str, input: str, filename: str) -> bool: ...

    @abstractmethod
    def list_staged_files(self, run_id: str) -> list[StagedFile]: ...

    # -- webhooks -------------------------------------------------------------------------
    @abstractmethod
    def add_subscription(self, sub: Subscription) -> None: ...

    @abstractmethod
    def get_subscription(self, sub_id: str) -> Subscription | None: ...

    @abstractmethod
    def list_subscriptions(
        self,
        owner_id: str | None,
        *,
        enabled_only: bool = False,
        before_id: str | None = None,
        limit: int | None = 100,
    ) -> list[Subscription]:
        """Newest first; ``owner_id=None``: everyone's."""

    @abstractmethod
    def update_subscription(self, sub_id: str, **changes: Any) -> Subscription | None:
        """Change fields (names of :class:`Subscription` fields); None if it is gone."""

    @abstractmethod
    def delete_subscription(self, sub_id: str) -> bool:
        """Also removes its deliveries and their attempts."""

    @abstractmethod
    def add_deliveries(self, deliveries: list[Delivery]) -> None: ...

    @abstractmethod
    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    @abstractmethod
    def list_deliveries(
        self, subscription_id: str, *, before_id: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """Newest first."""

    @abstractmethod
    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        """Pending deliveries of enabled subscriptions due at ``now``, earliest first; each
        is leased (its next attempt moved to ``lease_until``) so that no other dispatcher
        takes it meanwhile, and a crash only delays it."""

    @abstractmethod
    def next_delivery_due(self) -> datetime | None:
        """When the earliest pending delivery of an enabled subscription is due."""

    @abstractmethod
    def update_delivery(self, delivery_id: str, **changes: Any) -> None:
        """Change fields (names of :class:`Delivery` fields)."""

    @abstractmethod
    def add_attempts(self, attempts: list[Attempt]) -> None: ...

    @abstractmethod
    def list_attempts(self, delivery_ids: list[str]) -> list[Attempt]:
        """By delivery, then number."""

    # -- stream ports ---------------------------------------------------------------------
    @abstractmethod
    def get_port(self, run_id: str, direction: Direction, name: str) -> StreamPort | None: ...

    @abstractmethod
    def list_ports(self, run_id: str) -> list[StreamPort]:
        """The ports of a run that have records or were closed, by direction and name."""

    @abstractmethod
    def lock_port(self, run_id: str, direction: Direction, name: str) -> StreamPort:
        """The port (created empty when absent), locked until the transaction ends, so that
        appends to it are numbered without gaps or duplicates."""

    @abstractmethod
    def append_records(
        self, port: StreamPort, data: list[Any], at: datetime, attempt: int | None = None
    ) -> StreamPort:
        """Store records at offsets ``port.length``… of a port taken with
        :meth:`lock_port` in this transaction; returns the port with its new length."""

    @abstractmethod
    def close_port(self, run_id: str, direction: Direction, name: str, at: datetime) -> StreamPort:
        """Mark a port closed (created when absent); closing twice keeps the first time."""

    @abstractmethod
    def read_records(
        self, run_id: str, direction: Direction, name: str, start: int, limit: int
    ) -> list[StreamRecord]:
        """Records from offset ``start``, in order, at most ``limit``."""

    # -- graphs, run links, step cache (store/sql_graphs.py, store/fake_graphs.py) ---------
    @abstractmethod
    def add_graph(self, graph: Graph) -> None: ...

    @abstractmethod
    def get_graph(self, graph_id: str) -> Graph | None: ...

    def lock_graph(self, graph_id: str) -> Graph | None:
        """:meth:`get_graph`, and no other transaction locks or changes it until this one
        ends (several servers drive graphs: one decides at a time)."""
        return self.get_graph(graph_id)

    @abstractmethod
    def update_graph(self, graph_id: str, **changes: Any) -> Graph:
        """Change fields of a graph (names of :class:`Graph` fields)."""

    @abstractmethod
    def delete_graph(self, graph_id: str) -> bool:
        """Also removes its nodes and events."""

    @abstractmethod
    def list_graphs(
        self,
        viewer_id: str | None,
        *,
        states: list[GraphState] | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Graph]:
        """Graphs ``viewer_id`` owns (None: all), newest first."""

    @abstractmethod
    def save_graph_nodes(self, nodes: list[GraphNode]) -> None:
        """Insert or replace each (graph, name)."""

    @abstractmethod
    def list_graph_nodes(self, graph_id: str) -> list[GraphNode]:
        """By name."""

    @abstractmethod
    def graph_node_of_run(self, run_id: str) -> GraphNode | None: ...

    @abstractmethod
    def add_run_link(self, link: RunLink) -> None: ...

    @abstractmethod
    def get_run_link(self, run_id: str) -> RunLink | None: ...

    @abstractmethod
    def list_run_links(self, parent_id: str, kind: str) -> list[RunLink]:
        """The links of that kind to ``parent_id``, by step then index."""

    @abstractmethod
    def save_cache_entries(self, entries: list[CacheEntry]) -> None:
        """Insert or replace each (run, step, index)."""

    @abstractmethod
    def list_cache_entries(self, run_id: str) -> list[CacheEntry]: ...

    @abstractmethod
    def find_cache_entry(
        self, owner_id: str, key: str, workflow_id: str | None
    ) -> CacheEntry | None:
        """The newest entry of that owner and workflow version under ``key``."""


class Store(ABC):
    """Where flowdeck keeps its state."""

    # A short read costs less than the hop to a worker thread and back (the database is a
    # local file): the API's hot reads run on the event loop (api/deps.py, hot_read).
    inline_reads = False

    def __init__(self) -> None:
        self.event_hooks: list[EventHook] = []
        self.commit_listeners: list[CommitListener] = []
        # When another process commits events too (the scheduler process), each commit's
        # events go through this, which hands them on to ``deliver`` in id order.
        self.order: CommitListener | None = None
        # Why the last write failed (the database down, its disk full), until one succeeds:
        # /readyz says not ready meanwhile (reads may still answer).
        self.write_failure: str | None = None

    def add_event_hook(self, hook: EventHook) -> None:
        """Run ``hook(tx, events)`` in every transaction that adds events."""
        self.event_hooks.append(hook)

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener(events)`` after each commit that added events, in the committing
        thread.  Listeners see every event once, in id order; they must be quick and must
        not raise (an error is logged and dropped)."""
        self.commit_listeners.append(listener)

    def announce(self, change: str) -> None:  # noqa: B027 - a store with one server: no-op
        """Tell the other servers of this database that ``change`` (committed already)
        changed; :meth:`Tx.announce` does it as part of a transaction."""

    def share_writes(self, lock_file: Path) -> None:  # noqa: B027 - optional hook
        """Other processes of this server write to the database too: writers of every
        process queue on ``lock_file`` (where the database needs it)."""

    def _publish(self, events: list[Event]) -> None:
        if self.order is not None:
            self.order(events)
        else:
            self.deliver(events)

    def deliver(self, events: list[Event]) -> None:
        """Hand committed events to the listeners."""
        for listener in self.commit_listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener %r failed", listener)

    @abstractmethod
    def read(self) -> AbstractContextManager[Tx]: ...

    @abstractmethod
    def write(self) -> AbstractContextManager[Tx]:
        """A transaction that takes the write lock at its start (SQLite ``BEGIN IMMEDIATE``)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~flowdeck.errors.StoreUnavailable` unless the store answers and its
        schema is current."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
