"""arm64 virtual -> physical on synthetic page tables (no QEMU): every granule (4K, 16K, 64K), every
level count (2 to 5), 36- to 52-bit VA, 48- and 52-bit physical addresses with the FEAT_LPA (64K)
and FEAT_LPA2 (4K/16K) descriptor formats, block and page leaves, PAC bits in pointers.

The tables are written here from the architecture's descriptor formats (Arm ARM D8.3; the kernel's
``__phys_to_pte_val``), independent of the walker: a table descriptor ``0b11``, a block ``0b01``, a
page ``0b11`` at the last level; the output address in bits [47:PAGE_SHIFT], with LPA2 in bits
[49:PAGE_SHIFT] plus PA[51:50] in bits [9:8], with LPA (64K) PA[51:48] in bits [15:12]. Attribute bits
the walker must ignore (AF, nG, DBM, PXN, UXN, nT in blocks, and the shareability field where it is
one) are set.
"""
from __future__ import annotations

import random
import struct

import pytest

from dumpfilter.errors import KernelDataError, VmcoreinfoError
from dumpfilter.kernel.arch import for_machine
from dumpfilter.kernel.arch.arm64 import Arm64Arch, Arm64Layout, Arm64Mmu, levels_for
from dumpfilter.kernel.arch.machines import EM_AARCH64
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from dumpfilter.source.elf import Segment

M64 = (1 << 64) - 1
ATTRS = (1 << 10) | (1 << 11) | (1 << 51) | (1 << 53) | (1 << 54)  # AF, nG, DBM, PXN, UXN


def top(bits: int) -> int:
    return (M64 << bits) & M64


