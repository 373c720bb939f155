"""``flowdeck serve``: one option per setting, generated from the settings object."""

from __future__ import annotations

import gc
import inspect
import logging
from pathlib import Path
from typing import Any

import typer

from flowdeck.cli.common import EXIT_USAGE, err, fail, out, reported
from flowdeck.cli.lazy import help_of, plain_app
from flowdeck.config import Settings, env_var, load_settings, option_name

_SERVE_MORE = """

Each option can also be set by its FLOWDECK_* environment variable or in the TOML file; an
invalid value stops start-up with exit code 2."""


def _serve(config: Path | None = None, **options: Any) -> None:
    with reported():
        settings = load_settings(config, **options)
    run_server(settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from flowdeck.api import create_app
    from flowdeck.services.context import build_context

    with reported():
        ctx = build_context(settings)
        ctx.claim_server()  # SQLite: the only server of its database
        app = create_app(settings, ctx, close_on_shutdown=True)
        with ctx.store.read() as tx:
            has_admin = tx.count_admins() > 0
    scheme = "https" if settings.tls else "http"
    out.print(f"flowdeck listening on [bold]{scheme}://{settings.host}:{settings.port}[/]")
    out.print(f"database: {_redacted(settings.resolved_database_url)}")
    out.print(f"data directory: {settings.data_dir.absolute()}")
    if not has_admin:
        out.print(
            "no admin yet: create one with [bold]flowdeck admin create-user --admin NAME[/]"
            " (or set FLOWDECK_ADMIN_USERNAME and FLOWDECK_ADMIN_PASSWORD_FILE)"
        )
    extra: dict[str, Any] = {}
    if settings.log_format == "json":
        from flowdeck.logs import log_config

        extra["log_config"] = log_config(settings.log_level, settings.log_format)
    else:
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
        )
    # What start-up made (modules, the app, its routes and models) lives as long as the
    # server: out of the collector's sight, each full collection walks only what requests
    # made since (a few ms less per collection under load).
    gc.collect()
    gc.freeze()
    try:
        uvicorn.run(
            app,
            **extra,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            server_header=False,
            # Long polls, event streams and WebSockets must not hold a shutdown for ever.
            timeout_graceful_shutdown=10,
        )
    finally:
        ctx.close()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _help(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.default
    shown = "" if default is None else f"; default {default}"
    return f"{field.description} (env {env_var(name)}{shown})"


def _metavar(name: str) -> str:
    annotation = str(Settings.model_fields[name].annotation)
    for word, metavar in (
        ("Literal", "CHOICE"),
        ("int", "INT"),
        ("bool", "BOOL"),
        ("Path", "PATH"),
        ("Secret", "SECRET"),
    ):
        if word in annotation:
            return metavar
    return "TEXT"


def build_serve_command() -> Any:
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None,
                "--config",
                help="TOML configuration file (env FLOWDECK_CONFIG)",
                dir_okay=False,
            ),
            annotation=Path | None,
        )
    ]
    for name, field in Settings.model_fields.items():
        if field.annotation is bool:  # a flag: --drain / --no-drain
            opt = option_name(name)
            option = typer.Option(
                None, f"{opt}/--no-{opt.removeprefix('--')}", help=_help(name), show_default=False
            )
            annotation: Any = bool | None
        else:
            option = typer.Option(
                None,
                option_name(name),
                help=_help(name),
                show_default=False,
                metavar=_metavar(name),
            )
            annotation = str | None
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )

    def serve(**kwargs: Any) -> None:
        _serve(**kwargs)

    serve.__doc__ = help_of("serve") + _SERVE_MORE

    serve.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return serve


serve_app = plain_app()  # loaded by flowdeck.cli.lazy when `serve` is used
serve_app.command("serve", help=help_of("serve") + _SERVE_MORE)(build_serve_command())

__all__ = ["EXIT_USAGE", "build_serve_command", "err", "fail", "run_server", "serve_app"]
