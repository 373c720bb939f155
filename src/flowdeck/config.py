"""The settings object: ``FLOWDECK_*`` environment variables over an optional TOML file.

Precedence, highest first: command-line options, environment variables, the TOML file
(``--config`` or ``FLOWDECK_CONFIG``), defaults.  :func:`load_settings` turns every invalid
value into one :class:`~flowdeck.errors.ConfigError` naming the setting and its variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from flowdeck.errors import ConfigError

ENV_PREFIX = "FLOWDECK_"
_toml_file: ContextVar[Path | None] = ContextVar("flowdeck_toml_file", default=None)

RegistrationMode = Literal["open", "approval", "closed"]


class Settings(BaseSettings):
    """Every setting of the flowdeck server."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(
        Path("flowdeck-data"), description="Directory for the database and run files."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database; default: SQLite file in the data "
        "directory. PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    auto_migrate: bool = Field(True, description="Upgrade the database schema at start.")
    db_timeout_s: float = Field(
        30,
        ge=1,
        le=3600,
        description="PostgreSQL: a connection attempt, or a connection held by one "
        "transaction, that takes longer is cut off (the call answers 503 "
        "store_unavailable): a hung database server cannot hold requests or the scheduler.",
    )
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite synchronous level (WAL mode): NORMAL survives a crash of "
        "flowdeck; FULL also survives power loss.",
    )
    registration: RegistrationMode = Field(
        "approval",
        description="Who may register: open, approval (an admin approves), closed.",
    )
    admin_username: str | None = Field(
        None, description="On a start with no admin: create this admin account."
    )
    admin_password: SecretStr | None = Field(
        None, description="Password of that first admin (prefer admin_password_file)."
    )
    admin_password_file: Path | None = Field(
        None, description="File holding the password of that first admin."
    )
    session_ttl_seconds: int = Field(
        12 * 3600, ge=60, description="Lifetime of a login session token."
    )
    api_token_max_days: int = Field(
        365, ge=1, description="Longest lifetime allowed for a named API token."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins per account within the window before throttling."
    )
    login_max_failures_per_address: int = Field(
        20, ge=1, description="Failed logins per client address within the window."
    )
    login_window_seconds: int = Field(
        900, ge=1, description="Window over which failed logins are counted."
    )
    login_lockout_seconds: int = Field(
        900, ge=1, description="How long logins are refused once throttled."
    )
    argon2_time_cost: int = Field(2, ge=2, description="Argon2id iterations (OWASP: >= 2).")
    argon2_memory_kib: int = Field(
        19456, ge=19456, description="Argon2id memory in KiB (OWASP: >= 19456)."
    )
    argon2_parallelism: int = Field(1, ge=1, le=16, description="Argon2id lanes.")
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_archive_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Largest workflow archive upload, in bytes."
    )
    archive_max_unpacked_bytes: int = Field(
        500 * 1024 * 1024, ge=1024, description="Largest total size of an archive's content."
    )
    archive_max_members: int = Field(
        10_000, ge=1, description="Most files and directories in a workflow archive."
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs, sent to the "
        "global providers (run under opentelemetry-instrument, or configure them); off, "
        "requests skip its checks.",
    )
    token_cache_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Seconds a checked token is trusted without reading the database (0: never). "
        "Revocations through this server apply at once; through another server or the CLI, "
        "within this time.",
    )
    http_threads: int = Field(
        8, ge=1, le=1000, description="Threads serving blocking request work (database)."
    )
    slots: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Machine-wide CPU slots shared by all runs' steps (default: the CPUs).",
    )
    scheduler_window: int = Field(
        1000,
        ge=1,
        le=10_000_000,
        description="Queued runs of each user the scheduler holds in memory, at most; the "
        "rest wait in the database and are read in admission order as these start.",
    )
    stop_grace_s: float = Field(
        10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a run stops."
    )
    fairshare_half_life_s: float = Field(
        3600.0,
        gt=0,
        description="Half-life of a user's recent usage (CPU-slot-seconds) in fair share: "
        "usage this long ago counts half.",
    )
    quota_max_active_runs: int | None = Field(
        None, ge=1, description="Most running runs per user (more wait queued; none: no limit)."
    )
    quota_max_cpus: float | None = Field(
        None, gt=0, description="Most CPU slots one user's steps hold at once (none: no limit)."
    )
    quota_max_stored_bytes: int | None = Field(
        None,
        ge=0,
        description="Most bytes of uploads and products per user; an upload past it is "
        "refused (none: no limit).",
    )
    max_upload_bytes: int = Field(
        10 * 1024**3, ge=1024, description="Largest file staged for a run, in bytes."
    )
    data_root: Path | None = Field(
        None, description="Directory whose files runs may reference read-only."
    )
    inprocess_workers: int = Field(
        2, ge=1, le=256, description="Worker processes of the in-server executor."
    )
    max_run_walltime_s: float | None = Field(
        None, gt=0, description="Longest walltime a run may ask for (none: no limit)."
    )
    max_memory_bytes: int | None = Field(
        None, gt=0, description="Most memory a run may ask for (none: no limit)."
    )
    max_step_file_bytes: int | None = Field(
        None, gt=0, description="Largest file a step may write (RLIMIT_FSIZE; none: no limit)."
    )
    stream_buffer_records: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Records of a stream input stored but not yet read by its step, at most "
        "(a push past it is refused with 429).",
    )
    tls_cert: Path | None = Field(None, description="TLS certificate file (PEM).")
    tls_key: Path | None = Field(None, description="TLS private key file (PEM).")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies trusted for X-Forwarded-For/-Proto (comma list, or *).",
    )
    lease_ttl_s: float = Field(
        30,
        ge=1,
        le=3600,
        description="A server instance that misses heartbeats this long loses its runs "
        "to another instance (renewed every third of it).",
    )
    host_id: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="The host name this server gives the other servers of its database "
        "(default: the machine's). Servers of one host re-adopt each other's local steps; "
        "for tests of several hosts on one machine.",
    )
    drain: bool = Field(
        False,
        description="On SIGTERM, let running steps finish (and start no new ones) before "
        "exiting; by default they keep running for the next start to re-adopt.",
    )
    scheduler_process: bool = Field(
        False,
        description="Run the scheduler in a process of its own beside the one that serves "
        "HTTP, each with its own interpreter lock: for machines with cores to spare (on two "
        "cores it takes CPU time from run submissions).",
    )
    supervisor_idle_s: float = Field(
        300,
        gt=0,
        description="The step supervisor exits after this long with no server and no step.",
    )
    retention_files_days: float | None = Field(
        None,
        gt=0,
        description="Ended runs (not kept) lose their folder (work, logs, products, staged "
        "inputs) this many days after they ended; the record, events and outputs stay. "
        "Unset: kept.",
    )
    retention_runs_days: float | None = Field(
        None,
        gt=0,
        description="Ended runs (not kept) are deleted, files, record and events, this many "
        "days after they ended. Unset: kept.",
    )
    retention_events_days: float | None = Field(
        None,
        gt=0,
        description="Events older than this many days are deleted, except those of runs "
        "still stored (a run's events go with it). Unset: kept.",
    )
    retention_webhook_days: float | None = Field(
        None,
        gt=0,
        description="Finished webhook deliveries (and their attempts) older than this many "
        "days are deleted. Unset: kept.",
    )
    retention_audit_days: float | None = Field(
        None, gt=0, description="Audit entries older than this many days are deleted."
    )
    retention_interval_s: float = Field(
        3600.0,
        gt=0,
        description="How often the server purges what retention lets go (one server of a "
        "database at a time).",
    )
    retention_batch: int = Field(
        500,
        ge=1,
        le=100000,
        description="Rows (or runs) deleted per transaction by a purge: short transactions.",
    )
    sse_keepalive_s: float = Field(
        15, gt=0, le=300, description="Seconds between keep-alive comments on event streams."
    )
    sse_buffer_events: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Events buffered for one stream client before it is cut off as too slow.",
    )
    sse_send_timeout_s: float = Field(
        30, gt=0, description="A stream client that accepts nothing for this long is cut off."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or as JSON objects carrying the request id and the run id.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that may read GET /metrics besides admins (for a "
        "Prometheus scraper; at least 16 characters).",
        min_length=16,
    )
    webhook_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks (comma list of CIDRs) webhooks may be sent to although they "
        "are loopback, private, link-local or otherwise not public.",
    )
    webhook_timeout_s: float = Field(
        15.0, gt=0, le=600, description="Timeout of one webhook delivery attempt, in seconds."
    )
    webhook_max_attempts: int = Field(
        40, ge=1, le=1000, description="Attempts of a webhook delivery before giving up."
    )
    webhook_max_age_s: float = Field(
        86400.0, gt=0, description="No retry of a webhook delivery after this many seconds."
    )
    webhook_retry_base_s: float = Field(
        5.0, gt=0, description="First retry delay of a webhook delivery (doubles each time)."
    )
    webhook_retry_max_s: float = Field(
        3600.0, gt=0, description="Longest delay between two webhook delivery attempts."
    )
    webhook_concurrency: int = Field(
        16, ge=1, le=1000, description="Webhook deliveries in flight at once."
    )
    secret_key_file: Path | None = Field(
        None,
        description="File of the keys encrypting users' secrets and webhook signing secrets "
        "at rest, one Fernet key per line (the first encrypts, all decrypt); default: "
        "secret.key in the data directory, created with mode 0600 at the first start. Back "
        "it up apart from the database.",
    )
    webhook_secret_overlap_s: float = Field(
        86400.0,
        ge=0,
        description="After a secret rotation: how long deliveries are also signed with the "
        "previous secret.",
    )

    sandbox: Literal["bwrap", "off"] = Field(
        "bwrap",
        description="How local steps are isolated: bwrap (bubblewrap namespaces, see the "
        "threat model in docs/operations.md) or off (unsafe: a step sees and may do what the "
        "server may; logged as a warning at every start).",
    )
    sandbox_scope: Literal["run", "step"] = Field(
        "run",
        description="run: a run of more than one step gets one sandbox that its steps start "
        "in (each with its own uid, its own process group and limits; ~0 ms per step); step: "
        "every step gets a bwrap of its own (its run's other steps invisible to it; 3-9 ms "
        "more per step).",
    )
    cwl_warm_workers: int = Field(
        1,
        ge=0,
        le=16,
        description="Warm cwltool workers of the local executor (0: off): a CWL step then "
        "starts as a fork of a sandboxed process that imported cwltool once, in a view of "
        "its own run's folders only, instead of paying ~0.65 s of CPU to start cwltool. "
        "One serves any number of concurrent runs (each is its own fork); more are only used "
        "by steps whose sandboxes differ. Needs a root server with step_uids; the first CWL "
        "step starts the worker (and starts cold).",
    )
    step_cgroups: Literal["auto", "off"] = Field(
        "auto",
        description="auto: where a cgroup v2 hierarchy is writable to the server (root, or a "
        "delegated subtree), each attempt gets a cgroup: its processes are killed together "
        "when it ends, and memory.max/pids.max bound it where those controllers are "
        "available; off: rlimits only.",
    )
    step_network: Literal["off", "allowed"] = Field(
        "off",
        description="off: no step has network (loopback only); allowed: steps asking for "
        "resources.network get outbound access through pasta (never the host's loopback).",
    )
    step_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["PATH"],
        description="Variables (comma list) of the server's environment that steps get; "
        "nothing else of it reaches a step.",
    )
    step_user: str = Field(
        "flowdeck-step",
        description="Server running as root: the user whose group steps run with (and whose "
        "uid they get when step_uids is empty); create it as docs/install.md shows.",
    )
    step_uids: str = Field(
        "900000-900999",
        description="Server running as root: the uids (a range first-last) given to running "
        "attempts, one each, so that the process limit and signals stay within one attempt; "
        "empty: every step runs as step_user.",
    )
    step_max_processes: int | None = Field(
        1024,
        ge=1,
        description="RLIMIT_NPROC of a sandboxed step: processes (threads count) its uid may "
        "have (per attempt as root with step_uids; else shared by all of the user's "
        "processes); not set with sandbox = off (the attempt's cgroup has pids.max).",
    )
    sandbox_extra_ro: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="More directories (comma list) every sandboxed step may read: tools "
        "installed outside /usr that steps call (conda, pyenv, /opt/...). Every step of every "
        "user can read them.",
    )
    sandbox_extra_rw: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Admin and tests only: more directories (comma list) every sandboxed "
        "step may write to. Weakens the sandbox.",
    )

    default_executor: Literal["local", "slurm", "dask"] = Field(
        "local",
        description="The executor of runs that do not choose one (resources.executor): "
        "local, slurm (needs slurm = true) or dask (needs dask = true).",
    )
    slurm: bool = Field(
        False,
        description="Offer the slurm executor: steps of runs that choose it become Slurm "
        "batch jobs submitted by the server's user (docs/slurm.md). The data directory must "
        "be on a file system the compute nodes share (checked at start).",
    )
    slurm_bin_dir: Path | None = Field(
        None, description="Directory of sbatch, squeue, sacct and scancel; default: PATH."
    )
    slurm_partition: str | None = Field(None, description="sbatch --partition of every job.")
    slurm_account: str | None = Field(None, description="sbatch --account of every job.")
    slurm_qos: str | None = Field(None, description="sbatch --qos of every job.")
    slurm_job_name: str = Field(
        "flowdeck",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The name of every job of this deployment (one squeue finds them all): "
        "give each deployment sharing a cluster account its own.",
    )
    slurm_user_options: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="sbatch options (long names, without the dashes: constraint, gres, "
        "mail-type, ...) a run may add to its jobs (resources.slurm_options); any other is "
        "refused with 422. Those flowdeck sets itself (job-name, comment, export, chdir, "
        "output, cpus-per-task, mem, time, ...) cannot be allowed.",
    )
    slurm_poll_s: float = Field(
        2.0, ge=0.1, le=300, description="Seconds between two squeue calls (one per poll)."
    )

    dask: bool = Field(
        False,
        description="Offer the dask executor: steps of runs that choose it become tasks on "
        "the Dask cluster of dask_scheduler (docs/dask.md). The data directory must be on a "
        "file system the workers share, at the same path (checked at start).",
    )
    dask_scheduler: str | None = Field(
        None,
        pattern=r"^(tcp|tls)://[^\s/]+$",
        description="The Dask scheduler's address: tcp://host:8786, or tls://host:8786 (then "
        "with dask_tls_*). Runs whose steps use secrets are refused unless it is tls://.",
    )
    dask_tls_ca_file: Path | None = Field(
        None, description="The CA certificate the scheduler's certificate is checked with."
    )
    dask_tls_cert: Path | None = Field(
        None, description="The server's client certificate for the Dask scheduler (PEM)."
    )
    dask_tls_key: Path | None = Field(
        None, description="The key of dask_tls_cert (PEM), if not in that file."
    )
    dask_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The users (comma list of usernames) whose runs may use the dask "
        "executor; empty: every user. Admins always may.",
    )
    dask_worker_user: str | None = Field(
        None,
        description="The user the Dask workers run as (never root). A server running as "
        "root hands each attempt's folder and logs to it, since the worker writes them.",
    )
    dask_poll_s: float = Field(
        1.0, ge=0.1, le=300, description="Seconds between two looks at the Dask scheduler."
    )

    @field_validator("slurm_user_options")
    @classmethod
    def _sbatch_names(cls, value: list[str]) -> list[str]:
        from flowdeck.executors.slurm_jobs import RESERVED_OPTIONS, SBATCH_OPTION

        for name in value:
            if not re.fullmatch(SBATCH_OPTION, name):
                raise ValueError(f"{name!r} is not an sbatch option's long name (e.g. gres)")
            if name in RESERVED_OPTIONS:
                raise ValueError(f"--{name} is set by flowdeck itself and cannot be allowed")
        return sorted(set(value))

    @field_validator(
        "step_env_passthrough",
        "sandbox_extra_ro",
        "sandbox_extra_rw",
        "slurm_user_options",
        "dask_users",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("step_uids")
    @classmethod
    def _check_uids(cls, value: str) -> str:
        from flowdeck.executors.sandbox import parse_uids

        parse_uids(value)
        return value

    @field_validator("data_dir", "data_root", "secret_key_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative to where flowdeck starts, made absolute once: every path handed to a
        step, a worker or a child process is absolute, whatever their working directory."""
        return None if value is None else Path(os.path.abspath(value.expanduser()))

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a network (CIDR like 10.1.0.0/16)") from exc
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.data_root is not None and not self.data_root.is_dir():
            raise ValueError(f"data_root: no such directory: {self.data_root}")
        if self.sandbox != "off":  # steps would see the database
            for name, paths in (
                ("data_root", [self.data_root]),
                ("sandbox_extra_ro", self.sandbox_extra_ro),
                ("sandbox_extra_rw", self.sandbox_extra_rw),
            ):
                for path in paths:
                    if path is not None and self.data_dir.is_relative_to(path):
                        raise ValueError(f"{name} must not hold data_dir: {path}")
        for name in ("tls_cert", "tls_key", "admin_password_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if self.default_executor == "slurm" and not self.slurm:
            raise ValueError("default_executor = slurm needs slurm = true")
        if self.default_executor == "dask" and not self.dask:
            raise ValueError("default_executor = dask needs dask = true")
        if self.dask and not self.dask_scheduler:
            raise ValueError("dask = true needs dask_scheduler (tcp://host:8786 or tls://...)")
        tls = [self.dask_tls_ca_file, self.dask_tls_cert, self.dask_tls_key]
        if any(tls) and not (self.dask_scheduler or "").startswith("tls://"):
            raise ValueError("dask_tls_* are for a tls:// dask_scheduler")
        for name in ("dask_tls_ca_file", "dask_tls_cert", "dask_tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if self.dask_worker_user is not None:
            import pwd

            try:
                entry = pwd.getpwnam(self.dask_worker_user)
            except KeyError:
                name = self.dask_worker_user
                raise ValueError(f"dask_worker_user: no such user: {name}") from None
            if entry.pw_uid == 0:
                raise ValueError("dask_worker_user must not be root")
        if self.admin_password is not None and self.admin_password_file is not None:
            raise ValueError("give admin_password or admin_password_file, not both")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # -- derived values -------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'flowdeck.db').absolute()}"

    @property
    def resolved_secret_key_file(self) -> Path:
        if self.secret_key_file is not None:
            return self.secret_key_file
        return self.data_dir / "secret.key"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def first_admin_password(self) -> str | None:
        if self.admin_password is not None:
            return self.admin_password.get_secret_value()
        if self.admin_password_file is not None:
            return self.admin_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        return None


def env_var(name: str) -> str:
    """The environment variable of setting ``name``."""
    return ENV_PREFIX + name.upper()


def option_name(name: str) -> str:
    """The ``flowdeck serve`` option of setting ``name``."""
    return "--" + name.replace("_", "-")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; raise :class:`ConfigError` naming each invalid one."""
    if config_file is None and os.environ.get("FLOWDECK_CONFIG"):
        config_file = Path(os.environ["FLOWDECK_CONFIG"])
    if config_file is not None and not config_file.is_file():
        raise ConfigError(
            f"invalid setting config ({env_var('config')}): no such file: {config_file}"
        )
    token = _toml_file.set(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            if loc and loc[0] in Settings.model_fields:
                name = loc[0]
                problems.append(
                    f"invalid setting {name} ({env_var(name)}, {option_name(name)}): {err['msg']}"
                )
            elif loc:
                problems.append(f"unknown setting {'.'.join(loc)} in {config_file}")
            else:
                problems.append(f"invalid settings: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(problems), problems=problems) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML file
        raise ConfigError(f"cannot read the configuration file {config_file}: {exc}") from exc
    finally:
        _toml_file.reset(token)
