#!/usr/bin/env python3
"""Static checks for the pyxen mini-OS guests (no hypervisor needed).

1. ABI: every constant and structure layout in guests/include/xen_abi.h is
   compared with Xen's public headers (/usr/include/xen, Debian package
   libxen-dev).  Two small programs print the same list of values, one
   compiled against each header set; the lists must be equal.
2. Images: every built guest (guests/out/*.elf, built first if needed) is
   checked for the Xen ELF notes, entry point, hypercall page and the
   p_paddr = p_vaddr - VIRT_BASE convention.

Usage: python3 guests/check_abi.py      (exit status 0 when all checks pass)
"""

from __future__ import annotations

import pathlib
import struct
import subprocess
import sys
import tempfile

GUESTS_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(GUESTS_DIR))
import build  # noqa: E402

VIRT_BASE = 0xFFFFFFFF80000000

# (label, expression with Xen's headers, expression with xen_abi.h)
def _same(*names: str) -> list[tuple[str, str, str]]:
    return [(n, n, n) for n in names]


CONSTANTS = _same(
    "__HYPERVISOR_set_trap_table", "__HYPERVISOR_mmu_update", "__HYPERVISOR_stack_switch",
    "__HYPERVISOR_memory_op", "__HYPERVISOR_multicall", "__HYPERVISOR_update_va_mapping",
    "__HYPERVISOR_xen_version", "__HYPERVISOR_console_io", "__HYPERVISOR_vm_assist",
    "__HYPERVISOR_iret", "__HYPERVISOR_vcpu_op", "__HYPERVISOR_set_segment_base",
    "__HYPERVISOR_mmuext_op", "__HYPERVISOR_sched_op", "__HYPERVISOR_callback_op",
    "__HYPERVISOR_event_channel_op",
    "FLAT_RING3_CS32", "FLAT_RING3_CS64", "FLAT_RING3_DS32", "FLAT_RING3_SS64",
    "FLAT_KERNEL_CS", "FLAT_KERNEL_SS", "FLAT_KERNEL_DS", "FLAT_USER_CS", "FLAT_USER_SS",
    "HYPERVISOR_VIRT_START", "HYPERVISOR_VIRT_END", "MACH2PHYS_VIRT_START",
    "VGCF_in_syscall",
    "MMU_NORMAL_PT_UPDATE", "MMU_MACHPHYS_UPDATE", "MMU_PT_UPDATE_PRESERVE_AD",
    "MMUEXT_PIN_L1_TABLE", "MMUEXT_PIN_L2_TABLE", "MMUEXT_PIN_L3_TABLE",
    "MMUEXT_PIN_L4_TABLE", "MMUEXT_UNPIN_TABLE", "MMUEXT_NEW_BASEPTR",
    "MMUEXT_TLB_FLUSH_LOCAL", "MMUEXT_INVLPG_LOCAL", "MMUEXT_TLB_FLUSH_ALL",
    "MMUEXT_INVLPG_ALL", "MMUEXT_NEW_USER_BASEPTR", "MMUEXT_CLEAR_PAGE", "MMUEXT_COPY_PAGE",
    "UVMF_NONE", "UVMF_TLB_FLUSH", "UVMF_INVLPG", "UVMF_LOCAL", "UVMF_ALL",
    "DOMID_SELF", "CONSOLEIO_write", "CONSOLEIO_read",
    "SCHEDOP_yield", "SCHEDOP_block", "SCHEDOP_shutdown", "SCHEDOP_poll",
    "SCHEDOP_shutdown_code",
    "SHUTDOWN_poweroff", "SHUTDOWN_reboot", "SHUTDOWN_suspend", "SHUTDOWN_crash",
    "SHUTDOWN_watchdog", "SHUTDOWN_soft_reset",
    "EVTCHNOP_send",
    "CALLBACKOP_register", "CALLBACKOP_unregister", "CALLBACKTYPE_event",
    "CALLBACKTYPE_failsafe", "CALLBACKTYPE_syscall", "CALLBACKTYPE_nmi",
    "CALLBACKF_mask_events",
    "SEGBASE_FS", "SEGBASE_GS_USER", "SEGBASE_GS_KERNEL", "SEGBASE_GS_USER_SEL",
    "XENMEM_machphys_mapping", "XENVER_version", "XENVER_extraversion", "XENVER_get_features",
    "SIF_PRIVILEGED", "SIF_INITDOMAIN", "SIF_MOD_START_PFN", "SIF_VIRT_P2M_4TOOLS",
    "XEN_ELFNOTE_ENTRY", "XEN_ELFNOTE_HYPERCALL_PAGE", "XEN_ELFNOTE_VIRT_BASE",
    "XEN_ELFNOTE_PADDR_OFFSET", "XEN_ELFNOTE_XEN_VERSION", "XEN_ELFNOTE_GUEST_OS",
    "XEN_ELFNOTE_GUEST_VERSION", "XEN_ELFNOTE_LOADER", "XEN_ELFNOTE_FEATURES",
    "XEN_ELFNOTE_SUPPORTED_FEATURES", "XEN_LEGACY_MAX_VCPUS",
) + [
    ("TI_DPL_MASK", "3", "TI_DPL_MASK"),
    ("TI_CLEAR_EVENTS", "4", "TI_CLEAR_EVENTS"),
]


