# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The struct page classifier: one call per memory section, GIL released (filtering.md §5.4).

Decision chain, first match wins: tail page → skip; buddy (level 16) → free, whole 2^private block;
unaccepted (level 16) → free, MAX_ORDER block; cache without private (level 2); cache (level 4,
private or not); anon or hugetlb (level 8) → user; hwpoison; offline. A compound head that matches
excludes its whole 2^order range; the loop then continues after that range.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

# parameter vector indices: keep in sync with dumpfilter/kernel/pagetypes.py P_NAMES
DEF I_SIZE_PAGE = 0
DEF I_OFF_FLAGS = 1
DEF I_OFF_MAPPING = 2
DEF I_OFF_MAPCOUNT = 3
DEF I_OFF_PRIVATE = 4
DEF I_OFF_COMPOUND_HEAD = 5
DEF I_PG_LRU = 6
DEF I_PG_PRIVATE = 7
DEF I_PG_SWAPCACHE = 8
DEF I_PG_SWAPBACKED = 9
DEF I_PG_SLAB = 10
DEF I_PG_HWPOISON = 11
DEF I_PG_HEAD_MASK = 12
DEF I_BUDDY = 13
DEF I_OFFLINE = 14
DEF I_HUGETLB_MC = 15
DEF I_SLAB_MC = 16
DEF I_UNACCEPTED = 17
DEF I_PG_HUGETLB = 18
DEF I_ORDER_OFF = 19
DEF I_DTOR_OFF = 20
DEF I_HUGETLB_DTOR = 21
DEF I_FREE_AREA_LEN = 22
DEF I_BUDDY_AVAILABLE = 23
DEF NPARAMS = 24

# counters
DEF C_FREE = 0
DEF C_CACHE = 1
DEF C_CACHE_PRIVATE = 2
DEF C_USER = 3
DEF C_HWPOISON = 4
DEF C_OFFLINE = 5
DEF C_BAD_ORDER = 6

cdef uint64_t HUGETLB_MARK = 0xFFFFFFFFFFFFFFFFULL


cdef inline uint64_t rd64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline bint test_bit(int64_t nr, uint64_t flags) noexcept nogil:
    # makedumpfile builds a C int mask 1 << (nr & 31): bit 31 sign-extends
    cdef int64_t b = nr & 31
    cdef uint64_t mask
    if b == 31:
        mask = 0xFFFFFFFF80000000ULL
    else:
        mask = (<uint64_t>1) << b
    return (flags & mask) != 0


cdef inline void clear_range(uint8_t* bm, int64_t nbits, int64_t start, int64_t end) noexcept nogil:
    cdef int64_t p
    if end > nbits:
        end = nbits
    if start < 0:
        start = 0
    p = start
    while p < end and (p & 7):
        bm[p >> 3] &= ~(1 << (p & 7))
        p += 1
    while p + 8 <= end:
        bm[p >> 3] = 0
        p += 8
    while p < end:
        bm[p >> 3] &= ~(1 << (p & 7))
        p += 1


