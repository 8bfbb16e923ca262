"""Counters a run accumulates; report.py prints them (formats-cli.md §5.6)."""
from __future__ import annotations

import time

from .record import asdict, dataclass, field


@dataclass
class Stats:
    max_mapnr: int = 0
    hole: int = 0  # pfns not in the 1st bitmap
    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0
    extension: int | None = None  # pages excluded by --extension plugins (None: no plugin ran)
    kept_debuggable: int = 0  # pages the level excluded that --keep-debuggable put back
    elf_excluded: int | None = None  # ELF output: pages really removed
    dumped: int = 0  # pages with data written (zero-page descriptors excluded)
    write_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    page_size: int = 4096

    @property
    def original(self) -> int:
        return self.max_mapnr - self.hole

    @property
    def excluded(self) -> int:
        return (self.zero + self.cache + self.cache_private + self.user + self.free + self.hwpoison + self.offline
                + (self.extension or 0) - self.kept_debuggable)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["original"] = self.original
        d["excluded"] = self.excluded
        d["remaining"] = self.original - self.excluded
        return d


class StageTimer:
    def __init__(self, stats: Stats, name: str) -> None:
        self.stats, self.name = stats, name

    def __enter__(self) -> StageTimer:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stats.seconds[self.name] = self.stats.seconds.get(self.name, 0.0) + time.monotonic() - self.t0
