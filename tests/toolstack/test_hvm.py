"""HVM domains (type = "hvm", issue 19): QEMU as the device model under pyxend.

The end-to-end test boots Debian's unmodified cloud kernel and pyxen's busybox
initramfs as an HVM guest (kernel=/ramdisk= direct boot, console on the
emulated serial port) under QEMU's TCG - this host's KVM is PVM, which cannot
run it - and drives it through pyxen as an administrator does. It fails,
never skips, without qemu-system-x86_64 or /dev/kvm (the rd fixture).
"""
from __future__ import annotations

import json
import os
import pty
import select
import shutil
import sys
import time

from daemon_helpers import cli, env_for, rows, wait_until, xs
from netns_helpers import netns  # noqa: F401  (fixture)

from pyxen.toolstack import hvm
from pyxen.toolstack.domconfig import DomainConfig

MARKER = b"pyxen initramfs: Linux"


def hvm_cfg(tmp_path, images, name="hvm1", **extra) -> str:
    lines = ['type = "hvm"', f'name = "{name}"', "memory = 256", "vcpus = 1",
             f'kernel = "{images.kernel}"', f'ramdisk = "{images.initrd}"',
             'extra = "console=ttyS0"', 'serial = "pty"', "sdl = 0", "vnc = 0"]
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    p = tmp_path / f"{name}.cfg"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_qemu_argv_from_xl_keys(tmp_path):
    """xl.cfg's HVM keys become QEMU's options (no QEMU is run)."""
    assert shutil.which(hvm.QEMU), "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"")
    cfg = tmp_path / "a.cfg"
    cfg.write_text(f'type="hvm"\nname="a"\nmemory=128\nvcpus=2\nmaxvcpus=4\nserial="pty"\n'
                   f'vnc=1\nvnclisten="0.0.0.0:3"\nvncpasswd="pw"\nstdvga=1\nacpi=0\nboot="dc"\n'
                   f'disk=["format=qcow2, vdev=hda, target={disk}",'
                   f' "vdev=hdc, devtype=cdrom, target="]\n'
                   f'vif=["bridge=br9, mac=00:16:3e:00:00:01, model=e1000", "model=virtio-net"]\n'
                   f'device_model_args=["-no-hpet"]\nviridian=1\nbogus=2\n')
    c = DomainConfig.from_file(cfg)
    assert c.warnings == [f"{cfg}:16: warning: 'viridian' is not supported by pyxen yet, ignored",
                          f"{cfg}:17: warning: unknown key 'bogus' ignored"]
    a = " ".join(hvm.qemu_argv(c, 7, qmp="/q", serial_socket="/s"))
    for part in ("-S ", "-machine pc,acpi=off", "-m 128", "-smp 2,maxcpus=4",
                 "-qmp unix:/q,server=on,wait=off", "-vga std",
                 "-vnc 0.0.0.0:3,to=99,password=on", "-boot order=dc",
                 "-chardev socket,id=serial0,path=/s,server=on,wait=off -serial chardev:serial0",
                 f"-drive if=ide,index=0,id=hda,media=disk,file={disk},format=qcow2",
                 "-drive if=ide,index=2,id=hdc,media=cdrom,readonly=on",
                 "-netdev tap,id=net0,ifname=vif7.0-emu,script=no,downscript=no "
                 "-device e1000,netdev=net0,mac=00:16:3e:00:00:01",
                 "-device virtio-net-pci,netdev=net1", "-no-hpet",
                 f"-accel {hvm.detect_accel()[0]}"):
        assert part in a, part
    assert "-kernel" not in a and "-display none" not in a


def test_accelerator_here_is_tcg():
    """This host's KVM is PVM: QEMU's KVM accelerator cannot run a stock kernel."""
    assert os.path.isdir("/sys/module/kvm_pvm"), "these hosts' KVM is PVM"
    assert hvm.detect_accel()[0] == "tcg"