class PhysMem:
    """A sparse physical memory that quacks like a DumpSource for the walker."""

    format = "synthetic"
    path = "<page tables>"
    can_view = False
    load_segments: list = []
    elf_machine = EM_AARCH64

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.max_mapnr = 1 << (52 - (page_size.bit_length() - 1))
        self.pages: dict[int, bytearray] = {}

    def write(self, pa: int, data: bytes) -> None:
        ps = self.page_size
        for i, b in enumerate(data):
            self.pages.setdefault((pa + i) // ps, bytearray(ps))[(pa + i) % ps] = b

    def read_phys(self, pa: int, n: int) -> bytes:
        ps = self.page_size
        out = bytearray()
        while n:
            k = min(n, ps - pa % ps)
            page = self.pages.get(pa // ps, bytes(ps))
            out += page[pa % ps : pa % ps + k]
            pa += k
            n -= k
        return bytes(out)

    def read_pages(self, pfn: int, count: int, out) -> None:  # noqa: ANN001
        memoryview(out)[:] = self.read_phys(pfn * self.page_size, count * self.page_size)


def encode(pa: int, kind: str, ps_shift: int, lpa2: bool, lpa: bool) -> int:
    """A descriptor (kind: table, block, page) for output address ``pa``."""
    low = {"table": 3, "page": 3, "block": 1 | (1 << 16)}[kind]  # a block with nT (FEAT_BBM) set
    if lpa2:
        assert pa < 1 << 52
        oa = (pa & ((1 << 50) - 1) & ~((1 << ps_shift) - 1)) | ((pa >> 50 & 3) << 8)
        attrs = ATTRS
    elif lpa:
        assert pa < 1 << 52
        oa = (pa & ((1 << 48) - 1) & ~0xFFFF) | ((pa >> 48 & 0xF) << 12)
        attrs = ATTRS | (3 << 8)  # SH: inner shareable
    else:
        assert pa < 1 << 48
        oa = pa & ((1 << 48) - 1) & ~((1 << ps_shift) - 1)
        attrs = ATTRS | (3 << 8)
    return oa | attrs | low


class Tables:
    """Builds TTBR1 tables for one configuration."""

    def __init__(self, ps_shift: int, vabits: int, pa_bits: int) -> None:
        self.ps = ps_shift
        self.vabits = vabits
        self.lpa2 = ps_shift != 16 and pa_bits == 52
        self.lpa = ps_shift == 16 and pa_bits == 52
        self.mem = PhysMem(1 << ps_shift)
        self.levels = (vabits - 4) // (ps_shift - 3)
        self.shifts = [ps_shift + (ps_shift - 3) * (self.levels - 1 - d) for d in range(self.levels)]
        # tables above 2^48 (and above 2^50) when the physical address space has 52 bits
        self.next_table = (0x000D_4000_0000_0000 if pa_bits == 52 else 0x0000_4000_0000_0000) // 2
        self.root = self.alloc()

    def alloc(self) -> int:
        pa = self.next_table
        self.next_table += 1 << self.ps
        return pa

    def index(self, va: int, d: int) -> int:
        width = self.vabits - self.shifts[d] if d == 0 else self.ps - 3
        return (va >> self.shifts[d]) & ((1 << width) - 1)

    def map(self, va: int, pa: int, leaf_shift: int) -> None:
        tbl = self.root
        for d, shift in enumerate(self.shifts):
            slot = tbl + self.index(va, d) * 8
            if shift == leaf_shift:
                kind = "page" if d == self.levels - 1 else "block"
                self.mem.write(slot, struct.pack("<Q", encode(pa, kind, self.ps, self.lpa2, self.lpa)))
                return
            e = struct.unpack("<Q", self.mem.read_phys(slot, 8))[0]
            if not e & 1:
                nxt = self.alloc()
                self.mem.write(slot, struct.pack("<Q", encode(nxt, "table", self.ps, self.lpa2, self.lpa)))
                tbl = nxt
            else:
                tbl = self._decode(e)
        raise AssertionError(f"no level with shift {leaf_shift}")

    def _decode(self, e: int) -> int:
        if self.lpa2:
            return (e & ((1 << 50) - 1) & ~((1 << self.ps) - 1)) | ((e >> 8 & 3) << 50)
        if self.lpa:
            return (e & ((1 << 48) - 1) & ~0xFFFF) | ((e >> 12 & 0xF) << 48)
        return e & ((1 << 48) - 1) & ~((1 << self.ps) - 1)

    def mmu(self) -> Arm64Mmu:
        # the image above _PAGE_END(VA_BITS_MIN) (5.4+ layout)
        swapper = top(min(self.vabits, 48) - 1) + 0x10000000
        kimage_voffset = (swapper - self.root) & M64
        pa_bits = 52 if (self.lpa or self.lpa2) else 48
        text = (f"PAGESIZE={1 << self.ps}\nSYMBOL(swapper_pg_dir)={swapper:x}\nSYMBOL(_stext)={swapper:x}\n"
                f"NUMBER(VA_BITS)={self.vabits}\nNUMBER(TCR_EL1_T1SZ)={64 - self.vabits:#x}\n"
                f"NUMBER(PHYS_OFFSET)=0x40000000\nNUMBER(kimage_voffset)={kimage_voffset:#x}\n"
                f"NUMBER(MAX_PHYSMEM_BITS)={pa_bits}\nNUMBER(KERNELPACMASK)={top(self.vabits):#x}\n")
        vi = VmcoreInfo.parse(text.encode())
        return Arm64Arch().mmu(self.mem, vi)  # type: ignore[arg-type]


# (PAGE_SHIFT, VA bits in use, physical address bits, levels the architecture uses)
CONFIGS = [
    (12, 39, 48, 3), (12, 48, 48, 4), (12, 52, 52, 5),
    (14, 36, 48, 2), (14, 47, 48, 3), (14, 48, 48, 4), (14, 52, 52, 4),
    (16, 42, 48, 2), (16, 48, 48, 3), (16, 48, 52, 3), (16, 52, 52, 3),
]


def _id(c: tuple[int, int, int, int]) -> str:
    return f"{1 << (c[0] - 10)}K-va{c[1]}-pa{c[2]}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_levels(cfg):
    ps, vabits, _pa, levels = cfg
    assert levels_for(ps, vabits) == levels
    assert Tables(ps, vabits, _pa).levels == levels


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_translation(cfg):
    ps, vabits, pa_bits, levels = cfg
    t = Tables(ps, vabits, pa_bits)
    rnd = random.Random(ps * 100 + vabits + pa_bits)
    page = 1 << ps
    base = top(vabits)
    high = 0x000F_0000_0000_0000 if pa_bits == 52 else 0x0000_8000_0000_0000  # data above 2^50 / 2^47
    cases = []
    # pages: the first and the last kernel address (top-level index 0 and its maximum), random ones
    vas = [base, M64 & ~(page - 1)] + [base + (rnd.randrange(1 << vabits) & ~(page - 1)) for _ in range(20)]
    for i, va in enumerate(vas):
        pa = high + (i + 1) * 7 * page + rnd.randrange(1 << 20) * page
        pa &= (1 << pa_bits) - 1
        cases.append((va, pa, ps))
    # blocks at every level below the top that can hold one
    for d in range(1, levels - 1):
        shift = t.shifts[d]
        for j in range(3):
            va = base + (((rnd.randrange(1 << vabits)) >> shift) << shift)
            pa = (high + ((j + 3) << shift)) & ((1 << pa_bits) - 1) & ~((1 << shift) - 1)
            cases.append((va, pa, shift))
    seen: dict[int, int] = {}
    kept = []
    for va, pa, shift in cases:
        # a later mapping must not land in an earlier one's table slot or block
        if any((va >> s) == (v >> s) for v, s in seen.items() for s in (max(s, shift),)):
            continue
        seen[va] = shift
        t.map(va, pa, shift)
        kept.append((va, pa, shift))
    assert len(kept) > 10
    mmu = t.mmu()
    assert mmu.levels == levels
    for va, pa, shift in kept:
        off = rnd.randrange(1 << shift)
        assert mmu.vtop(va + off) == pa + off, (hex(va), hex(pa), shift)
        # again, from the leaf cache
        assert mmu.vtop(va + off) == pa + off
        assert mmu.leaf_extent(va + off) == (1 << shift) - off
        # a pointer with a PAC / tag in its top bits (bit 55 still set)
        pac = ((va + off) & ((1 << vabits) - 1)) | (1 << 55) | (rnd.randrange(1 << 8) << 56)
        pac |= rnd.randrange(1 << 55) & ~((1 << vabits) - 1)
        assert mmu.vtop(pac) == pa + off
    # the bytes come from the right physical page
    va, pa, shift = kept[0]
    t.mem.write(pa + 8, b"arm64!")
    assert mmu.read(va + 8, 6) == b"arm64!"


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[2] == 52], ids=_id)
def test_high_physical_bits_come_from_the_descriptor(cfg):
    """PA[51:48] (LPA) or PA[51:50] (LPA2): a page above 2^50 and one at the same low bits below."""
    ps, vabits, pa_bits, _levels = cfg
    t = Tables(ps, vabits, pa_bits)
    page = 1 << ps
    va1, va2 = top(vabits) + 16 * page, top(vabits) + (1 << vabits) // 2
    low = 0x4000_0000
    t.map(va1, low, ps)
    t.map(va2, low | (3 << 50), ps)
    t.mem.write(low, b"low")
    t.mem.write(low | (3 << 50), b"high")
    mmu = t.mmu()
    assert mmu.vtop(va1) == low and mmu.vtop(va2) == low | (3 << 50)
    assert mmu.read(va2, 4) == b"high" and mmu.read(va1, 3) == b"low"


