"""Admission of queued runs: fair share among users (:mod:`flowdeck.domain.fairshare`)
and per-user quotas (:mod:`flowdeck.domain.quotas`).

When slots are free, the tick asks each user with queued runs for their next run, leaves
out users at a quota that makes starts wait (active runs, CPU slots held: their queued
runs show why in ``waiting``), and starts the run of the user fair share ranks first,
again while slots are free.  The cost of one admission is a look at each waiting user's
next run, not at the queue: users' usage is one decayed number each, updated when a step
ends (:meth:`record_usage`)."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain import quotas
from flowdeck.domain.fairshare import Candidate, UsageBook, pick
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import Run, RunState
from flowdeck.errors import StoreUnavailable
from flowdeck.runtime import window
from flowdeck.store.base import Store, Tx

if TYPE_CHECKING:
    from flowdeck.runtime.active import ActiveRun, Instance
    from flowdeck.runtime.core import SchedulerCore, Start

QUOTAS_REFRESH_S = 5.0  # quota overrides and stored usage are read again after this
USAGE_WRITE_S = 1.0  # recorded usage is added to the store at most this often


class QuotaBook:
    """Each user's quota: the settings' defaults under admins' overrides, read from the
    store at most every few seconds."""

    def __init__(self, defaults: Quota) -> None:
        self.defaults = defaults
        self._overrides: dict[str, Quota] = {}
        self._read_at: float | None = None

    def refresh(self, store: Store) -> bool:
        """Read the overrides again if they are old; True when it did."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= QUOTAS_REFRESH_S:
            with store.read() as tx:
                self._overrides = tx.list_quotas()
            self._read_at = now
            return True
        return False

    @property
    def none(self) -> bool:
        """No quota holds a start back: no default, no override of active runs or CPUs."""
        d = self.defaults
        return (
            d.max_active_runs is None
            and d.max_cpus is None
            and all(
                q.max_active_runs is None and q.max_cpus is None for q in self._overrides.values()
            )
        )

    def of(self, user_id: str) -> Quota:
        override = self._overrides.get(user_id)
        return override.over(self.defaults) if override is not None else self.defaults


class Admission:
    """The scheduler's fair-share and quota state (one per :class:`SchedulerCore`)."""

    def __init__(self, settings: Settings) -> None:
        self.usage = UsageBook(settings.fairshare_half_life_s)
        self.quotas = QuotaBook(
            Quota(
                settings.quota_max_active_runs,
                settings.quota_max_cpus,
                settings.quota_max_stored_bytes,
            )
        )
        self.holding: defaultdict[str, float] = defaultdict(float)  # by each user's steps
        self.reasons: dict[str, str] = {}  # told on each blocked user's queued runs
        self.unlimited = self.quotas.none  # no quota holds starts back (checked each admit)
        self.pending: dict[str, float] = {}  # usage recorded, not yet handed to a commit
        self._written_at = float("-inf")
        # what users hold on the other servers of the database (their last heartbeats):
        # user id -> (active runs, CPU slots)
        self.elsewhere: dict[str, tuple[int, float]] = {}

    def record_usage(self, ar: ActiveRun, inst: Instance, now: datetime) -> None:
        """An attempt ended: its slot-seconds count in its owner's usage (stored with the
        tick's commit: :meth:`usage_op`)."""
        if inst.started_at is not None and inst.cpus > 0:
            seconds = max(0.0, (now - inst.started_at).total_seconds())
            self.usage.add(ar.run.owner_id, inst.cpus * seconds, now)
            owner = ar.run.owner_id
            self.pending[owner] = self.pending.get(owner, 0.0) + inst.cpus * seconds

    def usage_op(self, *, at_once: bool = False) -> Callable[[Tx], None] | None:
        """The change that adds the usage recorded since it last did to the store: at most
        once a second, whatever the rate of steps (a commit of step ends carries it), or
        ``at_once`` (the server stops)."""
        recent = time.monotonic() - self._written_at < USAGE_WRITE_S
        if not self.pending or (recent and not at_once):
            return None
        self._written_at = time.monotonic()
        amounts, self.pending = self.pending, {}
        now, half_life = clock.now(), self.usage.half_life_s

        def op(tx: Tx) -> None:
            tx.add_usage(amounts, now, half_life)

        return op

    def refresh(self, store: Store, me: str, lease_ttl_s: float, host: str) -> None:
        """Read quota overrides, every user's stored usage and what users hold on the other
        live servers again, at most every few seconds (other servers' steps count too)."""
        if self.quotas.refresh(store):
            with store.read() as tx:
                self.usage.load(tx.list_usage())
                # (what other servers hold matters only where a quota holds starts back)
                instances = [] if self.quotas.none else tx.list_instances()
            for owner, amount in self.pending.items():  # not committed yet
                self.usage.add(owner, amount, clock.now())
            now = clock.now()
            elsewhere: dict[str, tuple[int, float]] = {}
            for inst in instances:
                if inst.id == me or not inst.lease_valid(now, lease_ttl_s, host):
                    continue
                for owner, (runs, cpus) in inst.holdings.items():
                    have = elsewhere.get(owner, (0, 0.0))
                    elsewhere[owner] = (have[0] + int(runs), have[1] + float(cpus))
            self.elsewhere = elsewhere
        self.unlimited = self.quotas.none

    def holdings(self, active: Iterable[ActiveRun]) -> dict[str, list[float]]:
        """What this server's users hold on it (said with its heartbeat; nothing where no
        quota holds starts back)."""
        if self.unlimited:
            return {}
        found: dict[str, list[float]] = {}
        for ar in active:
            if ar.run.state is RunState.QUEUED:
                continue
            mine = found.setdefault(ar.run.owner_id, [0, 0.0])
            mine[0] += 1
            mine[1] += max(0.0, ar.used)
        return found

    def count_holdings(self, active: Iterable[ActiveRun]) -> None:
        self.holding = defaultdict(float)
        for ar in active:
            if ar.used > 0:
                self.holding[ar.run.owner_id] += ar.used

    def cpus_allowed(self, owner: str, cpus: float) -> bool:
        """May a step of ``owner`` taking ``cpus`` start within their CPU quota?  (One step
        always may if the owner holds nothing, as with the machine's slots.)"""
        if self.unlimited:
            return True
        cap = self.quotas.of(owner).max_cpus
        held = self.holding[owner] + self.elsewhere.get(owner, (0, 0.0))[1]
        return cap is None or held <= 0 or held + cpus <= cap

    def blocked(self, owner: str, active: Counter[str]) -> str | None:
        """Why a new run of ``owner`` must wait for their quota (None: it need not)."""
        if self.unlimited and not self.reasons:
            return None
        quota = self.quotas.of(owner)
        runs_there, cpus_there = self.elsewhere.get(owner, (0, 0.0))
        runs = active[owner] + runs_there
        if quota.max_active_runs is not None and runs >= quota.max_active_runs:
            return quotas.active_runs_reason(runs, quota.max_active_runs)
        held = self.holding[owner] + cpus_there
        if quota.max_cpus is not None and held > 0 and held >= quota.max_cpus:
            return quotas.cpus_reason(held, quota.max_cpus)
        return None


