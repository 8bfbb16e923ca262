"""DumpPlan: everything a writer needs, decided before the first output byte."""
from __future__ import annotations


from .record import dataclass, field
from .codec import Codec
from .filter import CyclePlan
from .source.base import DumpSource


@dataclass
class DumpPlan:
    src: DumpSource
    page_size: int
    max_mapnr: int
    cycles: CyclePlan  # the 1st (memory present) and 2nd (pages to dump) bitmaps, per cycle
    num_dumpable: int  # set bits of the whole 2nd bitmap (zero pages included)
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
    use_mmap: bool = True  # --non-mmap turns it off
    warnings: list[str] = field(default_factory=list)

    @property
    def exclude_zero(self) -> bool:
        return bool(self.dump_level & 1)
