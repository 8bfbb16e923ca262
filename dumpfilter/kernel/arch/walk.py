"""What every page-table walker shares: the per-leaf translation cache, the table cache and the reads.

A machine's ``Mmu`` subclasses ``TableWalker`` and implements ``_walk(va) -> (leaf_shift, leaf_base)``;
``vtop``, ``read``, ``read_into`` and ``view`` are the same for every machine. Translations are cached
per leaf mapping (a 1 GiB or 2 MiB block, a page...), which is exact because a dump never changes.
"""
from __future__ import annotations

import struct

from ...errors import KernelDataError
from ...source.base import DumpSource

MASK64 = (1 << 64) - 1
_U64 = struct.Struct("<Q")


class TableWalker:
    """Base of the page-table walkers. Subclasses set ``leaf_shifts`` (every size a leaf mapping
    can have, as log2) and ``table_size`` (bytes read at once around a table entry), and implement
    ``_walk``."""

    leaf_shifts: tuple[int, ...] = (12,)
    table_size = 4096
    #: lowest kernel virtual address: a pointer below it is no kernel pointer (the classifier's
    #: plausibility test of struct page head pointers)
    kernel_va_start = 0

    def __init__(self, src: DumpSource) -> None:
        self.src = src
        self._cache: dict[tuple[int, int], int] = {}  # (shift, va >> shift) -> physical base of the leaf
        self._table_cache: dict[int, bytes] = {}

    # --- to implement ------------------------------------------------------------------------
    def _walk(self, va: int) -> tuple[int, int]:
        """(log2 of the leaf mapping's size, its physical base) of canonical address ``va``; raises
        KernelDataError when it is not mapped."""
        raise NotImplementedError

    def canonical(self, va: int) -> int:
        """``va`` as the page tables see it (machines with tagged or signed pointers override)."""
        return va & MASK64

    # --- shared --------------------------------------------------------------------------------
    def rd64(self, paddr: int) -> int:
        """One little-endian 64-bit table entry at physical ``paddr``."""
        ts = self.table_size
        base = paddr - paddr % ts
        tbl = self._table_cache.get(base)
        if tbl is None:
            if (base + ts - 1) // self.src.page_size >= self.src.max_mapnr:
                raise KernelDataError(f"page table at {base:#x} lies outside the dump")
            tbl = self.src.read_phys(base, ts)
            if len(self._table_cache) > 4096:
                self._table_cache.clear()
            self._table_cache[base] = tbl
        return _U64.unpack_from(tbl, paddr - base)[0]

    def vtop(self, va: int) -> int:
        va = self.canonical(va)
        for shift in self.leaf_shifts:
            base = self._cache.get((shift, va >> shift))
            if base is not None:
                return base + (va & ((1 << shift) - 1))
        shift, base = self._walk(va)
        if len(self._cache) > 1 << 16:
            self._cache.clear()
        self._cache[(shift, va >> shift)] = base
        return base + (va & ((1 << shift) - 1))

    def leaf_extent(self, va: int) -> int:
        """Bytes from ``va`` to the end of its (cached after vtop) leaf mapping."""
        va = self.canonical(va)
        for shift in reversed(self.leaf_shifts):
            if (shift, va >> shift) in self._cache:
                return (1 << shift) - (va & ((1 << shift) - 1))
        smallest = 1 << self.leaf_shifts[0]
        return smallest - (va & (smallest - 1))

    def read(self, va: int, size: int) -> bytes:
        """Read kernel virtual memory, translating each leaf separately."""
        buf = bytearray(size)
        self.read_into(va, buf)
        return bytes(buf)

    def read_into(self, va: int, buf) -> None:  # noqa: ANN001 - any writable buffer
        """Read ``len(buf)`` bytes of kernel virtual memory into a writable buffer (bytearray,
        memoryview, uint8 array...), page-granular pieces straight from the dump (no intermediate
        copies: struct page arrays are large)."""
        mv = memoryview(buf)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        ps = self.src.page_size
        size = mv.nbytes
        off = 0
        while off < size:
            pa = self.vtop(va + off)
            n = min(size - off, self.leaf_extent(va + off))
            if (pa + n - 1) // ps >= self.src.max_mapnr:
                raise KernelDataError(f"virtual address {va + off:#x} maps to {pa:#x}, outside the dump")
            if pa % ps == 0 and n % ps == 0:
                self.src.read_pages(pa // ps, n // ps, mv[off : off + n])
            else:
                mv[off : off + n] = self.src.read_phys(pa, n)
            off += n

    def view(self, va: int, size: int) -> tuple[memoryview, int] | None:
        """(a read-only view of kernel virtual memory [va, va+size), its physical address) without a
        copy, when one leaf mapping covers it and the source can map it (a plain ELF file); else
        None. Return the view with ``self.src.release_view(view, paddr)``."""
        if not self.src.can_view:
            return None
        pa = self.vtop(va)
        if size > self.leaf_extent(va) or (pa + size - 1) // self.src.page_size >= self.src.max_mapnr:
            return None
        v = self.src.phys_view(pa, size)
        return None if v is None else (v, pa)
