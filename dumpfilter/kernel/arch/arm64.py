"""arm64 (AArch64): virtual → physical (filtering.md §7).

Every kernel virtual address goes through the page tables the MMU used, from ``swapper_pg_dir``
(the TTBR1 table), as makedumpfile does. What the walk needs comes from VMCOREINFO:

- the granule: ``PAGESIZE`` (4K, 16K or 64K);
- the VA size the kernel *runs* with, ``vabits_actual = 64 - TCR_EL1_T1SZ``: a ``VA_BITS=52`` kernel
  on a CPU without 52-bit VA runs with 48 bits (T1SZ=16) and then has 4, not 5, levels of 4K tables.
  Levels = ``(vabits_actual - 4) // (PAGE_SHIFT - 3)`` (4K: 39→3, 48→4, 52→5; 16K: 36→2, 47→3,
  48→4, 52→4; 64K: 42→2, 48→3, 52→3);
- the descriptor's output address (``__pte_to_phys`` in arch/arm64/include/asm/pgtable.h): bits
  [47:PAGE_SHIFT]; with 52-bit physical addresses (``MAX_PHYSMEM_BITS=52``) on 64K pages (FEAT_LPA)
  also PA[51:48] from descriptor bits [15:12], on 4K/16K pages (FEAT_LPA2) bits [49:PAGE_SHIFT] and
  PA[51:50] from descriptor bits [9:8] (which are the shareability field without LPA2);
- the root's physical address: ``SYMBOL(swapper_pg_dir)`` is a kernel-image address, so
  ``pa = va - kimage_voffset`` (``NUMBER(kimage_voffset)``, which includes the KASLR offset
  ``KERNELOFFSET``);
- linear-map addresses also translate arithmetically, ``(va & ~PAGE_OFFSET) + PHYS_OFFSET`` with the
  *compile-time* ``PAGE_OFFSET = -(1 << VA_BITS)``: a 52-bit kernel on 48-bit hardware keeps its linear
  map at ``-(1 << 48)`` by making ``PHYS_OFFSET`` (memstart_addr) negative, e.g. ``0xfff1000040000000``;
- pointers may carry a pointer-authentication code or a tag in their top bits
  (``NUMBER(KERNELPACMASK)``): a kernel address (bit 55 set) has those bits set again before the walk.

Kernels before 5.4 put the linear map in the upper half of the kernel VA range ("not flipped"); that
layout is recognised from ``SYMBOL(_stext)`` as makedumpfile does.
"""
from __future__ import annotations

from ...errors import KernelDataError, VmcoreinfoError
from ...record import dataclass
from ...source.base import DumpSource
from ..vmcoreinfo import VmcoreInfo
from . import Arch
from .machines import EM_AARCH64
from .walk import MASK64, TableWalker

TOP_BYTE = 0xFF00000000000000


def _top(bits: int) -> int:
    """-(1 << bits) as an unsigned 64-bit value: the addresses whose bits [63:bits] are all set."""
    return (MASK64 << bits) & MASK64


def levels_for(page_shift: int, va_bits: int) -> int:
    """Translation levels for a granule and a VA size (ARM64_HW_PGTABLE_LEVELS)."""
    return (va_bits - 4) // (page_shift - 3)


