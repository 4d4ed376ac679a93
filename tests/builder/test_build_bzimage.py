"""bzImage payload extraction with synthesized images for every compressor."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtest_helpers import (
    FORMATS,
    build_elf,
    compress,
    linux_like_notes,
    lz4_legacy_compress,
    make_bzimage,
)
from pyxen.build import bzimage
from pyxen.build.elf import load_kernel
from pyxen.build.errors import KernelImageError


def sample(n: int, seed: int = 1) -> bytes:
    """Compressible but not trivial data."""
    rnd = random.Random(seed)
    words = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 12))) for _ in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


@pytest.fixture(scope="module")
def elf_kernel(tmp_path_factory) -> Path:
    return build_elf(tmp_path_factory.mktemp("bz"), "vmlinux", linux_like_notes())


@pytest.mark.parametrize("fmt", FORMATS)
def test_extract_every_format(fmt: str) -> None:
    data = sample(300_000)
    image = make_bzimage(compress(fmt, data))
    assert bzimage.detect_compression(compress(fmt, data)) == fmt
    assert bzimage.extract_payload(image, "vmlinuz") == data
    assert bzimage.extract_payload_with_format(image, "vmlinuz") == (fmt, data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_kernel_from_bzimage(fmt: str, elf_kernel: Path, tmp_path: Path) -> None:
    # The real payload is vmlinux followed by relocation data.
    elf = elf_kernel.read_bytes() + b"\xaa" * 1000
    bz = tmp_path / f"vmlinuz-{fmt}"
    bz.write_bytes(make_bzimage(compress(fmt, elf)))
    direct = load_kernel(elf_kernel)
    k = load_kernel(bz)
    assert k.payload_format == fmt
    assert k.path == bz
    assert k.entry == direct.entry and k.virt_base == direct.virt_base
    assert k.hypercall_page == direct.hypercall_page
    assert [(s.vaddr, s.data, s.memsz) for s in k.segments] == [(s.vaddr, s.data, s.memsz) for s in direct.segments]


def test_setup_sects_zero_means_four() -> None:
    data = sample(5000)
    image = make_bzimage(compress("gzip", data), setup_sects=0)
    hdr = bzimage.read_setup_header(image, "x")
    assert hdr.setup_sects == 4 and hdr.protected_mode_start == 5 * 512
    assert bzimage.extract_payload(image, "x") == data


def test_lz4_multiple_blocks() -> None:
    data = os.urandom(1 << 20) * 9 + b"tail"  # > 8 MiB: two blocks of the legacy frame
    payload = compress("lz4", data)
    nblocks = 0
    pos = 4
    while pos + 4 < len(payload):
        (n,) = struct.unpack_from("<I", payload, pos)
        pos += 4 + n
        nblocks += 1
    assert nblocks == 2
    assert bzimage.extract_payload(make_bzimage(payload), "big") == data


def test_lz4_concatenated_frames_and_no_trailer() -> None:
    a, b = sample(70_000, 2), sample(50_000, 3)
    payload = lz4_legacy_compress(a) + lz4_legacy_compress(b)
    assert bzimage.extract_payload(make_bzimage(payload), "cat") == a + b


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000), st.integers(16, 4096))
def test_lz4_legacy_round_trip(data: bytes, block: int) -> None:
    if not data:
        return
    payload = lz4_legacy_compress(data, block=block) + struct.pack("<I", len(data))
    assert bzimage.decompress(payload, "h") == ("lz4", data)


def test_gzip_with_trailing_bytes() -> None:
    data = sample(10_000)
    image = make_bzimage(compress("gzip", data) + b"\x10\x27\0\0")
    assert bzimage.extract_payload(image, "x") == data


# --- errors -----------------------------------------------------------


def message(image: bytes, name: str = "vmlinuz") -> str:
    with pytest.raises(KernelImageError) as ei:
        bzimage.extract_payload(image, name)
    return str(ei.value)


def test_unknown_compression() -> None:
    msg = message(make_bzimage(b"\x00\x11\x22\x33\x44\x55 not compressed"))
    assert msg == "vmlinuz: unknown bzImage payload compression (first bytes: 00 11 22 33 44 55)"


def test_lzo_is_reported_as_unsupported() -> None:
    msg = message(make_bzimage(b"\x89LZO\x00\r\n\x1a\n" + bytes(100)))
    assert msg == "vmlinuz: bzImage payload is LZO-compressed, which pyxen cannot decompress"


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_payload(fmt: str) -> None:
    data = os.urandom(200_000)
    payload = compress(fmt, data)
    msg = message(make_bzimage(payload[: len(payload) // 2]), "cut")
    assert msg.startswith(f"cut: corrupt {fmt} payload"), msg


@pytest.mark.parametrize("fmt", ["gzip", "xz", "bzip2", "zstd", "lz4"])
def test_corrupted_payload(fmt: str) -> None:
    data = sample(100_000)
    payload = bytearray(compress(fmt, data))
    for i in range(20, min(len(payload) - 8, 2000), 7):
        payload[i] ^= 0x5A
    with pytest.raises(KernelImageError) as ei:
        out = bzimage.extract_payload(make_bzimage(bytes(payload)), "bad")
        # lz4 blocks carry no checksum: a decode may "succeed" with garbage
        assert out != data
        raise KernelImageError("bad", "corrupt (undetected by the format)")
    assert str(ei.value).startswith("bad: corrupt")


def test_old_boot_protocol() -> None:
    msg = message(make_bzimage(compress("gzip", b"x"), protocol=0x0206), "old")
    assert msg.startswith("old: bzImage boot protocol 2.06 is too old")


def test_payload_past_end() -> None:
    image = make_bzimage(compress("gzip", sample(1000)), tail=b"")
    assert "extends past the end" in message(image[:-10])


def test_empty_payload() -> None:
    assert "empty payload" in message(make_bzimage(b""))


def test_not_a_bzimage() -> None:
    assert message(b"\0" * 4096) == "vmlinuz: not a bzImage (no 'HdrS' setup header at 0x202)"
    assert not bzimage.is_bzimage(b"\x7fELF")


def test_bzimage_without_elf_inside(tmp_path: Path) -> None:
    p = tmp_path / "vmlinuz"
    p.write_bytes(make_bzimage(compress("xz", b"MZ not an ELF" * 100)))
    with pytest.raises(KernelImageError) as ei:
        load_kernel(p)
    assert str(ei.value) == "vmlinuz: bzImage payload (xz) does not contain an ELF kernel"


MAGICS = [b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"BZh", b"\x02\x21\x4c\x18", b"\x28\xb5\x2f\xfd", b""]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MAGICS), st.binary(max_size=200))
def test_garbage_payloads_raise_kernel_image_error(magic: bytes, junk: bytes) -> None:
    try:
        bzimage.extract_payload(make_bzimage(magic + junk), "junk")
    except KernelImageError as e:
        assert str(e).startswith("junk: ")
