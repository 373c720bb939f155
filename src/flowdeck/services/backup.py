"""``flowdeck admin backup`` and ``restore``: one tar archive holding a consistent copy of
the database (SQLite's online backup API, or ``pg_dump`` in its custom format), then the
files of the data directory it references (run folders: products, logs, staged uploads;
workflow archives), and the secret key only when asked.

The database is copied first, then the files: every run that had ended when the database
was copied finds its files complete in the archive (an ended run's files no longer
change); the folders of runs still running are copied as they are at that moment (best
effort).  Nothing is deleted or changed in the data directory."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from flowdeck import clock, durable
from flowdeck.config import Settings
from flowdeck.errors import Conflict, InvalidInput

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/flowdeck.db"
PG_MEMBER = "database/flowdeck.pgdump"
KEY_MEMBER = "secret.key"
DATA = "data"
# what a data directory holds besides the files the database references: the database
# itself (copied through its API), locks, sockets and the supervisor's log, scratch space
_SKIP_NAMES = {"supervisor.sock", "supervisor.log", "supervisor.lock", "writer.lock"}
_SKIP_DIRS = {"tmp"}


@dataclasses.dataclass
class BackupReport:
    path: Path
    database: str  # "sqlite" or "postgresql"
    files: int = 0
    bytes: int = 0
    changing: int = 0  # files of running runs that changed while they were copied
    key_included: bool = False


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidInput("an in-memory SQLite database cannot be backed up")
    return Path(parsed.database)


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as pg_dump and pg_restore take it."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- backup -------------------------------------------------------------------------------
def backup(settings: Settings, dest: Path, *, include_key: bool = False) -> BackupReport:
    """Write the archive to ``dest`` (a temporary name beside it, renamed when complete)."""
    url = settings.resolved_database_url
    db_file = sqlite_path(url)
    report = BackupReport(dest, "sqlite" if db_file else "postgresql")
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="flowdeck-backup-") as scratch:
            copy = Path(scratch) / "db"
            if db_file is not None:
                _sqlite_copy(db_file, copy)
            else:
                _pg_dump(url, copy)
            gz = dest.name.endswith((".gz", ".tgz"))
            with tarfile.open(tmp, "w:gz") if gz else tarfile.open(tmp, "w") as tar:
                manifest = {
                    "format": FORMAT,
                    "database": report.database,
                    "created_at": clock.now().isoformat(),
                    "key_included": include_key,
                }
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                tar.add(copy, SQLITE_MEMBER if db_file else PG_MEMBER)
                skip = _skipped(settings, db_file)
                for path, name in _data_files(settings.data_dir, skip):
                    _add_file(tar, path, f"{DATA}/{name}", report)
                key = settings.resolved_secret_key_file
                if include_key and key.is_file():
                    tar.add(key, KEY_MEMBER)
                    report.key_included = True
        durable.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return report


def _sqlite_copy(db_file: Path, copy: Path) -> None:
    """A consistent copy of a live SQLite database: its online backup API, one step (the
    whole database under one read transaction)."""
    if not db_file.is_file():
        raise InvalidInput(f"no database at {db_file}")
    source = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _pg_tool(name: str, *args: str) -> None:
    """Run PostgreSQL's client tool ``name`` (pg_dump, pg_restore); its error, if any, as
    :class:`InvalidInput`."""
    tool = shutil.which(name)
    if tool is None:
        raise InvalidInput(f"{name} is not on the PATH: install PostgreSQL's client tools")
    done = subprocess.run(  # noqa: S603 (the tool found on the PATH, our own arguments)
        [tool, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise InvalidInput(f"{name} failed: {done.stderr.strip()[-500:]}")


def _pg_dump(url: str, copy: Path) -> None:
    _pg_tool("pg_dump", "--format=custom", "--no-owner", f"--file={copy}", libpq_url(url))


def _skipped(settings: Settings, db_file: Path | None) -> set[Path]:
    skip = {settings.resolved_secret_key_file.absolute()}
    if db_file is not None:
        base = db_file.absolute()
        for suffix in ("", "-wal", "-shm", "-journal", ".server.lock"):
            skip.add(Path(f"{base}{suffix}"))
    return skip


def _data_files(data_dir: Path, skip: set[Path]) -> Iterator[tuple[Path, str]]:
    """Regular files under the data directory, with their names relative to it."""
    root = data_dir.absolute()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if path in skip or (here == root and name in _SKIP_NAMES):
                continue
            yield path, path.relative_to(root).as_posix()


class _Exactly(io.RawIOBase):
    """``size`` bytes of a file that may change meanwhile: cut, or padded with zeros."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left, self.short = f, size, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            self.short = True
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        return data