def test_shareability_bits_are_not_address_bits_without_lpa2():
    """A 52-bit VA kernel on a CPU without LPA2 (MAX_PHYSMEM_BITS=48): bits [9:8] are SH."""
    t = Tables(12, 48, 48)
    va = top(48) + 0x1234000
    t.map(va, 0x4567_8000, 12)
    assert t.mmu().vtop(va + 5) == 0x4567_8005


def test_invalid_and_foreign_addresses():
    t = Tables(12, 48, 48)
    va = top(48) + 0x200000
    t.map(va, 0x8000_0000, 12)
    mmu = t.mmu()
    with pytest.raises(KernelDataError, match="not valid"):
        mmu.vtop(va + 0x1000)  # the next PTE is empty
    with pytest.raises(KernelDataError, match="not valid"):
        mmu.vtop(top(48) + (1 << 40))  # no table at all
    with pytest.raises(KernelDataError, match="not a kernel address"):
        mmu.vtop(0x0000_7FFF_0000_0000)  # a user (TTBR0) address


def test_read_across_leaves():
    t = Tables(14, 47, 48)
    va = top(47) + 0x10000000
    t.map(va, 0x9000_0000, 14)
    t.map(va + 0x4000, 0x5000_0000, 14)
    t.mem.write(0x9000_0000 + 0x3FFC, b"abcd")
    t.mem.write(0x5000_0000, b"efgh")
    assert t.mmu().read(va + 0x3FFC, 8) == b"abcdefgh"