def test_hvm_linux_under_pyxend(rd, tmp_path, linux_images):
    """create -c shows the unmodified kernel's serial console; list, pause,
    unpause, XenStore, list -l, the console log, ACPI shutdown, poweroff
    from inside and destroy."""
    assert shutil.which(hvm.QEMU), "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    t0 = time.monotonic()
    cfg = hvm_cfg(tmp_path, linux_images, on_poweroff="destroy")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "create", "-c", cfg])
    out = b""

    def read_until(marker: bytes, timeout: float) -> bool:
        nonlocal out
        end = time.monotonic() + timeout
        while marker not in out and time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return marker in out
    try:
        assert read_until(MARKER, 50), out[-3000:].decode(errors="replace")
        assert read_until(b"pyxen:/# ", 10), out[-2000:].decode(errors="replace")
        boot = time.monotonic() - t0
        r = rows(rd)["hvm1"]
        domid = r["id"]
        assert r["mem"] == 256 and r["vcpus"] == 1 and r["state"] in ("r-----", "-b----"), r
        # the shell on the serial port answers
        os.write(fd, b"echo hv-$((6*7))\r")
        assert read_until(b"hv-42", 15), out[-2000:].decode(errors="replace")
        os.write(fd, b"\x1d")                     # Ctrl-] detaches create -c
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, out[-1000:].decode(errors="replace")
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    print(f"HVM (TCG) boot to the shell: {boot:.1f} s")

    # pause / unpause: QMP stop / cont
    assert cli(rd, "pause", "hvm1").returncode == 0
    assert rows(rd)["hvm1"]["state"] == "--p---", rows(rd)
    assert cli(rd, "unpause", "hvm1").returncode == 0
    assert rows(rd)["hvm1"]["state"] in ("r-----", "-b----"), rows(rd)

    # XenStore as libxl writes it for a domain; list -l: libxl's JSON, HVM, TCG
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/name").stdout.strip() == "hvm1"
    vm = xs(rd, "xenstore-read", f"/local/domain/{domid}/vm").stdout.strip()
    assert xs(rd, "xenstore-read", f"{vm}/name").stdout.strip() == "hvm1"
    r = cli(rd, "list", "-l", "hvm1")
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout)[0]["config"]
    assert conf["c_info"]["type"] == "hvm"
    assert conf["b_info"]["type.hvm"]["serial"] == "pty"
    assert conf["b_info"]["device_model_accel"] == "tcg"

    # the serial console is logged as a PV console is
    log = (rd / "log" / "guest-hvm1.log").read_bytes()
    assert MARKER in log and b"hv-42" in log

    # shutdown: the ACPI power button (busybox init has no handler for it, so
    # the guest stays up); then poweroff from inside ends the domain (on_poweroff)
    assert cli(rd, "shutdown", "hvm1").returncode == 0
    assert wait_until(lambda: any("ACPI power button" in line
                                  for line in cli(rd, "dmesg").stdout.splitlines()), 5)
    # xl trigger: an NMI (QMP inject-nmi) reaches the guest kernel, which has no
    # use for it and says so; QEMU's ACPI has no sleep button (-ENOSYS, libxl's
    # error, and xl succeeds)
    assert cli(rd, "trigger", "hvm1", "nmi").returncode == 0
    guest_log = rd / "log" / "guest-hvm1.log"
    assert wait_until(lambda: b"NMI received for unknown reason" in guest_log.read_bytes(), 10)
    r = cli(rd, "qemu-monitor-command", "hvm1", "info status")
    assert r.returncode == 0 and "VM status: running" in r.stdout, (r.stdout, r.stderr)
    r = cli(rd, "trigger", "hvm1", "sleep")
    assert r.returncode == 0 and "Send trigger 'sleep' failed: Function not implemented" \
        in r.stderr, r.stderr
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", "hvm1"])
    out = b""
    try:
        assert read_until(b"hv-42", 15)          # attached: the history came
        time.sleep(0.5)
        os.write(fd, b"poweroff -f\r")
        assert wait_until(lambda: "hvm1" not in rows(rd), 20), \
            "poweroff did not end the domain: " + out[-1000:].decode(errors="replace")
        assert wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 10), \
            "the console did not end with the domain"
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert "reboot: Power down" in (rd / "log" / "guest-hvm1.log").read_text(errors="replace")


