from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from contextlib import nullcontext
from pathlib import Path

import pytest

from flowdeck.archive import ArchiveLimits, ExtractedMember, detect_format, extract_archive
from flowdeck.errors import ArchiveRejected

SPEC = b"name: split\nsteps:\n  - run: scripts/split.py\n"
SCRIPT = b"#!/usr/bin/env python3\nprint('split')\n"
HELPER = b"def helper() -> int:\n    return 42\n" * 50


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def zip_info(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def tar_info(
    name: str,
    data: bytes | None = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    return info, data if kind == tarfile.REGTYPE else None


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is None:
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def rejected(
    src: Path,
    dest: Path,
    reason: str,
    member: str | None,
    limits: ArchiveLimits | None = None,
) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as caught:
        extract_archive(src, dest, limits or ArchiveLimits())
    err = caught.value
    assert err.code == "archive_rejected"
    assert err.details["reason"] == reason, err.message
    assert err.details["member"] == member
    if member is not None:
        assert repr(member) in err.message
    assert list(dest.iterdir()) == []
    return err


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


EXPECTED = [
    ExtractedMember("scripts/lib/helper.py", len(HELPER), sha(HELPER)),
    ExtractedMember("scripts/split.py", len(SCRIPT), sha(SCRIPT)),
    ExtractedMember("workflow.yaml", len(SPEC), sha(SPEC)),
]


def check_tree(dest: Path) -> None:
    assert (dest / "workflow.yaml").read_bytes() == SPEC
    assert (dest / "scripts/split.py").read_bytes() == SCRIPT
    assert (dest / "scripts/lib/helper.py").read_bytes() == HELPER
    assert (dest / "data").is_dir()
    assert stat.S_IMODE((dest / "scripts/split.py").stat().st_mode) == 0o555
    assert stat.S_IMODE((dest / "workflow.yaml").stat().st_mode) == 0o444
    assert stat.S_IMODE((dest / "scripts/lib/helper.py").stat().st_mode) == 0o444


# -- good archives ------------------------------------------------------------------------


def test_good_zip_extracts_byte_exact(tmp_path: Path, dest: Path) -> None:
    src = make_zip(
        tmp_path / "wf.zip",
        [
            (zip_info("workflow.yaml"), SPEC),
            (zip_info("data/", stat.S_IFDIR | 0o755), b""),
            (zip_info("scripts/split.py", stat.S_IFREG | 0o4755), SCRIPT),
            ("scripts/lib/helper.py", HELPER),  # no Unix mode at all
        ],
    )
    assert detect_format(src) == "zip"
    assert extract_archive(src, dest) == EXPECTED
    check_tree(dest)


def test_good_tar_gz_extracts_byte_exact(tmp_path: Path, dest: Path) -> None:
    src = make_tar(
        tmp_path / "wf.tar.gz",
        [
            tar_info(".", kind=tarfile.DIRTYPE, mode=0o755),
            tar_info("./workflow.yaml", SPEC),
            tar_info("data", kind=tarfile.DIRTYPE, mode=0o700),
            tar_info("scripts/split.py", SCRIPT, mode=0o6775),
            tar_info("scripts/lib/helper.py", HELPER, mode=0o664),
            tar_info("scripts", kind=tarfile.DIRTYPE, mode=0o755),  # after its files: fine
        ],
    )
    assert detect_format(src) == "tar.gz"
    assert extract_archive(src, dest) == EXPECTED
    check_tree(dest)


def test_destination_must_be_an_empty_directory(tmp_path: Path, dest: Path) -> None:
    src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC)])
    (dest / "old").write_bytes(b"")
    with pytest.raises(ValueError, match="empty directory"):
        extract_archive(src, dest)
    with pytest.raises(ValueError, match="empty directory"):
        extract_archive(src, tmp_path / "missing")


# -- names ---------------------------------------------------------------------------------


def test_zip_slip_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), ("../../evil.py", b"x")])
    err = rejected(src, dest, "parent_reference", "../../evil.py")
    assert err.message == "archive member '../../evil.py' rejected: path leaves the archive"
    assert not (tmp_path / "evil.py").exists()


def test_tar_parent_reference_is_rejected_and_earlier_files_removed(
    tmp_path: Path, dest: Path
) -> None:
    src = make_tar(
        tmp_path / "wf.tar.gz",
        [tar_info("scripts/ok.py", SCRIPT), tar_info("scripts/../../evil.py", b"x")],
    )
    rejected(src, dest, "parent_reference", "scripts/../../evil.py")
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_absolute_path_is_rejected(tmp_path: Path, dest: Path, fmt: str) -> None:
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), ("/etc/passwd", b"x")])
    else:
        src = make_tar(
            tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC), tar_info("/etc/passwd")]
        )
    rejected(src, dest, "absolute_path", "/etc/passwd")


