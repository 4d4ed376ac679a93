"""set_gdt and update_descriptor (Xen's arch/x86/pv/descriptor-tables.c)."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import HC, EFAULT, EINVAL, FIRST_RESERVED_GDT_ENTRY
from ..guestmem import GuestFault
from ..mm import PageTableError, PGT_SEG_DESC

DESC_P = 1 << 47
DESC_S = 1 << 44
DESC_DPL = 3 << 45
DESC_ACCESSED = 1 << 40


def check_descriptor(desc: int) -> int | None:
    """Validate one 8-byte descriptor for a 64-bit PV guest. Returns the
    descriptor as stored (DPL raised to 3, accessed bit set) or None."""
    if not desc & DESC_P:
        return desc
    if not desc & DESC_S:
        return None          # system descriptors (TSS, LDT, gates) are Xen's alone
    if (desc & DESC_DPL) != DESC_DPL:
        desc |= DESC_DPL     # the guest kernel runs in ring 3
    return desc | DESC_ACCESSED


def set_gdt(vcpu, frame_list, entries, *_):
    if entries > FIRST_RESERVED_GDT_ENTRY:
        return -EINVAL
    nr = (entries + 511) // 512
    try:
        frames = list(struct.unpack(f"<{nr}Q", vcpu.mem.read(frame_list, 8 * nr))) if nr else []
    except GuestFault:
        return -EFAULT
    return install_gdt(vcpu, frames, entries)


def install_gdt(vcpu, frames: list[int], entries: int) -> int:
    """Validate the guest's descriptor frames, take their type references and
    map them into the vCPU's GDT (the rest of the guest part stays empty)."""
    dom = vcpu.domain
    mm = dom.mm
    if entries > FIRST_RESERVED_GDT_ENTRY or len(frames) != (entries + 511) // 512:
        return -EINVAL
    taken = []
    try:
        for f in frames:
            if not mm.owns(f):
                raise PageTableError(EINVAL, f"GDT frame {f:#x} is not this domain's")
            fixes = []
            if mm.tcount[f] == 0:
                # a new descriptor page: checked, and fixed only once it has
                # the type (nothing is written into a frame of another type)
                for i, d in enumerate(mm.entries(f)):
                    fixed = check_descriptor(d)
                    if fixed is None:
                        raise PageTableError(EINVAL, f"GDT frame {f:#x} entry {i}: bad descriptor {d:#x}")
                    if fixed != d:
                        fixes.append((i, fixed))
            mm.get_type(f, PGT_SEG_DESC)
            taken.append(f)
            for i, fixed in fixes:
                mm.write_entry(f, i, fixed)
    except PageTableError as e:
        for f in taken:
            mm.put_type(f)
        dom.log_guest_error(vcpu, f"set_gdt: {e}")
        return -e.errno
    for f in vcpu.pv.gdt_frames:
        mm.put_type(f)
    vcpu.pv.gdt_frames = frames
    vcpu.pv.gdt_entries = entries
    heap = dom.heap
    base = heap.gdt_base(vcpu.id)
    for i in range(FIRST_RESERVED_GDT_ENTRY // 512):
        gpa = frames[i] << 12 if i < len(frames) else heap.gpa(heap.zero_page)
        pte = heap.map_gpa(base + i * L.PAGE_SIZE, gpa, L.PTE_P)
        mm.note_write(pte)
    return 0


def update_descriptor(vcpu, ma, desc, *_):
    mm = vcpu.domain.mm
    mfn = ma >> 12
    if ma & 7 or not mm.owns(mfn):
        return -EINVAL
    fixed = check_descriptor(desc)
    if fixed is None:
        return -EINVAL
    if mm.tcount[mfn] and mm.ptype[mfn] not in (PGT_SEG_DESC, 7):
        return -EINVAL
    mm.write_entry(mfn, (ma & 0xFFF) >> 3, fixed)
    return 0


HANDLERS = {HC.set_gdt: set_gdt, HC.update_descriptor: update_descriptor}
