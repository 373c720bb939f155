"""The CWL v1.2 conformance tests that need no Docker, through flowdeck and through bare
cwltool (tests/conformance.py): no test bare cwltool passes may fail through flowdeck.

The ``required`` selection runs with the suite (CI); every Docker-free test is opt-in
(``pytest -m conformance`` or ``make conformance``): it takes several minutes."""

from __future__ import annotations

import pytest

from tests import conformance


@pytest.mark.parametrize("tags", ["required", pytest.param(None, marks=pytest.mark.conformance)])
def test_flowdeck_passes_what_bare_cwltool_passes(tags: str | None) -> None:
    reason = conformance.missing_reason()
    if reason:
        pytest.skip(reason)
    report = conformance.run(tags=tags, only=None, jobs=2, fresh=False)
    assert report["regressions"] == [], report
