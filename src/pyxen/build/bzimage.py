"""Linux x86 bzImage: find the compressed kernel payload and decompress it.

A bzImage starts with a real-mode setup area followed by the protected-mode
part, which embeds the compressed ``vmlinux`` (an ELF file, possibly followed
by relocation data).  Since boot protocol 2.08 the setup header says where
that payload is, so a PV domain builder can take the ELF out without running
any of the decompressor code:

=========  ======  =====================================================
offset     size    field
=========  ======  =====================================================
0x1f1      1       setup_sects: 512-byte setup sectors after the boot
                   sector (0 means 4)
0x202      4       header magic ``HdrS``
0x206      2       boot protocol version (major << 8 | minor)
0x248      4       payload_offset, relative to the protected-mode code,
                   which starts at ``(setup_sects + 1) * 512``
0x24c      4       payload_length
=========  ======  =====================================================

The compression format is recognised by its magic bytes.  The kernel build
appends the 4-byte uncompressed size after most payloads; every decoder here
tolerates that trailer.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass

from .errors import KernelImageError

__all__ = [
    "SetupHeader",
    "is_bzimage",
    "read_setup_header",
    "detect_compression",
    "decompress",
    "extract_payload",
    "extract_payload_with_format",
    "LZ4_LEGACY_MAGIC",
    "LZ4_LEGACY_BLOCK_MAX",
]

HDRS_MAGIC = b"HdrS"
MIN_PROTOCOL = 0x0208
_SETUP_SECTS = 0x1F1
_HEADER = 0x202
_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248
_PAYLOAD_LENGTH = 0x24C
_MIN_LEN = 0x250

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
#: Uncompressed size of every block of an LZ4 legacy frame except the last.
LZ4_LEGACY_BLOCK_MAX = 8 << 20

# (magic, format name), longest magics first where they share a prefix.
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (LZ4_LEGACY_MAGIC, "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x89LZO", "lzo"),
)


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the x86 boot setup header that locate the payload."""

    setup_sects: int
    protocol: int
    payload_offset: int
    payload_length: int

    @property
    def protected_mode_start(self) -> int:
        """File offset of the protected-mode kernel code."""
        return (self.setup_sects + 1) * 512

    @property
    def protocol_str(self) -> str:
        return f"{self.protocol >> 8}.{self.protocol & 0xFF:02d}"


def is_bzimage(data: bytes) -> bool:
    """True when *data* carries an x86 boot setup header ("HdrS" at 0x202)."""
    return len(data) >= _HEADER + 4 and data[_HEADER : _HEADER + 4] == HDRS_MAGIC


def read_setup_header(data: bytes, name: str) -> SetupHeader:
    """Parse the setup header of a bzImage; *name* is used in error messages."""
    if not is_bzimage(data):
        raise KernelImageError(name, "not a bzImage (no 'HdrS' setup header at 0x202)")
    if len(data) < _MIN_LEN:
        raise KernelImageError(name, f"bzImage truncated: {len(data)} bytes, setup header incomplete")
    setup_sects = data[_SETUP_SECTS] or 4
    (protocol,) = struct.unpack_from("<H", data, _VERSION)
    offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    hdr = SetupHeader(setup_sects, protocol, offset, length)
    if protocol < MIN_PROTOCOL:
        raise KernelImageError(
            name,
            f"bzImage boot protocol {hdr.protocol_str} is too old: payload_offset/payload_length "
            "need protocol 2.08 or later",
        )
    return hdr


def detect_compression(payload: bytes) -> str | None:
    """Name of the compression format of *payload* ("gzip", "xz", ...), or None."""
    for magic, fmt in _MAGICS:
        if payload.startswith(magic):
            return fmt
    return None