def test_hvm_vnc_serial_console_reboot_destroy(rd, tmp_path, linux_images):
    """vnc=1 with a password serves RFB where the domain's info says;
    console -t serial attaches an HVM domain's console; reboot (system reset)
    restarts the domain as on_reboot says (a new domain id, as libxl);
    destroy removes it and its QEMU."""
    import socket
    cfg = hvm_cfg(tmp_path, linux_images, name="hvm2", vnc=1, vncpasswd="s3cret")
    r = cli(rd, "create", cfg)
    assert r.returncode == 0, r.stderr
    first = rows(rd)["hvm2"]["id"]
    from pyxen.toolstack.client import Client
    with Client(rd) as c:
        row = c.call("list", dom="hvm2")[0]
    dm = row["device_model"]
    assert dm["accel"] == "tcg" and dm["vnc"]["host"] == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", int(dm["vnc"]["port"])), timeout=5) as s:
        assert s.recv(12).startswith(b"RFB 003.")
    if shutil.which("vncviewer") is None:      # else it would open a window
        r = cli(rd, "vncviewer", "hvm2")
        assert r.returncode == 1 and f"127.0.0.1::{dm['vnc']['port']}" in r.stderr, r.stderr
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", "-t", "serial",
                                  "hvm2"])
    out = b""
    try:
        end = time.monotonic() + 40
        while MARKER not in out and time.monotonic() < end:
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        assert MARKER in out, out[-2000:].decode(errors="replace")
        os.write(fd, b"\x1d")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert cli(rd, "reboot", "hvm2").returncode == 0
    assert wait_until(lambda: rows(rd).get("hvm2", {}).get("id", first) != first, 15)
    listing = json.loads(cli(rd, "list", "-l", "hvm2").stdout)
    assert listing[0]["domid"] != first
    assert listing[0]["config"]["b_info"]["type.hvm"]["vnc"]["enable"] == "True"
    assert cli(rd, "destroy", "hvm2").returncode == 0
    assert "hvm2" not in rows(rd)
    assert not list((rd / "domains").glob("*.qmp"))


def boot_sector(message: bytes) -> bytes:
    """A real-mode boot sector that writes message to COM1 and halts."""
    code = bytearray(b"\x31\xc0\x8e\xd8\xfc")                 # xor ax,ax; mov ds,ax; cld
    code += b"\xbe" + (0x7c00 + 22).to_bytes(2, "little")     # mov si, msg
    code += b"\xba\xf8\x03"                                  # mov dx, 0x3f8
    code += b"\xac"                                          # l: lodsb
    code += b"\x84\xc0"                                      # test al, al
    code += b"\x74\x03"                                      # jz done
    code += b"\xee"                                          # out dx, al
    code += b"\xeb\xf8"                                      # jmp l
    code += b"\xf4"                                          # done: hlt
    code += b"\xeb\xfd"                                      # jmp done
    assert len(code) == 22
    code += message + b"\0"
    return bytes(code) + b"\0" * (510 - len(code)) + b"\x55\xaa"


def test_hvm_boots_a_disk_through_the_bios(rd, tmp_path):
    """No kernel=: SeaBIOS boots the first disk in boot= order (a raw IDE
    disk here; the empty cdrom drive is skipped), its output on the serial
    console; cd-insert and cd-eject change the cdrom drive's medium; a kill -9 of the supervisor takes QEMU with it and the domain
    is marked crashed (on_crash=preserve keeps it listed)."""
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector(b"pyxen-bios-boot-ok\r\n"))
    cfg = tmp_path / "bios.cfg"
    cfg.write_text(f'type = "hvm"\nname = "bios"\nmemory = 32\nserial = "pty"\nboot = "dc"\n'
                   f'on_crash = "preserve"\n'
                   f'disk = [ "format=raw, vdev=hda, target={disk}",'
                   f' "vdev=hdc, devtype=cdrom, target=" ]\n')
    r = cli(rd, "create", str(cfg))
    assert r.returncode == 0, r.stderr
    log = rd / "log" / "guest-bios.log"
    assert wait_until(lambda: log.exists() and b"pyxen-bios-boot-ok" in log.read_bytes(), 30), \
        log.read_bytes()[-500:] if log.exists() else "no console log"
    from pyxen.toolstack.client import Client

    def media():
        with Client(rd) as c:
            return c.call("list", dom="bios")[0]["device_model"]["cdrom"]
    # cd-insert / cd-eject: QMP blockdev-change-medium / eject on the empty drive
    iso = tmp_path / "media.iso"
    iso.write_bytes(b"\0" * 2048 * 16)
    assert media() == {"hdc": None}
    r = cli(rd, "cd-insert", "bios", "hdc", str(iso))
    assert r.returncode == 0, r.stderr
    assert media() == {"hdc": str(iso)}
    r = cli(rd, "cd-insert", "bios", "hda", str(iso))
    assert r.returncode != 0 and "not a cdrom drive" in r.stderr, r.stderr
    assert cli(rd, "cd-eject", "bios", "hdc").returncode == 0
    assert media() == {"hdc": None}
    conf = json.loads(cli(rd, "list", "-l", "bios").stdout)[0]["config"]
    assert [d["vdev"] for d in conf["disks"]] == ["hda", "hdc"]
    assert conf["b_info"]["type.hvm"]["boot"] == "dc" and "kernel" not in conf["b_info"]
    with Client(rd) as c:
        row = c.call("list", dom="bios")[0]
    qemu = row["device_model"]["pid"]
    os.kill(row["pid"], 9)
    assert wait_until(lambda: rows(rd).get("bios", {}).get("state") == "---sc-", 10), rows(rd)
    assert wait_until(lambda: not os.path.exists(f"/proc/{qemu}") or
                      open(f"/proc/{qemu}/stat").read().split()[2] == "Z", 5), "QEMU outlived it"
    assert cli(rd, "destroy", "bios").returncode == 0


