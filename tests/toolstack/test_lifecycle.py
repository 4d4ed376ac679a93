"""The lifecycle actions (xl.cfg on_poweroff/on_reboot/on_crash/on_watchdog),
decided by toolstack/lifecycle.py for both the foreground runner and pyxend."""
from __future__ import annotations

import subprocess

import pytest

from pyxen.toolstack import lifecycle
from pyxen.toolstack.domconfig import DomainConfig

from test_cli import pyxen, write_cfg


@pytest.mark.parametrize("reason, key", [("poweroff", "on_poweroff"), ("reboot", "on_reboot"),
                                         ("crash", "on_crash"), ("watchdog", "on_watchdog")])
@pytest.mark.parametrize("action", ["destroy", "restart", "rename-restart", "preserve",
                                    "coredump-destroy", "coredump-restart"])
def test_plan_follows_the_reasons_key(reason, key, action):
    cfg = DomainConfig(name="d", kernel="k", **{key: action})
    p = lifecycle.plan(cfg, reason)
    assert p.action == action
    assert p.coredump == action.startswith("coredump")
    assert p.restart == action.endswith("restart")
    assert p.preserve == (action == "preserve")
    assert lifecycle.plan(cfg.to_dict(), reason) == p          # pyxend keeps the dict
    assert p.renames == (action == "rename-restart")


def test_preserved_name_is_xls_with_a_suffix_when_taken():
    now = 1796342400.0                               # 2026-12-04 00:00 UTC
    assert lifecycle.Plan.preserved_name("web", now) == "web-20261204T0000Z"
    assert lifecycle.Plan.preserved_name("web", now, {"web-20261204T0000Z"}) == \
        "web-20261204T0000Z-2"


def test_plan_for_reasons_without_an_action():
    cfg = DomainConfig(name="d", kernel="k", on_crash="restart", on_poweroff="restart")
    assert lifecycle.plan(cfg, "destroyed").action == "destroy"     # xl destroy
    assert lifecycle.plan(cfg, "suspend").action == "destroy"
    assert lifecycle.plan(cfg, "failed").action == "restart"        # a build failure is a crash
    # soft-reset (on_soft_reset's default) is not supported: the domain is destroyed
    assert lifecycle.plan(cfg, "soft_reset").action == "destroy"


def test_restarts_end_at_the_limit():
    cfg = DomainConfig(name="d", kernel="k", on_reboot="coredump-restart")
    assert lifecycle.plan(cfg, "reboot", lifecycle.RESTART_LIMIT - 1).restart
    p = lifecycle.plan(cfg, "reboot", lifecycle.RESTART_LIMIT)
    assert not p.restart and p.coredump


def test_core_path_refuses_names_leading_out(tmp_path):
    assert lifecycle.core_path(tmp_path, "web", 3) == tmp_path / "web-3.core"
    for bad in ("../x", "..", "a/b"):
        with pytest.raises(ValueError):
            lifecycle.core_path(tmp_path, bad, 3)


# --- the foreground path (`pyxen create` without pyxend) ------------------------------------
def _env(tmp_path):
    return {"PYXEN_LOG_DIR": str(tmp_path / "state"), "PYXEN_RUN_DIR": str(tmp_path / "run")}


def test_foreground_coredump_destroy(kvm, guest_elf, tmp_path):
    """on_crash="coredump-destroy" without pyxend: the core is written (as
    pyxend writes it, an ELF core with Xen's sections) and the command says
    where."""
    elf = guest_elf("shutdown")
    cfg = write_cfg(tmp_path, f'name="dumper"\nkernel="{elf}"\nextra="reason=crash"\n'
                              'on_crash="coredump-destroy"\n')
    r = pyxen("create", "-c", str(cfg), env=_env(tmp_path))
    assert r.returncode == 1, r.stderr
    core = tmp_path / "state" / "dump" / "dumper-1.core"
    assert f"written to {core}" in r.stderr
    hdr = core.read_bytes()[:20]
    assert hdr[:4] == b"\x7fELF" and hdr[16] == 4          # ET_CORE
    out = subprocess.run(["readelf", "-S", str(core)], capture_output=True, text=True).stdout
    assert ".xen_pages" in out and ".xen_p2m" in out


def test_foreground_rename_restart(kvm, guest_elf, tmp_path):
    """on_reboot="rename-restart" without pyxend: each reboot builds the
    domain again with a new domid and its own name, until the restart limit;
    the command says it cannot keep the old one (xl keeps it renamed; a
    foreground process has nowhere to)."""
    elf = guest_elf("shutdown")
    cfg = write_cfg(tmp_path, f'name="rr"\nkernel="{elf}"\nextra="reason=reboot"\n'
                              'on_reboot="rename-restart"\n')
    r = pyxen("create", "-c", str(cfg), env=_env(tmp_path))
    assert r.returncode == 2, r.stderr              # the last one rebooted: not restarted again
    assert r.stdout.count("Test result: SUCCESS") == lifecycle.RESTART_LIMIT + 1
    assert "domain rr shut down: reboot" in r.stderr
    assert r.stderr.count("rename-restart cannot keep it without pyxend") == \
        lifecycle.RESTART_LIMIT
