# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""kdump page descriptors of a compressed window (formats-cli.md §1.6), for the kdump writer."""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from dumpfilter._speedups.window cimport WindowBuffers


def fill_descs(WindowBuffers wb, int64_t pos, int64_t zero_off):
    """``struct page_desc`` (offset, size, flags, page_flags) of the window's pages into ``wb.descs``
    when its data starts at file offset ``pos``; excluded zero pages point at the shared zero page at
    ``zero_off``. Returns the number of descriptor bytes."""
    cdef Py_ssize_t i, n = wb.count
    cdef const int64_t* sizes = <const int64_t*> (<char*> wb.sizes)
    cdef const uint32_t* flags = <const uint32_t*> (<char*> wb.flags)
    cdef uint8_t* d = <uint8_t*> (<char*> wb.descs)
    cdef int64_t off
    cdef uint32_t sz
    cdef uint64_t pf = 0
    for i in range(n):
        if sizes[i] < 0:
            off = zero_off
            sz = <uint32_t> wb.page_size
        else:
            off = pos
            sz = <uint32_t> sizes[i]
            pos += sizes[i]
        memcpy(d + 24 * i, &off, 8)
        memcpy(d + 24 * i + 8, &sz, 4)
        memcpy(d + 24 * i + 12, &flags[i], 4)
        memcpy(d + 24 * i + 16, &pf, 8)
    return n * 24
