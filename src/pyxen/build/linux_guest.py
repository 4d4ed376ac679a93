"""The stock Debian Linux guest: Debian's cloud kernel as shipped, and a
busybox initramfs built here in Python.

`prepare_linux()` fetches `linux-image-cloud-amd64` and `busybox-static` by
package name through apt (current versions, cached), writes the initramfs,
and returns the paths a domain config needs.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from .cpio import CpioWriter
from .fetch import default_cache_dir, fetch_debian_package_file

INIT_SCRIPT = """#!/bin/busybox sh
# pyxen initramfs /init: mount the kernel file systems, then busybox init
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mkdir -p /dev/pts /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox mount -t devpts devpts /dev/pts 2>/dev/null
/bin/busybox --install -s
exec /bin/busybox init
"""

RC_SCRIPT = """#!/bin/sh
# sysinit: load the modules listed in /etc/modules, say hello
[ -d /lib/modules ] && for m in $(cat /etc/modules 2>/dev/null); do modprobe $m; done
hostname pyxen-guest
echo "pyxen initramfs: $(uname -sr) up; shell on $(cat /sys/hypervisor/type 2>/dev/null) console"
"""

INITTAB = """::sysinit:/etc/rc
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
"""

PROFILE = """export PS1='pyxen:\\w# ' HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin
"""


@dataclass
class LinuxGuest:
    kernel: Path
    initrd: Path
    busybox: Path
    modules_dir: Path | None = None


def build_initramfs(busybox: Path, *, extra_files: dict[str, bytes] | None = None,
                    extra_binaries: dict[str, bytes] | None = None,
                    init: str = INIT_SCRIPT) -> bytes:
    """A gzip newc initramfs with busybox, /init and the usual directories."""
    w = CpioWriter()
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr", "usr/bin",
              "lib", "run", "mnt"):
        w.add_dir(d, 0o755)
    w.add_device("dev/console", 0o600, 5, 1)
    w.add_device("dev/null", 0o666, 1, 3)
    w.add_device("dev/hvc0", 0o600, 229, 0)
    w.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    w.add_symlink("bin/sh", "busybox")
    w.add_file("init", init.encode(), 0o755)
    w.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    w.add_file("etc/rc", RC_SCRIPT.encode(), 0o755)
    w.add_file("etc/inittab", INITTAB.encode(), 0o644)
    w.add_file("etc/profile", PROFILE.encode(), 0o644)
    for path, data in (extra_files or {}).items():
        w.add_file(path.lstrip("/"), data, 0o644)
    for path, data in (extra_binaries or {}).items():
        w.add_file(path.lstrip("/"), data, 0o755)
    return w.finish(gzip=True)


def prepare_linux(cache_dir: Path | None = None) -> LinuxGuest:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    kernel = fetch_debian_package_file("linux-image-cloud-amd64", "boot/vmlinuz-*", cache)
    busybox = fetch_debian_package_file("busybox-static", "bin/busybox", cache)
    initrd = cache / "pyxen-initramfs.cpio.gz"
    stamp = initrd.with_suffix(".version")
    version = f"{INIT_SCRIPT}{RC_SCRIPT}{INITTAB}{PROFILE}"
    if not initrd.exists() or initrd.stat().st_mtime < busybox.stat().st_mtime or \
            not stamp.exists() or stamp.read_text() != version:
        tmp = initrd.with_suffix(".tmp")
        tmp.write_bytes(build_initramfs(busybox))
        tmp.replace(initrd)
        stamp.write_text(version)
    # stable names for the example configs (examples/linux.cfg)
    for link, target in (("vmlinuz", kernel), ("initrd.img", initrd)):
        p = cache / "linux" / link
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            if p.resolve() == Path(target).resolve():
                continue
            p.unlink()
        p.symlink_to(Path(target).resolve())
    return LinuxGuest(kernel=kernel, initrd=initrd, busybox=busybox)
