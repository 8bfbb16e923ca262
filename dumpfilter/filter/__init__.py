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
    if not level & KERNEL_LEVEL_BITS:
        return
    if vi is None:
        raise DumpfilterError(
            f"{src.path} has no VMCOREINFO note, which dump level {level} needs to find struct pages "
            "(levels 0 and 1 work without it; give one with -i FILE)"
        )
    try:
        from .classify import exclude_pages  # type: ignore[import-not-found]
    except ImportError:
        raise DumpfilterError(
            f"dump level {level}: page classification (levels 2, 4, 8, 16) is not available in this build yet"
        ) from None
    exclude_pages(src, vi, bitmap2, level, stats)
