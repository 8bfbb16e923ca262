# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch page compression in C with the GIL released (formats-cli.md §1.6).

One ``BatchCompressor`` per worker thread: it owns the codec state (LZO work memory, a zstd context,
a libdeflate compressor), so instances must not be shared between threads. ``compress_batch`` takes
a block of pages, tests each for zero, compresses it (zlib format by libdeflate level 2, LZO1X-1,
snappy, zstd level 1: the formats makedumpfile writes and reads) and keeps the result only if it is
strictly smaller than a page.
"""
from libc.errno cimport errno, EINTR
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

cdef extern from "<sys/types.h>" nogil:
    ctypedef long off_t

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, off_t offset)

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void* addr, size_t length)
    int PROT_READ
    int MAP_PRIVATE
    int MAP_POPULATE
    void* MAP_FAILED

cdef extern from "zlib.h" nogil:
    ctypedef unsigned long uLong
    uLong compressBound(uLong sourceLen)

cdef extern from "libdeflate.h" nogil:
    struct libdeflate_compressor:
        pass
    libdeflate_compressor* libdeflate_alloc_compressor(int compression_level)
    size_t libdeflate_zlib_compress(libdeflate_compressor* c, const void* src, size_t n, void* out, size_t avail)
    void libdeflate_free_compressor(libdeflate_compressor* c)

cdef extern from "lzo/lzo1x.h" nogil:
    ctypedef unsigned long lzo_uint
    int lzo_init()
    int lzo1x_1_12_compress(const uint8_t* src, lzo_uint src_len, uint8_t* dst, lzo_uint* dst_len, void* wrkmem)
    int LZO_E_OK
    int LZO1X_1_12_MEM_COMPRESS

cdef extern from "snappy-c.h" nogil:
    ctypedef enum snappy_status:
        SNAPPY_OK
    snappy_status snappy_compress(const char* input, size_t input_length, char* compressed, size_t* compressed_length)
    size_t snappy_max_compressed_length(size_t source_length)

cdef extern from "zstd.h" nogil:
    ctypedef struct ZSTD_CCtx:
        pass
    ZSTD_CCtx* ZSTD_createCCtx()
    size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx)
    size_t ZSTD_compressCCtx(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize, int level)
    unsigned ZSTD_isError(size_t code)
    size_t ZSTD_compressBound(size_t srcSize)

cdef enum:
    C_NONE = 0
    C_ZLIB = 1
    C_LZO = 2
    C_SNAPPY = 4
    C_ZSTD = 0x20

CODEC_NONE = C_NONE
CODEC_ZLIB = C_ZLIB
CODEC_LZO = C_LZO
CODEC_SNAPPY = C_SNAPPY
CODEC_ZSTD = C_ZSTD

if lzo_init() != LZO_E_OK:  # pragma: no cover
    raise ImportError("lzo_init() failed")


include "_zero.pxi"
include "_bitscan.pxi"


cdef class BatchCompressor:
    """Compresses batches of pages; not thread-safe: one per worker."""
    cdef int codec
    cdef Py_ssize_t page_size
    cdef uint8_t* tmp
    cdef size_t tmp_cap
    cdef void* lzo_wrk
    cdef ZSTD_CCtx* zctx
    cdef libdeflate_compressor* dfl

    def __cinit__(self, int codec, Py_ssize_t page_size):
        if codec not in (C_NONE, C_ZLIB, C_LZO, C_SNAPPY, C_ZSTD):
            raise ValueError(f"unknown codec {codec:#x}")
        if page_size <= 0 or page_size % 8:
            raise ValueError("page size must be a positive multiple of 8")
        self.codec = codec
        self.page_size = page_size
        self.tmp_cap = <size_t>(page_size * 2 + 4096)
        if compressBound(page_size) > self.tmp_cap:
            self.tmp_cap = compressBound(page_size)
        if ZSTD_compressBound(page_size) > self.tmp_cap:
            self.tmp_cap = ZSTD_compressBound(page_size)
        if snappy_max_compressed_length(page_size) > self.tmp_cap:
            self.tmp_cap = snappy_max_compressed_length(page_size)
        self.tmp = <uint8_t*> malloc(self.tmp_cap)
        self.lzo_wrk = malloc(LZO1X_1_12_MEM_COMPRESS) if codec == C_LZO else NULL
        self.zctx = ZSTD_createCCtx() if codec == C_ZSTD else NULL
        if codec == C_ZLIB:
            # zlib format (RFC 1950) written by libdeflate at level 2: on the pages of a real 6.1
            # vmcore it is 3.7 times as fast as zlib's compress2(level 1), makedumpfile's choice, and
            # 1.4% smaller (level 1 is 5 times as fast but 1.7% larger); any zlib uncompress()
            # reads it (crash, makedumpfile, libkdumpfile)
            self.dfl = libdeflate_alloc_compressor(2)
            if self.dfl == NULL:
                raise MemoryError()
        if self.tmp == NULL or (codec == C_LZO and self.lzo_wrk == NULL) or (codec == C_ZSTD and self.zctx == NULL):
            raise MemoryError()

    def __dealloc__(self):
        if self.tmp != NULL:
            free(self.tmp)
        if self.lzo_wrk != NULL:
            free(self.lzo_wrk)
        if self.zctx != NULL:
            ZSTD_freeCCtx(self.zctx)
        if self.dfl != NULL:
            libdeflate_free_compressor(self.dfl)

    cdef Py_ssize_t _compress(self, const uint8_t* src) noexcept nogil:
        """Compressed size in self.tmp, or -1 when the codec failed or did not shrink the page."""
        cdef lzo_uint ll
        cdef size_t sl, r
        cdef Py_ssize_t ps = self.page_size
        if self.codec == C_ZLIB:
            r = libdeflate_zlib_compress(self.dfl, src, ps, self.tmp, ps - 1)
            if r == 0:  # did not fit in less than a page
                return -1
        elif self.codec == C_LZO:
            ll = self.tmp_cap
            # LZO1X-1 with a 2^12-entry dictionary: for 4 KiB pages 8-10% faster than lzo1x_1 (2^14,
            # makedumpfile's choice; the per-call clearing of its 32 KiB dictionary is most of the
            # difference) for 0.2% more bytes; the same LZO1X format, read by lzo1x_decompress_safe
            if lzo1x_1_12_compress(src, ps, self.tmp, &ll, self.lzo_wrk) != LZO_E_OK:
                return -1
            r = ll
        elif self.codec == C_SNAPPY:
            sl = self.tmp_cap
            if snappy_compress(<const char*> src, ps, <char*> self.tmp, &sl) != SNAPPY_OK:
                return -1
            r = sl
        elif self.codec == C_ZSTD:
            r = ZSTD_compressCCtx(self.zctx, self.tmp, self.tmp_cap, src, ps, 1)
            if ZSTD_isError(r):
                return -1
        else:
            return -1
        if r >= <size_t>ps:
            return -1
        return <Py_ssize_t>r

    cdef int64_t _store(self, const uint8_t** ptrs, Py_ssize_t n, bint exclude_zero, uint8_t* out,
                        int64_t* sizes, uint32_t* flags, Py_ssize_t* nzero) noexcept nogil:
        """Zero-test and compress pages ptrs[0..n) into ``out`` back to back (a page that does not
        shrink is stored raw); sizes[i] is the stored size or -1 for an excluded zero page, flags[i]
        the page_desc flags. Returns the bytes used; counts the zero pages into ``nzero`` if given."""
        cdef Py_ssize_t ps = self.page_size, i, c
        cdef int64_t pos = 0
        for i in range(n):
            if exclude_zero and page_is_zero(ptrs[i], ps):
                sizes[i] = -1
                flags[i] = 0
                if nzero != NULL:
                    nzero[0] += 1
                continue
            c = self._compress(ptrs[i]) if self.codec != C_NONE else -1
            if c > 0:
                memcpy(out + pos, self.tmp, c)
                sizes[i] = c
                flags[i] = self.codec
                pos += c
            else:
                memcpy(out + pos, ptrs[i], ps)
                sizes[i] = ps
                flags[i] = 0
                pos += ps
        return pos

    def compress_batch(self, const uint8_t[::1] pages, const int64_t[::1] index, bint exclude_zero,
                       uint8_t[::1] out, int64_t[::1] sizes, uint32_t[::1] flags):
        """Process pages ``index[i]`` of ``pages`` for i in range(len(index)).

        Writes each stored page consecutively into ``out``; ``sizes[i]`` is its stored size, or -1
        for a zero page when ``exclude_zero`` (it then takes no room in ``out``); ``flags[i]`` is the
        page_desc flags (0 raw, else the codec). Returns the number of bytes used in ``out``.
        """
        cdef Py_ssize_t n = index.shape[0], ps = self.page_size, i, c
        cdef int64_t pos = 0, k
        if sizes.shape[0] < n or flags.shape[0] < n:
            raise ValueError("compress_batch: result arrays too small")
        if out.shape[0] < n * ps:
            raise ValueError("compress_batch: output buffer too small")
        for i in range(n):
            k = index[i]
            if k < 0 or (k + 1) * ps > pages.shape[0]:
                raise ValueError("compress_batch: page index out of range")
        cdef const uint8_t** ptrs = <const uint8_t**> malloc(max(1, n) * sizeof(uint8_t*))
        if ptrs == NULL:
            raise MemoryError()
        for i in range(n):
            ptrs[i] = &pages[index[i] * ps]
        with nogil:
            pos = self._store(ptrs, n, exclude_zero, &out[0] if n else NULL, &sizes[0] if n else NULL,
                              &flags[0] if n else NULL, NULL)
        free(ptrs)
        return pos


# --- reading a window of pages straight from an ELF vmcore ------------------------------------------------

cdef struct Extent:
    int64_t start  # physical byte address
    int64_t end
    int64_t foff   # file offset of ``start``


cdef struct Mapping:
    void* addr
    size_t length


cdef class DirectReader:
    """Reads pages of an ELF vmcore from its file in C: ``ranges`` are disjoint, sorted
    (phys_start, phys_end, file_offset) triples in bytes (ElfSource._ranges); anything outside them
    reads as zero (memory past p_filesz). With ``use_mmap`` the pages of a window are mapped rather
    than copied (as makedumpfile does; much faster on /proc/vmcore); if the file can't be mapped it
    falls back to pread for good. Shared by worker threads: it holds no per-call state."""
    cdef int fd
    cdef Extent* ext
    cdef Py_ssize_t next_
    cdef public bint use_mmap
    cdef int64_t host_page

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
        cdef ssize_t got
        while size > 0:
            got = pread(self.fd, dst, size, off)
            if got < 0:
                if errno == EINTR:
                    continue
                return errno
            if got == 0:
                return -1
            dst += got
            size -= got
            off += got
        return 0

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


cdef const uint8_t* _ZERO_PAGE = NULL


cdef class WindowBuffers:
    """Everything one window of pages needs, reused from window to window: the page pointers, a
    scratch area for pages that are copied (pread, partial pages), the stored pages and the per-page
    results. One per batch in flight."""
    cdef public Py_ssize_t capacity, page_size
    cdef const uint8_t** ptrs
    cdef Mapping* maps
    cdef Py_ssize_t nmaps
    cdef public bytearray scratch
    cdef public bytearray out
    cdef public bytearray sizes  # int64 per page: stored size, -1 for an excluded zero page
    cdef public bytearray flags  # uint32 per page
    cdef public bytearray descs  # page_desc per page (24 bytes), filled by fill_descs
    cdef public Py_ssize_t count, used, nzero

    def __cinit__(self, Py_ssize_t capacity, Py_ssize_t page_size):
        self.capacity = capacity
        self.page_size = page_size
        self.ptrs = <const uint8_t**> malloc(capacity * sizeof(uint8_t*))
        self.maps = <Mapping*> malloc(capacity * sizeof(Mapping))
        if self.ptrs == NULL or self.maps == NULL:
            raise MemoryError()
        self.nmaps = 0
        self.scratch = bytearray(capacity * page_size)
        self.out = bytearray(capacity * page_size)
        self.sizes = bytearray(capacity * 8)
        self.flags = bytearray(capacity * 4)
        self.descs = bytearray(capacity * 24)
        self.count = self.used = self.nzero = 0

    def __dealloc__(self):
        free(self.ptrs)
        free(self.maps)

    cdef void unmap_all(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.nmaps):
            munmap(self.maps[i].addr, self.maps[i].length)
        self.nmaps = 0

    def sizes_list(self):
        """The stored sizes of this window's pages (for the rare ENOSPC path)."""
        cdef const int64_t[::1] s = <const int64_t[:self.count]> <const int64_t*> (<char*> self.sizes)
        return [s[i] for i in range(self.count)]


