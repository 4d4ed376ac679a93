"""HVM domains (``type = "hvm"``): their xl.cfg keys and QEMU's command line.

Xen runs a fully virtualized guest with the CPU's virtualization extensions
and QEMU as its device model (firmware, IDE disks, emulated NICs, VGA,
serial ports). pyxen does the same with one QEMU process per HVM domain
(Debian's ``qemu-system-x86_64``), started and supervised by the domain's
process (``toolstack/hvmproc.py``), controlled over QMP
(``toolstack/qmp.py``). Where KVM can run a normal VM (VT-x/AMD-V: the
``kvm_intel``/``kvm_amd`` module) QEMU runs with ``-accel kvm``; elsewhere -
this host's KVM is PVM, which cannot run a guest kernel at CPL0 - with TCG,
QEMU's emulator (measured here: QEMU with ``-accel kvm`` under PVM runs a
real-mode boot sector, but Debian's kernel never prints a line in 40 s, the
host CPU busy in KVM; under TCG it boots in ~25 s).

This module is pure: :func:`hvm_settings` validates the HVM keys while a
DomainConfig is built (domconfig), :func:`qemu_argv` turns a validated config
into QEMU's argv, :func:`detect_accel` decides the accelerator.

xl.cfg keys (xl.cfg(5)) and what they become:

* ``memory``, ``vcpus``/``maxvcpus``: ``-m``, ``-smp N,maxcpus=M``;
* ``kernel``/``ramdisk``/``cmdline`` (``root``/``extra``): direct boot,
  ``-kernel``/``-initrd``/``-append``; without ``kernel`` the guest boots
  from its disks through SeaBIOS, ``boot`` (default "cd", as xl) giving the
  order (a: floppy, c: disk, d: cdrom, n: network);
* ``disk``: xl disk specs (devspec): raw or qcow2 files on the emulated IDE
  bus, ``hda``..``hdd`` (or ``xvda``/``sda``.. in the same order),
  ``devtype=cdrom`` as an IDE CD-ROM (an empty drive without a target),
  ``access=ro`` read-only;
* ``vif``: xl vif specs; an emulated NIC (``model=`` rtl8139, the default as
  libxl's, e1000 or virtio-net) with the spec's MAC on a TAP device
  ``vif<domid>.<devid>-emu`` (libxl's name) that the supervisor makes (in
  the spec's ``netns=``), puts on the spec's bridge and hands QEMU by
  descriptor; ``cd-insert``/``cd-eject`` change a cdrom drive's medium;
* ``serial``: "pty" (the default is none, as xl) is the domain's console:
  ``pyxen console`` attaches to it and pyxend logs it as a PV console;
  "none"; anything else is handed to QEMU's ``-serial`` as xl does;
* ``vnc``, ``vnclisten``, ``vncdisplay``, ``vncunused``, ``vncpasswd``:
  ``-vnc``; ``sdl=1`` is refused with a warning (pyxend has no display);
* ``stdvga`` / ``vga``: ``-vga std`` or ``cirrus`` (xl's default) or none;
* ``acpi`` (default 1): the machine's ACPI (``shutdown`` presses its power
  button);
* ``localtime``: the RTC in local time;
* ``device_model_args`` / ``device_model_args_hvm``: appended to QEMU's argv;
* ``on_poweroff``/``on_reboot``/``on_crash``: QEMU exits on the guest's
  power-off, reset or panic (pvpanic) and pyxend applies the action as for a
  PV domain.
"""
from __future__ import annotations

import os
import re
import shutil

from .devspec import parse_disk_spec, parse_vif_spec

__all__ = ["HVM_KEYS", "NIC_MODELS", "hvm_settings", "qemu_argv", "detect_accel",
           "tap_name", "drive_id", "find_cdrom", "QEMU"]

QEMU = "qemu-system-x86_64"

#: The keys an HVM domain acts on, besides the ones every domain has.
HVM_KEYS = frozenset({
    "serial", "vnc", "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "sdl",
    "stdvga", "vga", "acpi", "boot", "localtime", "device_model_args",
    "device_model_args_hvm", "device_model_version", "device_model_override",
})

