"""x86_64: virtual → physical (filtering.md §3.3).

Every virtual address goes through the kernel's page tables from ``init_top_pgt`` (4 or 5 levels),
as makedumpfile does; translations are cached per leaf (1 GiB, 2 MiB or 4 KiB), which is exact
because the dump is immutable. Kernel-image addresses are also available arithmetically
(``__START_KERNEL_map + paddr - phys_base``) for the root table itself and for inputs without tables.
"""
from __future__ import annotations

from ...errors import KernelDataError, VmcoreinfoError
from ...source.base import DumpSource
from ..vmcoreinfo import VmcoreInfo
from . import Arch
from .machines import EM_X86_64
from .walk import MASK64, TableWalker

START_KERNEL_MAP = 0xFFFFFFFF80000000
ENTRY_MASK = 0x000FFFFFFFFFF000
PAGE_OFFSET_4L = 0xFFFF880000000000
PAGE_OFFSET_5L = 0xFF10000000000000


def phys_base(src: DumpSource, vi: VmcoreInfo | None) -> int:
    """NUMBER(phys_base) from VMCOREINFO; else derived from the kernel-text PT_LOAD; else 0."""
    if vi is not None and "phys_base" in vi.number:
        return vi.number["phys_base"] & MASK64
    for seg in src.load_segments:
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
    for seg in src.load_segments:
        if seg.vaddr and seg.vaddr < START_KERNEL_MAP:
            po = (seg.vaddr - seg.paddr) & MASK64
    return po if po is not None else (PAGE_OFFSET_5L if l5 else PAGE_OFFSET_4L)


class X86_64Arch(Arch):
    name = "x86_64"
    e_machine = EM_X86_64
    page_sizes = (4096,)
    vmcoreinfo_keys = ("SYMBOL(init_top_pgt)", "NUMBER(phys_base)", "NUMBER(pgtable_l5_enabled)", "NUMBER(sme_mask)")

    def phys_base(self, src: DumpSource, vi: VmcoreInfo | None) -> int:
        return phys_base(src, vi)

    def default_phys_bits(self, vi: VmcoreInfo | None) -> int:
        if vi is None:
            return 52
        return 52 if vi.number.get("pgtable_l5_enabled", 0) else 46

    def kernel_text_to_phys(self, vaddr: int, src: DumpSource, vi: VmcoreInfo) -> int | None:
        return kernel_text_to_phys(vaddr, phys_base(src, vi))

    def mmu(self, src: DumpSource, vi: VmcoreInfo) -> X86_64Mmu:
        return X86_64Mmu(src, vi)


class X86_64Mmu(TableWalker):
    """Page-table walker for one dump."""

    leaf_shifts = (12, 21, 30)
    table_size = 4096
    kernel_va_start = 0xFF00000000000000  # top byte 0xff with 4- and 5-level tables
    section_size_bits = 27  # SECTION_SIZE_BITS before VMCOREINFO exported it

    def __init__(self, src: DumpSource, vi: VmcoreInfo) -> None:
        super().__init__(src)
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
        self.max_physmem_bits = 52 if self.l5 else 46

    def _walk(self, va: int) -> tuple[int, int]:
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
            e = self.rd64(tbl + ((va >> 48) & 511) * 8)
            if not e & 1:
                raise KernelDataError(f"virtual address {va:#x}: PGD entry not present")
            tbl = down(e, "PGD")
        e = self.rd64(tbl + ((va >> 39) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: {'P4D' if self.l5 else 'PGD'} entry not present")
        e = self.rd64(down(e, "P4D" if self.l5 else "PGD") + ((va >> 30) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PUD entry not present")
        if e & 0x80:
            return 30, e & em & ~((1 << 30) - 1)
        e = self.rd64(down(e, "PUD") + ((va >> 21) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PMD entry not present")
        if e & 0x80:
            return 21, e & em & ~((1 << 21) - 1)
        e = self.rd64(down(e, "PMD") + ((va >> 12) & 511) * 8)
        if not e & 1:
            raise KernelDataError(f"virtual address {va:#x}: PTE not present")
        return 12, e & em

    def describe(self) -> list[str]:
        """What -D prints about the translation."""
        return [
            f"page tables       : {5 if self.l5 else 4} levels, root (init_top_pgt) at {self.root:#x}",
            f"phys_base         : {self.phys_base:#x}",
            f"page_offset       : {self.page_offset:#x}",
            f"sme_mask          : {self.sme_mask:#x}",
        ]