def classify_section(const uint8_t[::1] pages, int64_t pfn_start, int64_t npages, const int64_t[::1] P,
                     int level, uint8_t[::1] bitmap, int64_t nbits, int64_t[::1] counts, int64_t bm_base=0):
    """Classify ``npages`` struct pages (of pfns pfn_start..) and clear excluded pfns in ``bitmap``.

    ``bitmap`` holds ``nbits`` pfns starting at pfn ``bm_base`` (one cycle); exclusions beyond it are
    clipped (cycles are aligned so that no buddy block or folio crosses them).

    ``counts`` accumulates pages per kind (free, cache, cache_private, user, hwpoison, offline) and
    the number of buddy pages with an invalid order.
    """
    if P.shape[0] < NPARAMS or counts.shape[0] < 7:
        raise ValueError("classify_section: bad parameter vector")
    cdef int64_t sp = P[I_SIZE_PAGE]
    if sp <= 0 or pages.shape[0] < npages * sp:
        raise ValueError("classify_section: struct page buffer too small")
    cdef int64_t off_flags = P[I_OFF_FLAGS], off_mapping = P[I_OFF_MAPPING]
    cdef int64_t off_mapcount = P[I_OFF_MAPCOUNT], off_private = P[I_OFF_PRIVATE]
    cdef int64_t off_ch = P[I_OFF_COMPOUND_HEAD]
    cdef int64_t pg_lru = P[I_PG_LRU], pg_private = P[I_PG_PRIVATE], pg_swapcache = P[I_PG_SWAPCACHE]
    cdef int64_t pg_swapbacked = P[I_PG_SWAPBACKED], pg_slab = P[I_PG_SLAB], pg_hwpoison = P[I_PG_HWPOISON]
    cdef uint64_t head_mask = <uint64_t>P[I_PG_HEAD_MASK]
    cdef int64_t buddy_v = P[I_BUDDY], offline_v = P[I_OFFLINE], hugetlb_mc_v = P[I_HUGETLB_MC]
    cdef int64_t slab_mc_v = P[I_SLAB_MC], unacc_v = P[I_UNACCEPTED], pg_hugetlb = P[I_PG_HUGETLB]
    cdef int64_t order_off = P[I_ORDER_OFF], dtor_off = P[I_DTOR_OFF], hugetlb_dtor = P[I_HUGETLB_DTOR]
    cdef int64_t free_area_len = P[I_FREE_AREA_LEN]
    cdef bint buddy_ok = P[I_BUDDY_AVAILABLE] != 0
    cdef const uint8_t* base = &pages[0]
    cdef uint8_t* bm = &bitmap[0]
    cdef int64_t i, pfn, nr, order, kind
    cdef uint64_t flags, mapping, private, ch, dtor, f1
    cdef uint32_t mapcount
    cdef const uint8_t* pg
    cdef const uint8_t* nxt
    cdef bint slab, anon, cache, priv, head
    cdef uint8_t zero_page[256]
    cdef int64_t c_free = 0, c_cache = 0, c_cpriv = 0, c_user = 0, c_hwp = 0, c_off = 0, c_bad = 0
    if sp > 256 or sp < 8:
        raise ValueError("classify_section: SIZE(page) must be 8..256 bytes")
    # every field read must lie inside the struct page (dumpfilter.kernel.pagetypes checks the same
    # with a message naming the VMCOREINFO key; this guards the C code itself)
    if not (0 <= off_flags <= sp - 8 and 0 <= off_mapping <= sp - 8 and off_mapcount <= sp - 4
            and off_ch <= sp - 8 and off_private <= sp - 8 and free_area_len <= 31):
        raise ValueError("classify_section: a struct page field lies outside SIZE(page)")
    for i in range(256):
        zero_page[i] = 0
    with nogil:
        i = 0
        while i < npages:
            pfn = pfn_start + i
            pg = base + i * sp
            flags = rd64(pg + off_flags)
            mapping = rd64(pg + off_mapping)
            mapcount = rd32(pg + off_mapcount) if off_mapcount >= 0 else 0
            ch = rd64(pg + off_ch) if off_ch >= 0 else 0
            private = rd64(pg + off_private) if off_private >= 0 else 0
            order = 0
            dtor = 0
            head = (flags & head_mask) != 0
            if head and (pfn & 511) < 511:
                # Q7: beyond the block, the next struct page reads as zeros
                nxt = pg + sp if i + 1 < npages else zero_page
                if hugetlb_mc_v >= 0:
                    order = rd64(nxt + off_flags) & 0xff
                    if mapcount == <uint32_t>hugetlb_mc_v:
                        dtor = HUGETLB_MARK
                elif pg_hugetlb >= 0:
                    f1 = rd64(nxt + off_flags)
                    order = f1 & 0xff
                    if pg_hugetlb < 64 and (f1 & ((<uint64_t>1) << pg_hugetlb)):
                        dtor = HUGETLB_MARK
                else:
                    if order_off >= 0 and order_off < sp:
                        order = nxt[order_off]
                    if dtor_off >= 0 and dtor_off < sp:
                        dtor = nxt[dtor_off]
                if order >= 64 or (pfn & (((<int64_t>1) << order) - 1)) != 0:
                    order = 0  # Q5: the hugetlb mark stays
            if order >= 31:
                order = 0  # Q8: an int shift this large is undefined in C; unreachable on sane data
            nr = (<int64_t>1) << order
            kind = -1
            slab = (slab_mc_v >= 0 and mapcount == <uint32_t>slab_mc_v) or \
                   (pg_slab >= 0 and pg_slab < 64 and (flags & ((<uint64_t>1) << pg_slab)) != 0)
            anon = (mapping & 1) != 0 and not slab
            cache = test_bit(pg_lru, flags) or \
                    ((pg_swapbacked < 0 or test_bit(pg_swapbacked, flags)) and test_bit(pg_swapcache, flags))
            priv = test_bit(pg_private, flags)
            if ch & 1:
                i += 1
                continue
            elif (level & 16) and buddy_ok and not slab and mapcount == <uint32_t>buddy_v:
                if free_area_len >= 0 and private >= <uint64_t>free_area_len:
                    c_bad += 1
                    i += 1
                    continue
                if private >= 31:
                    c_bad += 1
                    i += 1
                    continue
                nr = (<int64_t>1) << private
                kind = C_FREE
            elif (level & 16) and unacc_v >= 0 and mapcount == <uint32_t>unacc_v and free_area_len > 0:
                nr = (<int64_t>1) << (free_area_len - 1)
                kind = C_FREE
            elif (level & 2) and cache and not priv and not anon:
                kind = C_CACHE
            elif (level & 4) and cache and not anon:
                kind = C_CACHE_PRIVATE if priv else C_CACHE
            elif (level & 8) and (anon or dtor == HUGETLB_MARK or (hugetlb_dtor >= 0 and dtor == <uint64_t>hugetlb_dtor)):
                kind = C_USER
            elif pg_hwpoison >= 0 and test_bit(pg_hwpoison, flags):
                kind = C_HWPOISON
            elif offline_v >= 0 and not slab and mapcount == <uint32_t>offline_v:
                kind = C_OFFLINE
            if kind < 0:
                i += 1
                continue
            if kind == C_FREE:
                c_free += nr
            elif kind == C_CACHE:
                c_cache += nr
            elif kind == C_CACHE_PRIVATE:
                c_cpriv += nr
            elif kind == C_USER:
                c_user += nr
            elif kind == C_HWPOISON:
                c_hwp += nr
            else:
                c_off += nr
            clear_range(bm, nbits, pfn - bm_base, pfn + nr - bm_base)
            i += nr
    counts[C_FREE] += c_free
    counts[C_CACHE] += c_cache
    counts[C_CACHE_PRIVATE] += c_cpriv
    counts[C_USER] += c_user
    counts[C_HWPOISON] += c_hwp
    counts[C_OFFLINE] += c_off
    counts[C_BAD_ORDER] += c_bad


