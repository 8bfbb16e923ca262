# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A window of pages on its way from the dump to the output: one per batch in flight.

The source's reader fills it (``ptrs``: one pointer per page, into a mapping of the dump or into
``scratch``), page hooks may replace pages (``hook_pages``), the compressor stores them (``out``,
``sizes``, ``flags``), the kdump writer builds their descriptors (``descs``). Everything is reused
from window to window; a window holds at most ``capacity`` pages.
"""
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from "<sys/mman.h>" nogil:
    int munmap(void* addr, size_t length)

include "_bitscan.pxi"
include "_zero.pxi"


cdef class WindowBuffers:
    """The buffers of one window of ``capacity`` pages of ``page_size`` bytes."""

    def __cinit__(self, Py_ssize_t capacity, Py_ssize_t page_size):
        if capacity <= 0 or page_size <= 0 or page_size % 8:
            raise ValueError("WindowBuffers: bad capacity or page size")
        self.capacity = capacity
        self.page_size = page_size
        self.ptrs = <const uint8_t**> malloc(capacity * sizeof(uint8_t*))
        self.maps = <Mapping*> malloc(capacity * sizeof(Mapping))
        self.rs = <int64_t*> malloc((capacity + 2) * sizeof(int64_t))
        self.re = <int64_t*> malloc((capacity + 2) * sizeof(int64_t))
        if self.ptrs == NULL or self.maps == NULL or self.rs == NULL or self.re == NULL:
            raise MemoryError()
        self.nmaps = 0
        self.nruns = 0
        self.base = 0
        self.scratch = bytearray(capacity * page_size)
        self.hookbuf = bytearray(0)
        self.out = bytearray(capacity * page_size)
        self.sizes = bytearray(capacity * 8)
        self.flags = bytearray(capacity * 4)
        self.descs = bytearray(capacity * 24)
        self.count = self.used = self.nzero = 0

    def __dealloc__(self):
        self.unmap_all()
        free(self.ptrs)
        free(self.maps)
        free(self.rs)
        free(self.re)

    cdef Py_ssize_t find_runs(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base) except -1:
        """The runs of set bits of ``bitmap`` in [wstart, wend) (bit i is pfn base + i)."""
        if wend - wstart > self.capacity or wstart < 0 or wend < wstart or (wend + 7) // 8 > bitmap.shape[0]:
            raise ValueError("window does not fit the buffers or the bitmap")
        self.base = base
        self.count = self.used = self.nzero = 0
        if wend == wstart:
            self.nruns = 0
            return 0
        with nogil:
            self.nruns = _runs_into(&bitmap[0], wstart, wend, self.rs, self.re)
        return self.nruns

    cdef void add_map(self, void* addr, size_t length) noexcept nogil:
        self.maps[self.nmaps].addr = addr
        self.maps[self.nmaps].length = length
        self.nmaps += 1

    cdef void unmap_all(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.nmaps):
            munmap(self.maps[i].addr, self.maps[i].length)
        self.nmaps = 0

    def release(self):
        """Unmap the dump's pages this window points into (after compression)."""
        self.unmap_all()

    def runs(self):
        """The window's runs of pages as [(first_pfn, end_pfn)]."""
        return [(self.base + self.rs[r], self.base + self.re[r]) for r in range(self.nruns)]

    def hook_pages(self, int64_t start, int64_t end):
        """Copy the window's pages with pfns in [start, end) into a writable buffer, point the window
        at the copies, and return (pfns, buffer): page i of the buffer is pfn pfns[i]. Returns None
        when no page of the window is in the range."""
        cdef Py_ssize_t ps = self.page_size, r, k = 0, n = 0, i
        cdef int64_t a, b, p
        pfns = []
        for r in range(self.nruns):
            a = self.base + self.rs[r]
            b = self.base + self.re[r]
            for p in range(max(a, start), min(b, end)):
                pfns.append(p)
        if not pfns:
            return None
        if len(self.hookbuf) < len(pfns) * ps:
            self.hookbuf = bytearray(self.capacity * ps)
        cdef uint8_t* dst = <uint8_t*> (<char*> self.hookbuf)
        for r in range(self.nruns):
            a = self.base + self.rs[r]
            b = self.base + self.re[r]
            for p in range(a, b):
                if start <= p < end:
                    memcpy(dst + n * ps, self.ptrs[k], ps)
                    self.ptrs[k] = dst + n * ps
                    n += 1
                k += 1
        return pfns, memoryview(self.hookbuf)[: n * ps]

    def zero_test(self):
        """Test each page of the window for zero (GIL released): sizes[k] = -1 for a zero page, else 0;
        sets nzero. The results stay valid after the window's pages are unmapped."""
        cdef Py_ssize_t ps = self.page_size, n = self.count, k, z = 0
        cdef int64_t* sizes = <int64_t*> (<char*> self.sizes)
        with nogil:
            for k in range(n):
                if page_is_zero(self.ptrs[k], ps):
                    sizes[k] = -1
                    z += 1
                else:
                    sizes[k] = 0
        self.nzero = z

    def pfns(self):
        """The pfns of the window's pages, in order."""
        return [p for r in range(self.nruns) for p in range(self.base + self.rs[r], self.base + self.re[r])]

    def sizes_list(self):
        """The stored sizes of this window's pages (for the rare ENOSPC path)."""
        cdef const int64_t* s = <const int64_t*> (<char*> self.sizes)
        return [s[i] for i in range(self.count)]