@dataclass(frozen=True)
class Arm64Layout:
    """The address-space facts of one arm64 kernel, from VMCOREINFO (and the dump's PT_LOADs where a
    key is missing). Pure data: the unit tests build these by hand."""

    page_shift: int
    va_bits: int  # NUMBER(VA_BITS): what the kernel was built for
    vabits_actual: int  # 64 - TCR_EL1_T1SZ: what it ran with
    phys_offset: int  # NUMBER(PHYS_OFFSET) = memstart_addr (u64; "negative" for 52-bit kernels on 48 bits)
    kimage_voffset: int | None  # kernel image VA - PA
    max_physmem_bits: int = 48
    flipped: bool = True  # 5.4+ layout: the linear map at the bottom of the kernel VA range
    pac_mask: int = 0  # NUMBER(KERNELPACMASK)
    kernel_offset: int | None = None  # KERNELOFFSET (KASLR), for -D
    vmemmap_start: int | None = None  # NUMBER(VMEMMAP_START)

    # --- derived -------------------------------------------------------------------------------
    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def levels(self) -> int:
        return levels_for(self.page_shift, self.vabits_actual)

    @property
    def page_offset(self) -> int:
        """Start of the linear map as the kernel runs (the lowest kernel address when flipped)."""
        if self.flipped:
            return _top(self.vabits_actual)
        return _top(self.vabits_actual - 1)

    @property
    def page_offset_const(self) -> int:
        """The kernel's compile-time PAGE_OFFSET, which ``__lm_to_phys`` masks with."""
        return _top(self.va_bits) if self.flipped else _top(self.va_bits - 1)

    @property
    def kvbase(self) -> int:
        """The lowest kernel virtual address (makedumpfile's KVBASE / is_kvaddr)."""
        return self.page_offset if self.flipped else _top(self.va_bits)

    @property
    def lpa2(self) -> bool:
        """Descriptors in the FEAT_LPA2 format (4K/16K granule with 52-bit physical addresses)."""
        return self.page_shift != 16 and self.max_physmem_bits == 52

    @property
    def lpa(self) -> bool:
        """Descriptors in the FEAT_LPA format (64K granule with 52-bit physical addresses)."""
        return self.page_shift == 16 and self.max_physmem_bits == 52

    @property
    def descriptor_format(self) -> str:
        if self.lpa2:
            return "LPA2: PA[51:50] in bits [9:8]"
        if self.lpa:
            return "LPA: PA[51:48] in bits [15:12]"
        return "PA[47:PAGE_SHIFT]"

    def output_address(self, e: int) -> int:
        """The output (next-table or page/block) address of a descriptor (``__pte_to_phys``)."""
        ps = self.page_shift
        if self.lpa2:
            return (e & (((1 << (50 - ps)) - 1) << ps)) | ((e >> 8 & 3) << 50)
        low = e & (((1 << (48 - ps)) - 1) << ps)
        if self.lpa:
            return low | ((e >> 12 & 0xF) << 48)
        return low

    def canonical(self, va: int) -> int:
        """A kernel pointer with its PAC / tag bits restored (bits [63:vabits_actual] all set)."""
        va &= MASK64
        if va >> 55 & 1:
            return va | self.pac_mask | _top(self.vabits_actual) | TOP_BYTE
        return va

    def is_linear(self, va: int) -> bool:
        va = self.canonical(va)
        if va < self.page_offset:
            return False
        bit = va >> (self.vabits_actual - 1) & 1
        return not bit if self.flipped else bool(bit)

    def lm_to_phys(self, va: int) -> int:
        """``__lm_to_phys``: a linear-map address's physical address, without the page tables."""
        return ((self.canonical(va) & ~self.page_offset_const & MASK64) + self.phys_offset) & MASK64

    def phys_to_lm(self, pa: int) -> int:
        """``__phys_to_virt``: the linear-map address of physical ``pa``."""
        return ((pa - self.phys_offset) | self.page_offset_const) & MASK64

    def kimg_to_phys(self, va: int) -> int | None:
        """``__kimg_to_phys``: a kernel-image address's physical address (None without kimage_voffset)."""
        if self.kimage_voffset is None:
            return None
        return (self.canonical(va) - self.kimage_voffset) & MASK64

    def pa(self, va: int) -> int | None:
        """``__pa`` of a linear-map or kernel-image address (None for other kernel addresses when
        kimage_voffset is unknown, and for user addresses)."""
        va = self.canonical(va)
        if not va >> 55 & 1:
            return None
        if self.is_linear(va):
            return self.lm_to_phys(va)
        return self.kimg_to_phys(va)

    def vmemmap(self, sizeof_page: int) -> int | None:
        """Address of pfn 0's struct page: ``VMEMMAP_START - (memstart_addr >> PAGE_SHIFT) * sizeof(struct
        page)`` (memstart_addr signed); None without VMEMMAP_START."""
        if self.vmemmap_start is None:
            return None
        start = self.phys_offset - (1 << 64) if self.phys_offset >> 63 else self.phys_offset
        return (self.vmemmap_start - (start >> self.page_shift) * sizeof_page) & MASK64

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo, page_size: int, src: DumpSource | None = None) -> Arm64Layout:
        num = vi.number
        page_shift = page_size.bit_length() - 1
        if page_size not in (4096, 16384, 65536):
            raise VmcoreinfoError(f"arm64 has no {page_size}-byte pages (4K, 16K or 64K)")
        stext = vi.symbol.get("_stext") or vi.symbol.get("swapper_pg_dir")
        va_bits = num.get("VA_BITS")
        if va_bits is None:
            va_bits = _va_bits_from_stext(stext)
        t1sz = num.get("TCR_EL1_T1SZ", num.get("tcr_el1_t1sz"))
        if t1sz is not None:
            vabits_actual = 64 - t1sz
        elif va_bits == 52 and "mem_section" in vi.symbol:
            # 5.4-5.8 carry no T1SZ: mem_section is a linear-map address, and the 48-bit linear map
            # has bit 51 set (makedumpfile's guess)
            vabits_actual = 48 if vi.symbol["mem_section"] >> 51 & 1 else 52
        else:
            vabits_actual = va_bits
        if not (36 <= vabits_actual <= 52 and 36 <= va_bits <= 52):
            raise VmcoreinfoError(f"arm64: VA_BITS={va_bits} with {vabits_actual} bits in use is not plausible")
        lvl = levels_for(page_shift, vabits_actual)
        if not 2 <= lvl <= 5 or (lvl == 5 and page_shift != 12):
            raise VmcoreinfoError(f"arm64: {vabits_actual}-bit VA with {page_size}-byte pages is not a valid configuration")
        # 5.4 flipped the kernel VA space: the kernel image is then above the middle of it
        flipped = True if stext is None else stext > _top(min(va_bits, 48) - 1)
        max_phys = num.get("MAX_PHYSMEM_BITS", 52 if va_bits == 52 else 48)
        layout = cls(page_shift=page_shift, va_bits=va_bits, vabits_actual=vabits_actual, phys_offset=0,
                     kimage_voffset=None, max_physmem_bits=max_phys, flipped=flipped,
                     pac_mask=num.get("KERNELPACMASK", 0) & MASK64, kernel_offset=vi.kerneloffset,
                     vmemmap_start=num.get("VMEMMAP_START"))
        phys_offset = num.get("PHYS_OFFSET")
        voff = num.get("kimage_voffset")
        if (phys_offset is None or voff is None) and src is not None:
            po, vo = _offsets_from_segments(layout, src)
            phys_offset = po if phys_offset is None else phys_offset
            voff = vo if voff is None else voff
        return cls(page_shift=page_shift, va_bits=va_bits, vabits_actual=vabits_actual,
                   phys_offset=(phys_offset or 0) & MASK64, kimage_voffset=None if voff is None else voff & MASK64,
                   max_physmem_bits=max_phys, flipped=flipped, pac_mask=layout.pac_mask,
                   kernel_offset=layout.kernel_offset, vmemmap_start=layout.vmemmap_start)


