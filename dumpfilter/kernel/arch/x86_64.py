"""x86_64 virtual → physical (filtering.md §3.3).

Every virtual address goes through the kernel's page tables from ``init_top_pgt`` (4 or 5 levels),
as makedumpfile does; translations are cached per leaf (1 GiB, 2 MiB or 4 KiB), which is exact
because the dump is immutable. Kernel-image addresses are also available arithmetically
(``__START_KERNEL_map + paddr - phys_base``) for the root table itself and for inputs without tables.
"""
from __future__ import annotations

import struct

from ...errors import KernelDataError, VmcoreinfoError
from ...source.base import DumpSource
from ..vmcoreinfo import VmcoreInfo

START_KERNEL_MAP = 0xFFFFFFFF80000000
EM_X86_64 = 62
MASK64 = (1 << 64) - 1
ENTRY_MASK = 0x000FFFFFFFFFF000
PAGE_OFFSET_4L = 0xFFFF880000000000
PAGE_OFFSET_5L = 0xFF10000000000000


def phys_base(src: DumpSource, vi: VmcoreInfo | None) -> int:
    """NUMBER(phys_base) from VMCOREINFO; else derived from the kernel-text PT_LOAD; else 0."""
    if vi is not None and "phys_base" in vi.number:
        return vi.number["phys_base"] & MASK64
    for seg in getattr(src, "loads", []):
        if seg.vaddr >= START_KERNEL_MAP:
            return (seg.paddr - (seg.vaddr - START_KERNEL_MAP)) & MASK64
    return 0


def kernel_text_to_phys(vaddr: int, pbase: int) -> int | None:
    if vaddr >= START_KERNEL_MAP:
        return (vaddr - START_KERNEL_MAP + pbase) & MASK64
    return None


def page_offset(src: DumpSource, l5: bool) -> int:
    """Direct-map base from the last RAM PT_LOAD (get_page_offset_x86_64); else the default."""
    po = None
    for seg in getattr(src, "loads", []):
        if seg.vaddr and seg.vaddr < START_KERNEL_MAP:
            po = (seg.vaddr - seg.paddr) & MASK64
    return po if po is not None else (PAGE_OFFSET_5L if l5 else PAGE_OFFSET_4L)


class X86_64:
    """Page-table walker for one dump."""

    def __init__(self, src: DumpSource, vi: VmcoreInfo) -> None:
        self.src = src
        self.vi = vi
        self.phys_base = phys_base(src, vi)
        self.l5 = bool(vi.number.get("pgtable_l5_enabled", 0))
        self.sme_mask = vi.number.get("sme_mask", 0) & MASK64
        self.emask = ENTRY_MASK & ~self.sme_mask
        root = vi.symbol.get("init_level4_pgt") or vi.symbol.get("init_top_pgt")
        if not root:
            raise VmcoreinfoError("VMCOREINFO has no SYMBOL(init_top_pgt), needed to translate kernel addresses")
        rp = kernel_text_to_phys(root, self.phys_base)
        if rp is None:
            raise KernelDataError(f"SYMBOL(init_top_pgt)={root:#x} is not a kernel-image address")
        self.root = rp
        self.page_offset = page_offset(src, self.l5)
        self._cache: dict[tuple[int, int], int] = {}  # (shift, va >> shift) -> physical base of the leaf
        self._table_cache: dict[int, bytes] = {}

    def _rd64(self, paddr: int) -> int:
        base = paddr & ~0xFFF
        tbl = self._table_cache.get(base)
        if tbl is None:
            if base // self.src.page_size >= self.src.max_mapnr:
                raise KernelDataError(f"page table at {base:#x} lies outside the dump")
            tbl = self.src.read_phys(base, 4096)
            if len(self._table_cache) > 4096:
                self._table_cache.clear()
            self._table_cache[base] = tbl
        return struct.unpack_from("<Q", tbl, paddr & 0xFFF)[0]

    def vtop(self, va: int) -> int:
        va &= MASK64
        for shift in (12, 21, 30):
            base = self._cache.get((shift, va >> shift))
            if base is not None:
                return base + (va & ((1 << shift) - 1))
        em = self.emask
        tbl = self.root
        seen = [tbl]

        def down(e: int, name: str) -> int:
            # a table entry pointing back at a table of this walk (itself or an upper level)
            nxt = e & em
            if nxt in seen:
                raise KernelDataError(
                    f"virtual address {va:#x}: page-table loop, the {name} entry {e:#x} points back at {nxt:#x}"
                )
            seen.append(nxt)
            return nxt

        if self.l5:
            e = self._rd64(tbl + ((va >> 48) & 511) * 8)
            if not e & 1:
                raise KernelDataError(f"virtual address {va:#x}: PGD entry not present")
            tbl = down(e, "PGD")
        e = self._rd64(tbl + ((va >> 39) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: {'P4D' if self.l5 else 'PGD'} entry not present")
        e = self._rd64(down(e, "P4D" if self.l5 else "PGD") + ((va >> 30) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PUD entry not present")
        if e & 0x80:
            return self._leaf(va, 30, e & em & ~((1 << 30) - 1))
        e = self._rd64(down(e, "PUD") + ((va >> 21) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PMD entry not present")
        if e & 0x80:
            return self._leaf(va, 21, e & em & ~((1 << 21) - 1))
        e = self._rd64(down(e, "PMD") + ((va >> 12) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PTE not present")
        return self._leaf(va, 12, e & em)

    def _leaf(self, va: int, shift: int, base: int) -> int:
        if len(self._cache) > 1 << 16:
            self._cache.clear()
        self._cache[(shift, va >> shift)] = base
        return base + (va & ((1 << shift) - 1))

    def leaf_extent(self, va: int) -> int:
        """Bytes from ``va`` to the end of its (cached after vtop) leaf mapping."""
        for shift in (30, 21, 12):
            if (shift, (va & MASK64) >> shift) in self._cache:
                return (1 << shift) - (va & ((1 << shift) - 1))
        return 4096 - (va & 0xFFF)

    def read(self, va: int, size: int) -> bytes:
        """Read kernel virtual memory, translating each leaf separately."""
        buf = bytearray(size)
        self.read_into(va, buf)
        return bytes(buf)

    def read_into(self, va: int, buf) -> None:
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
        get = getattr(self.src, "phys_view", None)
        if get is None:
            return None
        pa = self.vtop(va)
        if size > self.leaf_extent(va) or (pa + size - 1) // self.src.page_size >= self.src.max_mapnr:
            return None
        v = get(pa, size)
        return None if v is None else (v, pa)

    def read_u64(self, va: int) -> int:
        return struct.unpack("<Q", self.read(va, 8))[0]
