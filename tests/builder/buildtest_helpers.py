"""Builders for the test inputs of tests/builder: tiny Xen ELF kernels and fake bzImages."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
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
