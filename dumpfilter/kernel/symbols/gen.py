"""``-g VMCOREINFO -x VMLINUX``: the VMCOREINFO file makedumpfile 1.7.2 writes for a debuginfo vmlinux
(``generate_vmcoreinfo``, ``write_vmcoreinfo_data``; formats-cli.md §5.7), line for line.

Every value is looked up the way makedumpfile looks it up: symbols are the ELF symbol table's first
entry of that name (link-time addresses, 0 = absent); struct sizes and member offsets come from the
first complete ``struct NAME`` (or a typedef NAME of one), members searched depth first through nested
structs and unions; numbers are enumerators; lengths are an array's first dimension; ``SRCFILE(pud_t)``
is the file that declares the typedef. Entries makedumpfile only fills from a dump's VMCOREINFO
(``sme_mask``, ``phys_base``, ``PAGE_BUDDY_MAPCOUNT_VALUE``, ``SIZE(pageflags)``, ...) are absent, as in
its output.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

from ...errors import DumpfilterError, OutputError
from .types import ARRAY, QUAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .dwarf import VmlinuxSymbols

FOUND_ARRAY_TYPE = (1 << 63) - 2  # makedumpfile's LONG_MAX - 1: "an array of unknown length"

SYMBOLS = ["mem_map", "vmem_map", "mem_section", "pkmap_count", "pkmap_count_next", "system_utsname", "init_uts_ns",
           "_stext", "swapper_pg_dir", "init_level4_pgt", "level4_kernel_pgt", "init_top_pgt", "vmlist",
           "vmap_area_list", "node_online_map", "node_states", "node_data", "pgdat_list", "contig_page_data", "prb",
           "clear_seq", "log_buf", "log_buf_len", "log_end", "log_first_idx", "clear_idx", "log_next_idx", "max_pfn",
           "high_memory", "node_remap_start_vaddr", "node_remap_end_vaddr", "node_remap_start_pfn", "vmemmap_list",
           "mmu_psize_defs", "mmu_vmemmap_psize", "cpu_pgd", "demote_segment_4k", "cur_cpu_spec", "free_huge_page"]
SIZES_HEAD = ["page", "mem_section", "pglist_data", "zone", "free_area", "list_head", "node_memblk_s"]
PRB_SIZES = ["printk_ringbuffer", "prb_desc", "printk_info", "latched_seq"]
OFFSETS_HEAD = ["page.flags", "@refcount", "page.mapping", "page.lru", "page._mapcount", "page.private",
                "page.compound_dtor", "page.compound_order", "page.compound_head", "mem_section.section_mem_map",
                "pglist_data.node_zones", "pglist_data.nr_zones", "pglist_data.node_mem_map",
                "pglist_data.node_start_pfn", "pglist_data.node_spanned_pages", "pglist_data.pgdat_next",
                "zone.free_pages", "zone.free_area", "zone.vm_stat", "zone.spanned_pages", "free_area.free_list",
                "list_head.next", "list_head.prev", "node_memblk_s.start_paddr", "node_memblk_s.size",
                "node_memblk_s.nid", "vm_struct.addr", "vmap_area.va_start", "vmap_area.list"]
PRB_OFFSETS = ["printk_ringbuffer.desc_ring", "printk_ringbuffer.text_data_ring", "prb_desc_ring.count_bits",
               "prb_desc_ring.descs", "prb_desc_ring.infos", "prb_desc_ring.head_id", "prb_desc_ring.tail_id",
               "prb_desc.state_var", "prb_desc.text_blk_lpos", "prb_data_blk_lpos.begin", "prb_data_blk_lpos.next",
               "prb_data_ring.size_bits", "prb_data_ring.data", "printk_info.ts_nsec", "printk_info.text_len",
               "atomic_long_t.counter", "latched_seq.val"]
LOG_OFFSETS = ["ts_nsec", "len", "text_len"]
OFFSETS_TAIL = ["vmemmap_backing.phys", "vmemmap_backing.virt_addr", "vmemmap_backing.list", "mmu_psize_def.shift",
                "cpu_spec.mmu_features", "uts_namespace.name"]
ENUMS = ["NR_FREE_PAGES", "N_ONLINE", "pgtable_l5_enabled", "PG_lru", "PG_private", "@PG_head_mask", "PG_swapcache",
         "PG_swapbacked", "PG_buddy", "PG_slab", "PG_hwpoison", "HUGETLB_PAGE_DTOR"]


class _Gen:
    def __init__(self, syms: VmlinuxSymbols) -> None:
        self.s = syms
        self.prog = syms.types.prog

    def symbol(self, name: str) -> int | None:
        v = self.s.link_address(name)
        return v or None

    def size(self, name: str) -> int | None:
        t = self.s.struct(name)
        return t.size if t is not None and t.size else None

    def typedef_size(self, name: str) -> int | None:
        t = self.s.lookup_type(name)
        if t is None or t.kind != "typedef":
            return None
        while t.kind == "typedef" and t.target is not None:
            t = t.target
        return t.size if t.size and t.size > 0 else None

    def offset(self, path: str) -> int | None:
        from ...filter.erase import find_member

        sname, member = path.split(".", 1)
        st = self.s.struct(sname)
        if st is None:
            return None
        got = find_member(st, member)
        return got[0] if got is not None else None

    def member_length(self, path: str) -> int | None:
        from ...filter.erase import find_member

        sname, member = path.split(".", 1)
        st = self.s.struct(sname)
        got = find_member(st, member) if st is not None else None
        if got is None:
            return None
        t = got[1]
        if t.kind == QUAL and t.target is not None:
            t = t.target
        return t.length if t.kind == ARRAY and t.length else None

    def var_array(self, name: str, length: bool) -> int | None:
        t = self.s.var_type(name)
        if t is None:
            return None
        if t.kind == QUAL and t.target is not None:
            t = t.target
        if t.kind != ARRAY:
            return None
        return (t.length or None) if length else FOUND_ARRAY_TYPE

    def enum(self, name: str) -> int | None:
        try:
            obj = self.prog.constant(name)
        except (LookupError, ValueError):
            return None
        return int(obj.value_())

    def srcfile(self, typedef: str) -> str | None:
        return _decl_file(self.s.path, typedef)

    def osrelease(self) -> str:
        addr = self.symbol("init_uts_ns")
        if addr is None:
            raise DumpfilterError(f"{self.s.path}: Can't get the symbol of system_utsname.")
        off = self.s.offsetof("struct uts_namespace", "name.release")
        raw = _read_vaddr(self.s.path, addr + off, 65)
        return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _read_vaddr(path: str, vaddr: int, size: int) -> bytes:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
                f.seek(seg["p_offset"] + vaddr - seg["p_vaddr"])
                return f.read(size)
    raise DumpfilterError(f"{path}: address {vaddr:#x} is not in the file")


class _DwarfDie(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_void_p), ("cu", ctypes.c_void_p), ("abbrev", ctypes.c_void_p),
                ("padding", ctypes.c_long)]


def _decl_file(path: str, typedef: str) -> str | None:
    """The declaring file of the first top-level typedef ``typedef``, as libdw's dwarf_decl_file gives it
    (makedumpfile's search_typedef). libdw (elfutils, which makedumpfile itself links) walks the DWARF in
    C; without it the line is left out."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("dw") or "libdw.so.1")
    except OSError:
        return None
    lib.dwarf_begin.restype = ctypes.c_void_p
    lib.dwarf_begin.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.dwarf_nextcu.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64),
                                 ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.dwarf_offdie.restype = ctypes.c_void_p
    lib.dwarf_offdie.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(_DwarfDie)]
    lib.dwarf_child.argtypes = [ctypes.POINTER(_DwarfDie), ctypes.POINTER(_DwarfDie)]
    lib.dwarf_siblingof.argtypes = [ctypes.POINTER(_DwarfDie), ctypes.POINTER(_DwarfDie)]
    lib.dwarf_tag.argtypes = [ctypes.POINTER(_DwarfDie)]
    lib.dwarf_diename.restype = ctypes.c_char_p
    lib.dwarf_diename.argtypes = [ctypes.POINTER(_DwarfDie)]
    lib.dwarf_decl_file.restype = ctypes.c_char_p
    lib.dwarf_decl_file.argtypes = [ctypes.POINTER(_DwarfDie)]
    lib.dwarf_end.argtypes = [ctypes.c_void_p]
    want = typedef.encode()
    fd = os.open(path, os.O_RDONLY)
    try:
        dw = lib.dwarf_begin(fd, 0)
        if not dw:
            return None
        try:
            off = ctypes.c_uint64(0)
            nxt = ctypes.c_uint64(0)
            hsize = ctypes.c_size_t(0)
            while lib.dwarf_nextcu(dw, off.value, ctypes.byref(nxt), ctypes.byref(hsize), None, None, None) == 0:
                cu, child = _DwarfDie(), _DwarfDie()
                if lib.dwarf_offdie(dw, off.value + hsize.value, ctypes.byref(cu)) and \
                        lib.dwarf_child(ctypes.byref(cu), ctypes.byref(child)) == 0:
                    while True:
                        if lib.dwarf_tag(ctypes.byref(child)) == 0x16 and lib.dwarf_diename(ctypes.byref(child)) == want:
                            src = lib.dwarf_decl_file(ctypes.byref(child))
                            if src:
                                return src.decode("utf-8", "replace")
                        if lib.dwarf_siblingof(ctypes.byref(child), ctypes.byref(child)) != 0:
                            break
                off.value = nxt.value
        finally:
            lib.dwarf_end(dw)
    finally:
        os.close(fd)
    return None


