"""Dump-level filtering: which pages the 2nd bitmap keeps (filtering.md §4, §5).

Level bit 1 (zero pages) needs only page contents and is handled by the writers. Bits 2, 4, 8 and
16 need the kernel's struct page array; ``apply_dump_level`` is where that classification plugs in.
"""
from __future__ import annotations

from ..bitmap import Bitmap
from ..errors import DumpfilterError
from ..kernel.vmcoreinfo import VmcoreInfo
from ..source.base import DumpSource
from ..stats import Stats

KERNEL_LEVEL_BITS = 2 | 4 | 8 | 16


def apply_dump_level(src: DumpSource, vi: VmcoreInfo | None, bitmap2: Bitmap, level: int, stats: Stats) -> None:
    """Clear cache, user and free pages from ``bitmap2`` as ``level`` asks."""
    from .classify import exclude_pages, pass_needed

    if not pass_needed(level, vi):
        return
    if not level & KERNEL_LEVEL_BITS:
        # levels 0/1: makedumpfile still drops hwpoison and offline pages when PG_hwpoison is exported;
        # if the kernel data can't be read, keep everything (nothing was asked to be excluded)
        trial, tstats = bitmap2.copy(), Stats()
        try:
            exclude_pages(src, vi, trial, level, tstats)  # type: ignore[arg-type]
        except DumpfilterError:
            return
        bitmap2.bits[:] = trial.bits
        stats.hwpoison += tstats.hwpoison
        stats.offline += tstats.offline
        return
    if vi is None:
        raise DumpfilterError(
            f"{src.path} has no VMCOREINFO note, which dump level {level} needs to find struct pages "
            "(levels 0 and 1 work without it; give one with -i FILE)"
        )
    exclude_pages(src, vi, bitmap2, level, stats)