def _va_bits_from_stext(stext: int | None) -> int:
    """VA_BITS of a kernel whose VMCOREINFO does not say (before 4.x): the widest VA range that
    ``_stext`` lies in (makedumpfile's guess from /proc/kallsyms, here from VMCOREINFO)."""
    if stext is not None:
        for bits in (48, 47, 42, 39, 36):
            if stext & _top(bits) == _top(bits):
                return bits
    raise VmcoreinfoError("VMCOREINFO has no NUMBER(VA_BITS) (and no SYMBOL(_stext) to guess it from)")


def _offsets_from_segments(layout: Arm64Layout, src: DumpSource) -> tuple[int | None, int | None]:
    """(PHYS_OFFSET, kimage_voffset) read off an ELF vmcore's PT_LOADs: kexec-tools and the kernel
    write the linear map's segments at their linear address and the kernel image's at its image
    address."""
    phys_offset = kimage_voffset = None
    for seg in src.load_segments:
        if not seg.vaddr or not seg.vaddr >> 55 & 1:
            continue
        if layout.is_linear(seg.vaddr):
            if phys_offset is None:
                phys_offset = (seg.paddr - (seg.vaddr & ~layout.page_offset_const)) & MASK64
        elif kimage_voffset is None:
            kimage_voffset = (seg.vaddr - seg.paddr) & MASK64
    return phys_offset, kimage_voffset


class Arm64Arch(Arch):
    name = "aarch64"
    e_machine = EM_AARCH64
    page_sizes = (4096, 16384, 65536)
    vmcoreinfo_keys = ("SYMBOL(swapper_pg_dir)", "NUMBER(VA_BITS)", "NUMBER(TCR_EL1_T1SZ)", "NUMBER(PHYS_OFFSET)",
                       "NUMBER(kimage_voffset)", "KERNELOFFSET", "NUMBER(KERNELPACMASK)", "NUMBER(VMEMMAP_START)",
                       "NUMBER(MAX_PHYSMEM_BITS)")

    def layout(self, src: DumpSource, vi: VmcoreInfo) -> Arm64Layout:
        return Arm64Layout.from_vmcoreinfo(vi, src.page_size, src)

    def phys_base(self, src: DumpSource, vi: VmcoreInfo | None) -> int:
        """makedumpfile's arm64 ``info->phys_base``: PHYS_OFFSET (memstart_addr)."""
        if vi is None:
            return 0
        try:
            return self.layout(src, vi).phys_offset
        except VmcoreinfoError:
            return vi.number.get("PHYS_OFFSET", 0) & MASK64

    def kernel_text_to_phys(self, vaddr: int, src: DumpSource, vi: VmcoreInfo) -> int | None:
        try:
            return self.layout(src, vi).pa(vaddr)
        except VmcoreinfoError:
            return None

    def _own_layout(self, vi: VmcoreInfo) -> Arm64Layout:
        page_size = vi.page_size
        if page_size is None:
            raise VmcoreinfoError("VMCOREINFO has no PAGESIZE")
        return Arm64Layout.from_vmcoreinfo(vi, page_size)

    def linear_vaddr(self, vi: VmcoreInfo, paddr: int) -> int | None:
        return self._own_layout(vi).phys_to_lm(paddr)

    def image_voffset(self, vi: VmcoreInfo) -> int | None:
        return self._own_layout(vi).kimage_voffset

    def mmu(self, src: DumpSource, vi: VmcoreInfo) -> Arm64Mmu:
        return Arm64Mmu(src, vi, self.layout(src, vi))


