"""Where the struct page arrays are: SPARSEMEM(_EXTREME, _VMEMMAP) decoding (filtering.md §3.5).

The result is one ``Section(pfn_start, pfn_end, mem_map)`` per memory section; ``mem_map`` is the
kernel virtual address of the struct page of ``pfn_start`` (0 when the section has no mem_map).
"""
from __future__ import annotations

import bisect
import struct

from ..record import dataclass
from ..errors import KernelDataError, VmcoreinfoError
from .vmcoreinfo import VmcoreInfo

MASK64 = (1 << 64) - 1
SECTION_MAP_MASK = ~0x1F & MASK64
MIN_SECTION_SIZE_BITS = 20


@dataclass(frozen=True)
class Section:
    pfn_start: int
    pfn_end: int
    mem_map: int  # 0 = no mem_map


class MemMap:
    def __init__(self, sections: list[Section], page_struct_size: int, warnings: list[str], model: str) -> None:
        self.sections = sections
        self.page_struct_size = page_struct_size
        self.warnings = warnings  # shown to the user (message level 2)
        self.model = model  # "SPARSEMEM_EXTREME", "SPARSEMEM" or "FLATMEM"
        self._starts = [s.pfn_start for s in sections]  # ascending

    def overlapping(self, start: int, end: int) -> list[Section]:
        """The sections that meet pfns [start, end), in order (a cycle touches only its own)."""
        lo = max(bisect.bisect_right(self._starts, start) - 1, 0)
        hi = bisect.bisect_left(self._starts, end)
        return [s for s in self.sections[lo:hi] if s.pfn_end > start]


def _sections_with_data(data: list[tuple[int, int]] | None, shift: int, limit: int) -> list[int]:
    """The section numbers below ``limit`` that hold a pfn of the ranges ``data`` (all of them when
    None), ascending."""
    if data is None:
        return list(range(limit))
    out: list[int] = []
    for start, end in sorted(data):
        if end <= start:
            continue
        first = max(start >> shift, out[-1] + 1 if out else 0)
        last = min((end - 1) >> shift, limit - 1)
        out.extend(range(first, last + 1))
    return out


