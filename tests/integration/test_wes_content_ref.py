"""The content-addressed version a WES submission looks up before writing anything is the
version the CWL store gives the same files when it stores them (were they to differ, the
same attachments would never be found stored: each submission would write them again),
and the version earlier releases gave them (files by path order, as sorted paths)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flowdeck.domain.privilege import Actor
from flowdeck.domain.workflows import Visibility
from flowdeck.services.context import build_context
from flowdeck.services.cwl_workflows import content_ref
from tests.helpers import STRONG, make_settings

CWL = Path(__file__).parents[1] / "data" / "cwl"


def test_the_version_looked_up_is_the_version_stored(tmp_path: Path) -> None:
    ctx = build_context(make_settings(tmp_path / "data"))
    try:
        user = ctx.accounts.create_user("refs", STRONG)
        actor = Actor(user.id, user.username, user.role)
        files = {name: (CWL / name).read_bytes() for name in ("sort-count.cwl", "sort.cwl")}
        # names whose order differs as strings ("a-c" < "a/b") and as paths (a/b first)
        files |= {"a/b.txt": b"one\n", "a-c.txt": b"two\n", "a/d/e.txt": b"three\n"}
        for job_document in (True, False):
            folder = ctx.workflows.new_temp_dir("refs-")
            for name, data in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            pushed = ctx.cwl.push_dir(
                actor,
                folder,
                "./sort-count.cwl",
                Visibility.PRIVATE,
                job_document=job_document,
            )
            assert pushed.created
            digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
            ref = content_ref("sort-count.cwl", digests, job_document=job_document)
            assert ref == f"{pushed.workflow.name}@{pushed.workflow.version}"
            lines = ["main sort-count.cwl"]
            lines += [f"{digests[p.as_posix()]}  {p.as_posix()}" for p in sorted(map(Path, files))]
            earlier = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
            assert pushed.workflow.version.endswith(f"-{earlier}")
            assert pushed.workflow.version.startswith("wes-" if job_document else "cwl-")
            # another main file, or one byte more, is another version
            assert content_ref("sort.cwl", digests, job_document=job_document) != ref
            changed = digests | {"a/b.txt": hashlib.sha256(b"one!\n").hexdigest()}
            assert content_ref("sort-count.cwl", changed, job_document=job_document) != ref
    finally:
        ctx.close()
