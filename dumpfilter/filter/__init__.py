"""Dump-level filtering: which pages the 2nd bitmap keeps (filtering.md §4, §5), one cycle at a time.

Level bit 1 (zero pages) needs only page contents and is handled while compressing. Bits 2, 4, 8 and
16 need the kernel's struct page array (``classify.py``). ``filter_dump`` is the planning pass: it
builds the 1st and 2nd bitmaps of each cycle once, counts what each level bit excluded, and keeps the
bitmaps (compressed when there is more than one cycle), so the writers never classify again and memory
follows the cycle, not the size of the dump.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator

from ..bitmap import Bitmap
from ..errors import DumpfilterError
from ..kernel.vmcoreinfo import VmcoreInfo
from ..source.base import DumpSource
from ..stats import Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ..report import Log

KERNEL_LEVEL_BITS = 2 | 4 | 8 | 16
CYCLE_ALIGN = 1 << 18  # pfns: a multiple of every section, buddy block and (1 GiB) hugetlb folio
COUNTS = ("cache", "cache_private", "user", "free", "hwpoison", "offline")


def cycle_pfns_for(max_mapnr: int, buffer_bytes: int) -> int:
    """Pfns per cycle for a bitmap buffer of ``buffer_bytes`` per bitmap (makedumpfile's cyclic buffer)."""
    return max(CYCLE_ALIGN, buffer_bytes * 8 // CYCLE_ALIGN * CYCLE_ALIGN)


class CycleBitmaps:
    """Both bitmaps of one cycle [start, end), kept packed (and zlib-compressed in multi-cycle dumps)."""

    __slots__ = ("start", "end", "present", "dumpable", "_b1", "_b2", "_packed")

    def __init__(self, start: int, end: int, b1: Bitmap, b2: Bitmap, pack: bool) -> None:
        self.start, self.end = start, end
        self.present = b1.count()
        self.dumpable = b2.count()
        self._packed = pack
        self._b1: bytes | None = None
        self._b2: bytes | None = None
        # a cycle with no memory (a hole in the physical address space, which a sparse layout may make
        # most of the cycles) keeps nothing: packing and unpacking its zeros cost more than the rest
        if self.present or self.dumpable:
            raw1, raw2 = b1.tobytes(), b2.tobytes()
            self._b1 = zlib.compress(raw1, 1) if pack else raw1
            self._b2 = zlib.compress(raw2, 1) if pack else raw2

    @classmethod
    def empty(cls, start: int, end: int, pack: bool) -> CycleBitmaps:
        """A cycle without memory, made without building its bitmaps."""
        c = cls.__new__(cls)
        c.start, c.end, c.present, c.dumpable, c._packed, c._b1, c._b2 = start, end, 0, 0, pack, None, None
        return c

    def bitmaps(self) -> tuple[Bitmap, Bitmap]:
        n = self.end - self.start
        if self._b1 is None or self._b2 is None:
            return Bitmap(n), Bitmap(n)
        unpack = zlib.decompress if self._packed else bytes
        return Bitmap.from_bytes(n, unpack(self._b1)), Bitmap.from_bytes(n, unpack(self._b2))


RUNS_CHUNK = 1 << 16  # bits of a 2nd bitmap searched for runs per call (at most 32768 runs in memory)


class DumpBitmaps:
    """The 1st (memory present) and 2nd (pages to dump) bitmaps of a whole dump, per cycle."""

    def __init__(self, max_mapnr: int, cycles: list[CycleBitmaps], counts: Stats) -> None:
        self.max_mapnr = max_mapnr
        self.cycles = cycles
        self.counts = counts  # pages excluded per kind (cache, user, free, ...); zero pages not yet
        self.present = sum(c.present for c in cycles)
        self.dumpable = sum(c.dumpable for c in cycles)  # set bits of the 2nd bitmap, zero pages included

    def __iter__(self) -> Iterator[tuple[int, int, Bitmap, Bitmap]]:
        """(start, end, 1st bitmap, 2nd bitmap) per cycle, in pfn order."""
        for c in self.cycles:
            b1, b2 = c.bitmaps()
            yield c.start, c.end, b1, b2

    def count_dumpable(self, start: int, end: int) -> int:
        """Set bits of the 2nd bitmap for pfns [start, end)."""
        total = 0
        for c in self.cycles:
            if c.end <= start or c.start >= end:
                continue
            if start <= c.start and c.end <= end:
                total += c.dumpable
            else:
                total += c.bitmaps()[1].count(max(start, c.start) - c.start, min(end, c.end) - c.start)
        return total

    def runs(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Maximal runs of set bits of the 2nd bitmap in pfns [lo, hi), joined across cycles; found
        ``RUNS_CHUNK`` bits at a time (a sparse terabyte dump has hundreds of thousands of runs)."""
        last: tuple[int, int] | None = None
        for s, e in self._chunk_runs(lo, hi):
            if last is not None and last[1] == s:
                last = (last[0], e)
            else:
                if last is not None:
                    yield last
                last = (s, e)
        if last is not None:
            yield last

    def _chunk_runs(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Runs of set bits in pfns [lo, hi), split where a cycle or a chunk of bits ends."""
        for c in self.cycles:
            if c.end <= lo or c.start >= hi:
                continue
            b2 = c.bitmaps()[1]
            a, z = max(lo, c.start) - c.start, min(hi, c.end) - c.start
            for k in range(a, z, RUNS_CHUNK):
                for s, e in b2.runs(k, min(z, k + RUNS_CHUNK)):
                    yield s + c.start, e + c.start

    def _rewrite(self, i: int, b1: Bitmap, b2: Bitmap) -> None:
        c = self.cycles[i]
        self.cycles[i] = CycleBitmaps(c.start, c.end, b1, b2, c._packed)
        self.dumpable += self.cycles[i].dumpable - c.dumpable

    def exclude(self, ranges: list[tuple[int, int]]) -> int:
        """Clear the 2nd bitmap over pfn ranges [start, end) (extension filters); the number of pages
        that were to be dumped and now are not."""
        gone = 0
        for i, c in enumerate(self.cycles):
            mine = [(max(a, c.start), min(b, c.end)) for a, b in ranges if a < c.end and b > c.start]
            if not mine:
                continue
            b1, b2 = c.bitmaps()
            before = b2.count()
            for a, b in mine:
                b2.clear_range(a - c.start, b - c.start)
            gone += before - b2.count()
            self._rewrite(i, b1, b2)
        return gone

    def include(self, pfns: list[int]) -> int:
        """Set the 2nd bitmap for pfns present in the 1st (pages kept for debugging); how many changed."""
        added = 0
        for i, c in enumerate(self.cycles):
            mine = [p for p in pfns if c.start <= p < c.end]
            if not mine:
                continue
            b1, b2 = c.bitmaps()
            for p in mine:
                q = p - c.start
                if b1.test(q) and not b2.test(q):
                    b2.set(q)
                    added += 1
            self._rewrite(i, b1, b2)
        return added

    def full(self) -> tuple[Bitmap, Bitmap]:
        """Both bitmaps for the whole dump in one piece (ELF output and --mem-usage)."""
        b1, b2 = Bitmap(self.max_mapnr), Bitmap(self.max_mapnr)
        for start, end, c1, c2 in self:
            n = (end - start + 7) // 8
            b1.bits[start // 8 : start // 8 + n] = c1.bits[:n]
            b2.bits[start // 8 : start // 8 + n] = c2.bits[:n]
        return b1, b2


def _classification(src: DumpSource, vi: VmcoreInfo | None, level: int) -> str:
    """'no' (nothing to classify), 'try' (levels 0/1: hwpoison/offline only, best effort), 'yes'."""
    from .classify import pass_needed

    if not pass_needed(level, vi):
        return "no"
    if not level & KERNEL_LEVEL_BITS:
        return "try"
    if vi is None:
        raise DumpfilterError(
            f"{src.path} has no VMCOREINFO note, which dump level {level} needs to find struct pages "
            "(levels 0 and 1 work without it; give one with -i FILE)"
        )
    return "yes"


def filter_dump(src: DumpSource, vi: VmcoreInfo | None, level: int, cycle_pfns: int, partial_last: bool,
                log: Log | None = None, threads: int = 0) -> DumpBitmaps:
    """Classify every cycle once and return the dump's bitmaps.

    At levels 0 and 1 makedumpfile still drops hwpoison and offline pages when PG_hwpoison is exported;
    if the kernel data can't be read somewhere, nothing is excluded anywhere (nothing was asked for)
    and ``log`` is told why. With ``threads`` > 1 each cycle's sections are classified on that many
    threads; the bitmaps do not depend on it."""
    max_mapnr = src.max_mapnr
    step = max(CYCLE_ALIGN, cycle_pfns // CYCLE_ALIGN * CYCLE_ALIGN)
    bounds = [(s, min(s + step, max_mapnr)) for s in range(0, max_mapnr, step)]
    mode = _classification(src, vi, level)
    kernel = vi if mode != "no" else None  # pass_needed() is False without VMCOREINFO
    pack = len(bounds) > 1
    if log is not None:
        log.debug(f"cycles            : {len(bounds)} of {step} pfns"
                  + (" (bitmaps kept zlib-compressed between the passes)" if pack else ""))
    pool = None
    if threads > 1 and kernel is not None:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pydumpfile-classify")
    try:
        return _filter_cycles(src, kernel, level, bounds, partial_last, pack, log, pool, threads)
    finally:
        if pool is not None:
            pool.shutdown()


def _filter_cycles(src: DumpSource, kernel: VmcoreInfo | None, level: int, bounds: list[tuple[int, int]],
                   partial_last: bool, pack: bool, log: Log | None, pool: Executor | None,
                   threads: int) -> DumpBitmaps:
    from .classify import KernelView, exclude_pages

    kv: KernelView | None = None
    counts = Stats()
    out: list[CycleBitmaps] = []
    for start, end in bounds:
        if not src.has_memory(start, end):
            out.append(CycleBitmaps.empty(start, end, pack))
            continue
        b1 = src.present_bitmap(partial_last=partial_last, start=start, end=end)
        b2 = src.dumpable_bitmap(start=start, end=end)
        if kernel is not None:
            st = Stats()
            try:
                if kv is None:
                    kv = KernelView(src, kernel, log, level)
                exclude_pages(src, kernel, b2, level, st, kv, base=start, pool=pool, workers=threads)
            except DumpfilterError as e:
                if level & KERNEL_LEVEL_BITS:
                    raise
                if log is not None:
                    log.msg(f"hwpoison/offline pages are not excluded: {e}")
                return _unclassified(src, bounds, partial_last, pack)
            for k in COUNTS:
                setattr(counts, k, getattr(counts, k) + getattr(st, k))
            if log is not None and log.debugging:
                log.debug(f"cycle {start:#x}-{end:#x}: " + ", ".join(f"{k} {getattr(st, k)}" for k in COUNTS))
        out.append(CycleBitmaps(start, end, b1, b2, pack))
    return DumpBitmaps(src.max_mapnr, out, counts)


def _unclassified(src: DumpSource, bounds: list[tuple[int, int]], partial_last: bool, pack: bool) -> DumpBitmaps:
    cycles = [CycleBitmaps(s, e, src.present_bitmap(partial_last=partial_last, start=s, end=e),
                           src.dumpable_bitmap(start=s, end=e), pack) if src.has_memory(s, e)
              else CycleBitmaps.empty(s, e, pack) for s, e in bounds]
    return DumpBitmaps(src.max_mapnr, cycles, Stats())
