"""Inspect a Xen PV guest kernel: ELF headers, Xen notes and load segments.

:func:`load_kernel` accepts an ELF ``vmlinux`` or a bzImage (whose payload
is decompressed and parsed) and returns a :class:`KernelImage` describing
where every byte must go in the guest's virtual address space.

The rules are those of Xen's libelf (``elf_init``, ``elf_parse_binary``,
``elf_xen_parse`` in ``xen/common/libelf``) and of the parts of libxc's
ELF loader (``xg_dom_elfloader.c``, ``xg_dom_core.c``) that judge a domU
kernel, in the order Xen applies them:

File (``elf_is_elfbinary``, ``elf_init``)
  * the file starts with ``\\x7fELF`` and is at least an ELF header long;
  * the program header table (``e_phoff + e_phentsize * e_phnum``) and the
    section header table (``e_shoff + e_shentsize * e_shnum``) lie inside
    the file;
  * section names come from section ``e_shstrndx`` (none if out of range).

Notes (``elf_xen_parse``) -- read from the first of these that has any:
  1. every ``PT_NOTE`` program header, except those with ``p_offset`` 0
     (old binutils wrote such headers);
  2. every ``SHT_NOTE`` section (from index 1);
  3. the ``__xen_guest`` section string (legacy kernels).
  Only notes owned by ``"Xen"`` count, unknown types included; a later note
  of a type overrides an earlier one, except FEATURES and
  SUPPORTED_FEATURES, which accumulate.  At most 65536 notes are read.
  :mod:`pyxen.build.elfnotes` decodes them.

Checks (``elf_xen_note_check``, ``xc_dom_parse_elf_kernel``)
  * no note area and no ``__xen_guest``: not a Xen kernel (note areas
    without a "Xen" note are refused too: libelf finds LOADER and GUEST_OS
    empty);
  * LOADER starts with ``generic`` or GUEST_OS starts with ``linux``;
  * XEN_VERSION starts with ``xen-3.0``;
  * a FEATURES note requiring a feature libelf does not know is refused; in
    ``__xen_guest`` libelf just stops reading the string there (what came
    later, XEN_VER say, is missing);
  * a kernel requiring ``dom0`` is refused, as libxc refuses it for a domU.

Addresses (``elf_parse_binary``, ``elf_xen_addr_calc_check``)
  * the loadable segments are the ``PT_LOAD`` headers with one of R/W/X;
    ``pstart``/``pend`` are the lowest ``p_paddr`` and the highest
    ``p_paddr + p_memsz`` among them (``p_vaddr`` is not used);
  * PADDR_OFFSET set without VIRT_BASE is an error; VIRT_BASE unset is 0;
    PADDR_OFFSET unset is 0 with notes and VIRT_BASE with ``__xen_guest``
    (whose kernels put virtual addresses in ``p_paddr``);
  * ``virt_offset = VIRT_BASE - PADDR_OFFSET`` (mod 2**64); the kernel is
    ``[pstart + virt_offset, pend + virt_offset)`` and a segment loads at
    ``p_paddr + virt_offset``;
  * ENTRY (``VIRT_ENTRY``) defaults to ``e_entry``; HYPERCALL_PAGE is a
    virtual address (in ``__xen_guest`` a page number, plus VIRT_BASE when
    that is set);
  * BSD_SYMTAB ``"yes"`` (in ``__xen_guest``: the key's presence) loads the
    symbol and string tables after the kernel, behind a 4-byte size and an
    ELF header with three section headers, as ``elf_load_bsdsyms`` lays
    them out, and the kernel's end moves past them; without a symbol table
    nothing is added (libelf marks the image "broken" and goes on);
  * refused: ``kstart > kend``, an entry point outside ``[kstart, kend]``
    (the end included), VIRT_BASE above ``kstart``, INIT_P2M inside
    ``[kstart, kend)``;
  * libxc places the kernel in whole pages from ``kstart``
    (``xc_dom_alloc_segment``), so a ``kstart`` that is not page-aligned is
    refused;
  * segments may overlap (they are loaded in order, the later one wins), but
    ``elf_load_binary`` copies at most twice the kernel's pages.
  PHYS32_ENTRY, HV_START_LOW, PAE_MODE, SUSPEND_CANCEL, MOD_START_PFN and
  the L1_MFN_VALID words are read and reported; PHYS32_ENTRY only matters to
  PVH, which pyxen does not run.

Where pyxen deliberately differs from libelf/libxc:

* 32-bit (ELFCLASS32) PV kernels are refused: pyxen runs 64-bit PV guests
  only.  Big-endian files and machines other than x86-64 are refused with
  their own message (libxc would fail later, at the guest type).
* libelf reads what is out of the file as zeros and carries on with a
  "broken" mark that libxc only logs; pyxen refuses the file instead and
  says what lies where: note areas, ``__xen_guest``, segment data and the
  symbol table past the end of the file; a note running past the end of its
  area; an ELF64 header shorter than 64 bytes; ``e_phentsize`` or
  ``e_shentsize`` smaller than the 64-bit entry; ``p_filesz > p_memsz``; a
  segment that wraps around 2**64; segments adding up to more than twice
  the kernel (libelf stops copying there).  libelf then loads whatever it
  could; a kernel loaded in part is worse than an error.
* Values libelf reads as 0 without a word -- a numeric note that is not 1,
  2, 4 or 8 bytes, a ``__xen_guest`` number without digits -- are 0 here
  too, and each is listed in :attr:`KernelImage.warnings` (as are unknown
  note types, unknown optional feature names and a BSD_SYMTAB request
  without a symbol table).
* VIRT_BASE must be page-aligned and canonical, and the kernel must lie in
  canonical address space: pyxen's builder maps the guest from VIRT_BASE
  with 4 KiB pages (libxc has no explicit check and fails later).
* A required feature that pyxen does not offer (*supported_features*) is
  refused; libxc only checks that the kernel supports what it requires.
* Strings (notes, ``__xen_guest``) end at their descriptor's or section's
  end as well as at a NUL; libelf reads on to the NUL and keeps at most 15
  characters of LOADER, GUEST_OS, GUEST_VERSION and XEN_VERSION.  The
  checks above only look at prefixes, so the outcome is the same.
* The HYPERCALL_PAGE address is checked by the domain builder
  (:mod:`pyxen.build.x86_64`), which knows the guest's memory, as libxc's
  ``XEN_DOMCTL_hypercall_init`` does; INIT_P2M is only checked here (the
  builder keeps the p2m list in the bootstrap mapping).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import bzimage
from .elfnotes import (
    LEGACY_KEY_TO_NOTE,
    NOTE_KINDS,
    FeatureError,
    NoteFormatError,
    NoteKind,
    XenElfNote,
    decode_xen_note,
    features_from_bitmask,
    features_to_bitmask,
    guest_info_items,
    iter_notes,
    note_numeric,
    note_string,
    parse_features,
    strtoull,
    unknown_optional_features,
)
from .errors import KernelImageError

__all__ = [
    "DEFAULT_SUPPORTED_FEATURES",
    "MAX_TOTAL_NOTES",
    "LoadSegment",
    "KernelImage",
    "load_kernel",
    "parse_kernel",
]

#: XENFEAT_* names a kernel may *require* and still be loaded by pyxen.
DEFAULT_SUPPORTED_FEATURES: frozenset[str] = frozenset({"writable_page_tables", "pae_pgdir_above_4gb"})

#: libelf's ELF_MAX_TOTAL_NOTE_COUNT.
MAX_TOTAL_NOTES = 65536

PAGE_SIZE = 0x1000
_MASK64 = (1 << 64) - 1
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
PF_R = 4
_PF_RWX = 0x7
_EHDR32_SIZE = 52
_EHDR64_SIZE = 64
_PHDR64_SIZE = 56
_SHDR64_SIZE = 64
_MAX_STRING = 4096  # libelf's ELF_MAX_STRING_LENGTH

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")

_MACHINE_NAMES = {
    0: "none",
    2: "SPARC",
    3: "i386",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "S/390",
    40: "ARM",
    50: "IA-64",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
}


@dataclass(frozen=True)
class LoadSegment:
    """A piece of the kernel to place in the guest.

    ``data`` (the file contents, ``p_filesz`` bytes) goes at virtual address
    ``vaddr``; the rest, up to ``memsz`` bytes, is zero.  Segments are
    loaded in order; where two overlap, the later one wins (as libelf).
    """

    vaddr: int
    paddr: int
    data: bytes = field(repr=False)
    memsz: int
    flags: int = 0

    @property
    def vend(self) -> int:
        return self.vaddr + self.memsz

    @property
    def filesz(self) -> int:
        return len(self.data)


@dataclass
class KernelImage:
    """What the domain builder needs to know about a PV kernel."""

    path: Path
    elf_class: int
    machine: int
    entry: int
    virt_base: int
    paddr_offset: int
    hypercall_page: int | None
    init_p2m: int | None
    hv_start_low: int | None
    xen_version: str
    guest_os: str
    loader: str
    features_required: set[str]
    features_supported: set[str]
    l1_mfn_valid: tuple[int, ...] | None
    suspend_cancel: bool
    mod_start_pfn: bool
    pae_mode: str | None
    phys32_entry: int | None
    notes: dict[int, object]
    segments: list[LoadSegment]
    kernel_start: int
    kernel_end: int
    guest_version: str | None = None
    bsd_symtab: bool = False
    notes_source: str = "notes"  # "notes", "sections" or "__xen_guest"
    guest_info: dict[str, str] | None = None
    payload_format: str | None = None  # compression of the bzImage payload, if any
    e_entry: int = 0
    #: the symbol-table area BSD_SYMTAB asked for (also the last of ``segments``)
    symtab: LoadSegment | None = None
    #: what libelf would only log: unknown notes, values read as 0, ...
    warnings: list[str] = field(default_factory=list)

    @property
    def virt_offset(self) -> int:
        """What is added to ``p_paddr`` to get the load address."""
        return (self.virt_base - self.paddr_offset) & _MASK64

    @property
    def image_size(self) -> int:
        return self.kernel_end - self.kernel_start


def _hex(v: int) -> str:
    return f"{v:#x}"


def _canonical(addr: int) -> bool:
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1


def _round_up(v: int, a: int) -> int:
    return (v + a - 1) & ~(a - 1)


def load_kernel(
    path: str | os.PathLike[str],
    supported_features: set[str] | frozenset[str] = DEFAULT_SUPPORTED_FEATURES,
) -> KernelImage:
    """Read and check the PV kernel at *path* (ELF or bzImage)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise KernelImageError(p, f"cannot read kernel image: {e.strerror or e}") from e
    return parse_kernel(data, p, supported_features)


