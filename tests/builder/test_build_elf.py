"""load_kernel on small ELF kernels built with gcc (and a few hand-made files)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from buildtest_helpers import (
    PHYS_START,
    VIRT_BASE,
    build_elf,
    build_plain_elf,
    elf32_bytes,
    linux_like_notes,
    load_indexes,
    patch_phdr,
    phdrs,
)
from pyxen.build.elf import DEFAULT_SUPPORTED_FEATURES, KernelImage, load_kernel, parse_kernel
from pyxen.build.elfnotes import XenElfNote
from pyxen.build.errors import KernelImageError


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
    assert k.kernel_start % 4096 == 0 and k.kernel_end % 4096 == 0
    assert k.virt_offset == VIRT_BASE


def test_parse_kernel_from_bytes(linux_elf: Path) -> None:
    k = parse_kernel(linux_elf.read_bytes(), "mem.elf")
    assert k.path == Path("mem.elf") and k.entry == load_kernel(linux_elf).entry


def test_entry_defaults_to_e_entry(tmp_path: Path) -> None:
    p = build_elf(tmp_path, notes=linux_like_notes(ENTRY=None))
    k = load_kernel(p)
    assert k.entry == k.e_entry == symbols(p)["_start"]


def test_four_byte_numeric_notes(tmp_path: Path) -> None:
    notes = linux_like_notes(PADDR_OFFSET=("long", "0"), INIT_P2M=("long", "0x40000000"),
                             HV_START_LOW=("long", "0xf5800000"), HYPERCALL_PAGE=None)
    k = load_kernel(build_elf(tmp_path, notes=notes))
    assert k.paddr_offset == 0
    assert k.init_p2m == 0x40000000
    assert k.hv_start_low == 0xF5800000
    assert k.hypercall_page is None


def test_paddr_offset_note_is_used(tmp_path: Path) -> None:
    # An ELF whose p_paddr are virtual addresses: PADDR_OFFSET = VIRT_BASE maps them 1:1.
    notes = linux_like_notes(PADDR_OFFSET=("quad", hex(VIRT_BASE)))
    p = build_elf(tmp_path, notes=notes, lma_offset=0)
    k = load_kernel(p)
    assert k.paddr_offset == VIRT_BASE
    assert [s.vaddr for s in k.segments] == [s.paddr for s in k.segments]
    assert k.kernel_start == VIRT_BASE + PHYS_START


def test_notes_in_non_alloc_section(tmp_path: Path) -> None:
    # No PT_NOTE segment: Xen falls back to SHT_NOTE sections.
    p = build_elf(tmp_path, notes=linux_like_notes(), note_flags='""')
    assert not any(ph["type"] == 4 for ph in phdrs(p.read_bytes()))
    k = load_kernel(p)
    assert k.notes_source == "sections"
    assert k.guest_os == "linux" and k.virt_base == VIRT_BASE


LEGACY = ("GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,"
          "ELF_PADDR_OFFSET=0x0,HYPERCALL_PAGE=0x101,LOADER=generic,"
          "FEATURES=!writable_page_tables|pae_pgdir_above_4gb,PAE=yes,BSD_SYMTAB")


def test_legacy_xen_guest_section(tmp_path: Path) -> None:
    p = build_elf(tmp_path, legacy=LEGACY)
    k = load_kernel(p)
    assert k.notes_source == "__xen_guest"
    assert k.guest_info is not None and k.guest_info["GUEST_VER"] == "2.6"
    assert k.guest_os == "linux" and k.xen_version == "xen-3.0" and k.loader == "generic"
    assert k.virt_base == VIRT_BASE and k.paddr_offset == 0
    # HYPERCALL_PAGE is a page number relative to VIRT_BASE
    assert k.hypercall_page == VIRT_BASE + 0x101 * 4096 == symbols(p)["hypercall_page"]
    assert k.features_required == {"writable_page_tables"}
    assert k.features_supported == {"writable_page_tables", "pae_pgdir_above_4gb"}
    assert k.pae_mode == "yes" and k.bsd_symtab
    assert k.entry == k.e_entry
    assert k.segments[0].vaddr == VIRT_BASE + PHYS_START


def test_legacy_without_paddr_offset_defaults_to_virt_base(tmp_path: Path) -> None:
    # Old kernels put virtual addresses in p_paddr and gave no ELF_PADDR_OFFSET.
    legacy = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,LOADER=generic,VIRT_ENTRY=0xffffffff80100003"
    p = build_elf(tmp_path, legacy=legacy, lma_offset=0)
    k = load_kernel(p)
    assert k.paddr_offset == VIRT_BASE
    assert [s.vaddr for s in k.segments] == [s.paddr for s in k.segments]
    assert k.entry == 0xFFFFFFFF80100003 == symbols(p)["xen_entry"]


def test_notes_take_precedence_over_legacy(tmp_path: Path) -> None:
    p = build_elf(tmp_path, notes=linux_like_notes(), legacy="GUEST_OS=other,XEN_VER=xen-2.0")
    assert load_kernel(p).notes_source == "notes"


# --- errors -----------------------------------------------------------


def err(path, **kw) -> str:
    with pytest.raises(KernelImageError) as ei:
        load_kernel(path, **kw)
    return str(ei.value)


def test_not_elf(tmp_path: Path) -> None:
    p = tmp_path / "vmlinuz"
    p.write_bytes(b"#!/bin/sh\necho this is not a kernel\n" * 40)
    assert err(p) == "vmlinuz: not an ELF file or bzImage"


def test_empty_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert err(p) == "empty: not an ELF file or bzImage"
    msg = err(tmp_path / "nonexistent")
    assert msg.startswith("nonexistent: cannot read kernel image")


def test_elf32_rejected(tmp_path: Path) -> None:
    p = tmp_path / "k32.elf"
    p.write_bytes(elf32_bytes())
    assert err(p) == "k32.elf: 32-bit PV guests are not supported by pyxen (ELF class 32)"


def test_truncated_elf(tmp_path: Path) -> None:
    p = tmp_path / "short.elf"
    p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(20))
    assert err(p).startswith("short.elf: corrupt ELF file")


def test_bad_elf_class(tmp_path: Path) -> None:
    p = tmp_path / "weird.elf"
    p.write_bytes(b"\x7fELF\x07\x01\x01" + bytes(100))
    assert "weird.elf: invalid ELF class 7" in err(p)


def test_no_xen_notes(tmp_path: Path) -> None:
    p = build_plain_elf(tmp_path, "mini.elf")
    assert err(p) == "mini.elf: no Xen ELF notes (not a Xen PV kernel)"


def test_not_x86_64(tmp_path: Path, linux_elf: Path) -> None:
    data = bytearray(linux_elf.read_bytes())
    struct.pack_into("<H", data, 18, 183)  # EM_AARCH64
    p = tmp_path / "arm.elf"
    p.write_bytes(bytes(data))
    assert err(p) == "arm.elf: not an x86-64 kernel (ELF machine is AArch64, expected x86-64)"


def test_no_pt_load(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "noload.elf"
    p.write_bytes(linux_elf.read_bytes())
    for i in load_indexes(p):
        patch_phdr(p, i, type=0)  # PT_NULL
    assert err(p) == "noload.elf: no loadable (PT_LOAD) segments"


def test_pt_load_without_rwx_flags_is_not_loadable(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "noflags.elf"
    p.write_bytes(linux_elf.read_bytes())
    for i in load_indexes(p):
        patch_phdr(p, i, flags=0)
    assert "no loadable (PT_LOAD) segments" in err(p)


def test_missing_virt_base(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "nobase.elf", linux_like_notes(VIRT_BASE_N=None, PADDR_OFFSET=None))
    assert err(p) == "nobase.elf: missing VIRT_BASE"
    p = build_elf(tmp_path, "nobase2.elf", linux_like_notes(VIRT_BASE_N=None))
    assert err(p) == "nobase2.elf: missing VIRT_BASE (PADDR_OFFSET is set without it)"


@pytest.mark.parametrize("value", ["0xffffffff80000123", "0x0000900000000000"])
def test_invalid_virt_base(tmp_path: Path, value: str) -> None:
    p = build_elf(tmp_path, "badbase.elf", linux_like_notes(VIRT_BASE_N=("quad", value)))
    assert f"badbase.elf: invalid VIRT_BASE {int(value, 16):#x}" in err(p)


def test_virt_base_wrong_size(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "b.elf", linux_like_notes(VIRT_BASE_N=("raw", ".byte 1,2,3")))
    assert "b.elf: invalid VIRT_BASE note" in err(p)


@pytest.mark.parametrize("ver", ["xen-2.0", ""])
def test_wrong_xen_version(tmp_path: Path, ver: str) -> None:
    notes = linux_like_notes(XEN_VERSION=("str", ver) if ver else None)
    msg = err(build_elf(tmp_path, "old.elf", notes))
    assert msg.startswith("old.elf: kernel is not built for the Xen 3.0 interface")
    assert (repr(ver) if ver else "missing") in msg


def test_wrong_guest_os_and_loader(tmp_path: Path) -> None:
    notes = linux_like_notes(GUEST_OS=("str", "Plan9"), LOADER=None)
    msg = err(build_elf(tmp_path, "p9.elf", notes))
    assert "p9.elf: only kernels for the generic loader or Linux kernels" in msg and "Plan9" in msg
    # generic loader alone is enough
    notes = linux_like_notes(GUEST_OS=("str", "Plan9"))
    assert load_kernel(build_elf(tmp_path, "p9b.elf", notes)).guest_os == "Plan9"


def test_required_feature_not_supported(tmp_path: Path) -> None:
    notes = linux_like_notes(FEATURES=("str", "!writable_page_tables|!auto_translated_physmap|!dom0|pae_pgdir_above_4gb"))
    p = build_elf(tmp_path, "needy.elf", notes)
    assert err(p) == ("needy.elf: kernel requires Xen features that pyxen does not support: "
                      "auto_translated_physmap, dom0")
    k = load_kernel(p, supported_features=DEFAULT_SUPPORTED_FEATURES | {"auto_translated_physmap", "dom0"})
    assert k.features_required == {"writable_page_tables", "auto_translated_physmap", "dom0"}
    # unknown required names are reported by name too
    p = build_elf(tmp_path, "future.elf", linux_like_notes(FEATURES=("str", "!teleportation")))
    assert err(p).endswith("pyxen does not support: teleportation")
    assert err(p, supported_features=set()).endswith("teleportation")


def test_segment_below_virt_base(tmp_path: Path) -> None:
    # p_paddr holds virtual addresses but the (modern) notes give no PADDR_OFFSET:
    # VIRT_BASE + p_paddr wraps around below VIRT_BASE.
    p = build_elf(tmp_path, "wrap.elf", linux_like_notes(), lma_offset=0)
    msg = err(p)
    assert msg.startswith("wrap.elf: PT_LOAD segment 0 would load at 0xffffffff00100000")
    assert "below VIRT_BASE 0xffffffff80000000" in msg


def test_segment_below_virt_base_by_paddr_offset(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "low.elf", linux_like_notes(PADDR_OFFSET=("quad", "0x200000")))
    assert "below VIRT_BASE" in err(p)


def test_overlapping_segments(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "overlap.elf"
    p.write_bytes(linux_elf.read_bytes())
    first, second = load_indexes(p)
    patch_phdr(p, second, paddr=PHYS_START + 0x1000)
    msg = err(p)
    assert msg.startswith("overlap.elf: PT_LOAD segments overlap: [0xffffffff80100000, 0xffffffff80102000)")


def test_segment_data_beyond_file(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "trunc.elf"
    p.write_bytes(linux_elf.read_bytes())
    i = load_indexes(p)[0]
    patch_phdr(p, i, filesz=0x100000, memsz=0x100000)
    assert "trunc.elf: PT_LOAD segment 0" in err(p) and "extends past the end of the file" in err(p)


def test_filesz_larger_than_memsz(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "fm.elf"
    p.write_bytes(linux_elf.read_bytes())
    patch_phdr(p, load_indexes(p)[0], memsz=0x10)
    assert "exceeds memory size" in err(p)


def test_entry_outside_image(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "far.elf", linux_like_notes(ENTRY=("quad", "0xffffffff90000000")))
    msg = err(p)
    assert msg == ("far.elf: entry point 0xffffffff90000000 is outside the kernel image "
                   "[0xffffffff80100000, 0xffffffff80105000)")


def test_hypercall_page_outside_image(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "hc.elf", linux_like_notes(HYPERCALL_PAGE=("quad", "0xffffffff90000000")))
    assert "hc.elf: hypercall page 0xffffffff90000000" in err(p)


def test_init_p2m_inside_image(tmp_path: Path) -> None:
    p = build_elf(tmp_path, "p2m.elf", linux_like_notes(INIT_P2M=("quad", "hypercall_page")))
    assert "p2m.elf: INIT_P2M" in err(p) and "inside the kernel image" in err(p)


def test_truncated_note(tmp_path: Path, linux_elf: Path) -> None:
    p = tmp_path / "badnote.elf"
    data = bytearray(linux_elf.read_bytes())
    note = next(ph for ph in phdrs(bytes(data)) if ph["type"] == 4)
    struct.pack_into("<I", data, note["offset"] + 4, 0x10000)  # descsz of the first note
    p.write_bytes(bytes(data))
    assert err(p).startswith("badnote.elf: corrupt ELF notes in PT_NOTE segment")


# --- robustness ---------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_elf_raises_only_kernel_image_error(linux_elf: Path, data) -> None:
    blob = bytearray(linux_elf.read_bytes())
    # mutate the headers, program/section headers and notes: where the parser looks
    hot = [(0, 64), (64, 64 + 4 * 56)]
    note = next(ph for ph in phdrs(bytes(blob)) if ph["type"] == 4)
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
        assert k.kernel_start <= k.entry < k.kernel_end
