"""Unit and property tests of the Xen note decoding helpers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.build.elfnotes import (
    XENFEAT_BITS,
    NoteFormatError,
    XenElfNote,
    decode_xen_note,
    features_from_bitmask,
    features_to_bitmask,
    format_features,
    iter_notes,
    note_numeric,
    parse_features,
    parse_guest_info,
    strtoull,
)


def test_numbers_match_public_headers() -> None:
    # Values from xen/include/public/elfnote.h and features.h
    assert XenElfNote.ENTRY == 1 and XenElfNote.HYPERCALL_PAGE == 2 and XenElfNote.VIRT_BASE == 3
    assert XenElfNote.FEATURES == 10 and XenElfNote.INIT_P2M == 15
    assert XenElfNote.SUPPORTED_FEATURES == 17 and XenElfNote.PHYS32_ENTRY == 18
    assert XENFEAT_BITS["writable_page_tables"] == 0
    assert XENFEAT_BITS["writable_descriptor_tables"] == 1
    assert XENFEAT_BITS["auto_translated_physmap"] == 2
    assert XENFEAT_BITS["supervisor_mode_kernel"] == 3
    assert XENFEAT_BITS["pae_pgdir_above_4gb"] == 4
    assert XENFEAT_BITS["mmu_pt_update_preserve_ad"] == 5
    assert XENFEAT_BITS["hvm_callback_vector"] == 8
    assert XENFEAT_BITS["dom0"] == 11
    assert XENFEAT_BITS["linux_rsdp_unrestricted"] == 15


def test_numbers_match_installed_headers() -> None:
    import re
    from pathlib import Path

    elfnote = Path("/usr/include/xen/elfnote.h")
    features = Path("/usr/include/xen/features.h")
    if not elfnote.exists() or not features.exists():
        pytest.skip("Xen public headers not installed (libxen-dev)")
    for m in re.finditer(r"#define XEN_ELFNOTE_(\w+)\s+(\d+)\b", elfnote.read_text()):
        name, value = m.group(1), int(m.group(2))
        if name in XenElfNote.__members__:
            assert XenElfNote[name] == value, name
    for m in re.finditer(r"#define XENFEAT_(\w+)\s+(\d+)\b", features.read_text()):
        name, value = m.group(1), int(m.group(2))
        if name != "NR_SUBMAPS":
            assert XENFEAT_BITS[name] == value, name


def test_parse_features_examples() -> None:
    assert parse_features("!writable_page_tables|pae_pgdir_above_4gb") == (
        {"writable_page_tables", "pae_pgdir_above_4gb"},
        {"writable_page_tables"},
    )
    assert parse_features("") == (set(), set())
    assert parse_features("||a|!|!b|") == ({"a", "b"}, {"b"})


feature_name = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)


@given(st.dictionaries(feature_name, st.booleans(), max_size=12))
def test_features_round_trip(spec: dict[str, bool]) -> None:
    supported = set(spec)
    required = {n for n, req in spec.items() if req}
    text = format_features(supported, required)
    assert parse_features(text) == (supported, required)


@given(st.sets(st.sampled_from(sorted(XENFEAT_BITS))))
def test_feature_bitmask_round_trip(names: set[str]) -> None:
    assert features_from_bitmask(features_to_bitmask(names)) == names


def test_feature_bitmask_unknown_bits() -> None:
    assert features_from_bitmask(0x8801) == {"writable_page_tables", "dom0", "linux_rsdp_unrestricted"}
    assert features_from_bitmask(1 << 30) == {"bit30"}


def encode_note(name: bytes, ntype: int, desc: bytes, align: int = 4) -> bytes:
    pad = lambda b: b + b"\0" * ((-len(b)) % align)  # noqa: E731
    return pad(pad(struct.pack("<III", len(name), len(desc), ntype) + name) + desc)


def test_gnu_property_note_with_8_byte_alignment() -> None:
    # As in static binaries: an 8-aligned PT_NOTE with a "GNU" property note,
    # whose descriptor starts at offset 16 (12-byte header + 4-byte name).
    desc = struct.pack("<IIII", 0xC0008002, 4, 1, 0)
    blob = struct.pack("<III", 4, 16, 5) + b"GNU\0" + desc
    assert len(blob) == 32
    assert [(n.name, n.type, n.desc) for n in iter_notes(blob, align=8)] == [("GNU", 5, desc)]


@given(st.lists(st.tuples(st.sampled_from([b"Xen\0", b"GNU\0", b"Linux\0", b""]),
                          st.integers(0, 2**32 - 1), st.binary(max_size=40)), max_size=8),
       st.sampled_from([4, 8]))
def test_iter_notes_round_trip(notes, align) -> None:
    blob = b"".join(encode_note(n, t, d, align) for n, t, d in notes)
    got = [(n.name, n.type, n.desc) for n in iter_notes(blob, align=align)]
    assert got == [(n.rstrip(b"\0").decode(), t, d) for n, t, d in notes]


def test_iter_notes_truncated() -> None:
    blob = encode_note(b"Xen\0", 3, struct.pack("<Q", 1))
    with pytest.raises(NoteFormatError):
        list(iter_notes(blob[:-4]))
    assert list(iter_notes(blob + b"\0\0")) != []  # short trailing padding is fine


def test_note_numeric_sizes() -> None:
    assert note_numeric(b"\x01") == 1
    assert note_numeric(b"\x01\x02") == 0x201
    assert note_numeric(struct.pack("<I", 0xDEADBEEF)) == 0xDEADBEEF
    assert note_numeric(struct.pack("<Q", 0xFFFFFFFF80000000)) == 0xFFFFFFFF80000000
    assert note_numeric(b"\x01\x02\x03") is None
    assert note_numeric(b"") is None


def test_decode_xen_note() -> None:
    assert decode_xen_note(XenElfNote.GUEST_OS, b"linux\0\0\0") == "linux"
    assert decode_xen_note(XenElfNote.VIRT_BASE, struct.pack("<Q", 0xFFFFFFFF80000000)) == 0xFFFFFFFF80000000
    assert decode_xen_note(XenElfNote.L1_MFN_VALID, struct.pack("<QQ", 1, 1)) == (1, 1)
    assert decode_xen_note(XenElfNote.L1_MFN_VALID, struct.pack("<Q", 5)) == 5
    assert decode_xen_note(XenElfNote.SUPPORTED_FEATURES, struct.pack("<I", 0x801)) == 0x801
    assert decode_xen_note(0x1000001, b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04"  # CRASH_INFO: unknown
    assert decode_xen_note(XenElfNote.ENTRY, b"\x01\x02\x03") == b"\x01\x02\x03"


def test_parse_guest_info() -> None:
    s = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,BSD_SYMTAB,HYPERCALL_PAGE=0x12\0junk"
    assert parse_guest_info(s) == {
        "GUEST_OS": "linux",
        "XEN_VER": "xen-3.0",
        "VIRT_BASE": "0xC0000000",
        "BSD_SYMTAB": "",
        "HYPERCALL_PAGE": "0x12",
    }


@given(st.integers(0, 2**64 - 1))
def test_strtoull(n: int) -> None:
    assert strtoull(str(n)) == n
    assert strtoull(hex(n)) == n
    assert strtoull(hex(n).upper().replace("X", "x")) == n
    assert strtoull("0" + oct(n)[2:]) == n


def test_strtoull_prefixes() -> None:
    assert strtoull("0x1000zz") == 0x1000
    assert strtoull("12abc") == 12
    assert strtoull("abc") is None
    assert strtoull("0") == 0
