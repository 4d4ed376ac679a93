"""Generate the command reference (docs/commands.md), the man pages
(docs/man/pyxen.1, pyxend.8) and the bash completion (docs/bash-completion/pyxen,
for `pyxen` and `xl`) from the same argparse definitions that `--help`
prints (python -m pyxen.docgen [--check])."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import build_parser
from .toolstack import daemon

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "commands.md"

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

_NO_PCI = ("not applicable here: PCI passthrough needs an IOMMU-assigned device; PVM "
           "guests get none")
_PV_FRONT = "not yet: pyxen has no backend for this PV device class (only vbd and vif)"

#: what pyxen has where xl has more, by command pyxen has
PARTIAL = {
    "create": "PV guests, and HVM guests (type=\"hvm\") under QEMU (TCG on this host); "
              "no -V/--vncviewer",
    "top": "xentop's columns, formats and -b/-i/-d/-f/-v/-n/-x/-r; vif and vbd counters "
           "from pyxend's backends (VBD_OO always 0), Domain-0 is the host, SSID 0; "
           "interactively only q (no sort or toggle keys)",
    "info": "host lines from the host's CPUID, /proc and /sys; the hypervisor's are pyxen's",
    "sched-credit": "weight and cap per domain as the domain cgroup's cpu.weight/cpu.max "
                    "(cgroup v2) or cpu.shares/CFS quota (v1), nice values and a watchdog "
                    "without cgroups; -p lists a pool; no -s/-t/-r/-m",
    "config-update": "the config is checked when given (the kernel must exist then), "
                     "kept by pyxend and used at the next restart, as xl's",
    "sched-credit2": "the same weight and cap as sched-credit (one scheduler, Linux's), "
                     "listed for the pools made with sched=\"credit2\"; -s shows Pool-0's "
                     "ratelimit, -r is refused",
    "cpupool-create": "sched= credit or credit2 (names: the host kernel schedules every "
                      "pool); a pool is a cpuset of the host (cgroups), or vCPU affinity "
                      "without them",
    "cpupool-rename": "a name another pool has is refused (libxl would allow it)",
    "cpupool-numa-split": "Domain-0's vCPUs (the host's CPUs) are not taken offline",
    "save": "PV and HVM (QEMU's migration stream in the file); pyxen's own file format "
            "(docs/save-format.md); -c/-p need a PV kernel with SUSPEND_CANCEL; no -D",
    "restore": "PV and HVM, from pyxen's save files; -e/-d/-F/-V/-A accepted and ignored",
    "migrate": "PV, live (pre-copy with KVM's dirty log, as xl always is), and HVM "
               "(QEMU's live migration in the same hand-shake); ssh or -s, or "
               "tcp://HOST[:PORT] to a relocation server (pyxend --relocation-port); "
               "--debug verifies the memory; -e accepted; no -D",
    "migrate-receive": "PV and HVM; -p leaves it paused; -d/-e accepted",
    "vncviewer": "HVM domains with vnc=1 (QEMU's VNC server); -a/--autopass",
    "trigger": "a PV domain: nmi (to the NMI callback the guest registered), the rest "
               "fail as on Xen; an HVM domain: nmi, reset, power, s3resume over QMP (QEMU's "
               "ACPI has no sleep button; init is -ENOSYS, as on Xen)",
    "button-press": "trigger's power and sleep (power: the ACPI button of an HVM domain; "
                    "both fail for a PV domain, as on Xen)",
    "vcpu-pin": "hard affinity of a vCPU's thread (kept for a vCPU not started yet); "
                "soft affinity is accepted and only warned about (also cpus_soft=)",
}

#: why pyxen lacks a command xl has
ABSENT = {
    **{c: _NO_PCI for c in ("pci-attach", "pci-detach", "pci-list", "pci-assignable-add",
                            "pci-assignable-remove", "pci-assignable-list")},
    **{c: _PV_FRONT for c in ("vtpm-attach", "vtpm-list", "vtpm-detach", "vkb-attach",
                              "vkb-list", "vkb-detach", "vdispl-attach", "vdispl-list",
                              "vdispl-detach", "vsnd-attach", "vsnd-list", "vsnd-detach",
                              "channel-list", "usbctrl-attach", "usbctrl-detach",
                              "usbdev-attach", "usbdev-detach", "usb-list")},
    **{c: "not applicable: XSM/FLASK policy; pyxen has none (Xen's default build "
          "neither)" for c in ("getenforce", "setenforce", "loadpolicy")},
    **{c: "not applicable: Intel RDT (cache/memory-bandwidth monitoring and allocation) "
          "is the host kernel's (resctrl), not a guest's"
       for c in ("psr-hwinfo", "psr-cmt-attach", "psr-cmt-detach", "psr-cmt-show",
                 "psr-cat-set", "psr-cat-show", "psr-mba-set", "psr-mba-show")},
    "sharing": "not applicable: Xen's memory sharing is for HVM guests",
    "sched-rtds": "not applicable: no RTDS scheduler; vCPUs are Linux threads",
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


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _roff(text: str) -> str:
    """Text as a roff line: backslashes and leading dots/quotes escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _options_roff(p: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        if a.option_strings:
            name = ", ".join(a.option_strings)
            if a.nargs != 0:
                name += " " + (a.metavar or a.dest.upper())
        else:
            name = a.metavar or a.dest
        out += [".TP", f".B {_roff(str(name))}", _roff(a.help or "")]
    return out


def render_man(p: argparse.ArgumentParser, section: str, title: str) -> str:
    """A man page: the parser's description, its options and, for a command
    with subcommands, each one's synopsis, help and options."""
    name = p.prog
    lines = [f'.TH {name.upper()} {section} "" "pyxen" "{title}"',
             ".SH NAME", f"{name} \\- {_roff(p.description or '')}",
             ".SH SYNOPSIS", ".nf", _roff(p.format_usage().replace("usage: ", "").strip()), ".fi",
             ".SH OPTIONS", *_options_roff(p)]
    subs = _subparsers(p)
    if subs:
        lines.append(".SH COMMANDS")
        for cmd, sp in subs.items():
            lines += [f".SS {cmd}", ".nf", _roff(sp.format_usage().replace("usage: ", "").strip()),
                      ".fi"]
            if sp.description:
                lines += [".PP", _roff(" ".join(sp.description.split()))]
            lines += _options_roff(sp)
    lines += [".SH SEE ALSO", "xl(1), xl.cfg(5), xl\\-disk\\-configuration(5), "
              "xl\\-network\\-configuration(5)", ""]
    return "\n".join(lines)


def render_completion(p: argparse.ArgumentParser) -> str:
    """A bash completion function for `pyxen` and `xl`: subcommands, each
    one's options, domain names (from `pyxen list`) and files."""
    subs = _subparsers(p)
    cases = []
    for cmd, sp in subs.items():
        opts = sorted(o for a in sp._actions for o in a.option_strings)
        cases.append(f'        {cmd}) opts="{" ".join(opts)}" ;;')
    top = sorted(o for a in p._actions for o in a.option_strings)
    return "\n".join([
        "# bash completion for pyxen and xl (generated by python -m pyxen.docgen)",
        "_pyxen() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} cmd= i",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]}; break ;; esac",
        "    done",
        "    if [ -z \"$cmd\" ]; then",
        f'        COMPREPLY=($(compgen -W "{" ".join(subs)} {" ".join(top)}" -- "$cur"))',
        "        return",
        "    fi",
        "    local opts=",
        "    case $cmd in",
        *cases,
        "    esac",
        "    if [[ $cur == -* ]]; then",
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "    else",
        "        local doms",
        "        doms=$(${COMP_WORDS[0]} list 2>/dev/null | awk 'NR > 1 {print $1}')",
        '        COMPREPLY=($(compgen -W "$doms" -- "$cur") $(compgen -f -- "$cur"))',
        "    fi",
        "}",
        "complete -F _pyxen pyxen xl",
        ""])


def outputs() -> dict[Path, str]:
    """Every generated file and its text."""
    os.environ["COLUMNS"] = "100"
    p = build_parser()
    return {DOC: render(),
            DOCS / "man" / "pyxen.1": render_man(p, "1", "pyxen manual"),
            DOCS / "man" / "pyxend.8": render_man(daemon.build_parser(), "8", "pyxen manual"),
            DOCS / "bash-completion" / "pyxen": render_completion(p)}


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is out of date: run python -m pyxen.docgen", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
