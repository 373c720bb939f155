"""Schemathesis drives every operation of the OpenAPI document with generated requests,
valid and invalid, against the real server: none may answer 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from flowdeck.api import create_app
from flowdeck.config import load_settings
from flowdeck.domain.accounts import Role
from flowdeck.services.context import make_context
from flowdeck.store.fake import FakeStore
from tests.helpers import LiveServer, register_and_login, unique


def _openapi() -> dict[str, Any]:
    """The document of the app, built without touching disk (no store is opened)."""
    cfg = load_settings(None, data_dir=Path("unused"))
    store = FakeStore()
    spec: dict[str, Any] = create_app(cfg, make_context(cfg, store), run_scheduler=False).openapi()
    return spec


# Archives are bytes: generated payloads go as they are (garbage archives must get a 4xx).
schemathesis.serializer.alias(["application/zip", "application/gzip"], "application/octet-stream")
# NDJSON record pushes are text.
schemathesis.serializer.alias(["application/x-ndjson"], "text/plain")
schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture(scope="module")
def fuzz_token(server: LiveServer) -> str:
    """An admin's token, so that generated requests get past the role check too."""
    name = unique("st")
    token = register_and_login(server, name)
    server.ctx.accounts.set_role(None, name, Role.ADMIN)
    return token


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, server: LiveServer, fuzz_token: str) -> None:
    if case.path == "/api/v1/auth/logout":
        return  # it would end the session every other case uses
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {fuzz_token}"})
    assert response.status_code < 500, (case.method, case.path, response.text)