def tail_pointer_stats(const uint8_t[::1] pages, int64_t sp, int64_t off_ch, uint64_t kva_start):
    """Count the "tail pages" of a struct page block whose head pointer is implausible.

    A struct page with bit 0 of ``compound_head`` set is a tail; the rest of the word must then be
    an 8-byte aligned kernel address (at least ``kva_start``, the machine's lowest kernel address:
    ``Mmu.kernel_va_start``). Returns ``(n, tails, bad, first_bad,
    first_value)``: the number of struct pages, of tails, of tails with an implausible head, the
    index of the first such struct page and its raw ``compound_head`` (-1 and 0 when none). All
    zeros but ``n`` when ``off_ch`` does not fit in a struct page. The policy (how many is too
    many) is dumpfilter.filter.classify.check_tail_pointers's.
    """
    if sp <= 0:
        raise ValueError("tail_pointer_stats: bad struct page size")
    cdef int64_t n = pages.shape[0] // sp
    cdef int64_t tails = 0, bad = 0, first_bad = -1, i
    cdef uint64_t ch, head, first_value = 0
    cdef const uint8_t* base
    if off_ch < 0 or off_ch + 8 > sp or n == 0:
        return n, 0, 0, -1, 0
    base = &pages[0]
    with nogil:
        for i in range(n):
            ch = rd64(base + i * sp + off_ch)
            if ch & 1:
                tails += 1
                head = ch - 1
                if (head & 7) != 0 or head < kva_start:
                    if bad == 0:
                        first_bad = i
                        first_value = ch
                    bad += 1
    return n, tails, bad, first_bad, first_value
