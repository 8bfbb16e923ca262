"""On-disk byte layouts shared by readers and writers (formats-cli.md §1, §2).

We write the LP64 little-endian ABI (x86_64, arm64): header 464 bytes, sub header 104 bytes,
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

# status bits (§1.3)
DUMP_DH_COMPRESSED_ZLIB = 0x01
DUMP_DH_COMPRESSED_LZO = 0x02
DUMP_DH_COMPRESSED_SNAPPY = 0x04
DUMP_DH_COMPRESSED_INCOMPLETE = 0x08
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

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
