"""Per section: read the struct page block, classify it in one Cython call, clear the 2nd bitmap.

filtering.md §5: sections in ascending order; inside a section an excluded compound/buddy range is
skipped as a whole; every section restarts at its own first pfn.
"""
from __future__ import annotations

from array import array

from .._speedups.classify import classify_section, tail_pointer_stats
from ..bitmap import Bitmap
from ..errors import KernelDataError, VmcoreinfoError
from ..kernel.arch import for_machine
from ..kernel.memmap import MemMap, Section, find_mem_map
from ..kernel.pagetypes import PageTypes, derive
from ..kernel.vmcoreinfo import VmcoreInfo
from ..source.base import DumpSource
from ..stats import Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ..report import Log



def check_tail_pointers(buf, pfn_start: int, mem_map: int, sp: int, off_ch: int, kva_start: int) -> None:
    """Refuse struct pages that are evidently not struct pages (random bytes, a wrong vmemmap mapping).

    In a real kernel bit 0 of ``page.compound_head`` is set only on tail pages, and then the rest is
    the address of the head's struct page: an 8-byte aligned kernel address (at least ``kva_start``, the
    Arch's ``Mmu.kernel_va_start``); with SPARSEMEM_VMEMMAP a little before this struct page, but
    SPARSEMEM without vmemmap may put a gigantic page's head into another section's mem_map, so only
    the weaker test is made). makedumpfile trusts the data blindly; so do we for a few bad entries (a
    corrupted struct page must not cost the dump), but when 1/16 or more of a section's struct pages
    are "tail pages" pointing at no kernel address, classifying them would produce garbage: stop
    with an error naming the section and the key.
    """
    n, tails, bad, first, value = tail_pointer_stats(buf, sp, off_ch, kva_start)
    if tails < 64 or tails * 16 < n:
        return
    if bad >= 64 and bad * 16 >= n:
        raise KernelDataError(
            f"the struct pages of pfns {pfn_start:#x}-{pfn_start + n:#x} at {mem_map:#x} are not plausible: "
            f"{bad} of {n} have bit 0 of OFFSET(page.compound_head)={off_ch} set without pointing at "
            f"a struct page (pfn {pfn_start + first:#x}: {value:#x})"
        )


class KernelView:
    """Everything the classifier needs from the kernel of one dump, found once."""

    def __init__(self, src: DumpSource, vi: VmcoreInfo, log: Log | None = None, level: int = 31) -> None:
        self.src, self.vi = src, vi
        self.arch = for_machine(src.elf_machine)
        self.mmu = self.arch.mmu(src, vi)
        self.types: PageTypes = derive(vi)
        ps = src.page_size
        self.memmap: MemMap = find_mem_map(
            vi, self.mmu, src.max_mapnr, ps.bit_length() - 1, self.mmu.page_offset, self.mmu.max_physmem_bits,
            self.mmu.section_size_bits, data=src.data_ranges(),
        )
        if log is not None:
            for w in self.memmap.warnings:
                log.msg(f"warning: {w}")
        if log is not None and log.debugging:
            log.debug(f"machine           : {self.arch.name}")
            for line in self.mmu.describe():
                log.debug(line)
            mm = self.memmap
            with_map = [sec for sec in mm.sections if sec.mem_map]
            log.debug(f"mem_map           : {mm.model}, {len(with_map)} of {len(mm.sections)} sections have a mem_map, "
                      f"SIZE(page)={mm.page_struct_size}")
            if with_map:
                log.debug(f"                    pfns {with_map[0].pfn_start:#x}-{with_map[-1].pfn_end:#x}, "
                          f"first at {with_map[0].mem_map:#x}")
            for line in self.types.describe(level):
                log.debug(line)


def pass_needed(level: int, vi: VmcoreInfo | None) -> bool:
    """makedumpfile runs the classification pass for 2/4/8/16, or whenever PG_hwpoison is exported."""
    if level & (2 | 4 | 8 | 16):
        return True
    return vi is not None and "PG_hwpoison" in vi.number


def exclude_pages(src: DumpSource, vi: VmcoreInfo, bitmap2: Bitmap, level: int, stats: Stats,
                  kv: KernelView | None = None, base: int = 0, pool: Executor | None = None,
                  workers: int = 1) -> KernelView:
    """Clear excluded pfns from ``bitmap2``, which covers pfns [base, base + bitmap2.nbits).

    With ``pool`` (``--num-threads``), the cycle's sections are classified in ``workers`` contiguous
    groups on its threads (the classifier releases the GIL). The result does not depend on the grouping: every
    section clears only bits of its own pfns, except compound pages that reach into later sections,
    which are naturally aligned and clear whole bytes, and bits are only ever cleared."""
    kv = kv or KernelView(src, vi)
    if (level & 16) and not kv.types.buddy_available:
        raise VmcoreinfoError(
            "dump level 16 needs NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE), OFFSET(page._mapcount) and OFFSET(page.private) "
            "(free-list walking for old kernels is not implemented)"
        )
    nbits = bitmap2.nbits
    sections = [s for s in kv.memmap.overlapping(base, base + nbits) if s.mem_map]
    if pool is not None and workers > 1 and len(sections) > 1:
        step = -(-len(sections) // workers)
        groups = [sections[i : i + step] for i in range(0, len(sections), step)]
        results = list(pool.map(lambda g: _classify_group(src, kv, g, level, bitmap2, base), groups))
    else:
        results = [_classify_group(src, kv, sections, level, bitmap2, base)]
    counts = [sum(r[i] for r in results) for i in range(7)]
    stats.free += counts[0]
    stats.cache += counts[1]
    stats.cache_private += counts[2]
    stats.user += counts[3]
    stats.hwpoison += counts[4]
    stats.offline += counts[5]
    if counts[6]:
        stats.seconds.setdefault("invalid_free_order_pages", float(counts[6]))
    return kv


def _classify_group(src: DumpSource, kv: KernelView, sections: list[Section], level: int, bitmap2: Bitmap,
                    base: int) -> array:
    """Classify consecutive sections into ``bitmap2``; returns their counts (classify_section's)."""
    params = kv.types.params
    sp = kv.memmap.page_struct_size
    off_ch = kv.types.get("off_compound_head")
    counts = array("q", [0] * 7)
    nbits = bitmap2.nbits
    buf_all: bytearray | None = None  # one struct page buffer, reused for every section
    for sec in sections:
        n = sec.pfn_end - sec.pfn_start
        try:
            # the struct pages of a section are usually one 2 MiB vmemmap page: mapped, not copied
            mapped = kv.mmu.view(sec.mem_map, n * sp)
            if mapped is None:
                if buf_all is None or len(buf_all) < n * sp:
                    buf_all = bytearray(n * sp)
                buf = memoryview(buf_all)[: n * sp]
                kv.mmu.read_into(sec.mem_map, buf)
            else:
                buf = mapped[0]
        except KernelDataError as e:
            raise KernelDataError(
                f"can't read the struct pages of pfns {sec.pfn_start:#x}-{sec.pfn_end:#x} at {sec.mem_map:#x}: {e}"
            ) from None
        try:
            check_tail_pointers(buf, sec.pfn_start, sec.mem_map, sp, off_ch, kv.mmu.kernel_va_start)
            classify_section(buf, sec.pfn_start, n, params, level, bitmap2.bits, nbits, counts, base)
        finally:
            if mapped is not None:
                src.release_view(mapped[0], mapped[1])
    return counts