class Arm64Mmu(TableWalker):
    """Walks the TTBR1 tables of one arm64 dump (any granule, 2 to 5 levels)."""

    def __init__(self, src: DumpSource, vi: VmcoreInfo, layout: Arm64Layout) -> None:
        super().__init__(src)
        self.vi = vi
        self.layout = lo = layout
        if src.page_size != lo.page_size:
            raise VmcoreinfoError(f"PAGESIZE={lo.page_size} in VMCOREINFO differs from the dump's {src.page_size}")
        root = vi.symbol.get("swapper_pg_dir")
        if not root:
            raise VmcoreinfoError("VMCOREINFO has no SYMBOL(swapper_pg_dir), needed to translate kernel addresses")
        rp = lo.pa(root)
        if rp is None:
            raise VmcoreinfoError(
                f"SYMBOL(swapper_pg_dir)={root:#x} can't be located: VMCOREINFO has no NUMBER(kimage_voffset) "
                "and no PT_LOAD maps the kernel image"
            )
        self.root = rp
        ps = lo.page_shift
        self.levels = lo.levels
        #: index shift of each level, top first
        self.shifts = tuple(ps + (ps - 3) * (self.levels - 1 - d) for d in range(self.levels))
        self.leaf_shifts = tuple(reversed(self.shifts))
        self.table_size = lo.page_size
        self.page_offset = lo.kvbase
        self.kernel_va_start = lo.kvbase
        self.max_physmem_bits = lo.max_physmem_bits
        # before 5.12 every arm64 kernel had 1 GiB sections (also makedumpfile's default); since
        # then 27 (4K, 16K) or 29 (64K), and VMCOREINFO says so
        self.section_size_bits = 30

    def canonical(self, va: int) -> int:
        return self.layout.canonical(va)

    def _walk(self, va: int) -> tuple[int, int]:
        lo = self.layout
        if va < lo.kvbase:
            raise KernelDataError(f"virtual address {va:#x} is not a kernel address (below {lo.kvbase:#x})")
        tbl = self.root
        seen = {tbl}
        last = self.levels - 1
        for d, shift in enumerate(self.shifts):
            width = lo.vabits_actual - shift if d == 0 else lo.page_shift - 3
            e = self.rd64(tbl + ((va >> shift) & ((1 << width) - 1)) * 8)
            level = 4 - self.levels + d  # the architecture's level number (-1 .. 3)
            if not e & 1:
                raise KernelDataError(f"virtual address {va:#x}: level {level} descriptor {e:#x} is not valid")
            out = lo.output_address(e)
            if d == last:
                if not e & 2:
                    raise KernelDataError(f"virtual address {va:#x}: level 3 descriptor {e:#x} is reserved")
                return shift, out
            if not e & 2:  # a block
                return shift, out & ~((1 << shift) - 1)
            if out in seen:
                raise KernelDataError(
                    f"virtual address {va:#x}: page-table loop, the level {level} descriptor {e:#x} points back at {out:#x}"
                )
            seen.add(out)
            tbl = out
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> list[str]:
        """What -D prints about the translation."""
        lo = self.layout
        lines = [
            f"page tables       : {self.levels} levels of {lo.page_size // 1024}K, root (swapper_pg_dir) at {self.root:#x}",
            f"va_bits           : {lo.va_bits} (built), {lo.vabits_actual} (running: TCR_EL1.T1SZ={64 - lo.vabits_actual})",
            f"descriptors       : {lo.descriptor_format}, MAX_PHYSMEM_BITS={lo.max_physmem_bits}",
            f"page_offset       : {lo.page_offset:#x} (linear map), PAGE_OFFSET {lo.page_offset_const:#x}",
            f"phys_offset       : {lo.phys_offset:#x}",
            f"kimage_voffset    : {lo.kimage_voffset:#x}" if lo.kimage_voffset is not None else "kimage_voffset    : unknown",
        ]
        if lo.kernel_offset is not None:
            lines.append(f"kaslr offset      : {lo.kernel_offset:#x}")
        if lo.pac_mask:
            lines.append(f"pac mask          : {lo.pac_mask:#x}")
        size_page = self.vi.size.get("page")
        vm = lo.vmemmap(size_page) if size_page else None
        if vm is not None:
            lines.append(f"vmemmap           : {vm:#x} (VMEMMAP_START {lo.vmemmap_start:#x})")
        return lines
