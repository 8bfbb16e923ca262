"""The 64-bit Arm kernel ``Image`` (the kernel's booting.rst, "Call the kernel image"), checked the way a
loader must, and unpacked from what distributions install as ``vmlinuz``: gzip (Debian's 6.1) or an
EFI zboot PE file (``MZ`` + ``zimg``, drivers/firmware/efi/libstub/zboot-header.S) around a gzip, zstd,
xz or lzma payload; a plain Image is used as is.

Header, 64 bytes little-endian::

    u32 code0, code1; u64 text_offset; u64 image_size; u64 flags; u64 res2, res3, res4;
    u32 magic = 0x644d5241 ("ARM\\x64") at offset 56; u32 res5 (PE header offset)

flags: bit 0 big-endian kernel, bits 1-2 page size (0 unknown, 1 4K, 2 16K, 3 64K), bit 3 the image may
be placed anywhere (else as close to the start of RAM as possible). ``image_size`` is the memory the
kernel needs from its load address (text, data, BSS); 0 means a kernel before 3.17, loaded at
``text_offset`` 0x80000 with its size unknown.
"""
from __future__ import annotations

import lzma
import struct
import zlib
from pathlib import Path

from ..errors import DumpfilterError
from ..sizes import format_size

MAGIC = 0x644D5241
_HEADER = struct.Struct("<IIQQQQQQII")
MAX_IMAGE = 512 << 20  # refuse to unpack anything bigger
PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}
COMMAND_LINE_SIZE = 2048  # the kernel's limit for bootargs


class ImageError(DumpfilterError):
    """Not a kernel Image this loader can use."""


class KernelImage:
    """An unpacked kernel Image and the header facts a loader needs."""

    format = "Image"

    def __init__(self, path: Path, data: bytes, packing: str) -> None:
        self.path = path
        self.data = data
        self.packing = packing  # "none", "gzip", "EFI zboot (gzip)" ...
        self.file_size = path.stat().st_size
        (_c0, _c1, self.text_offset, image_size, self.flags, _r2, _r3, _r4, magic, _r5) = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ImageError(f"{path}: not a kernel Image (no \"ARM\\x64\" magic at offset 56)")
        if self.flags & 1:
            raise ImageError(f"{path}: a big-endian kernel; this loader only loads little-endian ones")
        if image_size == 0:  # before 3.17: text_offset unreliable, size unknown
            self.text_offset = 0x80000
            image_size = len(data)
        self.image_size = max(image_size, len(data))
        self.page_size = PAGE_SIZES[(self.flags >> 1) & 3]
        self.anywhere = bool(self.flags & 8)

    @property
    def init_size(self) -> int:
        return self.image_size

    @property
    def version_string(self) -> str:
        i = self.data.find(b"Linux version ")
        if i < 0:
            return ""
        end = self.data.find(b"\n", i, i + 512)
        raw = self.data[i : end if end > 0 else i + 256].split(b"\0", 1)[0]
        return raw.decode("ascii", "replace").strip()

    def max_cmdline(self, crash: bool) -> int:
        return COMMAND_LINE_SIZE - 1

    def describe(self) -> str:
        page = f", {self.page_size // 1024}K pages" if self.page_size else ""
        return (f"{self.path} (Image{'' if self.packing == 'none' else ' unpacked from ' + self.packing}, "
                f"text_offset {self.text_offset:#x}, needs {format_size(self.image_size)}{page}, "
                f"{self.file_size} bytes)")


def _inflate(data: bytes, method: str, what: str) -> bytes:
    try:
        if method == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, MAX_IMAGE + 1)
        elif method in ("xzkern", "xz", "lzma"):
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if method != "lzma" else lzma.FORMAT_ALONE).decompress(
                data, MAX_IMAGE + 1)
        elif method in ("zstd22", "zstd"):
            out = _zstd(data)
        else:
            raise ImageError(f"{what}: payload compressed with {method!r}, which this loader does not unpack")
    except (OSError, zlib.error, lzma.LZMAError, EOFError) as e:
        raise ImageError(f"{what}: the {method} payload does not unpack: {e}") from None
    if len(out) > MAX_IMAGE:
        raise ImageError(f"{what}: unpacks to more than {format_size(MAX_IMAGE)}")
    return out


def _zstd(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise ImageError("a zstd-compressed kernel needs the zstandard module") from None
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def unpack(data: bytes, what: str) -> tuple[bytes, str]:
    """(the Image inside ``data``, how it was packed)."""
    if len(data) >= 64 and struct.unpack_from("<I", data, 56)[0] == MAGIC:
        return data, "none"
    if data[:2] == b"\x1f\x8b":
        return _inflate(data, "gzip", what), "gzip"
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        off, size = struct.unpack_from("<II", data, 8)
        method = data[24:32].split(b"\0", 1)[0].decode("ascii", "replace")
        if off + size > len(data) or size == 0:
            raise ImageError(f"{what}: EFI zboot payload ({off:#x}+{size:#x}) lies outside the file")
        return _inflate(data[off : off + size], method, what), f"EFI zboot ({method})"
    raise ImageError(f"{what}: neither a kernel Image nor a gzip or EFI zboot vmlinuz")


def probe(path: str | Path) -> KernelImage:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read the kernel: {e.strerror}") from None
    image, packing = unpack(data, str(p))
    if len(image) < 64:
        raise ImageError(f"{p}: too short for a kernel Image")
    return KernelImage(p, image, packing)


__all__ = ["ImageError", "KernelImage", "probe", "unpack"]
