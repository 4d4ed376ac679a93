"""CpioWriter: format checks and round trips through the real GNU cpio."""

from __future__ import annotations

import gzip
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtest_helpers import require_tool
from pyxen.build.cpio import NEWC_MAGIC, TRAILER, CpioWriter


def read_newc(archive: bytes) -> list[dict]:
    """Minimal independent newc reader that also checks the alignment rules."""
    out = []
    pos = 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
             "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")
    while True:
        assert pos % 4 == 0
        assert archive[pos : pos + 6] == NEWC_MAGIC
        fields = {n: int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name_end = pos + 110 + fields["namesize"]
        assert archive[name_end - 1] == 0
        name = archive[pos + 110 : name_end - 1].decode()
        data_at = (name_end + 3) & ~3
        assert archive[name_end:data_at] == b"\0" * (data_at - name_end)
        data = archive[data_at : data_at + fields["filesize"]]
        pos = (data_at + fields["filesize"] + 3) & ~3
        fields.update(name=name, data=data)
        out.append(fields)
        if name == TRAILER:
            assert archive[pos:] == b""
            return out


def sample_writer() -> CpioWriter:
    w = CpioWriter(mtime=1_600_000_000)
    w.add_dir("/bin", 0o755)
    w.add_dir("etc", 0o750)
    w.add_file("/bin/busybox", b"\x7fELF fake busybox" * 100, 0o755)
    w.add_symlink("/bin/sh", "busybox")
    w.add_file("etc/motd", b"hello from pyxen\n", 0o644)
    w.add_file("init", b"#!/bin/sh\nexec /bin/sh\n", 0o700)
    w.add_file("empty", b"", 0o600)
    w.add_file("a/b/c/deep.txt", b"deep", 0o640)  # parents created implicitly
    w.add_file("sbin/suid", b"x", 0o4755)
    w.add_device("dev/console", 0o600, 5, 1)
    w.add_device("dev/vda", 0o660, 254, 0, block=True)
    w.add_device("dev/null", stat.S_IFCHR | 0o666, 1, 3)
    return w


def test_archive_structure() -> None:
    archive = sample_writer().finish()
    entries = read_newc(archive)
    by_name = {e["name"]: e for e in entries}
    assert entries[-1]["name"] == TRAILER and entries[-1]["nlink"] == 1
    inodes = [e["ino"] for e in entries[:-1]]
    assert len(set(inodes)) == len(inodes)
    assert list(by_name)[:3] == ["bin", "etc", "bin/busybox"]
    assert by_name["bin/sh"]["mode"] == stat.S_IFLNK | 0o777 and by_name["bin/sh"]["data"] == b"busybox"
    assert by_name["etc"]["mode"] == stat.S_IFDIR | 0o750 and by_name["etc"]["nlink"] == 2
    assert by_name["a"]["mode"] == stat.S_IFDIR | 0o755
    assert list(by_name).index("a/b/c") < list(by_name).index("a/b/c/deep.txt")
    con = by_name["dev/console"]
    assert con["mode"] == stat.S_IFCHR | 0o600 and (con["rdevmajor"], con["rdevminor"]) == (5, 1)
    assert by_name["dev/vda"]["mode"] == stat.S_IFBLK | 0o660
    assert by_name["dev/null"]["mode"] == stat.S_IFCHR | 0o666
    assert by_name["init"]["mtime"] == 1_600_000_000
    assert by_name["sbin/suid"]["mode"] == stat.S_IFREG | 0o4755


def test_gzip_output() -> None:
    w1, w2 = sample_writer(), sample_writer()
    gz = w1.finish(gzip=True)
    assert gz[:2] == b"\x1f\x8b"
    assert gzip.decompress(gz) == w2.finish()
    assert gz == sample_writer().finish(gzip=True)  # reproducible


def test_errors() -> None:
    w = CpioWriter()
    w.add_file("x", b"1")
    with pytest.raises(ValueError, match="added twice"):
        w.add_file("/x", b"2")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        w.add_file("../etc/passwd", b"")
    with pytest.raises(ValueError, match="root"):
        w.add_dir("/")
    with pytest.raises(ValueError, match="not a directory"):
        w.add_file("x/y", b"")
    with pytest.raises(ValueError, match="invalid mode"):
        w.add_file("y", b"", stat.S_IFDIR | 0o755)
    with pytest.raises(ValueError, match="reserved"):
        w.add_file(TRAILER, b"")
    with pytest.raises(ValueError, match="neither"):
        w.add_device("dev/x", stat.S_IFREG | 0o600, 1, 1)
    with pytest.raises(TypeError):
        w.add_file("z", "text")  # type: ignore[arg-type]
    w.finish()
    with pytest.raises(RuntimeError):
        w.add_file("late", b"")


def test_no_auto_parents() -> None:
    w = CpioWriter(auto_parents=False)
    w.add_file("a/b", b"")
    assert [e.name for e in w.entries] == ["a/b"]


# --- against the real cpio -----------------------------------------------


def cpio(args: list[str], archive: bytes, cwd: Path) -> str:
    require_tool("cpio")
    res = subprocess.run(["cpio", *args], input=archive, cwd=cwd, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode() + res.stderr.decode()


def test_real_cpio_list(tmp_path: Path) -> None:
    w = sample_writer()
    names = [e.name for e in w.entries]
    listing = cpio(["-t", "--quiet"], w.finish(), tmp_path)
    assert listing.split() == names


def test_real_cpio_verbose_list_devices(tmp_path: Path) -> None:
    listing = cpio(["-tv", "--quiet"], sample_writer().finish(), tmp_path)
    lines = {line.split()[-1]: line for line in listing.splitlines() if line.strip()}
    assert lines["dev/console"].startswith("crw-------")
    assert re.search(r"\s5,\s+1\s", lines["dev/console"])
    assert lines["dev/vda"].startswith("brw-rw----")
    assert re.search(r"\s254,\s+0\s", lines["dev/vda"])
    assert "bin/sh -> busybox" in listing


def test_real_cpio_extract(tmp_path: Path) -> None:
    w = sample_writer()
    # devices need mknod privileges: extract them only in the listing test
    w2 = CpioWriter(mtime=1_600_000_000)
    for e in w.entries:
        if stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode):
            continue
        if stat.S_ISDIR(e.mode):
            w2.add_dir(e.name, e.mode & 0o7777)
        elif stat.S_ISLNK(e.mode):
            w2.add_symlink(e.name, e.data.decode())
        else:
            w2.add_file(e.name, e.data, e.mode & 0o7777)
    out = tmp_path / "root"
    out.mkdir()
    cpio(["-idm", "--quiet", "--no-absolute-filenames"], w2.finish(), out)
    assert (out / "bin/busybox").read_bytes() == b"\x7fELF fake busybox" * 100
    assert stat.S_IMODE((out / "bin/busybox").stat().st_mode) == 0o755
    assert os.readlink(out / "bin/sh") == "busybox"
    assert (out / "etc/motd").read_text() == "hello from pyxen\n"
    assert stat.S_IMODE((out / "etc").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "init").stat().st_mode) == 0o700
    assert (out / "empty").read_bytes() == b""
    assert (out / "a/b/c/deep.txt").read_bytes() == b"deep"
    assert (out / "init").stat().st_mtime == 1_600_000_000
    if os.geteuid() == 0:
        assert stat.S_IMODE((out / "sbin/suid").stat().st_mode) == 0o4755


