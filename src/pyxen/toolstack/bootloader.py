"""xl.cfg's ``bootloader=`` for PV domains: the kernel, initrd and command line
come from inside the guest's own first disk, read in dom0 before the build.

``bootloader = "pygrub"`` is pyxen's own pygrub: it finds the guest's GRUB
configuration (/boot/grub/grub.cfg, /grub/grub.cfg for a separate /boot,
grub2/ and GRUB legacy menu.lst, as Xen's pygrub looks), picks the default
entry (``set default=``) or the one ``bootloader_args = ["--entry=N|TITLE"]``
names, and extracts its kernel and initrd. Files are read with a real file
system reader, e2fsprogs' ``debugfs`` (``cat``; symbolic links followed),
from the whole disk or from the partition an MBR or GPT table holds; a
qcow2/qcow/vhd/qed disk is first copied to a sparse raw file with
``qemu-img convert`` (QEMU's format code; only the allocated blocks are
written). pyxen has no ext4 (or any file system) parser of its own.

Any other ``bootloader`` is a program run as libxl runs one
(libxl_bootloader.c): ``PROG [--kernel=K] [--ramdisk=R] [--args=CMDLINE]
--output=FILE --output-format=simple0 --output-directory=DIR
[bootloader_args...] DISK``, which writes ``kernel PATH``, ``ramdisk PATH``
and ``args TEXT`` records, each ended by a NUL, to FILE (made empty
beforehand); it runs on a pty of its own, as under libxl. Xen's own pygrub
(Debian's xen-utils, /usr/lib/xen-4.17/bin/pygrub) speaks it, showing its
menu on that pty until the config's timeout.

As with Xen's pygrub: the entry's command line is followed by the config's
own (``cmdline``, or ``root``/``extra``), which libxl passes as ``--args``;
``kernel``/``ramdisk`` set beside a bootloader are paths inside the guest's
disk and replace the entry's (``--kernel``/``--ramdisk``). pygrub options
understood in ``bootloader_args``: ``--entry``, ``--kernel``, ``--ramdisk``,
``--args``, ``--offset`` (bytes to the file system), and ``-q``/``--quiet``,
``-n``... (accepted, nothing is interactive here).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: Where pygrub looks for a configuration, in its order (pygrub's cfg_list).
CONFIG_PATHS = (
    "/boot/grub/grub.cfg", "/grub/grub.cfg", "/boot/grub2/grub.cfg", "/grub2/grub.cfg",
    "/boot/grub/menu.lst", "/grub/menu.lst", "/boot/grub/grub.conf", "/grub/grub.conf",
)
SECTOR = 512
_LINUX_GPT_TYPES = {
    uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4"),   # Linux file system
    uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),   # Linux x86-64 root
    uuid.UUID("bc13c2ff-59e6-4262-a352-b275fd6f7172"),   # extended boot (/boot)
}
_NON_RAW = ("qcow2", "qcow", "vhd", "qed")
_QEMU_FORMAT = {"qcow2": "qcow2", "qcow": "qcow", "vhd": "vpc", "qed": "qed"}


class BootloaderError(Exception):
    """The bootloader found nothing to boot; the message says why."""


@dataclass
class BootEntry:
    title: str
    kernel: str | None = None
    initrd: list[str] = field(default_factory=list)
    args: str = ""


@dataclass
class BootFiles:
    """What a bootloader chose: files in a temporary folder (remove with
    cleanup()) and the command line."""
    kernel: str
    ramdisk: str | None
    cmdline: str
    title: str = ""
    tmpdir: str | None = None

    def cleanup(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


# --- GRUB configurations ----------------------------------------------------------------------
def _strip_device(path: str) -> str:
    """``(hd0,1)/boot/vmlinuz`` -> ``/boot/vmlinuz``."""
    return re.sub(r"^\([^)]*\)", "", path.strip()) or "/"


def parse_grub2(text: str) -> tuple[list[BootEntry], str]:
    """GRUB 2's grub.cfg: the menu entries (submenus flattened, in order) and
    the raw value of ``set default=`` ("0" when unset)."""
    variables: dict[str, str] = {}
    entries: list[BootEntry] = []
    default = "0"
    stack: list[str] = []                 # "menuentry" / "submenu" / "other"
    current: BootEntry | None = None
    conditional = 0                       # inside if ... fi outside entries: skipped

    def subst(s: str) -> str:
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                      lambda m: variables.get(m.group(1), ""), s)

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            if stack:
                kind = stack.pop()
                if kind == "menuentry" and current is not None:
                    entries.append(current)
                    current = None
            continue
        word = line.split(None, 1)[0].rstrip(";")
        rest = line[len(word):].strip()
        if current is None and word in ("if", "fi") or conditional:
            # a condition pygrub cannot evaluate (e.g. on grub_platform): its
            # statements are not taken, as with no condition true
            conditional += (word == "if") - (word == "fi" or line.endswith(("; fi", ";fi")))
            continue
        if word in ("menuentry", "submenu") and line.endswith("{"):
            try:
                parts = shlex.split(rest[:-1])
            except ValueError:
                parts = [rest[:-1].strip()]
            title = parts[0] if parts else ""
            stack.append(word)
            if word == "menuentry":
                current = BootEntry(title=title)
            continue
        if line.endswith("{"):
            stack.append("other")
            continue
        if word == "set" and "=" in rest:
            k, v = rest.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            v = subst(v)
            if k.strip() == "default" and current is None:
                default = v
            variables[k.strip()] = v
            continue
        if current is None:
            continue
        if word in ("linux", "linux16", "linuxefi", "kernel"):
            words = subst(rest).split(None, 1)
            if words:
                current.kernel = _strip_device(words[0])
                current.args = words[1] if len(words) > 1 else ""
        elif word in ("initrd", "initrd16", "initrdefi"):
            current.initrd = [_strip_device(p) for p in subst(rest).split()]
    return entries, default


def parse_grub_legacy(text: str) -> tuple[list[BootEntry], str]:
    """GRUB legacy's menu.lst (what xen-tools writes for pygrub)."""
    entries: list[BootEntry] = []
    default = "0"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\w+)\s*[= ]?\s*(.*)", line)
        if not m:
            continue
        word, rest = m.group(1), m.group(2).strip()
        if word == "default" and not entries:
            default = rest
        elif word == "title":
            entries.append(BootEntry(title=rest))
        elif entries and word == "kernel":
            words = rest.split(None, 1)
            entries[-1].kernel = _strip_device(words[0])
            entries[-1].args = words[1] if len(words) > 1 else ""
        elif entries and word == "initrd":
            entries[-1].initrd = [_strip_device(rest.split()[0])]
    return entries, default


