"""DumpPlan: everything a writer needs, decided before the first output byte."""
from __future__ import annotations

from dataclasses import dataclass, field

from .bitmap import Bitmap
from .codec import Codec
from .source.base import DumpSource


@dataclass
class DumpPlan:
    src: DumpSource
    page_size: int
    max_mapnr: int
    bitmap1: Bitmap  # memory present
    bitmap2: Bitmap  # pages to dump (zero pages still set; the writer handles them)
    dump_level: int
    codec: Codec | None
    utsname: bytes
    timestamp: tuple[int, int]
    nr_cpus: int
    phys_base: int
    note_blob: bytes
    vmcoreinfo_desc: tuple[int, int] | None  # (offset in note_blob, size)
    eraseinfo: bytes = b""
    batch_pages: int = 512
    num_threads: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def exclude_zero(self) -> bool:
        return bool(self.dump_level & 1)
