"""Zero pages for the outputs that need them up front (-E: the program headers come before the data;
--mem-usage: only the counts). The kdump-compressed writer tests pages for zero while it compresses
them instead (level bit 1, filtering.md §5.10)."""
from __future__ import annotations

from .._speedups.window import WindowBuffers
from ..filter import CycleBitmaps, DumpBitmaps
from ..plan import DumpPlan
from ..stats import Stats
from .pool import map_windows


def without_zero_pages(plan: DumpPlan, stats: Stats) -> DumpBitmaps:
    """The plan's 2nd bitmaps without their all-zero pages, cycle by cycle, tested a window at a time
    in C on the --num-threads workers; their number is added to ``stats.zero``."""
    comp = plan.compression
    reader = plan.src.window_reader(plan.use_mmap)
    cycles = []
    for start, end, b1, b2 in plan.bitmaps:
        for wb in map_windows(reader, b2, start, plan.src.path, plan.page_size, comp.window, comp.threads,
                              WindowBuffers.zero_test):
            if wb.nzero:
                stats.zero += wb.nzero
                for pfn, size in zip(wb.pfns(), wb.sizes_list()):
                    if size < 0:
                        b2.clear(pfn - start)
        cycles.append(CycleBitmaps(start, end, b1, b2, len(plan.bitmaps.cycles) > 1))
    return DumpBitmaps(plan.max_mapnr, cycles, plan.bitmaps.counts)