@pytest.mark.parametrize("name", ["scripts\\evil.py", "C:/evil.py", "c:evil.py", "a\nb.py"])
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_unsafe_names_are_rejected(tmp_path: Path, dest: Path, fmt: str, name: str) -> None:
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), (name, b"x")])
    else:
        src = make_tar(tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC), tar_info(name)])
    rejected(src, dest, "unsafe_name", name)


@pytest.mark.parametrize(
    "name", ["c1\x85.py", "rlo\u202etxt.py", "lre\u202ax.py", "iso\u2066x.py", "pdi\u2069.py"]
)
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_c1_controls_and_bidi_controls_are_rejected(
    tmp_path: Path, dest: Path, fmt: str, name: str
) -> None:
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), (name, b"x")])
    else:
        src = make_tar(tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC), tar_info(name)])
    err = rejected(src, dest, "unsafe_name", name)
    assert "U+" in err.message


@pytest.mark.parametrize("fmt", ["zip", "ustar", "gnu", "pax"])
def test_a_nul_byte_does_not_cut_a_name_short(tmp_path: Path, dest: Path, fmt: str) -> None:
    name = "a\x00b.py" if fmt != "gnu" else "d/" + "x" * 120 + "\x00b.py"  # gnu: a long name
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), ("a_b.py", b"x")])
        src.write_bytes(src.read_bytes().replace(b"a_b.py", name.encode()))
    else:
        src = tmp_path / "wf.tar.gz"
        formats = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT}
        with tarfile.open(src, "w:gz", format=formats.get(fmt, tarfile.PAX_FORMAT)) as tf:
            for member, data in (("workflow.yaml", SPEC), (name, b"x")):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    rejected(src, dest, "unsafe_name", name)


def test_tar_overlong_name_is_rejected(tmp_path: Path, dest: Path) -> None:
    name = "a" * 300 + ".py"
    src = make_tar(tmp_path / "wf.tar.gz", [tar_info(name, b"x")])
    rejected(src, dest, "unsafe_name", name)


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.py", "a.py"), ("a.py", "./a.py"), ("lib", "lib/x.py"), ("lib/x.py", "lib")],
)
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_duplicate_paths_are_rejected(
    tmp_path: Path, dest: Path, fmt: str, first: str, second: str
) -> None:
    if fmt == "zip":
        with (
            pytest.warns(UserWarning, match="Duplicate name") if first == second else nullcontext()
        ):
            src = make_zip(tmp_path / "wf.zip", [(first, b"1"), (second, b"2")])
    else:
        src = make_tar(tmp_path / "wf.tar.gz", [tar_info(first, b"1"), tar_info(second, b"2")])
    rejected(src, dest, "duplicate", second)


def test_file_path_reused_as_directory_entry_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = make_tar(
        tmp_path / "wf.tar.gz", [tar_info("lib", b"1"), tar_info("lib", kind=tarfile.DIRTYPE)]
    )
    rejected(src, dest, "duplicate", "lib")


# -- links and special files ---------------------------------------------------------------


def test_tar_symlink_is_rejected_before_anything_is_written_through_it(
    tmp_path: Path, dest: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    src = make_tar(
        tmp_path / "wf.tar.gz",
        [
            tar_info("workflow.yaml", SPEC),
            tar_info("link", kind=tarfile.SYMTYPE, linkname=str(outside)),
            tar_info("link/x", b"pwned"),
        ],
    )
    err = rejected(src, dest, "link", "link")
    assert "link" in err.message
    assert list(outside.iterdir()) == []


def test_tar_hard_link_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = make_tar(
        tmp_path / "wf.tar.gz",
        [
            tar_info("workflow.yaml", SPEC),
            tar_info("hard", kind=tarfile.LNKTYPE, linkname="workflow.yaml"),
        ],
    )
    rejected(src, dest, "link", "hard")


def test_zip_symlink_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = make_zip(
        tmp_path / "wf.zip",
        [("workflow.yaml", SPEC), (zip_info("link", stat.S_IFLNK | 0o777), b"/etc/passwd")],
    )
    rejected(src, dest, "link", "link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_special_files_are_rejected(tmp_path: Path, dest: Path, kind: bytes) -> None:
    src = make_tar(
        tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC), tar_info("dev", kind=kind)]
    )
    rejected(src, dest, "special_file", "dev")


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK])
def test_zip_special_files_are_rejected(tmp_path: Path, dest: Path, kind: int) -> None:
    src = make_zip(tmp_path / "wf.zip", [(zip_info("dev", kind | 0o644), b"")])
    rejected(src, dest, "special_file", "dev")


# -- sizes, ratios and counts --------------------------------------------------------------


def test_zip_bomb_is_rejected_by_compression_ratio(tmp_path: Path, dest: Path) -> None:
    src = make_zip(
        tmp_path / "bomb.zip", [("workflow.yaml", SPEC), ("zeros.bin", bytes(50_000_000))]
    )
    rejected(src, dest, "compression_ratio", "zeros.bin")


