"""A suspended domain's hypervisor state, out and back in (save, restore).

What Xen's migration stream carries for a PV guest (tools/libs/guest
xg_sr_save_x86_pv.c / xg_sr_restore_x86_pv.c), as pyxen holds it:

- every vCPU: its registers and segments (the guest's own, behind a replay
  stub if one is owed), FPU/vector state (KVM_GET_XSAVE), debug registers,
  KVM's pending exception, Xen's PV state (kernel/user mode, both L4s, trap
  table, callbacks, kernel stack, segment bases, virtual IOPL, GDT and LDT,
  virtual CR0.TS, up/down), its vcpu_info, its timers, the emulator's
  CR4/XCR0 view;
- the domain: VM assists, which frames are present (ballooned out or not),
  the page tables the guest pinned (restore pins them again, which
  validates them and everything under them: nothing of the file is taken on
  trust), the shared_info arch fields, system time (pyxen's pvclock goes on
  from where it stopped) and the start_info frame the guest named in its
  suspend hypercall.

As in Xen, event channels and the grant table are not carried: the restored
domain gets fresh xenstore and console channels (start_info rewritten with
them) and the guest binds the rest again and redoes GNTTABOP_setup_table;
all ports start masked (Xen fills evtchn_mask on restore). vcpu_info,
runstate and time-area registrations are not carried either (Linux's
xen_vcpu_restore registers them again; a second VCPUOP_register_vcpu_info
would be refused).

`capture(dom)` gives a JSON-able dict (binary fields in base64);
`restore(dom, state, load_memory)` applies one to a freshly created Domain
(`Domain.restore`). Memory itself is streamed by the caller (the save file
is the toolstack's business: toolstack/savefile.py)."""
from __future__ import annotations

import base64
import ctypes
import time

from ..kvm import structs as KS
from . import layout as L
from . import cpu as C
from .abi import (StartInfo, START_INFO_MAGIC, RUNSTATE_running, RUNSTATE_offline)
from .mm import PageTableError, PGT_L1, PGT_L4, PGT_WRITABLE
from .vcpu import TrapEntry, Callback

STATE_VERSION = 1
_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss")


class RestoreError(Exception):
    """The saved state cannot be applied; the message says why."""


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


def unb64(text, size: int | None = None) -> bytes:
    try:
        data = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise RestoreError("corrupt binary field in the saved state") from None
    if size is not None and len(data) != size:
        raise RestoreError(f"saved field of {len(data)} bytes, {size} expected")
    return data


# --- save -------------------------------------------------------------------------
class SaveError(Exception):
    """The domain cannot be saved; the message says why."""


def capture(dom) -> dict:
    """The state of a suspended domain (every vCPU parked), as a dict. The
    start_info frame the guest named is checked now, as Xen's save does (a
    file that could never be restored is not written)."""
    mm = dom.mm
    rec = dom.suspended
    if rec is None:
        raise SaveError("the domain is not suspended")
    si = rec.start_info_mfn
    if not mm.owns(si) or bytes(dom.ram.mm[si << L.PAGE_SHIFT:(si << L.PAGE_SHIFT) + 14]) \
            != START_INFO_MAGIC[:14]:
        raise SaveError(f"the guest named frame {si:#x} as its start_info in its suspend "
                        "hypercall: not a start_info page of its own")
    pins = []
    i = mm.pinned.find(1)
    while i >= 0:
        pins.append([i, mm.ptype[i]])
        i = mm.pinned.find(1, i + 1)
    return {
        "version": STATE_VERSION,
        "nr_pages": dom.nr_pages,
        "max_pages": dom.max_pages,
        "vcpus": [_capture_vcpu(dom, v) for v in dom.vcpus],
        "vm_assist": dom.vm_assist,
        "suspend_cancel": dom.suspend_cancel,
        "system_time": dom.clock.now(),
        "wallclock_ns": time.time_ns(),
        "pins": pins,
        "shared_arch": _b64(bytes(dom.shared_info.arch)),
        "start_info_mfn": rec.start_info_mfn,
        "suspend_vcpu": rec.vcpu,
    }


