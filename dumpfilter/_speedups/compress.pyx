# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch page compression in C with the GIL released (formats-cli.md §1.6).

One ``BatchCompressor`` per worker thread: it owns the codec state (LZO work memory, a zstd context,
a libdeflate compressor), so instances must not be shared between threads. ``compress_window`` takes
the pages a ``WindowBuffers`` points at, tests each for zero,
compresses it (zlib format by libdeflate level 2, LZO1X-1 with a 2^12 dictionary, snappy, zstd level
1: the formats makedumpfile writes and reads) and keeps the result only if it is strictly smaller than
a page.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from dumpfilter._speedups.flags cimport FLAG_LZO, FLAG_NONE, FLAG_SNAPPY, FLAG_ZLIB, FLAG_ZSTD
from dumpfilter._speedups.window cimport WindowBuffers

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

if lzo_init() != LZO_E_OK:  # pragma: no cover
    raise ImportError("lzo_init() failed")


include "_zero.pxi"


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
        if codec not in (FLAG_NONE, FLAG_ZLIB, FLAG_LZO, FLAG_SNAPPY, FLAG_ZSTD):
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
        self.lzo_wrk = malloc(LZO1X_1_12_MEM_COMPRESS) if codec == FLAG_LZO else NULL
        self.zctx = ZSTD_createCCtx() if codec == FLAG_ZSTD else NULL
        if codec == FLAG_ZLIB:
            # zlib format (RFC 1950) written by libdeflate at level 2: on the pages of a real 6.1
            # vmcore it is 3.7 times as fast as zlib's compress2(level 1), makedumpfile's choice, and
            # 1.4% smaller (level 1 is 5 times as fast but 1.7% larger); any zlib uncompress()
            # reads it (crash, makedumpfile, libkdumpfile)
            self.dfl = libdeflate_alloc_compressor(2)
            if self.dfl == NULL:
                raise MemoryError()
        if self.tmp == NULL or (codec == FLAG_LZO and self.lzo_wrk == NULL) or (codec == FLAG_ZSTD and self.zctx == NULL):
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
        if self.codec == FLAG_ZLIB:
            r = libdeflate_zlib_compress(self.dfl, src, ps, self.tmp, ps - 1)
            if r == 0:  # did not fit in less than a page
                return -1
        elif self.codec == FLAG_LZO:
            ll = self.tmp_cap
            # LZO1X-1 with a 2^12-entry dictionary: for 4 KiB pages 8-10% faster than lzo1x_1 (2^14,
            # makedumpfile's choice; the per-call clearing of its 32 KiB dictionary is most of the
            # difference) for 0.2% more bytes; the same LZO1X format, read by lzo1x_decompress_safe
            if lzo1x_1_12_compress(src, ps, self.tmp, &ll, self.lzo_wrk) != LZO_E_OK:
                return -1
            r = ll
        elif self.codec == FLAG_SNAPPY:
            sl = self.tmp_cap
            if snappy_compress(<const char*> src, ps, <char*> self.tmp, &sl) != SNAPPY_OK:
                return -1
            r = sl
        elif self.codec == FLAG_ZSTD:
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
            c = self._compress(ptrs[i]) if self.codec != FLAG_NONE else -1
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

    def compress_window(self, WindowBuffers wb, bint exclude_zero):
        """Zero-test and compress the window's pages into ``wb.out``; sets wb.used and wb.nzero, and
        unmaps the dump's pages the window pointed into."""
        if wb.page_size != self.page_size:
            wb.unmap_all()
            raise ValueError("compress_window: the window's page size is not the compressor's")
        cdef Py_ssize_t nzero = 0, n = wb.count
        cdef int64_t used
        cdef uint8_t* out = <uint8_t*> (<char*> wb.out)
        cdef int64_t* sizes = <int64_t*> (<char*> wb.sizes)
        cdef uint32_t* flags = <uint32_t*> (<char*> wb.flags)
        with nogil:
            used = self._store(wb.ptrs, n, exclude_zero, out, sizes, flags, &nzero)
            wb.unmap_all()
        wb.used = used
        wb.nzero = nzero
