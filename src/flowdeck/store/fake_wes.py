"""The fake store's side of the WES queries."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from flowdeck.domain.runs import RunState

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeWesMixin:
    s: _State

    def count_runs_by_state(self, viewer_id: str | None) -> dict[RunState, int]:
        return dict(
            Counter(
                run.state
                for run in self.s.runs.values()
                if viewer_id is None or run.owner_id == viewer_id
            )
        )
