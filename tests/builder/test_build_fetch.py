"""fetch_debian_package_file: cache logic offline, and the real Debian kernel/busybox."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyxen.build import fetch
from pyxen.build.cpio import CpioWriter
from pyxen.build.elf import load_kernel
from pyxen.build.errors import KernelImageError
from pyxen.build.fetch import FetchError, default_cache_dir, fetch_debian_package_file, find_cached


def test_parse_record_and_depends() -> None:
    text = (
        "Package: linux-image-cloud-amd64\nVersion: 6.1.1-1\nSize: 1504\n"
        "Depends: linux-image-6.1.0-9-cloud-amd64 (= 6.1.1-1), foo | bar, baz:any\n"
        "Description: x\n more text\n\nPackage: second\n"
    )
    rec = fetch._parse_record(text)
    assert rec["Package"] == "linux-image-cloud-amd64" and rec["Size"] == "1504"
    assert rec["Description"] == "x\nmore text"
    assert fetch._depends(rec["Depends"]) == ("linux-image-6.1.0-9-cloud-amd64", "foo", "baz")


def test_default_cache_dir(monkeypatch) -> None:
    monkeypatch.setenv("PYXEN_CACHE", "/some/where")
    assert default_cache_dir() == Path("/some/where")
    monkeypatch.delenv("PYXEN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "pyxen"


@pytest.fixture
def no_apt(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"unexpected subprocess call {a}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_cache_hit_needs_no_apt(tmp_path: Path, no_apt) -> None:
    f = tmp_path / "debian" / "busybox-static" / "1_1.35" / "bin" / "busybox"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"\x7fELF")
    assert fetch_debian_package_file("busybox-static", "bin/busybox", tmp_path) == f
    assert find_cached("busybox-static", "bin/nothing", tmp_path) is None


def test_cache_hit_through_provider(tmp_path: Path, no_apt) -> None:
    real = tmp_path / "debian" / "linux-image-6.1.0-9-cloud-amd64" / "6.1.1-1" / "boot" / "vmlinuz-6.1.0-9-cloud-amd64"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"k")
    meta = tmp_path / "debian" / "linux-image-cloud-amd64"
    (meta / "6.1.1-1").mkdir(parents=True)
    (meta / "provider").write_text("linux-image-6.1.0-9-cloud-amd64\n")
    assert fetch_debian_package_file("linux-image-cloud-amd64", "boot/vmlinuz-*", tmp_path) == real


def test_unknown_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fetch, "_updated", True)  # don't run apt-get update for this
    if not (os.path.exists("/usr/bin/apt-cache")):
        pytest.skip("not a Debian system")
    with pytest.raises(FetchError, match="not found"):
        fetch_debian_package_file("pyxen-no-such-package-xyz", "bin/x", tmp_path)


# --- real downloads (cached in $PYXEN_CACHE or ~/.cache/pyxen) -------------


def fetch_or_skip(package: str, member: str) -> Path:
    if os.environ.get("PYXEN_OFFLINE"):
        pytest.skip("PYXEN_OFFLINE is set")
    try:
        return fetch_debian_package_file(package, member, default_cache_dir())
    except FetchError as e:
        pytest.skip(f"cannot fetch Debian package {package}: {e}")


def test_debian_cloud_kernel() -> None:
    vmlinuz = fetch_or_skip("linux-image-cloud-amd64", "boot/vmlinuz-*")
    assert vmlinuz.name.startswith("vmlinuz-")
    k = load_kernel(vmlinuz)
    assert k.payload_format == "lz4"
    assert k.guest_os == "linux"
    assert k.loader == "generic"
    assert k.xen_version == "xen-3.0"
    assert k.virt_base == 0xFFFFFFFF80000000
    assert k.paddr_offset == 0
    assert k.init_p2m == 0x8000000000
    assert k.hv_start_low == 0xFFFF800000000000
    assert "writable_page_tables" in k.features_required
    assert "dom0" in k.features_supported
    assert k.mod_start_pfn and k.suspend_cancel
    assert k.kernel_start == 0xFFFFFFFF81000000
    assert k.kernel_start <= k.entry < k.kernel_end
    assert k.warnings == []
    # Linux stable kernels patched for XSA-466 no longer carry a HYPERCALL_PAGE note.
    if k.hypercall_page is not None:
        assert k.kernel_start <= k.hypercall_page < k.kernel_end
    # the per-cpu segment has p_vaddr 0 but is placed by its p_paddr
    assert all(s.vaddr == s.paddr + 0xFFFFFFFF80000000 for s in k.segments)
    assert len(k.segments) >= 3


def test_debian_busybox_is_not_a_kernel(tmp_path: Path) -> None:
    busybox = fetch_or_skip("busybox-static", "bin/busybox")
    with pytest.raises(KernelImageError) as ei:
        load_kernel(busybox)
    assert str(ei.value) == ('busybox: not a Xen PV kernel: none of its ELF notes is owned by "Xen" '
                             "and it has no __xen_guest section")
    # and it goes into an initramfs that cpio can list
    w = CpioWriter()
    w.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    w.add_symlink("bin/sh", "busybox")
    w.add_file("init", b"#!/bin/sh\n/bin/busybox --install -s\nexec /bin/sh\n", 0o755)
    if subprocess.run(["which", "cpio"], capture_output=True).returncode != 0:
        pytest.skip("cpio not installed")
    res = subprocess.run(["cpio", "-t", "--quiet"], input=w.finish(), capture_output=True, check=True)
    assert res.stdout.decode().split() == ["bin", "bin/busybox", "bin/sh", "init"]
