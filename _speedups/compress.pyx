# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch page compression in C with the GIL released (formats-cli.md §1.6).

One ``BatchCompressor`` per worker thread: it owns the codec state (LZO work memory, a zstd context,
zlib is stateless per call), so instances must not be shared between threads. ``compress_batch``
takes a block of pages, tests each for zero, compresses it with makedumpfile's settings (zlib level 1,
LZO1X-1, snappy, zstd level 1) and keeps the result only if it is strictly smaller than a page.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from "zlib.h" nogil:
    ctypedef unsigned long uLongf
    ctypedef unsigned long uLong
    int compress2(uint8_t* dest, uLongf* destLen, const uint8_t* source, uLong sourceLen, int level)
    uLong compressBound(uLong sourceLen)
    int Z_OK

cdef extern from "lzo/lzo1x.h" nogil:
    ctypedef unsigned long lzo_uint
    int lzo_init()
    int lzo1x_1_compress(const uint8_t* src, lzo_uint src_len, uint8_t* dst, lzo_uint* dst_len, void* wrkmem)
    int LZO_E_OK
    int LZO1X_1_MEM_COMPRESS

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


cdef class BatchCompressor:
    """Compresses batches of pages; not thread-safe: one per worker."""
    cdef int codec
    cdef Py_ssize_t page_size
    cdef uint8_t* tmp
    cdef size_t tmp_cap
    cdef void* lzo_wrk
    cdef ZSTD_CCtx* zctx

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
        self.lzo_wrk = malloc(LZO1X_1_MEM_COMPRESS) if codec == C_LZO else NULL
        self.zctx = ZSTD_createCCtx() if codec == C_ZSTD else NULL
        if self.tmp == NULL or (codec == C_LZO and self.lzo_wrk == NULL) or (codec == C_ZSTD and self.zctx == NULL):
            raise MemoryError()

    def __dealloc__(self):
        if self.tmp != NULL:
            free(self.tmp)
        if self.lzo_wrk != NULL:
            free(self.lzo_wrk)
        if self.zctx != NULL:
            ZSTD_freeCCtx(self.zctx)

    cdef Py_ssize_t _compress(self, const uint8_t* src) noexcept nogil:
        """Compressed size in self.tmp, or -1 when the codec failed or did not shrink the page."""
        cdef uLongf zl
        cdef lzo_uint ll
        cdef size_t sl, r
        cdef Py_ssize_t ps = self.page_size
        if self.codec == C_ZLIB:
            zl = self.tmp_cap
            if compress2(self.tmp, &zl, src, ps, 1) != Z_OK:
                return -1
            r = zl
        elif self.codec == C_LZO:
            ll = self.tmp_cap
            if lzo1x_1_compress(src, ps, self.tmp, &ll, self.lzo_wrk) != LZO_E_OK:
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

    def compress_batch(self, const uint8_t[::1] pages, const int64_t[::1] index, bint exclude_zero,
                       uint8_t[::1] out, int64_t[::1] sizes, uint32_t[::1] flags):
        """Process pages ``index[i]`` of ``pages`` for i in range(len(index)).

        Writes each stored page consecutively into ``out``; ``sizes[i]`` is its stored size, or -1
        for a zero page when ``exclude_zero`` (it then takes no room in ``out``); ``flags[i]`` is the
        page_desc flags (0 raw, else the codec). Returns the number of bytes used in ``out``.
        """
        cdef Py_ssize_t n = index.shape[0], ps = self.page_size, i, c
        cdef int64_t pos = 0, k
        cdef const uint8_t* src
        if sizes.shape[0] < n or flags.shape[0] < n:
            raise ValueError("compress_batch: result arrays too small")
        if out.shape[0] < n * ps:
            raise ValueError("compress_batch: output buffer too small")
        for i in range(n):
            k = index[i]
            if k < 0 or (k + 1) * ps > pages.shape[0]:
                raise ValueError("compress_batch: page index out of range")
        with nogil:
            for i in range(n):
                src = &pages[index[i] * ps]
                if exclude_zero and page_is_zero(src, ps):
                    sizes[i] = -1
                    flags[i] = 0
                    continue
                c = self._compress(src) if self.codec != C_NONE else -1
                if c > 0:
                    memcpy(&out[pos], self.tmp, c)
                    sizes[i] = c
                    flags[i] = self.codec
                    pos += c
                else:
                    memcpy(&out[pos], src, ps)
                    sizes[i] = ps
                    flags[i] = 0
                    pos += ps
        return pos
