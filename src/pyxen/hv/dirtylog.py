"""Log-dirty mode: which frames of a running domain changed since the last
look, for live migration's pre-copy rounds (Xen's paging log-dirty,
xen/arch/x86/mm/paging.c, read with XEN_DOMCTL_SHADOW_OP_CLEAN).

A frame is dirty when, since the last harvest,
- the guest wrote it (KVM's dirty page log on the RAM slot: KVM
  write-protects every frame and records the first write to each);
- pyxen wrote it on the guest's behalf (MemoryManager.dirty: page-table
  entries, copy_to_guest, clear/copy page, grant copy, a populated frame);
- dom0 held a writable grant mapping of it (FrameRefs.take_dirty: a
  backend's mapping, or one still held - rings and persistent grants);
- or pyxen writes it at any moment without a trace: the vCPUs' vcpu_info
  when it lives in guest RAM (event and time updates), the FIFO event
  control blocks and event array pages, and the console and xenstore rings
  dom0's services write. These "hot" frames are sent in every round.
"""
from __future__ import annotations

from . import layout as L


class DirtyLog:
    def __init__(self, dom):
        self.dom = dom
        self.active = False
        self._late: bytearray | None = None     # the previous user bitmap (late marks)

    def start(self) -> None:
        """Begin logging; every frame counts as dirty until the first round
        has sent it (the caller sends all of them first)."""
        dom = self.dom
        dom.mm.dirty = bytearray(dom.nr_pages)
        dom.vm.set_dirty_logging(L.RAM_SLOT, True)
        if dom.mm.frefs is not None:
            dom.mm.frefs.take_dirty()
        self._late = None
        self.active = True

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self.dom.mm.dirty = None
        self._late = None
        try:
            self.dom.vm.set_dirty_logging(L.RAM_SLOT, False)
        except OSError:
            pass                            # the domain is being destroyed

    def hot_frames(self) -> set[int]:
        dom = self.dom
        base, end = dom.ram.addr, dom.ram.addr + (dom.nr_pages << L.PAGE_SHIFT)
        addrs = [v.vcpu_info_addr for v in dom.vcpus]
        abi = getattr(dom.events, "abi", None)
        addrs += list(getattr(abi, "pages", ()) or ())
        addrs += list((getattr(abi, "ctl", None) or {}).values())
        out = {(a - base) >> L.PAGE_SHIFT for a in addrs if a and base <= a < end}
        lay = dom.layout
        if lay is not None:
            out.update((lay.store_pfn, lay.console_pfn))
        return out

    def volatile_frames(self) -> set[int]:
        """Frames that may change even while the domain is suspended: the hot
        ones, those dom0 still maps writable, and those the guest grants
        write access to (a backend finishing a request, or filling a posted
        receive buffer, that the frontend drops or issues again when it
        reconnects after its resume)."""
        out = self.hot_frames()
        if self.dom.mm.frefs is not None:
            out.update(self.dom.mm.frefs.held())
        out.update(f for f in self.dom.grants.granted_writable() if 0 <= f < self.dom.nr_pages)
        return out

    def harvest(self) -> list[int]:
        """The dirty frames since start() or the last harvest, in order;
        the log is cleared."""
        dom = self.dom
        mm = dom.mm
        kvm = dom.vm.dirty_log(L.RAM_SLOT)
        user, mm.dirty = mm.dirty, bytearray(dom.nr_pages)
        # a writer may have read mm.dirty just before the swap and mark the
        # old bitmap after it: look at the old one again next time
        late, self._late = self._late, user
        nr = dom.nr_pages
        dirty = set(self.hot_frames())
        for i, byte in enumerate(kvm):
            if byte:
                b = i * 8
                dirty.update(b + j for j in range(8) if byte >> j & 1 and b + j < nr)
        for bm in (user, late):
            if bm is not None:
                pos = bm.find(1)
                while pos >= 0:
                    dirty.add(pos)
                    pos = bm.find(1, pos + 1)
        if mm.frefs is not None:
            dirty.update(mm.frefs.take_dirty())
        return sorted(dirty)
