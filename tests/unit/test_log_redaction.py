"""Credentials never reach a log line: query parameters, Authorization values, tokens."""

from __future__ import annotations

import json
import logging

import pytest
from pythonjsonlogger.json import JsonFormatter
from uvicorn.logging import AccessFormatter

from flowdeck.logs import JSON_FIELDS, install_redaction, redact

TOKEN = "fdk_Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"GET /api/v1/auth/me?access_token={TOKEN} HTTP/1.1", TOKEN, "/api/v1/auth/me?"),
        ("/runs?limit=5&token=s3cr3t-value&x=1", "s3cr3t-value", "limit=5&"),
        ("/login?next=%2F&password=hunter2hunter2", "hunter2hunter2", "next=%2F"),
        ("/x?api_key=k3y-v4lue;y=2", "k3y-v4lue", "y=2"),
        ("/x?client_secret=abc123xyz", "abc123xyz", "/x?client_secret="),
        (f"Authorization: Bearer {TOKEN}", TOKEN, "Authorization: Bearer"),
        ("{'authorization': 'Basic dXNlcjpzZWNyZXQ='}", "dXNlcjpzZWNyZXQ=", "'authorization'"),
        ('"Authorization": "Bearer abc.def.ghi"', "abc.def.ghi", '"Authorization"'),
        (f"token {TOKEN} was refused", TOKEN, "was refused"),
        ("secret whsec_c2VjcmV0c2VjcmV0c2VjcmV0MTIzNA==", "c2VjcmV0c2VjcmV0", "secret whsec_"),
        ("postgresql+psycopg://flow:pgpass123@db:5432/x", "pgpass123", "flow:"),
        ("cookie flowdeck_session=fdk_cookievalue123456789", "cookievalue", "flowdeck_session="),
    ],
)
def test_redact_removes_the_secret_and_keeps_the_rest(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out and "[REDACTED]" in out and kept in out, out


def test_ordinary_lines_are_unchanged() -> None:
    for line in [
        '127.0.0.1:5000 - "GET /api/v1/runs?limit=5&state=running HTTP/1.1" 200',
        "step t of run_0123 exited with code 3",
        "tokens are not accepted in URLs (query parameter 'access_token')",
    ]:
        assert redact(line) == line


def records(logger: logging.Logger) -> list[logging.LogRecord]:
    install_redaction()
    install_redaction()  # once is enough; twice changes nothing
    try:
        raise RuntimeError(f"could not reach http://hook.example/?token={TOKEN}")
    except RuntimeError as exc:
        failed = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "delivery failed", (), (type(exc), exc, None)
        )
    plain = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "GET %s as %r",
        (f"/x?access_token={TOKEN}", 7),
        None,
    )
    access = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/runs?access_token={TOKEN}", "1.1", 422),
        None,
    )
    return [failed, plain, access]


@pytest.mark.parametrize("fmt", ["text", "json", "uvicorn"])
def test_every_log_line_is_redacted_in_every_format(fmt: str) -> None:
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(JSON_FIELDS)
    elif fmt == "uvicorn":
        formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s')
    else:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    made = records(logging.getLogger("flowdeck.test"))
    if fmt == "uvicorn":
        made = made[2:]
    lines = [formatter.format(r) for r in made]
    text = "\n".join(lines)
    assert TOKEN not in text and "[REDACTED]" in text, text
    if fmt == "json":
        assert all(json.loads(line) for line in lines)
    if fmt != "uvicorn":
        assert "delivery failed" in lines[0] and "RuntimeError" in lines[0]
        assert "as 7" in lines[1]
    assert "GET /api/v1/runs?access_token=[REDACTED]" in lines[-1]