def find_mem_map(vi: VmcoreInfo, reader, max_mapnr: int, page_shift: int, page_offset: int,
                 max_physmem_bits_default: int, section_size_bits_default: int,
                 data: list[tuple[int, int]] | None = None) -> MemMap:
    """Decode mem_section for ``max_mapnr`` pfns. ``reader`` has ``read(va, n)`` (virtual); the defaults
    for kernels whose VMCOREINFO lacks MAX_PHYSMEM_BITS / SECTION_SIZE_BITS are the machine's (Mmu).

    ``data``: the pfn ranges whose contents the dump holds (``DumpSource.data_ranges``). Only the
    sections that hold one of them are decoded (and returned): no other page can be classified, and
    their number follows what the file holds, not what its headers or VMCOREINFO claim (a layout of
    2^40 pfns in one-page sections would otherwise be 2^40 list entries and a 8 TiB root array read).
    Sections past NR_MEM_SECTIONS (2^(MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)) do not exist and
    neither do roots past LENGTH(mem_section): they are never read."""
    for key in ("page.flags", "page._refcount", "page.mapping"):
        if key not in vi.offset and not (key == "page._refcount" and "page._count" in vi.offset):
            raise VmcoreinfoError(f"VMCOREINFO has no OFFSET({key}); can't classify pages")
    size_page = vi.need("SIZE", "page")
    if size_page <= 0 or size_page > 4096:
        raise KernelDataError(f"SIZE(page)={size_page} is not plausible")
    if "mem_section" not in vi.symbol:
        if "mem_map" in vi.symbol:
            ptr = struct.unpack("<Q", reader.read(vi.symbol["mem_map"], 8))[0]
            return MemMap([Section(0, max_mapnr, ptr)], size_page, [], "FLATMEM")
        raise VmcoreinfoError("VMCOREINFO has no SYMBOL(mem_section) (and no mem_map); unsupported memory model")
    size_ms = vi.need("SIZE", "mem_section")
    off_smm = vi.need("OFFSET", "mem_section.section_mem_map")
    if size_ms <= 0 or size_ms > 4096:
        raise KernelDataError(f"SIZE(mem_section)={size_ms} is not plausible")
    if not 0 <= off_smm <= size_ms - 8:
        raise KernelDataError(f"OFFSET(mem_section.section_mem_map)={off_smm} lies outside SIZE(mem_section)={size_ms}")
    section_size_bits = vi.number.get("SECTION_SIZE_BITS", section_size_bits_default)
    max_physmem_bits = vi.number.get("MAX_PHYSMEM_BITS", max_physmem_bits_default)
    # no kernel has sections below 16 MiB (powerpc's SECTION_SIZE_BITS=24 is the smallest there is): a
    # smaller value is corruption, and would multiply the sections to decode (1 MiB is the floor here)
    if not (max(page_shift, MIN_SECTION_SIZE_BITS) <= section_size_bits < max_physmem_bits <= 64):
        raise KernelDataError(f"SECTION_SIZE_BITS={section_size_bits}, MAX_PHYSMEM_BITS={max_physmem_bits} are not plausible")
    pfn_section_shift = section_size_bits - page_shift
    pages_per_section = 1 << pfn_section_shift
    num_section = -(-max_mapnr // pages_per_section)
    page_size = 1 << page_shift
    spr = page_size // size_ms
    nr_mem_sections = 1 << (max_physmem_bits - section_size_bits)
    length = vi.length.get("mem_section")
    extreme = length is None or length == -(-nr_mem_sections // spr)
    warnings: list[str] = []
    first_error: list[str] = []  # why the first unreadable root / mem_section could not be read

    # the sections to decode: those below NR_MEM_SECTIONS (and below the roots LENGTH(mem_section)
    # gives) that hold data
    limit = min(num_section, nr_mem_sections)
    if extreme and length is not None and length > 0:
        limit = min(limit, length * spr)
    wanted = _sections_with_data(data, pfn_section_shift, limit)

    def decode(base: int) -> dict[int, int] | None:
        mem_maps: dict[int, int] = {}
        ok = False
        root_blocks: dict[int, bytes] = {}  # the root array, read a page at a time as sections need it

        def root(i: int) -> int:
            blk = (i * 8) // page_size
            raw = root_blocks.get(blk)
            if raw is None:
                n = min(page_size, -(-limit // spr) * 8 - blk * page_size)
                raw = reader.read((base + blk * page_size) & MASK64, n)
                root_blocks.clear()
                root_blocks[blk] = raw
            return int(struct.unpack_from("<Q", raw, i * 8 - blk * page_size)[0])

        if extreme and wanted:
            try:
                root(wanted[0] // spr)
            except KernelDataError as e:
                first_error.append(str(e))
                return None
        cache: dict[int, bytes] = {}
        for s in wanted:
            if extreme:
                try:
                    r = root(s // spr)
                except KernelDataError as e:
                    first_error.append(str(e))
                    continue
                if r == 0:
                    continue
                ms_addr = (r + (s % spr) * size_ms) & MASK64
                blk = r
            else:
                ms_addr = (base + s * size_ms) & MASK64
                blk = None
            if ms_addr < page_offset:
                continue
            try:
                if blk is not None:
                    chunk = cache.get(blk)
                    if chunk is None:
                        chunk = reader.read(blk, spr * size_ms)
                        cache = {blk: chunk}
                    raw = struct.unpack_from("<Q", chunk, (s % spr) * size_ms + off_smm)[0]
                else:
                    raw = struct.unpack("<Q", reader.read(ms_addr + off_smm, 8))[0]
            except KernelDataError as e:
                first_error.append(str(e))
                continue  # Q9: an unreadable mem_section is "no mem_map"
            if not raw & 1:
                continue
            if raw & 0x20:
                warnings.append(f"mem_section[{s}] has flag bit 5 set; mem_map decoded with the 5-bit mask")
            mm = ((raw & SECTION_MAP_MASK) + (s << pfn_section_shift) * size_page) & MASK64
            if mm < page_offset:
                return None
            mem_maps[s] = mm
            ok = True
        return mem_maps if ok else None

    root = vi.symbol["mem_section"]
    maps = decode(root)
    if maps is None and extreme:
        try:
            ptr = struct.unpack("<Q", reader.read(root, 8))[0]
            maps = decode(ptr) if ptr else None
        except KernelDataError:
            maps = None
    if maps is None:
        why = f" ({first_error[0]})" if first_error else ""
        raise KernelDataError(f"Could not validate mem_section at {root:#x}: no section has a plausible mem_map{why}")
    sections = []
    for s in wanted:
        start = s * pages_per_section
        sections.append(Section(start, min(start + pages_per_section, max_mapnr), maps.get(s, 0)))
    return MemMap(sections, size_page, warnings, "SPARSEMEM_EXTREME" if extreme else "SPARSEMEM")