# --- the layout from VMCOREINFO (values of the real fixtures, fixtures/README.md) -----------------

REAL = {
    # name: (PAGESIZE, VA_BITS, T1SZ, PHYS_OFFSET, MAX_PHYSMEM_BITS, _stext, mem_section, VMEMMAP_START,
    #        SYMBOL(vmemmap) or None, mem_section's physical address, levels)
    "6.1": (4096, 48, 0x10, 0x40000000, 48, 0xFFFFD42356810000, 0xFFFF00003FDDC380, 0xFFFFFC0000000000,
            None, 0x7FDDC380, 4),
    "6.12": (4096, 52, 0xC, 0x40000000, 52, 0xFFFFA52AE8C10000, 0xFFF000003FCFADC0, 0xFFFFC1FFC0000000,
             0xFFFFC1FFBF000000, 0x7FCFADC0, 5),
    "6.12 lpa2=off": (4096, 52, 0x10, 0xFFF1000040000000, 48, 0xFFFFCECF4F810000, 0xFFFF00003FDEBDC0,
                      0xFFFFC1FFC0000000, 0xFFFFFDFFBF000000, 0x7FDEBDC0, 4),
    "6.12 16k": (16384, 52, 0xC, 0x40000000, 52, 0xFFFFD04BAF610000, 0xFFF000003FEE9C80, 0xFFFFF03FC0000000,
                 0xFFFFF03FBFC00000, 0x7FEE9C80, 4),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_layout_of_the_real_kernels(name):
    ps, va_bits, t1sz, phys_offset, maxpb, stext, ms, vmemmap_start, vmemmap, ms_pa, levels = REAL[name]
    text = (f"PAGESIZE={ps}\nSYMBOL(_stext)={stext:x}\nSYMBOL(mem_section)={ms:x}\nNUMBER(VA_BITS)={va_bits}\n"
            f"NUMBER(TCR_EL1_T1SZ)={t1sz:#x}\nNUMBER(PHYS_OFFSET)={phys_offset:#x}\n"
            f"NUMBER(MAX_PHYSMEM_BITS)={maxpb}\nNUMBER(VMEMMAP_START)={vmemmap_start:#x}\n"
            f"NUMBER(kimage_voffset)=0xffffd42316600000\n")
    lo = Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse(text.encode()), ps)
    assert lo.levels == levels and lo.flipped
    assert lo.page_offset == top(64 - t1sz)  # where the linear map really starts
    assert lo.is_linear(ms) and not lo.is_linear(stext)
    assert lo.lm_to_phys(ms) == ms_pa == lo.pa(ms)
    assert lo.lpa2 == (maxpb == 52)
    if vmemmap is not None:
        assert lo.vmemmap(64) == vmemmap


