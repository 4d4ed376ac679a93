"""Unit and property tests of the Xen note decoding helpers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.build.elfnotes import (
    LIBELF_FEATURE_NAMES,
    XENFEAT_BITS,
    FeatureError,
    NoteFormatError,
    XenElfNote,
    decode_xen_note,
    features_from_bitmask,
    features_to_bitmask,
    format_features,
    iter_notes,
    note_numeric,
    parse_features,
    guest_info_items,
    note_words,
    parse_guest_info,
    split_features,
    strtoull,
    unknown_optional_features,
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


FEATURE_ROWS = [
    # (rule, FEATURES string, (supported, required) or the unknown required name)
    ("'!' marks required, '|' separates", "!writable_page_tables|pae_pgdir_above_4gb",
     ({"writable_page_tables", "pae_pgdir_above_4gb"}, {"writable_page_tables"})),
    ("empty string", "", (set(), set())),
    ("empty items ignored", "||writable_page_tables|", ({"writable_page_tables"}, set())),
    ("only libelf's seven names", "hvm_safe_pvclock|dom0|gnttab_map_avail_bits", ({"dom0"}, set())),
    ("nothing stripped", " writable_page_tables|dom0 ", (set(), set())),
    ("names are case-sensitive", "Writable_Page_Tables", (set(), set())),
    ("items cut after 63 characters", "x" * 63 + "!dom0", ({"dom0"}, {"dom0"})),
    ("ends at NUL", "dom0\0|writable_page_tables", ({"dom0"}, set())),
    ("unknown required", "writable_page_tables|!teleportation", "teleportation"),
    ("'!' alone", "!", ""),
    ("'!!' is not a name", "!!dom0", "!dom0"),
]


@pytest.mark.parametrize("text, expected", [pytest.param(t, e, id=r) for r, t, e in FEATURE_ROWS])
def test_parse_features_rules(text: str, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(FeatureError) as ei:
            parse_features(text)
        assert ei.value.name == expected
    else:
        assert parse_features(text) == expected


def test_split_features_and_unknown_names() -> None:
    assert split_features("!a|b||" + "c" * 70) == [("a", True), ("b", False), ("", False),
                                                   ("c" * 63, False), ("c" * 7, False)]
    assert unknown_optional_features("a|!dom0|writable_page_tables||b") == ["a", "b"]


@given(st.dictionaries(st.sampled_from(LIBELF_FEATURE_NAMES), st.booleans()))
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


DECODE_ROWS = [
    # (rule, note type, descriptor, value)
    ("string up to NUL", XenElfNote.GUEST_OS, b"linux\0\0\0", "linux"),
    ("string without NUL", XenElfNote.GUEST_OS, b"linux", "linux"),
    ("number of 8 bytes", XenElfNote.VIRT_BASE, struct.pack("<Q", 0xFFFFFFFF80000000), 0xFFFFFFFF80000000),
    ("number of 4 bytes", XenElfNote.INIT_P2M, struct.pack("<I", 0x40000000), 0x40000000),
    ("number of 2 bytes", XenElfNote.PHYS32_ENTRY, struct.pack("<H", 0x1234), 0x1234),
    ("number of 1 byte", XenElfNote.SUSPEND_CANCEL, b"\x01", 1),
    ("number of 3 bytes is 0", XenElfNote.ENTRY, b"\x01\x02\x03", 0),
    ("number of 0 bytes is 0", XenElfNote.MOD_START_PFN, b"", 0),
    ("SUPPORTED_FEATURES word 0", XenElfNote.SUPPORTED_FEATURES, struct.pack("<II", 0x801, 7), 0x801),
    ("SUPPORTED_FEATURES not whole words", XenElfNote.SUPPORTED_FEATURES, b"\x01\x08\x00\x00\x00", 0),
    ("L1_MFN_VALID 64-bit words", XenElfNote.L1_MFN_VALID, struct.pack("<QQ", 1, 1), (1, 1)),
    ("PHYS32_RELOC up to three words", XenElfNote.PHYS32_RELOC, struct.pack("<IIII", 1, 2, 3, 4), (1, 2, 3)),
    ("INFO unknown to libelf", XenElfNote.INFO, b"A=b\0", b"A=b\0"),
    ("CRASH_INFO unknown", 0x1000001, b"\x01\x02\x03\x04", b"\x01\x02\x03\x04"),
]


@pytest.mark.parametrize("ntype, desc, value", [pytest.param(t, d, v, id=r) for r, t, d, v in DECODE_ROWS])
def test_decode_xen_note(ntype: int, desc: bytes, value) -> None:
    assert decode_xen_note(ntype, desc) == value


def test_note_words() -> None:
    assert note_words(struct.pack("<II", 1, 2), 4) == (1, 2)
    assert note_words(b"\x01\x02\x03", 4) == ()
    assert note_words(b"", 8) == ()


GUEST_INFO_ROWS = [
    # (rule, __xen_guest string, items)
    ("KEY=VALUE items, ',' separated", "GUEST_OS=linux,XEN_VER=xen-3.0",
     [("GUEST_OS", "linux"), ("XEN_VER", "xen-3.0")]),
    ("a key without '='", "BSD_SYMTAB,PAE=yes", [("BSD_SYMTAB", ""), ("PAE", "yes")]),
    ("ends at NUL", "GUEST_OS=linux\0,XEN_VER=x", [("GUEST_OS", "linux")]),
    ("nothing stripped", " GUEST_OS = linux ", [(" GUEST_OS ", " linux ")]),
    ("only the first '=' splits", "A=b=c", [("A", "b=c")]),
    ("empty items", ",,A=1", [("", ""), ("", ""), ("A", "1")]),
    ("keys cut after 31 characters", "K" * 33 + "=v", [("K" * 31, ""), ("KK", "v")]),
    ("values cut after 127 characters", "A=" + "v" * 130 + ",B=1", [("A", "v" * 127), ("vvv", ""), ("B", "1")]),
]


@pytest.mark.parametrize("text, items", [pytest.param(t, i, id=r) for r, t, i in GUEST_INFO_ROWS])
def test_guest_info_items(text: str, items) -> None:
    assert guest_info_items(text) == items


def test_parse_guest_info() -> None:
    s = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,BSD_SYMTAB,HYPERCALL_PAGE=0x12,GUEST_OS=bsd\0junk"
    assert parse_guest_info(s) == {
        "GUEST_OS": "bsd",
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


STRTOULL_ROWS = [
    ("0x1000zz", 0x1000),
    ("12abc", 12),
    ("abc", None),  # no digits: C returns 0
    ("", None),
    ("0", 0),
    ("0x", 0),  # the "0" is the number
    ("0xg", 0),
    ("010", 8),
    ("08", 0),
    ("  \t42", 42),
    ("+7", 7),
    ("-1", 2**64 - 1),
    ("-0x10", 2**64 - 16),
    ("99999999999999999999999", 2**64 - 1),  # ERANGE: ULLONG_MAX
]


@pytest.mark.parametrize("text, value", STRTOULL_ROWS)
def test_strtoull_c_rules(text: str, value) -> None:
    assert strtoull(text) == value