def parse_config(path: str, text: str) -> tuple[list[BootEntry], str]:
    if path.endswith(".cfg"):
        return parse_grub2(text)
    return parse_grub_legacy(text)


def choose_entry(entries: list[BootEntry], default: str, wanted: str | None) -> BootEntry:
    """The entry `wanted` names (a number or a title), else the config's
    default (a number, a title, or a GRUB 2 ``N>M`` path: its first number
    counts here, as submenus are flattened), else the first."""
    usable = [e for e in entries if e.kernel]
    if not usable:
        raise BootloaderError("the GRUB configuration has no entry with a kernel")
    for choice, strict in ((wanted, True), (default, False)):
        if choice is None or choice == "":
            continue
        if choice.isdigit():
            n = int(choice)
            if n < len(entries) and entries[n].kernel:
                return entries[n]
        else:
            for e in usable:
                if e.title == choice:
                    return e
        if strict:
            titles = ", ".join(f"{i}: {e.title!r}" for i, e in enumerate(entries))
            raise BootloaderError(f"no boot entry {choice!r} (entries: {titles})")
    return usable[0]


# --- reading the guest's disk -----------------------------------------------------------------
def partition_offsets(head: bytes) -> list[int]:
    """Byte offsets of the partitions an MBR or GPT (in the disk's first 34
    sectors) lists, Linux ones first; [] for a disk without a table."""
    if len(head) < 2 * SECTOR or head[510:512] != b"\x55\xaa":
        return []
    mbr = [struct.unpack_from("<BxxxBxxxII", head, 446 + 16 * i) for i in range(4)]
    if any(ptype == 0xEE for _, ptype, _, _ in mbr):
        return _gpt_offsets(head)
    linux, other = [], []
    for boot, ptype, start, count in mbr:
        if ptype == 0 or count == 0 or ptype in (0x05, 0x0F, 0x85):   # empty, extended
            continue
        (linux if ptype == 0x83 or boot & 0x80 else other).append(start * SECTOR)
    return linux + other


def _gpt_offsets(head: bytes) -> list[int]:
    hdr = head[SECTOR:2 * SECTOR]
    if hdr[:8] != b"EFI PART":
        return []
    entries_lba, count, size = struct.unpack_from("<QII", hdr, 72)
    linux, other = [], []
    for i in range(min(count, 128)):
        off = entries_lba * SECTOR + i * size
        if off + size > len(head):
            break
        type_guid = uuid.UUID(bytes_le=head[off:off + 16])
        if type_guid.int == 0:
            continue
        first = struct.unpack_from("<Q", head, off + 32)[0]
        (linux if type_guid in _LINUX_GPT_TYPES else other).append(first * SECTOR)
    return linux + other