def _capture_vcpu(dom, v) -> dict:
    pv = v.pv
    out = {"id": v.id, "initialised": v.initialised, "online": pv.online}
    if not v.initialised:
        return out
    regs, sregs = v.guest_registers()
    k = v.kvcpu
    out.update(
        regs=_b64(bytes(regs)), sregs=_b64(bytes(sregs)),
        xsave=_b64(k.get_xsave()),
        events=_b64(bytes(k.get_events())),
        debugregs=_b64(bytes(k.get_debugregs())),
        vcpu_info=_b64(ctypes.string_at(ctypes.addressof(v.vcpu_info), 64)),
        pv={"kernel_mode": pv.kernel_mode, "kernel_l4": pv.kernel_l4, "user_l4": pv.user_l4,
            "trap_table": [[n, t.flags, t.cs, t.address] for n, t in sorted(pv.trap_table.items())],
            "callbacks": [[n, c.address, c.flags] for n, c in sorted(pv.callbacks.items())],
            "kernel_ss": pv.kernel_ss, "kernel_sp": pv.kernel_sp, "fs_base": sregs.fs.base,
            "gs_base_kernel": pv.gs_base_kernel, "gs_base_user": pv.gs_base_user,
            "iopl": pv.iopl, "gdt_frames": list(pv.gdt_frames), "gdt_entries": pv.gdt_entries,
            "ldt_base": pv.ldt_base, "ldt_entries": pv.ldt_entries,
            "debugreg": list(pv.debugreg), "dr7_emul": pv.dr7_emul, "cr0_ts": pv.cr0_ts},
        timer={"singleshot": v.timer.singleshot_ns, "periodic": v.timer.periodic_ns,
               "periodic_next": v.timer.periodic_next},
    )
    em = getattr(dom, "emulator", None)
    if em is not None:
        st = em.vstate(v)
        out["emulator"] = {"cr4": st.cr4, "xcr0": st.xcr0}
    return out


# --- restore ----------------------------------------------------------------------
def check_header(state: dict, dom) -> None:
    """The state fits the domain it is to be applied to."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise RestoreError(f"saved hypervisor state version {state.get('version')!r} "
                           f"(this pyxen reads {STATE_VERSION})")
    if state.get("nr_pages") != dom.nr_pages:
        raise RestoreError(f"the saved domain had {state.get('nr_pages')} pages, "
                           f"the config gives {dom.nr_pages}")
    if len(state.get("vcpus", ())) != len(dom.vcpus):
        raise RestoreError(f"the saved domain had {len(state.get('vcpus', ()))} vCPUs, "
                           f"the config gives {len(dom.vcpus)}")


def checked_int(x, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise RestoreError(f"saved value {x!r} out of range")
    return x


def restore_time(dom, state: dict) -> None:
    """System time goes on from the saved value (pvclock continuous); the
    wallclock is re-read from the host."""
    ns = checked_int(state.get("system_time"))
    clock = dom.clock
    ticks = ns * clock.tsc_hz // 1_000_000_000
    from .. import _atomic
    clock.tsc0 = _atomic.rdtsc() - ticks
    while clock.now() < ns:                 # rounding: never earlier than saved
        clock.tsc0 -= 1
    clock.update_wallclock(dom.shared_info)


def localise_start_info(dom, state: dict) -> tuple[int, int, int]:
    """Xen's restore rewrites the guest's start_info: the xenstore and console
    frames (which the suspending guest turned into pfns) become machine
    frames again (pyxen: the same numbers), with the new domain's channels,
    and shared_info its new address. Returns (start_info, store, console)
    frame numbers, each checked to be the guest's own."""
    mm = dom.mm
    si_mfn = state.get("start_info_mfn")
    if si_mfn is None:
        raise RestoreError("the saved domain never suspended (no start_info frame)")
    si_mfn = checked_int(si_mfn)
    if not mm.owns(si_mfn) or (mm.tcount[si_mfn] and mm.ptype[si_mfn] != PGT_WRITABLE):
        raise RestoreError(f"start_info frame {si_mfn:#x} is not a data frame of the guest")
    off = si_mfn << L.PAGE_SHIFT
    si = StartInfo.from_buffer(dom.ram.mm, off)
    if not bytes(si.magic).startswith(START_INFO_MAGIC[:14]):
        raise RestoreError(f"no start_info at frame {si_mfn:#x}")
    store, console = int(si.store_mfn), int(si.console_mfn)
    for what, pfn in (("xenstore", store), ("console", console)):
        if not mm.owns(pfn) or pfn == si_mfn:
            raise RestoreError(f"the guest's {what} frame {pfn:#x} is not its own")
    si.store_mfn, si.store_evtchn = store, dom.store_port
    si.console_mfn, si.console_evtchn = console, dom.console_port
    si.shared_info = dom.heap.shared_info_gpa
    del si
    return si_mfn, store, console