def _layout(sys_struct: str, our_struct: str, fields: list[str]) -> list[tuple[str, str, str]]:
    rows = [(f"sizeof:{our_struct}", f"sizeof(struct {sys_struct})", f"sizeof(struct {our_struct})")]
    for f in fields:
        rows.append((f"{our_struct}.{f}", f"offsetof(struct {sys_struct}, {f})",
                     f"offsetof(struct {our_struct}, {f})"))
    return rows


LAYOUTS = (
    _layout("start_info", "start_info", [
        "magic", "nr_pages", "shared_info", "flags", "store_mfn", "store_evtchn",
        "console.domU.mfn", "console.domU.evtchn", "console.dom0.info_off",
        "console.dom0.info_size", "pt_base", "nr_pt_frames", "mfn_list", "mod_start",
        "mod_len", "cmd_line", "first_p2m_pfn", "nr_p2m_frames"])
    + _layout("vcpu_time_info", "vcpu_time_info", [
        "version", "tsc_timestamp", "system_time", "tsc_to_system_mul", "tsc_shift", "flags"])
    + _layout("vcpu_info", "vcpu_info", [
        "evtchn_upcall_pending", "evtchn_upcall_mask", "evtchn_pending_sel", "arch.cr2",
        "time"])
    + _layout("shared_info", "shared_info", [
        "vcpu_info", "evtchn_pending", "evtchn_mask", "wc_version", "wc_sec", "wc_nsec",
        "wc_sec_hi", "arch.max_pfn", "arch.pfn_to_mfn_frame_list_list", "arch.nmi_reason",
        "arch.p2m_cr3", "arch.p2m_vaddr", "arch.p2m_generation"])
    + _layout("trap_info", "trap_info", ["vector", "flags", "cs", "address"])
    + _layout("mmu_update", "mmu_update", ["ptr", "val"])
    + _layout("mmuext_op", "mmuext_op", ["cmd", "arg1.mfn", "arg1.linear_addr",
                                         "arg2.nr_ents", "arg2.src_mfn"])
    + _layout("callback_register", "callback_register", ["type", "flags", "address"])
    + _layout("sched_shutdown", "sched_shutdown", ["reason"])
    + _layout("evtchn_send", "evtchn_send", ["port"])
    + _layout("xen_machphys_mapping", "xen_machphys_mapping", ["v_start", "v_end", "max_mfn"])
    + _layout("xencons_interface", "xencons_ring", [
        "in", "out", "in_cons", "in_prod", "out_cons", "out_prod"])
    + _layout("iret_context", "iret_context", [
        "rax", "r11", "rcx", "flags", "rip", "cs", "rflags", "rsp", "ss"])
)

SYS_PROLOGUE = """
#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/event_channel.h>
#include <xen/callback.h>
#include <xen/memory.h>
#include <xen/version.h>
#include <xen/elfnote.h>
#include <xen/io/console.h>
"""

OUR_PROLOGUE = """
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "xen_abi.h"
"""


def _program(prologue: str, rows: list[tuple[str, str]]) -> str:
    body = "\n".join(f'    printf("%s %#llx\\n", "{label}", (unsigned long long)({expr}));'
                     for label, expr in rows)
    return f"{prologue}\nint main(void)\n{{\n{body}\n    return 0;\n}}\n"