class DiskReader:
    """Files of a guest disk image, read with debugfs (e2fsprogs)."""

    def __init__(self, target: str, fmt: str = "raw", offset: int | None = None):
        if shutil.which("debugfs") is None:
            raise BootloaderError("pygrub needs debugfs (Debian package e2fsprogs)")
        self.target = target
        self.tmpdir = tempfile.mkdtemp(prefix="pyxen-pygrub-")
        self.path = target
        if fmt in _NON_RAW:
            self.path = os.path.join(self.tmpdir, "disk.raw")
            r = subprocess.run(["qemu-img", "convert", "-U", "-f", _QEMU_FORMAT[fmt], "-O", "raw",
                                "-S", "4k", target, self.path], capture_output=True, text=True)
            if r.returncode != 0:
                self.close()
                raise BootloaderError(f"cannot read {target} ({fmt}): {r.stderr.strip()}")
        self.offset = offset

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def offsets(self) -> list[int]:
        if self.offset is not None:
            return [self.offset]
        with open(self.path, "rb") as f:
            head = f.read(34 * SECTOR)
        return [0] + partition_offsets(head)

    def _debugfs(self, offset: int, request: str) -> subprocess.CompletedProcess:
        device = self.path if offset == 0 else f"{self.path}?offset={offset}"
        return subprocess.run(["debugfs", "-R", request, device], capture_output=True)

    def stat_link(self, offset: int, path: str) -> str | None:
        """The target of symbolic link `path`, or None if it is not one."""
        r = self._debugfs(offset, f'stat "{path}"')
        out = r.stdout.decode(errors="replace")
        if "Type: symlink" not in out:
            return None
        m = re.search(r'Fast link dest: "(.*)"', out)
        if m:
            return m.group(1)
        r = self._debugfs(offset, f'cat "{path}"')        # a slow link: its block holds it
        return r.stdout.decode(errors="replace").rstrip("\0")

    def read(self, offset: int, path: str) -> bytes | None:
        """A file's bytes (symbolic links followed), or None if absent."""
        for _ in range(16):
            target = self.stat_link(offset, path)
            if target is None:
                break
            base = PurePosixPath(path).parent
            path = os.path.normpath(str(base / target)) if not target.startswith("/") else target
        r = self._debugfs(offset, f'stat "{path}"')
        err = r.stderr.decode(errors="replace")
        if r.returncode != 0 or "File not found" in err or "Type: regular" not in \
                r.stdout.decode(errors="replace"):
            return None
        r = self._debugfs(offset, f'cat "{path}"')
        if r.returncode != 0:
            return None
        return r.stdout

    def is_filesystem(self, offset: int) -> bool:
        r = self._debugfs(offset, "stats")
        return r.returncode == 0 and b"Filesystem magic number" in r.stdout


# --- the bootloaders --------------------------------------------------------------------------
@dataclass
class PygrubOptions:
    entry: str | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    args: str = ""
    offset: int | None = None


def parse_pygrub_args(argv: list[str]) -> PygrubOptions:
    o = PygrubOptions()
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, val = a.partition("=")
        takes = key in ("--entry", "--kernel", "--ramdisk", "--args", "--offset")
        if takes and not eq:
            if i + 1 >= len(argv):
                raise BootloaderError(f"bootloader_args: {key} needs a value")
            i += 1
            val = argv[i]
        if key == "--entry":
            o.entry = val
        elif key == "--kernel":
            o.kernel = val
        elif key == "--ramdisk":
            o.ramdisk = val
        elif key == "--args":
            o.args = (o.args + " " + val).strip()
        elif key == "--offset":
            try:
                o.offset = int(val, 0)
            except ValueError:
                raise BootloaderError(f"bootloader_args: bad --offset {val!r}") from None
        elif key in ("-q", "--quiet", "-n", "--not-really", "-i", "--interactive", "--isconfig",
                     "--debug") or key.startswith(("--output", "--runas", "--default_args",
                                                   "--extra_args", "--vm")):
            pass
        else:
            raise BootloaderError(f"bootloader_args: pygrub option {a!r} is not understood")
        i += 1
    return o


def _first_disk(cfg):
    disks = [d for d in cfg.disk_specs() if d.target and d.devtype == "disk"]
    if not disks:
        raise BootloaderError("bootloader needs a disk: the config has none")
    return disks[0]