def parse_kernel(
    data: bytes,
    path: str | os.PathLike[str],
    supported_features: set[str] | frozenset[str] = DEFAULT_SUPPORTED_FEATURES,
) -> KernelImage:
    """Like :func:`load_kernel` for an image already in memory (*path* names it in messages)."""
    p = Path(path)
    payload_format = None
    if not data.startswith(b"\x7fELF"):
        if bzimage.is_bzimage(data):
            payload_format, data = bzimage.extract_payload_with_format(data, str(p))
            if not data.startswith(b"\x7fELF"):
                raise KernelImageError(
                    p, f"bzImage payload ({payload_format}) does not contain an ELF kernel"
                )
        else:
            raise KernelImageError(p, "not an ELF file or bzImage")
    img = _ElfParser(data, p, frozenset(supported_features)).parse()
    img.payload_format = payload_format
    return img


@dataclass
class _Phdr:
    index: int
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int

    @property
    def loadable(self) -> bool:
        return self.p_type == PT_LOAD and bool(self.p_flags & _PF_RWX)


@dataclass
class _Shdr:
    index: int
    raw: bytes
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int
    name: str | None = None


@dataclass
class _DomParms:
    """What the notes (or ``__xen_guest``) say; None is libelf's UNSET."""

    loader: str = ""
    guest_os: str = ""
    guest_ver: str | None = None
    xen_ver: str = ""
    pae: str | None = None
    bsd_symtab: bool = False
    unmapped_initrd: bool = False
    suspend_cancel: int = 0
    virt_base: int | None = None
    virt_entry: int | None = None
    virt_hypercall: int | None = None
    hv_start_low: int | None = None
    p2m_base: int | None = None
    paddr_offset: int | None = None
    phys_entry: int | None = None
    f_supported: int = 0
    f_required: int = 0
    l1_mfn_valid: tuple[int, ...] | None = None
    # where each value came from, for messages
    origin: dict[str, str] = field(default_factory=dict)


