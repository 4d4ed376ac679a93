"""The x86-64 PV domain builder (like libxc's xg_dom_x86.c for 64-bit PV).

Given guest memory (mfn == pfn here) and a parsed kernel, it lays out the
bootstrap region exactly as Xen's tools do:

    kernel | ramdisk | p2m list | start_info | xenstore | console | page tables | boot stack

all mapped contiguously from VIRT_BASE (va = VIRT_BASE + pfn * 4096), padded
to a 4 MiB boundary with at least 512 KiB to spare. Page-table pages are
mapped read-only, as Xen requires. The caller pins the L4 and starts vCPU 0
with rip = entry, rsp = top of the boot stack, rsi = start_info.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..hv.abi import MAX_GUEST_CMDLINE, SIF_MOD_START_PFN, START_INFO_MAGIC, StartInfo
from .elf import KernelImage
from .errors import KernelImageError

PAGE = 4096
P, RW, US, A, D = 1, 2, 4, 0x20, 0x40
_Q = struct.Struct("<Q")
MB = 1 << 20


@dataclass
class BootLayout:
    entry: int
    stack_top: int
    start_info_va: int
    l4_pfn: int
    pt_pfns: list[int]
    nr_pt_frames: int
    p2m_va: int
    start_info_pfn: int
    store_pfn: int
    console_pfn: int
    bootstrap_end: int         # first virtual address past the bootstrap mapping
    ramdisk_va: int = 0
    ramdisk_len: int = 0


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def count_page_tables(start: int, end: int) -> int:
    """Page-table pages needed to map [start, end) with 4 KiB pages."""
    n = 1  # L4
    for shift in (39, 30, 21):
        n += ((end - 1) >> shift) - (start >> shift) + 1
    return n


def hypercall_page(port: int) -> bytes:
    """pyxen's hypercall page: entry i is `mov $i,%eax; out %al,$port; ret`.
    The iret entry pushes rcx, r11, rax like Xen's and never returns."""
    page = bytearray(b"\xcc" * PAGE)
    for i in range(128):
        if i == 23:
            code = b"\x51\x41\x53\x50" + b"\xb8" + struct.pack("<I", i) + bytes([0xE6, port]) + b"\x0f\x0b"
        else:
            code = b"\xb8" + struct.pack("<I", i) + bytes([0xE6, port]) + b"\xc3"
        page[i * 32:i * 32 + len(code)] = code
    return bytes(page)


