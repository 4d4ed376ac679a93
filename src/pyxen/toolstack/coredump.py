"""Guest core dumps in ELF, laid out like Xen's xc_core files (xl dump-core):
an ET_CORE ELF with the sections .note.Xen (domain facts), .xen_p2m
(pfn, gmfn pairs) and .xen_pages (the page contents, in p2m order)."""
from __future__ import annotations

import struct
from pathlib import Path

PAGE = 4096


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)   # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def write_core(path: Path, ram, name: str, domid: int) -> None:
    nr_pages = len(ram) // PAGE
    notes = _note(b"Xen", 0x2000000, struct.pack("<QQ", domid, nr_pages)) + \
        _note(b"Xen", 0x2000001, name.encode()[:63].ljust(64, b"\0"))
    p2m = b"".join(struct.pack("<QQ", pfn, pfn) for pfn in range(nr_pages))
    shstr = b"\0.shstrtab\0.note.Xen\0.xen_p2m\0.xen_pages\0"
    ehsize, shentsize = 64, 64
    off_notes = ehsize
    off_p2m = off_notes + len(notes)
    off_pages = (off_p2m + len(p2m) + PAGE - 1) // PAGE * PAGE
    off_shstr = off_pages + nr_pages * PAGE
    off_sh = (off_shstr + len(shstr) + 7) // 8 * 8
    with open(path, "wb") as f:
        f.write(b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8))
        f.write(struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 0, off_sh, 0, ehsize, 56, 0,
                            shentsize, 5, 1))
        f.write(notes)
        f.write(p2m)
        f.write(bytes(off_pages - f.tell()))
        for i in range(0, nr_pages * PAGE, 1 << 20):
            f.write(ram[i:min(i + (1 << 20), nr_pages * PAGE)])
        f.write(shstr)
        f.write(bytes(off_sh - f.tell()))

        def sh(name_off, stype, off, size, align, entsize=0):
            f.write(struct.pack("<IIQQQQIIQQ", name_off, stype, 0, 0, off, size, 0, 0,
                                align, entsize))
        sh(0, 0, 0, 0, 0)
        sh(1, 3, off_shstr, len(shstr), 1)                 # .shstrtab
        sh(11, 7, off_notes, len(notes), 4)                # .note.Xen (SHT_NOTE)
        sh(21, 1, off_p2m, len(p2m), 8, 16)                # .xen_p2m
        sh(30, 1, off_pages, nr_pages * PAGE, PAGE, PAGE)  # .xen_pages
