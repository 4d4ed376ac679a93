"""Builders for the test inputs of tests/builder: tiny Xen ELF kernels and fake bzImages."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import pytest
import zstandard

VIRT_BASE = 0xFFFFFFFF80000000
PHYS_START = 0x100000

# Xen note numbers (elfnote.h)
ENTRY, HYPERCALL_PAGE, VIRT_BASE_N, PADDR_OFFSET, XEN_VERSION, GUEST_OS = 1, 2, 3, 4, 5, 6
GUEST_VERSION, LOADER, PAE_MODE, FEATURES, BSD_SYMTAB, HV_START_LOW = 7, 8, 9, 10, 11, 12
L1_MFN_VALID, SUSPEND_CANCEL, INIT_P2M, MOD_START_PFN, SUPPORTED_FEATURES = 13, 14, 15, 16, 17
PHYS32_ENTRY = 18


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


_KERNEL_BODY = """
    .text
    .globl _start
_start:
    nop
    jmp _start
    .globl xen_entry
xen_entry:
    hlt
    jmp xen_entry
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc
    .globl text_end
text_end:

    .data
    .globl data_word
data_word:
    .quad 0x1122334455667788
    .fill 100, 1, 0x5a

    .bss
    .balign 4096
bss_area:
    .skip 8192
"""


def note_asm(ntype: int, kind: str, value) -> str:
    """One "Xen" note in GNU as syntax. kind: str | quad | long | raw (assembler lines)."""
    if kind == "str":
        body = f'.asciz "{value}"'
    elif kind == "quad":
        body = f".quad {value}"
    elif kind == "long":
        body = f".long {value}"
    elif kind == "raw":
        body = value
    else:
        raise ValueError(kind)
    return f"""
    .balign 4
    .long 2f - 1f
    .long 4f - 3f
    .long {ntype}
1:  .asciz "Xen"
2:  .balign 4
3:  {body}
4:  .balign 4
"""


def linux_like_notes(**override) -> list[tuple[int, str, object]]:
    """The notes a modern x86-64 Linux kernel carries (values for our tiny kernel)."""
    notes = {
        GUEST_OS: ("str", "linux"),
        GUEST_VERSION: ("str", "2.6"),
        XEN_VERSION: ("str", "xen-3.0"),
        VIRT_BASE_N: ("quad", hex(VIRT_BASE)),
        PADDR_OFFSET: ("quad", "0"),
        ENTRY: ("quad", "xen_entry"),
        HYPERCALL_PAGE: ("quad", "hypercall_page"),
        INIT_P2M: ("quad", "0x8000000000"),
        FEATURES: ("str", "!writable_page_tables|pae_pgdir_above_4gb"),
        SUPPORTED_FEATURES: ("long", hex((1 << 0) | (1 << 11))),
        PAE_MODE: ("str", "yes"),
        LOADER: ("str", "generic"),
        L1_MFN_VALID: ("raw", ".quad 1\n    .quad 1"),
        SUSPEND_CANCEL: ("long", "1"),
        MOD_START_PFN: ("long", "1"),
        HV_START_LOW: ("quad", "0xffff800000000000"),
        PHYS32_ENTRY: ("long", "0x100850"),
    }
    for k, v in override.items():
        t = globals()[k]
        if v is None:
            notes.pop(t, None)
        else:
            notes[t] = v
    return [(t, kind, val) for t, (kind, val) in notes.items()]


def build_elf(
    tmp_path: Path,
    name: str = "kernel.elf",
    notes: list[tuple[int, str, object]] | None = None,
    *,
    note_flags: str = '"a"',
    legacy: str | None = None,
    lma_offset: int = VIRT_BASE,
    link_base: int = VIRT_BASE + PHYS_START,
    extra_asm: str = "",
) -> Path:
    """Assemble and link a tiny x86-64 ELF 'kernel'.

    Sections are linked at virtual address *link_base*; the physical address
    (p_paddr) of each is its virtual address minus *lma_offset*.
    *notes* go into ``.note.Xen`` (allocated unless note_flags='""');
    *legacy* goes into a ``__xen_guest`` section.
    """
    require_tool("gcc")
    src = [_KERNEL_BODY, extra_asm]
    if notes:
        src.append(f"    .pushsection .note.Xen,{note_flags},@note")
        src += [note_asm(*n) for n in notes]
        src.append("    .popsection")
    if legacy is not None:
        src.append('    .pushsection __xen_guest,"",@progbits')
        src.append(f'    .asciz "{legacy}"')
        src.append("    .popsection")
    asm = tmp_path / (name + ".S")
    asm.write_text("\n".join(src) + "\n")
    script = tmp_path / (name + ".ld")
    script.write_text(
        f"""