def pygrub(cfg) -> BootFiles:
    """pyxen's pygrub on cfg's first disk (see the module docstring)."""
    disk = _first_disk(cfg)
    opts = parse_pygrub_args(list(cfg.bootloader_args))
    kernel_path = opts.kernel or cfg.kernel
    ramdisk_path = opts.ramdisk or cfg.ramdisk
    extra = " ".join(a for a in (opts.args, cfg.cmdline) if a)
    with DiskReader(disk.target, disk.format, opts.offset) as reader:
        for offset in reader.offsets():
            if not reader.is_filesystem(offset):
                continue
            if kernel_path:                 # a kernel named outright: no menu
                entry = BootEntry(title=kernel_path, kernel=kernel_path,
                                  initrd=[ramdisk_path] if ramdisk_path else [])
                return _extract(reader, offset, entry, extra, disk.target)
            for conf in CONFIG_PATHS:
                text = reader.read(offset, conf)
                if text is None:
                    continue
                entries, default = parse_config(conf, text.decode(errors="replace"))
                entry = choose_entry(entries, default, opts.entry)
                if ramdisk_path:
                    entry.initrd = [ramdisk_path]
                return _extract(reader, offset, entry, extra, disk.target)
    raise BootloaderError(f"no GRUB configuration ({', '.join(CONFIG_PATHS[:2])}, ...) "
                          f"on any ext2/3/4 file system of {disk.target}")


def _extract(reader: DiskReader, offset: int, entry: BootEntry, extra: str,
             target: str) -> BootFiles:
    tmp = tempfile.mkdtemp(prefix="pyxen-boot-")
    try:
        data = reader.read(offset, entry.kernel or "")
        if data is None:
            raise BootloaderError(f"kernel {entry.kernel} of entry {entry.title!r} "
                                  f"is not on {target}")
        kernel = os.path.join(tmp, "kernel")
        Path(kernel).write_bytes(data)
        ramdisk = None
        if entry.initrd:
            parts = []
            for p in entry.initrd:          # GRUB concatenates several initrds
                d = reader.read(offset, p)
                if d is None:
                    raise BootloaderError(f"initrd {p} of entry {entry.title!r} is "
                                          f"not on {target}")
                parts.append(d)
            ramdisk = os.path.join(tmp, "ramdisk")
            Path(ramdisk).write_bytes(b"".join(parts))
        cmdline = " ".join(a for a in (entry.args.strip(), extra) if a)
        return BootFiles(kernel, ramdisk, cmdline, entry.title, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def external(cfg) -> BootFiles:
    """A bootloader program, run with libxl's arguments and output format."""
    prog = cfg.bootloader
    if not os.path.isabs(prog) or not os.access(prog, os.X_OK):
        raise BootloaderError(f"bootloader {prog!r}: not an executable (give its absolute "
                              "path, or \"pygrub\" for pyxen's own)")
    disk = _first_disk(cfg)
    tmp = tempfile.mkdtemp(prefix="pyxen-boot-")
    out = os.path.join(tmp, "result")
    argv = [prog]
    if cfg.kernel:
        argv.append(f"--kernel={cfg.kernel}")
    if cfg.ramdisk:
        argv.append(f"--ramdisk={cfg.ramdisk}")
    if cfg.cmdline:
        argv.append(f"--args={cfg.cmdline}")
    argv += [f"--output={out}", "--output-format=simple0", f"--output-directory={tmp}",
             *cfg.bootloader_args, disk.target]
    Path(out).touch(mode=0o600)         # as libxl: Xen's pygrub opens it without O_CREAT
    try:
        rc, text = _run_on_pty(argv, timeout=300)
        if rc != 0:
            raise BootloaderError(f"bootloader {prog} failed (exit {rc}): {text[-500:]}")
        fields = {}
        for rec in Path(out).read_bytes().split(b"\0"):
            k, _, v = rec.decode(errors="replace").partition(" ")
            if k:
                fields[k] = v
        if not fields.get("kernel"):
            raise BootloaderError(f"bootloader {prog} named no kernel")
        return BootFiles(fields["kernel"], fields.get("ramdisk") or None,
                         fields.get("args", ""), "", tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_on_pty(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a bootloader on a terminal of its own, as libxl does (Xen's pygrub
    shows its curses menu there until the config's timeout); nobody types,
    so the default entry boots. (exit status, what it wrote, escapes removed)."""
    import fcntl
    import pty
    import select
    import termios
    import time
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ)
    env.setdefault("TERM", "vt100")
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True)
    finally:
        os.close(slave)
    out = bytearray()
    end = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            data = b""
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:             # EIO: the bootloader closed its terminal
                    data = b""
                out += data
            if not data and p.poll() is not None:
                break
            if time.monotonic() > end:
                p.kill()
                p.wait()
                raise BootloaderError(f"{argv[0]} did not finish in {timeout:.0f} s")
        rc = p.wait()
    finally:
        os.close(master)
    text = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>])", "", out.decode(errors="replace"))
    return rc, text.replace("\r", "").strip()


def run_bootloader(cfg) -> BootFiles:
    """Run cfg.bootloader on cfg's first disk: the files to boot (call
    cleanup() when they are loaded)."""
    if cfg.bootloader == "pygrub":
        return pygrub(cfg)
    return external(cfg)
