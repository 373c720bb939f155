"""Schemathesis drives every operation of the OpenAPI document with generated requests,
valid and invalid, against the real server: none may answer 5xx, and the document must say
what the server does — schema-valid requests accepted, schema-invalid ones refused (4xx),
and a method a path does not have answered 405 with an ``Allow`` header naming those it has."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
)

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
SPEC = _openapi()
schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC))


@pytest.fixture(scope="module")
def fuzz_token(server: LiveServer) -> str:
    """An admin's token, so that generated requests get past the role check too."""
    name = unique("st")
    token = register_and_login(server, name)
    server.ctx.accounts.set_role(None, name, Role.ADMIN)
    return token


# The checks of every generated request and its answer:
# - no 5xx;
# - a request valid by the document (positive data) is accepted: 2xx, or an answer that
#   depends on state the document cannot describe — 404 (unknown id: generated ids name
#   nothing), 409 (the object's state forbids it), 401/403 (role, account state), 429
#   (throttling, a full stream buffer) — schemathesis' defaults —, or a refusal EXCUSED
#   explains;
# - a request the document says is invalid (negative data) is refused with a 4xx, unless
#   what made it invalid cannot reach the server (see _invalid_only_before_sending);
# - a method a path does not declare answers 405 with an ``Allow`` header, and the
#   ``Allow`` of an OPTIONS answer lists exactly the path's methods.


@dataclass(frozen=True)
class Excuse:
    """A refusal of schema-valid requests that is right: ``status`` answered to
    ``operations`` ("*": any), with this error ``code``, ``details.field`` and a ``detail``
    key in ``details`` when they are given; ``reason`` says why the document cannot say it."""

    operations: tuple[str, ...]
    status: int
    reason: str
    code: str | None = None
    field: str | None = None
    detail: str | None = None


PASSWORDS = (
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/password",
    "POST /api/v1/admin/users",
    "PUT /api/v1/admin/users/{username}/password",
)
WORKFLOW_BODIES = ("POST /api/v1/workflows", "POST /api/v1/workflows/validate")
RESOURCES = ("PUT /api/v1/runs/{run_id}/resources", "POST /api/v1/runs", "POST /api/v1/graphs")
EXCUSED = (
    Excuse(
        PASSWORDS,
        422,
        "the password policy (common passwords, zxcvbn's strength, not the username)",
        code="password_rejected",
    ),
    Excuse(
        ("POST /api/v1/auth/password",),
        422,
        "whether the current password is right is state",
        field="current_password",
    ),
    Excuse(
        ("POST /api/v1/auth/tokens",),
        422,
        "the longest lifetime is a setting (api_token_max_days)",
        field="expires_in_days",
    ),
    Excuse(RESOURCES, 422, "cpus are at most the server's slots, a setting", field="cpus"),
    Excuse(RESOURCES, 422, "slurm is offered where a setting says so", field="executor"),
    Excuse(
        RESOURCES,
        422,
        "sbatch options are for runs on Slurm, and only those a setting allows "
        "(slurm_user_options)",
        field="slurm_options",
    ),
    Excuse(
        (
            "PUT /api/v1/runs/{run_id}/files/{input}",
            "DELETE /api/v1/runs/{run_id}/files/{input}",
            "GET /api/v1/runs/{run_id}/files/{input}",
        ),
        422,
        "a file name is at most 255 UTF-8 bytes (the file system's limit): the document can "
        "only count characters",
        field="filename",
    ),
    Excuse(
        ("PUT /api/v1/secrets/{name}",),
        422,
        "a secret's value is at most 65,536 UTF-8 bytes: the document can only count characters",
        field="value",
    ),
    Excuse(
        ("*",),
        422,
        "a webhook URL's host, port and addresses are checked (DNS, the "
        "webhook_allow_networks setting); the document gives its shape",
        code="url_refused",
    ),
    Excuse(
        WORKFLOW_BODIES,
        422,
        "a workflow's content is checked against the workflow format (or CWL): YAML text "
        "and archives are opaque to JSON Schema",
        code="invalid_workflow",
    ),
    Excuse(WORKFLOW_BODIES, 422, "an archive's content", code="archive_rejected"),
    Excuse(WORKFLOW_BODIES, 422, "a CWL document's content", code="cwl_unsupported"),
    Excuse(WORKFLOW_BODIES, 422, "a CWL document's content", field="workflow"),
    Excuse(
        ("POST /api/v1/graphs",),
        422,
        "submit: true checks the graph as a whole (nodes, edges, ports, cycles, its "
        "workflows' inputs), as POST /graphs/{graph_id}/submit does",
        detail="errors",
    ),
    Excuse(
        ("POST /api/v1/runs/{run_id}/inputs/{port}",),
        422,
        "an NDJSON body is text to the document: that each line is JSON is beyond it",
        field="body",
    ),
    Excuse(
        ("POST /ga4gh/wes/v1/runs",),
        400,
        "RunWorkflow's fields hold JSON documents and name attachments, stored workflows "
        "and their inputs",
    ),
    Excuse(
        ("GET /ga4gh/wes/v1/runs",),
        400,
        "a page_token the server did not give: opaque, like an unknown id",
    ),
)