#: vif model= -> QEMU device (libxl hands model= to QEMU as the device's name).
NIC_MODELS = {"rtl8139": "rtl8139", "e1000": "e1000", "virtio-net": "virtio-net-pci",
              "virtio-net-pci": "virtio-net-pci", "virtio": "virtio-net-pci",
              "ne2k_pci": "ne2k_pci", "pcnet": "pcnet", "i82559er": "i82559er",
              "vmxnet3": "vmxnet3"}
DEFAULT_NIC_MODEL = "rtl8139"        # libxl's for qemu-xen
IDE_SLOTS = 4
_DISK_NAME = re.compile(r"(hd|xvd|sd)([a-z])\Z")


def tap_name(domid: int, devid: int) -> str:
    """libxl's name for the TAP device of an emulated NIC."""
    return f"vif{domid}.{devid}-emu"


def ide_index(vdev: str) -> int | None:
    """IDE slot (0 primary master .. 3 secondary slave) of a vdev name."""
    m = _DISK_NAME.match(vdev.split(":", 1)[0])
    if m is None:
        return None
    return ord(m.group(2)) - ord("a")


def drive_id(vdev: str) -> str:
    """QEMU's id of the drive in vdev's IDE slot (hda..hdd)."""
    return "hd" + "abcd"[ide_index(vdev)]


def find_cdrom(h: dict, vdev: str):
    """The cdrom drive of HVM settings h that vdev names (by IDE slot), or None."""
    slot = ide_index(vdev)
    if slot is None:
        return None
    for text in h.get("disk") or ():
        d = parse_disk_spec(text)
        if d.devtype == "cdrom" and ide_index(d.vdev) == slot:
            return d
    return None


def _truth(b, key: str, default: bool) -> bool:
    v = b.integer(key, int(default), 0, 1, "0 or 1")
    return bool(v)


