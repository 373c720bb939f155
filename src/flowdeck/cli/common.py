"""What every command shares: error reporting, exit codes, reading passwords."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from flowdeck.errors import ConfigError, FlowdeckError

if TYPE_CHECKING:
    from flowdeck.config import Settings

EXIT_ERROR = 1
EXIT_USAGE = 2  # also: invalid configuration

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML configuration file (env FLOWDECK_CONFIG)",
        dir_okay=False,
    ),
]


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn flowdeck and API errors into one line on stderr and a non-zero exit code."""
    try:
        yield
    except ConfigError as exc:
        fail(exc.message, EXIT_USAGE)
    except FlowdeckError as exc:
        fail(exc.message)
    except Exception as exc:
        # the SDK's errors, if it was imported (only then can they be raised): the
        # CLI's start-up imports no SDK
        sdk_errors = sys.modules.get("flowdeck.client.errors")
        if sdk_errors is not None and isinstance(exc, sdk_errors.ApiError):
            fail(exc.message)
        raise


def settings_from(config: Path | None, **overrides: object) -> Settings:
    from flowdeck.config import load_settings  # the server's commands only

    with reported():
        return load_settings(config, **overrides)
    raise AssertionError("unreachable")  # pragma: no cover


def read_password(prompt: str = "Password", *, confirm: bool = False) -> str:
    """Prompt on a terminal; read one line from stdin otherwise."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("no password on standard input")
        return line
    password = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"{prompt} (again): ") != password:
        fail("the two passwords differ")
    return password


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorator form of :func:`reported`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        with reported():
            fn(*args, **kwargs)

    return wrapper