def fill_descs(WindowBuffers wb, int64_t pos, int64_t zero_off):
    """Page descriptors of the window's pages (formats-cli.md §1.6) when its data starts at file
    offset ``pos``; zero pages point at the shared zero page at ``zero_off``."""
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


cdef class WindowCompressor(BatchCompressor):
    """A BatchCompressor that also reads its pages: one call per window of the 2nd bitmap."""

    def compress_window(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base,
                        WindowBuffers wb, DirectReader reader, object read_pages, bint exclude_zero):
        """Read, zero-test and compress the pages whose bits are set in [wstart, wend) of ``bitmap``
        (bit i is pfn base + i) into ``wb``. Pages come from ``reader`` (C, GIL released) or, when it is
        None, from ``read_pages(pfn, count, buffer)`` (any DumpSource). Sets wb.count, wb.used,
        wb.nzero; raises OSError on a read error."""
        cdef Py_ssize_t ps = self.page_size, nruns, r, k = 0, i, c
        cdef int64_t* rs
        cdef int64_t* re
        cdef int64_t p, pend, addr, take, moff, lastp, mstart = 0, mend = 0
        cdef Py_ssize_t x
        cdef int err = 0
        cdef uint8_t* scratch = <uint8_t*> (<char*> wb.scratch)
        cdef uint8_t* out = <uint8_t*> (<char*> wb.out)
        cdef int64_t* sizes = <int64_t*> (<char*> wb.sizes)
        cdef uint32_t* flags = <uint32_t*> (<char*> wb.flags)
        cdef int64_t pos = 0
        cdef void* mbase = NULL
        cdef bint have_map = False
        cdef bint use_mmap = reader is not None and reader.use_mmap
        cdef bint mmap_failed = False
        if wend - wstart > wb.capacity or wstart < 0 or (wend + 7) // 8 > bitmap.shape[0] or wb.page_size != ps:
            raise ValueError("compress_window: window does not fit the buffers or the bitmap")
        global _ZERO_PAGE
        if _ZERO_PAGE == NULL:
            _ZERO_PAGE = <const uint8_t*> calloc(1, 65536)
        if ps > 65536:
            raise ValueError("page size above 64 KiB")
        rs = <int64_t*> malloc((wend - wstart + 2) * sizeof(int64_t))
        re = <int64_t*> malloc((wend - wstart + 2) * sizeof(int64_t))
        if rs == NULL or re == NULL:
            free(rs)
            free(re)
            raise MemoryError()
        try:
            with nogil:
                nruns = _runs_into(&bitmap[0], wstart, wend, rs, re)
            if reader is None:
                # any source: its own read_pages, one call per run, with the GIL
                for r in range(nruns):
                    c = re[r] - rs[r]
                    read_pages(base + rs[r], c, memoryview(wb.scratch)[k * ps : (k + c) * ps])
                    for i in range(c):
                        wb.ptrs[k + i] = scratch + (k + i) * ps
                    k += c
            elif nruns:
                with nogil:
                    lastp = base + re[nruns - 1]
                    have_map = False
                    r = 0
                    p = base + rs[0]
                    pend = base + re[0]
                    while not err:
                        if p >= pend:
                            r += 1
                            if r >= nruns:
                                break
                            p = base + rs[r]
                            pend = base + re[r]
                        addr = p * ps
                        x = reader.find(addr)
                        if x >= reader.next_ or reader.ext[x].start >= addr + ps:
                            # no data in these pages (up to the next extent): they read as zero
                            take = pend - p
                            if x < reader.next_:
                                take = min(take, reader.ext[x].start // ps - p)
                            for i in range(take):
                                wb.ptrs[k + i] = _ZERO_PAGE
                        elif reader.ext[x].start <= addr and reader.ext[x].end >= addr + ps:
                            # whole pages inside one extent
                            take = min(pend, reader.ext[x].end // ps) - p
                            moff = reader.ext[x].foff + (addr - reader.ext[x].start)
                            if use_mmap and not mmap_failed and not (
                                    have_map and mstart <= moff and moff + take * ps <= mend):
                                # map up to the window's last wanted page in this extent, once:
                                # the window's later runs in the extent use the same mapping
                                mend = reader.ext[x].foff + (min(lastp * ps, reader.ext[x].end) - reader.ext[x].start)
                                mstart = moff - moff % reader.host_page
                                mend = (mend + reader.host_page - 1) // reader.host_page * reader.host_page
                                mbase = mmap(NULL, mend - mstart, PROT_READ, MAP_PRIVATE, reader.fd, mstart)
                                if mbase == MAP_FAILED:
                                    mmap_failed = True
                                    have_map = False
                                else:
                                    wb.maps[wb.nmaps].addr = mbase
                                    wb.maps[wb.nmaps].length = mend - mstart
                                    wb.nmaps += 1
                                    have_map = True
                            if use_mmap and have_map and not mmap_failed:
                                for i in range(take):
                                    wb.ptrs[k + i] = <const uint8_t*> mbase + (moff - mstart) + i * ps
                            else:
                                err = reader.pread_full(scratch + k * ps, take * ps, moff)
                                for i in range(take):
                                    wb.ptrs[k + i] = scratch + (k + i) * ps
                        else:
                            # a page only partly backed by file data
                            take = 1
                            err = reader.read_slow(scratch + k * ps, addr, ps)
                            wb.ptrs[k] = scratch + k * ps
                        k += take
                        p += take
            if err:
                wb.unmap_all()
                if err < 0:
                    raise OSError(0, "unexpected end of file")
                raise OSError(err, "read error")
            if mmap_failed:
                reader.use_mmap = False
            wb.count = k
            wb.nzero = 0
            with nogil:
                pos = self._store(wb.ptrs, k, exclude_zero, out, sizes, flags, &wb.nzero)
                wb.unmap_all()
            wb.used = pos
        finally:
            wb.unmap_all()
            free(rs)
            free(re)
