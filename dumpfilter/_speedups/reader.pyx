# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Reading a window of pages from the dump (the sources' side of the hot path).

``DirectReader`` reads an ELF vmcore's pages in C with the GIL released: ``ranges`` are disjoint,
sorted (phys_start, phys_end, file_offset) triples in bytes (``ElfSource``'s read index); anything
outside them reads as zero (memory past p_filesz). With ``use_mmap`` the pages of a window are mapped
rather than copied (as makedumpfile does; much faster on /proc/vmcore); if the file can't be mapped it
falls back to pread for good. It holds no per-call state, so worker threads share one.

``RunReader`` reads through any source's ``read_pages(pfn, count, buffer)``, one call per run, with
the GIL (kdump-compressed and flattened inputs).

Both fill a ``WindowBuffers`` with one pointer per page of the window's runs of set bits and raise
OSError on a read error.
"""
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from dumpfilter._speedups.window cimport WindowBuffers

include "_pread.pxi"

cdef extern from "<sys/stat.h>" nogil:
    struct stat:
        off_t st_size
    int fstat(int fd, stat* buf)

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset)
    int PROT_READ
    int MAP_PRIVATE
    void* MAP_FAILED

DEF MAX_PAGE = 65536

cdef const uint8_t* _ZERO_PAGE = <const uint8_t*> calloc(1, MAX_PAGE)
if _ZERO_PAGE == NULL:  # pragma: no cover
    raise MemoryError()


cdef class DirectReader:
    """Reads pages of an ELF vmcore from its file descriptor ``fd`` in C."""

    def __cinit__(self, int fd, list ranges, bint use_mmap=True, int64_t host_page=4096):
        cdef Py_ssize_t i
        self.fd = fd
        self.next_ = len(ranges)
        self.use_mmap = use_mmap
        self.host_page = host_page
        self.ext = <Extent*> malloc(max(1, self.next_) * sizeof(Extent))
        if self.ext == NULL:
            raise MemoryError()
        for i in range(self.next_):
            s, e, o = ranges[i]
            self.ext[i].start = s
            self.ext[i].end = e
            self.ext[i].foff = o
            if i and s < self.ext[i - 1].end:
                raise ValueError("DirectReader: ranges must be sorted and disjoint")

    def __dealloc__(self):
        if self.ext != NULL:
            free(self.ext)

    cdef Py_ssize_t find(self, int64_t addr) noexcept nogil:
        """Index of the first extent whose end is > addr (next_ if none)."""
        cdef Py_ssize_t lo = 0, hi = self.next_, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.ext[mid].end <= addr:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int pread_full(self, uint8_t* dst, int64_t size, int64_t off) noexcept nogil:
        """0, or errno (-1 for end of file)."""
        return pread_all(self.fd, dst, size, off)

    cdef int read_slow(self, uint8_t* dst, int64_t addr, int64_t size) noexcept nogil:
        """Bytes [addr, addr+size) into dst, zero where no extent holds data."""
        cdef Py_ssize_t i = self.find(addr)
        cdef int64_t a, b
        cdef int r
        memset(dst, 0, size)
        while i < self.next_ and self.ext[i].start < addr + size:
            a = max(addr, self.ext[i].start)
            b = min(addr + size, self.ext[i].end)
            if b > a:
                r = self.pread_full(dst + (a - addr), b - a, self.ext[i].foff + (a - self.ext[i].start))
                if r:
                    return r
            i += 1
        return 0

    def read_window(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base,
                    WindowBuffers wb):
        """Point ``wb`` at the pages whose bits are set in [wstart, wend) of ``bitmap`` (bit i is pfn
        base + i): mapped from the file, or read into ``wb.scratch``. Sets wb.count."""
        cdef Py_ssize_t ps = wb.page_size, nruns, r, k = 0, i
        cdef int64_t p, pend, addr, take, moff, lastp, mstart = 0, mend = 0
        cdef Py_ssize_t x
        cdef int err = 0
        cdef uint8_t* scratch = <uint8_t*> (<char*> wb.scratch)
        cdef void* mbase = NULL
        cdef bint have_map = False
        cdef bint use_mmap = self.use_mmap
        cdef bint mmap_failed = False
        cdef stat st
        cdef int64_t fsize = -1
        if ps > MAX_PAGE:
            raise ValueError("page size above 64 KiB")
        nruns = wb.find_runs(bitmap, wstart, wend, base)
        if nruns:
            with nogil:
                if use_mmap and fstat(self.fd, &st) == 0:
                    # a mapping past the end of the file would end the process with SIGBUS: a file
                    # cut after its headers were checked is a read error instead
                    fsize = st.st_size
                lastp = base + wb.re[nruns - 1]
                r = 0
                p = base + wb.rs[0]
                pend = base + wb.re[0]
                while not err:
                    if p >= pend:
                        r += 1
                        if r >= nruns:
                            break
                        p = base + wb.rs[r]
                        pend = base + wb.re[r]
                    addr = p * ps
                    x = self.find(addr)
                    if x >= self.next_ or self.ext[x].start >= addr + ps:
                        # no data in these pages (up to the next extent): they read as zero
                        take = pend - p
                        if x < self.next_:
                            take = min(take, self.ext[x].start // ps - p)
                        for i in range(take):
                            wb.ptrs[k + i] = _ZERO_PAGE
                    elif self.ext[x].start <= addr and self.ext[x].end >= addr + ps:
                        # whole pages inside one extent
                        take = min(pend, self.ext[x].end // ps) - p
                        moff = self.ext[x].foff + (addr - self.ext[x].start)
                        if fsize >= 0 and moff + take * ps > fsize:
                            err = -1  # "unexpected end of file"
                            break
                        if use_mmap and not mmap_failed and not (
                                have_map and mstart <= moff and moff + take * ps <= mend):
                            # map up to the window's last wanted page in this extent, once: the
                            # window's later runs in the extent use the same mapping
                            mend = self.ext[x].foff + (min(lastp * ps, self.ext[x].end) - self.ext[x].start)
                            mstart = moff - moff % self.host_page
                            mend = (mend + self.host_page - 1) // self.host_page * self.host_page
                            mbase = mmap(NULL, mend - mstart, PROT_READ, MAP_PRIVATE, self.fd, mstart)
                            if mbase == MAP_FAILED:
                                mmap_failed = True
                                have_map = False
                            else:
                                wb.add_map(mbase, mend - mstart)
                                have_map = True
                        if use_mmap and have_map and not mmap_failed:
                            for i in range(take):
                                wb.ptrs[k + i] = <const uint8_t*> mbase + (moff - mstart) + i * ps
                        else:
                            err = self.pread_full(scratch + k * ps, take * ps, moff)
                            for i in range(take):
                                wb.ptrs[k + i] = scratch + (k + i) * ps
                    else:
                        # a page only partly backed by file data
                        take = 1
                        err = self.read_slow(scratch + k * ps, addr, ps)
                        wb.ptrs[k] = scratch + k * ps
                    k += take
                    p += take
        if err:
            wb.unmap_all()
            if err < 0:
                raise OSError(0, "unexpected end of file")
            raise OSError(err, "read error")
        if mmap_failed:
            self.use_mmap = False
        wb.count = k


cdef class RunReader:
    """Reads through ``read_pages(pfn, count, buffer)`` (any DumpSource), one call per run."""

    def __cinit__(self, object read_pages):
        self.read_pages = read_pages

    def read_window(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base,
                    WindowBuffers wb):
        cdef Py_ssize_t ps = wb.page_size, r, c, i, k = 0, nruns
        cdef uint8_t* scratch = <uint8_t*> (<char*> wb.scratch)
        nruns = wb.find_runs(bitmap, wstart, wend, base)
        view = memoryview(wb.scratch)
        for r in range(nruns):
            c = wb.re[r] - wb.rs[r]
            self.read_pages(base + wb.rs[r], c, view[k * ps : (k + c) * ps])
            for i in range(c):
                wb.ptrs[k + i] = scratch + (k + i) * ps
            k += c
        wb.count = k