def _tell_waiting(core: SchedulerCore, owner: str, reason: str | None) -> None:
    """Write why ``owner``'s queued runs wait (or that they no longer do), once per change."""
    reasons = core.admission.reasons
    if reasons.get(owner) == reason:
        return
    if reason is None:
        del reasons[owner]
    else:
        reasons[owner] = reason
    for run in core.queued.of(owner):
        core._op(run.id, {"waiting": reason})
    window.tell_waiting(core, owner, reason)  # those in the store


def _next_queued(core: SchedulerCore, active: Counter[str], full: set[str]) -> Run | None:
    """The queued run that starts next: fair share among users not held back by a quota
    (whose queued runs are told why they wait)."""
    adm = core.admission
    window.refill(core)  # owners whose window ran low: their next runs from the store
    now = clock.now()
    running: defaultdict[str, float] = defaultdict(float)
    for ar in core.active.values():
        for inst in ar.running():
            if inst.started_at is not None and inst.cpus > 0:
                seconds = max(0.0, (now - inst.started_at).total_seconds())
                running[ar.run.owner_id] += inst.cpus * seconds
    candidates = []
    for head in list(core.queued.heads()):
        owner = head.owner_id
        reason = adm.blocked(owner, active)
        _tell_waiting(core, owner, reason)
        if reason is None and owner not in full:
            candidates.append(
                Candidate(
                    owner,
                    head.admin_priority,
                    head.queued_at or head.created_at,
                    adm.usage.of(owner, now) + running[owner],
                    adm.holding[owner],
                )
            )
    users = len(set(active) | {c.user for c in candidates})
    chosen = pick(candidates, users)
    return core.queued.take(chosen.user) if chosen is not None else None


def admit(core: SchedulerCore, claimed: list[Start], owned: list[Start]) -> None:
    """Start queued runs, chosen by :func:`_next_queued`, while slots are free (when
    none are, only tell the queued runs of users at a quota why they wait).  A run
    queued through this instance is its own already (ownership was part of queueing it):
    its first steps go to ``owned`` and start at once.  Taking ownership of any other is
    part of the tick's commit (compare-and-set on its fence); its first steps go to
    ``claimed`` and start once that commit succeeded."""
    adm = core.admission
    adm.refresh(core.store, core.instance_id, core.settings.lease_ttl_s, core.host)
    window.refill(core)  # (a user's next runs are heads to tell, even with no slot free)
    active = Counter(
        ar.run.owner_id for ar in core.active.values() if ar.run.state is not RunState.QUEUED
    )
    if core.used >= core.slots:  # nothing starts: only tell who waits for a quota
        if adm.unlimited and not adm.reasons:
            return
        for head in list(core.queued.heads()):
            _tell_waiting(core, head.owner_id, adm.blocked(head.owner_id, active))
        return
    full: set[str] = set()  # users whose admitted run could not start a step (CPU quota)
    while core.used < core.slots and (queued := _next_queued(core, active, full)) is not None:
        ours = queued.owner_instance == core.instance_id
        run = (
            queued
            if ours
            else dataclasses.replace(
                queued, owner_instance=core.instance_id, fence=queued.fence + 1
            )
        )
        try:
            admitted = core._activate(run)
        except StoreUnavailable:
            core.queued[queued.id] = queued  # admitted at the next try
            raise
        if not ours:
            core._claims[queued.id] = queued.fence
        if admitted is None:
            continue
        core.active[run.id] = admitted
        active[run.owner_id] += 1
        now = clock.now()
        waited = {}  # how long it queued (the metrics' queue wait)
        if run.queued_at is not None:
            waited["queued_s"] = round((now - run.queued_at).total_seconds(), 6)
        core._run_state(admitted, "dispatch", None, waited, started_at=now, waiting=None)
        walltime = run.resources.get("walltime_s")
        if walltime:
            assert core.loop is not None
            admitted.timers.append(
                core.loop.call_later(float(walltime), core._run_walltime, admitted)
            )
        core._advance(admitted)
        core._dispatch(admitted, owned if ours else claimed)
        if admitted.used == 0 and not adm.cpus_allowed(run.owner_id, core.slots):
            full.add(run.owner_id)  # its next run would wait the same: not now
        core._maybe_finish(admitted)