class _ElfParser:
    def __init__(self, data: bytes, path: Path, supported_features: frozenset[str]) -> None:
        self.data = data
        self.where = path
        self.supported_features = supported_features
        self.warnings: list[str] = []
        self.notes: dict[int, object] = {}
        self.parms = _DomParms()
        self.total_notes = 0
        self.unknown_required: list[str] = []

    def fail(self, problem: str) -> KernelImageError:
        return KernelImageError(self.where, problem)

    # --- the file: elf_is_elfbinary, elf_init --------------------------

    def _header(self) -> None:
        data = self.data
        if len(data) < _EHDR32_SIZE:
            raise self.fail(
                f"truncated ELF file: {len(data)} bytes, shorter than an ELF header ({_EHDR32_SIZE} bytes)"
            )
        ei_class, ei_data = data[4], data[5]
        if ei_class == 1:
            raise self.fail("32-bit PV guests are not supported by pyxen (ELF class 32)")
        if ei_class != 2:
            raise self.fail(f"invalid ELF class {ei_class} (expected 2 = ELFCLASS64)")
        if ei_data != 1:
            if ei_data == 2:
                raise self.fail("big-endian ELF files are not supported (x86-64 is little-endian)")
            raise self.fail(f"invalid ELF data encoding {ei_data} (expected 1 = little-endian)")
        if len(data) < _EHDR64_SIZE:
            raise self.fail(
                f"truncated ELF header: {len(data)} bytes, an ELF64 header has {_EHDR64_SIZE}"
            )
        (_, _, self.e_machine, _, self.e_entry, self.e_phoff, self.e_shoff, _, _,
         self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum, self.e_shstrndx) = _EHDR.unpack_from(data)
        if self.e_machine != EM_X86_64:
            mname = _MACHINE_NAMES.get(self.e_machine, f"e_machine {self.e_machine}")
            raise self.fail(f"not an x86-64 kernel (ELF machine is {mname}, expected x86-64)")

        size = len(data)
        ph_end = self.e_phoff + self.e_phentsize * self.e_phnum
        if ph_end > size:
            raise self.fail(
                f"the program header table ({self.e_phnum} entries of {self.e_phentsize} bytes at "
                f"{_hex(self.e_phoff)}) extends past the end of the file ({_hex(size)} bytes)"
            )
        sh_end = self.e_shoff + self.e_shentsize * self.e_shnum
        if sh_end > size:
            raise self.fail(
                f"the section header table ({self.e_shnum} entries of {self.e_shentsize} bytes at "
                f"{_hex(self.e_shoff)}) extends past the end of the file ({_hex(size)} bytes)"
            )
        if self.e_phnum and self.e_phentsize < _PHDR64_SIZE:
            raise self.fail(
                f"e_phentsize is {self.e_phentsize}, smaller than an ELF64 program header ({_PHDR64_SIZE} bytes)"
            )
        if self.e_shnum and self.e_shentsize < _SHDR64_SIZE:
            raise self.fail(
                f"e_shentsize is {self.e_shentsize}, smaller than an ELF64 section header ({_SHDR64_SIZE} bytes)"
            )
        self.phdrs = [
            _Phdr(i, *_PHDR.unpack_from(data, self.e_phoff + i * self.e_phentsize))
            for i in range(self.e_phnum)
        ]
        self.shdrs = []
        for i in range(self.e_shnum):
            at = self.e_shoff + i * self.e_shentsize
            self.shdrs.append(_Shdr(i, bytes(data[at : at + _SHDR64_SIZE]), *_SHDR.unpack_from(data, at)))
        if self.e_shstrndx < self.e_shnum:
            strtab = self.shdrs[self.e_shstrndx].sh_offset
            for sh in self.shdrs:
                sh.name = self._cstring(strtab + sh.sh_name)

    def _cstring(self, offset: int) -> str | None:
        """The NUL-terminated string at *offset* in the file; None if it does not end in time."""
        if offset >= len(self.data):
            return None
        end = self.data.find(b"\0", offset, offset + _MAX_STRING + 1)
        if end < 0:
            return None
        return self.data[offset:end].decode("latin-1")

    def _file_range(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise self.fail(
                f"{what} [{_hex(offset)}, {_hex(offset + size)}) extends past the end of the file "
                f"({_hex(len(self.data))} bytes)"
            )
        return self.data[offset : offset + size]

    # --- notes: elf_xen_parse -----------------------------------------

    def _walk_notes(self, offset: int, size: int, what: str) -> int:
        """Apply the "Xen" notes in one note area; returns how many there were."""
        blob = self._file_range(offset, size, what)
        count = 0
        try:
            for note in iter_notes(blob, align=4):
                if self.total_notes >= MAX_TOTAL_NOTES:
                    raise self.fail(f"too many ELF notes (more than {MAX_TOTAL_NOTES}); stopped in {what}")
                self.total_notes += 1
                if note.name != "Xen":
                    continue
                count += 1
                self._apply_note(note.type, note.desc, what)
        except NoteFormatError as e:
            raise self.fail(f"corrupt ELF notes in {what}: {e}") from e
        return count

    def _apply_note(self, ntype: int, desc: bytes, what: str) -> None:
        p = self.parms
        try:
            t = XenElfNote(ntype)
            kind = NOTE_KINDS[t]
        except (ValueError, KeyError):
            self.warnings.append(f"unknown Xen note type {ntype} in {what} ignored")
            return
        self.notes[int(t)] = decode_xen_note(ntype, desc)
        origin = f"{t.name} note"
        text = ""
        val = 0
        if kind is NoteKind.STRING:
            text = note_string(desc)
        elif kind is NoteKind.NUMBER and t != XenElfNote.SUPPORTED_FEATURES:
            n = note_numeric(desc)
            if n is None:
                self.warnings.append(
                    f"{t.name} note in {what} has a {len(desc)}-byte descriptor (a number has 1, 2, 4 "
                    "or 8 bytes); read as 0, as libelf does"
                )
                origin += f" ({len(desc)}-byte descriptor, read as 0)"
                n = 0
            val = n
        if t == XenElfNote.LOADER:
            p.loader = text
        elif t == XenElfNote.GUEST_OS:
            p.guest_os = text
        elif t == XenElfNote.GUEST_VERSION:
            p.guest_ver = text
        elif t == XenElfNote.XEN_VERSION:
            p.xen_ver = text
        elif t == XenElfNote.PAE_MODE:
            p.pae = text
        elif t == XenElfNote.BSD_SYMTAB:
            p.bsd_symtab = p.bsd_symtab or text == "yes"
        elif t == XenElfNote.VIRT_BASE:
            p.virt_base = val
        elif t == XenElfNote.ENTRY:
            p.virt_entry = val
        elif t == XenElfNote.INIT_P2M:
            p.p2m_base = val
        elif t == XenElfNote.MOD_START_PFN:
            p.unmapped_initrd = bool(val)
        elif t == XenElfNote.SUSPEND_CANCEL:
            p.suspend_cancel = val
        elif t == XenElfNote.PADDR_OFFSET:
            p.paddr_offset = val
        elif t == XenElfNote.HYPERCALL_PAGE:
            p.virt_hypercall = val
        elif t == XenElfNote.HV_START_LOW:
            p.hv_start_low = val
        elif t == XenElfNote.FEATURES:
            self._features(text, f"the FEATURES note in {what}")
        elif t == XenElfNote.SUPPORTED_FEATURES:
            word = self.notes[int(t)]
            assert isinstance(word, int)
            p.f_supported |= word
        elif t == XenElfNote.PHYS32_ENTRY:
            p.phys_entry = val & 0xFFFF_FFFF
        elif t == XenElfNote.L1_MFN_VALID:
            words = self.notes[int(t)]
            p.l1_mfn_valid = words if isinstance(words, tuple) and words else None
        p.origin[t.name] = origin

    def _features(self, text: str, what: str, *, legacy: bool = False) -> bool:
        """Add a FEATURES string's bits; False if it requires an unknown feature (legacy only)."""
        try:
            supported, required = parse_features(text)
        except FeatureError as e:
            if not legacy:
                raise self.fail(
                    f"{what} ({text!r}) requires feature {e.name!r}, which is not a feature name "
                    "Xen's loader knows"
                ) from None
            # elf_xen_parse_guest_info stops there, and its caller goes on
            self.unknown_required.append(e.name)
            self.warnings.append(
                f"{what} ({text!r}) requires unknown feature {e.name!r}; the rest of __xen_guest is "
                "not read, as libelf does"
            )
            return False
        for name in unknown_optional_features(text):
            self.warnings.append(f"{what} names unknown feature {name!r} (ignored, as libelf does)")
        self.parms.f_supported |= features_to_bitmask(supported)
        self.parms.f_required |= features_to_bitmask(required)
        return True

    _LEGACY_STRINGS = {"LOADER": "loader", "GUEST_OS": "guest_os", "GUEST_VER": "guest_ver",
                       "XEN_VER": "xen_ver", "PAE": "pae"}
    _LEGACY_NUMBERS = {"VIRT_BASE": "virt_base", "VIRT_ENTRY": "virt_entry",
                       "ELF_PADDR_OFFSET": "paddr_offset", "HYPERCALL_PAGE": "virt_hypercall"}

    def _guest_info(self, text: str, what: str) -> None:
        """elf_xen_parse_guest_info: the legacy ``KEY=VALUE,...`` string."""
        p = self.parms
        for key, value in guest_info_items(text):
            if key in self._LEGACY_STRINGS:
                setattr(p, self._LEGACY_STRINGS[key], value)
            elif key == "BSD_SYMTAB":
                p.bsd_symtab = True  # its presence is the flag
            elif key in self._LEGACY_NUMBERS:
                n = strtoull(value)
                origin = f"{key} in {what}"
                if n is None:
                    self.warnings.append(f"{key}={value!r} in {what} is not a number; read as 0, as libelf does")
                    origin += f" ({value!r}, read as 0)"
                    n = 0
                if key == "HYPERCALL_PAGE":
                    n = (n << 12) & _MASK64  # a page number
                setattr(p, self._LEGACY_NUMBERS[key], n)
                p.origin[LEGACY_KEY_TO_NOTE[key].name] = origin
            if key in LEGACY_KEY_TO_NOTE:
                self.notes[int(LEGACY_KEY_TO_NOTE[key])] = value
            if key == "FEATURES" and not self._features(value, f"FEATURES in {what}", legacy=True):
                break
        # HYPERCALL_PAGE there is a page number relative to VIRT_BASE (if given).
        if p.virt_base is not None and p.virt_hypercall is not None:
            p.virt_hypercall = (p.virt_hypercall + p.virt_base) & _MASK64
        # the notes view: numbers as the notes would hold them
        for key, attr in self._LEGACY_NUMBERS.items():
            if key in LEGACY_KEY_TO_NOTE and int(LEGACY_KEY_TO_NOTE[key]) in self.notes:
                self.notes[int(LEGACY_KEY_TO_NOTE[key])] = getattr(p, attr)
        if p.bsd_symtab:
            self.notes[int(XenElfNote.BSD_SYMTAB)] = self.notes.get(int(XenElfNote.BSD_SYMTAB)) or "yes"

    def _find_notes(self) -> tuple[str, dict[str, str] | None]:
        areas = 0
        found = 0
        for ph in self.phdrs:
            if ph.p_type != PT_NOTE or ph.p_offset == 0:
                continue
            areas += 1
            found += self._walk_notes(ph.p_offset, ph.p_filesz, f"PT_NOTE segment {ph.index}")
        if found:
            return "notes", None
        for sh in self.shdrs[1:]:
            if sh.sh_type != SHT_NOTE:
                continue
            areas += 1
            found += self._walk_notes(sh.sh_offset, sh.sh_size, f"section {sh.name or sh.index}")
        if found:
            return "sections", None
        sh = next((s for s in self.shdrs if s.name == "__xen_guest"), None)
        if sh is not None:
            raw = self._file_range(sh.sh_offset, sh.sh_size, "section __xen_guest")
            text = raw.split(b"\0", 1)[0].decode("latin-1")
            self._guest_info(text, "__xen_guest")
            return "__xen_guest", {k: v for k, v in guest_info_items(text) if k}
        if areas:
            raise self.fail(
                'not a Xen PV kernel: none of its ELF notes is owned by "Xen" and it has no '
                "__xen_guest section"
            )
        raise self.fail("not a Xen PV kernel: no ELF notes and no __xen_guest section")

    # --- elf_xen_note_check and libxc's feature rules -------------------

    def _note_check(self) -> None:
        p = self.parms
        if not p.loader.startswith("generic") and not p.guest_os.startswith("linux"):
            raise self.fail(
                "only kernels for the generic loader or Linux kernels can be loaded "
                f"(LOADER={p.loader!r}, GUEST_OS={p.guest_os!r})"
            )
        if not p.xen_ver.startswith("xen-3.0"):
            got = repr(p.xen_ver) if p.xen_ver else "missing"
            raise self.fail(
                f"kernel is not built for the Xen 3.0 interface (XEN_VERSION {got}, expected 'xen-3.0')"
            )
        required = features_from_bitmask(self.parms.f_required)
        if "dom0" in required:
            raise self.fail(
                "kernel requires the dom0 feature: it cannot run as an unprivileged domain (domU)"
            )
        unsupported = sorted((required | set(self.unknown_required)) - set(self.supported_features))
        if unsupported:
            raise self.fail(
                "kernel requires Xen features that pyxen does not support: " + ", ".join(unsupported)
            )

    # --- addresses: elf_parse_binary, elf_xen_addr_calc_check -----------

    def parse(self) -> KernelImage:
        self._header()
        source, guest_info = self._find_notes()
        self._note_check()
        p = self.parms
        where_pa = "ELF_PADDR_OFFSET" if source == "__xen_guest" else "PADDR_OFFSET note"

        if p.paddr_offset is not None and p.virt_base is None:
            raise self.fail(f"{where_pa} is set but VIRT_BASE is not")
        virt_base = 0 if p.virt_base is None else p.virt_base
        if virt_base % PAGE_SIZE or not _canonical(virt_base):
            raise self.fail(f"invalid VIRT_BASE {_hex(virt_base)} (must be a page-aligned canonical address)")
        if p.paddr_offset is None:
            paddr_offset = virt_base if source == "__xen_guest" else 0
        else:
            paddr_offset = p.paddr_offset
        virt_offset = (virt_base - paddr_offset) & _MASK64

        loadable = [ph for ph in self.phdrs if ph.loadable]
        if not loadable:
            raise self.fail("no loadable (PT_LOAD) segments")
        for ph in loadable:
            if ph.p_paddr + ph.p_memsz > _MASK64 + 1:
                raise self.fail(
                    f"PT_LOAD segment {ph.index} (p_paddr {_hex(ph.p_paddr)}, p_memsz {_hex(ph.p_memsz)}) "
                    "wraps around the end of the address space"
                )
        pstart = min(ph.p_paddr for ph in loadable)
        pend = max(ph.p_paddr + ph.p_memsz for ph in loadable)
        kstart = (pstart + virt_offset) & _MASK64
        kend = (pend + virt_offset) & _MASK64

        if p.virt_entry is None:
            entry, entry_from = self.e_entry, "e_entry"
        else:
            entry, entry_from = p.virt_entry, p.origin.get("ENTRY", "ENTRY note")

        symtab = None
        if p.bsd_symtab:
            symtab = self._bsd_symtab(pend, virt_offset)
            if symtab is not None:
                kend = (symtab.paddr + symtab.memsz + virt_offset) & _MASK64

        offset_text = f"p_paddr + VIRT_BASE {_hex(virt_base)} - {where_pa.split()[0]} {_hex(paddr_offset)}"
        if kstart > kend:
            raise self.fail(
                f"the kernel image [{_hex(kstart)}, {_hex(kend)}) ends before it starts: it wraps "
                f"around the end of the address space ({offset_text})"
            )
        if not kstart <= entry <= kend:
            raise self.fail(
                f"entry point {_hex(entry)} ({entry_from}) is outside the kernel image "
                f"[{_hex(kstart)}, {_hex(kend)}]"
            )
        if virt_base > kstart:
            raise self.fail(
                f"the kernel image starts at {_hex(kstart)} (lowest {offset_text}), "
                f"below VIRT_BASE {_hex(virt_base)}"
            )
        if p.p2m_base is not None and kstart <= p.p2m_base < kend:
            raise self.fail(
                f"INIT_P2M {_hex(p.p2m_base)} lies inside the kernel image [{_hex(kstart)}, {_hex(kend)})"
            )
        if kstart % PAGE_SIZE:
            raise self.fail(
                f"the kernel image starts at {_hex(kstart)} (lowest {offset_text}), which is not "
                "page-aligned; the domain builder places the kernel in whole pages"
            )
        if not (_canonical(kstart) and _canonical(max(kend - 1, kstart))):
            raise self.fail(
                f"the kernel image [{_hex(kstart)}, {_hex(kend)}) is not in canonical address space"
            )

        kernel_end = _round_up(kend, PAGE_SIZE)
        budget = 2 * (kernel_end - kstart)
        total = sum(ph.p_memsz for ph in loadable)
        if total > budget:
            raise self.fail(
                f"the PT_LOAD segments total {_hex(total)} bytes, more than twice the kernel image "
                f"({_hex(kernel_end - kstart)} bytes): they overlap too much"
            )
        segments: list[LoadSegment] = []
        for ph in loadable:
            if ph.p_filesz > ph.p_memsz:
                raise self.fail(
                    f"PT_LOAD segment {ph.index}: file size {_hex(ph.p_filesz)} exceeds memory size "
                    f"{_hex(ph.p_memsz)}"
                )
            blob = self._file_range(ph.p_offset, ph.p_filesz, f"PT_LOAD segment {ph.index}")
            vaddr = (ph.p_paddr + virt_offset) & _MASK64
            segments.append(LoadSegment(vaddr, ph.p_paddr, blob, ph.p_memsz, ph.p_flags))
        if symtab is not None:
            segments.append(symtab)

        return KernelImage(
            path=self.where,
            elf_class=64,
            machine=self.e_machine,
            entry=entry,
            virt_base=virt_base,
            paddr_offset=paddr_offset,
            hypercall_page=p.virt_hypercall,
            init_p2m=p.p2m_base,
            hv_start_low=p.hv_start_low,
            xen_version=p.xen_ver,
            guest_os=p.guest_os,
            loader=p.loader,
            features_required=features_from_bitmask(p.f_required),
            features_supported=features_from_bitmask(p.f_supported),
            l1_mfn_valid=p.l1_mfn_valid,
            suspend_cancel=bool(p.suspend_cancel),
            mod_start_pfn=p.unmapped_initrd,
            pae_mode=p.pae,
            phys32_entry=p.phys_entry,
            notes=self.notes,
            segments=segments,
            kernel_start=kstart,
            kernel_end=kernel_end,
            guest_version=p.guest_ver,
            bsd_symtab=p.bsd_symtab,
            notes_source=source,
            guest_info=guest_info,
            e_entry=self.e_entry,
            symtab=symtab,
            warnings=self.warnings,
        )

    # --- BSD_SYMTAB: elf_parse_bsdsyms, elf_load_bsdsyms ----------------

    def _bsd_symtab(self, pend: int, virt_offset: int) -> LoadSegment | None:
        """The symbol-table area libelf appends after the kernel, or None if there is none."""
        sym = None
        for sh in self.shdrs[1:]:
            if sh.sh_type != SHT_SYMTAB:
                continue
            if sh.sh_link == 0 or sh.sh_link >= len(self.shdrs):
                break  # elf_init gives up on an out-of-range link
            sym = sh
            break
        if sym is None:
            self.warnings.append("BSD_SYMTAB is requested but the kernel has no symbol table; none is loaded")
            return None
        strtab = self.shdrs[sym.sh_link]
        if strtab.sh_type != SHT_STRTAB:
            self.warnings.append(
                f"BSD_SYMTAB is requested but the symbol table's string table (section {strtab.index}) "
                "is not SHT_STRTAB; none is loaded"
            )
            return None
        symdata = self._file_range(sym.sh_offset, sym.sh_size, f"symbol table (section {sym.index})")
        strdata = self._file_range(strtab.sh_offset, strtab.sh_size, f"string table (section {strtab.index})")
        # Layout (offsets from the area's start): u32 size | ELF header |
        # 3 section headers (null, symtab, strtab) | symtab | strtab, each
        # table 8-byte aligned; the size counts from the ELF header.
        start = _round_up(pend, 8)
        headers = 4 + _EHDR64_SIZE + 3 * _SHDR64_SIZE  # 260
        sym_at = _round_up(headers, 8)
        str_at = _round_up(sym_at + len(symdata), 8)
        area = _round_up(_round_up(sym_at + len(symdata), 8) + len(strdata), 8)
        blob = bytearray(str_at + len(strdata))
        struct.pack_into("<I", blob, 0, str_at + len(strdata) - 4)
        ehdr = bytearray(self.data[:_EHDR64_SIZE])
        struct.pack_into("<I", ehdr, 20, 1)  # e_version
        struct.pack_into("<QQ", ehdr, 32, 0, _EHDR64_SIZE)  # e_phoff, e_shoff
        struct.pack_into("<HHHHHH", ehdr, 52, _EHDR64_SIZE, 0, 0, _SHDR64_SIZE, 3, 0)
        blob[4 : 4 + _EHDR64_SIZE] = ehdr
        sh_sym = bytearray(sym.raw)
        struct.pack_into("<Q", sh_sym, 24, sym_at - 4)  # sh_offset, from the ELF header
        struct.pack_into("<I", sh_sym, 40, 2)  # sh_link: the strtab below
        sh_str = bytearray(strtab.raw)
        struct.pack_into("<Q", sh_str, 24, str_at - 4)
        base = 4 + _EHDR64_SIZE
        blob[base + _SHDR64_SIZE : base + 2 * _SHDR64_SIZE] = sh_sym
        blob[base + 2 * _SHDR64_SIZE : base + 3 * _SHDR64_SIZE] = sh_str
        blob[sym_at : sym_at + len(symdata)] = symdata
        blob[str_at : str_at + len(strdata)] = strdata
        return LoadSegment(
            vaddr=(start + virt_offset) & _MASK64, paddr=start, data=bytes(blob), memsz=area, flags=PF_R
        )
