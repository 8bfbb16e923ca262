"""Page flag bits and page_type values for the classifier, from VMCOREINFO (filtering.md §2.3–2.6, §5.5).

Never from a kernel-version table where VMCOREINFO says it; makedumpfile's legacy defaults
(get_value_for_old_linux) fill the gaps exactly as it does, including PG_slab = 7 on 6.10+.
"""
from __future__ import annotations

from array import array

from ..record import dataclass
from ..errors import VmcoreinfoError
from .vmcoreinfo import VmcoreInfo

U32 = 0xFFFFFFFF
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# indices into the int64 parameter vector handed to the Cython classifier (_speedups/classify.pyx)
P_NAMES = [
    "size_page", "off_flags", "off_mapping", "off_mapcount", "off_private", "off_compound_head",
    "pg_lru", "pg_private", "pg_swapcache", "pg_swapbacked", "pg_slab", "pg_hwpoison", "pg_head_mask",
    "buddy_value", "offline_value", "hugetlb_mc_value", "slab_mc_value", "unaccepted_value",
    "pg_hugetlb", "order_off", "dtor_off", "hugetlb_dtor", "free_area_len", "buddy_available",
]
P = {name: i for i, name in enumerate(P_NAMES)}
UNKNOWN = -1


@dataclass
class PageTypes:
    params: array  # array('q'), int64[len(P_NAMES)]: a buffer for classify_section's const int64_t[::1]
    buddy_available: bool
    notes: list[str]

    def get(self, name: str) -> int:
        return int(self.params[P[name]])

    def describe(self, level: int) -> list[str]:
        """What -D prints: the values the classifier uses and its rule per kind (filtering.md §5.4)."""
        g = self.get
        known = [f"{n}={g(n):#x}" for n in P_NAMES if g(n) != UNKNOWN]
        out = ["struct page keys  : " + " ".join(known)]
        cache = f"PG_lru({g('pg_lru')}) or PG_swapcache({g('pg_swapcache')}) with PG_swapbacked, not anon"
        rules = [
            (16, "free pages        : (u32)_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE, 2^page.private pages"
                 + ("" if self.buddy_available else " (not available: keys missing)")),
            (2, f"non-private cache : {cache}, without PG_private({g('pg_private')})"),
            (4, f"cache             : {cache}, PG_private or not"),
            (8, "user data         : page.mapping & 1 and not slab, or a hugetlb folio"),
        ]
        out += [text for bit, text in rules if level & bit]
        if g("pg_hwpoison") != UNKNOWN:
            out.append(f"hwpoison          : PG_hwpoison({g('pg_hwpoison')}) set, at every level")
        if g("offline_value") != UNKNOWN:
            out.append("offline           : (u32)_mapcount == PAGE_OFFLINE_MAPCOUNT_VALUE, at every level")
        return out + self.notes


