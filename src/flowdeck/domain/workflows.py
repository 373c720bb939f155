"""Stored workflows: immutable, content-hashed versions with a visibility."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowdeck.errors import InvalidInput

WORKFLOW_KIND = "workflow"  # object kind in the shares table
_OWNER, _NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}", r"[a-z0-9][a-z0-9._-]{0,63}"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
_REF_RE = re.compile(rf"(?:(?P<owner>{_OWNER})/)?(?P<name>{_NAME})@(?P<version>{_VERSION})")
# The same, as a JSON Schema pattern (the OpenAPI document's).
REF_PATTERN = f"^(?:{_OWNER}/)?{_NAME}@{_VERSION}$"


class Visibility(StrEnum):
    PRIVATE = "private"  # the owner (and admins)
    SHARED = "shared"  # ... and the users it is shared with, read-only
    PUBLIC = "public"  # every user, read-only


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """``name@version`` (the caller's own) or ``owner/name@version``; version ``latest``
    means the newest version the caller can see."""

    name: str
    version: str
    owner: str | None = None

    @classmethod
    def parse(cls, text: str) -> WorkflowRef:
        m = _REF_RE.fullmatch(text)
        if m is None:
            raise InvalidInput(
                f"{text!r} is not a workflow reference: use name@version or owner/name@version",
                field="workflow",
            )
        return cls(m["name"], m["version"], m["owner"])

    def __str__(self) -> str:
        owner = f"{self.owner}/" if self.owner else ""
        return f"{owner}{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Workflow:
    id: str
    owner_id: str
    owner_name: str
    name: str
    version: str
    description: str
    content_hash: str
    spec: dict[str, Any]  # canonical JSON form of the validated spec
    source: str  # the document as pushed
    has_archive: bool
    visibility: Visibility
    trusted: bool
    created_at: datetime
    archive_bytes: int = 0  # its archive's files, counted in its owner's stored bytes

    @property
    def ref(self) -> str:
        return f"{self.owner_name}/{self.name}@{self.version}"