def hvm_settings(b, devices: dict, name: str) -> dict:
    """The HVM part of a DomainConfig, from domconfig's builder ``b`` (its
    setting/string/integer/string_list/warn helpers): every error names the
    key's file and line. ``devices`` is the builder's checked device lists:
    disk= and vif= move from there into the HVM settings (QEMU emulates
    them; no PV backend serves an HVM domain's disks)."""
    out: dict = {"device_model": QEMU}
    disks = devices.pop("disk", [])
    vifs = devices.pop("vif", [])
    for key, lst in list(devices.items()):
        if lst:
            b.warn(b.setting(key), f"'{key}' devices are PV devices; an HVM domain "
                   "has none (ignored)")
            devices[key] = []
    devices["disk"], devices["vif"] = [], []

    # serial: a string or a list of them (xl: serial_list)
    s = b.setting("serial")
    serial: list[str] = []
    if s is not None:
        serial = b.string_list("serial") if isinstance(s.value, list) else [b.string("serial")]
        for v in serial:
            if v == "":
                raise s.error("'serial' is empty")
        if serial.count("pty") > 1:
            raise s.error("only one serial port can be 'pty' (the domain's console)")
    out["serial"] = serial

    # display
    out["vnc"] = _truth(b, "vnc", False)
    listen = b.string("vnclisten") or "127.0.0.1"
    display = b.integer("vncdisplay", None, 0, 65535 - 5900, "VNC display number")
    if ":" in listen:                            # xl: vnclisten="ADDR:DISPLAY"
        host, _, d = listen.rpartition(":")
        if not d.isdigit():
            raise b.setting("vnclisten").error(f"bad vnclisten {listen!r} (ADDRESS[:DISPLAY])")
        listen, display = host, int(d) if display is None else display
    out["vnclisten"] = listen
    out["vncdisplay"] = display
    out["vncunused"] = _truth(b, "vncunused", True)
    out["vncpasswd"] = b.string("vncpasswd")
    if out["vncpasswd"] is not None and "," in out["vncpasswd"]:
        raise b.setting("vncpasswd").error("vncpasswd must not contain ','")
    if _truth(b, "sdl", False):
        b.warn(b.setting("sdl"), "sdl=1: pyxend has no display for an SDL window; use vnc")
    vga = b.string("vga")
    stdvga = _truth(b, "stdvga", False)
    if vga is None:
        vga = "stdvga" if stdvga else "cirrus"
    elif vga not in ("stdvga", "cirrus", "none"):
        raise b.setting("vga").error(f"unknown vga {vga!r} (stdvga, cirrus or none)")
    out["vga"] = vga
    out["acpi"] = _truth(b, "acpi", True)
    out["localtime"] = _truth(b, "localtime", False)
    boot = b.string("boot") or "cd"
    if not boot or any(c not in "acdn" for c in boot):
        raise b.setting("boot").error(f"bad boot order {boot!r} (letters of a, c, d, n)")
    out["boot"] = boot

    dmv = b.string("device_model_version")
    if dmv not in (None, "qemu-xen"):
        b.warn(b.setting("device_model_version"), f"device_model_version {dmv!r}: pyxen "
               "runs Debian's QEMU (qemu-xen's role)")
    dmo = b.string("device_model_override")
    if dmo is not None:
        out["device_model"] = dmo
    args: list[str] = []
    for key in ("device_model_args", "device_model_args_hvm"):
        args += b.string_list(key)
    out["device_model_args"] = args

    # disks and NICs: the xl specs, checked for what QEMU can emulate
    ds = b.setting("disk")
    used: dict[int, str] = {}
    for i, text in enumerate(disks):
        d = parse_disk_spec(text)
        idx = ide_index(d.vdev)
        if idx is None or idx >= IDE_SLOTS:
            raise ds.error(f"disk entry {i}: vdev {d.vdev!r}: an HVM domain's disks are on the "
                           "emulated IDE bus: hda..hdd (or xvda..xvdd, sda..sdd)")
        if idx in used:
            raise ds.error(f"disk entry {i}: {d.vdev} is the same IDE slot as {used[idx]}")
        used[idx] = d.vdev
        if d.target is not None and d.format not in ("raw", "qcow2", "qcow", "vhd", "qed"):
            raise ds.error(f"disk entry {i}: format {d.format!r} is not one QEMU opens here")
        if d.target is None and d.devtype != "cdrom":
            raise ds.error(f"disk entry {i}: a disk needs a target (only a cdrom may be empty)")
        if b.check_files and d.target is not None and not os.path.exists(d.target):
            raise ds.error(f"disk entry {i}: {d.target}: no such file")
    vs = b.setting("vif")
    for i, text in enumerate(vifs):
        v = parse_vif_spec(text, i, name)
        if v.model is not None and v.model not in NIC_MODELS:
            raise vs.error(f"vif entry {i}: unknown NIC model {v.model!r} "
                           f"({', '.join(sorted(NIC_MODELS))})")
    out["disk"], out["vif"] = list(disks), list(vifs)
    out["accel"] = detect_accel()[0]
    return out


def detect_accel() -> tuple[str, str]:
    """("kvm" or "tcg", why). KVM runs an HVM guest only with VT-x or AMD-V
    (kvm_intel / kvm_amd, the CPU's vmx / svm flag) and a usable /dev/kvm;
    this host's KVM is PVM (kvm_pvm), which has neither, so TCG."""
    if os.environ.get("PYXEN_HVM_ACCEL") in ("kvm", "tcg"):
        return os.environ["PYXEN_HVM_ACCEL"], "PYXEN_HVM_ACCEL"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return "tcg", "KVM is PVM here (no VT-x/AMD-V): QEMU's TCG emulates the guest"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    hw = ("vmx" in flags and os.path.isdir("/sys/module/kvm_intel")) or \
         ("svm" in flags and os.path.isdir("/sys/module/kvm_amd"))
    if hw and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm", "KVM with hardware virtualization"
    return "tcg", "no VT-x/AMD-V with KVM here: QEMU's TCG emulates the guest"


