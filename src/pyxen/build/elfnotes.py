"""Xen ELF notes: numbers, decoding, the FEATURES grammar and ``__xen_guest``.

A Xen PV kernel describes itself to the domain builder with ELF notes whose
owner name is ``"Xen"`` (numbers from ``xen/include/public/elfnote.h``), or,
for very old kernels, with a ``__xen_guest`` section holding a
``KEY=VALUE,KEY=VALUE`` string.  This module decodes both the way Xen's
libelf does (``libelf-dominfo.c``, ``libelf-tools.c``); which values are
acceptable, and what follows from them, is decided in :mod:`pyxen.build.elf`.

The decoding rules, as libelf has them:

* A note record is ``namesz, descsz, type`` (32-bit words), the name, then
  the descriptor.  Name and descriptor are each padded to 4 bytes, whatever
  the alignment of the segment or section holding them.
* Each known note type is a *string* (read up to its NUL), a *number*
  (a 1, 2, 4 or 8-byte little-endian descriptor; any other size reads as 0)
  or *named only* (L1_MFN_VALID, PHYS32_RELOC: libelf reads no value for
  PV).  INFO (0) and types above PHYS32_RELOC are unknown and ignored.
* SUPPORTED_FEATURES is an array of 32-bit feature words; word 0 is used
  when the descriptor is a whole number of words, otherwise it reads as 0.
* FEATURES is a string of items separated by ``|``; an item starting with
  ``!`` names a *required* feature (which also counts as supported).  Only
  the seven names in libelf's table are recognised; an unrecognised
  optional name is ignored, an unrecognised required name is an error.
  Items are at most 63 characters (a longer one is cut into 63-character
  pieces); nothing is stripped.
* ``__xen_guest`` items are separated by ``,``; ``=`` separates key and
  value; keys are at most 31 and values at most 127 characters (the rest
  starts a new item); the string ends at its first NUL.  Numbers are C
  ``strtoull(value, NULL, 0)``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterator

__all__ = [
    "XenElfNote",
    "NoteKind",
    "NOTE_KINDS",
    "XENFEAT_BITS",
    "XENFEAT_NAMES",
    "LIBELF_FEATURE_NAMES",
    "STRING_NOTES",
    "RawNote",
    "NoteFormatError",
    "FeatureError",
    "iter_notes",
    "note_numeric",
    "note_string",
    "note_words",
    "decode_xen_note",
    "split_features",
    "parse_features",
    "unknown_optional_features",
    "format_features",
    "features_from_bitmask",
    "features_to_bitmask",
    "guest_info_items",
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
    PHYS32_RELOC = 19


class NoteKind(enum.Enum):
    """How libelf reads the descriptor of a known note type."""

    STRING = "string"
    NUMBER = "number"
    NAME = "name"  # recognised, but no value is read (for PV)


#: The note types libelf knows, and how it reads each.  INFO is not among them.
NOTE_KINDS: dict[XenElfNote, NoteKind] = {
    XenElfNote.ENTRY: NoteKind.NUMBER,
    XenElfNote.HYPERCALL_PAGE: NoteKind.NUMBER,
    XenElfNote.VIRT_BASE: NoteKind.NUMBER,
    XenElfNote.PADDR_OFFSET: NoteKind.NUMBER,
    XenElfNote.XEN_VERSION: NoteKind.STRING,
    XenElfNote.GUEST_OS: NoteKind.STRING,
    XenElfNote.GUEST_VERSION: NoteKind.STRING,
    XenElfNote.LOADER: NoteKind.STRING,
    XenElfNote.PAE_MODE: NoteKind.STRING,
    XenElfNote.FEATURES: NoteKind.STRING,
    XenElfNote.BSD_SYMTAB: NoteKind.STRING,
    XenElfNote.HV_START_LOW: NoteKind.NUMBER,
    XenElfNote.L1_MFN_VALID: NoteKind.NAME,
    XenElfNote.SUSPEND_CANCEL: NoteKind.NUMBER,
    XenElfNote.INIT_P2M: NoteKind.NUMBER,
    XenElfNote.MOD_START_PFN: NoteKind.NUMBER,
    XenElfNote.SUPPORTED_FEATURES: NoteKind.NUMBER,
    XenElfNote.PHYS32_ENTRY: NoteKind.NUMBER,
    XenElfNote.PHYS32_RELOC: NoteKind.NAME,
}

#: Notes whose descriptor is a NUL-terminated string.
STRING_NOTES = frozenset(t for t, k in NOTE_KINDS.items() if k is NoteKind.STRING)

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
    "runstate_phys_area": 18,
    "vcpu_time_phys_area": 19,
    "dm_msix_all_writes": 20,
}
XENFEAT_NAMES: dict[int, str] = {bit: name for name, bit in XENFEAT_BITS.items()}

#: The feature names libelf recognises in a FEATURES string (newer features
#: can only be declared with the SUPPORTED_FEATURES bitmask).
LIBELF_FEATURE_NAMES: tuple[str, ...] = (
    "writable_page_tables",
    "writable_descriptor_tables",
    "auto_translated_physmap",
    "supervisor_mode_kernel",
    "pae_pgdir_above_4gb",
    "hvm_callback_vector",
    "dom0",
)

#: Longest FEATURES item libelf reads in one piece.
FEATURE_ITEM_MAX = 63
#: Longest ``__xen_guest`` key and value libelf reads in one piece.
GUEST_INFO_KEY_MAX = 31
GUEST_INFO_VALUE_MAX = 127

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

_MASK64 = (1 << 64) - 1


class NoteFormatError(ValueError):
    """A note area is truncated or otherwise malformed."""


class FeatureError(ValueError):
    """A FEATURES string requires a feature libelf does not know."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"required feature {name!r} is not a feature name Xen's loader knows")


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
    and the descriptor, each padded to *align* bytes.  libelf always uses 4,
    whatever the segment's alignment (8-aligned GNU property notes have
    8-byte multiples there anyway); *align* = 8 is for other ELF consumers.
    Trailing padding shorter than a header is ignored; a record running past
    the end raises :class:`NoteFormatError`.
    """
    if align not in (4, 8):
        raise ValueError(f"note alignment must be 4 or 8, not {align}")
    fmt = "<III" if byteorder == "little" else ">III"
    pos = 0
    end = len(data)
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        name_at = pos + 12
        desc_at = _align(name_at + namesz, align)
        nxt = _align(desc_at + descsz, align)
        if desc_at + descsz > end:
            raise NoteFormatError(
                f"the note at offset {pos:#x} (namesz {namesz}, descsz {descsz}) runs past the end "
                f"of the {end}-byte note area"
            )
        raw_name = data[name_at : name_at + namesz]
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        yield RawNote(name, ntype, bytes(data[desc_at : desc_at + descsz]))
        pos = nxt


def note_numeric(desc: bytes) -> int | None:
    """Value of a numeric note: 1, 2, 4 or 8 little-endian bytes; None for other sizes
    (which libelf reads as 0)."""
    if len(desc) in (1, 2, 4, 8):
        return int.from_bytes(desc, "little")
    return None


def note_string(desc: bytes) -> str:
    """Value of a string note: bytes up to the first NUL."""
    return desc.split(b"\0", 1)[0].decode("latin-1")


def note_words(desc: bytes, unit: int) -> tuple[int, ...]:
    """*desc* as little-endian words of *unit* bytes; () unless it is a whole number of them
    (libelf's ``elf_note_numeric_array``)."""
    if not desc or len(desc) % unit:
        return ()
    return tuple(int.from_bytes(desc[i : i + unit], "little") for i in range(0, len(desc), unit))


def decode_xen_note(ntype: int, desc: bytes) -> int | str | bytes | tuple[int, ...]:
    """Decode the descriptor of a "Xen" note of type *ntype* as libelf reads it.

    * string notes -> ``str``
    * numeric notes -> ``int`` (0 when the descriptor is not 1, 2, 4 or 8 bytes)
    * SUPPORTED_FEATURES -> ``int`` bitmask of the first 32-bit word (0 if the
      descriptor is not a whole number of words)
    * L1_MFN_VALID -> ``tuple`` of 64-bit words, PHYS32_RELOC -> ``tuple`` of
      32-bit words (libelf reads neither for PV; kept for information)
    * unknown types -> the raw ``bytes``
    """
    try:
        kind = NOTE_KINDS[XenElfNote(ntype)]
    except (ValueError, KeyError):
        return bytes(desc)
    if kind is NoteKind.STRING:
        return note_string(desc)
    if ntype == XenElfNote.SUPPORTED_FEATURES:
        words = note_words(desc, 4)
        return words[0] if words else 0
    if kind is NoteKind.NUMBER:
        value = note_numeric(desc)
        return 0 if value is None else value
    if ntype == XenElfNote.L1_MFN_VALID:
        return note_words(desc, 8)
    # PHYS32_RELOC: up to three 32-bit words (alignment, minimum, maximum)
    return tuple(int.from_bytes(desc[i : i + 4], "little") for i in range(0, min(len(desc), 12) - 3, 4))


def split_features(text: str) -> list[tuple[str, bool]]:
    """The items of a FEATURES string as libelf cuts them: ``(name, required)``.

    Items end at ``|`` or after 63 characters; a leading ``!`` marks a
    required feature and is not part of the name.  Empty items are kept
    (as ``("", False)``); the string ends at its first NUL.
    """
    text = text.split("\0", 1)[0]
    items: list[tuple[str, bool]] = []
    pos = 0
    while pos < len(text):
        item = []
        while len(item) < FEATURE_ITEM_MAX and pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "|":
                break
            item.append(ch)
        s = "".join(item)
        items.append((s[1:], True) if s.startswith("!") else (s, False))
    return items


def parse_features(text: str) -> tuple[set[str], set[str]]:
    """Parse a FEATURES string as libelf does; returns ``(supported, required)``.

    A required feature is also supported.  Only :data:`LIBELF_FEATURE_NAMES`
    are recognised: other optional names are left out (see
    :func:`unknown_optional_features`), another required name raises
    :class:`FeatureError`.
    """
    supported: set[str] = set()
    required: set[str] = set()
    for name, req in split_features(text):
        if name in LIBELF_FEATURE_NAMES:
            supported.add(name)
            if req:
                required.add(name)
        elif req:
            raise FeatureError(name)
    return supported, required


def unknown_optional_features(text: str) -> list[str]:
    """Non-empty optional FEATURES items that libelf does not recognise (and ignores)."""
    return [n for n, req in split_features(text) if n and not req and n not in LIBELF_FEATURE_NAMES]


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


def guest_info_items(text: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` items of a ``__xen_guest`` string, cut as libelf cuts them.

    ``,`` ends an item, the first ``=`` starts its value; a key stops after
    31 and a value after 127 characters, and what follows starts the next
    item.  A key without ``=`` gets the empty value.  The string ends at its
    first NUL.  Nothing is stripped.
    """
    text = text.split("\0", 1)[0]
    items: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        key: list[str] = []
        value: list[str] = []
        while len(key) < GUEST_INFO_KEY_MAX and pos < end:
            ch = text[pos]
            if ch == ",":
                pos += 1
                break
            if ch == "=":
                pos += 1
                while len(value) < GUEST_INFO_VALUE_MAX and pos < end:
                    ch = text[pos]
                    if ch == ",":
                        pos += 1
                        break
                    value.append(ch)
                    pos += 1
                break
            key.append(ch)
            pos += 1
        items.append(("".join(key), "".join(value)))
    return items


def parse_guest_info(text: str) -> dict[str, str]:
    """A ``__xen_guest`` string as a dict (a repeated key: the last value wins)."""
    return {k: v for k, v in guest_info_items(text) if k}


_C_SPACE = " \t\n\v\f\r"


def strtoull(text: str) -> int | None:
    """C ``strtoull(text, NULL, 0)``: leading white space, an optional sign, then
    0x-prefixed hex, 0-prefixed octal or decimal; the longest valid prefix.

    A minus sign negates modulo 2**64; a value too large gives 2**64 - 1, as C.
    Returns None when there are no digits at all (C returns 0 then).
    """
    s = text.lstrip(_C_SPACE)
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s[:2].lower() == "0x" and s[2:3] and s[2].lower() in "0123456789abcdef":
        base, digits = 16, s[2:]
    elif s.startswith("0"):
        base, digits = 8, s
    else:
        base, digits = 10, s
    valid = "0123456789abcdef"[:base]
    n = 0
    for ch in digits.lower():
        if ch not in valid:
            break
        n += 1
    if n == 0:
        return None
    value = int(digits[:n], base)
    if value > _MASK64:
        return _MASK64
    return (-value) & _MASK64 if neg else value