def test_real_cpio_gzip(tmp_path: Path) -> None:
    w = sample_writer()
    names = [e.name for e in w.entries]
    archive = gzip.decompress(w.finish(gzip=True))
    assert cpio(["-t", "--quiet"], archive, tmp_path).split() == names


segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,11}", fullmatch=True).filter(lambda s: s not in (".", ".."))
tree = st.dictionaries(
    st.lists(segment, min_size=1, max_size=3).map(tuple),
    st.one_of(
        st.tuples(st.just("file"), st.binary(max_size=300), st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o444])),
        st.tuples(st.just("link"), segment, st.just(0o777)),
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree)
def test_real_cpio_round_trip(spec) -> None:
    require_tool("cpio")
    w = CpioWriter()
    expected: dict[str, tuple] = {}
    for parts, (kind, payload, mode) in spec.items():
        path = "/".join(parts)
        # skip paths whose parent is already a non-directory member (or vice versa)
        if any("/".join(parts[:i]) in expected for i in range(1, len(parts))):
            continue
        if any(k.startswith(path + "/") for k in expected):
            continue
        if kind == "file":
            w.add_file(path, payload, mode)
        else:
            w.add_symlink(path, payload)
        expected[path] = (kind, payload, mode)
    names = [e.name for e in w.entries]
    archive = w.finish()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assert cpio(["-t", "--quiet"], archive, root).split() == names
        cpio(["-idm", "--quiet", "--no-absolute-filenames"], archive, root)
        for path, (kind, payload, mode) in expected.items():
            p = root / path
            if kind == "file":
                assert p.read_bytes() == payload
                assert stat.S_IMODE(p.lstat().st_mode) == mode
            else:
                assert os.readlink(p) == payload
