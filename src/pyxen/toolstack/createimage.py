"""`pyxen create-image`: a Debian domU image and its xl.cfg, as xen-tools'
xen-create-image makes them.

What it does, in order (each a step the progress display names):

1. ``debootstrap`` (Debian's package) a minimal Debian (``--variant=minbase``)
   into a folder next to the image, with the packages a bootable system
   needs (`PACKAGES`: systemd, udev, the stock cloud kernel, initramfs-tools,
   openssh-server, ifupdown, ...) from the mirror the host's own apt uses
   (`host_mirror`). The downloaded .debs are kept in the cache
   (``$PYXEN_CACHE/debootstrap/DIST``, debootstrap's ``--cache-dir``), so
   the next image downloads nothing that has not changed.
2. configure it (`configure_root`): hostname, hosts, fstab (root on
   /dev/xvda, no partition table, as xen-tools' images), network
   (ifupdown: static ADDR/PREFIX + gateway, or DHCP), root's password
   and/or authorized_keys, a getty on the Xen console hvc0, a fresh
   machine-id, ``xen-blkfront``/``xen-netfront`` in the initramfs
   (rebuilt in a chroot), and /boot/grub/grub.cfg naming the kernel,
   initrd and command line (what pygrub and PV GRUB read).
3. make DIR/NAME.img: an ext4 file system of --size, filled from the folder
   by ``mke2fs -d`` (e2fsprogs: no loop mount needed); with --format qcow2
   converted with ``qemu-img convert`` to DIR/NAME.qcow2.
4. write DIR/NAME.cfg: ``bootloader = "pygrub"``, the disk, one vif on
   --bridge, memory and vcpus.

Needs root (debootstrap and chroot do): `requirements_problem` says what is
missing before anything is written.
"""
from __future__ import annotations

import glob
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..build.fetch import default_cache_dir

#: What the image gets on top of debootstrap's minbase (as xen-tools' default
#: Debian install: a kernel for pygrub, sshd, ifupdown networking).
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "libpam-systemd", "linux-image-cloud-amd64",
    "initramfs-tools", "zstd", "e2fsprogs", "kmod", "openssh-server", "ifupdown",
    "isc-dhcp-client", "iproute2", "iputils-ping", "netbase", "procps", "less",
)
#: Modules the initramfs must carry to find the root disk (and the network).
INITRAMFS_MODULES = ("xen-blkfront", "xen-netfront")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_DEVICE = "/dev/xvda"
CMDLINE = f"root={ROOT_DEVICE} ro console=hvc0 net.ifnames=0"
_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_SIZE_RE = re.compile(r"(\d+)([KMGT]?)i?B?\Z", re.I)

Progress = Callable[[str, str], None]
"""progress(step, detail): a step starts (detail "") or says how it goes."""


class CreateImageError(Exception):
    """The image cannot be made; the message says why."""


@dataclass
class ImageSpec:
    """The options of ``pyxen create-image`` (xen-create-image's names)."""
    hostname: str
    dir: str
    dist: str = "bookworm"
    size: str = "4G"
    memory: int = 512
    vcpus: int = 2
    format: str = "raw"
    password: str | None = None
    ssh_key: str | None = None        # a public key file
    ip: str | None = None             # ADDR/PREFIX
    gateway: str | None = None
    dhcp: bool = False
    bridge: str = "xenbr0"
    mac: str | None = None
    mirror: str | None = None
    force: bool = False
    extra_packages: tuple[str, ...] = ()
    cache_dir: str | None = None

    @property
    def image_path(self) -> Path:
        ext = "qcow2" if self.format == "qcow2" else "img"
        return Path(self.dir).resolve() / f"{self.hostname}.{ext}"

    @property
    def config_path(self) -> Path:
        return Path(self.dir).resolve() / f"{self.hostname}.cfg"


@dataclass
class ImageResult:
    image: Path
    config: Path
    kernel_version: str
    password: str | None               # set when create-image generated it
    seconds: dict[str, float] = field(default_factory=dict)


