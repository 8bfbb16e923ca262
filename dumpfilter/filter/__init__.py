"""Dump-level filtering: which pages the 2nd bitmap keeps (filtering.md §4, §5), one cycle at a time.

Level bit 1 (zero pages) needs only page contents and is handled by the writers. Bits 2, 4, 8 and
16 need the kernel's struct page array (``classify.py``). ``CyclePlan`` produces the 1st and 2nd
bitmaps for any cycle of pfns on demand, so memory follows the cycle, not the size of the dump.
"""
from __future__ import annotations

from ..bitmap import Bitmap
from ..errors import DumpfilterError
from ..kernel.vmcoreinfo import VmcoreInfo
from ..source.base import DumpSource
from ..stats import Stats

KERNEL_LEVEL_BITS = 2 | 4 | 8 | 16
CYCLE_ALIGN = 1 << 18  # pfns: a multiple of every section, buddy block and (1 GiB) hugetlb folio


def stats_add(into: Stats, frm: Stats) -> None:
    for k in ("cache", "cache_private", "user", "free", "hwpoison", "offline"):
        setattr(into, k, getattr(into, k) + getattr(frm, k))


def cycle_pfns_for(max_mapnr: int, buffer_bytes: int) -> int:
    """Pfns per cycle for a bitmap buffer of ``buffer_bytes`` per bitmap (makedumpfile's cyclic buffer)."""
    pfns = max(CYCLE_ALIGN, buffer_bytes * 8 // CYCLE_ALIGN * CYCLE_ALIGN)
    return pfns


class CyclePlan:
    """The 1st and 2nd bitmaps of a dump, computed per cycle [start, end) on demand."""

    def __init__(self, src: DumpSource, vi: VmcoreInfo | None, level: int, cycle_pfns: int,
                 partial_last: bool) -> None:
        self.src, self.vi, self.level = src, vi, level
        self.max_mapnr = src.max_mapnr
        self.cycle_pfns = max(CYCLE_ALIGN, cycle_pfns // CYCLE_ALIGN * CYCLE_ALIGN)
        self.partial_last = partial_last
        self.cycles = [(s, min(s + self.cycle_pfns, self.max_mapnr)) for s in range(0, self.max_mapnr, self.cycle_pfns)]
        self._kv = None
        self._single: tuple[tuple[int, int], Bitmap, Stats] | None = None
        self._try_ok: bool | None = None
        self.note: str | None = None
        self._classify = self._decide_classification()

    def _decide_classification(self) -> str:
        """'no' (nothing to classify), 'try' (levels 0/1: hwpoison/offline only, best effort), 'yes'."""
        from .classify import pass_needed

        if not pass_needed(self.level, self.vi):
            return "no"
        if not self.level & KERNEL_LEVEL_BITS:
            return "try"
        if self.vi is None:
            raise DumpfilterError(
                f"{self.src.path} has no VMCOREINFO note, which dump level {self.level} needs to find struct pages "
                "(levels 0 and 1 work without it; give one with -i FILE)"
            )
        return "yes"

    def _kernel_view(self):  # noqa: ANN202
        from .classify import KernelView

        if self._kv is None:
            self._kv = KernelView(self.src, self.vi)  # type: ignore[arg-type]
        return self._kv

    def _try_works(self) -> bool:
        """Levels 0/1: makedumpfile still drops hwpoison and offline pages when PG_hwpoison is
        exported. If the kernel data can't be read anywhere, keep everything (nothing was asked for);
        decided once for all cycles, so every pass sees the same bitmaps."""
        from .classify import exclude_pages

        if self._try_ok is None:
            try:
                for start, end in self.cycles:
                    exclude_pages(self.src, self.vi, self.src.dumpable_bitmap(start=start, end=end), self.level,  # type: ignore[arg-type]
                                  Stats(), self._kernel_view(), base=start)
                self._try_ok = True
            except DumpfilterError as e:
                self.note = f"hwpoison/offline pages are not excluded: {e}"
                self._try_ok = False
        return self._try_ok

    def bitmap1(self, start: int, end: int) -> Bitmap:
        return self.src.present_bitmap(partial_last=self.partial_last, start=start, end=end)

    def bitmap2(self, start: int, end: int, stats: Stats) -> Bitmap:
        """The 2nd bitmap of the cycle; adds the excluded pages of the cycle to ``stats``.

        With a single cycle the result is kept, so the writing pass does not classify again."""
        if self._single is not None and self._single[0] == (start, end):
            cached = self._single[1]
            stats_add(stats, self._single[2])
            return cached.copy()
        st = Stats()
        bm = self._compute_bitmap2(start, end, st)
        stats_add(stats, st)
        if len(self.cycles) == 1:
            self._single = ((start, end), bm.copy(), st)
        return bm

    def _compute_bitmap2(self, start: int, end: int, stats: Stats) -> Bitmap:
        from .classify import exclude_pages

        bm = self.src.dumpable_bitmap(start=start, end=end)
        if self._classify == "no":
            return bm
        if self._classify == "try" and not self._try_works():
            return bm
        exclude_pages(self.src, self.vi, bm, self.level, stats, self._kernel_view(), base=start)  # type: ignore[arg-type]
        return bm

    def full(self, stats: Stats) -> tuple[Bitmap, Bitmap]:
        """Both bitmaps for the whole dump in one piece (ELF output and --mem-usage)."""
        return self.bitmap1(0, self.max_mapnr), self.bitmap2(0, self.max_mapnr, stats)