def test_lowercase_t1sz_and_missing_t1sz():
    """5.9-5.11 wrote NUMBER(tcr_el1_t1sz); 5.4-5.8 nothing (then mem_section tells a 48-bit linear map)."""
    base = "PAGESIZE=4096\nSYMBOL(_stext)=ffff800010080000\nNUMBER(VA_BITS)=52\nNUMBER(PHYS_OFFSET)=0x40000000\n"
    lo = Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse((base + "NUMBER(tcr_el1_t1sz)=0x10\n").encode()), 4096)
    assert lo.vabits_actual == 48 and lo.levels == 4
    lo = Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse((base + "SYMBOL(mem_section)=ffff00003fd00000\n").encode()), 4096)
    assert lo.vabits_actual == 48
    lo = Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse((base + "SYMBOL(mem_section)=fff000003fd00000\n").encode()), 4096)
    assert lo.vabits_actual == 52 and lo.levels == 5


def test_pre_54_layout_is_not_flipped():
    """Before 5.4 the linear map was the upper half of the kernel VA range, the image below it."""
    text = ("PAGESIZE=65536\nSYMBOL(_stext)=ffff000008080000\nNUMBER(VA_BITS)=48\n"
            "NUMBER(PHYS_OFFSET)=0x80000000\nNUMBER(kimage_voffset)=0xfffefff7f0000000\n")
    lo = Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse(text.encode()), 65536)
    assert not lo.flipped and lo.levels == 3
    assert lo.page_offset == 0xFFFF800000000000 and lo.kvbase == 0xFFFF000000000000
    assert lo.is_linear(0xFFFF800012345000) and lo.lm_to_phys(0xFFFF800012345000) == 0x92345000
    assert not lo.is_linear(0xFFFF000008080000)
    assert lo.pa(0xFFFF000008080000) == (0xFFFF000008080000 - 0xFFFEFFF7F0000000) & M64


def test_offsets_from_pt_loads_when_vmcoreinfo_lacks_them():
    """No PHYS_OFFSET / kimage_voffset: read off the vmcore's linear-map and kernel-image PT_LOADs."""
    mem = PhysMem(4096)
    # 52-bit kernel on 48 bits: the linear map at -(1 << 48), PHYS_OFFSET 0xfff1000040000000
    lin = Segment(1, 0, 0, 0xFFFF000000000000 + 0x100000, 0x40100000, 0x1000, 0x1000, 0)
    img = Segment(1, 0, 0, 0xFFFFCECF51000000, 0x41A00000, 0x1000, 0x1000, 0)
    mem.load_segments = [img, lin]
    text = ("PAGESIZE=4096\nSYMBOL(_stext)=ffffcecf4f810000\nNUMBER(VA_BITS)=52\nNUMBER(TCR_EL1_T1SZ)=0x10\n"
            "NUMBER(MAX_PHYSMEM_BITS)=48\n")
    vi = VmcoreInfo.parse(text.encode())
    lo = Arm64Layout.from_vmcoreinfo(vi, 4096, mem)  # type: ignore[arg-type]
    assert lo.phys_offset == 0xFFF1000040000000
    assert lo.kimage_voffset == 0xFFFFCECF51000000 - 0x41A00000
    assert Arm64Arch().phys_base(mem, vi) == 0xFFF1000040000000  # type: ignore[arg-type]


def test_arch_registry_and_refusals():
    arch = for_machine(EM_AARCH64)
    assert isinstance(arch, Arm64Arch) and arch.name == "aarch64" and not arch.signed_char
    assert arch.page_sizes == (4096, 16384, 65536)
    with pytest.raises(VmcoreinfoError, match="8192-byte"):
        Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse(b"NUMBER(VA_BITS)=48\n"), 8192)
    with pytest.raises(VmcoreinfoError, match="not plausible"):
        Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse(b"NUMBER(VA_BITS)=48\nNUMBER(TCR_EL1_T1SZ)=0x20\n"), 4096)
    with pytest.raises(VmcoreinfoError, match="VA_BITS"):
        Arm64Layout.from_vmcoreinfo(VmcoreInfo.parse(b"PAGESIZE=4096\n"), 4096)
