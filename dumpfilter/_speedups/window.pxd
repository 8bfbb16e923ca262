from libc.stdint cimport int64_t, uint8_t, uint32_t


cdef struct Mapping:
    void* addr
    size_t length


cdef class WindowBuffers:
    cdef public Py_ssize_t capacity, page_size
    # the window's pages: ptrs[k] for k < count, in pfn order; runs[r] = [rs[r], re[r]) pfn offsets
    cdef const uint8_t** ptrs
    cdef int64_t* rs
    cdef int64_t* re
    cdef public Py_ssize_t nruns
    cdef public int64_t base  # pfn of bit 0 of the bitmap the runs index
    cdef Mapping* maps
    cdef Py_ssize_t nmaps
    cdef public bytearray scratch
    cdef public bytearray hookbuf
    cdef public bytearray out
    cdef public bytearray sizes  # int64 per page: stored size, -1 for an excluded zero page
    cdef public bytearray flags  # uint32 per page
    cdef public bytearray descs  # page_desc per page (24 bytes), filled by the kdump writer
    cdef public Py_ssize_t count, used, nzero

    cdef Py_ssize_t find_runs(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base) except -1
    cdef void add_map(self, void* addr, size_t length) noexcept nogil
    cdef void unmap_all(self) noexcept nogil
