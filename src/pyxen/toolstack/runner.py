"""Running one domain in the foreground (`pyxen create` without a daemon):
build it from its DomainConfig, run it, apply the lifecycle actions."""
from __future__ import annotations

import logging
import os
import select
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..hv.domain import Domain, DomainResult
from .domconfig import DomainConfig
from ..dom0.console import DETACH
from . import lifecycle
from .builder import LocalServices, build_domain, close_domain

log = logging.getLogger("pyxen.runner")

# exit status of `pyxen create` in the foreground, by shutdown reason
EXIT_STATUS = {"poweroff": 0, "crash": 1, "reboot": 2, "suspend": 3, "watchdog": 4,
               "soft_reset": 5, "destroyed": 6}


@dataclass
class RunOutcome:
    result: DomainResult
    restarts: int = 0
    cores: list = field(default_factory=list)     # core files written (coredump-*)
    name: str = ""                                # the last domain's

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.result.reason, 1)


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
        backend = dom.dom0.console
        if backend is not None:
            backend.feed(data, lambda: not dom.stopped)


def run_foreground(cfg: DomainConfig, *, console, trace=None, on_start=None, stdin=None,
                   console_log: str | None = None, dump_dir: Path | None = None) -> RunOutcome:
    """Create the domain and run it until it is gone, applying its
    on_poweroff / on_reboot / on_crash / on_watchdog action as pyxend does
    (toolstack/lifecycle.py). console receives both the PV console and
    HYPERVISOR_console_io output (there is no `pyxen dmesg` without pyxend).
    Core dumps (coredump-*) go to dump_dir."""
    restarts = 0
    cores = []
    domid = 1
    while True:
        dom = build_domain(cfg, LocalServices(console, console_log), domid=domid,
                           console_io=console, trace=trace)
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
            plan = lifecycle.plan(cfg, result.reason, restarts)
            if plan.coredump and dump_dir is not None:
                cores.append(lifecycle.write_core(dump_dir, dom.ram.mm, cfg.name, domid))
        finally:
            stop_input.set()
            signal.signal(signal.SIGINT, prev)
            close_domain(dom)
        if not plan.restart:
            return RunOutcome(result, restarts, cores, cfg.name)
        restarts += 1
        if plan.renames:
            # xl keeps the stopped domain under another name: a foreground
            # process has nowhere to keep it, its memory is gone already
            log.warning("domain %s (%d) %s: rename-restart cannot keep it without pyxend; "
                        "restarting it", cfg.name, domid, result.reason)
        domid += 1