def _run_program(source: str, workdir: pathlib.Path, name: str) -> dict[str, str]:
    c = workdir / f"{name}.c"
    exe = workdir / name
    c.write_text(source)
    subprocess.run(["gcc", "-O0", "-w", "-I", str(GUESTS_DIR / "include"), str(c), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def check_abi() -> list[str]:
    if not pathlib.Path("/usr/include/xen/xen.h").exists():
        return ["/usr/include/xen/xen.h missing (install libxen-dev) - ABI check skipped"]
    rows = CONSTANTS + LAYOUTS
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = pathlib.Path(tmp)
        theirs = _run_program(_program(SYS_PROLOGUE, [(l, s) for l, s, _ in rows]), tmpdir, "sys")
        ours = _run_program(_program(OUR_PROLOGUE, [(l, o) for l, _, o in rows]), tmpdir, "ours")
    errors = [f"ABI mismatch {label}: Xen headers {theirs[label]}, xen_abi.h {ours[label]}"
              for label, _, _ in rows if theirs[label] != ours[label]]
    print(f"ABI: {len(rows)} constants/offsets compared, {len(errors)} mismatches")
    return errors


# ---- ELF images ---------------------------------------------------------
def _notes(data: bytes, off: int, size: int):
    end = off + size
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        off += 12
        name = data[off:off + namesz].rstrip(b"\0").decode()
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        yield name, ntype, desc


def check_image(path: pathlib.Path) -> list[str]:
    data = path.read_bytes()
    errs: list[str] = []
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return [f"{path.name}: not ELF64"]
    (e_entry, e_phoff) = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    loads, notes = [], {}
    for i in range(e_phnum):
        p_type, p_flags, p_off, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = \
            struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_paddr, p_memsz))
        elif p_type == 4:
            for name, ntype, desc in _notes(data, p_off, p_filesz):
                if name == "Xen":
                    notes[ntype] = desc

    def num(t):
        d = notes.get(t, b"")
        return int.from_bytes(d, "little") if len(d) in (4, 8) else None

    def string(t):
        d = notes.get(t)
        return d.rstrip(b"\0").decode() if d is not None else None

    want = {6: "pyxen-minios", 5: "xen-3.0", 8: "generic", 10: ""}
    for t, v in want.items():
        if string(t) != v:
            errs.append(f"{path.name}: note {t} = {string(t)!r}, expected {v!r}")
    if num(3) != VIRT_BASE:
        errs.append(f"{path.name}: VIRT_BASE note {num(3)}")
    paddr_offset = num(4)
    if paddr_offset is None:
        errs.append(f"{path.name}: no PADDR_OFFSET note")
        paddr_offset = 0
    if num(1) != e_entry or e_entry != VIRT_BASE:
        errs.append(f"{path.name}: ENTRY note {num(1)} / e_entry {e_entry:#x}")
    hc = num(2)
    if hc is None or hc & 0xFFF:
        errs.append(f"{path.name}: HYPERCALL_PAGE note {hc} not page aligned")
    if num(17) != 0:
        errs.append(f"{path.name}: SUPPORTED_FEATURES {num(17)}")
    if not loads:
        errs.append(f"{path.name}: no PT_LOAD")
    for vaddr, paddr, memsz in loads:
        # What a Xen loader computes: virt = paddr - PADDR_OFFSET + VIRT_BASE.
        if paddr - paddr_offset + VIRT_BASE != vaddr:
            errs.append(f"{path.name}: PT_LOAD vaddr {vaddr:#x} paddr {paddr:#x} inconsistent")
    if hc is not None and not any(v <= hc and hc + 4096 <= v + m for v, _, m in loads):
        errs.append(f"{path.name}: hypercall page outside the loaded image")
    kend = max(v + m for v, _, m in loads) if loads else 0
    print(f"{path.name}: entry {e_entry:#x} hypercall_page {hc:#x} "
          f"image [{VIRT_BASE:#x}, {kend:#x}) notes {sorted(notes)}")
    return errs


def main() -> int:
    errors = check_abi()
    for name in build.list_guests():
        errors += check_image(build.build_guest(name))
    for e in errors:
        print("ERROR:", e)
    return 1 if any(not e.endswith("skipped") for e in errors) else 0


if __name__ == "__main__":
    sys.exit(main())
