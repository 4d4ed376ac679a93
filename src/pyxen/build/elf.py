"""Inspect a Xen PV guest kernel: ELF headers, Xen notes and load segments.

:func:`load_kernel` accepts an ELF ``vmlinux`` or a bzImage (whose payload
is decompressed and parsed) and returns a :class:`KernelImage` describing
where every byte must go in the guest's virtual address space.

Address rule (the one of Xen's libelf, ``elf_parse_binary`` and
``elf_xen_addr_calc_check``):

* The loadable segments are the ``PT_LOAD`` program headers with at least one
  of the R/W/X flags.  Their *physical* addresses ``p_paddr`` are what counts;
  ``p_vaddr`` is not used.
* ``PADDR_OFFSET`` defaults to 0 when the kernel uses ELF notes, and to
  ``VIRT_BASE`` when it uses the legacy ``__xen_guest`` section (old kernels
  put virtual addresses into ``p_paddr``).
* ``virt_offset = VIRT_BASE - PADDR_OFFSET``; a segment is loaded at virtual
  address ``p_paddr + virt_offset``; the kernel spans
  ``[min(p_paddr) + virt_offset, max(p_paddr + p_memsz) + virt_offset)``.
* The entry point is the ENTRY note (``VIRT_ENTRY`` in ``__xen_guest``) if
  present, else ``e_entry``, and is used as is (it is a virtual address).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from . import bzimage
from .elfnotes import (
    LEGACY_KEY_TO_NOTE,
    NoteFormatError,
    XenElfNote,
    decode_xen_note,
    features_from_bitmask,
    iter_notes,
    parse_features,
    parse_guest_info,
    strtoull,
)
from .errors import KernelImageError

__all__ = [
    "DEFAULT_SUPPORTED_FEATURES",
    "LoadSegment",
    "KernelImage",
    "load_kernel",
    "parse_kernel",
]

#: XENFEAT_* names a kernel may *require* and still be loaded by pyxen.
DEFAULT_SUPPORTED_FEATURES: frozenset[str] = frozenset({"writable_page_tables", "pae_pgdir_above_4gb"})

PAGE_SIZE = 0x1000
_MASK64 = (1 << 64) - 1
EM_X86_64 = 62
EM_386 = 3
_PF_RWX = 0x7

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
    ``vaddr``; the rest, up to ``memsz`` bytes, is zero.
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
    img = _parse_elf(data, p, frozenset(supported_features))
    img.payload_format = payload_format
    return img


def _parse_elf(data: bytes, path: Path, supported_features: frozenset[str]) -> KernelImage:
    where = path
    if len(data) < 16:
        raise KernelImageError(where, "truncated ELF file (shorter than e_ident)")
    ei_class = data[4]
    if ei_class == 1:
        raise KernelImageError(where, "32-bit PV guests are not supported by pyxen (ELF class 32)")
    if ei_class != 2:
        raise KernelImageError(where, f"invalid ELF class {ei_class} (expected 2 = ELFCLASS64)")
    if data[5] != 1:
        raise KernelImageError(where, "big-endian ELF files are not supported (x86-64 is little-endian)")
    try:
        elf = ELFFile(io.BytesIO(data))
        machine_raw = struct.unpack_from("<H", data, 18)[0]
    except Exception as e:  # pyelftools raises assorted errors (ELFError, construct errors, ...)
        raise KernelImageError(where, f"corrupt ELF file: {e}") from e
    if machine_raw != EM_X86_64:
        mname = _MACHINE_NAMES.get(machine_raw, f"e_machine {machine_raw}")
        raise KernelImageError(where, f"not an x86-64 kernel (ELF machine is {mname}, expected x86-64)")

    try:
        segments_hdr = [seg.header for seg in elf.iter_segments()]
    except Exception as e:
        raise KernelImageError(where, f"corrupt ELF program headers: {e}") from e

    notes: dict[int, object] = {}
    source = "notes"
    guest_info: dict[str, str] | None = None

    def collect(blob: bytes, align: int, what: str) -> int:
        count = 0
        try:
            for note in iter_notes(blob, align=align):
                if note.name != "Xen":
                    continue
                notes[note.type] = decode_xen_note(note.type, note.desc)
                count += 1
        except NoteFormatError as e:
            raise KernelImageError(where, f"corrupt ELF notes in {what}: {e}") from e
        return count

    found = 0
    for i, ph in enumerate(segments_hdr):
        if ph.p_type != "PT_NOTE" or ph.p_offset == 0:
            continue
        blob = _file_range(data, ph.p_offset, ph.p_filesz, where, f"PT_NOTE segment {i}")
        found += collect(blob, 8 if ph.p_align == 8 else 4, f"PT_NOTE segment {i}")
    if not found:
        source = "sections"
        sections = _sections(elf, where)
        for sname, h in sections:
            if h.sh_type != "SHT_NOTE":
                continue
            blob = _file_range(data, h.sh_offset, h.sh_size, where, f"section {sname}")
            found += collect(blob, 8 if h.sh_addralign == 8 else 4, f"section {sname}")
    if not found:
        h = next((h for sname, h in sections if sname == "__xen_guest"), None)
        if h is None:
            raise KernelImageError(where, "no Xen ELF notes (not a Xen PV kernel)")
        source = "__xen_guest"
        raw = _file_range(data, h.sh_offset, h.sh_size, where, "section __xen_guest")
        guest_info = parse_guest_info(raw.decode("latin-1"))
        if not guest_info:
            raise KernelImageError(where, "empty __xen_guest section (not a Xen PV kernel)")
        _legacy_to_notes(guest_info, notes, where)

    def num(t: XenElfNote) -> int | None:
        v = notes.get(t)
        if v is None:
            return None
        if not isinstance(v, int):
            raise KernelImageError(
                where, f"invalid {t.name} note: expected a 1, 2, 4 or 8-byte number, got {v!r}"
            )
        return v

    def text(t: XenElfNote) -> str | None:
        v = notes.get(t)
        return v if isinstance(v, str) else None

    # --- features -------------------------------------------------------
    f_supported: set[str] = set()
    f_required: set[str] = set()
    if (ftext := text(XenElfNote.FEATURES)) is not None:
        f_supported, f_required = parse_features(ftext)
    if (mask := notes.get(XenElfNote.SUPPORTED_FEATURES)) is not None and isinstance(mask, int):
        f_supported |= features_from_bitmask(mask)

    # --- identity checks (elf_xen_note_check) ---------------------------
    loader = text(XenElfNote.LOADER) or ""
    guest_os = text(XenElfNote.GUEST_OS) or ""
    xen_version = text(XenElfNote.XEN_VERSION) or ""
    if not loader.startswith("generic") and not guest_os.startswith("linux"):
        raise KernelImageError(
            where,
            "only kernels for the generic loader or Linux kernels can be loaded "
            f"(LOADER={loader!r}, GUEST_OS={guest_os!r})",
        )
    if not xen_version.startswith("xen-3.0"):
        got = repr(xen_version) if xen_version else "missing"
        raise KernelImageError(where, f"kernel is not built for the Xen 3.0 interface (XEN_VERSION {got}, expected 'xen-3.0')")

    unsupported = sorted(f_required - set(supported_features))
    if unsupported:
        raise KernelImageError(
            where,
            "kernel requires Xen features that pyxen does not support: " + ", ".join(unsupported),
        )

    # --- addresses (elf_parse_binary + elf_xen_addr_calc_check) ---------
    virt_base = num(XenElfNote.VIRT_BASE)
    paddr_offset = num(XenElfNote.PADDR_OFFSET)
    if virt_base is None:
        if paddr_offset is not None:
            raise KernelImageError(where, "ELF_PADDR_OFFSET is set but VIRT_BASE is not")
        virt_base = 0  # libelf: VIRT_BASE unset means 0
    if virt_base % PAGE_SIZE or not _canonical(virt_base):
        raise KernelImageError(
            where, f"invalid VIRT_BASE {_hex(virt_base)} (must be a page-aligned canonical address)"
        )
    if paddr_offset is None:
        paddr_offset = virt_base if source == "__xen_guest" else 0
    virt_offset = (virt_base - paddr_offset) & _MASK64

    segments: list[LoadSegment] = []
    for i, ph in enumerate(segments_hdr):
        if ph.p_type != "PT_LOAD" or not (ph.p_flags & _PF_RWX):
            continue
        if ph.p_filesz > ph.p_memsz:
            raise KernelImageError(
                where, f"PT_LOAD segment {i}: file size {_hex(ph.p_filesz)} exceeds memory size {_hex(ph.p_memsz)}"
            )
        blob = _file_range(data, ph.p_offset, ph.p_filesz, where, f"PT_LOAD segment {i}")
        vaddr = (ph.p_paddr + virt_offset) & _MASK64
        vend = vaddr + ph.p_memsz
        if vaddr < virt_base:
            raise KernelImageError(
                where,
                f"PT_LOAD segment {i} would load at {_hex(vaddr)} (p_paddr {_hex(ph.p_paddr)}), "
                f"below VIRT_BASE {_hex(virt_base)}",
            )
        if vend > 1 << 64 or not _canonical(vaddr) or (ph.p_memsz and not _canonical(vend - 1)):
            raise KernelImageError(
                where, f"PT_LOAD segment {i} [{_hex(vaddr)}, {_hex(vend)}) is not in canonical address space"
            )
        segments.append(LoadSegment(vaddr, ph.p_paddr, blob, ph.p_memsz, ph.p_flags))
    if not segments:
        raise KernelImageError(where, "no loadable (PT_LOAD) segments")

    ordered = sorted(segments, key=lambda s: s.vaddr)
    for a, b in zip(ordered, ordered[1:]):
        if b.vaddr < a.vend:
            raise KernelImageError(
                where,
                f"PT_LOAD segments overlap: [{_hex(a.vaddr)}, {_hex(a.vend)}) and [{_hex(b.vaddr)}, {_hex(b.vend)})",
            )
    kstart = ordered[0].vaddr
    kend = max(s.vend for s in segments)

    entry = num(XenElfNote.ENTRY)
    if entry is None:
        entry = elf.header.e_entry
    if not kstart <= entry < kend:
        raise KernelImageError(
            where, f"entry point {_hex(entry)} is outside the kernel image [{_hex(kstart)}, {_hex(kend)})"
        )

    hypercall_page = num(XenElfNote.HYPERCALL_PAGE)
    if hypercall_page is not None:
        if hypercall_page % PAGE_SIZE or not kstart <= hypercall_page < kend:
            raise KernelImageError(
                where,
                f"hypercall page {_hex(hypercall_page)} is not a page-aligned address inside the "
                f"kernel image [{_hex(kstart)}, {_hex(kend)})",
            )

    init_p2m = num(XenElfNote.INIT_P2M)
    if init_p2m is not None and kstart <= init_p2m < kend:
        raise KernelImageError(
            where, f"INIT_P2M {_hex(init_p2m)} lies inside the kernel image [{_hex(kstart)}, {_hex(kend)})"
        )

    l1 = notes.get(XenElfNote.L1_MFN_VALID)
    if isinstance(l1, int):
        l1_mfn_valid: tuple[int, ...] | None = (l1,)
    elif isinstance(l1, tuple):
        l1_mfn_valid = l1
    else:
        l1_mfn_valid = None

    bsd = notes.get(XenElfNote.BSD_SYMTAB)
    return KernelImage(
        path=path,
        elf_class=64,
        machine=machine_raw,
        entry=entry,
        virt_base=virt_base,
        paddr_offset=paddr_offset,
        hypercall_page=hypercall_page,
        init_p2m=init_p2m,
        hv_start_low=num(XenElfNote.HV_START_LOW),
        xen_version=xen_version,
        guest_os=guest_os,
        loader=loader,
        features_required=f_required,
        features_supported=f_supported,
        l1_mfn_valid=l1_mfn_valid,
        suspend_cancel=bool(num(XenElfNote.SUSPEND_CANCEL) or 0),
        mod_start_pfn=bool(num(XenElfNote.MOD_START_PFN) or 0),
        pae_mode=text(XenElfNote.PAE_MODE),
        phys32_entry=num(XenElfNote.PHYS32_ENTRY),
        notes=notes,
        segments=segments,
        kernel_start=kstart & ~(PAGE_SIZE - 1),
        kernel_end=(kend + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1),
        guest_version=text(XenElfNote.GUEST_VERSION),
        bsd_symtab=(bsd == "yes") if source != "__xen_guest" else bsd is not None,
        notes_source=source,
        guest_info=guest_info,
        e_entry=elf.header.e_entry,
    )


def _sections(elf: ELFFile, where: Path) -> list[tuple[str, object]]:
    """(name, header) of every section; pyelftools errors become KernelImageError."""
    try:
        return [(sec.name, sec.header) for sec in elf.iter_sections()]
    except Exception as e:  # pyelftools raises assorted errors on damaged files
        raise KernelImageError(where, f"corrupt ELF section headers: {e}") from e


def _file_range(data: bytes, offset: int, size: int, where: Path, what: str) -> bytes:
    if offset + size > len(data):
        raise KernelImageError(
            where, f"{what} [{_hex(offset)}, {_hex(offset + size)}) extends past the end of the file ({_hex(len(data))} bytes)"
        )
    return data[offset : offset + size]


def _legacy_to_notes(info: dict[str, str], notes: dict[int, object], where: Path) -> None:
    """Translate ``__xen_guest`` keys into the note dictionary (values as notes would give them)."""
    numeric = {"VIRT_BASE", "VIRT_ENTRY", "ELF_PADDR_OFFSET", "HYPERCALL_PAGE"}
    for key, value in info.items():
        t = LEGACY_KEY_TO_NOTE.get(key)
        if t is None:
            continue
        if key in numeric:
            n = strtoull(value)
            if n is None:
                raise KernelImageError(where, f"invalid {key}={value!r} in __xen_guest (not a number)")
            notes[int(t)] = n
        elif key == "BSD_SYMTAB":
            notes[int(t)] = value or "yes"
        else:
            notes[int(t)] = value
    # HYPERCALL_PAGE there is a page number relative to VIRT_BASE.
    if XenElfNote.HYPERCALL_PAGE in notes:
        pfn = notes[XenElfNote.HYPERCALL_PAGE]
        assert isinstance(pfn, int)
        base = notes.get(XenElfNote.VIRT_BASE)
        addr = pfn << 12
        if isinstance(base, int):
            addr += base
        notes[int(XenElfNote.HYPERCALL_PAGE)] = addr & _MASK64
