# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Packed pfn bitmap kernels, LSB first: pfn p is bit (p & 7) of byte p >> 3 (formats-cli.md §1.5).

Every function takes any contiguous uint8 buffer (bytearray, bytes where read-only is enough,
memoryview, numpy uint8 array) plus an explicit ``nbits``; ``nbits`` must fit in the buffer,
``start``/``end``/``pos`` are clamped to [0, nbits]. Bits of the last byte past ``nbits`` are never
written and never reported.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memset

include "_bitscan.pxi"


cdef inline int64_t _check(Py_ssize_t size, int64_t nbits) except -1:
    if nbits < 0 or nbits > <int64_t>size * 8:
        raise ValueError(f"nbits {nbits} does not fit a bitmap buffer of {size} bytes")
    return 0


cdef inline int64_t _clamp(int64_t v, int64_t hi) noexcept nogil:
    if v < 0:
        return 0
    if v > hi:
        return hi
    return v


cdef void _fill(uint8_t *p, int64_t start, int64_t end, bint value) noexcept nogil:
    """Set or clear bits [start, end), start < end."""
    cdef int64_t b0 = start >> 3, b1 = (end - 1) >> 3
    cdef uint8_t head = _head_mask(start), tail = _tail_mask(end)
    if b0 == b1:
        head &= tail
        if value:
            p[b0] |= head
        else:
            p[b0] &= <uint8_t>~head
        return
    if value:
        p[b0] |= head
        p[b1] |= tail
        if b1 > b0 + 1:
            memset(p + b0 + 1, 0xFF, b1 - b0 - 1)
    else:
        p[b0] &= <uint8_t>~head
        p[b1] &= <uint8_t>~tail
        if b1 > b0 + 1:
            memset(p + b0 + 1, 0, b1 - b0 - 1)


cdef int64_t _count(const uint8_t *p, int64_t start, int64_t end) noexcept nogil:
    """Set bits in [start, end), start < end."""
    cdef int64_t b0 = start >> 3, b1 = (end - 1) >> 3, i
    cdef int64_t total
    if b0 == b1:
        return df_popcount64(p[b0] & _head_mask(start) & _tail_mask(end))
    total = df_popcount64(p[b0] & _head_mask(start)) + df_popcount64(p[b1] & _tail_mask(end))
    i = b0 + 1
    while i + 32 <= b1:
        total += (df_popcount64(df_load_le64(p + i)) + df_popcount64(df_load_le64(p + i + 8))
                  + df_popcount64(df_load_le64(p + i + 16)) + df_popcount64(df_load_le64(p + i + 24)))
        i += 32
    while i + 8 <= b1:
        total += df_popcount64(df_load_le64(p + i))
        i += 8
    while i < b1:
        total += df_popcount64(p[i])
        i += 1
    return total


cdef int _fill_range(uint8_t[::1] buf, int64_t nbits, int64_t start, int64_t end, bint value) except -1:
    _check(buf.shape[0], nbits)
    start = _clamp(start, nbits)
    end = _clamp(end, nbits)
    if start < end:
        with nogil:
            _fill(&buf[0], start, end, value)
    return 0


def set_range(uint8_t[::1] buf, int64_t nbits, int64_t start, int64_t end):
    """Set bits [start, end) (clamped to [0, nbits))."""
    _fill_range(buf, nbits, start, end, True)


def clear_range(uint8_t[::1] buf, int64_t nbits, int64_t start, int64_t end):
    """Clear bits [start, end) (clamped to [0, nbits))."""
    _fill_range(buf, nbits, start, end, False)


def count(const uint8_t[::1] buf, int64_t nbits, int64_t start, int64_t end):
    """Number of set bits in [start, end) (clamped to [0, nbits))."""
    _check(buf.shape[0], nbits)
    start = _clamp(start, nbits)
    end = _clamp(end, nbits)
    cdef int64_t n = 0
    if start < end:
        with nogil:
            n = _count(&buf[0], start, end)
    return n


cdef int64_t _first(const uint8_t[::1] buf, int64_t nbits, int64_t pos, bint want_set) except -1:
    _check(buf.shape[0], nbits)
    pos = _clamp(pos, nbits)
    cdef int64_t r = nbits
    if pos < nbits:
        with nogil:
            r = _next(&buf[0], pos, nbits, want_set)
    return r


def next_set(const uint8_t[::1] buf, int64_t nbits, int64_t pos):
    """First set bit >= pos, or nbits if there is none."""
    return _first(buf, nbits, pos, True)



def runs(const uint8_t[::1] buf, int64_t nbits, int64_t start, int64_t end):
    """Maximal runs of set bits inside [start, end) (clamped), as a list of (s, e) tuples."""
    _check(buf.shape[0], nbits)
    start = _clamp(start, nbits)
    end = _clamp(end, nbits)
    out = []
    if start >= end:
        return out
    cdef const uint8_t *p = &buf[0]
    cdef int64_t *pairs = NULL
    cdef int64_t *grown
    cdef Py_ssize_t n = 0, cap = 0, k
    cdef int64_t pos = start, s, e
    cdef bint oom = False
    with nogil:
        while pos < end:
            s = _next(p, pos, end, True)
            if s >= end:
                break
            e = _next(p, s + 1, end, False)
            if n == cap:
                cap = 64 if cap == 0 else cap * 2
                grown = <int64_t *>realloc(pairs, cap * 2 * sizeof(int64_t))
                if grown == NULL:
                    oom = True
                    break
                pairs = grown
            pairs[2 * n] = s
            pairs[2 * n + 1] = e
            n += 1
            pos = e
    try:
        if oom:
            raise MemoryError()
        for k in range(n):
            out.append((pairs[2 * k], pairs[2 * k + 1]))
    finally:
        free(pairs)
    return out
