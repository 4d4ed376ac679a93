"""Debian's Linux saved and restored (issue 16): through pyxend and the CLI,
with 2 vCPUs and a PV disk; the shell answers on the console afterwards,
the disk's contents are there and it takes new writes."""
from __future__ import annotations

import subprocess
import time

import pytest

from daemon_helpers import cli, rows, start_daemon
from netns_helpers import netns  # noqa: F401  (fixture)
from pyxen.toolstack.guestshell import ConsoleShell


@pytest.fixture
def rd(tmp_path, kvm, netns):           # noqa: F811
    # netns first: its namespaces are deleted after the domains are gone
    d = tmp_path / "run"
    d.mkdir()
    proc = start_daemon(d)
    shells = []
    yield d, shells, netns
    for s in shells:
        s.close()
    r = cli(d, "list")
    for line in r.stdout.splitlines()[2:]:
        cli(d, "destroy", line.split()[1])
    proc.kill()
    proc.wait()


def _console(d, shells, name):
    s = ConsoleShell(name, run_dir=d)
    shells.append(s)
    return s


def test_linux_save_restore_with_disk_and_vif(rd, tmp_path, linux_images):
    d, shells, make_netns = rd
    ns = make_netns()
    ns.bridge("xenbr0", "192.0.2.1")
    img = tmp_path / "data.img"
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    cfg = tmp_path / "lx.cfg"
    cfg.write_text(f'name = "lx"\nkernel = "{linux_images.kernel}"\n'
                   f'ramdisk = "{linux_images.initrd}"\nextra = "console=hvc0"\n'
                   f'memory = 256\nvcpus = 2\n'
                   f'disk = ["format=raw, vdev=xvdb, access=rw, target={img}"]\n'
                   f'vif = ["bridge=xenbr0, netns={ns.name}, mac=00:16:3e:00:00:51"]\n')
    r = cli(d, "create", str(cfg))
    assert r.returncode == 0, r.stderr
    s = _console(d, shells, "lx")
    s.settle()
    assert s.run("nproc") == "2"
    s.run("ip link set eth0 up; ip addr add 192.0.2.2/24 dev eth0")
    assert " 0% packet loss" in s.run("ping -c 2 -W 5 192.0.2.1", timeout=60)
    s.run("mkdir -p /mnt && mount /dev/xvdb /mnt && echo before > /mnt/a && sync")
    # each count lands whole (a rename): a read never finds the file empty
    s.type("(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; "
           "mv /tmp/counter.new /tmp/counter; sleep 0.1; done) &\r")
    time.sleep(1)
    # a checkpoint first: Linux (SUSPEND_CANCEL) gets 1 from its suspend
    # hypercall and carries on in the same domain
    domid = rows(d)["lx"]["id"]
    r = cli(d, "save", "-c", "lx", str(tmp_path / "lx.ckpt"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert rows(d)["lx"]["id"] == domid
    c0 = int(s.run("cat /tmp/counter"))
    time.sleep(1)
    assert int(s.run("cat /tmp/counter")) > c0
    assert s.run("cat /mnt/a") == "before"
    up_before = float(s.run("cut -d' ' -f1 /proc/uptime"))
    save = tmp_path / "lx.save"
    t0 = time.monotonic()
    r = cli(d, "save", "lx", str(save), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "lx" not in rows(d)
    s.close()
    r = cli(d, "restore", str(save), timeout=300)
    assert r.returncode == 0, r.stderr
    s = _console(d, shells, "lx")
    s.type("\r")
    s.quiet()
    assert s.run("echo alive") == "alive"
    # the guest's clock went on from where it was saved (no jump either way)
    up_after = float(s.run("cut -d' ' -f1 /proc/uptime"))
    assert up_before < up_after < up_before + (time.monotonic() - t0) + 30
    # and its wall clock is the host's right after the restore
    t1 = time.time()
    guest_now = int(s.run("date +%s"))
    t2 = time.time()
    assert t1 - 4 <= guest_now <= t2 + 1, (t1, guest_now, t2)
    c1 = int(s.run("cat /tmp/counter"))
    time.sleep(1)
    assert int(s.run("cat /tmp/counter")) > c1, "the background loop stopped"
    assert s.run("nproc") == "2"
    assert s.run("cat /mnt/a") == "before"
    s.run("echo after > /mnt/b && sync && echo 3 > /proc/sys/vm/drop_caches")
    assert s.run("cat /mnt/a /mnt/b") == "before\nafter"
    # netfront reconnected to the new domain's vif, on the same bridge
    assert " 0% packet loss" in s.run("ping -c 3 -W 5 192.0.2.1", timeout=60)
    r = ns.run(linux_images.busybox, "ping", "-c", "3", "-W", "5", "192.0.2.2", timeout=60)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
    # what the kernel said from the suspend on (Linux's own PM messages only)
    after = s.run("dmesg | sed -n '/suspending xenstore/,$p'")
    assert "Restarting tasks ... done." in after, after
    bad = s.run("dmesg | sed -n '/suspending xenstore/,$p' | "
                "grep -i -E 'bug|oops|error|fail|warn|timed out' || true")
    assert bad == "", bad


def test_linux_vcpu_down_across_restore(kvm, linux_images, tmp_path):
    """A vCPU the guest took down is restored down and uninitialised (as
    Xen's restore): the guest brings it up again with VCPUOP_initialise."""
    import threading
    from pyxen.dom0.xenstore.store import Client
    from pyxen.toolstack import savefile
    from pyxen.toolstack.guestshell import GuestShell
    s = GuestShell(linux_images, vcpus=2)
    s2 = None
    try:
        s.settle()
        assert s.run("echo 0 > /sys/devices/system/cpu/cpu1/online; nproc") == "1"
        ev = threading.Event()
        s.dom.on_suspend = ev.set
        xs = s.dom.dom0.xenstore
        with xs.access() as store:
            store.write(Client(store, 0, True), f"/local/domain/{s.dom.domid}/control/shutdown",
                        b"suspend")
        assert ev.wait(60)
        path = str(tmp_path / "down.save")
        savefile.write_domain(s.dom, path, s.cfg.to_dict())
        s.close()
        s2 = GuestShell(linux_images, vcpus=2, restore=path)
        assert not s2.dom.vcpus[1].initialised
        s2.type("\r")
        s2.quiet()
        assert s2.run("nproc") == "1"
        assert s2.run("echo 1 > /sys/devices/system/cpu/cpu1/online; nproc") == "2"
        assert s2.dom.vcpus[1].pv.online
        assert "BUG" not in s2.text
    finally:
        if s2 is not None:
            s2.close()
        if s.result is None:
            s.close()
