#!/usr/bin/env python3
"""A full Debian domU (issue 17, 5): create-image's time, then boot to
`login:` on pyxen against QEMU TCG booting the same image (its kernel and
initrd, root on virtio-blk) in the same run, and the memory an idle Debian
domain uses (the guest's own `free`, after logging in).

  python bench/debian_boot.py [--rebuild]

The image is made once under $PYXEN_CACHE/bench-debian (needs root and
debootstrap); --rebuild times a new one (from the cached .debs).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.build.fetch import default_cache_dir                        # noqa: E402
from pyxen.toolstack.bootloader import run_bootloader                  # noqa: E402
from pyxen.toolstack.createimage import ImageSpec, create_image        # noqa: E402
from pyxen.toolstack.domconfig import DomainConfig                     # noqa: E402
from pyxen.toolstack.guestshell import GuestShell                      # noqa: E402
from qemu_console import Qemu                                          # noqa: E402

NAME, PASSWORD = "benchdeb", "pyxen"


def image(rebuild: bool) -> tuple[Path, float | None]:
    d = default_cache_dir() / "bench-debian"
    img = d / f"{NAME}.img"
    if img.exists() and not rebuild:
        return img, None
    t = time.monotonic()
    create_image(ImageSpec(hostname=NAME, dir=str(d), size="2G", password=PASSWORD, dhcp=True,
                           force=True))
    return img, time.monotonic() - t


def copy(img: Path, tmp: Path) -> Path:
    out = tmp / img.name
    subprocess.run(["cp", "--sparse=always", str(img), str(out)], check=True)
    return out


def boot_pyxen(img: Path, boot) -> tuple[float, str]:
    disk = f"disk = ['format=raw, vdev=xvda, access=rw, target={img}']"
    t = time.monotonic()
    # the kernel and initrd pygrub took out, booted directly: the same files QEMU gets
    files = SimpleNamespace(kernel=boot.kernel, initrd=boot.ramdisk)
    s = GuestShell(files, vcpus=2, memory=512, extra=boot.cmdline, cfg_lines=[disk])
    try:
        s.wait_for(f"{NAME} login: ", timeout=1200)
        seconds = time.monotonic() - t
        start = len(s.text)
        s.type("root\r")
        s.wait_for("Password: ", timeout=120, start=start)
        s.type(PASSWORD + "\r")
        s.wait_for(f"root@{NAME}:~# ", timeout=120, start=start)
        s.type("bind 'set enable-bracketed-paste off'\r")
        s.quiet()
        s.run("systemctl is-system-running --wait", timeout=300)
        time.sleep(10)
        free = s.run("free -m | sed -n 2p")
        return seconds, free
    finally:
        s.close()


def boot_qemu(img: Path, boot) -> float:
    q = Qemu.__new__(Qemu)
    cmdline = boot.cmdline.replace("root=/dev/xvda", "root=/dev/vda").replace("hvc0", "ttyS0")
    t = time.monotonic()
    q.p = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "2", "-nographic",
         "-no-reboot", "-nic", "none", "-kernel", boot.kernel, "-initrd", boot.ramdisk,
         "-append", cmdline, "-drive", f"file={img},if=virtio,format=raw"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    q.out = b""
    try:
        q.wait_for(f"{NAME} login: ", timeout=1800)
        return time.monotonic() - t
    finally:
        q.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="time a new create-image")
    args = ap.parse_args()
    img, build = image(args.rebuild)
    print(f"create-image: {f'{build:.0f} s' if build is not None else 'cached'}")
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-deb-") as tmp:
        cfg = DomainConfig.from_text(f'name="{NAME}"\nbootloader="pygrub"\n'
                                     f"disk=['format=raw, vdev=xvda, target={img}']\n")
        boot = run_bootloader(cfg)
        try:
            pyxen_s, free = boot_pyxen(copy(img, Path(tmp)), boot)
            print(f"pyxen  boot to login: {pyxen_s:6.1f} s   idle guest memory (free -m): {free}")
            if shutil.which("qemu-system-x86_64"):
                (Path(tmp) / f"{NAME}.img").unlink()
                qemu_s = boot_qemu(copy(img, Path(tmp)), boot)
                print(f"QEMU TCG boot to login: {qemu_s:6.1f} s   pyxen/TCG {pyxen_s / qemu_s:.2f}x")
            else:
                print("QEMU TCG: qemu-system-x86_64 missing (Debian: qemu-system-x86)")
        finally:
            boot.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
