from libc.stdint cimport int64_t, uint8_t

from dumpfilter._speedups.window cimport WindowBuffers


cdef struct Extent:
    int64_t start  # physical byte address
    int64_t end
    int64_t foff   # file offset of ``start``


cdef class DirectReader:
    cdef int fd
    cdef Extent* ext
    cdef Py_ssize_t next_
    cdef public bint use_mmap
    cdef int64_t host_page

    cdef Py_ssize_t find(self, int64_t addr) noexcept nogil
    cdef int pread_full(self, uint8_t* dst, int64_t size, int64_t off) noexcept nogil
    cdef int read_slow(self, uint8_t* dst, int64_t addr, int64_t size) noexcept nogil


cdef class RunReader:
    cdef object read_pages
