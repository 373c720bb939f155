"""Validate WES responses against the GA4GH WES 1.1 OpenAPI document (bundled with the
tests, with the service-info schema it refers to by URL)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

GA4GH = Path(__file__).parent / "data" / "ga4gh"
WES_DOC = "urn:ga4gh:wes-1.1.0"
SERVICE_INFO_URL = (
    "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
)
PREFIX = "/ga4gh/wes/v1"


@functools.cache
def _documents() -> tuple[dict[str, Any], Registry]:
    wes = yaml.safe_load((GA4GH / "ga4gh-wes-1.1.0.openapi.yaml").read_text())
    info = yaml.safe_load((GA4GH / "ga4gh-service-info-1.0.0.yaml").read_text())
    registry: Registry = Registry().with_resources(
        [
            (WES_DOC, Resource.from_contents(wes, default_specification=DRAFT7)),
            (SERVICE_INFO_URL, Resource.from_contents(info, default_specification=DRAFT7)),
        ]
    )
    return wes, registry


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    wes, _ = _documents()
    rel = path.split("?", 1)[0].removeprefix(PREFIX)
    for template, ops in wes["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, rel) and method.lower() in ops:
            return template, ops[method.lower()]
    raise AssertionError(f"{method} {path} is not an operation of the WES document")


def check(response: httpx.Response) -> Any:
    """Assert that a WES response is one the document allows (status and body)."""
    template, op = _operation(response.request.method, response.request.url.path)
    status = response.status_code
    responses = {str(k): v for k, v in op["responses"].items()}
    assert str(status) in responses, (
        f"{response.request.method} {template} answered {status}, not in the document: "
        f"{response.text[:300]}"
    )
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    _, registry = _documents()
    validator = Draft7Validator({"$ref": f"{WES_DOC}{schema['$ref']}"}, registry=registry)
    body = response.json()
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{template} {status}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )
    return body