def build_pv(ram, nr_pages: int, image: KernelImage, *, ramdisk: bytes | None, cmdline: str,
             shared_info_maddr: int, hypercall_port: int, store_evtchn: int,
             console_evtchn: int, set_m2p=None) -> BootLayout:
    """Load `image` into `ram` (a writable buffer of nr_pages pages) and build
    start_info and the bootstrap page tables. Returns where things are."""
    vb = image.virt_base
    mem_bytes = nr_pages * PAGE

    def pfn_of(va: int) -> int:
        return (va - vb) >> 12

    def check_fits(end_va: int, what: str) -> None:
        if end_va - vb > mem_bytes:
            raise KernelImageError(image.path, f"{what} does not fit in {nr_pages * PAGE // MB} MiB "
                                   "of guest memory; give the domain more memory")

    # kernel
    for seg in image.segments:
        check_fits(seg.vend, "the kernel")
        off = seg.vaddr - vb
        ram[off:off + len(seg.data)] = seg.data
        ram[off + len(seg.data):off + seg.memsz] = bytes(seg.memsz - len(seg.data))
    alloc = _round_up(image.kernel_end, PAGE)

    rd_va = rd_len = 0
    unmapped_ramdisk = bool(ramdisk) and image.mod_start_pfn
    if ramdisk and not unmapped_ramdisk:
        rd_va, rd_len = alloc, len(ramdisk)
        check_fits(rd_va + rd_len, "the ramdisk")
        ram[rd_va - vb:rd_va - vb + rd_len] = ramdisk
        alloc = _round_up(alloc + rd_len, PAGE)

    p2m_va = alloc
    p2m_bytes = _round_up(nr_pages * 8, PAGE)
    check_fits(p2m_va + p2m_bytes, "the p2m list")
    ram[p2m_va - vb:p2m_va - vb + nr_pages * 8] = struct.pack(f"<{nr_pages}Q", *range(nr_pages))
    alloc += p2m_bytes

    si_va, store_va, cons_va = alloc, alloc + PAGE, alloc + 2 * PAGE
    alloc += 3 * PAGE
    for va in (si_va, store_va, cons_va):
        ram[va - vb:va - vb + PAGE] = bytes(PAGE)

    # page tables: enough to map everything up to the end of themselves,
    # the boot stack and 512 KiB of slack, rounded to 4 MiB (libxc's rule)
    pt_va = alloc
    nr_pt = 1
    while True:
        end = _round_up(pt_va + nr_pt * PAGE + PAGE + 512 * 1024, 4 * MB)
        need = count_page_tables(vb, end)
        if need <= nr_pt:
            break
        nr_pt = need
    stack_va = pt_va + nr_pt * PAGE
    check_fits(end, "the bootstrap page tables")
    pt_pfns = [pfn_of(pt_va) + i for i in range(nr_pt)]
    for pfn in pt_pfns:
        ram[pfn * PAGE:(pfn + 1) * PAGE] = bytes(PAGE)
    ram[(pfn_of(stack_va)) * PAGE:(pfn_of(stack_va) + 1) * PAGE] = bytes(PAGE)

    # build the tables top-down
    next_pt = iter(pt_pfns)
    l4 = next(next_pt)
    tables: dict[tuple[int, int], int] = {}   # (level, index prefix) -> pfn
    pt_set = set(pt_pfns)

    def table_for(level: int, va: int, parent: int) -> int:
        shift = {3: 39, 2: 30, 1: 21}[level]
        key = (level, va >> shift)
        t = tables.get(key)
        if t is None:
            t = tables[key] = next(next_pt)
            idx = (va >> shift) & 511
            _Q.pack_into(ram, parent * PAGE + idx * 8, (t << 12) | P | RW | US | A)
        return t

    for va in range(vb, end, PAGE):
        l3 = table_for(3, va, l4)
        l2 = table_for(2, va, l3)
        l1 = table_for(1, va, l2)
        pfn = pfn_of(va)
        flags = P | US | A | (0 if pfn in pt_set else RW | D)
        _Q.pack_into(ram, l1 * PAGE + ((va >> 12) & 511) * 8, (pfn << 12) | flags)
    nr_used = len(tables) + 1

    si_flags = 0
    if unmapped_ramdisk:
        # the kernel takes its initrd by frame number, outside the bootstrap
        # mapping (SIF_MOD_START_PFN), as libxc does for MOD_START_PFN kernels
        first = pfn_of(end)
        rd_len = len(ramdisk)
        if (first << 12) + rd_len > mem_bytes:
            raise KernelImageError(image.path, "the ramdisk does not fit in guest memory; "
                                   "give the domain more memory")
        ram[first << 12:(first << 12) + rd_len] = ramdisk
        rd_va = first
        si_flags |= SIF_MOD_START_PFN

    # hypercall page: the guest page holding HYPERCALL_PAGE, as libxc's
    # setup_hypercall_page computes it ((vaddr - VIRT_BASE) >> 12); Xen's
    # XEN_DOMCTL_hypercall_init wants a writable page of the domain
    if image.hypercall_page is not None:
        hp = image.hypercall_page
        hpfn = ((hp - vb) & ((1 << 64) - 1)) >> 12
        if hpfn >= nr_pages:
            raise KernelImageError(image.path, f"HYPERCALL_PAGE {hp:#x} is not in the guest's memory "
                                   f"(VIRT_BASE {vb:#x} + {nr_pages} pages)")
        if hpfn in pt_set:
            raise KernelImageError(image.path, f"HYPERCALL_PAGE {hp:#x} falls on a bootstrap page-table page")
        ram[hpfn * PAGE:(hpfn + 1) * PAGE] = hypercall_page(hypercall_port)

    # start_info (the rest of its page stays zero)
    si = StartInfo(magic=START_INFO_MAGIC, nr_pages=nr_pages, shared_info=shared_info_maddr,
                   flags=si_flags, store_mfn=pfn_of(store_va), store_evtchn=store_evtchn,
                   console_mfn=pfn_of(cons_va), console_evtchn=console_evtchn,
                   pt_base=pt_va, nr_pt_frames=nr_pt, mfn_list=p2m_va,
                   mod_start=rd_va, mod_len=rd_len,
                   cmd_line=cmdline.encode()[:MAX_GUEST_CMDLINE - 1])
    ram[si_va - vb:si_va - vb + PAGE] = bytes(si).ljust(PAGE, b"\0")

    if set_m2p is not None:
        for pfn in range(nr_pages):
            set_m2p(pfn, pfn)
    return BootLayout(entry=image.entry, stack_top=stack_va + PAGE, start_info_va=si_va,
                      l4_pfn=l4, pt_pfns=pt_pfns[:nr_used], nr_pt_frames=nr_pt, p2m_va=p2m_va,
                      start_info_pfn=pfn_of(si_va), store_pfn=pfn_of(store_va),
                      console_pfn=pfn_of(cons_va), bootstrap_end=end,
                      ramdisk_va=rd_va, ramdisk_len=rd_len)
