"""The one way to build a domain: `build_domain(cfg, services)`.

Both paths use it: `pyxen create` in the foreground (runner.py, with
`LocalServices`) and the domain process pyxend starts (domproc.py, with its
`PyxendLink`); so do the tests. It checks the config against the host,
loads the kernel (build/elf.py), creates the hypervisor's Domain with its
link to dom0, hooks the instruction emulator (always: it is part of what
Xen's PV support is), builds the start-of-day memory (build/x86_64.py) and
then lets the services connect the domain's rings and devices.

Services implement `Dom0Services`: the hypervisor side (`hv.dom0link.Dom0Link`:
notifications, crash tail, inter-domain channels) plus `connect()` after the
build and `close()` when the domain is gone.
"""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from ..build.elf import load_kernel
from ..hv.domain import Domain
from ..hv.dom0link import Dom0Link
from ..dom0.console import ConsoleBackend
from .cpumap import CpumapError, vcpu_affinities
from .domconfig import DomainConfig

# LocalServices' console reader lets a burst of the guest's lines gather
# this long after a notify before it reads them
CONSOLE_GATHER = 0.001


class CreateError(Exception):
    """A domain could not be created; the message says why."""


class Dom0Services(Dom0Link):
    """A Dom0Link that also wires the domain up once it is built."""

    def connect(self, dom: Domain, cfg: DomainConfig) -> None:
        """Rings and devices of the freshly built (not yet running) domain."""

    def close(self) -> None:
        """The domain is gone (or failed to build): release what connect() made."""


def meminfo_mb(field: str = "MemAvailable") -> int:
    """A /proc/meminfo figure in MiB (0 when missing)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def load_boot_files(cfg: DomainConfig):
    """(kernel image, ramdisk bytes or None, command line) of a new domain:
    cfg's kernel= and ramdisk=, or what its bootloader= (bootloader.py: pygrub
    or a program, run in dom0 on each build, as xl does on each boot) takes
    from the guest's disk."""
    if cfg.bootloader is None:
        ramdisk = Path(cfg.ramdisk).read_bytes() if cfg.ramdisk else None
        return load_kernel(cfg.kernel), ramdisk, cfg.cmdline
    from .bootloader import BootloaderError, run_bootloader
    from .domconfig import MAX_CMDLINE_BYTES
    try:
        boot = run_bootloader(cfg)
    except BootloaderError as e:
        raise CreateError(f"{cfg.source or 'config'}: bootloader {cfg.bootloader}: {e}") from None
    try:
        if len(boot.cmdline.encode()) >= MAX_CMDLINE_BYTES:
            raise CreateError(f"bootloader {cfg.bootloader}: kernel command line too long "
                              f"({len(boot.cmdline.encode())} bytes, at most "
                              f"{MAX_CMDLINE_BYTES - 1})")
        ramdisk = Path(boot.ramdisk).read_bytes() if boot.ramdisk else None
        return load_kernel(boot.kernel), ramdisk, boot.cmdline
    finally:
        boot.cleanup()


def build_domain(cfg: DomainConfig, services: Dom0Services, *, domid: int = 1,
                 console_io=None, trace=None, kvm=None, restore=None) -> Domain:
    """Build the domain `cfg` describes, connected to `services`. It is left
    ready to run (Domain.run), not running. console_io receives what the
    guest writes with HYPERVISOR_console_io (the hypervisor's console).

    restore: a savefile.SaveReader: the domain is made from the saved state
    (its memory, vCPUs, page tables; Domain.restore) instead of the kernel,
    which is not read; everything else is as for a new domain."""
    if cfg.type == "hvm":
        raise CreateError(f"{cfg.source or 'config'}: an HVM domain runs under pyxend, which "
                          "supervises its QEMU (toolstack/hvmproc.py): start pyxend first")
    if cfg.kernel is None and cfg.bootloader is None and restore is None:
        raise CreateError(f"{cfg.source or 'config'}: no kernel= given")
    avail = meminfo_mb()
    if avail and cfg.memory > avail:
        raise CreateError(f"memory={cfg.memory} MiB is more than this host can give "
                          f"({avail} MiB available)")
    if restore is None:
        image, ramdisk, cmdline = load_boot_files(cfg)
    try:
        affinity = vcpu_affinities(cfg.cpus, cfg.maxvcpus)
    except CpumapError as e:
        raise CreateError(f"{cfg.source or 'config'}: cpus=: {e} on this host") from None
    # maxvcpus vCPUs: the guest brings up those cpu/N/availability says are
    # online (vcpus of them) and follows the node when vcpu-set changes it
    dom = Domain(name=cfg.name, memory_mb=cfg.memory, maxmem_mb=cfg.maxmem, vcpus=cfg.maxvcpus,
                 domid=domid, console=console_io, trace=trace, kvm=kvm,
                 supports_writable_pagetables=True, dom0=services,
                 max_event_channels=cfg.max_event_channels,
                 max_maptrack_frames=cfg.max_maptrack_frames,
                 uuid=uuid.UUID(cfg.uuid) if cfg.uuid else None)
    try:
        for v, cpus in zip(dom.vcpus, affinity):
            if cpus is not None:               # cpus=: hard affinity from the start
                dom.sched.pin(v, cpus)
        if restore is None:
            dom.build(image, ramdisk=ramdisk, cmdline=cmdline)   # hooks the emulator too
        else:
            _restore(dom, restore)
        services.connect(dom, cfg)
    except BaseException:
        close_domain(dom)
        raise
    return dom


