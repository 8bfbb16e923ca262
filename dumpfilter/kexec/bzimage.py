"""The x86 boot-protocol header of a bzImage, checked the way kexec_file_load checks it.

Layout: Documentation/arch/x86/boot.rst ("The real-mode kernel header"); the checks, in order:
arch/x86/kernel/kexec-bzimage64.c ``bzImage64_probe()`` (each failure is ENOEXEC there) and the
command-line length test of ``bzImage64_load()`` (EINVAL there). Not checked: the 5-level paging
flag (XLF_5LEVEL matters only when the running kernel uses 5-level paging) and 32-bit EFI.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import DumpfilterError

# offsets into the file (boot_params.hdr starts at 0x1f1)
OFF_SETUP_SECTS = 0x1F1  # u8, 0 means 4
OFF_BOOT_FLAG = 0x1FE  # u16, 0xAA55
OFF_HEADER = 0x202  # b"HdrS"
OFF_VERSION = 0x206  # u16, boot protocol, e.g. 0x020F
OFF_KERNEL_VERSION = 0x20E  # u16, version string at this value + 0x200
OFF_LOADFLAGS = 0x211  # u8
OFF_XLOADFLAGS = 0x236  # u16 (protocol 2.12+)
OFF_CMDLINE_SIZE = 0x238  # u32 (protocol 2.06+), maximum length without the NUL
OFF_INIT_SIZE = 0x260  # u32 (protocol 2.10+), linear memory the kernel needs to start
HEADER_END = 0x270

MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
MIN_PROTOCOL = 0x020C  # kexec_file_load wants 2.12+
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
#: The kernel appends "elfcorehdr=0x<64-bit>" to a crash kernel's command line.
MAX_ELFCOREHDR_STR_LEN = 30


class ImageError(DumpfilterError):
    """Not an image kexec_file_load would accept (the kernel would answer ENOEXEC)."""


@dataclass(frozen=True)
class BzImage:
    path: Path
    file_size: int
    protocol: int  # 0x020F → 2.15
    setup_sects: int
    loadflags: int
    xloadflags: int
    cmdline_size: int
    init_size: int
    version_string: str

    @property
    def protocol_str(self) -> str:
        return f"{self.protocol >> 8}.{self.protocol & 0xFF:02d}"

    def max_cmdline(self, crash: bool) -> int:
        """Longest command line (without its NUL) the kernel accepts for this image."""
        return self.cmdline_size - (MAX_ELFCOREHDR_STR_LEN if crash else 0) - 1


def _u(buf: bytes, fmt: str, off: int) -> int:
    return int(struct.unpack_from("<" + fmt, buf, off)[0])


def probe(path: str | Path) -> BzImage:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(64 * 1024)
            size = f.seek(0, 2)
    except OSError as e:
        raise ImageError(f"{p}: cannot read the kernel: {e.strerror or e}") from None

    def bad(why: str) -> ImageError:
        return ImageError(f"{p}: not a bootable x86 bzImage kernel: {why} (kexec_file_load would fail with ENOEXEC)")

    if size < 2 * 512 or len(head) < HEADER_END:
        raise bad("file too short to be a bzImage")
    if head[OFF_HEADER : OFF_HEADER + 4] != MAGIC:
        raise bad("no 'HdrS' magic at 0x202, this is not a bzImage")
    if _u(head, "H", OFF_BOOT_FLAG) != BOOT_FLAG:
        raise bad("no boot sector signature 0xAA55 at 0x1fe")
    protocol = _u(head, "H", OFF_VERSION)
    if protocol < MIN_PROTOCOL:
        raise bad(f"boot protocol {protocol >> 8}.{protocol & 0xFF:02d} is older than the 2.12 kexec needs")
    loadflags = head[OFF_LOADFLAGS]
    if not loadflags & LOADED_HIGH:
        raise bad("a zImage (LOADED_HIGH is not set), not a bzImage")
    xloadflags = _u(head, "H", OFF_XLOADFLAGS)
    if not xloadflags & XLF_KERNEL_64:
        raise bad("not a 64-bit kernel (XLF_KERNEL_64 is not set)")
    if not xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        raise bad("XLF_CAN_BE_LOADED_ABOVE_4G is not set")
    setup_sects = head[OFF_SETUP_SECTS] or 4
    if size < (setup_sects + 1) * 512:
        raise bad("truncated: shorter than its own setup code")
    version = ""
    vptr = _u(head, "H", OFF_KERNEL_VERSION)
    if vptr:
        at = vptr + 0x200
        if at < len(head):
            raw = head[at : at + 256].split(b"\0", 1)[0]
            version = raw.decode("ascii", "replace")
    return BzImage(
        path=p,
        file_size=size,
        protocol=protocol,
        setup_sects=setup_sects,
        loadflags=loadflags,
        xloadflags=xloadflags,
        cmdline_size=_u(head, "I", OFF_CMDLINE_SIZE),
        init_size=_u(head, "I", OFF_INIT_SIZE),
        version_string=version,
    )

