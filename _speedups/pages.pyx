# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch page kernels: one call per batch of pages, GIL released inside."""
from libc.stdint cimport uint64_t, uint8_t
from libc.string cimport memcmp


include "_zero.pxi"


def zero_pages(const uint8_t[::1] buf, Py_ssize_t page_size, Py_ssize_t count, uint8_t[::1] out):
    """Set out[i] = 1 if page i of buf (count pages of page_size bytes) is entirely zero, else 0.

    Returns the number of zero pages.
    """
    cdef Py_ssize_t i, nzero = 0
    if page_size % 8 != 0 or count * page_size > buf.shape[0] or count > out.shape[0]:
        raise ValueError("zero_pages: buffer too small or page size not a multiple of 8")
    with nogil:
        for i in range(count):
            if page_is_zero(&buf[i * page_size], page_size):
                out[i] = 1
                nzero += 1
            else:
                out[i] = 0
    return nzero