def generate(vmlinux: str) -> str:
    from .dwarf import VmlinuxSymbols

    g = _Gen(VmlinuxSymbols(vmlinux, None))
    out = [f"OSRELEASE={g.osrelease()}", f"PAGESIZE={os.sysconf('SC_PAGE_SIZE')}"]
    for name in SYMBOLS:
        v = g.symbol(name) if name != "pkmap_count_next" else None
        if v is not None:
            out.append(f"SYMBOL({name})={v:x}")
    sizes: list[tuple[str, int | None]] = [(n, g.size(n)) for n in SIZES_HEAD]
    sizes.append(("nodemask_t", g.typedef_size("nodemask_t")))
    prb = g.size("printk_ringbuffer") is not None
    plog = g.size("printk_log") is not None
    if prb:
        sizes += [(n, g.size(n)) for n in PRB_SIZES]
    elif plog:
        sizes.append(("printk_log", g.size("printk_log")))
    else:
        sizes.append(("log", g.size("log")))
    sizes += [(n, g.size(n)) for n in ("vmemmap_backing", "mmu_psize_def")]
    out += [f"SIZE({n})={v}" for n, v in sizes if v is not None]
    offs: list[tuple[str, int | None]] = []
    for path in OFFSETS_HEAD:
        if path == "@refcount":
            v = g.offset("page._refcount")
            offs.append(("page._refcount", v) if v is not None else ("page._count", g.offset("page._count")))
        else:
            offs.append((path, g.offset(path)))
    if prb:
        offs += [(p, g.offset(p)) for p in PRB_OFFSETS]
    elif plog:
        offs += [(f"printk_log.{m}", g.offset(f"printk_log.{m}")) for m in LOG_OFFSETS]
    else:
        offs += [(f"log.{m}", g.offset(f"log.{m}")) for m in LOG_OFFSETS]
    offs += [(p, g.offset(p)) for p in OFFSETS_TAIL]
    out += [f"OFFSET({n})={v}" for n, v in offs if v is not None]
    lengths: list[tuple[str, int | None]] = []
    if g.symbol("node_data") is not None:
        lengths.append(("node_data", g.var_array("node_data", False)))
    for name in ("pgdat_list", "mem_section", "node_memblk", "node_remap_start_pfn"):
        if g.symbol(name) is not None:
            lengths.append((name, g.var_array(name, True)))
    lengths += [(p, g.member_length(p)) for p in ("zone.free_area", "free_area.free_list")]
    out += [f"LENGTH({n})={v}" for n, v in lengths if v is not None]
    for name in ENUMS:
        if name == "@PG_head_mask":
            v = g.enum("PG_head_mask")
            if v is None:
                head = g.enum("PG_head")
                head = head if head is not None else g.enum("PG_compound")
                v = 1 << head if head is not None else None
            name = "PG_head_mask"
        else:
            v = g.enum(name)
        if v is not None:
            out.append(f"NUMBER({name})={v}")
    src = g.srcfile("pud_t")
    if src:
        out.append(f"SRCFILE(pud_t)={src}")
    return "\n".join(out) + "\n"


def write_vmcoreinfo(vmlinux: str, path: str, force: bool = False) -> None:
    text = generate(vmlinux)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise OutputError(f"{path} already exists (use -f to overwrite it)") from None
    except OSError as e:
        raise OutputError(f"Can't open the vmcoreinfo file({path}). {e.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


_ = struct
