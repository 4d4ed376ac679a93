"""What happens when a domain stops: xl.cfg's on_poweroff / on_reboot /
on_crash / on_watchdog / on_soft_reset actions, decided in one place for
both the foreground runner and pyxend.

    plan = lifecycle.plan(cfg, "crash")     # cfg: DomainConfig or its to_dict()
    if plan.coredump: lifecycle.write_core(dump_dir, ram, name, domid)
    if plan.preserve: ... keep it (pyxend) ...
    if plan.renames: ... keep it as plan.preserved_name(name, now, taken) (pyxend) ...
    if plan.restart: build the config again (its own name)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .domconfig import SHUTDOWN_ACTIONS
from .paths import safe_file

RESTART_LIMIT = 16            # restarts in a row before pyxen gives up on a domain

# shutdown reason -> the xl.cfg key naming its action
ACTION_KEYS = {"poweroff": "on_poweroff", "reboot": "on_reboot", "crash": "on_crash",
               "watchdog": "on_watchdog", "soft_reset": "on_soft_reset"}


@dataclass(frozen=True)
class Plan:
    reason: str
    action: str

    @property
    def coredump(self) -> bool:
        return self.action.startswith("coredump-")

    @property
    def preserve(self) -> bool:
        return self.action == "preserve"

    @property
    def restart(self) -> bool:
        return self.action.endswith("restart")

    @property
    def renames(self) -> bool:
        """rename-restart: as xl, the stopped domain is kept under another
        name (and a new uuid) and the config is built again under its own."""
        return self.action == "rename-restart"

    @staticmethod
    def preserved_name(name: str, now: float, taken=()) -> str:
        """What rename-restart calls the domain it keeps: xl's NAME-YYYYMMDDTHHMMZ
        (UTC); pyxen adds -2, -3... when that name is already taken (a second
        restart in the same minute), where xl would give up and leave the old
        domain in place."""
        base = name + time.strftime("-%Y%m%dT%H%MZ", time.gmtime(now))
        new, n = base, 1
        while new in taken:
            n += 1
            new = f"{base}-{n}"
        return new


def plan(cfg, reason: str, restarts: int = 0) -> Plan:
    """The action for a domain that stopped for `reason` (as Domain.run
    reports it). 'destroyed' (xl destroy) is never acted on; a reason
    without a key (suspend, a domain that failed to build) destroys; past
    RESTART_LIMIT restarts a restart destroys instead."""
    if reason == "failed":
        reason = "crash"
    key = ACTION_KEYS.get(reason)
    if key is None:
        return Plan(reason, "destroy")
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d: getattr(cfg, k, d))
    action = get(key, "destroy") or "destroy"
    if action not in SHUTDOWN_ACTIONS:
        # on_soft_reset's default, soft-reset (Xen keeps the memory and
        # resets the domain for kexec): pyxen has no soft reset, it destroys
        action = "destroy"
    p = Plan(reason, action)
    if p.restart and restarts >= RESTART_LIMIT:
        return Plan(reason, "coredump-destroy" if p.coredump else "destroy")
    return p


def core_path(dump_dir: Path, name: str, domid: int) -> Path:
    """DIR/NAME-DOMID.core; refuses a name that would lead out of DIR."""
    safe_file(dump_dir, name)               # the name alone is one path component
    return safe_file(dump_dir, f"{name}-{domid}.core")


def write_core(dump_dir: Path, ram, name: str, domid: int) -> Path:
    """Guest memory as an ELF core (xl dump-core's format) in dump_dir."""
    from .coredump import write_core as write
    path = core_path(dump_dir, name, domid)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, ram, name, domid)
    return path
