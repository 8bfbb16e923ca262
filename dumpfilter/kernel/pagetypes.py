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
    pass_always: bool  # NUMBER(PG_hwpoison) exists: the classification pass runs at every level
    buddy_available: bool
    notes: list[str]

    def get(self, name: str) -> int:
        return int(self.params[P[name]])


def derive(vi: VmcoreInfo) -> PageTypes:
    n, off, size, length = vi.number, vi.offset, vi.size, vi.length
    notes: list[str] = []
    v = array("q", [UNKNOWN] * len(P_NAMES))

    def setp(name: str, value: int | None) -> None:
        if value is not None:
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
    return PageTypes(v, "PG_hwpoison" in n, buddy, notes)
