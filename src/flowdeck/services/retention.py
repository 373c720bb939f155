"""Retention: what ended runs, events, webhook deliveries and audit entries the settings
let go, shown (a dry run) or deleted in bounded batches, by hand (``flowdeck admin purge
--expired``) or by a background thread of the server (one server of a database at a time).

Only ended runs are touched: an ended run's state is final, so nothing writes its files any
more; the deletion of a record checks again that it is ended and not kept."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.runtime.rundir import RunDir
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck")
SAMPLE = 20  # run ids shown by a dry run
ROW_KINDS = ("events", "deliveries", "audit")
_LOCK_KEY = 0x666C6F7764656B  # PostgreSQL advisory lock of the purging server
PAUSE_MAX_S = 1.0


@dataclasses.dataclass
class PurgeReport:
    """What a purge removed, or a dry run would."""

    dry_run: bool
    runs: int = 0  # runs deleted (folder, record, events)
    run_folders: int = 0  # runs whose folder alone was removed
    bytes: int = 0  # in those folders
    events: int = 0
    deliveries: int = 0
    audit: int = 0
    sample: list[str] = dataclasses.field(default_factory=list)  # some run ids

    def add_runs(self, run_ids: list[str]) -> None:
        self.sample.extend(run_ids[: max(0, SAMPLE - len(self.sample))])


def folder_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (0 if it is gone)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


class Retention:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @property
    def enabled(self) -> bool:
        s = self.settings
        return any(
            days is not None
            for days in (
                s.retention_files_days,
                s.retention_runs_days,
                s.retention_events_days,
                s.retention_webhook_days,
                s.retention_audit_days,
            )
        )

    def _before(self, days: float | None, now: datetime) -> datetime | None:
        return None if days is None else now - timedelta(days=days)

    def _rows_before(self, now: datetime) -> dict[str, datetime | None]:
        s = self.settings
        return {
            "events": self._before(s.retention_events_days, now),
            "deliveries": self._before(s.retention_webhook_days, now),
            "audit": self._before(s.retention_audit_days, now),
        }

    def rundir(self, run_id: str) -> RunDir:
        return RunDir.of(self.settings.data_dir, run_id)

    # -- dry run --------------------------------------------------------------------------
    def plan(self) -> PurgeReport:
        """What a purge now would remove; changes nothing."""
        now = clock.now()
        report = PurgeReport(dry_run=True)
        runs_before = self._before(self.settings.retention_runs_days, now)
        files_before = self._before(self.settings.retention_files_days, now)
        with self.store.read() as tx:
            doomed = tx.expired_runs(runs_before, files_only=False) if runs_before else []
            gone = {r.id for r in doomed}
            emptied = (
                [r for r in tx.expired_runs(files_before, files_only=True) if r.id not in gone]
                if files_before
                else []
            )
            counts = {
                kind: len(tx.old_rows(kind, before)) if before else 0
                for kind, before in self._rows_before(now).items()
            }
        report.runs, report.run_folders = len(doomed), len(emptied)
        report.add_runs([r.id for r in doomed + emptied])
        report.bytes = sum(folder_bytes(self.rundir(r.id).root) for r in doomed + emptied)
        # events of the runs deleted go with them
        report.events = counts["events"]
        report.deliveries, report.audit = counts["deliveries"], counts["audit"]
        return report

    # -- purge ----------------------------------------------------------------------------
    def purge(self, stop: threading.Event | None = None) -> PurgeReport | None:
        """Delete what has expired, ``retention_batch`` at a time, each batch in a short
        transaction of its own.  None if another server is purging the database now."""
        with self._sole() as alone:
            if not alone:
                return None
            return self._purge(stop or threading.Event())

    def _purge(self, stop: threading.Event) -> PurgeReport:
        now = clock.now()
        batch = self.settings.retention_batch
        report = PurgeReport(dry_run=False)
        runs_before = self._before(self.settings.retention_runs_days, now)
        files_before = self._before(self.settings.retention_files_days, now)
        while runs_before is not None and not stop.is_set():
            with self.store.read() as tx:
                found = tx.expired_runs(runs_before, files_only=False, limit=batch)
            ids = [r.id for r in found]
            with self._paced(stop):
                # Claimed first (a run kept meanwhile is not), then the folders, then the
                # records: a crash between leaves claimed runs that the next round deletes.
                with self.store.write() as tx:
                    claimed = tx.mark_files_purged(ids, clock.now())
                earlier = [r.id for r in found if r.files_purged_at is not None]
                report.bytes += self._remove_folders([*claimed, *earlier])
                with self.store.write() as tx:
                    deleted = tx.delete_runs(ids)
                report.runs += len(deleted)
            report.add_runs(deleted)
            if len(found) < batch:
                break
        while files_before is not None and not stop.is_set():
            with self.store.read() as tx:
                found = tx.expired_runs(files_before, files_only=True, limit=batch)
            ids = [r.id for r in found]
            with self._paced(stop):
                with self.store.write() as tx:  # claimed first: a run kept meanwhile is not
                    claimed = tx.mark_files_purged(ids, clock.now())
                report.bytes += self._remove_folders(claimed)
            report.run_folders += len(claimed)
            report.add_runs(claimed)
            if len(found) < batch:
                break
        for kind, before in self._rows_before(now).items():
            while before is not None and not stop.is_set():
                with self._paced(stop), self.store.write() as tx:
                    keys = tx.old_rows(kind, before, limit=batch)
                    done = tx.delete_rows(kind, keys)
                setattr(report, kind, getattr(report, kind) + done)
                if len(keys) < batch:
                    break
        if report.runs or report.run_folders or report.events or report.deliveries:
            with self.store.write() as tx:
                tx.add_audit(
                    clock.now(),
                    "retention.purge",
                    actor_id=None,
                    actor_name=None,
                    details={
                        k: v
                        for k, v in dataclasses.asdict(report).items()
                        if k not in ("dry_run", "sample")
                    },
                )
        return report

    @staticmethod
    @contextlib.contextmanager
    def _paced(stop: threading.Event) -> Iterator[None]:
        """A batch, then a pause as long as it took (at most a second): the scheduler, which
        shares the database's writer and this process, gets at least half the time."""
        t0 = clock.monotonic()
        yield
        stop.wait(min(PAUSE_MAX_S, clock.monotonic() - t0))

    def _remove_folders(self, run_ids: list[str]) -> int:
        freed = 0
        for run_id in run_ids:
            rundir = self.rundir(run_id)
            freed += folder_bytes(rundir.root)
            rundir.remove()
        return freed

    @contextlib.contextmanager
    def _sole(self) -> Iterator[bool]:
        """PostgreSQL: one server of the database purges at a time (an advisory lock held
        for the round); SQLite has one server."""
        engine = getattr(self.store, "engine", None)
        if engine is None or getattr(self.store, "dialect", None) != "postgresql":
            yield True
            return
        import sqlalchemy as sa

        with engine.connect() as conn:
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(_LOCK_KEY))).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(_LOCK_KEY)))
                    conn.commit()


class RetentionTask:
    """The server's thread purging every ``retention_interval_s`` (its own thread, short
    transactions: the scheduler's commits go on between the batches)."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flowdeck-retention", daemon=True)
        self.last: PurgeReport | None = None

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        interval = self.retention.settings.retention_interval_s
        while not self._stop.wait(interval):
            try:
                report = self.retention.purge(self._stop)
            except Exception:  # logged, tried again at the next round
                log.exception("retention: purge failed")
                continue
            if report is not None:
                self.last = report
                if report.runs or report.run_folders or report.events:
                    log.info(
                        "retention: deleted %d run(s), emptied %d run folder(s) (%d bytes), "
                        "%d event(s), %d webhook deliveries, %d audit entries",
                        report.runs,
                        report.run_folders,
                        report.bytes,
                        report.events,
                        report.deliveries,
                        report.audit,
                    )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
