"""The workflow store: push (a spec or an archive), validate, list, get, share, delete.

Versions are immutable and content-hashed: pushing identical content again is a no-op,
different content under an existing version is a conflict.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flowdeck import clock, durable
from flowdeck.archive import ArchiveLimits, ExtractedMember, extract_archive
from flowdeck.config import Settings
from flowdeck.domain.privilege import Access, Actor, allowed
from flowdeck.domain.validation import SPEC_FILENAMES, Report, ValidWorkflow, validate_text
from flowdeck.domain.workflows import WORKFLOW_KIND, Visibility, Workflow, WorkflowRef
from flowdeck.errors import (
    AlreadyExists,
    ArchiveRejected,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from flowdeck.ids import new_id
from flowdeck.services.quotas import Quotas
from flowdeck.store.base import Store, Tx


@dataclass(frozen=True, slots=True)
class Pushed:
    workflow: Workflow
    created: bool  # False: identical content was already stored


@dataclass(frozen=True, slots=True)
class Unpacked:
    root: Path  # the directory holding the spec
    spec_text: str
    members: list[ExtractedMember]  # paths relative to root


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text: {exc}") from exc


RESOLVED_TTL_S = 10.0


class Workflows:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        # (user id, name, version) -> (a version of the user's own, when read): the run
        # creation path resolves it without a query.  Versions never change; a deletion here
        # empties it and tells the other servers of the database (store/pg_listen), which
        # empty theirs; a missed notification is outlived within RESOLVED_TTL_S.
        self._resolved: dict[tuple[str, str, str], tuple[Workflow, float]] = {}
        self.root = settings.data_dir / "workflows"
        self.tmp = settings.data_dir / "tmp"
        self.limits = ArchiveLimits(
            max_total_bytes=settings.archive_max_unpacked_bytes,
            max_members=settings.archive_max_members,
        )
        self.quotas = Quotas(store, settings)  # an archive counts in its owner's stored bytes

    def measure_archives(self) -> int:
        """Archives pushed before their size was kept (schema 0018) are measured on disk
        once: how many were."""
        measured = 0
        before: str | None = None
        while True:
            with self.store.read() as tx:
                page = tx.list_workflows(None, before_id=before, limit=500)
            for wf in page:
                if wf.has_archive and not wf.archive_bytes:
                    size = sum(
                        p.stat().st_size for p in self.archive_dir(wf).rglob("*") if p.is_file()
                    )
                    with self.store.write() as tx:
                        tx.update_workflow(wf.id, archive_bytes=size)
                    measured += 1
            if len(page) < 500:
                return measured
            before = page[-1].id

    def archive_dir(self, workflow: Workflow) -> Path:
        return self.root / workflow.id

    def forget_resolved(self) -> None:
        """Forget resolved references (a version deleted or trusted through another server)."""
        self._resolved.clear()

    def remove_files(self, workflow_ids: list[str]) -> None:
        self._resolved.clear()  # their owner was deleted
        for workflow_id in workflow_ids:
            shutil.rmtree(self.root / workflow_id, ignore_errors=True)

    def new_temp_dir(self, prefix: str) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))

    # -- reading and validating -----------------------------------------------------------
    def unpack(self, archive: Path) -> Unpacked:
        """Extract an uploaded archive safely and find its spec."""
        dest = self.new_temp_dir("unpack-")
        try:
            members = extract_archive(archive, dest, self.limits)
            prefix = ""
            names = {m.path for m in members}
            if not names & set(SPEC_FILENAMES):
                tops = {m.path.split("/", 1)[0] for m in members}
                if len(tops) == 1 and any(
                    f"{next(iter(tops))}/{n}" in names for n in SPEC_FILENAMES
                ):
                    prefix = next(iter(tops)) + "/"
            spec_name = next((n for n in SPEC_FILENAMES if prefix + n in names), None)
            if spec_name is None:
                raise ArchiveRejected(
                    "the archive has no workflow spec at its top: add "
                    + " or ".join(SPEC_FILENAMES[:2]),
                    member=None,
                    reason="no_spec",
                )
            root = dest / prefix if prefix else dest
            text = _decode((root / spec_name).read_bytes(), f"archive member {spec_name!r}")
            inside = [
                ExtractedMember(m.path.removeprefix(prefix), m.size, m.sha256)
                for m in members
                if m.path.startswith(prefix)
            ]
            return Unpacked(root, text, inside)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    @staticmethod
    def validate_spec(text: str, members: list[ExtractedMember] | None) -> Report:
        """Validate a document; a plain spec (``members=None``) carries no code."""
        return validate_text(text, [m.path for m in members] if members is not None else [])

    @staticmethod
    def content_hash(valid: ValidWorkflow, members: list[ExtractedMember] | None) -> str:
        h = hashlib.sha256(valid.spec_hash.encode())
        for m in sorted(members or [], key=lambda m: m.path):
            h.update(f"\n{m.sha256}  {m.path}".encode())
        return h.hexdigest()

    # -- pushing --------------------------------------------------------------------------
    def push_spec(self, actor: Actor, body: bytes, visibility: Visibility) -> Pushed:
        text = _decode(body, "the workflow spec")
        valid = self.validate_spec(text, None).require()
        return self._store(actor, valid, text, None, visibility)

    def push_archive(self, actor: Actor, archive: Path, visibility: Visibility) -> Pushed:
        unpacked = self.unpack(archive)
        try:
            valid = self.validate_spec(unpacked.spec_text, unpacked.members).require()
            return self._store(actor, valid, unpacked.spec_text, unpacked, visibility)
        finally:
            shutil.rmtree(unpacked.root, ignore_errors=True)
            if unpacked.root.parent != self.tmp:
                shutil.rmtree(unpacked.root.parent, ignore_errors=True)

    def store_unpacked(
        self, actor: Actor, valid: ValidWorkflow, unpacked: Unpacked, visibility: Visibility
    ) -> Pushed:
        """Store a validated spec with the files of ``unpacked.root`` (moved into the store
        when it is new; the caller removes what is left)."""
        return self._store(actor, valid, unpacked.spec_text, unpacked, visibility)

    def _store(
        self,
        actor: Actor,
        valid: ValidWorkflow,
        text: str,
        unpacked: Unpacked | None,
        visibility: Visibility,
    ) -> Pushed:
        spec = valid.spec
        digest = self.content_hash(valid, unpacked.members if unpacked else None)
        with self.store.read() as tx:
            existing = tx.find_workflow(actor.user_id, spec.name, spec.version)
        if existing is not None:
            return self._same_or_conflict(existing, digest)
        workflow = Workflow(
            id=new_id("wf"),
            owner_id=actor.user_id,
            owner_name=actor.username,
            name=spec.name,
            version=spec.version,
            description=spec.description,
            content_hash=digest,
            spec=valid.canonical,
            source=text,
            has_archive=unpacked is not None,
            visibility=visibility,
            trusted=False,
            created_at=clock.now(),
            archive_bytes=sum(m.size for m in unpacked.members) if unpacked else 0,
        )
        target = self.archive_dir(workflow)
        if unpacked is not None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            durable.fsync_tree(unpacked.root)
            os.rename(unpacked.root, target)  # atomic: the files appear whole or not at all
            durable.fsync_dir(self.root)
        try:
            with self.store.write() as tx:
                self.quotas.check_stored(tx, actor.user_id, adding=workflow.archive_bytes)
                tx.add_workflow(workflow)
                self._audit(tx, actor, "workflow.push", workflow)
        except AlreadyExists:
            shutil.rmtree(target, ignore_errors=True)
            with self.store.read() as tx:
                raced = tx.find_workflow(actor.user_id, spec.name, spec.version)
            if raced is None:
                raise
            return self._same_or_conflict(raced, digest)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return Pushed(workflow, True)

    @staticmethod
    def _same_or_conflict(existing: Workflow, digest: str) -> Pushed:
        if existing.content_hash == digest:
            return Pushed(existing, False)
        raise Conflict(
            f"{existing.name}@{existing.version} already exists with different content; "
            "versions are immutable: push a new version",
            existing_hash=existing.content_hash,
            pushed_hash=digest,
        )

    @staticmethod
    def _audit(tx: Tx, actor: Actor, action: str, wf: Workflow, **details: object) -> None:
        tx.add_audit(
            clock.now(),
            action,
            actor_id=actor.user_id,
            actor_name=actor.username,
            target=wf.ref,
            details=dict(details),
        )

    # -- reading --------------------------------------------------------------------------
    def _resolve(self, tx: Tx, actor: Actor, ref: WorkflowRef) -> Workflow:
        # The caller's own workflows need no user lookup: the actor is authenticated.
        owner_id: str | None = actor.user_id
        if ref.owner:
            owner = tx.get_user_by_name(ref.owner)
            owner_id = owner.id if owner is not None else None
        found: Workflow | None = None
        if owner_id is not None:
            if ref.version == "latest":
                viewer = None if actor.is_admin else actor.user_id
                latest = tx.list_workflows(viewer, name=ref.name, owner_id=owner_id, limit=1)
                found = latest[0] if latest else None
            else:
                found = tx.find_workflow(owner_id, ref.name, ref.version)
        if found is None or not self._can(tx, actor, found, Access.READ):
            raise NotFound(f"no workflow {ref}")
        return found

    @staticmethod
    def _can(tx: Tx, actor: Actor, wf: Workflow, access: Access) -> bool:
        shared = tx.shared_with(WORKFLOW_KIND, wf.id) if wf.visibility is Visibility.SHARED else ()
        return allowed(actor, wf.owner_id, access, shared, wf.visibility is Visibility.PUBLIC)

    def resolve(self, tx: Tx, actor: Actor, ref: str) -> Workflow:
        """:meth:`get` inside the caller's transaction."""
        parsed = WorkflowRef.parse(ref)
        wf = self._resolve(tx, actor, parsed)
        if parsed.owner is None and parsed.version != "latest" and wf.owner_id == actor.user_id:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[(actor.user_id, parsed.name, parsed.version)] = (wf, clock.monotonic())
        return wf

    def cached(self, actor: Actor, ref: str) -> Workflow | None:
        """The caller's own ``name@version`` if resolved recently (None: use :meth:`resolve`).
        Only one's own versions are kept: they are readable whatever their visibility."""
        name, at, version = ref.partition("@")
        found = self._resolved.get((actor.user_id, name, version)) if at else None
        if found is None or clock.monotonic() - found[1] > RESOLVED_TTL_S:
            return None
        return found[0]

    def get(self, actor: Actor, ref: str) -> Workflow:
        """A workflow the actor may read; 404 otherwise."""
        with self.store.read() as tx:
            return self._resolve(tx, actor, WorkflowRef.parse(ref))

    def list_workflows(
        self,
        actor: Actor,
        *,
        name: str | None = None,
        owner: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[Workflow]:
        with self.store.read() as tx:
            owner_id = None
            if owner is not None:
                user = tx.get_user_by_name(owner)
                if user is None:
                    return []
                owner_id = user.id
            viewer = None if actor.is_admin else actor.user_id
            return tx.list_workflows(
                viewer, name=name, owner_id=owner_id, before_id=before_id, limit=limit
            )

    def shared_with(self, actor: Actor, ref: str) -> list[str]:
        """Usernames the workflow is shared with (owner and admins only)."""
        with self.store.read() as tx:
            wf = self._writable(tx, actor, ref)
            ids = tx.shared_with(WORKFLOW_KIND, wf.id)
            return sorted(u.username for u in (tx.get_user(i) for i in ids) if u is not None)

    # -- changing -------------------------------------------------------------------------
    def _writable(self, tx: Tx, actor: Actor, ref: str) -> Workflow:
        wf = self._resolve(tx, actor, WorkflowRef.parse(ref))
        if not self._can(tx, actor, wf, Access.WRITE):
            raise PermissionDenied(f"only the owner of {wf.ref} or an admin may change it")
        return wf

    def set_visibility(
        self, actor: Actor, ref: str, visibility: Visibility, users: list[str] | None = None
    ) -> Workflow:
        """Change who may read a workflow; ``users`` replaces the share list."""
        with self.store.write() as tx:
            wf = self._writable(tx, actor, ref)
            if users is not None:
                wanted = {}
                for name in users:
                    user = tx.get_user_by_name(name)
                    if user is None:
                        raise InvalidInput(f"no user {name!r} to share with", field="users")
                    wanted[user.id] = user
                current = tx.shared_with(WORKFLOW_KIND, wf.id)
                for uid in current - wanted.keys():
                    tx.unshare(WORKFLOW_KIND, wf.id, uid)
                for uid in wanted.keys() - current:
                    tx.share(WORKFLOW_KIND, wf.id, uid)
            updated = tx.update_workflow(wf.id, visibility=visibility)
            self._audit(
                tx, actor, "workflow.visibility", wf, visibility=visibility.value, users=users
            )
        assert updated is not None
        return updated

    def set_trusted(self, actor: Actor, ref: str, trusted: bool) -> Workflow:
        """Admins mark a workflow trusted: required for the in-server executor."""
        if not actor.is_admin:
            raise PermissionDenied("only admins mark workflows trusted")
        with self.store.write() as tx:
            wf = self._resolve(tx, actor, WorkflowRef.parse(ref))
            updated = tx.update_workflow(wf.id, trusted=trusted)
            self._audit(tx, actor, "workflow.trust", wf, trusted=trusted)
            self._resolved.clear()
            tx.announce("workflows")
        assert updated is not None
        return updated

    def delete(self, actor: Actor, ref: str) -> None:
        """Delete a version (its files too); 409 while an active run uses it."""
        with self.store.write() as tx:
            wf = self._writable(tx, actor, ref)
            active = tx.count_active_runs(workflow_id=wf.id)
            if active:
                raise Conflict(f"{wf.ref} is used by {active} active run(s)", active_runs=active)
            tx.delete_workflow(wf.id)
            self._audit(tx, actor, "workflow.delete", wf)
            self._resolved.clear()
            tx.announce("workflows")
        shutil.rmtree(self.archive_dir(wf), ignore_errors=True)
