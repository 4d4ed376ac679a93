"""A full Debian system as a domU (issue 17): `pyxen create-image` makes the
image (debootstrap, cached between runs under $PYXEN_CACHE/images keyed by
its inputs), pyxend boots it through `bootloader = "pygrub"`, systemd
brings it up to `NAME login:` on hvc0, root logs in on the console and over
ssh from the host side of the guest's bridge, and `pyxen shutdown -w` stops
it through systemd with the root file system left clean.

Hermetic: the bridge and its host-side address are in a network namespace
of the test's own (vif key netns=NAME); ssh runs inside it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon_helpers import cli, start_daemon, wait_until
from netns_helpers import netns  # noqa: F401  (fixture)
from pyxen.build.fetch import default_cache_dir
from pyxen.toolstack.guestshell import ConsoleShell

HOSTNAME = "pyxen-deb"
PASSWORD = "pyxen"
GUEST_IP, HOST_IP, PREFIX = "192.0.2.2", "192.0.2.1", 24     # TEST-NET-1, in the namespace only
BOOT_TIMEOUT = 900          # s: boot to login (measured ~140 s on a quiet 2-core host)


def _image_key(inputs: dict) -> str:
    import pyxen.toolstack.createimage as ci
    h = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    h.update(Path(ci.__file__).read_bytes())      # a new create-image makes a new image
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def debian_image():
    """(image, config, ssh private key): made once per set of inputs."""
    from pyxen.toolstack.createimage import ImageSpec, create_image
    inputs = dict(hostname=HOSTNAME, dist="bookworm", size="2G", memory=512, vcpus=2,
                  password=PASSWORD, ip=f"{GUEST_IP}/{PREFIX}", gateway=HOST_IP)
    d = default_cache_dir() / "images" / _image_key(inputs)
    image, cfg, key = d / f"{HOSTNAME}.img", d / f"{HOSTNAME}.cfg", d / "id_ed25519"
    if not (image.exists() and cfg.exists() and key.exists()):
        for old in d.parent.glob("*"):          # images of older inputs: gone
            if old.name != d.name and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        t = time.monotonic()
        create_image(ImageSpec(dir=str(d), ssh_key=str(key) + ".pub", force=True, **inputs))
        (d / "build-seconds").write_text(f"{time.monotonic() - t:.0f}\n")
    return image, cfg, key


@pytest.fixture
def pyxend(tmp_path, kvm, netns):
    rd = tmp_path / "run"
    rd.mkdir()
    proc = start_daemon(rd)
    yield rd
    r = cli(rd, "list")
    for line in r.stdout.splitlines()[2:]:
        cli(rd, "destroy", line.split()[1])
    proc.kill()
    proc.wait()


def guest_config(src: Path, image: Path, bridge: str, ns: str) -> str:
    """create-image's config with the disk on a copy and the vif on the
    test's bridge in its namespace."""
    text = src.read_text()
    text = re.sub(r"target=[^']*'", f"target={image}'", text)
    mac = re.search(r"mac=([0-9a-f:]+)", text).group(1)
    return re.sub(r"^vif .*$", f"vif = ['mac={mac}, bridge={bridge}, netns={ns}']", text,
                  flags=re.M)


def _domid(rd) -> str | None:
    for line in cli(rd, "list").stdout.splitlines()[1:]:
        if line.split()[0] == HOSTNAME:
            return line.split()[1]
    return None


def login(s: ConsoleShell, timeout: float) -> float:
    t = time.monotonic()
    s.wait_for(rf"{HOSTNAME} login: ", timeout=timeout)
    boot = time.monotonic() - t
    start = len(s.text)             # systemd's output has multi-byte characters
    s.type("root\r")
    s.wait_for("Password: ", timeout=120, start=start)
    s.type(PASSWORD + "\r")
    s.wait_for(rf"root@{HOSTNAME}:~# ", timeout=120, start=start)
    s.type("bind 'set enable-bracketed-paste off'\r")     # no escape codes around output
    s.quiet()
    return boot


