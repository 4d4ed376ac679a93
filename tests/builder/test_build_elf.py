"""load_kernel / parse_kernel against the rules of Xen's libelf and libxc.

``RULES`` is the table: one row per rule, an ELF file synthesized byte by
byte (buildtest_helpers.synth_elf) and either the values pyxen must read or
the exact error text.  Further down: kernels linked by gcc, XTF kernels
(when built in /tmp/xtfbuild) and a fuzz test.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import pytest
from elftools.elf.elffile import ELFFile

from buildtest_helpers import (
    DEFAULT_SEGS,
    FEATURES,
    GUEST_OS,
    KBASE,
    PF_R,
    PF_W,
    PHYS_START,
    PT_NOTE,
    VIRT_BASE,
    Seg,
    build_elf,
    build_plain_elf,
    elf32_bytes,
    linux_like_notes,
    note_record,
    patch,
    phdrs,
    synth_elf,
    xen_notes,
)
from pyxen.build.elf import KernelImage, load_kernel, parse_kernel
from pyxen.build.elfnotes import XenElfNote
from pyxen.build.errors import KernelImageError

VB = VIRT_BASE
KSTART, KEND = VB + KBASE, VB + KBASE + 0x5000  # the default synthesized kernel
BASE = synth_elf()
SIZE = len(BASE)
SHNUM = struct.unpack_from("<H", BASE, 60)[0]
XEN3 = "GUEST_OS=linux,XEN_VER=xen-3.0"
NOTE_AREA = len(b"".join(note_record(*n) for n in xen_notes()))
PHDR = 64  # offset of program header 0; each is 56 bytes
XTF_SEGS = (Seg(KBASE, 0x1800, 0x2000, vaddr=KBASE), Seg(KBASE + 0x2000, 0x100, 0x3000, PF_R | PF_W, vaddr=KBASE))


def K(**kw) -> Callable[[], bytes]:
    return lambda: synth_elf(**kw)


def P(offset: int, fmt: str, *values, **kw) -> Callable[[], bytes]:
    """A synthesized kernel with a struct patched in."""
    return lambda: patch(synth_elf(**kw), offset, fmt, *values)


def has(text: str) -> Callable[[object], bool]:
    return lambda v: any(text in w for w in v)  # type: ignore[attr-defined]


def WARN(text: str) -> dict:
    return {"warnings": has(text)}


def ENTRY_OUT(addr: int, frm: str, lo: int = KSTART, hi: int = KEND) -> str:
    return f"entry point {addr:#x} ({frm}) is outside the kernel image [{lo:#x}, {hi:#x}]"


_OFFSET = f"p_paddr + VIRT_BASE {VB:#x} - PADDR_OFFSET 0x0"
_FEAT = "the FEATURES note in PT_NOTE segment 2"

# (rule, make the file, expected: dict of KernelImage attributes -- a value or a
# predicate -- or the error text after "k.elf: ")
RULES = [
    # --- the file: elf_is_elfbinary, elf_init ---------------------------
    ("magic \\x7fELF (or a bzImage)", lambda: b"MZ" + bytes(200), "not an ELF file or bzImage"),
    ("at least an ELF header long", lambda: b"\x7fELF\x02\x01\x01" + bytes(20),
     "truncated ELF file: 27 bytes, shorter than an ELF header (52 bytes)"),
    ("a whole ELF64 header", lambda: BASE[:60], "truncated ELF header: 60 bytes, an ELF64 header has 64"),
    ("pyxen: ELFCLASS32 refused", P(4, "B", 1), "32-bit PV guests are not supported by pyxen (ELF class 32)"),
    ("ELF class 1 or 2", P(4, "B", 7), "invalid ELF class 7 (expected 2 = ELFCLASS64)"),
    ("pyxen: little-endian only", P(5, "B", 2), "big-endian ELF files are not supported (x86-64 is little-endian)"),
    ("EM_X86_64", P(18, "<H", 183), "not an x86-64 kernel (ELF machine is AArch64, expected x86-64)"),
    ("EM_386 in an ELF64 file", P(18, "<H", 3), "not an x86-64 kernel (ELF machine is i386, expected x86-64)"),
    ("program headers inside the file", P(56, "<H", 0x300),
     f"the program header table (768 entries of 56 bytes at 0x40) extends past the end of the file ({SIZE:#x} bytes)"),
    ("section headers inside the file", P(40, "<Q", SIZE - 64),
     f"the section header table ({SHNUM} entries of 64 bytes at {SIZE - 64:#x}) extends past the end of the file "
     f"({SIZE:#x} bytes)"),
    ("e_shoff checked with no sections", lambda: patch(patch(BASE, 60, "<H", 0), 40, "<Q", SIZE + 1),
     f"the section header table (0 entries of 64 bytes at {SIZE + 1:#x}) extends past the end of the file "
     f"({SIZE:#x} bytes)"),
    ("pyxen: e_phentsize >= 56", P(54, "<H", 32), "e_phentsize is 32, smaller than an ELF64 program header (56 bytes)"),
    ("pyxen: e_shentsize >= 64", P(58, "<H", 40), "e_shentsize is 40, smaller than an ELF64 section header (64 bytes)"),
    ("section names need e_shstrndx", P(62, "<H", 99, note_where="none", legacy=XEN3),
     "not a Xen PV kernel: no ELF notes and no __xen_guest section"),
    # --- where the notes come from: elf_xen_parse -----------------------
    ("PT_NOTE segments first", K(), {"notes_source": "notes", "guest_os": "linux"}),
    ("PT_NOTE with p_offset 0 skipped", K(note_p_offset_zero=True), {"notes_source": "sections"}),
    ("SHT_NOTE sections second", K(note_where="section"), {"notes_source": "sections", "virt_base": VB}),
    ("sections unread when segments have Xen notes",
     K(notes=xen_notes(GUEST_OS="linux-seg"), section_notes=xen_notes(GUEST_OS="linux-sec")),
     {"guest_os": "linux-seg"}),
    ("sections read when segments have no Xen note",
     K(notes=[(b"GNU\0", 3, b"abcd")], section_notes=xen_notes(GUEST_OS="linux-sec")),
     {"notes_source": "sections", "guest_os": "linux-sec"}),
    ("Xen notes of unknown type count",
     K(notes=[(b"Xen\0", 0x1000001, b"abcd")], section_notes=xen_notes()),
     "only kernels for the generic loader or Linux kernels can be loaded (LOADER='', GUEST_OS='')"),
    ("__xen_guest last", K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=0"),
     {"notes_source": "__xen_guest", "guest_info": {"GUEST_OS": "linux", "XEN_VER": "xen-3.0",
                                                     "VIRT_BASE": "0xffffffff80000000", "ELF_PADDR_OFFSET": "0"}}),
    ("notes before __xen_guest", K(legacy="GUEST_OS=bsd,XEN_VER=xen-2.0"), {"notes_source": "notes"}),
    ('only owner "Xen" counts', K(notes=[(b"XenX\0", t, d) for _, t, d in xen_notes()]),
     'not a Xen PV kernel: none of its ELF notes is owned by "Xen" and it has no __xen_guest section'),
    ("no notes, no __xen_guest: not Xen", K(note_where="none"),
     "not a Xen PV kernel: no ELF notes and no __xen_guest section"),
    ("note area inside the file", P(PHDR + 2 * 56 + 32, "<Q", 0x10000),
     f"PT_NOTE segment 2 [0x4000, 0x14000) extends past the end of the file ({SIZE:#x} bytes)"),
    ("notes inside their area", P(PHDR + 2 * 56 + 32, "<Q", NOTE_AREA - 4),
     f"corrupt ELF notes in PT_NOTE segment 2: the note at offset {NOTE_AREA - 24:#x} (namesz 4, descsz 8) "
     f"runs past the end of the {NOTE_AREA - 4}-byte note area"),
    ("at most 65536 notes", K(notes=[(b"", 0, b"")] * 65537),
     "too many ELF notes (more than 65536); stopped in PT_NOTE segment 2"),
    ("4-byte padding whatever p_align",
     K(notes=xen_notes(GUEST_VERSION="6.1.0-xyz", GUEST_OS="linux"), note_p_align=8),
     {"guest_version": "6.1.0-xyz", "guest_os": "linux", "xen_version": "xen-3.0", "virt_base": VB}),
    ("a later note overrides", K(notes=xen_notes((GUEST_OS, "linux-late"))), {"guest_os": "linux-late"}),
    ("INFO and other types ignored", K(notes=xen_notes((0, "A=b"), (0x2000000, b""))),
     WARN("unknown Xen note type 0 in PT_NOTE segment 2 ignored")),
    # --- decoding -------------------------------------------------------
    ("strings end at NUL", K(notes=xen_notes(GUEST_VERSION=b"4.19\0junk")), {"guest_version": "4.19"}),
    ("strings end with the descriptor", K(notes=xen_notes(GUEST_VERSION=b"4.19")), {"guest_version": "4.19"}),
    ("numbers of 1, 2, 4, 8 bytes",
     K(notes=xen_notes(INIT_P2M=struct.pack("<I", 0x40000000), PHYS32_ENTRY=struct.pack("<H", 0x1234),
                       HV_START_LOW=struct.pack("<B", 7))),
     {"init_p2m": 0x40000000, "phys32_entry": 0x1234, "hv_start_low": 7}),
    ("numbers of other sizes read 0", K(notes=xen_notes(HV_START_LOW=b"\x01\x02\x03")),
     {"hv_start_low": 0, **WARN("HV_START_LOW note in PT_NOTE segment 2 has a 3-byte descriptor")}),
    ("ENTRY of 3 bytes is 0", K(notes=xen_notes(ENTRY=b"\x01\x02\x03")),
     ENTRY_OUT(0, "ENTRY note (3-byte descriptor, read as 0)")),
    ("L1_MFN_VALID words (information)", K(), {"l1_mfn_valid": (1, 1)}),
    # --- features -------------------------------------------------------
    ("FEATURES '!' required, '|' separated", K(),
     {"features_required": {"writable_page_tables"},
      "features_supported": {"writable_page_tables", "pae_pgdir_above_4gb", "dom0"}}),
    ("FEATURES names: libelf's seven",
     K(notes=xen_notes(FEATURES="hvm_safe_pvclock|writable_descriptor_tables", SUPPORTED_FEATURES=None)),
     {"features_supported": {"writable_descriptor_tables"}, "features_required": set(),
      **WARN("names unknown feature 'hvm_safe_pvclock'")}),
    ("FEATURES items not stripped",
     K(notes=xen_notes(FEATURES="!writable_page_tables| pae_pgdir_above_4gb", SUPPORTED_FEATURES=None)),
     {"features_supported": {"writable_page_tables"}}),
    ("FEATURES items of 63 characters",
     K(notes=xen_notes(FEATURES="a" * 63 + "pae_pgdir_above_4gb", SUPPORTED_FEATURES=None)),
     {"features_supported": {"pae_pgdir_above_4gb"}}),
    ("unknown required feature", K(notes=xen_notes(FEATURES="!writable_page_tables|!teleportation")),
     f"{_FEAT} ('!writable_page_tables|!teleportation') requires feature 'teleportation', "
     "which is not a feature name Xen's loader knows"),
    ("'!' alone", K(notes=xen_notes(FEATURES="!")),
     f"{_FEAT} ('!') requires feature '', which is not a feature name Xen's loader knows"),
    ("FEATURES notes accumulate",
     K(notes=xen_notes((FEATURES, "pae_pgdir_above_4gb"), FEATURES="!writable_page_tables", SUPPORTED_FEATURES=None)),
     {"features_supported": {"writable_page_tables", "pae_pgdir_above_4gb"}, "features_required": {"writable_page_tables"}}),
    ("SUPPORTED_FEATURES word 0 joins FEATURES",
     K(notes=xen_notes(FEATURES="writable_page_tables", SUPPORTED_FEATURES=struct.pack("<II", 1 << 9, 0xFFFF))),
     {"features_supported": {"writable_page_tables", "hvm_safe_pvclock"}}),
    ("SUPPORTED_FEATURES not whole words is 0",
     K(notes=xen_notes(FEATURES="writable_page_tables", SUPPORTED_FEATURES=b"\x00\x02\x00\x00\x00")),
     {"features_supported": {"writable_page_tables"}}),
    ("libxc: !dom0 is no domU", K(notes=xen_notes(FEATURES="!writable_page_tables|!dom0")),
     "kernel requires the dom0 feature: it cannot run as an unprivileged domain (domU)"),
    ("pyxen: required features must be offered",
     K(notes=xen_notes(FEATURES="!writable_page_tables|!auto_translated_physmap")),
     "kernel requires Xen features that pyxen does not support: auto_translated_physmap"),
    # --- elf_xen_note_check ---------------------------------------------
    ("LOADER generic suffices", K(notes=xen_notes(GUEST_OS="Plan9", LOADER="generic-v2")), {"guest_os": "Plan9"}),
    ("GUEST_OS linux suffices", K(notes=xen_notes(GUEST_OS="linux-6.1", LOADER=None)), {"loader": ""}),
    ("LOADER generic or GUEST_OS linux", K(notes=xen_notes(GUEST_OS="Plan9", LOADER=None)),
     "only kernels for the generic loader or Linux kernels can be loaded (LOADER='', GUEST_OS='Plan9')"),
    ("XEN_VERSION starts with xen-3.0", K(notes=xen_notes(XEN_VERSION="xen-3.0-unstable")),
     {"xen_version": "xen-3.0-unstable"}),
    ("XEN_VERSION xen-2.0 refused", K(notes=xen_notes(XEN_VERSION="xen-2.0")),
     "kernel is not built for the Xen 3.0 interface (XEN_VERSION 'xen-2.0', expected 'xen-3.0')"),
    ("XEN_VERSION required", K(notes=xen_notes(XEN_VERSION=None)),
     "kernel is not built for the Xen 3.0 interface (XEN_VERSION missing, expected 'xen-3.0')"),
    # --- addresses: elf_parse_binary, elf_xen_addr_calc_check -----------
    ("VIRT_BASE unset is 0 (XTF)",
     K(notes=xen_notes(VIRT_BASE=None, PADDR_OFFSET=None, ENTRY=None, HYPERCALL_PAGE=KBASE + 0x1000),
       segs=XTF_SEGS, entry=KBASE),
     {"virt_base": 0, "paddr_offset": 0, "kernel_start": KBASE, "kernel_end": KBASE + 0x5000, "entry": KBASE}),
    ("PADDR_OFFSET needs VIRT_BASE", K(notes=xen_notes(VIRT_BASE=None)), "PADDR_OFFSET note is set but VIRT_BASE is not"),
    ("ELF_PADDR_OFFSET needs VIRT_BASE", K(note_where="none", legacy=XEN3 + ",ELF_PADDR_OFFSET=0"),
     "ELF_PADDR_OFFSET is set but VIRT_BASE is not"),
    ("PADDR_OFFSET unset is 0 with notes", K(notes=xen_notes(PADDR_OFFSET=None)),
     {"paddr_offset": 0, "kernel_start": KSTART, "kernel_end": KEND}),
    ("ELF_PADDR_OFFSET unset is VIRT_BASE with __xen_guest",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000",
       segs=(Seg(VB + KBASE, 0x1800, 0x2000), Seg(VB + KBASE + 0x2000, 0x100, 0x3000))),
     {"paddr_offset": VB, "kernel_start": KSTART, "kernel_end": KEND}),
    ("PADDR_OFFSET note", K(notes=xen_notes(PADDR_OFFSET=VB), segs=(Seg(VB + KBASE, 0x1800, 0x2000),)),
     {"paddr_offset": VB, "kernel_start": KSTART, "segments": lambda s: [x.vaddr for x in s] == [KSTART]}),
    ("load at p_paddr + offset, not p_vaddr", K(segs=(Seg(KBASE, 0x1800, 0x5000, vaddr=0x1234000),)),
     {"segments": lambda s: s[0].vaddr == KSTART and s[0].paddr == KBASE}),
    ("PT_LOAD without R/W/X not loaded", K(segs=DEFAULT_SEGS + (Seg(0x4000000, 0x10, 0x10, flags=0),)),
     {"kernel_end": KEND, "segments": lambda s: len(s) == 2}),
    ("only PT_LOAD loaded", K(segs=DEFAULT_SEGS + (Seg(0x4000000, 0x10, 0x10, p_type=0x6474E551),)),
     {"kernel_end": KEND, "segments": lambda s: len(s) == 2}),
    ("a loadable segment needed", K(segs=()), "no loadable (PT_LOAD) segments"),
    ("ENTRY unset is e_entry", K(notes=xen_notes(ENTRY=None), entry=KSTART + 0x20), {"entry": KSTART + 0x20}),
    ("ENTRY note wins over e_entry", K(), {"entry": KSTART + 0x10, "e_entry": KSTART}),
    ("entry may be kend", K(notes=xen_notes(ENTRY=KEND)), {"entry": KEND}),
    ("entry <= kend", K(notes=xen_notes(ENTRY=KEND + 1)), ENTRY_OUT(KEND + 1, "ENTRY note")),
    ("entry >= kstart", K(notes=xen_notes(ENTRY=None), entry=VB), ENTRY_OUT(VB, "e_entry")),
    ("VIRT_BASE <= kstart", K(notes=xen_notes(PADDR_OFFSET=0x200000, ENTRY=None), entry=VB - 0x100000),
     f"the kernel image starts at {VB - 0x100000:#x} (lowest p_paddr + VIRT_BASE {VB:#x} - PADDR_OFFSET 0x200000), "
     f"below VIRT_BASE {VB:#x}"),
    ("kstart <= kend", K(notes=xen_notes(ENTRY=None), segs=(Seg(0x7FF00000, 0x10, 0x200000),)),
     f"the kernel image [0xfffffffffff00000, 0x100000) ends before it starts: it wraps around the end of the "
     f"address space ({_OFFSET})"),
    ("INIT_P2M outside the kernel", K(), {"init_p2m": 0x8000000000}),
    ("INIT_P2M not inside the kernel", K(notes=xen_notes(INIT_P2M=KSTART + 0x1000)),
     f"INIT_P2M {KSTART + 0x1000:#x} lies inside the kernel image [{KSTART:#x}, {KEND:#x})"),
    ("INIT_P2M may be kend", K(notes=xen_notes(INIT_P2M=KEND)), {"init_p2m": KEND}),
    ("libxc: kstart page-aligned", K(segs=(Seg(KBASE + 0x10, 0x10, 0x5000),)),
     f"the kernel image starts at {KSTART + 0x10:#x} (lowest {_OFFSET}), which is not page-aligned; the domain "
     "builder places the kernel in whole pages"),
    ("pyxen: VIRT_BASE page-aligned", K(notes=xen_notes(VIRT_BASE=VB + 0x123)),
     f"invalid VIRT_BASE {VB + 0x123:#x} (must be a page-aligned canonical address)"),
    ("pyxen: VIRT_BASE canonical", K(notes=xen_notes(VIRT_BASE=0x900000000000)),
     "invalid VIRT_BASE 0x900000000000 (must be a page-aligned canonical address)"),
    ("pyxen: kernel canonical", K(notes=xen_notes(VIRT_BASE=0x7FFFFFF00000, ENTRY=0x800000000000)),
     "the kernel image [0x800000000000, 0x800000005000) is not in canonical address space"),
    ("pyxen: no segment wraps 2**64", K(segs=(Seg(0xFFFFFFFFFFFFF000, 0, 0x2000),)),
     "PT_LOAD segment 0 (p_paddr 0xfffffffffffff000, p_memsz 0x2000) wraps around the end of the address space"),
    ("pyxen: p_filesz <= p_memsz", K(segs=(Seg(KBASE, 0x2000, 0x1000), Seg(KBASE + 0x1000, 0, 0x4000))),
     "PT_LOAD segment 0: file size 0x2000 exceeds memory size 0x1000"),
    ("pyxen: segment data inside the file", P(PHDR + 8, "<Q", SIZE),
     f"PT_LOAD segment 0 [{SIZE:#x}, {SIZE + 0x1800:#x}) extends past the end of the file ({SIZE:#x} bytes)"),
    ("overlapping segments load in order", K(segs=(Seg(KBASE, 0x1000, 0x5000), Seg(KBASE + 0x1000, 0x100, 0x1000))),
     {"kernel_end": KEND, "segments": lambda s: [x.vaddr for x in s] == [KSTART, KSTART + 0x1000]}),
    ("segments total at most twice the kernel", K(segs=(Seg(KBASE, 0x10, 0x1000),) * 3),
     "the PT_LOAD segments total 0x3000 bytes, more than twice the kernel image (0x1000 bytes): they overlap too much"),
    # --- other notes ----------------------------------------------------
    ("HYPERCALL_PAGE note as is", K(notes=xen_notes(HYPERCALL_PAGE=VB + 0x40000000)), {"hypercall_page": VB + 0x40000000}),
    ("HYPERCALL_PAGE in __xen_guest: page + VIRT_BASE",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=0,HYPERCALL_PAGE=0x101"),
     {"hypercall_page": VB + 0x101000}),
    ("HYPERCALL_PAGE in __xen_guest without VIRT_BASE",
     K(note_where="none", legacy=XEN3 + ",HYPERCALL_PAGE=0x101", segs=XTF_SEGS, entry=KBASE),
     {"hypercall_page": 0x101000, "virt_base": 0}),
    ("PHYS32_ENTRY is 32 bits", K(notes=xen_notes(PHYS32_ENTRY=0x100100850)), {"phys32_entry": 0x100850}),
    ("SUSPEND_CANCEL, MOD_START_PFN", K(), {"suspend_cancel": True, "mod_start_pfn": True}),
    ("SUSPEND_CANCEL, MOD_START_PFN 0",
     K(notes=xen_notes(SUSPEND_CANCEL=struct.pack("<I", 0), MOD_START_PFN=struct.pack("<I", 0))),
     {"suspend_cancel": False, "mod_start_pfn": False}),
    ("HV_START_LOW, PAE_MODE", K(), {"hv_start_low": 0xFFFF800000000000, "pae_mode": "yes"}),
    ("BSD_SYMTAB yes: tables after the kernel", K(notes=xen_notes(BSD_SYMTAB="yes"), symtab=True),
     {"bsd_symtab": True, "symtab": lambda s: s.vaddr == KEND and s.memsz == 320, "kernel_end": KEND + 0x1000}),
    ("BSD_SYMTAB no", K(notes=xen_notes(BSD_SYMTAB="no"), symtab=True),
     {"bsd_symtab": False, "symtab": None, "kernel_end": KEND}),
    ("BSD_SYMTAB without a symbol table", K(notes=xen_notes(BSD_SYMTAB="yes")),
     {"bsd_symtab": True, "symtab": None, "kernel_end": KEND, **WARN("the kernel has no symbol table")}),
    ("BSD_SYMTAB in __xen_guest: presence",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=0,BSD_SYMTAB=no", symtab=True),
     {"bsd_symtab": True, "symtab": lambda s: s is not None}),
    # --- __xen_guest values ---------------------------------------------
    ("__xen_guest numbers: strtoull base 0",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=01777777777760000000000,ELF_PADDR_OFFSET=0,VIRT_ENTRY= -2146435040"),
     {"virt_base": VB, "entry": KSTART + 0x20}),
    ("__xen_guest non-numbers read 0",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=zero"),
     {"paddr_offset": 0, "kernel_start": KSTART, **WARN("ELF_PADDR_OFFSET='zero' in __xen_guest is not a number")}),
    ("__xen_guest FEATURES", K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=0,"
                               "FEATURES=!writable_page_tables|pae_pgdir_above_4gb"),
     {"features_required": {"writable_page_tables"}, "features_supported": {"writable_page_tables", "pae_pgdir_above_4gb"}}),
    ("__xen_guest unknown required feature stops reading",
     K(note_where="none", legacy="GUEST_OS=linux,FEATURES=!teleport,XEN_VER=xen-3.0"),
     "kernel is not built for the Xen 3.0 interface (XEN_VERSION missing, expected 'xen-3.0')"),
    ("__xen_guest unknown required feature unsupported",
     K(note_where="none", legacy=XEN3 + ",VIRT_BASE=0xffffffff80000000,FEATURES=!teleport"),
     "kernel requires Xen features that pyxen does not support: teleport"),
]


@pytest.mark.parametrize("make, expected", [pytest.param(m, e, id=r) for r, m, e in RULES])
def test_rule(make: Callable[[], bytes], expected) -> None:
    data = make()
    if isinstance(expected, str):
        with pytest.raises(KernelImageError) as ei:
            parse_kernel(data, "/some/dir/k.elf")
        assert str(ei.value) == "k.elf: " + expected
        return
    k = parse_kernel(data, "/some/dir/k.elf")
    for attr, want in expected.items():
        got = getattr(k, attr)
        if callable(want):
            assert want(got), f"{attr} = {got!r}"
        else:
            assert got == want, f"{attr} = {got!r}, expected {want!r}"


def test_rule_table_ids_unique() -> None:
    ids = [r for r, _, _ in RULES]
    assert len(ids) == len(set(ids))


def test_bsd_symtab_layout() -> None:
    """What elf_load_bsdsyms puts after the kernel: size, ELF header, 3 section headers, symtab, strtab."""
    data = synth_elf(notes=xen_notes(BSD_SYMTAB="yes"), symtab=True)
    k = parse_kernel(data, "k.elf")
    s = k.symtab
    assert s is not None and k.segments[-1] is s
    assert s.paddr == KBASE + 0x5000 and s.flags == PF_R
    blob = s.data
    (size,) = struct.unpack_from("<I", blob, 0)
    ehdr = blob[4:68]
    assert ehdr[:4] == b"\x7fELF" and size == len(blob) - 4
    e_version, = struct.unpack_from("<I", ehdr, 20)
    e_phoff, e_shoff = struct.unpack_from("<QQ", ehdr, 32)
    ehsize, phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHHH", ehdr, 52)
    assert (e_version, e_phoff, e_shoff) == (1, 0, 64)
    assert (ehsize, phentsize, phnum, shentsize, shnum, shstrndx) == (64, 0, 0, 64, 3, 0)
    sh = [struct.unpack_from("<IIQQQQIIQQ", blob, 68 + 64 * i) for i in range(3)]
    assert sh[0] == (0,) * 10
    assert sh[1][1] == 2 and sh[1][4] == 260 and sh[1][6] == 2  # SYMTAB at 260 from the ELF header, link 2
    assert sh[2][1] == 3 and sh[2][4] == 4 + 260 + 48 - 4  # STRTAB after the 48-byte symtab
    # the tables themselves, offsets counted from the ELF header (blob offset 4)
    assert blob[4 + sh[1][4]:4 + sh[1][4] + 48][24:28] == struct.pack("<I", 1)
    assert blob[4 + sh[2][4]:] == b"\0_start\0"


# --- kernels linked by gcc ----------------------------------------------


def symbols(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}


def section_bytes(path: Path, name: str) -> bytes:
    with open(path, "rb") as f:
        return ELFFile(f).get_section_by_name(name).data()


@pytest.fixture(scope="module")
def linux_elf(tmp_path_factory) -> Path:
    return build_elf(tmp_path_factory.mktemp("linux"), "vmlinux", linux_like_notes())


def test_linux_like_kernel_fields(linux_elf: Path) -> None:
    k = load_kernel(linux_elf)
    sym = symbols(linux_elf)
    assert isinstance(k, KernelImage)
    assert k.path == linux_elf
    assert k.elf_class == 64 and k.machine == 62
    assert k.virt_base == VIRT_BASE
    assert k.paddr_offset == 0
    assert k.entry == sym["xen_entry"] != k.e_entry  # ENTRY note wins over e_entry
    assert k.e_entry == sym["_start"]
    assert k.hypercall_page == sym["hypercall_page"]
    assert k.init_p2m == 0x8000000000
    assert k.hv_start_low == 0xFFFF800000000000
    assert k.xen_version == "xen-3.0"
    assert k.guest_os == "linux" and k.guest_version == "2.6"
    assert k.loader == "generic"
    assert k.features_required == {"writable_page_tables"}
    # FEATURES string plus the SUPPORTED_FEATURES bitmask (bits 0 and 11)
    assert k.features_supported == {"writable_page_tables", "pae_pgdir_above_4gb", "dom0"}
    assert k.l1_mfn_valid == (1, 1)
    assert k.suspend_cancel is True
    assert k.mod_start_pfn is True
    assert k.pae_mode == "yes"
    assert k.phys32_entry == 0x100850
    assert k.notes_source == "notes"
    assert k.notes[XenElfNote.GUEST_OS] == "linux"
    assert k.notes[XenElfNote.VIRT_BASE] == VIRT_BASE
    assert k.notes[XenElfNote.SUPPORTED_FEATURES] == 0x801
    assert all(type(t) is int for t in k.notes)
    assert k.payload_format is None
    assert k.warnings == []


def test_linux_like_kernel_segments(linux_elf: Path) -> None:
    k = load_kernel(linux_elf)
    assert len(k.segments) == 2
    text, data = sorted(k.segments, key=lambda s: s.vaddr)
    # physical addresses from the linker script, virtual = VIRT_BASE + p_paddr
    assert text.paddr == PHYS_START
    assert text.vaddr == VIRT_BASE + PHYS_START
    assert text.data[: len(section_bytes(linux_elf, ".text"))] == section_bytes(linux_elf, ".text")
    assert text.flags & 1  # executable
    assert data.vaddr == data.paddr + VIRT_BASE
    assert data.data.startswith(struct.pack("<Q", 0x1122334455667788))
    assert data.memsz > len(data.data)  # .bss is zero-filled, not in the file
    assert data.filesz == len(data.data)
    assert k.kernel_start == VIRT_BASE + PHYS_START
    assert k.kernel_end == (data.vend + 0xFFF) & ~0xFFF
    assert k.virt_offset == VIRT_BASE


def test_parse_kernel_from_bytes(linux_elf: Path) -> None:
    k = parse_kernel(linux_elf.read_bytes(), "mem.elf")
    assert k.path == Path("mem.elf") and k.entry == load_kernel(linux_elf).entry


def test_gcc_notes_in_non_alloc_section(tmp_path: Path) -> None:
    # No PT_NOTE segment: Xen falls back to SHT_NOTE sections.
    p = build_elf(tmp_path, notes=linux_like_notes(), note_flags='""')
    assert not any(ph["type"] == PT_NOTE for ph in phdrs(p.read_bytes()))
    k = load_kernel(p)
    assert k.notes_source == "sections"
    assert k.guest_os == "linux" and k.virt_base == VIRT_BASE


LEGACY = ("GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,"
          "ELF_PADDR_OFFSET=0x0,HYPERCALL_PAGE=0x101,LOADER=generic,"
          "FEATURES=!writable_page_tables|pae_pgdir_above_4gb,PAE=yes,BSD_SYMTAB")


def test_gcc_legacy_xen_guest_section(tmp_path: Path) -> None:
    p = build_elf(tmp_path, legacy=LEGACY)
    k = load_kernel(p)
    assert k.notes_source == "__xen_guest"
    assert k.guest_info is not None and k.guest_info["GUEST_VER"] == "2.6"
    assert k.guest_os == "linux" and k.xen_version == "xen-3.0" and k.loader == "generic"
    assert k.virt_base == VIRT_BASE and k.paddr_offset == 0
    assert k.hypercall_page == VIRT_BASE + 0x101 * 4096 == symbols(p)["hypercall_page"]
    assert k.notes[XenElfNote.HYPERCALL_PAGE] == k.hypercall_page
    assert k.features_required == {"writable_page_tables"}
    assert k.pae_mode == "yes" and k.bsd_symtab and k.symtab is not None
    assert k.entry == k.e_entry
    assert k.segments[0].vaddr == VIRT_BASE + PHYS_START


def test_gcc_legacy_paddr_offset_defaults_to_virt_base(tmp_path: Path) -> None:
    legacy = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,LOADER=generic,VIRT_ENTRY=0xffffffff80100003"
    p = build_elf(tmp_path, legacy=legacy, lma_offset=0)
    k = load_kernel(p)
    assert k.paddr_offset == VIRT_BASE
    assert [s.vaddr for s in k.segments] == [s.paddr for s in k.segments]
    assert k.entry == 0xFFFFFFFF80100003 == symbols(p)["xen_entry"]


def test_gcc_plain_elf_is_not_xen(tmp_path: Path) -> None:
    p = build_plain_elf(tmp_path, "mini.elf")
    with pytest.raises(KernelImageError, match=r"^mini\.elf: not a Xen PV kernel"):
        load_kernel(p)


def test_elf32_rejected(tmp_path: Path) -> None:
    p = tmp_path / "k32.elf"
    p.write_bytes(elf32_bytes())
    with pytest.raises(KernelImageError) as ei:
        load_kernel(p)
    assert str(ei.value) == "k32.elf: 32-bit PV guests are not supported by pyxen (ELF class 32)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KernelImageError, match=r"^nonexistent: cannot read kernel image"):
        load_kernel(tmp_path / "nonexistent")


# --- XTF kernels ---------------------------------------------------------

def xtf_tests_dir() -> Path:
    """XTF built into the cache, as the conformance suite builds it (a no-op
    when it is current): these tests fail, never skip, without it."""
    from conformance import xtf
    return xtf.build() / "tests"


def test_xtf_example_kernel() -> None:
    p = xtf_tests_dir() / "example" / "test-pv64-example"
    assert p.is_file(), p
    k = load_kernel(p)
    assert k.virt_base == 0 and k.paddr_offset == 0  # no VIRT_BASE note; linked at 1 MiB
    assert k.kernel_start == 0x100000 and k.entry == k.e_entry == 0x100000
    assert k.loader == "generic" and k.guest_os == "XTF" and k.xen_version == "xen-3.0"
    assert k.hypercall_page is not None and k.kernel_start <= k.hypercall_page < k.kernel_end
    assert k.features_required == {"writable_page_tables"}


def test_xtf_pv64_kernels_all_load() -> None:
    kernels = [p for p in sorted(xtf_tests_dir().glob("*/test-pv64-*")) if p.suffix != ".cfg"]
    assert len(kernels) >= 39, kernels
    for p in kernels:
        k = load_kernel(p)
        assert k.kernel_start == 0x100000, p


# --- robustness ---------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_elf_raises_only_kernel_image_error(linux_elf: Path, data) -> None:
    blob = bytearray(linux_elf.read_bytes())
    # mutate the headers, program/section headers and notes: where the parser looks
    hot = [(0, 64), (64, 64 + 4 * 56)]
    note = next(ph for ph in phdrs(bytes(blob)) if ph["type"] == PT_NOTE)
    hot.append((note["offset"], note["offset"] + note["filesz"]))
    shoff = struct.unpack_from("<Q", blob, 40)[0]
    hot.append((shoff, len(blob)))
    for _ in range(data.draw(st.integers(1, 8))):
        lo, hi = data.draw(st.sampled_from(hot))
        pos = data.draw(st.integers(lo, hi - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        k = parse_kernel(bytes(blob), "fuzz.elf")
    except KernelImageError as e:
        assert str(e).startswith("fuzz.elf: ")
    else:
        assert k.kernel_start <= k.entry <= k.kernel_end
        assert k.kernel_start % 4096 == 0 and k.kernel_end % 4096 == 0
