"""x86_64 address facts needed before the page-table walk exists (filtering.md §3.3).

Kernel text and data live at __START_KERNEL_map + (paddr - phys_base); that is all the header
(phys_base) and ``init_uts_ns`` need. The full walk from init_top_pgt comes with the filter.
"""
from __future__ import annotations

from ...source.base import DumpSource
from ..vmcoreinfo import VmcoreInfo

START_KERNEL_MAP = 0xFFFFFFFF80000000
EM_X86_64 = 62


def phys_base(src: DumpSource, vi: VmcoreInfo | None) -> int:
    """NUMBER(phys_base) from VMCOREINFO; else derived from the kernel-text PT_LOAD; else 0."""
    if vi is not None and "phys_base" in vi.number:
        return vi.number["phys_base"] & ((1 << 64) - 1)
    for seg in getattr(src, "loads", []):
        if seg.vaddr >= START_KERNEL_MAP:
            return (seg.paddr - (seg.vaddr - START_KERNEL_MAP)) & ((1 << 64) - 1)
    return 0


def kernel_text_to_phys(vaddr: int, pbase: int) -> int | None:
    if vaddr >= START_KERNEL_MAP:
        return (vaddr - START_KERNEL_MAP + pbase) & ((1 << 64) - 1)
    return None
