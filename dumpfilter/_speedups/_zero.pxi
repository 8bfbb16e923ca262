# Shared by the .pyx kernels (textual include): is a page all zero bytes? (filtering.md §5.10)
from libc.stdint cimport uint64_t as _u64


cdef inline bint page_is_zero(const unsigned char* p, Py_ssize_t size) noexcept nogil:
    cdef const _u64* w = <const _u64*> p
    cdef Py_ssize_t i = 0, n = size >> 3
    # OR in blocks of 8 words, bail out at the first non-zero block
    while i + 8 <= n:
        if w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]:
            return False
        i += 8
    while i < n:
        if w[i]:
            return False
        i += 1
    return True
