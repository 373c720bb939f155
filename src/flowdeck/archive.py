"""Safe extraction of user-uploaded workflow archives (.zip or .tar.gz).

Every member name is validated, links and special files are refused, sizes and compression
ratios are measured on the bytes actually decompressed, nothing is written through a link,
and a refused archive leaves the destination directory empty.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flowdeck.domain.text import unsafe_character
from flowdeck.errors import ArchiveRejected

_CHUNK = 64 * 1024
# Below this many decompressed bytes the compression ratio is not judged: small files of
# repetitive text legitimately compress far better than 200:1 and cannot hurt anyone.
_RATIO_FLOOR = 1024 * 1024
_MAX_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 1024
# Tar headers, pax records and padding allowed per member in the decompressed stream.
_TAR_OVERHEAD_PER_MEMBER = 4096
# The last decompressed bytes kept to read a member's headers again (tarfile cuts names at
# a NUL byte); a member's headers must fit, with tarfile's read-ahead.
_HEADER_WINDOW = 256 * 1024
# Central-directory bytes allowed per member before zipfile is asked to load it.
_ZIP_DIRECTORY_BYTES_PER_MEMBER = 2048
_ZIP_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_DRIVE = re.compile(r"[A-Za-z]:")
_EXTENDED_HEADERS = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE}
)
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """What an archive may expand to."""

    max_total_bytes: int = 100 * 1024 * 1024  # sum of uncompressed member sizes
    max_members: int = 10_000
    max_ratio: float = 200.0  # uncompressed / compressed, whole archive and per zip member
    max_member_bytes: int = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExtractedMember:
    """A regular file written by :func:`extract_archive`."""

    path: str  # normalised POSIX relative path, e.g. "scripts/split.py"
    size: int
    sha256: str  # hex digest of the extracted content


def detect_format(path: Path) -> str:
    """Return ``"zip"`` or ``"tar.gz"`` from the file's magic bytes."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    raise _reject(None, "unknown_format", "not a zip or tar.gz archive")


def extract_archive(
    src: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()
) -> list[ExtractedMember]:
    """Extract regular files and directories of the archive at `src` into the existing empty
    directory `dest`; return the files written, sorted by path.

    Raises :class:`ArchiveRejected` (``details``: ``member``, ``reason``) and then leaves
    `dest` empty.
    """
    root = dest.resolve()
    if not root.is_dir() or next(root.iterdir(), None) is not None:
        raise ValueError(f"{dest} is not an existing empty directory")
    fmt = detect_format(src)
    sink = _Sink(root, limits)
    try:
        if fmt == "zip":
            _extract_zip(src, sink)
        else:
            _extract_tar_gz(src, sink)
    except BaseException:
        _clear(root)
        raise
    return sorted(sink.members, key=lambda m: m.path)


def _reject(member: str | None, reason: str, why: str) -> ArchiveRejected:
    where = "archive" if member is None else f"archive member {member!r}"
    return ArchiveRejected(f"{where} rejected: {why}", member=member, reason=reason)


@contextmanager
def _reading(member: str | None) -> Iterator[None]:
    """The one place where zipfile, tarfile, gzip and decompressor errors become ``corrupt``."""
    try:
        yield
    except _READ_ERRORS as exc:
        raise _reject(member, "corrupt", f"archive is corrupt or unreadable ({exc})") from exc


