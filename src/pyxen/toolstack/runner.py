"""Running one domain in the foreground (`pyxen create` without a daemon):
build it from its DomainConfig, run it, apply the lifecycle actions."""
from __future__ import annotations

import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..build.elf import load_kernel
from ..hv import emulate
from ..hv.domain import Domain, DomainResult
from .domconfig import DomainConfig
from ..dom0.console import DETACH

# exit status of `pyxen create` in the foreground, by shutdown reason
EXIT_STATUS = {"poweroff": 0, "crash": 1, "reboot": 2, "suspend": 3, "watchdog": 4,
               "soft_reset": 5, "destroyed": 6}


class CreateError(Exception):
    """A domain could not be created; the message says why."""


def meminfo_mb(field: str = "MemAvailable") -> int:
    """A /proc/meminfo figure in MiB (0 when missing)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


@dataclass
class RunOutcome:
    result: DomainResult
    restarts: int = 0

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.result.reason, 1)


def make_domain(cfg: DomainConfig, *, console, trace=None, domid: int = 1, kvm=None,
                console_log: str | None = None, attach_console: bool = True) -> Domain:
    if cfg.kernel is None:
        raise CreateError(f"{cfg.source or 'config'}: no kernel= given")
    avail = meminfo_mb()
    if avail and cfg.memory > avail:
        raise CreateError(f"memory={cfg.memory} MiB is more than this host can give "
                          f"({avail} MiB available)")
    image = load_kernel(cfg.kernel)
    ramdisk = Path(cfg.ramdisk).read_bytes() if cfg.ramdisk else None
    dom = Domain(name=cfg.name, memory_mb=cfg.memory, maxmem_mb=cfg.maxmem, vcpus=cfg.vcpus,
                 domid=domid, console=console, trace=trace, kvm=kvm,
                 supports_writable_pagetables=True,
                 max_event_channels=cfg.max_event_channels)
    dom.grants.maptrack.max_frames = cfg.max_maptrack_frames
    try:
        emulate.install(dom, image)     # ptwr, privileged ops, forced-emulation CPUID
        dom.build(image, ramdisk=ramdisk, cmdline=cfg.cmdline)
        if attach_console:
            dom.attach_console(sink=console, log_path=console_log)
            attach_local_xenstore(dom, cfg)
            attach_local_devices(dom, cfg)
    except BaseException:
        close_domain(dom)
        raise
    return dom


def attach_local_devices(dom: Domain, cfg: DomainConfig) -> None:
    """disk= and vif= of a stand-alone domain: the backends run in this process."""
    from ..dom0.backends.guest import LocalGuest
    from .devices import DeviceConfigError, DomainDevices, resolve_target
    devs = DomainDevices(dom.local_xenstore, LocalGuest(dom))
    dom.pv_devices = devs
    base = os.path.dirname(os.path.abspath(cfg.source)) if cfg.source else os.getcwd()
    try:
        for spec in cfg.disk_specs():
            devs.attach_disk(resolve_target(spec, base))
        for spec in cfg.vif_specs():
            devs.attach_vif(spec)
    except DeviceConfigError as e:
        raise CreateError(str(e)) from None


def close_domain(dom: Domain) -> None:
    devs = getattr(dom, "pv_devices", None)
    if devs is not None:
        devs.close_all()
    dom.close()


def attach_local_xenstore(dom: Domain, cfg: DomainConfig) -> None:
    """A stand-alone domain gets its own in-process xenstored, so PV guests
    (xenbus, control/shutdown) work without pyxend."""
    from ..dom0.xenstore.server import XenStoreServer
    from ..dom0.xenstore.store import Client as XsClient
    from .xsnodes import write_domain_nodes
    xs = XenStoreServer(state_file=None)
    page = dom.ram.view[dom.layout.store_pfn * 4096:(dom.layout.store_pfn + 1) * 4096]
    with xs.lock:
        write_domain_nodes(xs.store, XsClient(xs.store, 0, True), domid=dom.domid,
                           name=dom.name, uuid=str(dom.uuid), vcpus=len(dom.vcpus),
                           target_kb=dom.nr_pages * 4, max_kb=dom.max_pages * 4,
                           created=time.time())
    ring = xs.attach_ring(dom.domid, page, lambda: dom.events.raise_port(dom.store_port))
    dom.xenstore_ring = ring
    dom.local_xenstore = xs


def forward_input(dom: Domain, stream, stop: threading.Event) -> None:
    """Send keystrokes from `stream` (a file descriptor source) to the guest's
    console until Ctrl-] or end of input."""
    fd = stream.fileno()
    while not stop.is_set() and not dom.stopped:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        data = os.read(fd, 1024)
        if not data:
            return
        if DETACH in data:
            data = data[:data.index(DETACH)]
            stop.set()
        backend = dom.console_backend
        if backend is not None:
            backend.feed(data, lambda: not dom.stopped)


def run_foreground(cfg: DomainConfig, *, console, trace=None, max_restarts: int = 16,
                   on_start=None, stdin=None, console_log: str | None = None) -> RunOutcome:
    """Create the domain and run it until it is gone, honouring on_poweroff,
    on_reboot and on_crash (restart / destroy / preserve)."""
    restarts = 0
    while True:
        dom = make_domain(cfg, console=console, trace=trace, console_log=console_log)
        if on_start is not None:
            on_start(dom)
        stop_input = threading.Event()
        if stdin is not None:
            threading.Thread(target=forward_input, args=(dom, stdin, stop_input),
                             daemon=True).start()
        prev = signal.getsignal(signal.SIGINT)

        def _interrupt(signum, frame):
            dom.destroy()
        if signal.getsignal(signal.SIGTERM) is not None:
            signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            result = dom.run()
        finally:
            stop_input.set()
            signal.signal(signal.SIGINT, prev)
            close_domain(dom)
        action = {"poweroff": cfg.on_poweroff, "reboot": cfg.on_reboot,
                  "crash": cfg.on_crash, "watchdog": cfg.on_watchdog}.get(result.reason, "destroy")
        if action in ("restart", "rename-restart", "coredump-restart") and restarts < max_restarts:
            restarts += 1
            continue
        return RunOutcome(result, restarts)