def derive(vi: VmcoreInfo) -> PageTypes:
    n, off, size, length = vi.number, vi.offset, vi.size, vi.length
    notes: list[str] = []
    v = array("q", [UNKNOWN] * len(P_NAMES))

    def setp(name: str, value: int | None) -> None:
        # the classifier takes int64 parameters: a value (or one derived from values, as PG_swapbacked
        # or a folio offset) outside that range is corrupt VMCOREINFO, refused here by name
        if value is not None:
            if not INT64_MIN <= value <= INT64_MAX:
                raise VmcoreinfoError(f"VMCOREINFO: the struct page parameter {name} = {value:#x} (from the "
                                      "VMCOREINFO values) does not fit in 64 bits; the VMCOREINFO is corrupt")
            v[P[name]] = value

    if "page" not in size:
        raise VmcoreinfoError("VMCOREINFO has no SIZE(page)")
    setp("size_page", size["page"])
    for key, name in (("page.flags", "off_flags"), ("page.mapping", "off_mapping")):
        if key not in off:
            raise VmcoreinfoError(f"VMCOREINFO has no OFFSET({key})")
        setp(name, off[key])
    setp("off_mapcount", off.get("page._mapcount"))
    setp("off_private", off.get("page.private"))
    setp("off_compound_head", off.get("page.compound_head", off.get("page.compound_info")))

    pg_lru = n.get("PG_lru", 5)
    pg_private = n.get("PG_private", 11)
    pg_swapcache = n.get("PG_swapcache", 15)
    pg_swapbacked = n.get("PG_swapbacked")
    if pg_swapbacked is None and pg_swapcache < pg_private:
        pg_swapbacked = pg_private + 6
    pg_slab = n.get("PG_slab")
    if pg_slab is None:
        pg_slab = 7
        notes.append("NUMBER(PG_slab) absent: flags bit 7 counts as slab (makedumpfile's fallback)")
    setp("pg_lru", pg_lru)
    setp("pg_private", pg_private)
    setp("pg_swapcache", pg_swapcache)
    setp("pg_swapbacked", pg_swapbacked)
    setp("pg_slab", pg_slab)
    setp("pg_hwpoison", n.get("PG_hwpoison"))
    setp("pg_head_mask", n.get("PG_head_mask", 1 << 14))

    def u32(key: str) -> int | None:
        x = n.get(key)
        return None if x is None else x & U32

    setp("buddy_value", u32("PAGE_BUDDY_MAPCOUNT_VALUE"))
    setp("offline_value", u32("PAGE_OFFLINE_MAPCOUNT_VALUE"))
    setp("hugetlb_mc_value", u32("PAGE_HUGETLB_MAPCOUNT_VALUE"))
    setp("slab_mc_value", u32("PAGE_SLAB_MAPCOUNT_VALUE"))
    setp("unaccepted_value", u32("PAGE_UNACCEPTED_MAPCOUNT_VALUE"))
    setp("pg_hugetlb", n.get("PG_hugetlb"))
    sp = size["page"]
    if "folio._folio_order" in off:
        setp("order_off", off["folio._folio_order"] - sp)
    elif "page.compound_order" in off:
        setp("order_off", off["page.compound_order"])
    if "folio._folio_dtor" in off:
        setp("dtor_off", off["folio._folio_dtor"] - sp)
    elif "page.compound_dtor" in off:
        setp("dtor_off", off["page.compound_dtor"])
    setp("hugetlb_dtor", n.get("HUGETLB_PAGE_DTOR"))
    setp("free_area_len", length.get("zone.free_area"))
    buddy = "PAGE_BUDDY_MAPCOUNT_VALUE" in n and "page._mapcount" in off and "page.private" in off
    v[P["buddy_available"]] = 1 if buddy else 0
    _check_geometry(v)
    return PageTypes(v, buddy, notes)


#: (parameter, bytes read there, the VMCOREINFO key it comes from) for every field the classifier reads
_FIELDS = (
    ("off_flags", 8, "OFFSET(page.flags)"),
    ("off_mapping", 8, "OFFSET(page.mapping)"),
    ("off_mapcount", 4, "OFFSET(page._mapcount)"),
    ("off_private", 8, "OFFSET(page.private)"),
    ("off_compound_head", 8, "OFFSET(page.compound_head)"),
    ("order_off", 1, "the folio order offset (OFFSET(folio._folio_order) - SIZE(page))"),
    ("dtor_off", 1, "the folio dtor offset (OFFSET(folio._folio_dtor) - SIZE(page))"),
)
MAX_STRUCT_PAGE = 256  # bytes; 64 on every 64-bit kernel we know, the classifier's buffer limit


def _check_geometry(v: array) -> None:
    """Every field the classifier reads must lie inside one struct page: a VMCOREINFO that says
    otherwise (corrupt or hostile) is refused here, before any byte is read (filtering.md §5.2)."""
    sp = v[P["size_page"]]
    if not 8 <= sp <= MAX_STRUCT_PAGE or sp % 4:
        raise VmcoreinfoError(f"SIZE(page)={sp} is not a plausible struct page size (8..{MAX_STRUCT_PAGE} bytes)")
    for name, width, key in _FIELDS:
        off = v[P[name]]
        if off == UNKNOWN and name not in ("off_flags", "off_mapping"):
            continue  # absent: the classifier does without it
        if not 0 <= off <= sp - width:
            raise VmcoreinfoError(f"{key}={off} lies outside SIZE(page)={sp}; the VMCOREINFO is corrupt")
    fal = v[P["free_area_len"]]
    if fal != UNKNOWN and not 1 <= fal <= 31:
        raise VmcoreinfoError(f"LENGTH(zone.free_area)={fal} is not plausible (1..31 orders)")