def _chunks(stream: IO[bytes], member: str) -> Iterator[bytes]:
    while True:
        with _reading(member):
            chunk = stream.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _normalise(name: str, *, is_dir: bool) -> str | None:
    """The safe relative POSIX path for `name`, or None for the archive's root directory."""
    if not name:
        raise _reject(name, "unsafe_name", "empty name")
    unsafe = unsafe_character(name)
    if unsafe is not None:
        raise _reject(name, "unsafe_name", f"{unsafe} in name")
    if "\\" in name:
        raise _reject(name, "unsafe_name", "backslash in name")
    if name.startswith("/"):
        raise _reject(name, "absolute_path", "absolute path")
    if _DRIVE.match(name):
        raise _reject(name, "unsafe_name", "Windows drive letter in name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _reject(name, "parent_reference", "path leaves the archive")
    if not parts:
        if is_dir:
            return None
        raise _reject(name, "unsafe_name", "empty path")
    try:
        sizes = [len(part.encode("utf-8")) for part in parts]
    except UnicodeEncodeError as exc:
        raise _reject(name, "unsafe_name", "name is not valid UTF-8") from exc
    if max(sizes) > _MAX_COMPONENT_BYTES or sum(sizes) + len(sizes) > _MAX_PATH_BYTES:
        raise _reject(name, "unsafe_name", "name too long")
    return "/".join(parts)


def _check_ratio(limits: ArchiveLimits, member: str | None, produced: int, packed: int) -> None:
    if produced > _RATIO_FLOOR and produced > limits.max_ratio * max(packed, 1):
        raise _reject(member, "compression_ratio", f"compression ratio above {limits.max_ratio:g}")


def _check_sizes(limits: ArchiveLimits, member: str, size: int, total: int) -> None:
    if size > limits.max_member_bytes:
        raise _reject(member, "too_large", f"larger than {limits.max_member_bytes} bytes")
    if total > limits.max_total_bytes:
        raise _reject(
            member, "too_large", f"archive expands to over {limits.max_total_bytes} bytes"
        )


class _Sink:
    """Tracks the paths claimed, writes members under `root` and counts what is written."""

    def __init__(self, root: Path, limits: ArchiveLimits) -> None:
        self.root = root
        self.limits = limits
        self.archive_size: int | None = None  # set to judge the whole-archive ratio here
        self.count = 0
        self.total = 0
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.explicit_dirs: set[str] = set()
        self.members: list[ExtractedMember] = []

    def count_member(self, member: str | None) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise _reject(
                member, "too_many_members", f"more than {self.limits.max_members} members"
            )

    def claim(self, member: str, path: str, *, is_dir: bool) -> None:
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        taken = self.explicit_dirs if is_dir else self.dirs
        if path in self.files or path in taken or any(p in self.files for p in parents):
            raise _reject(member, "duplicate", "path already used by another member")
        (self.explicit_dirs if is_dir else self.files).add(path)
        self.dirs.update(parents)
        if is_dir:
            self.dirs.add(path)

    def _inside(self, member: str, path: str) -> Path:
        target = (self.root / path).resolve()
        if target == self.root or not target.is_relative_to(self.root):
            raise _reject(member, "parent_reference", "path leaves the archive")
        return target

    def make_dir(self, member: str, path: str) -> None:
        self._inside(member, path).mkdir(mode=0o755, parents=True, exist_ok=True)

    def write_file(
        self,
        member: str,
        path: str,
        chunks: Iterator[bytes],
        *,
        executable: bool,
        packed: int | None = None,
    ) -> None:
        """Stream `chunks` to a new file, stopping as soon as a limit is passed."""
        target = self._inside(member, path)
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                self.total += len(chunk)
                if packed is not None:
                    _check_ratio(self.limits, member, size, packed)
                if self.archive_size is not None:
                    _check_ratio(self.limits, member, self.total, self.archive_size)
                _check_sizes(self.limits, member, size, self.total)
                digest.update(chunk)
                out.write(chunk)
            os.fchmod(out.fileno(), 0o555 if executable else 0o444)  # read-only for steps
        self.members.append(ExtractedMember(path, size, digest.hexdigest()))


def _clear(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# -- zip ---------------------------------------------------------------------------------


def _check_zip_directory(src: Path, limits: ArchiveLimits) -> None:
    """Bound the central directory from its end record before zipfile loads all of it."""
    with src.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (22 + 0xFFFF + 20)))
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return  # zipfile reports it as corrupt
        entries, dir_size = struct.unpack_from("<HL", tail, at + 10)
        zip64 = entries == 0xFFFF or dir_size == 0xFFFFFFFF
        if zip64 and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
            (offset,) = struct.unpack_from("<Q", tail, at - 12)
            fh.seek(offset)
            record = fh.read(56)
            if len(record) == 56 and record.startswith(b"PK\x06\x06"):
                entries, dir_size = struct.unpack_from("<QQ", record, 32)
    if entries > limits.max_members:
        raise _reject(None, "too_many_members", f"more than {limits.max_members} members")
    if dir_size > limits.max_members * _ZIP_DIRECTORY_BYTES_PER_MEMBER:
        raise _reject(None, "too_large", "central directory too large")