def _restore(dom: Domain, reader) -> None:
    from ..hv.savestate import RestoreError
    from .savefile import SaveFileError
    try:
        reader.prepare(dom)
        state = reader.state()
        dom.restore(state, reader.load_memory)
    except (RestoreError, SaveFileError) as e:
        raise CreateError(f"cannot restore {reader.path}: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CreateError(f"cannot restore {reader.path}: damaged state record "
                          f"({type(e).__name__}: {e})") from None


def close_domain(dom: Domain) -> None:
    """Release the domain and what its services made for it."""
    try:
        dom.dom0.close()
    finally:
        dom.close()


class LocalServices(Dom0Services):
    """dom0's services inside this process: an in-process xenstored with the
    domain's nodes, a console backend (sink + optional log file) and the
    device backends of cfg's disk= and vif=. What `pyxen create` uses
    without pyxend, and what the tests use."""

    def __init__(self, sink=None, console_log: str | None = None, *, devices: bool = True):
        self.sink = sink
        self.console_log = console_log
        self.want_devices = devices
        self.dom: Domain | None = None
        self.console: ConsoleBackend | None = None
        self.xenstore = None            # XenStoreServer
        self.ring = None                # the domain's xenstore ring transport
        self.devices = None             # DomainDevices
        self._console_wake = threading.Event()

    # --- the hypervisor's side (Dom0Link) ------------------------------------------
    def notify_store(self) -> None:
        if self.ring is not None:
            self.ring.kick()

    def notify_console(self) -> None:
        if self.console is not None:
            self._console_wake.set()

    def _console_reader(self, con) -> None:
        """Reads the console ring as xenconsoled does, in its own thread
        after a notify, taking what the ring holds by then. Read inside the
        guest's notify, every line the guest writes was a read of its own,
        and Linux's boot log used up the rate limit's 30 reads per 200 ms
        (ConsoleBackend): the guest spun in SCHEDOP_yield until the next
        period (~5,000 exits and 0.3-0.5 s of a boot, issue 15)."""
        wake = self._console_wake
        while True:
            wake.wait()
            if self.console is not con:
                return
            time.sleep(CONSOLE_GATHER)
            wake.clear()
            con.on_notify()

    def domain_stopped(self) -> None:
        if self.console is not None:
            self.console.drain()

    def console_tail(self, lines: int = 40) -> str:
        if self.console is None:
            return ""
        self.console.drain()
        return self.console.tail(lines)

    # --- wiring ----------------------------------------------------------------------
    def connect(self, dom: Domain, cfg: DomainConfig) -> None:
        from ..dom0.xenstore.server import XenStoreServer
        from ..dom0.xenstore.store import Client as XsClient
        from .xsnodes import write_domain_nodes
        self.dom = dom
        lay = dom.layout
        page = lambda pfn: dom.ram.view[pfn * 4096:(pfn + 1) * 4096]   # noqa: E731
        self.console = ConsoleBackend(page(lay.console_pfn), self._raise(dom.console_port),
                                      sink=self.sink, log_path=self.console_log)
        threading.Thread(target=self._console_reader, args=(self.console,),
                         name="pyxen-console", daemon=True).start()
        xs = XenStoreServer(state_file=None)
        with xs.lock:
            write_domain_nodes(xs.store, XsClient(xs.store, 0, True), domid=dom.domid,
                               name=dom.name, uuid=str(dom.uuid), vcpus=cfg.vcpus,
                               max_vcpus=len(dom.vcpus),
                               target_kb=dom.nr_pages * 4, max_kb=dom.max_pages * 4,
                               created=time.time())
        self.xenstore = xs
        self.ring = xs.attach_ring(dom.domid, page(lay.store_pfn), self._raise(dom.store_port))
        if self.want_devices:
            self._attach_devices(dom, cfg)

    def _raise(self, port: int):
        dom = self.dom
        return lambda: dom.events.raise_port(port) if not dom.stopped else None

    def _attach_devices(self, dom: Domain, cfg: DomainConfig) -> None:
        from ..dom0.backends.guest import LocalGuest
        from .devices import DeviceConfigError, DomainDevices
        self.devices = DomainDevices(self.xenstore, LocalGuest(dom))
        try:
            self.devices.attach_config(cfg)
        except DeviceConfigError as e:
            raise CreateError(str(e)) from None

    def close(self) -> None:
        if self.devices is not None:
            self.devices.close_all()
            self.devices = None
        if self.console is not None:
            con, self.console = self.console, None
            self._console_wake.set()           # the reader thread ends
            con.drain()
            con.close()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