def test_pyxend_restart_keeps_an_hvm_domain(rd, tmp_path, linux_images):
    """Killing pyxend leaves the HVM domain (its supervisor and QEMU) running;
    a new pyxend finds it, and its console works again through fresh eventfds."""
    import signal
    from daemon_helpers import daemon_pid, start_daemon
    r = cli(rd, "create", hvm_cfg(tmp_path, linux_images, name="hvm3"))
    assert r.returncode == 0, r.stderr
    domid = rows(rd)["hvm3"]["id"]
    log = rd / "log" / "guest-hvm3.log"
    assert wait_until(lambda: log.exists() and b"pyxen:/# " in log.read_bytes(), 40)
    os.kill(daemon_pid(rd), signal.SIGKILL)
    time.sleep(0.3)
    start_daemon(rd)
    assert rows(rd)["hvm3"]["id"] == domid
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", "hvm3"])
    try:
        # a new pyxend's console has no history: wait until the client is attached
        time.sleep(2)
        os.write(fd, b"echo back-$((20+3))\r")
        assert wait_until(lambda: b"back-23" in log.read_bytes(), 15), log.read_bytes()[-500:]
        os.write(fd, b"\x1d")
        assert wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 10)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert cli(rd, "destroy", "hvm3").returncode == 0


def test_hvm_emulated_nics_on_a_bridge(rd, tmp_path, linux_images, netns):
    """vif entries: emulated NICs (e1000, virtio-net) that the guest finds on
    its PCI bus, on TAP devices vif<domid>.<devid>-emu put on the spec's
    bridge in the spec's network namespace; they go with the domain."""
    ns = netns()
    ns.bridge("hvmbr0", "192.0.2.1")
    cfg = hvm_cfg(tmp_path, linux_images, name="hvm4")
    with open(cfg, "a") as f:
        f.write(f'vif = [ "bridge=hvmbr0, netns={ns.name}, model=e1000, mac=00:16:3e:0a:0b:0c",\n'
                f'        "bridge=hvmbr0, netns={ns.name}, model=virtio-net" ]\n')
    r = cli(rd, "create", cfg)
    assert r.returncode == 0, r.stderr
    domid = rows(rd)["hvm4"]["id"]
    links = ns.links()
    br = links["hvmbr0"]["index"]
    for devid in (0, 1):
        tap = links[f"vif{domid}.{devid}-emu"]
        assert tap.get_attr("IFLA_MASTER") == br and tap.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN")
    log = rd / "log" / "guest-hvm4.log"
    assert wait_until(lambda: log.exists() and b"pyxen:/# " in log.read_bytes(), 40)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", "hvm4"])
    try:
        out, end = b"", time.monotonic() + 15
        while b"pyxen:/# " not in out and time.monotonic() < end:
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        time.sleep(0.3)
        os.write(fd, b"for d in /sys/bus/pci/devices/*; do echo pci-$(cat $d/vendor):$(cat $d/device); "
                     b"done; echo listed-$((1+1))\r")
        assert wait_until(lambda: b"listed-2" in log.read_bytes(), 15), log.read_bytes()[-800:]
        os.write(fd, b"\x1d")
        os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    text = log.read_text(errors="replace")
    assert "pci-0x8086:0x100e" in text          # e1000
    assert "pci-0x1af4:0x1000" in text          # virtio-net (transitional)
    assert cli(rd, "destroy", "hvm4").returncode == 0
    assert wait_until(lambda: not any(n.endswith("-emu") for n in ns.links()), 5), ns.links()
