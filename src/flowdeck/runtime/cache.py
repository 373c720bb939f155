"""The step cache: a rerun (and, when a workflow asks for it, any run of the same workflow
version) reuses the outputs of step instances whose inputs did not change.

A step instance's key is a SHA-256 over the workflow version, the step's definition
(command or function, environment, outputs, resources), the run's extra environment,
its ``foreach`` item and the values it references — inputs and upstream outputs, where
every file or directory is replaced by the hash of its content.  So a changed parameter,
a changed input file or a changed upstream output changes the key of the steps that read
it, and of no other.

On a hit, the output files are hard-linked (or copied) into the new run's directory at
the same relative place and become the new run's products; the instance is ``cached``
(event ``step.cached``, with the run it came from).  The scheduler calls :meth:`hit`
before launching an instance and :meth:`record` after it succeeded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.composition import RERUN, RERUN_TAG, CacheEntry
from flowdeck.domain.expressions import ExpressionError, Ref, parse_template
from flowdeck.runtime import launch
from flowdeck.runtime.active import ActiveRun, Instance
from flowdeck.runtime.rundir import RunDir
from flowdeck.runtime.steps import output_files
from flowdeck.store.base import Store, Tx

log = logging.getLogger("flowdeck.cache")
Op = Callable[[Callable[[Tx], None]], None]


@dataclass
class _Plan:
    source: str | None = None  # the run this one reruns
    entries: dict[tuple[str, int], CacheEntry] = field(default_factory=dict)
    forced: frozenset[str] = frozenset()  # from_step and what depends on it
    memoize: bool = False


class StepCache:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._plans: dict[str, _Plan] = {}
        self._keys: dict[tuple[str, str, int], str] = {}
        self._file_hashes: dict[tuple[str, int, int], str] = {}  # (path, inode, mtime)
        self._definitions: dict[tuple[str, str], tuple[str, list[Ref]]] = {}

    # -- plans ---------------------------------------------------------------------------------
    def _plan(self, ar: ActiveRun) -> _Plan:
        plan = self._plans.get(ar.run.id)
        if plan is None:
            plan = _Plan(memoize=bool(getattr(ar.spec, "cache", False)))
            if not any(t.startswith(RERUN_TAG) for t in ar.run.tags):
                self._plans[ar.run.id] = plan  # not a rerun: nothing to look up
                return plan
            with self.store.read() as tx:
                link = tx.get_run_link(ar.run.id)
                if link is not None and link.kind == RERUN:
                    plan.source = link.parent_id
                    plan.entries = {
                        (e.step, e.index): e for e in tx.list_cache_entries(link.parent_id)
                    }
                    if link.step:
                        plan.forced = _dependents(ar, link.step)
            self._plans[ar.run.id] = plan
        return plan

    def forget(self, run_id: str) -> None:
        self._plans.pop(run_id, None)
        for k in [k for k in self._keys if k[0] == run_id]:
            del self._keys[k]

    # -- keys ------------------------------------------------------------------------------------
    def _definition(self, ar: ActiveRun, name: str) -> tuple[str, list[Ref]]:
        """A step's definition (canonical JSON) and the references in it; workflow
        versions are immutable, so each is worked out once."""
        memo_key = (ar.run.workflow_id or "", name)
        found = self._definitions.get(memo_key)
        if found is None:
            step = ar.step(name)
            definition = step.model_dump(mode="json", by_alias=True, exclude={"description"})
            refs: dict[str, Ref] = {}
            # not `foreach`: an instance reads its item (in the key), not the whole array
            for text in _strings({k: v for k, v in definition.items() if k != "foreach"}):
                try:
                    refs.update((str(r), r) for r in parse_template(text).refs())
                except ExpressionError:
                    continue
            if len(self._definitions) > 10_000:
                self._definitions.clear()
            found = json.dumps(definition, sort_keys=True), list(refs.values())
            self._definitions[memo_key] = found
        return found

    def key(self, ar: ActiveRun, inst: Instance) -> str:
        definition, refs = self._definition(ar, inst.step)
        values: dict[str, Any] = {}
        outputs = {r.name: ar.outputs_of(r.name) for r in refs if r.kind == "step"}
        for ref in refs:
            values[str(ref)] = self._content(_value(ref, ar.run.params, outputs, inst.item))
        blob = json.dumps(
            {
                "workflow": ar.run.workflow_id,
                "step": inst.step,
                "definition": definition,
                "env": ar.extra_env,
                "item": self._content(inst.item),
                "values": values,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _content(self, value: Any) -> Any:
        """A value with every existing file or directory path replaced by its content
        hash."""
        if isinstance(value, list):
            return [self._content(v) for v in value]
        if isinstance(value, dict):
            return {k: self._content(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("/") and len(value) < 4096:
            path = Path(value)
            if path.is_file():
                return {"file": self._hash_file(path)}
            if path.is_dir():
                return {"dir": self._hash_dir(path)}
        return value

    def _hash_file(self, path: Path) -> str:
        st = path.stat()
        memo = (str(path), st.st_ino, st.st_mtime_ns)
        found = self._file_hashes.get(memo)
        if found is not None:
            return found
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if len(self._file_hashes) > 10_000:
            self._file_hashes.clear()
        self._file_hashes[memo] = digest.hexdigest()
        return digest.hexdigest()

    def _hash_dir(self, root: Path) -> str:
        digest = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                digest.update(str(p.relative_to(root)).encode() + b"\0")
                digest.update(self._hash_file(p).encode())
        return digest.hexdigest()

    # -- the hooks -------------------------------------------------------------------------------
    def hit(
        self, ar: ActiveRun, inst: Instance, op: Op, keep: Callable[[CacheEntry], None]
    ) -> str | None:
        """When the instance can reuse earlier outputs: set them on ``inst``, schedule its
        products and cache entry, and return the run they come from; else None."""
        step = ar.step(inst.step)
        if step.uses is not None:
            return None
        plan = self._plan(ar)
        try:
            key = self.key(ar, inst)  # every run records its keys: any may be rerun
        except OSError:
            return None
        self._keys[(ar.run.id, inst.step, inst.index)] = key
        if (plan.source is None and not plan.memoize) or inst.step in plan.forced:
            return None
        entry = plan.entries.get((inst.step, inst.index))
        if (entry is None or entry.key != key) and plan.memoize:
            with self.store.read() as tx:
                entry = tx.find_cache_entry(ar.run.owner_id, key, ar.run.workflow_id)
        if entry is None or entry.key != key:
            return None
        source = RunDir.of(self.settings.data_dir, entry.run_id)
        target = ar.rundir
        try:
            outputs = _relocate(entry.outputs, source, target)
        except OSError as exc:
            log.info("cache entry of %s/%s unusable: %s", entry.run_id, inst.step, exc)
            return None
        inst.outputs = outputs
        for name, spec in step.outputs.items():
            value = outputs.get(name)
            files = output_files(spec, value)
            for i, path in enumerate(files or []):
                suffix = f"[{i}]" if spec.glob is not None else ""
                product = launch._product(ar, f"{inst.label}.{name}{suffix}", Path(path))
                op(functools.partial(launch._add_product, product, inst.label))
        self.record(ar, inst, keep)
        return entry.run_id

    def record(self, ar: ActiveRun, inst: Instance, keep: Callable[[CacheEntry], None]) -> None:
        """Remember what a successful (or reused) instance produced under its key: ``keep``
        gets the entry to save with the tick's changes."""
        key = self._keys.get((ar.run.id, inst.step, inst.index))
        if key is None and ar.step(inst.step).uses is None:
            try:  # started before a restart: its inputs are what they were
                key = self.key(ar, inst)
            except OSError:
                return
        if key is None:
            return
        entry = CacheEntry(
            ar.run.id,
            inst.step,
            inst.index,
            key,
            ar.run.owner_id,
            ar.run.workflow_id,
            clock.now(),
            dict(inst.outputs),
        )
        keep(entry)


def _dependents(ar: ActiveRun, start: str) -> frozenset[str]:
    found = {start}
    for name in ar.order:  # topological: dependencies come first
        if ar.deps.get(name, frozenset()) & found:
            found.add(name)
    return frozenset(found)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if "${{" in value:
            yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _value(ref: Ref, params: dict[str, Any], outputs: dict[str, dict[str, Any]], item: Any) -> Any:
    if ref.kind == "input":
        return params.get(ref.name)
    if ref.kind == "step":
        return outputs.get(ref.name, {}).get(ref.output)
    return item


def _relocate(value: Any, source: RunDir, target: RunDir) -> Any:
    """Output values with the source run's files linked into the target run."""
    if isinstance(value, list):
        return [_relocate(v, source, target) for v in value]
    if isinstance(value, dict):
        return {k: _relocate(v, source, target) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(str(source.root) + "/"):
        rel = Path(value).relative_to(source.root)
        dest = target.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.cache-tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(value, tmp)
        except OSError:
            shutil.copy2(value, tmp)
        os.replace(tmp, dest)  # atomically in place
        return str(dest)
    return value