def size_bytes(text: str) -> int:
    """xen-tools' sizes: 4G, 512M, 4096 (MiB without a unit)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise CreateImageError(f"bad size {text!r} (e.g. 4G, 512M)")
    n = int(m.group(1))
    unit = m.group(2).upper() or "M"
    return n << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]


def check_spec(spec: ImageSpec) -> None:
    """Refuse bad options before anything is done."""
    if not _NAME_RE.match(spec.hostname):
        raise CreateImageError(f"bad hostname {spec.hostname!r} (letters, digits and '-', "
                               "at most 63)")
    if spec.format not in ("raw", "qcow2"):
        raise CreateImageError(f"bad format {spec.format!r} (raw or qcow2)")
    if size_bytes(spec.size) < 1 << 30:
        raise CreateImageError(f"size {spec.size} is too small for Debian (at least 1G)")
    if spec.ip and spec.dhcp:
        raise CreateImageError("--ip and --dhcp exclude each other")
    if spec.ip:
        try:
            iface = ipaddress.ip_interface(spec.ip)
        except ValueError as e:
            raise CreateImageError(f"bad --ip {spec.ip!r}: {e}") from None
        if "/" not in spec.ip:
            raise CreateImageError(f"--ip {spec.ip}: give the prefix too (ADDR/PREFIX)")
        if spec.gateway:
            try:
                gw = ipaddress.ip_address(spec.gateway)
            except ValueError as e:
                raise CreateImageError(f"bad --gateway {spec.gateway!r}: {e}") from None
            if gw not in iface.network:
                raise CreateImageError(f"--gateway {gw} is not in {iface.network}")
    elif spec.gateway:
        raise CreateImageError("--gateway needs --ip")
    if spec.ssh_key and not Path(spec.ssh_key).is_file():
        raise CreateImageError(f"--ssh-key {spec.ssh_key}: no such file")
    if spec.password is not None and (":" in spec.password or "\n" in spec.password):
        raise CreateImageError("the password may not contain ':' or a newline")
    for p in (spec.image_path, spec.config_path):
        if p.exists() and not spec.force:
            raise CreateImageError(f"{p} exists (--force replaces it)")


def requirements_problem(spec: ImageSpec) -> str | None:
    """What this host lacks to make the image, or None."""
    if os.geteuid() != 0:
        return ("create-image needs root: debootstrap installs packages as root and runs "
                "their scripts in a chroot (run it as root, e.g. with sudo)")
    need = {"debootstrap": "debootstrap", "mke2fs": "e2fsprogs", "chroot": "coreutils"}
    if spec.format == "qcow2":
        need["qemu-img"] = "qemu-utils"
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in need.items()
               if shutil.which(tool) is None]
    if missing:
        return "create-image needs " + ", ".join(missing) + ": apt-get install them"
    return None


def host_mirror(dist: str = "bookworm", sources: str = "/etc/apt") -> str:
    """The Debian mirror this host's apt uses for `dist` (its sources.list
    and sources.list.d, one-line and deb822 forms); Debian's CDN if none."""
    entries: list[tuple[str, list[str]]] = []        # (uri, suites)
    base = Path(sources)
    for path in [base / "sources.list", *sorted((base / "sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" in fields.get("types", "").split():
                    for uri in fields.get("uris", "").split():
                        entries.append((uri, fields.get("suites", "").split()))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    for uri, suites in entries:
        if dist in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _run(cmd: list[str], what: str, progress: Progress | None = None, step: str = "",
         **kw) -> str:
    """Run cmd; its output lines go to progress; an error says what failed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", stdin=subprocess.DEVNULL, **kw)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        lines.append(line)
        if progress and line:
            progress(step, line)
    if proc.wait() != 0:
        tail = "\n".join(lines[-25:])
        raise CreateImageError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return "\n".join(lines)


def debootstrap(spec: ImageSpec, root: Path, progress: Progress | None = None) -> None:
    """Debian into `root`, the packages cached for the next image."""
    cache = Path(spec.cache_dir or default_cache_dir()) / "debootstrap" / spec.dist
    cache.mkdir(parents=True, exist_ok=True)
    mirror = spec.mirror or host_mirror(spec.dist)
    include = ",".join(PACKAGES + tuple(spec.extra_packages))
    if progress:
        progress("debootstrap", f"{spec.dist} from {mirror}")
    _run(["debootstrap", "--variant=minbase", f"--cache-dir={cache}", f"--include={include}",
          spec.dist, str(root), mirror], "debootstrap", progress, "debootstrap")


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)


def network_config(spec: ImageSpec) -> str:
    # allow-hotplug (as Debian's installer): eth0 comes up when netfront
    # makes it, and a domain started without a vif does not wait for it
    lines = ["# made by pyxen create-image", "auto lo", "iface lo inet loopback", "",
             "allow-hotplug eth0"]
    if spec.ip:
        iface = ipaddress.ip_interface(spec.ip)
        lines += ["iface eth0 inet static", f"    address {iface.with_prefixlen}"]
        if spec.gateway:
            lines.append(f"    gateway {spec.gateway}")
    else:
        lines.append("iface eth0 inet dhcp")
    return "\n".join(lines) + "\n"


def grub_cfg(kernel_version: str, cmdline: str = CMDLINE) -> str:
    """/boot/grub/grub.cfg as pygrub and PV GRUB read it: the file system is
    the whole disk (xvda, no partitions), so paths are /boot/... PV GRUB
    (grub_platform xen) takes the second entry: GRUB 2.06 cannot unpack the
    LZ4 payload of Debian's bzImage, so that entry boots the same kernel as a
    gzip-compressed ELF (`pvgrub_kernel`), which GRUB's gzio reads."""
    return f"""# made by pyxen create-image (read by pygrub in dom0 and by PV GRUB in the guest)
set default=0
if [ "${{grub_platform}}" = "xen" ]; then set default=1; fi
set timeout=1

menuentry 'Debian GNU/Linux, with Linux {kernel_version}' {{
\tinsmod ext2
\tlinux /boot/vmlinuz-{kernel_version} {cmdline}
\tinitrd /boot/initrd.img-{kernel_version}
}}
menuentry 'Debian GNU/Linux, with Linux {kernel_version} (PV GRUB: gzip ELF)' {{
\tinsmod ext2
\tinsmod gzio
\tlinux /boot/{PVGRUB_KERNEL.format(kernel_version)} {cmdline}
\tinitrd /boot/initrd.img-{kernel_version}
}}
"""


#: The kernel PV GRUB boots, next to Debian's vmlinuz (see grub_cfg).
PVGRUB_KERNEL = "vmlinux-{}.gz"


def pvgrub_kernel(root: Path, version: str) -> None:
    """/boot/vmlinux-VERSION.gz: Debian's bzImage unpacked (its LZ4 payload is
    the ELF vmlinux, with Xen's ELF notes) and gzipped for GRUB 2.06. A
    kernel upgrade inside the guest does not remake it."""
    import gzip
    from ..build.bzimage import extract_payload
    bz = root / "boot" / f"vmlinuz-{version}"
    elf = extract_payload(bz.read_bytes(), str(bz))
    with gzip.open(root / "boot" / PVGRUB_KERNEL.format(version), "wb", compresslevel=6) as f:
        f.write(elf)


def kernel_version(root: Path) -> str:
    found = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if not found:
        raise CreateImageError(f"no kernel in {root}/boot (did linux-image-cloud-amd64 install?)")
    return found[-1]


class _Mounted:
    """/proc, /sys and /dev (bind) in the chroot while scripts run there."""

    def __init__(self, root: Path):
        self.root = root
        self.done: list[Path] = []

    def __enter__(self):
        for kind, src, dst in (("proc", "proc", "proc"), ("sysfs", "sysfs", "sys"),
                               ("bind", "/dev", "dev")):
            target = self.root / dst
            target.mkdir(exist_ok=True)
            args = ["mount", "--bind", src, str(target)] if kind == "bind" else \
                ["mount", "-t", kind, src, str(target)]
            subprocess.run(args, check=True, capture_output=True)
            self.done.append(target)
        return self

    def __exit__(self, *exc):
        for target in reversed(self.done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        self.done.clear()


def configure_root(spec: ImageSpec, root: Path, progress: Progress | None = None) -> tuple[str, str | None]:
    """Make the debootstrapped tree a bootable domU; (kernel version,
    generated root password or None)."""
    name = spec.hostname
    _write(root, "/etc/hostname", name + "\n")
    _write(root, "/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n"
           "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\n"
           "ff02::2\tip6-allrouters\n")
    _write(root, "/etc/fstab", "# made by pyxen create-image: the whole disk xvda is the "
           "root file system\n"
           f"{ROOT_DEVICE}\t/\text4\terrors=remount-ro\t0\t1\n")
    _write(root, "/etc/network/interfaces", network_config(spec))
    if spec.ip and spec.gateway and not (root / "etc/resolv.conf").exists():
        _write(root, "/etc/resolv.conf", f"nameserver {spec.gateway}\n")
    mirror = spec.mirror or host_mirror(spec.dist)
    _write(root, "/etc/apt/sources.list", f"deb {mirror} {spec.dist} main\n")
    # a machine-id of its own (debootstrap's is the same in every image made from it)
    _write(root, "/etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
    # a getty on the Xen console (systemd also starts one for console=hvc0)
    wants = root / "etc/systemd/system/getty.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "serial-getty@hvc0.service"
    if not link.is_symlink():
        link.symlink_to("/lib/systemd/system/serial-getty@.service")
    # the initramfs finds the PV disk
    mods = root / "etc/initramfs-tools/modules"
    have = mods.read_text() if mods.exists() else ""
    mods.write_text(have + "".join(m + "\n" for m in INITRAMFS_MODULES if m not in have.split()))
    generated = None
    password = spec.password
    if password is None and spec.ssh_key is None:
        password = generated = secrets.token_urlsafe(12)      # as xen-tools' --genpass
    with _Mounted(root):
        if password is not None:
            subprocess.run(["chroot", str(root), "chpasswd"], input=f"root:{password}\n",
                           text=True, check=True, capture_output=True)
        if progress:
            progress("initramfs", "update-initramfs with " + ", ".join(INITRAMFS_MODULES))
        _run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], "update-initramfs",
             progress, "initramfs")
    if spec.ssh_key:
        ssh = root / "root/.ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        keys = ssh / "authorized_keys"
        keys.write_text(Path(spec.ssh_key).read_text())
        os.chmod(keys, 0o600)
    version = kernel_version(root)
    pvgrub_kernel(root, version)
    _write(root, "/boot/grub/grub.cfg", grub_cfg(version))
    for deb in glob.glob(str(root / "var/cache/apt/archives/*.deb")):
        os.unlink(deb)
    return version, generated


def make_filesystem(root: Path, image: Path, size: int, progress: Progress | None = None) -> None:
    """An ext4 image of `size` bytes holding `root` (mke2fs -d, no mounting)."""
    with open(image, "wb") as f:
        f.truncate(size)
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(root), str(image)],
         "mke2fs", progress, "mke2fs")


def config_text(spec: ImageSpec, image: Path, mac: str) -> str:
    fmt = "qcow2" if spec.format == "qcow2" else "raw"
    vif = f"mac={mac}, bridge={spec.bridge}"
    if spec.ip:
        vif += f", ip={ipaddress.ip_interface(spec.ip).ip}"
    return f"""# {spec.hostname}: made by pyxen create-image ({spec.dist}) on {time.strftime('%Y-%m-%d %H:%M')}
# boots the kernel named by the image's /boot/grub/grub.cfg (pygrub, in dom0)
name       = "{spec.hostname}"
bootloader = "pygrub"
memory     = {spec.memory}
vcpus      = {spec.vcpus}
disk       = ['format={fmt}, vdev=xvda, access=rw, target={image}']
vif        = ['{vif}']
on_poweroff = "destroy"
on_reboot   = "restart"
on_crash    = "restart"
"""


def random_mac() -> str:
    b = secrets.token_bytes(3)
    return "00:16:3e:" + ":".join(f"{x & (0x7f if i == 0 else 0xff):02x}"
                                  for i, x in enumerate(b))


def create_image(spec: ImageSpec, progress: Progress | None = None) -> ImageResult:
    """Make spec.image_path and spec.config_path (see the module docstring)."""
    check_spec(spec)
    problem = requirements_problem(spec)
    if problem:
        raise CreateImageError(problem)
    out_dir = Path(spec.dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix=f".{spec.hostname}.create-image.", dir=out_dir))
    root = work / "root"
    try:
        t = time.monotonic()
        debootstrap(spec, root, progress)
        times["debootstrap"] = time.monotonic() - t
        t = time.monotonic()
        if progress:
            progress("configure", "hostname, fstab, network, users, getty, grub.cfg")
        version, generated = configure_root(spec, root, progress)
        times["configure"] = time.monotonic() - t
        t = time.monotonic()
        raw = spec.image_path if spec.format == "raw" else work / "raw.img"
        tmp_raw = raw.with_name(raw.name + ".part") if spec.format == "raw" else raw
        if progress:
            progress("mke2fs", f"ext4, {spec.size}")
        make_filesystem(root, tmp_raw, size_bytes(spec.size), progress)
        times["mke2fs"] = time.monotonic() - t
        if spec.format == "qcow2":
            t = time.monotonic()
            if progress:
                progress("qemu-img", "convert to qcow2")
            part = spec.image_path.with_name(spec.image_path.name + ".part")
            _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_raw), str(part)],
                 "qemu-img convert", progress, "qemu-img")
            os.replace(part, spec.image_path)
            times["qemu-img"] = time.monotonic() - t
        else:
            os.replace(tmp_raw, spec.image_path)
        cfg = spec.config_path
        cfg.write_text(config_text(spec, spec.image_path, spec.mac or random_mac()))
        return ImageResult(spec.image_path, cfg, version, generated, times)
    finally:
        _remove_tree(work)


def _remove_tree(work: Path) -> None:
    """The work folder, never through a file system still mounted in it."""
    for sub in ("proc", "sys", "dev"):
        if os.path.ismount(work / "root" / sub):
            subprocess.run(["umount", "-l", str(work / "root" / sub)], capture_output=True)
            if os.path.ismount(work / "root" / sub):
                raise CreateImageError(f"{work}/root/{sub} is still mounted: not removing {work}")
    shutil.rmtree(work, ignore_errors=True)