def restore_pins(dom, state: dict) -> None:
    """Pin the tables the guest had pinned: each is validated again, with
    everything it maps, exactly as when the guest pinned it."""
    mm = dom.mm
    pins = state.get("pins", [])
    if not isinstance(pins, list):
        raise RestoreError("corrupt pin list")
    # lower levels first: fewer nested validations
    for mfn, level in sorted(pins, key=lambda p: p[1] if isinstance(p, list) else 0):
        mfn, level = checked_int(mfn, 0, dom.nr_pages - 1), checked_int(level, PGT_L1, PGT_L4)
        try:
            mm.pin(mfn, level)
        except PageTableError as e:
            raise RestoreError(f"saved page table {mfn:#x} (L{level}) does not validate: {e}")


def restore_vcpu(dom, v, st: dict) -> None:
    from .hypercalls.descriptors import install_gdt
    if checked_int(st.get("id")) != v.id:
        raise RestoreError("vCPU records out of order")
    if not st.get("initialised") or not st.get("online"):
        # as Xen's restore: a vCPU that is down gets no context; the guest
        # initialises it again when it brings it up (Linux's
        # xen_cpu_initialized_map is its online mask after a restore)
        return
    mm = dom.mm
    p = st["pv"]
    pv = v.pv
    k4, u4 = checked_int(p["kernel_l4"]), checked_int(p["user_l4"])
    try:
        mm.get_type(k4, PGT_L4)
        if u4:
            mm.get_type(u4, PGT_L4)
    except PageTableError as e:
        raise RestoreError(f"vCPU {v.id}: page-table base: {e}") from None
    pv.kernel_l4, pv.user_l4 = k4, u4
    v.give_l4_view(k4, user=False)
    if u4:
        v.give_l4_view(u4, user=True)
    pv.kernel_mode = bool(p["kernel_mode"])
    if not pv.kernel_mode and not u4:
        raise RestoreError(f"vCPU {v.id} in user mode without a user page table")
    from .hypercalls.traps import guest_code_address
    pv.trap_table = {}
    for n, flags, cs, addr in p["trap_table"]:
        if not guest_code_address(checked_int(addr)):
            raise RestoreError(f"vCPU {v.id}: trap handler {addr:#x} refused")
        pv.trap_table[checked_int(n, 0, 255)] = TrapEntry(checked_int(flags, 0, 0xFF),
                                                          checked_int(cs, 0, 0xFFFF), addr)
    pv.callbacks = {}
    for n, addr, flags in p["callbacks"]:
        if addr and not guest_code_address(checked_int(addr)):
            raise RestoreError(f"vCPU {v.id}: callback {addr:#x} refused")
        pv.callbacks[checked_int(n, 0, 15)] = Callback(checked_int(addr),
                                                       checked_int(flags, 0, 0xFFFF))
    pv.kernel_ss, pv.kernel_sp = checked_int(p["kernel_ss"], 0, 0xFFFF), checked_int(p["kernel_sp"])
    for name in ("fs_base", "gs_base_kernel", "gs_base_user"):
        if not L.canonical(checked_int(p[name])):
            raise RestoreError(f"vCPU {v.id}: {name} not canonical")
        if name != "fs_base":           # the FS base comes back with the sregs
            setattr(pv, name, p[name])
    pv.iopl = checked_int(p["iopl"], 0, 3)
    pv.ldt_base, pv.ldt_entries = checked_int(p["ldt_base"]), checked_int(p["ldt_entries"], 0, 8192)
    pv.debugreg = [checked_int(x) for x in p["debugreg"]][:8]
    pv.dr7_emul = checked_int(p["dr7_emul"])
    pv.cr0_ts = bool(p["cr0_ts"])
    frames = [checked_int(f) for f in p["gdt_frames"]]
    with dom.lock:
        rc = install_gdt(v, frames, checked_int(p["gdt_entries"], 0, 8192)) if frames else 0
    if rc:
        raise RestoreError(f"vCPU {v.id}: its GDT does not validate ({rc})")
    # registers: the guest's, at CPL3 with IF set and no IOPL (as set_return)
    r = KS.Regs.from_buffer_copy(unb64(st["regs"], ctypes.sizeof(KS.Regs)))
    r.rflags = (r.rflags & ~(C.RFLAGS_IOPL3 | 0x20000 | C.RFLAGS_NT)) | C.RFLAGS_IF | 2
    saved = KS.Sregs.from_buffer_copy(unb64(st["sregs"], ctypes.sizeof(KS.Sregs)))
    for name in _SEGMENTS:
        seg = getattr(saved, name)
        if seg.selector and (seg.selector & 3 != 3 or (seg.present and seg.dpl != 3)):
            raise RestoreError(f"vCPU {v.id}: {name} {seg.selector:#x} is not a guest segment")
    v.kvcpu.set_regs(r)
    s = v.kvcpu.get_sregs()
    C.initial_sregs(s, v.id, dom.heap.gdt_base(v.id), dom.heap.tss_base(v.id), 0)
    for name in _SEGMENTS:
        setattr(s, name, getattr(saved, name))
    s.cr2 = saved.cr2
    s.cr0 = (s.cr0 | C.CR0_TS) if pv.cr0_ts else (s.cr0 & ~C.CR0_TS)
    v.sregs = s
    v._sregs_valid = True
    v.load_cr3(commit=False)
    v.kvcpu.set_sregs(s)
    v._sregs_valid = v._sregs_in_run = False
    v.kvcpu.set_xsave(unb64(st["xsave"], ctypes.sizeof(KS.Xsave)))
    db = KS.DebugRegs.from_buffer_copy(unb64(st["debugregs"], ctypes.sizeof(KS.DebugRegs)))
    v.kvcpu.set_debugregs(list(db.db), db.dr6, db.dr7)
    ev = KS.VcpuEvents.from_buffer_copy(unb64(st["events"], ctypes.sizeof(KS.VcpuEvents)))
    if ev.exception_pending or ev.exception_injected or ev.nmi_pending or ev.nmi_injected:
        ev.interrupt_injected = 0
        v.kvcpu.set_events(ev)
    ctypes.memmove(ctypes.addressof(v.vcpu_info), unb64(st["vcpu_info"], 64), 64)
    em = getattr(dom, "emulator", None)
    if em is not None and "emulator" in st:
        es = em.vstate(v)
        es.cr4, es.xcr0 = checked_int(st["emulator"]["cr4"]), checked_int(st["emulator"]["xcr0"])
    t = st["timer"]
    v.timer.update_time()
    with v.timer.lock:
        v.timer.singleshot_ns = checked_int(t["singleshot"])
        v.timer.periodic_ns = checked_int(t["periodic"])
        v.timer.periodic_next = v.timer.periodic_fire = checked_int(t["periodic_next"])
        v.timer.rearm()
    v.initialised = True
    pv.online = bool(st.get("online"))
    v.runstate = RUNSTATE_running if pv.online else RUNSTATE_offline
