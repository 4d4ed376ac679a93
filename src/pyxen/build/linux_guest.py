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
# pyxen initramfs /init: mount the kernel file systems, load the PV drivers
# (/etc/modules), then busybox init here, or on root=DEV when the command
# line names a root device (a PV disk: xvda)
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mkdir -p /dev/pts /tmp /run /sbin /usr/bin /usr/sbin /newroot
/bin/busybox --install -s
for m in $(cat /etc/modules 2>/dev/null); do modprobe $m; done
root= ; mode=rw
for a in $(cat /proc/cmdline); do
  case $a in root=*) root=${a#root=} ;; ro) mode=ro ;; esac
done
if [ -n "$root" ] && [ "$root" != /dev/ram0 ]; then
  i=0
  while [ ! -b "$root" ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  if mount -o $mode "$root" /newroot; then
    mount --move /dev /newroot/dev 2>/dev/null || mount -t devtmpfs devtmpfs /newroot/dev
    umount /proc /sys
    exec switch_root /newroot /sbin/init
  fi
  echo "pyxen initramfs: cannot mount root $root; staying in the initramfs"
fi
mount -t devpts devpts /dev/pts 2>/dev/null
exec /bin/busybox init
"""

RC_SCRIPT = """#!/bin/sh
# sysinit: the usual mounts (a disk root starts without them), say hello
[ -e /proc/self ] || /bin/busybox mount -t proc proc /proc
[ -x /bin/cttyhack ] || /bin/busybox --install -s
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
mkdir -p /dev/pts; [ -e /dev/pts/ptmx ] || mount -t devpts devpts /dev/pts
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


# the PV front ends the initramfs loads (Debian builds them as modules)
PV_MODULES = ("kernel/drivers/block/xen-blkfront.ko", "kernel/drivers/net/xen-netfront.ko")


@dataclass
class LinuxGuest:
    kernel: Path
    initrd: Path
    busybox: Path
    modules_dir: Path | None = None


def module_files(modules_dir: Path) -> dict[str, bytes]:
    """The PV driver modules and a modules.dep for busybox's modprobe (they
    depend on nothing but the kernel: their .modinfo says depends=)."""
    ver = modules_dir.name
    files = {f"lib/modules/{ver}/{m}": (modules_dir / m).read_bytes() for m in PV_MODULES}
    files[f"lib/modules/{ver}/modules.dep"] = "".join(f"{m}:\n" for m in PV_MODULES).encode()
    files["etc/modules"] = "".join(Path(m).stem + "\n" for m in PV_MODULES).encode()
    return files


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


def kernel_modules_dir(kernel: Path) -> Path:
    """lib/modules/<version> of the unpacked kernel package."""
    tree = kernel.parent.parent
    dirs = sorted((tree / "lib" / "modules").glob("*"))
    if not dirs:
        raise FileNotFoundError(f"no lib/modules beside {kernel}")
    return dirs[0]


def build_rootfs_image(busybox: Path, path: Path, size_mb: int = 256) -> Path:
    """An ext4 image (made with e2fsprogs' mke2fs -d) holding the same busybox
    system as the initramfs, for a guest whose root is a PV disk."""
    import shutil
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin",
                  "usr/sbin", "lib", "run", "mnt", "data"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(busybox, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        (root / "sbin" / "init").symlink_to("../bin/busybox")
        for name, text, mode in (("etc/rc", RC_SCRIPT, 0o755), ("etc/inittab", INITTAB, 0o644),
                                 ("etc/profile", PROFILE, 0o644),
                                 ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)):
            (root / name).write_text(text)
            (root / name).chmod(mode)
        (root / "etc" / "pyxen-rootfs").write_text("this root file system is a PV disk\n")
        tmpimg = path.with_suffix(".tmp")
        tmpimg.unlink(missing_ok=True)
        r = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(tmpimg),
                            f"{size_mb}M"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mke2fs failed: {r.stderr.strip()}")
        tmpimg.replace(path)
    return path


def prepare_linux(cache_dir: Path | None = None) -> LinuxGuest:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    kernel = fetch_debian_package_file("linux-image-cloud-amd64", "boot/vmlinuz-*", cache)
    busybox = fetch_debian_package_file("busybox-static", "bin/busybox", cache)
    modules = kernel_modules_dir(kernel)
    initrd = cache / "pyxen-initramfs.cpio.gz"
    stamp = initrd.with_suffix(".version")
    version = f"{INIT_SCRIPT}{RC_SCRIPT}{INITTAB}{PROFILE}{modules}{PV_MODULES}"
    if not initrd.exists() or initrd.stat().st_mtime < busybox.stat().st_mtime or \
            not stamp.exists() or stamp.read_text() != version:
        tmp = initrd.with_suffix(".tmp")
        tmp.write_bytes(build_initramfs(busybox, extra_files=module_files(modules)))
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
    rootfs = cache / "linux" / "rootfs.img"
    rstamp = rootfs.with_suffix(".version")
    if not rootfs.exists() or not rstamp.exists() or rstamp.read_text() != version:
        build_rootfs_image(busybox, rootfs)
        rstamp.write_text(version)
    return LinuxGuest(kernel=kernel, initrd=initrd, busybox=busybox, modules_dir=modules)