def _excuse(case: Any, response: Any) -> Excuse | None:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    found = error.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    for excuse in EXCUSED:
        if (
            ("*" in excuse.operations or case.operation.label in excuse.operations)
            and response.status_code == excuse.status
            and excuse.code in (None, error.get("code"))
            and excuse.field in (None, details.get("field"))
            and (excuse.detail is None or excuse.detail in details)
        ):
            return excuse
    return None


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, but for the refusals EXCUSED explains."""
    if _excuse(case, response) is not None:
        return None
    return positive_data_acceptance(ctx, response, case)


# Bodies of these media types are text: a drawn value of any type is sent as text, which
# is what the document asks for.
TEXT_BODIES = ("application/yaml", "application/x-ndjson")


def _negative_only_at(case: Any) -> set[str]:
    return {str(loc.value) for loc, c in case.meta.components.items() if c.mode.is_negative}


def _types(schema: dict[str, Any]) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for branch in schema.get("anyOf", []):
        found |= _types(branch)
    return found


def _read(text: str, types: set[str]) -> Any:
    """A query value as the server reads it."""
    try:
        number = float(text)
    except ValueError:
        number = None
    if "integer" in types and number is not None and number.is_integer():
        return int(number)
    if "number" in types and number is not None and math.isfinite(number):
        return number
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    return text


def _query_valid_as_sent(case: Any, response: Any) -> bool:
    """The query as the server reads it is valid: a scalar drawn for an array parameter
    goes on the wire as one item (``?type=false`` is ``type: ["false"]``), an array drawn
    for a number as several values of which the server reads one, a value that encodes to
    nothing is not sent at all."""
    sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
    declared = SPEC["paths"][case.path].get(case.method.lower(), {}).get("parameters", [])
    for param in declared:
        if param["in"] != "query":
            continue
        if param["name"] not in sent:
            if param.get("required"):
                return False
            continue
        texts, types = sent[param["name"]], _types(param["schema"])
        value = texts if "array" in types else _read(texts[-1], types)
        schema = {**param["schema"], "components": SPEC["components"]}  # for its $refs
        if not Draft202012Validator(schema).is_valid(value):
            return False
    return True


def _invalid_only_before_sending(case: Any, response: Any) -> bool:
    """What made the request invalid did not survive serialization."""
    if case.meta is None:
        return False
    negative = _negative_only_at(case)
    if negative == {"body"}:
        return case.media_type in TEXT_BODIES
    if negative == {"query"}:
        return _query_valid_as_sent(case, response)
    return False


def negative_data_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """negative_data_rejection, but for requests that were valid as sent."""
    if _invalid_only_before_sending(case, response):
        return None
    return negative_data_rejection(ctx, response, case)


AGREEMENT = [
    not_a_server_error,
    positive_data_accepted,
    negative_data_rejected,
    unsupported_method,
    allow_header_conformance,
]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, server: LiveServer, fuzz_token: str) -> None:
    if case.path == "/api/v1/auth/logout":
        return  # it would end the session every other case uses
    case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {fuzz_token}"},
        checks=AGREEMENT,
    )


# -- what the fuzzing found, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/runs", "GET, POST"),
        ("OPTIONS", "/api/v1/runs/run_1", "DELETE, GET"),
        ("POST", "/api/v1/admin/users/someone/password", "PUT"),
        ("GET", "/api/v1/workflows/wf@1/visibility", "PUT"),
        ("DELETE", "/api/v1/workflows/alice/wf@1/trusted", "PUT"),
        ("GET", "/api/v1/workflows/validate", "POST"),
        ("PUT", "/ga4gh/wes/v1/runs", "GET, POST"),
    ],
)
def test_a_405_names_every_method_of_the_path(
    server: LiveServer, fuzz_token: str, method: str, path: str, allow: str
) -> None:
    with server.client(fuzz_token) as c:
        r = c.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allow, (r.status_code, r.text)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/runs?cursor=garbage", "cursor"),
        ("/api/v1/graphs?cursor=run_0000000000000000000000000a", "cursor"),
        ("/api/v1/workflows?before=garbage", "before"),
        ("/api/v1/webhooks?before=garbage", "before"),
        ("/api/v1/webhooks/wh_1/deliveries?before=garbage", "before"),
    ],
)
def test_a_cursor_no_page_gave_is_a_400_naming_it(
    server: LiveServer, fuzz_token: str, path: str, field: str
) -> None:
    with server.client(fuzz_token) as c:
        r = c.get(path)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_cursor" and error["details"]["field"] == field


def test_values_of_another_json_type_are_refused(server: LiveServer, fuzz_token: str) -> None:
    with server.client(fuzz_token) as c:
        r = c.post("/api/v1/auth/tokens", json={"name": "bool", "expires_in_days": True})
        assert r.status_code == 422 and "expires_in_days" in r.text
        r = c.post("/api/v1/auth/tokens", json={"name": "str", "expires_in_days": "7"})
        assert r.status_code == 422
        r = c.post("/api/v1/graphs", json={"submit": 0})
        assert r.status_code == 422 and "submit" in r.text
        r = c.get("/api/v1/runs", params={"created_after": "0.5"})
        assert r.status_code == 422 and "created_after" in r.text
        r = c.post("/api/v1/auth/tokens", json={"name": "float", "expires_in_days": 7.0})
        assert r.status_code == 201, r.text  # 7.0 is the integer 7, as in JSON Schema
        page = c.get("/api/v1/runs", params={"created_after": "2020-01-31T12:00:00Z"})
        assert page.status_code == 200, page.text