def _zip_mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


def _plan_zip(zf: zipfile.ZipFile, sink: _Sink) -> list[tuple[zipfile.ZipInfo, str, bool]]:
    """Validate every member before anything is written."""
    limits = sink.limits
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise _reject(None, "too_many_members", f"more than {limits.max_members} members")
    plan: list[tuple[zipfile.ZipInfo, str, bool]] = []
    declared = 0
    for info in infos:
        name = info.orig_filename
        mode = _zip_mode(info)
        is_dir = info.is_dir() or stat.S_ISDIR(mode)
        path = _normalise(name, is_dir=is_dir)
        if stat.S_ISLNK(mode):
            raise _reject(name, "link", "links are not allowed")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _reject(name, "special_file", "only regular files and directories allowed")
        if info.flag_bits & 0x1:
            raise _reject(name, "corrupt", "encrypted members are not supported")
        if info.compress_type not in _ZIP_METHODS:
            raise _reject(name, "corrupt", "unsupported compression method")
        if path is None:
            continue
        sink.claim(name, path, is_dir=is_dir)
        if not is_dir:
            declared += info.file_size
            _check_ratio(limits, name, info.file_size, info.compress_size)
            _check_ratio(limits, name, declared, sink.archive_size or 0)
            _check_sizes(limits, name, info.file_size, declared)
        plan.append((info, path, is_dir))
    return plan


def _extract_zip(src: Path, sink: _Sink) -> None:
    sink.archive_size = src.stat().st_size
    _check_zip_directory(src, sink.limits)
    with _reading(None):
        zf = zipfile.ZipFile(src)
    with zf:
        plan = _plan_zip(zf, sink)
        for info, path, is_dir in plan:
            name = info.orig_filename
            if is_dir:
                sink.make_dir(name, path)
                continue
            with _reading(name):
                stream = zf.open(info)
            with stream:
                executable = bool(_zip_mode(info) & stat.S_IXUSR)
                chunks = _chunks(stream, name)
                sink.write_file(
                    name, path, chunks, executable=executable, packed=info.compress_size
                )


# -- tar.gz ------------------------------------------------------------------------------