def qemu_argv(cfg, domid: int, *, qmp: str, serial_socket: str | None,
              tap_fds: dict[int, int] | None = None) -> list[str]:
    """QEMU's argv for the HVM domain ``cfg`` (a validated DomainConfig):
    started paused (-S), controlled over the QMP socket ``qmp``, its "pty"
    serial port on the Unix socket ``serial_socket`` (which the domain process
    bridges to the domain's console). ``tap_fds``: devid -> a descriptor of
    the vif's TAP device, made (and put on its bridge, in its netns) by the
    supervisor; without it QEMU makes the TAP device by name."""
    h = cfg.hvm
    exe = h.get("device_model") or QEMU
    found = shutil.which(exe)
    if found is None:
        raise FileNotFoundError(f"{exe} not found (Debian: apt-get install qemu-system-x86)")
    accel = h.get("accel") or detect_accel()[0]
    machine = "pc" + ("" if h.get("acpi", True) else ",acpi=off")
    argv = [found, "-name", f"{cfg.name},debug-threads=on", "-S", "-nodefaults",
            "-no-user-config", "-machine", machine, "-accel", accel,
            "-m", str(cfg.memory),
            "-smp", f"{cfg.vcpus},maxcpus={cfg.maxvcpus or cfg.vcpus}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            # the guest's power-off, reset and panic end QEMU; pyxend applies
            # on_poweroff / on_reboot / on_crash (a restart is a new domain, as libxl)
            "-action", "reboot=shutdown,shutdown=poweroff,panic=shutdown",
            "-device", "pvpanic"]
    if cfg.uuid:
        argv += ["-uuid", cfg.uuid]
    if h.get("localtime"):
        argv += ["-rtc", "base=localtime"]
    # display
    argv += ["-vga", {"stdvga": "std", "cirrus": "cirrus", "none": "none"}[h.get("vga", "cirrus")]]
    if h.get("vnc"):
        disp = h.get("vncdisplay") or 0
        vnc = f"{h.get('vnclisten') or '127.0.0.1'}:{disp}"
        if h.get("vncunused", True):
            vnc += ",to=99"
        if h.get("vncpasswd"):
            vnc += ",password=on"
        argv += ["-vnc", vnc]
    else:
        argv += ["-display", "none"]
    # serial ports
    for i, s in enumerate(h.get("serial") or ()):
        if s == "pty":
            if serial_socket is None:
                raise ValueError("a pty serial port needs the console socket")
            argv += ["-chardev", f"socket,id=serial{i},path={serial_socket},server=on,wait=off",
                     "-serial", f"chardev:serial{i}"]
        else:
            argv += ["-serial", s]
    # direct kernel boot, or the firmware's boot order
    if cfg.kernel:
        argv += ["-kernel", cfg.kernel]
        if cfg.ramdisk:
            argv += ["-initrd", cfg.ramdisk]
        if cfg.cmdline:
            argv += ["-append", cfg.cmdline]
    else:
        argv += ["-boot", f"order={h.get('boot') or 'cd'}"]
    for text in h.get("disk") or ():
        d = parse_disk_spec(text)
        opts = [f"if=ide,index={ide_index(d.vdev)}", f"id={drive_id(d.vdev)}",
                f"media={'cdrom' if d.devtype == 'cdrom' else 'disk'}"]
        if d.target is not None:
            fmt = {"qcow": "qcow", "vhd": "vpc"}.get(d.format, d.format)
            opts += [f"file={_escape(d.target)}", f"format={fmt}"]
        if d.access == "ro" or d.devtype == "cdrom":
            opts.append("readonly=on")
        argv += ["-drive", ",".join(opts)]
    for i, text in enumerate(h.get("vif") or ()):
        v = parse_vif_spec(text, i, cfg.name)
        model = NIC_MODELS[v.model or DEFAULT_NIC_MODEL]
        if tap_fds is not None:
            tap = f"tap,id=net{v.devid},fd={tap_fds[v.devid]}"
        else:
            tap = f"tap,id=net{v.devid},ifname={tap_name(domid, v.devid)},script=no,downscript=no"
        argv += ["-netdev", tap,
                 "-device", f"{model},netdev=net{v.devid},mac={v.mac}"]
    argv += list(h.get("device_model_args") or ())
    return argv


def _escape(path: str) -> str:
    """A QEMU option value: commas doubled."""
    return path.replace(",", ",,")