ENTRY(_start)
SECTIONS
{{
  . = {link_base:#x};
  .text : AT(ADDR(.text) - {lma_offset:#x}) {{ *(.text*) }}
  . = ALIGN(4096);
  .data : AT(ADDR(.data) - {lma_offset:#x}) {{ *(.data*) }}
  .note.Xen : AT(ADDR(.note.Xen) - {lma_offset:#x}) {{ *(.note.Xen) }}
  .bss : AT(ADDR(.bss) - {lma_offset:#x}) {{ *(.bss*) }}
  __xen_guest 0 : {{ *(__xen_guest) }}
  /DISCARD/ : {{ *(.note.gnu.property) *(.comment) }}
}}
"""
    )
    out = tmp_path / name
    cmd = [
        "gcc", "-nostdlib", "-static", "-no-pie",
        "-Wl,--build-id=none", "-Wl,-z,max-page-size=4096", "-Wl,-z,noexecstack",
        f"-Wl,-T,{script}", "-o", str(out), str(asm),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"gcc failed: {res.stderr}")
    return out


def build_plain_elf(tmp_path: Path, name: str = "plain.elf") -> Path:
    """A static x86-64 ELF with no Xen notes at all."""
    require_tool("gcc")
    asm = tmp_path / (name + ".S")
    asm.write_text("    .text\n    .globl _start\n_start:\n    hlt\n")
    out = tmp_path / name
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-o", str(out), str(asm)],
        check=True, capture_output=True,
    )
    return out


# --- ELF patching -------------------------------------------------------

_PHDR_FIELDS = {"type": (0, "<I"), "flags": (4, "<I"), "offset": (8, "<Q"), "vaddr": (16, "<Q"),
                "paddr": (24, "<Q"), "filesz": (32, "<Q"), "memsz": (40, "<Q"), "align": (48, "<Q")}
PT_LOAD, PT_NOTE = 1, 4


def phdrs(data: bytes) -> list[dict[str, int]]:
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    out = []
    for i in range(phnum):
        base = phoff + i * phentsize
        d = {k: struct.unpack_from(fmt, data, base + off)[0] for k, (off, fmt) in _PHDR_FIELDS.items()}
        d["_at"] = base
        out.append(d)
    return out


def patch_phdr(path: Path, index: int, **fields: int) -> None:
    data = bytearray(path.read_bytes())
    ph = phdrs(bytes(data))[index]
    for k, v in fields.items():
        off, fmt = _PHDR_FIELDS[k]
        struct.pack_into(fmt, data, ph["_at"] + off, v)
    path.write_bytes(bytes(data))


def load_indexes(path: Path) -> list[int]:
    return [i for i, p in enumerate(phdrs(path.read_bytes())) if p["type"] == PT_LOAD]


def elf32_bytes() -> bytes:
    """A minimal, valid-looking i386 ELF32 executable header with one PT_LOAD."""
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0xC0100000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", PT_LOAD, 0, 0xC0100000, 0x100000, 0x100, 0x100, 5, 0x1000)
    return (ehdr + phdr).ljust(0x100, b"\0")


# --- fake bzImages --------------------------------------------------------

def lz4_legacy_compress(data: bytes, block: int = 8 << 20) -> bytes:
    """An LZ4 legacy frame (what `lz4 -l` writes)."""
    out = bytearray(b"\x02\x21\x4c\x18")
    for i in range(0, len(data), block):
        c = lz4.block.compress(data[i : i + block], store_size=False, mode="high_compression")
        out += struct.pack("<I", len(c)) + c
    return bytes(out)


def compress(fmt: str, data: bytes) -> bytes:
    """Compress like the kernel build does, including the appended 32-bit size where it does."""
    size = struct.pack("<I", len(data) & 0xFFFFFFFF)
    if fmt == "gzip":
        return gzip.compress(data, 9)
    if fmt == "xz":
        filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters) + size
    if fmt == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE) + size
    if fmt == "bzip2":
        return bz2.compress(data, 9) + size
    if fmt == "lz4":
        return lz4_legacy_compress(data) + size
    if fmt == "zstd":
        return zstandard.ZstdCompressor(level=19).compress(data) + size
    raise ValueError(fmt)


FORMATS = ("gzip", "xz", "lzma", "bzip2", "lz4", "zstd")


def make_bzimage(payload: bytes, *, setup_sects: int = 27, protocol: int = 0x020F,
                 stub: bytes = b"\xe9decompressor-stub" * 50, tail: bytes = b"\0" * 300) -> bytes:
    """A fake bzImage: boot sector + setup sectors with a setup header, then the protected-mode
    part = stub code, the payload, more code/data."""
    nsects = setup_sects or 4
    setup = bytearray((nsects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    struct.pack_into("<II", setup, 0x248, len(stub), len(payload))
    return bytes(setup) + stub + payload + tail


# --- ELF files synthesized in Python (no toolchain) -------------------------

KBASE = 0x100000  #: p_paddr of the first segment of a synthesized kernel
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE = 1, 2, 3, 7
PF_X, PF_W, PF_R = 1, 2, 4


def note_record(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note, name and descriptor each padded to 4 bytes (as libelf reads them)."""
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def note_desc(value) -> bytes:
    """A descriptor: str -> NUL-terminated, int -> 8 bytes, bytes -> as is."""
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, int):
        return struct.pack("<Q", value)
    return bytes(value)


#: The notes of a modern x86-64 Linux kernel, for the default synthesized kernel.
LINUX_NOTES: dict[int, object] = {
    GUEST_OS: "linux",
    GUEST_VERSION: "2.6",
    XEN_VERSION: "xen-3.0",
    LOADER: "generic",
    VIRT_BASE_N: VIRT_BASE,
    PADDR_OFFSET: 0,
    ENTRY: VIRT_BASE + KBASE + 0x10,
    HYPERCALL_PAGE: VIRT_BASE + KBASE + 0x1000,
    FEATURES: "!writable_page_tables|pae_pgdir_above_4gb",
    SUPPORTED_FEATURES: struct.pack("<I", 0x801),
    PAE_MODE: "yes",
    L1_MFN_VALID: struct.pack("<QQ", 1, 1),
    INIT_P2M: 0x8000000000,
    SUSPEND_CANCEL: struct.pack("<I", 1),
    MOD_START_PFN: struct.pack("<I", 1),
    HV_START_LOW: 0xFFFF800000000000,
}


def xen_notes(*extra: tuple[int, object], **changes) -> list[tuple[bytes, int, bytes]]:
    """LINUX_NOTES with changes (by elfnote name, e.g. ``VIRT_BASE=None`` drops it,
    ``ENTRY=b"..."`` gives a raw descriptor), then *extra* ``(type, value)`` notes."""
    names = {"VIRT_BASE": VIRT_BASE_N}
    notes = dict(LINUX_NOTES)
    for k, v in changes.items():
        t = names.get(k, globals()[k])
        if v is None:
            notes.pop(t, None)
        else:
            notes[t] = v
    out = [(b"Xen\0", t, note_desc(v)) for t, v in notes.items()]
    out += [(b"Xen\0", t, note_desc(v)) for t, v in extra]
    return out


@dataclass
class Seg:
    """A program header of a synthesized ELF; file data is filled with a pattern."""

    paddr: int
    filesz: int
    memsz: int
    flags: int = PF_R | PF_X
    vaddr: int | None = None  # default: paddr + VIRT_BASE
    p_type: int = PT_LOAD


DEFAULT_SEGS = (Seg(KBASE, 0x1800, 0x2000), Seg(KBASE + 0x2000, 0x100, 0x3000, PF_R | PF_W))


def synth_elf(
    notes: list[tuple[bytes, int, bytes]] | None = None,
    *,
    note_where: str = "segment",
    section_notes: list[tuple[bytes, int, bytes]] | None = None,
    legacy: str | None = None,
    segs: tuple[Seg, ...] | list[Seg] = DEFAULT_SEGS,
    entry: int = VIRT_BASE + KBASE,
    symtab: bool = False,
    note_p_align: int = 4,
    note_p_offset_zero: bool = False,
) -> bytes:
    """An x86-64 ELF executable, built byte by byte.

    *notes* (default: :func:`xen_notes`) go into a ``.note.Xen`` section
    covered by a PT_NOTE program header (``note_where="segment"``), into the
    section only (``"section"``), or nowhere (``"none"``); *section_notes*
    go into a second SHT_NOTE section with no PT_NOTE.  *legacy* is the
    ``__xen_guest`` string; *symtab* adds ``.symtab``/``.strtab``.
    """
    if notes is None:
        notes = xen_notes()
    note_area = b"".join(note_record(*n) for n in notes)
    phdrs: list[tuple] = []
    out = bytearray(0x1000)
    for i, s in enumerate(segs):
        off = len(out) if s.filesz else 0
        out += bytes([0x90 + i]) * s.filesz
        out += b"\0" * (-len(out) % 0x1000)
        vaddr = (s.paddr + VIRT_BASE) % (1 << 64) if s.vaddr is None else s.vaddr
        phdrs.append((s.p_type, s.flags, off, vaddr, s.paddr, s.filesz, s.memsz, 0x1000))

    sections: list[tuple[str, int, int, bytes, int, int]] = []  # name, type, flags, data, link, align

    def add_section(name: str, stype: int, data: bytes, link: int = 0, align: int = 4) -> int:
        sections.append((name, stype, 0, data, link, align))
        return len(sections)  # its index (section 0 is the null one)

    if note_where in ("segment", "section"):
        add_section(".note.Xen", SHT_NOTE, note_area)
    if section_notes is not None:
        add_section(".note.more", SHT_NOTE, b"".join(note_record(*n) for n in section_notes))
    if legacy is not None:
        add_section("__xen_guest", SHT_PROGBITS, legacy.encode() + b"\0", align=1)
    if symtab:
        strtab = b"\0_start\0"
        syms = bytes(24) + struct.pack("<IBBHQQ", 1, 0x10, 0, 1, VIRT_BASE + KBASE, 0)
        add_section(".symtab", SHT_SYMTAB, syms, link=len(sections) + 2, align=8)
        add_section(".strtab", SHT_STRTAB, strtab, align=1)
    shstr = bytearray(b"\0")
    name_off = []
    for s in sections + [(".shstrtab",)]:
        name_off.append(len(shstr))
        shstr += s[0].encode() + b"\0"
    add_section(".shstrtab", SHT_STRTAB, bytes(shstr), align=1)

    offsets = []
    for name, stype, _, data, _, align in sections:
        out += b"\0" * (-len(out) % 8)
        offsets.append(len(out))
        out += data
    if note_where == "segment":
        off = offsets[0]
        phdrs.append((PT_NOTE, PF_R, 0 if note_p_offset_zero else off, 0, 0, len(note_area),
                      len(note_area), note_p_align))
    out += b"\0" * (-len(out) % 8)
    shoff = len(out)
    out += bytes(64)  # the null section
    for i, (name, stype, flags, data, link, align) in enumerate(sections):
        entsize = 24 if stype == SHT_SYMTAB else 0
        info = 1 if stype == SHT_SYMTAB else 0
        out += struct.pack("<IIQQQQIIQQ", name_off[i], stype, flags, 0, offsets[i], len(data), link, info,
                           align, entsize)
    phoff = 64
    if phoff + 56 * len(phdrs) > 0x1000:
        raise ValueError("too many program headers")
    for i, ph in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", out, phoff + 56 * i, *ph)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    struct.pack_into("<16sHHIQQQIHHHHHH", out, 0, ident, 2, 62, 1, entry, phoff, shoff, 0, 64, 56,
                     len(phdrs), 64, len(sections) + 1, len(sections))
    return bytes(out)


def patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    """*data* with struct *fmt* packed at *offset*."""
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)
