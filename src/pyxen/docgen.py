"""Generate docs/commands.md, the command reference, from the same argparse
definitions that `--help` prints (python -m pyxen.docgen [--check])."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import build_parser
from .toolstack import daemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"

#: xl's subcommands in Xen 4.17 (tools/xl/xl_cmdtable.c), in its order
XL_COMMANDS = """
create config-update list destroy shutdown reboot pci-attach pci-detach pci-list
pci-assignable-add pci-assignable-remove pci-assignable-list pause unpause console vncviewer
save migrate restore migrate-receive dump-core cd-insert cd-eject mem-max mem-set
button-press vcpu-list vcpu-pin vcpu-set vm-list info sharing sched-credit sched-credit2
sched-rtds domid domname rename trigger sysrq debug-keys set-parameters dmesg top
network-attach network-list network-detach channel-list block-attach block-list block-detach
vtpm-attach vtpm-list vtpm-detach vkb-attach vkb-list vkb-detach vdispl-attach vdispl-list
vdispl-detach vsnd-attach vsnd-list vsnd-detach uptime claims cpupool-create cpupool-list
cpupool-destroy cpupool-rename cpupool-cpu-add cpupool-cpu-remove cpupool-migrate
cpupool-numa-split getenforce setenforce loadpolicy remus devd psr-hwinfo psr-cmt-attach
psr-cmt-detach psr-cmt-show psr-cat-set psr-cat-show psr-mba-set psr-mba-show usbctrl-attach
usbctrl-detach usbdev-attach usbdev-detach usb-list qemu-monitor-command
""".split()

_HVM = "not applicable to PV: an HVM device-model command (issue 19, HVM through QEMU)"
_NO_PCI = ("not applicable here: PCI passthrough needs an IOMMU-assigned device; PVM "
           "guests get none")
_PV_FRONT = "not yet: pyxen has no backend for this PV device class (only vbd and vif)"

#: what pyxen has where xl has more, by command pyxen has
PARTIAL = {
    "create": "PV guests only (type=\"hvm\" is refused: issue 19); no -V/--vncviewer",
    "top": "xentop's columns from pyxend's accounting",
    "info": "host lines from the host's CPUID, /proc and /sys; the hypervisor's are pyxen's",
    "sched-credit": "weight and cap per domain on the Linux scheduler; no cpupools, no -s",
    "vcpu-pin": "hard affinity of a started vCPU's thread; soft affinity is accepted "
                "and only warned about",
}

#: why pyxen lacks a command xl has
ABSENT = {
    **{c: _NO_PCI for c in ("pci-attach", "pci-detach", "pci-list", "pci-assignable-add",
                            "pci-assignable-remove", "pci-assignable-list")},
    **{c: _HVM for c in ("vncviewer", "cd-insert", "cd-eject", "button-press", "trigger",
                         "qemu-monitor-command")},
    **{c: "not yet: save, restore and migration are issue 16"
       for c in ("save", "restore", "migrate", "migrate-receive")},
    **{c: _PV_FRONT for c in ("vtpm-attach", "vtpm-list", "vtpm-detach", "vkb-attach",
                              "vkb-list", "vkb-detach", "vdispl-attach", "vdispl-list",
                              "vdispl-detach", "vsnd-attach", "vsnd-list", "vsnd-detach",
                              "channel-list", "usbctrl-attach", "usbctrl-detach",
                              "usbdev-attach", "usbdev-detach", "usb-list")},
    **{c: "not yet: cpupools on cgroup v2 cpusets (issue 18)"
       for c in ("cpupool-create", "cpupool-list", "cpupool-destroy", "cpupool-rename",
                 "cpupool-cpu-add", "cpupool-cpu-remove", "cpupool-migrate",
                 "cpupool-numa-split")},
    **{c: "not applicable: XSM/FLASK policy; pyxen has none (Xen's default build "
          "neither)" for c in ("getenforce", "setenforce", "loadpolicy")},
    **{c: "not applicable: Intel RDT (cache/memory-bandwidth monitoring and allocation) "
          "is the host kernel's (resctrl), not a guest's"
       for c in ("psr-hwinfo", "psr-cmt-attach", "psr-cmt-detach", "psr-cmt-show",
                 "psr-cat-set", "psr-cat-show", "psr-mba-set", "psr-mba-show")},
    "config-update": "not yet",
    "dump-core": "not yet as a command (on_crash=\"coredump-*\" writes the same core)",
    "vm-list": "not yet",
    "sharing": "not applicable: Xen's memory sharing is for HVM guests",
    "sched-credit2": "not yet",
    "sched-rtds": "not applicable: no RTDS scheduler; vCPUs are Linux threads",
    "sysrq": "not yet",
    "debug-keys": "not applicable: Xen's debug keys dump hypervisor state; pyxend's log "
                  "and --trace are pyxen's",
    "set-parameters": "not applicable: Xen's runtime command-line parameters",
    "claims": "not applicable: memory is claimed whole when a domain is built",
    "remus": "not yet: checkpointed replication builds on save/restore (issue 16)",
    "devd": "not applicable: backends run only in pyxend (no driver domains)",
}


def parity_table(have: set[str]) -> str:
    """Every xl subcommand with pyxen's status: has, partial (and what), or
    why not."""
    rows = ["| xl command | pyxen | notes |", "|---|---|---|"]
    for c in XL_COMMANDS:
        if c in have:
            status, note = ("partial", PARTIAL[c]) if c in PARTIAL else ("has", "")
        else:
            note = ABSENT.get(c, "not yet")
            status = "n/a" if note.startswith("not applicable") else "no"
        rows.append(f"| {c} | {status} | {note} |")
    n = sum(c in have for c in XL_COMMANDS)
    return "\n".join([f"pyxen has {n} of xl's {len(XL_COMMANDS)} subcommands (Xen 4.17).\n",
                      *rows, ""])


def render() -> str:
    os.environ["COLUMNS"] = "100"
    p = build_parser()
    parts = ["# pyxen command reference\n",
             "Generated from the commands' own `--help` (python -m pyxen.docgen).\n",
             "## pyxen\n", "```", p.format_help().rstrip(), "```\n"]
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    parts += ["## xl's commands in pyxen\n", parity_table(set(sub.choices))]
    for name, sp in sub.choices.items():
        parts += [f"## pyxen {name}\n", "```", sp.format_help().rstrip(), "```\n"]
    parts += ["## pyxend\n", "```", daemon.build_parser().format_help().rstrip(), "```\n",
              "## pyxend API\n", daemon.__doc__.strip(), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    text = render()
    if check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m pyxen.docgen", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
