"""Xen ELF notes: numbers, decoding and the feature-string grammar.

A Xen PV kernel describes itself to the domain builder with ELF notes whose
owner name is ``"Xen"`` (numbers from ``xen/include/public/elfnote.h``), or,
for very old kernels, with a ``__xen_guest`` section holding a
``KEY=VALUE,KEY=VALUE`` string.  This module knows how to decode both; the
policy (which values are acceptable) lives in :mod:`pyxen.build.elf`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterator

__all__ = [
    "XenElfNote",
    "XENFEAT_BITS",
    "XENFEAT_NAMES",
    "STRING_NOTES",
    "RawNote",
    "NoteFormatError",
    "iter_notes",
    "note_numeric",
    "note_string",
    "decode_xen_note",
    "parse_features",
    "format_features",
    "features_from_bitmask",
    "features_to_bitmask",
    "parse_guest_info",
    "strtoull",
    "LEGACY_KEY_TO_NOTE",
]


class XenElfNote(enum.IntEnum):
    """Types of the notes owned by "Xen" (see elfnote.h)."""

    INFO = 0
    ENTRY = 1
    HYPERCALL_PAGE = 2
    VIRT_BASE = 3
    PADDR_OFFSET = 4
    XEN_VERSION = 5
    GUEST_OS = 6
    GUEST_VERSION = 7
    LOADER = 8
    PAE_MODE = 9
    FEATURES = 10
    BSD_SYMTAB = 11
    HV_START_LOW = 12
    L1_MFN_VALID = 13
    SUSPEND_CANCEL = 14
    INIT_P2M = 15
    MOD_START_PFN = 16
    SUPPORTED_FEATURES = 17
    PHYS32_ENTRY = 18


_KNOWN_TYPES = frozenset(int(t) for t in XenElfNote)

#: Notes whose descriptor is a NUL-terminated string; all others are numbers.
STRING_NOTES = frozenset(
    {
        XenElfNote.XEN_VERSION,
        XenElfNote.GUEST_OS,
        XenElfNote.GUEST_VERSION,
        XenElfNote.LOADER,
        XenElfNote.PAE_MODE,
        XenElfNote.FEATURES,
        XenElfNote.BSD_SYMTAB,
    }
)

#: XENFEAT_* bit numbers (xen/include/public/features.h).
XENFEAT_BITS: dict[str, int] = {
    "writable_page_tables": 0,
    "writable_descriptor_tables": 1,
    "auto_translated_physmap": 2,
    "supervisor_mode_kernel": 3,
    "pae_pgdir_above_4gb": 4,
    "mmu_pt_update_preserve_ad": 5,
    "highmem_assist": 6,
    "gnttab_map_avail_bits": 7,
    "hvm_callback_vector": 8,
    "hvm_safe_pvclock": 9,
    "hvm_pirqs": 10,
    "dom0": 11,
    "grant_map_identity": 12,
    "memory_op_vnode_supported": 13,
    "ARM_SMCCC_supported": 14,
    "linux_rsdp_unrestricted": 15,
    "not_direct_mapped": 16,
    "direct_mapped": 17,
}
XENFEAT_NAMES: dict[int, str] = {bit: name for name, bit in XENFEAT_BITS.items()}

#: ``__xen_guest`` keys that correspond to a note type.
LEGACY_KEY_TO_NOTE: dict[str, XenElfNote] = {
    "LOADER": XenElfNote.LOADER,
    "GUEST_OS": XenElfNote.GUEST_OS,
    "GUEST_VER": XenElfNote.GUEST_VERSION,
    "XEN_VER": XenElfNote.XEN_VERSION,
    "PAE": XenElfNote.PAE_MODE,
    "BSD_SYMTAB": XenElfNote.BSD_SYMTAB,
    "VIRT_BASE": XenElfNote.VIRT_BASE,
    "VIRT_ENTRY": XenElfNote.ENTRY,
    "ELF_PADDR_OFFSET": XenElfNote.PADDR_OFFSET,
    "HYPERCALL_PAGE": XenElfNote.HYPERCALL_PAGE,
    "FEATURES": XenElfNote.FEATURES,
}


class NoteFormatError(ValueError):
    """A note area is truncated or otherwise malformed."""


@dataclass(frozen=True)
class RawNote:
    """One ELF note record: owner name, type and descriptor bytes."""

    name: str
    type: int
    desc: bytes


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def iter_notes(data: bytes, *, align: int = 4, byteorder: str = "little") -> Iterator[RawNote]:
    """Walk the note records contained in *data* (a PT_NOTE segment or SHT_NOTE section).

    Each record is ``namesz, descsz, type`` (three 32-bit words), then the name
    and the descriptor; the descriptor and the next record start on an *align*
    boundary (4, or 8 for 8-aligned PT_NOTE segments such as GNU properties).  Trailing padding shorter
    than a header is ignored; a record running past the end raises
    :class:`NoteFormatError`.
    """
    if align not in (4, 8):
        raise ValueError(f"note alignment must be 4 or 8, not {align}")
    fmt = "<III" if byteorder == "little" else ">III"
    pos = 0
    end = len(data)
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        name_at = pos + 12
        # The descriptor and the next note start at the next *align* boundary
        # (for 4-byte alignment that is padding the name; for 8, header + name).
        desc_at = _align(name_at + namesz, align)
        nxt = _align(desc_at + descsz, align)
        if desc_at + descsz > end:
            raise NoteFormatError(
                f"note at offset {pos:#x} (namesz {namesz}, descsz {descsz}) runs past the end "
                f"of the {end}-byte note area"
            )
        raw_name = data[name_at : name_at + namesz]
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        yield RawNote(name, ntype, bytes(data[desc_at : desc_at + descsz]))
        pos = nxt


def note_numeric(desc: bytes) -> int | None:
    """Value of a numeric note: 1, 2, 4 or 8 little-endian bytes; None for other sizes."""
    if len(desc) in (1, 2, 4, 8):
        return int.from_bytes(desc, "little")
    return None


def note_string(desc: bytes) -> str:
    """Value of a string note: bytes up to the first NUL."""
    return desc.split(b"\0", 1)[0].decode("latin-1")


def note_words(desc: bytes, unit: int) -> tuple[int, ...]:
    """Split *desc* into little-endian words of *unit* bytes (a trailing partial word is dropped)."""
    return tuple(
        int.from_bytes(desc[i : i + unit], "little") for i in range(0, len(desc) - unit + 1, unit)
    )


def decode_xen_note(ntype: int, desc: bytes) -> int | str | bytes | tuple[int, ...]:
    """Decode the descriptor of a "Xen" note of type *ntype*.

    * string notes -> ``str``
    * numeric notes of 1/2/4/8 bytes -> ``int``
    * L1_MFN_VALID of another size (Linux emits two 64-bit words: mask, value)
      -> ``tuple`` of 64-bit words
    * SUPPORTED_FEATURES -> ``int`` bitmask of the first 32-bit submap
    * anything else (unknown types, odd sizes) -> the raw ``bytes``
    """
    if ntype in STRING_NOTES:
        return note_string(desc)
    if ntype == XenElfNote.SUPPORTED_FEATURES:
        words = note_words(desc, 4)
        return words[0] if words else 0
    value = note_numeric(desc)
    if value is not None and ntype in _KNOWN_TYPES:
        return value
    if ntype == XenElfNote.L1_MFN_VALID and len(desc) % 8 == 0 and desc:
        return note_words(desc, 8)
    return bytes(desc)


def parse_features(text: str) -> tuple[set[str], set[str]]:
    """Parse a FEATURES string: names separated by ``|``, ``!`` marks a required feature.

    Returns ``(supported, required)``.  As in Xen, a required feature is also
    counted as supported.  Empty items and surrounding whitespace are ignored.
    Names are kept even when they are not XENFEAT_* names, so that a caller
    can report them.
    """
    supported: set[str] = set()
    required: set[str] = set()
    for item in text.split("|"):
        item = item.strip().strip("\0")
        if not item:
            continue
        if item.startswith("!"):
            name = item[1:].strip()
            if not name:
                continue
            required.add(name)
            supported.add(name)
        else:
            supported.add(item)
    return supported, required


def format_features(supported: set[str], required: set[str]) -> str:
    """Inverse of :func:`parse_features` (sorted, required ones prefixed by ``!``)."""
    items = [("!" + n) if n in required else n for n in sorted(set(supported) | set(required))]
    return "|".join(items)


def features_from_bitmask(mask: int) -> set[str]:
    """Names of the XENFEAT_* bits set in *mask* (unknown bits become ``"bit<N>"``)."""
    names: set[str] = set()
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            names.add(XENFEAT_NAMES.get(bit, f"bit{bit}"))
        bit += 1
    return names


def features_to_bitmask(names: set[str]) -> int:
    """Bitmask of the given XENFEAT_* names (unknown names raise KeyError)."""
    mask = 0
    for n in names:
        mask |= 1 << XENFEAT_BITS[n]
    return mask


def parse_guest_info(text: str) -> dict[str, str]:
    """Split a legacy ``__xen_guest`` string ``KEY=VALUE,KEY,KEY=VALUE`` into a dict.

    A key without ``=`` gets the empty value.  Parsing stops at the first NUL.
    """
    text = text.split("\0", 1)[0]
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def strtoull(text: str) -> int | None:
    """C ``strtoull(text, NULL, 0)``: 0x-prefixed hex, 0-prefixed octal or decimal.

    Parses the longest valid prefix; returns None when there are no digits at all.
    """
    s = text.strip()
    if s.lower().startswith("0x"):
        base, digits = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    valid = "0123456789abcdef"[:base]
    n = 0
    for ch in digits.lower():
        if ch not in valid:
            break
        n += 1
    if n == 0:
        if base == 16:
            return 0  # "0x" alone: strtoull parses the leading "0"
        if base == 8:
            return 0
        return None
    return int(digits[:n], base) & 0xFFFF_FFFF_FFFF_FFFF
