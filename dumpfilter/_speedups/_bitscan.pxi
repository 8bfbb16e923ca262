# Shared by the .pyx kernels (textual include): scanning packed pfn bitmaps, LSB first (pfn p is bit
# p & 7 of byte p >> 3; formats-cli.md §1.5).
from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline int df_popcount64(uint64_t x) { return __builtin_popcountll(x); }
    static inline int df_ctz64(uint64_t x) { return __builtin_ctzll(x); }  /* x != 0 */
    static inline uint64_t df_load_le64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    """
    int df_popcount64(uint64_t x) nogil
    int df_ctz64(uint64_t x) nogil
    uint64_t df_load_le64(const uint8_t *p) nogil


cdef inline uint8_t _head_mask(int64_t start) noexcept nogil:
    return <uint8_t>(0xFF << (start & 7))


cdef inline uint8_t _tail_mask(int64_t end) noexcept nogil:
    # bits of byte (end - 1) >> 3 below end
    return <uint8_t>(0xFF >> (7 - ((end - 1) & 7)))


cdef int64_t _next(const uint8_t *p, int64_t pos, int64_t limit, bint want_set) noexcept nogil:
    """First bit in [pos, limit) equal to want_set, else limit (0 <= pos)."""
    cdef int64_t nbytes = (limit + 7) >> 3
    cdef int64_t i = pos >> 3, r
    cdef uint8_t inv = 0 if want_set else 0xFF
    cdef uint64_t winv = 0 if want_set else <uint64_t>0xFFFFFFFFFFFFFFFFULL
    cdef uint64_t w
    cdef uint8_t v
    if pos >= limit:
        return limit
    v = (p[i] ^ inv) & _head_mask(pos)
    if v:
        r = (i << 3) + df_ctz64(v)
        return r if r < limit else limit
    i += 1
    while i + 8 <= nbytes:
        w = df_load_le64(p + i) ^ winv
        if w:
            r = (i << 3) + df_ctz64(w)
            return r if r < limit else limit
        i += 8
    while i < nbytes:
        v = p[i] ^ inv
        if v:
            r = (i << 3) + df_ctz64(v)
            return r if r < limit else limit
        i += 1
    return limit


cdef Py_ssize_t _runs_into(const uint8_t *p, int64_t start, int64_t end, int64_t *rs, int64_t *re) noexcept nogil:
    """Maximal runs [rs[i], re[i]) of set bits in [start, end) into the caller's arrays (room for
    (end - start + 1) // 2 runs); returns their number."""
    cdef Py_ssize_t n = 0
    cdef int64_t pos = start, s
    while pos < end:
        s = _next(p, pos, end, True)
        if s >= end:
            break
        pos = _next(p, s + 1, end, False)
        rs[n] = s
        re[n] = pos
        n += 1
    return n