class _Meter:
    """The decompressed tar stream, read in chunks with the limits checked on each."""

    def __init__(self, raw: gzip.GzipFile, packed: int, limits: ArchiveLimits) -> None:
        self._raw = raw
        self._packed = packed
        self._limits = limits
        self._cap = limits.max_total_bytes + (limits.max_members + 2) * _TAR_OVERHEAD_PER_MEMBER
        self.produced = 0
        self.member: str | None = None  # the member being read, for error messages
        self._recent: deque[bytes] = deque()  # the last bytes produced, from _recent_start
        self._recent_start = 0

    def read(self, size: int = -1, /) -> bytes:
        with _reading(self.member):
            data = self._raw.read(min(size, _CHUNK) if size >= 0 else _CHUNK)
        self._keep(data)
        self.produced += len(data)
        _check_ratio(self._limits, self.member, self.produced, self._packed)
        if self.produced > self._cap:
            raise _reject(self.member, "too_large", f"tar stream expands to over {self._cap} bytes")
        return data

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self._recent.append(data)
        while self.produced + len(data) - self._recent_start - len(self._recent[0]) >= (
            _HEADER_WINDOW
        ):
            self._recent_start += len(self._recent.popleft())

    def span(self, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of the decompressed stream, if still kept."""
        if start < self._recent_start or end > self.produced:
            return None
        parts = []
        at = self._recent_start
        for chunk in self._recent:
            low, high = max(start, at), min(end, at + len(chunk))
            if low < high:
                parts.append(chunk[low - at : high - at])
            at += len(chunk)
        return b"".join(parts)

    def write(self, b: bytes, /) -> int:
        raise OSError("read-only stream")

    def tell(self) -> int:
        return self.produced

    def seek(self, pos: int, /) -> int:
        raise OSError("stream is not seekable")

    def close(self) -> None:
        return None


def _extract_tar_gz(src: Path, sink: _Sink) -> None:
    limits = sink.limits
    with gzip.GzipFile(src, "rb") as raw:
        meter = _Meter(raw, src.stat().st_size, limits)
        with _open_tar(meter) as tf:
            while True:
                meter.member = None
                with _reading(None):
                    info = tf.next()
                if info is None:
                    break
                _extract_tar_member(tf, info, meter, sink)
        meter.member = None
        while meter.read(_CHUNK):  # the rest of the stream, so that gzip checks its CRC
            pass


def _open_tar(meter: _Meter) -> tarfile.TarFile:
    with _reading(None):
        return tarfile.open(fileobj=meter, mode="r|")


def _field_cut_at_nul(field: bytes) -> bool:
    """Whether a NUL-terminated header field holds more after its first NUL byte."""
    cut = field.find(b"\0")
    return cut >= 0 and bool(field[cut:].strip(b"\0"))


def _stored_name(info: tarfile.TarInfo, meter: _Meter) -> str:
    """The member's name as its headers hold it: tarfile ends a name at its first NUL byte
    (``a\\0b`` would become ``a``); such a name is returned whole, to be refused."""
    raw = meter.span(info.offset, info.offset_data)
    if raw is None:
        raise _reject(info.name, "too_large", f"member headers over {_HEADER_WINDOW} bytes")
    at = 0
    while at + tarfile.BLOCKSIZE <= len(raw):
        block = raw[at : at + tarfile.BLOCKSIZE]
        with _reading(info.name):
            header = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        fields = [block[0:100]]
        if block[257:265] == tarfile.POSIX_MAGIC:
            fields.insert(0, block[345:500])  # the ustar prefix
        if header.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            fields = [raw[at + tarfile.BLOCKSIZE : at + tarfile.BLOCKSIZE + header.size]]
        if any(_field_cut_at_nul(f) for f in fields):
            parts = [f.rstrip(b"\0") for f in fields]
            return b"/".join(p for p in parts if p).decode("utf-8", "surrogateescape")
        if header.type not in _EXTENDED_HEADERS:
            break  # the member's own header: what follows is its data
        at += tarfile.BLOCKSIZE + -(-header.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return info.name


def _extract_tar_member(
    tf: tarfile.TarFile, info: tarfile.TarInfo, meter: _Meter, sink: _Sink
) -> None:
    name = _stored_name(info, meter)
    meter.member = name
    sink.count_member(name)
    is_dir = info.isdir()
    path = _normalise(name, is_dir=is_dir)
    if info.issym() or info.islnk():
        raise _reject(name, "link", "links are not allowed")
    if not (is_dir or info.isreg()):
        raise _reject(name, "special_file", "only regular files and directories allowed")
    if path is None:
        return
    sink.claim(name, path, is_dir=is_dir)
    if is_dir:
        sink.make_dir(name, path)
        return
    _check_sizes(sink.limits, name, info.size, sink.total + info.size)
    with _reading(name):
        stream = tf.extractfile(info)
    if stream is None:
        raise _reject(name, "corrupt", "member has no data")
    with stream:
        executable = bool(info.mode & stat.S_IXUSR)
        sink.write_file(name, path, _chunks(stream, name), executable=executable)
