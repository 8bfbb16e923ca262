"""On-disk byte layouts shared by readers and writers (formats-cli.md §1, §2).

We write the LP64 little-endian ABI (the 64-bit machines we read): header 464 bytes, sub header 104 bytes,
page descriptors 24 bytes. The flattened framing is big-endian on every host.
"""
from __future__ import annotations

import struct

from .record import dataclass, fields

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
HEADER_VERSION = 6

# status bits (§1.3); the codec bits are the page compression flags (_speedups/flags.pxd)
DUMP_DH_COMPRESSED_INCOMPLETE = 0x08

ELF_INCOMPLETE = 0x1  # e_flags bit for an incomplete -E file (§1.9)

# disk_dump_header, LP64 (§1.2): signature, version, utsname[390], pad[6], tv_sec, tv_usec, status,
# block_size, sub_hdr_size, bitmap_blocks, max_mapnr, total_ram_blocks, device_blocks, written_blocks,
# current_cpu, nr_cpus
DISK_DUMP_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
assert DISK_DUMP_HEADER.size == 464
STATUS_OFFSET = 424

# kdump_sub_header, LP64 (§1.4)
KDUMP_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
assert KDUMP_SUB_HEADER.size == 104

PAGE_DESC = struct.Struct("<qIIQ")
assert PAGE_DESC.size == 24


def __getattr__(name: str) -> Any:
    """``DESC_DTYPE``, the numpy dtype of PAGE_DESC, for readers: built on first use so that writing a
    dump never imports numpy (its import alone costs 0.1 s)."""
    if name == "DESC_DTYPE":
        import numpy as np

        dt = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
        assert dt.itemsize == PAGE_DESC.size
        globals()["DESC_DTYPE"] = dt
        return dt
    raise AttributeError(name)

# ELF (formats-cli.md §3, filtering.md §2.1): the headers after the 16-byte e_ident, per class
# Ehdr: type machine version entry phoff shoff flags ehsize phentsize phnum shentsize shnum shstrndx
_ELF_EHDR = {64: "HHIQQQIHHHHHH", 32: "HHIIIIIHHHHHH"}
# Phdr: ELF64 type flags offset vaddr paddr filesz memsz align; ELF32 type offset vaddr paddr filesz memsz flags align
_ELF_PHDR = {64: "IIQQQQQQ", 32: "IIIIIIII"}
# Shdr: name type flags addr offset size link info addralign entsize
_ELF_SHDR = {64: "IIQQQQIIQQ", 32: "IIIIIIIIII"}
ELF_IDENT_SIZE = 16
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
ET_CORE = 4


class ElfStructs:
    """The header layouts of one ELF class and byte order; program headers in the ELF64 field order
    (type, flags, offset, vaddr, paddr, filesz, memsz, align) whatever the class."""

    def __init__(self, elf_class: int, big_endian: bool) -> None:
        end = ">" if big_endian else "<"
        self.elf_class = elf_class
        self.ehdr = struct.Struct(end + _ELF_EHDR[elf_class])
        self.phdr = struct.Struct(end + _ELF_PHDR[elf_class])
        self.shdr = struct.Struct(end + _ELF_SHDR[elf_class])

    def unpack_phdr(self, raw: bytes | memoryview, off: int) -> tuple[int, ...]:
        f = self.phdr.unpack_from(raw, off)
        return f if self.elf_class == 64 else (f[0], f[6], f[1], f[2], f[3], f[4], f[5], f[7])

    def pack_phdr(self, type_: int, flags: int, offset: int, vaddr: int, paddr: int, filesz: int, memsz: int,
                  align: int) -> bytes:
        if self.elf_class == 64:
            return self.phdr.pack(type_, flags, offset, vaddr, paddr, filesz, memsz, align)
        return self.phdr.pack(type_, offset, vaddr, paddr, filesz, memsz, flags, align)


# flattened format (§2.2), big-endian
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER = struct.Struct(">16sqq")
FLAT_HEADER_SIZE = 4096
FLAT_TYPE = 1
FLAT_VERSION = 1
FLAT_RECORD = struct.Struct(">qq")
FLAT_END = FLAT_RECORD.pack(-1, -1)


@dataclass
class DiskDumpHeader:
    signature: bytes = KDUMP_SIGNATURE
    header_version: int = HEADER_VERSION
    utsname: bytes = b"\0" * 390
    tv_sec: int = 0
    tv_usec: int = 0
    status: int = 0
    block_size: int = 4096
    sub_hdr_size: int = 1
    bitmap_blocks: int = 0
    max_mapnr: int = 0
    total_ram_blocks: int = 0
    device_blocks: int = 0
    written_blocks: int = 0
    current_cpu: int = 0
    nr_cpus: int = 0

    def pack(self) -> bytes:
        return DISK_DUMP_HEADER.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, raw: bytes) -> DiskDumpHeader:
        return cls(*DISK_DUMP_HEADER.unpack_from(raw))


@dataclass
class KdumpSubHeader:
    phys_base: int = 0
    dump_level: int = 0
    split: int = 0
    start_pfn: int = 0
    end_pfn: int = 0
    offset_vmcoreinfo: int = 0
    size_vmcoreinfo: int = 0
    offset_note: int = 0
    size_note: int = 0
    offset_eraseinfo: int = 0
    size_eraseinfo: int = 0
    start_pfn_64: int = 0
    end_pfn_64: int = 0
    max_mapnr_64: int = 0

    def pack(self) -> bytes:
        return KDUMP_SUB_HEADER.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, raw: bytes) -> KdumpSubHeader:
        return cls(*KDUMP_SUB_HEADER.unpack_from(raw))
