"""PV memory management: frame types, page-table validation and updates.

Like Xen's arch/x86/mm.c for 64-bit PV guests: every frame has a type
(none / writable / L1..L4 page table / segment descriptors) with a count.
A frame may be a page table or writably mapped, never both. A page-table
frame is validated when its type count goes 0 -> 1 (every present entry
takes a reference on what it points to) and released when it drops to 0.
Guest L4 tables get pyxen's reserved slot written in; the guest cannot
change Xen's slots (256-271).

Linear (recursive) page tables are allowed as in Xen 4.17 with its default
pv-linear-pt=true: an L2, L3 or L4 entry may map a page table of its own
level instead of the level below, read-only only. A table mapping itself
takes no reference; mapping another table takes a type reference on it,
which must already be a validated table of that level. A table that holds
such entries may not itself be mapped that way and vice versa (Xen's
linear_pt_count: > 0 counts a table's linear entries, < 0 the linear
entries that map it).

A frame's writable references are split across two processes: the domain
process counts its own (page-table entries, grants it maps, frames pyxen
keeps writing into) in `tcount`; dom0's services (pyxend's backends, which
write through grant maps) count theirs in a shared word per frame
(`FrameRefs`), where the domain also marks the frames whose type excludes
writers. Either side changes the word only atomically, so a frame is never
both writable by dom0 and a page table or descriptor page.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from array import array

from .. import _atomic as A
from . import layout as L
from .abi import EINVAL, EPERM, EBUSY

PGT_NONE, PGT_L1, PGT_L2, PGT_L3, PGT_L4, PGT_WRITABLE, PGT_SEG_DESC = 0, 1, 2, 3, 4, 7, 8
TYPE_NAMES = {0: "none", 1: "L1", 2: "L2", 3: "L3", 4: "L4", 7: "writable", 8: "seg_desc"}

_Q = struct.Struct("<Q")
_512Q = struct.Struct("<512Q")

ADDR = L.PTE_ADDR_MASK
# Bits a guest may not set, by level (reserved bits 52-62; PSE/large pages
# in L2/L3 and PSE/PAT/G in L4 are not available to PV guests here).
L1_BAD = 0x7FF0000000000000
L2_BAD = 0x7FF0000000000000 | L.PTE_PSE
L3_BAD = L2_BAD
L4_BAD = 0x7FF0000000000000 | L.PTE_PSE | L.PTE_G
# Xen keeps linear_pt_count in 16 signed bits
LINEAR_MAX = 0x7FFF


# a FrameRefs word: the frame's type excludes writers (domain side) | dom0
# held a writable reference since log-dirty last looked | dom0's writable
# references (bits 0-29)
FR_TYPED = 1 << 31
FR_DIRTY = 1 << 30
FR_COUNT = FR_DIRTY - 1


class FrameRefs:
    """One 32-bit word per guest frame, in pyxen's heap (which pyxend maps
    too): bit 31 is set by the domain's MemoryManager while the frame has a
    type that excludes writable use (a page table, a descriptor page); bits
    0-30 count the writable references dom0 holds on it (Xen's
    get_page_and_type(PGT_writable_page) by a backend's grant map). A writer
    is refused a typed frame and a type is refused a frame with writers,
    both with a compare-and-exchange on the word."""

    def __init__(self, addr: int, nr_pages: int):
        self.addr = addr
        self.nr_pages = nr_pages

    def _load(self, mfn: int) -> int:
        return ctypes.c_uint32.from_address(self.addr + 4 * mfn).value

    def _update(self, mfn: int, change) -> bool:
        """Apply change(word) -> new word or None (refused), atomically."""
        addr = self.addr + 4 * mfn
        old = self._load(mfn)
        while True:
            new = change(old)
            if new is None:
                return False
            seen = A.cmpxchg32(addr, old, new)
            if seen == old:
                return True
            old = seen

    # --- dom0's side: a writable reference for as long as it writes ------------
    def get_writable(self, mfn: int) -> bool:
        """Take a writable reference; False when the frame is a page table or
        descriptor page (or not a guest frame at all)."""
        if not 0 <= mfn < self.nr_pages:
            return False
        return self._update(mfn, lambda w: None if w & FR_TYPED or w & FR_COUNT == FR_COUNT
                            else (w + 1) | FR_DIRTY)

    def put_writable(self, mfn: int) -> None:
        self._update(mfn, lambda w: w - 1 if w & FR_COUNT else None)

    def writers(self, mfn: int) -> int:
        return self._load(mfn) & FR_COUNT

    def drop_writers(self) -> int:
        """Forget every writable reference dom0 held: its process is gone (a
        new pyxend says hello), and its mappings went with it. Returns how
        many frames had some."""
        words = (ctypes.c_uint32 * self.nr_pages).from_address(self.addr)
        held = [i for i, w in enumerate(words) if w & FR_COUNT]
        for mfn in held:
            self._update(mfn, lambda w: w & FR_TYPED)
        return len(held)

    def _words(self):
        return memoryview((ctypes.c_uint32 * self.nr_pages).from_address(self.addr)) \
            .cast("B").cast("I")

    def held(self) -> list[int]:
        """The frames dom0 holds writable references on now."""
        return [i for i, w in enumerate(self._words()) if w & FR_COUNT]

    def take_dirty(self) -> list[int]:
        """The frames dom0 may have written since the last call (log-dirty,
        as Xen marks a grant-mapped frame dirty): those it held a writable
        reference on meanwhile, and those it still holds one on (a backend
        keeps its rings and persistent grants mapped)."""
        words = self._words()
        out = [i for i, w in enumerate(words) if w & (FR_DIRTY | FR_COUNT)]
        for mfn in out:
            if words[mfn] & FR_DIRTY:
                A.clear_bit(self.addr + 4 * mfn, 30)
        return out

    # --- the domain's side: the type ------------------------------------------------
    def set_typed(self, mfn: int) -> bool:
        return self._update(mfn, lambda w: None if w & FR_COUNT else w | FR_TYPED)

    def clear_typed(self, mfn: int) -> None:
        A.clear_bit(self.addr + 4 * mfn, 31)


class PageTableError(Exception):
    """A page-table operation the guest is not allowed to make. errno is Xen's."""

    def __init__(self, errno: int, msg: str):
        super().__init__(msg)
        self.errno = errno


class MemoryManager:
    """Frame types and page-table updates for one PV domain (mfn == pfn)."""

    def __init__(self, ram: memoryview, nr_pages: int, heap, log):
        self.ram = ram
        self.nr_pages = nr_pages
        self.heap = heap
        self.log = log
        self.present = bytearray(b"\x01" * nr_pages)   # ballooned-out frames are 0
        self.ptype = bytearray(nr_pages)
        self.tcount = array("l", bytes(8 * nr_pages))
        self.pinned = bytearray(nr_pages)
        self.linear = array("l", bytes(8 * nr_pages))   # Xen's linear_pt_count
        # dom0's writable references and the typed marks (None: no shared heap)
        off = getattr(heap, "frame_refs_off", None)
        self.frefs = FrameRefs(heap.mem.addr + off, nr_pages) if off is not None else None
        self.shared_info_mfn = heap.shared_info_gpa >> L.PAGE_SHIFT
        # pyxen pages this guest may map: shared_info and grant frames (rw),
        # grant status frames (read-only)
        self.shared_rw: set[int] = {self.shared_info_mfn}
        self.shared_ro: set[int] = set()
        # guest-physical addresses of page-table entries written since the
        # last replay, one ordered set per vCPU (see PVVcpu.replay_pt_writes);
        # None = not tracking yet (track_writes)
        self.replay: list[dict[int, None]] | None = None
        self._writer = threading.local()       # .vcpu: the vCPU this thread runs
        # log-dirty (live migration, hv/dirtylog.py): frames pyxen itself
        # wrote (KVM logs only the guest's own writes); None: not logging
        self.dirty: bytearray | None = None
        # the translation caches of the vCPUs' GuestMemoryAccess (issue 15:
        # a page walk was ~7 % of a Linux boot's vCPU time): the tables
        # their cached walks read, and a generation that moves when one of
        # those tables changes or stops being a page table
        self.tlb_tables: set[int] = set()
        self.tlb_gen = 0

    # --- the replay lists (PVVcpu.replay_pt_writes) -------------------------
    def track_writes(self, nr_vcpus: int) -> None:
        """From now on every entry pyxen writes is remembered for replay."""
        self.replay = [{} for _ in range(nr_vcpus)]

    def bind_writer(self, vcpu_id: int) -> None:
        """The calling thread runs this vCPU: what it writes is that vCPU's to
        replay before it resumes the guest."""
        self._writer.vcpu = vcpu_id

    def note_write(self, gpa: int) -> None:
        """A page-table entry (or a pyxen PTE the guest's MMU uses) changed at
        gpa behind KVM's back. It goes on the writing vCPU's list (the
        writer replays it before it runs guest code again, so it is synced
        before the guest can act on the write); a write from a thread that
        runs no vCPU goes on every vCPU's list."""
        lists = self.replay
        if lists is None:
            return
        me = getattr(self._writer, "vcpu", None)
        if me is not None:
            lists[me][gpa] = None
        else:
            for d in lists:
                d[gpa] = None

    def publish_writes(self, vcpu_id: int) -> None:
        """Put what vcpu_id has not replayed yet on every other vCPU's list
        too, so each replays it before it resumes (a flush of other vCPUs'
        TLBs; a vCPU that blocks with writes unreplayed). Call with the
        domain lock held."""
        lists = self.replay
        if lists is None or not lists[vcpu_id]:
            return
        mine = lists[vcpu_id]
        for i, d in enumerate(lists):
            if i != vcpu_id:
                d.update(mine)

    def has_writes(self, vcpu_id: int) -> bool:
        lists = self.replay
        return bool(lists is not None and lists[vcpu_id])

    def take_writes(self, vcpu_id: int) -> list[int]:
        """vcpu_id's list, emptied. Call with the domain lock held (writers
        add under it), and replay before that vCPU resumes."""
        lists = self.replay
        if lists is None or not lists[vcpu_id]:
            return []
        gpas = list(lists[vcpu_id])
        lists[vcpu_id] = {}
        return gpas

    # --- raw access -------------------------------------------------------
    def read_entry(self, mfn: int, idx: int) -> int:
        return _Q.unpack_from(self.ram, (mfn << 12) + idx * 8)[0]

    def write_entry(self, mfn: int, idx: int, val: int) -> None:
        gpa = (mfn << 12) + idx * 8
        ram = self.ram
        old = _Q.unpack_from(ram, gpa)[0]
        _Q.pack_into(ram, gpa, val)
        if mfn in self.tlb_tables:
            self.tlb_shootdown()
        if self.replay is not None and (old & L.PTE_P or not self.tcount[mfn]
                                        or not PGT_L1 <= self.ptype[mfn] <= PGT_L4):
            # An entry of a page table that was not present needs no replay
            # (issue 15: Linux's text_poke and page faults, ~1/3 of a boot's
            # mmu_updates): KVM keeps no shadow entry for a guest entry that
            # is not present (every write that cleared one was replayed), so
            # the guest's first use of the new entry faults into KVM, which
            # reads it from memory (bench/kvm_floor pf: never-accessed and
            # unmapped-then-remapped entries are seen without a replay).
            self.note_write(gpa)
        if self.dirty is not None:
            self.dirty[mfn] = 1

    def mark_dirty(self, mfn: int, count: int = 1) -> None:
        """pyxen wrote frames mfn..mfn+count-1 (log-dirty)."""
        d = self.dirty
        if d is not None:
            d[mfn:mfn + count] = b"\x01" * count

    def entries(self, mfn: int) -> tuple[int, ...]:
        return _512Q.unpack_from(self.ram, mfn << 12)

    def owns(self, mfn: int) -> bool:
        return 0 <= mfn < self.nr_pages and self.present[mfn] == 1

    # --- types ------------------------------------------------------------
    def get_type(self, mfn: int, t: int) -> None:
        """Take a type reference; validates page tables on first use."""
        if not self.owns(mfn):
            raise PageTableError(EINVAL, f"mfn {mfn:#x} is not this domain's")
        cur = self.ptype[mfn]
        cnt = self.tcount[mfn]
        if cnt > 0:
            if cur != t:
                raise PageTableError(EINVAL, f"mfn {mfn:#x} is in use as {TYPE_NAMES[cur]}, "
                                     f"cannot be used as {TYPE_NAMES[t]}")
            self.tcount[mfn] = cnt + 1
            return
        if t != PGT_WRITABLE and self.frefs is not None and not self.frefs.set_typed(mfn):
            raise PageTableError(EINVAL, f"mfn {mfn:#x} is mapped writable by dom0 "
                                 f"({self.frefs.writers(mfn)} references): it cannot be "
                                 f"used as {TYPE_NAMES[t]}")
        self.ptype[mfn] = t
        self.tcount[mfn] = 1
        if PGT_L1 <= t <= PGT_L4:
            self.linear[mfn] = 0
            try:
                self._validate(mfn, t)
            except PageTableError:
                self.ptype[mfn] = PGT_NONE
                self.tcount[mfn] = 0
                if self.frefs is not None:
                    self.frefs.clear_typed(mfn)
                raise

    def put_type(self, mfn: int) -> None:
        cnt = self.tcount[mfn] - 1
        self.tcount[mfn] = cnt
        if cnt == 0:
            t = self.ptype[mfn]
            self.ptype[mfn] = PGT_NONE
            if PGT_L1 <= t <= PGT_L4:
                if mfn in self.tlb_tables:      # the guest may write it from now on
                    self.tlb_shootdown()
                self._release(mfn, t)
            if t != PGT_WRITABLE and self.frefs is not None:
                self.frefs.clear_typed(mfn)

    def _validate(self, mfn: int, level: int) -> None:
        ents = self.entries(mfn)
        if level == 1:
            self._validate_l1(mfn, ents)
            return
        done = []
        try:
            for i, e in enumerate(ents):
                if level == 4 and L.RESERVED_L4_FIRST <= i <= L.RESERVED_L4_LAST:
                    continue
                if e & L.PTE_P:
                    fixed = self._get_entry_ref(e, level, mfn)
                    if fixed != e:
                        self.write_entry(mfn, i, fixed)
                    done.append(fixed)
        except PageTableError as err:
            for e in done:
                self._put_entry_ref(e, level, mfn)
            raise PageTableError(err.errno, f"L{level} table {mfn:#x} entry {i}: {err}") from None
        if level == 4:
            self.install_reserved_slots(mfn)

    def _validate_l1(self, mfn: int, ents) -> None:
        """_validate for an L1 table, with the common entry (a frame of the
        domain's own, mapped read-only or as ordinary writable memory) taken
        inline; anything else goes through _get_entry_ref."""
        done = []
        present, ptype, tcount = self.present, self.ptype, self.tcount
        shared = self.shared_rw | self.shared_ro
        nr = self.nr_pages
        i = 0
        try:
            for i, e in enumerate(ents):
                if not e & L.PTE_P:
                    continue
                target = (e & ADDR) >> 12
                if e & L1_BAD or target in shared or not (0 <= target < nr and present[target]):
                    fixed = self._get_entry_ref(e, 1, mfn)
                elif e & L.PTE_RW:
                    cnt = tcount[target]
                    if cnt == 0:
                        ptype[target] = PGT_WRITABLE
                        tcount[target] = 1
                    elif ptype[target] == PGT_WRITABLE:
                        tcount[target] = cnt + 1
                    else:
                        self.get_type(target, PGT_WRITABLE)     # raises: a typed frame
                    fixed = e | L.PTE_US
                else:
                    fixed = e | L.PTE_US
                if fixed != e:
                    self.write_entry(mfn, i, fixed)
                done.append(fixed)
        except PageTableError as err:
            for e in done:
                self._put_entry_ref(e, 1, mfn)
            raise PageTableError(err.errno, f"L1 table {mfn:#x} entry {i}: {err}") from None

    def install_reserved_slots(self, mfn: int) -> None:
        dm = self.heap.directmap_l4
        for i in range(L.RESERVED_L4_FIRST, L.RESERVED_L4_LAST + 1):
            want = self.heap.l4_entry if i == L.PYXEN_L4_SLOT else dm.get(i, 0)
            if self.read_entry(mfn, i) != want:
                self.write_entry(mfn, i, want)

    def set_l4_view(self, mfn: int, user: bool) -> None:
        """Give a validated L4 the user or the kernel view of slot
        PYXEN_L4_SLOT (XenHeap.l4_entry_user / l4_entry), as Xen's
        zap_ro_mpt/fill_ro_mpt do when a table becomes a user or a kernel
        page-table base. Validation installs the kernel view."""
        want = self.heap.l4_entry_user if user else self.heap.l4_entry
        if self.read_entry(mfn, L.PYXEN_L4_SLOT) != want:
            self.write_entry(mfn, L.PYXEN_L4_SLOT, want)

    def _release(self, mfn: int, level: int) -> None:
        for i, e in enumerate(self.entries(mfn)):
            if level == 4 and L.RESERVED_L4_FIRST <= i <= L.RESERVED_L4_LAST:
                continue
            if e & L.PTE_P:
                self._put_entry_ref(e, level, mfn)

    def _get_entry_ref(self, e: int, level: int, table: int) -> int:
        """Validate one present entry of the level-`level` table `table` and
        take the reference it implies. Returns the entry as stored (Xen forces
        the user bit on: a 64-bit PV kernel runs in ring 3)."""
        target = (e & ADDR) >> 12
        if level == 1:
            if e & L1_BAD:
                raise PageTableError(EINVAL, f"bad L1 flags {e:#x}")
            if target in self.shared_rw:
                return e | L.PTE_US
            if target in self.shared_ro:
                if e & L.PTE_RW:
                    raise PageTableError(EINVAL, f"frame {target:#x} may only be mapped read-only")
                return e | L.PTE_US
            if not self.owns(target):
                raise PageTableError(EINVAL, f"L1 entry maps mfn {target:#x}, not this domain's")
            if e & L.PTE_RW:
                self.get_type(target, PGT_WRITABLE)
            return e | L.PTE_US
        bad = L2_BAD if level < 4 else L4_BAD
        if e & bad:
            raise PageTableError(EINVAL, f"bad L{level} flags {e:#x} (large pages are not "
                                 "available to PV guests)")
        try:
            self.get_type(target, level - 1)
        except PageTableError as err:
            # Xen tries a linear page table only when the normal type failed
            # with -EINVAL; if that is refused too, the first error stands
            if err.errno != EINVAL:
                raise
            why = self._get_linear(e, level, table, target)
            if why is not None:
                raise PageTableError(EINVAL, f"{err}; not a linear page table either: {why}") \
                    from None
        return e | L.PTE_US

    def _get_linear(self, e: int, level: int, table: int, target: int) -> str | None:
        """Accept a level-`level` entry of `table` that maps `target` as a
        table of its own level (Xen's get_lN_linear_pagetable). Returns None
        when accepted (the references are taken), else why not."""
        if e & L.PTE_RW:
            return "a linear page-table entry must be read-only"
        if target == table:
            return None                 # a table mapping itself: no reference
        if not self.owns(target):
            return f"mfn {target:#x} is not this domain's"
        entries, uses = self.linear[table], self.linear[target]
        if entries < 0 or entries >= LINEAR_MAX:
            return f"L{level} table {table:#x} is itself mapped as a linear page table"
        if uses > 0 or uses <= -LINEAR_MAX - 1:
            return f"L{level} table {target:#x} has linear entries of its own"
        if self.tcount[target] == 0 or self.ptype[target] != level:
            return f"mfn {target:#x} is not a validated L{level} table"
        self.linear[table] = entries + 1
        self.linear[target] = uses - 1
        self.tcount[target] += 1
        return None

    def _put_entry_ref(self, e: int, level: int, table: int) -> None:
        target = (e & ADDR) >> 12
        if level == 1:
            if (e & L.PTE_RW) and self.owns(target):
                self.put_type(target)
            return
        if target == table:
            return                      # a linear self-map holds no reference
        if self.ptype[target] == level:
            # a linear entry: only those map a table of their own level
            self.linear[table] -= 1
            self.linear[target] += 1
        self.put_type(target)

    # --- guest operations ---------------------------------------------------
    def pin(self, mfn: int, level: int) -> None:
        if not self.owns(mfn):
            raise PageTableError(EINVAL, f"pin: mfn {mfn:#x} is not this domain's")
        if self.pinned[mfn]:
            raise PageTableError(EINVAL, f"mfn {mfn:#x} is already pinned")
        self.get_type(mfn, level)
        self.pinned[mfn] = 1

    def unpin(self, mfn: int) -> None:
        if not self.owns(mfn) or not self.pinned[mfn]:
            raise PageTableError(EINVAL, f"unpin: mfn {mfn:#x} is not pinned")
        self.pinned[mfn] = 0
        self.put_type(mfn)

    def update_entry(self, ptr: int, val: int, preserve_ad: bool = False) -> None:
        """MMU_NORMAL_PT_UPDATE: write val at machine address ptr."""
        mfn = ptr >> 12
        idx = (ptr & 0xFFF) >> 3
        if ptr & 7:
            raise PageTableError(EINVAL, f"unaligned PTE address {ptr:#x}")
        if not self.owns(mfn):
            raise PageTableError(EINVAL, f"PTE address {ptr:#x} is not in this domain's memory")
        level = self.ptype[mfn] if self.tcount[mfn] else PGT_NONE
        if not (PGT_L1 <= level <= PGT_L4):
            # not a page table: a plain write to a page the guest may write
            if self.tcount[mfn] and self.ptype[mfn] not in (PGT_WRITABLE, PGT_NONE):
                raise PageTableError(EINVAL, f"mfn {mfn:#x} is a {TYPE_NAMES[self.ptype[mfn]]} page")
            self.write_entry(mfn, idx, val)
            return
        if level == 4 and L.RESERVED_L4_FIRST <= idx <= L.RESERVED_L4_LAST:
            raise PageTableError(EINVAL, f"L4 slot {idx} belongs to the hypervisor")
        old = self.read_entry(mfn, idx)
        if preserve_ad:
            val |= old & (L.PTE_A | L.PTE_D)
        if val & L.PTE_P:
            if (old & L.PTE_P) and ((old ^ val) & (ADDR | L.PTE_RW | L.PTE_P)) == 0:
                # same frame, same writability: only flag bits change
                bad = L1_BAD if level == 1 else (L2_BAD if level < 4 else L4_BAD)
                if val & bad:
                    raise PageTableError(EINVAL, f"bad L{level} flags {val:#x}")
                self.write_entry(mfn, idx, val | L.PTE_US)
                return
            new = self._get_entry_ref(val, level, mfn)
        else:
            new = val
        self.write_entry(mfn, idx, new)
        if old & L.PTE_P:
            self._put_entry_ref(old, level, mfn)

    # --- translation -------------------------------------------------------------
    def read_q(self, gpa: int) -> int:
        if gpa < self.nr_pages << 12:
            return _Q.unpack_from(self.ram, gpa)[0]
        if self.heap.contains(gpa):
            return _Q.unpack_from(self.heap.mm, gpa - L.XEN_GPA)[0]
        return 0

    def tlb_shootdown(self) -> None:
        """A table some cached translation went through changed: every
        vCPU's cache is dropped (GuestMemoryAccess checks tlb_gen)."""
        self.tlb_tables.clear()       # first: a walk that starts under the new
        self.tlb_gen += 1             # generation registers its tables again

    def walk_page(self, l4_mfn: int, va: int) -> tuple[int, bool, bool, bool] | None:
        """walk() for the page of va: (its guest-physical address, writable,
        user, cacheable). Each table is entered in tlb_tables before it is
        read, so a write to it from then on moves tlb_gen; cacheable is
        False when the walk went through pyxen's own tables (which change
        without write_entry) or ends outside the guest's RAM."""
        tables = self.tlb_tables
        if len(tables) > 4096:
            self.tlb_shootdown()
        ram_end = self.nr_pages << 12
        table = l4_mfn << 12
        rw = us = True
        cacheable = True
        for shift in (39, 30, 21, 12):
            if table < ram_end:
                tables.add(table >> 12)
                e = _Q.unpack_from(self.ram, table + ((va >> shift) & 511) * 8)[0]
            else:
                cacheable = False
                e = self.read_q(table + ((va >> shift) & 511) * 8)
            if not e & L.PTE_P:
                return None
            rw = rw and bool(e & L.PTE_RW)
            us = us and bool(e & L.PTE_US)
            if shift in (30, 21) and e & L.PTE_PSE:
                size = 1 << shift
                table = ((e & ADDR) & ~(size - 1)) | (va & (size - 1) & ~0xFFF)
                break
            table = e & ADDR
        return table, rw, us, cacheable and table < ram_end

    def walk(self, l4_mfn: int, va: int) -> tuple[int, bool, bool] | None:
        """Translate va through the tables rooted at l4_mfn.
        Returns (guest-physical address, writable, user) or None if unmapped
        (walk_page's walk: the tables it reads are in tlb_tables after it)."""
        t = self.walk_page(l4_mfn, va)
        if t is None:
            return None
        return t[0] | (va & 0xFFF), t[1], t[2]