def test_tar_gz_bomb_is_stopped_while_streaming(tmp_path: Path, dest: Path) -> None:
    src = make_tar(
        tmp_path / "bomb.tar.gz",
        [tar_info("workflow.yaml", SPEC), tar_info("zeros.bin", bytes(50_000_000))],
    )
    rejected(src, dest, "compression_ratio", "zeros.bin")


def test_tar_gz_bomb_by_many_members_hits_the_ratio_too(tmp_path: Path, dest: Path) -> None:
    src = make_tar(
        tmp_path / "bomb.tar.gz", [tar_info(f"z{i}.bin", bytes(1_000_000)) for i in range(8)]
    )
    rejected(src, dest, "compression_ratio", "z1.bin")


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_member_too_large(tmp_path: Path, dest: Path, fmt: str) -> None:
    big = os.urandom(5000)
    limits = ArchiveLimits(max_member_bytes=4096)
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [("workflow.yaml", SPEC), ("big.bin", big)])
    else:
        src = make_tar(
            tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC), tar_info("big.bin", big)]
        )
    rejected(src, dest, "too_large", "big.bin", limits)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_total_too_large(tmp_path: Path, dest: Path, fmt: str) -> None:
    parts = [os.urandom(3000) for _ in range(4)]
    limits = ArchiveLimits(max_total_bytes=10_000)
    if fmt == "zip":
        src = make_zip(tmp_path / "wf.zip", [(f"p{i}.bin", p) for i, p in enumerate(parts)])
    else:
        src = make_tar(
            tmp_path / "wf.tar.gz", [tar_info(f"p{i}.bin", p) for i, p in enumerate(parts)]
        )
    rejected(src, dest, "too_large", "p3.bin", limits)


def test_zip_with_100k_members_is_rejected_before_extraction(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "many.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"f{i}", b"")
    # Refused from the (zip64) end record, before zipfile loads the central directory.
    monkeypatch.setattr(zipfile, "ZipFile", None)
    err = rejected(src, dest, "too_many_members", None)
    assert "10000" in err.message


def test_zip_member_count_checked_from_infolist(tmp_path: Path, dest: Path) -> None:
    src = make_zip(tmp_path / "wf.zip", [(f"f{i}", b"") for i in range(4)])
    rejected(src, dest, "too_many_members", None, ArchiveLimits(max_members=3))


def test_tar_gz_with_100k_members_is_rejected(tmp_path: Path, dest: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(100_000):
            tf.addfile(tarfile.TarInfo(f"f{i}"))
    src = tmp_path / "many.tar.gz"
    src.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
    rejected(src, dest, "too_many_members", "f10000")


# -- formats and corruption ----------------------------------------------------------------


def test_garbage_is_unknown_format(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "junk.bin"
    src.write_bytes(b"this is not an archive at all")
    rejected(src, dest, "unknown_format", None)
    with pytest.raises(ArchiveRejected):
        detect_format(src)


def test_truncated_tar_gz_is_corrupt(tmp_path: Path, dest: Path) -> None:
    whole = make_tar(
        tmp_path / "wf.tar.gz",
        [tar_info("workflow.yaml", SPEC), tar_info("data.bin", os.urandom(200_000))],
    ).read_bytes()
    src = tmp_path / "cut.tar.gz"
    src.write_bytes(whole[: len(whole) // 2])
    rejected(src, dest, "corrupt", "data.bin")


def test_truncated_gzip_trailer_is_corrupt(tmp_path: Path, dest: Path) -> None:
    whole = make_tar(tmp_path / "wf.tar.gz", [tar_info("workflow.yaml", SPEC)]).read_bytes()
    src = tmp_path / "cut.tar.gz"
    src.write_bytes(whole[:-4])
    rejected(src, dest, "corrupt", None)


def test_gzip_that_is_not_a_tar_is_corrupt(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "x.tar.gz"
    src.write_bytes(gzip.compress(b"just some text, no tar headers here" * 20))
    rejected(src, dest, "corrupt", None)


def test_zip_with_corrupted_member_is_corrupt(tmp_path: Path, dest: Path) -> None:
    data = os.urandom(10_000)
    src = tmp_path / "wf.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("workflow.yaml", SPEC)
        zf.writestr("data.bin", data)
    raw = bytearray(src.read_bytes())
    at = raw.find(data) + 5000
    raw[at] ^= 0xFF
    src.write_bytes(bytes(raw))
    rejected(src, dest, "corrupt", "data.bin")


def test_zip_with_broken_directory_is_corrupt(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "bad.zip"
    src.write_bytes(b"PK\x03\x04" + os.urandom(200))
    rejected(src, dest, "corrupt", None)