def _lz4_legacy(payload: bytes, name: str) -> bytes:
    try:
        import lz4.block
    except ImportError as e:  # pragma: no cover - dependency is declared
        raise KernelImageError(name, "LZ4 payload but the 'lz4' Python package is missing") from e

    out = bytearray()
    pos = 0
    end = len(payload)
    if not payload.startswith(LZ4_LEGACY_MAGIC):
        raise KernelImageError(name, "LZ4 payload does not start with the legacy frame magic")
    nblocks = 0
    while True:
        remaining = end - pos
        if remaining == 0:
            break
        if remaining < 4:
            # Trailing padding: nothing after it can be a block.
            break
        word = payload[pos : pos + 4]
        if word == LZ4_LEGACY_MAGIC:
            # Start of (another) legacy frame: the kernel's decoder skips it.
            pos += 4
            continue
        if remaining == 4 and nblocks:
            # The build appends the uncompressed size (32-bit LE) to the payload.
            break
        (size,) = struct.unpack("<I", word)
        pos += 4
        if size == 0:
            break
        if size > end - pos:
            raise KernelImageError(
                name,
                f"corrupt lz4 payload: block {nblocks} claims {size} bytes at offset {pos:#x}, "
                f"only {end - pos} left",
            )
        try:
            out += lz4.block.decompress(payload[pos : pos + size], uncompressed_size=LZ4_LEGACY_BLOCK_MAX)
        except Exception as e:
            raise KernelImageError(name, f"corrupt lz4 payload: block {nblocks} at offset {pos:#x}: {e}") from e
        pos += size
        nblocks += 1
    if not nblocks:
        raise KernelImageError(name, "corrupt lz4 payload: no blocks after the frame magic")
    return bytes(out)


def _stream(decomp, payload: bytes, fmt: str, name: str) -> bytes:
    """Run a stdlib-style decompressor object; trailing data after the stream is ignored."""
    try:
        out = decomp.decompress(payload)
    except Exception as e:
        raise KernelImageError(name, f"corrupt {fmt} payload: {e}") from e
    if not decomp.eof:
        raise KernelImageError(name, f"corrupt {fmt} payload: compressed stream is truncated")
    return out


def _zstd(payload: bytes, name: str) -> bytes:
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - dependency is declared
        raise KernelImageError(name, "zstd payload but the 'zstandard' Python package is missing") from e
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    dobj = dctx.decompressobj()
    try:
        out = dobj.decompress(payload)
    except zstandard.ZstdError as e:
        raise KernelImageError(name, f"corrupt zstd payload: {e}") from e
    if not dobj.eof:
        raise KernelImageError(name, "corrupt zstd payload: compressed stream is truncated")
    return out


def decompress(payload: bytes, name: str) -> tuple[str, bytes]:
    """Decompress a bzImage payload; returns ``(format, data)``."""
    fmt = detect_compression(payload)
    if fmt is None:
        head = payload[:6].hex(" ")
        raise KernelImageError(name, f"unknown bzImage payload compression (first bytes: {head})")
    if fmt == "gzip":
        return fmt, _stream(zlib.decompressobj(16 + zlib.MAX_WBITS), payload, fmt, name)
    if fmt == "xz":
        return fmt, _stream(lzma.LZMADecompressor(lzma.FORMAT_XZ), payload, fmt, name)
    if fmt == "lzma":
        return fmt, _stream(lzma.LZMADecompressor(lzma.FORMAT_ALONE), payload, fmt, name)
    if fmt == "bzip2":
        return fmt, _stream(bz2.BZ2Decompressor(), payload, fmt, name)
    if fmt == "lz4":
        return fmt, _lz4_legacy(payload, name)
    if fmt == "zstd":
        return fmt, _zstd(payload, name)
    raise KernelImageError(name, f"bzImage payload is {fmt.upper()}-compressed, which pyxen cannot decompress")


def extract_payload_with_format(data: bytes, name: str) -> tuple[str, bytes]:
    """Locate and decompress the payload of the bzImage *data*; returns ``(format, data)``."""
    hdr = read_setup_header(data, name)
    start = hdr.protected_mode_start + hdr.payload_offset
    stop = start + hdr.payload_length
    if hdr.payload_length == 0:
        raise KernelImageError(name, "bzImage has an empty payload (payload_length is 0)")
    if stop > len(data):
        raise KernelImageError(
            name,
            f"bzImage truncated: payload [{start:#x}, {stop:#x}) extends past the end of the "
            f"{len(data):#x}-byte file",
        )
    return decompress(data[start:stop], name)


def extract_payload(data: bytes, name: str) -> bytes:
    """Return the decompressed kernel (normally an ELF ``vmlinux``) inside a bzImage."""
    return extract_payload_with_format(data, name)[1]