def test_debian_image_boots_to_login_and_ssh(debian_image, pyxend, netns, tmp_path):
    image, cfg_src, key = debian_image
    # boot a copy: the cached image stays as create-image made it
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    ns = netns()
    ns.bridge("pxbr0", HOST_IP, PREFIX)
    cfg = tmp_path / f"{HOSTNAME}.cfg"
    cfg.write_text(guest_config(cfg_src, disk, "pxbr0", ns.name))
    t = time.monotonic()
    r = cli(pyxend, "create", str(cfg), timeout=120)
    assert r.returncode == 0, r.stderr
    s = ConsoleShell(HOSTNAME, run_dir=pyxend)
    try:
        login(s, BOOT_TIMEOUT)
        boot_seconds = time.monotonic() - t
        print(f"\nboot to login: {boot_seconds:.0f} s")
        assert s.run("hostname") == HOSTNAME
        # pygrub booted the entry of the image's grub.cfg
        assert "root=/dev/xvda" in s.run("cat /proc/cmdline")
        state = s.run("systemctl is-system-running --wait", timeout=300)
        failed = s.run("systemctl --failed --no-legend --plain | cut -d' ' -f1")
        assert state in ("running", "degraded"), state
        assert state == "running", f"degraded: failed units {failed.split()}"
        assert f"inet {GUEST_IP}/{PREFIX}" in s.run("ip -4 addr show eth0")
        # ssh from the host side of the bridge (inside the test's namespace)
        ssh = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
               f"root@{GUEST_IP}", "hostname; systemctl is-system-running"]
        out = None
        for _ in range(10):
            out = ns.run(*ssh, timeout=120)
            if out.returncode == 0:
                break
            time.sleep(3)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [HOSTNAME, "running"]
        print(s.run("systemd-analyze; systemd-analyze blame --no-pager | head -8; free -m",
                    timeout=300))
        # pyxen reboot: systemd stops cleanly, the domain is built again
        # (pygrub runs again) and comes back with a clean file system
        domid = _domid(pyxend)
        r = cli(pyxend, "reboot", HOSTNAME)
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: _domid(pyxend) not in (None, domid), 300), s.text[-2000:]
        assert "Reached target reboot.target" in s.text or "Rebooting." in s.text, s.text[-2000:]
        s.close()
        s = ConsoleShell(HOSTNAME, run_dir=pyxend)
        login(s, BOOT_TIMEOUT)
        journal = s.run("journalctl -b -1 -q --no-pager -o cat | tail -40")
        assert "Reached target reboot.target" in journal, journal
        assert "Journal stopped" in journal, journal
        assert s.run("dmesg | grep -c 'recovery complete'") == "0"
        # a clean stop through systemd; the file system is clean afterwards
        r = cli(pyxend, "shutdown", "-w", HOSTNAME, timeout=300)
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: HOSTNAME not in cli(pyxend, "list").stdout, 60)
        # systemd stopped everything and powered off (Linux 6.1 on Xen PV says
        # "reboot: System halted": its halt path is Xen's SHUTDOWN_poweroff too)
        assert "systemd-shutdown[1]: Powering off." in s.text, s.text[-2000:]
        assert "Failed unmounting" not in s.text, s.text[-3000:]
    finally:
        s.close()
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_pv_grub_boots_the_image(debian_image, pyxend, tmp_path):
    """PV GRUB (Debian's grub-xen-host, fetched by package name) runs in the
    guest, reads the image's grub.cfg from xvda and boots its Xen entry (the
    gzip ELF kernel); `poweroff` inside ends the domain, the disk is clean."""
    from pyxen.build.fetch import fetch_debian_package_file
    grub = fetch_debian_package_file("grub-xen-host", "usr/lib/grub-xen/grub-x86_64-xen.bin")
    image, cfg_src, _ = debian_image
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    cfg = tmp_path / "pvgrub.cfg"
    cfg.write_text(f'name = "{HOSTNAME}"\nkernel = "{grub}"\nmemory = 512\nvcpus = 2\n'
                   f"disk = ['format=raw, vdev=xvda, access=rw, target={disk}']\n")
    r = cli(pyxend, "create", str(cfg), timeout=120)
    assert r.returncode == 0, r.stderr
    s = ConsoleShell(HOSTNAME, run_dir=pyxend)
    try:
        s.wait_for("Welcome to GRUB!", timeout=120)
        # GRUB wraps the line at 80 columns
        s.wait_for(r"Booting `Debian GNU/Linux, with Linux \S+ \(PV GRUB", timeout=120)
        login(s, BOOT_TIMEOUT)
        assert "root=/dev/xvda" in s.run("cat /proc/cmdline")
        s.type("poweroff\r")
        assert wait_until(lambda: HOSTNAME not in cli(pyxend, "list").stdout, 300)
        assert "systemd-shutdown[1]: Powering off." in s.text, s.text[-2000:]
    finally:
        s.close()
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