def _add_file(tar: tarfile.TarFile, path: Path, name: str, report: BackupReport) -> None:
    try:
        f = path.open("rb")
    except OSError:  # gone meanwhile (a running step's scratch file)
        return
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o7777
        reader = _Exactly(f, st.st_size)
        tar.addfile(info, reader)
        changed = reader.short or os.fstat(f.fileno()).st_size != st.st_size
    report.files += 1
    report.bytes += st.st_size
    report.changing += changed


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(clock.now().timestamp()), 0o600
    tar.addfile(info, io.BytesIO(data))


# -- restore ------------------------------------------------------------------------------
@dataclasses.dataclass
class RestoreReport:
    database: str
    files: int = 0
    key_restored: bool = False
    key_path: Path | None = None


def restore(settings: Settings, src: Path) -> RestoreReport:
    """Unpack a backup into an empty data directory (and an empty database)."""
    data_dir = settings.data_dir.absolute()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise Conflict(f"the data directory {data_dir} is not empty: restore into an empty one")
    if not src.is_file():
        raise InvalidInput(f"no backup file {src}")
    url = settings.resolved_database_url
    db_file = sqlite_path(url)
    try:
        tar = tarfile.open(src)  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError:
        raise InvalidInput(f"{src} is not a flowdeck backup (not a tar archive)") from None
    with tar:
        manifest = _manifest(tar, src)
        kind = manifest["database"]
        target = "sqlite" if db_file else "postgresql"
        if kind != target:
            raise Conflict(
                f"the backup holds a {kind} database but database_url is {target}: restore "
                f"it as {kind}, then use flowdeck admin copy-store to move it"
            )
        if db_file is None:
            _require_empty_pg(url)
        report = RestoreReport(kind)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        members = [m for m in tar.getmembers() if m.name.startswith(f"{DATA}/") and m.isfile()]
        for member in members:
            member.name = member.name.removeprefix(f"{DATA}/")
        tar.extractall(data_dir, members, filter="data")
        report.files = len(members)
        with tempfile.TemporaryDirectory(prefix="flowdeck-restore-") as scratch:
            db_member = SQLITE_MEMBER if kind == "sqlite" else PG_MEMBER
            tar.extract(db_member, scratch, filter="data")
            dump = Path(scratch) / db_member
            if db_file is not None:
                if db_file.exists():
                    raise Conflict(f"a database already exists at {db_file}")
                db_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dump, db_file)
                os.chmod(db_file, 0o600)
            else:
                _pg_restore(url, dump)
        key = settings.resolved_secret_key_file
        report.key_path = key
        if manifest.get("key_included"):
            if key.exists():
                raise Conflict(f"the secret key file {key} exists: not replaced")
            _write_key(key, _read(tar, KEY_MEMBER))
            report.key_restored = True
    return report


def _write_key(path: Path, data: bytes) -> None:
    """Written under a temporary name (mode 0600), then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    durable.replace(Path(name), path)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise InvalidInput(f"the backup has no {name}")
    return f.read()


def _manifest(tar: tarfile.TarFile, src: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(_read(tar, MANIFEST))
    except (KeyError, ValueError, InvalidInput):
        raise InvalidInput(f"{src} is not a flowdeck backup (no {MANIFEST})") from None
    if manifest.get("format") != FORMAT or manifest.get("database") not in (
        "sqlite",
        "postgresql",
    ):
        raise InvalidInput(f"{src}: unknown backup format {manifest.get('format')!r}")
    return manifest


def _require_empty_pg(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if names:
        raise Conflict(
            f"the database {sa.make_url(url).render_as_string()} is not empty "
            f"({len(names)} tables): restore into an empty database"
        )


def _pg_restore(url: str, dump: Path) -> None:
    _pg_tool("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq_url(url)}", str(dump))
