# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Reading a window of pages from a kdump-compressed file (refiltering), in C with the GIL released.

For each page of the window's runs (set bits of the *output* 2nd bitmap), the page's descriptor index
in the input is its rank in the *input* 2nd bitmap (``in_bits``, from pfn ``in_first``, whose first bit
has index ``idx0``). The descriptors of the window are read in one pread, each page's stored bytes with
pread (consecutive pages that are stored back to back in one), and decoded (raw, zlib, LZO, snappy,
zstd: formats-cli.md §1.6) into the window's scratch. A descriptor that points nowhere (an incomplete
dump), is larger than a page, or does not decode to exactly one page is an error naming the pfn.
Stateless: worker threads share one reader; each call has its own codec contexts.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from dumpfilter._speedups.flags cimport FLAG_LZO, FLAG_NONE, FLAG_SNAPPY, FLAG_ZLIB, FLAG_ZSTD
from dumpfilter._speedups.window cimport WindowBuffers

include "_pread.pxi"

cdef extern from "libdeflate.h" nogil:
    struct libdeflate_decompressor:
        pass
    libdeflate_decompressor* libdeflate_alloc_decompressor()
    int libdeflate_zlib_decompress(libdeflate_decompressor* d, const void* src, size_t n, void* out, size_t avail,
                                   size_t* actual)
    void libdeflate_free_decompressor(libdeflate_decompressor* d)

cdef extern from "lzo/lzo1x.h" nogil:
    ctypedef unsigned long lzo_uint
    int lzo1x_decompress_safe(const uint8_t* src, lzo_uint src_len, uint8_t* dst, lzo_uint* dst_len, void* wrkmem)
    int LZO_E_OK

cdef extern from "snappy-c.h" nogil:
    ctypedef enum snappy_status:
        SNAPPY_OK
    snappy_status snappy_uncompress(const char* compressed, size_t compressed_length, char* uncompressed,
                                    size_t* uncompressed_length)

cdef extern from "zstd.h" nogil:
    ctypedef struct ZSTD_DCtx:
        pass
    ZSTD_DCtx* ZSTD_createDCtx()
    size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx)
    size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t cap, const void* src, size_t n)
    unsigned ZSTD_isError(size_t code)

cdef extern from *:
    """
    #include <stdint.h>
    static inline int kr_bit(const uint8_t *p, int64_t i) { return (p[i >> 3] >> (i & 7)) & 1; }
    """
    int kr_bit(const uint8_t* p, int64_t i) nogil

DEF DESC = 24

# error codes of a window (reported with the pfn)
DEF E_OK = 0
DEF E_IO = 1
DEF E_EOF = 2
DEF E_LOST = 3
DEF E_BAD = 4
DEF E_DECODE = 5
DEF E_NOMEM = 6
DEF E_NOTIN = 7


cdef inline int _pread_full(int fd, uint8_t* dst, int64_t size, int64_t off) noexcept nogil:
    cdef int r = pread_all(fd, dst, size, off)
    return E_OK if r == 0 else E_EOF if r < 0 else E_IO


cdef class KdumpReader:
    """Window reader over a kdump-compressed file ``fd`` whose page descriptors start at ``pd_off``."""
    cdef int fd
    cdef int64_t pd_off, file_size
    cdef Py_ssize_t page_size

    def __cinit__(self, int fd, int64_t pd_off, int64_t file_size, Py_ssize_t page_size):
        self.fd = fd
        self.pd_off = pd_off
        self.file_size = file_size
        self.page_size = page_size

    def read_window(self, const uint8_t[::1] bitmap, int64_t wstart, int64_t wend, int64_t base,
                    WindowBuffers wb, const uint8_t[::1] in_bits, int64_t in_first, int64_t idx0):
        """Decode the pages of the set bits of ``bitmap`` in [wstart, wend) (bit i is pfn base + i) into
        ``wb``. ``in_bits`` is the input's 2nd bitmap from pfn ``in_first`` (a multiple of 8, at most
        base + wstart) to at least base + wend; ``idx0`` the descriptor index of pfn ``in_first``."""
        cdef Py_ssize_t ps = wb.page_size, nruns, r, k = 0
        cdef int64_t p, pend, bit, idx, first_idx = -1, last_idx = -1, nd, i
        cdef int err = E_OK
        cdef uint32_t bad_flags = 0
        cdef int64_t bad_pfn = -1
        cdef uint8_t* scratch = <uint8_t*> (<char*> wb.scratch)
        cdef const uint8_t* ib = &in_bits[0] if in_bits.shape[0] else NULL
        cdef int64_t nbits_in = in_bits.shape[0] * 8
        cdef int64_t* idxs = NULL
        cdef uint8_t* descs = NULL
        cdef uint8_t* tmp = NULL
        cdef int64_t off, doff, run_end
        cdef uint32_t size, flags
        cdef size_t actual
        cdef lzo_uint ll
        cdef size_t sl
        cdef libdeflate_decompressor* dfl = NULL
        cdef ZSTD_DCtx* zctx = NULL
        if ps != self.page_size:
            raise ValueError("KdumpReader: the window's page size is not the dump's")
        if in_first & 7 or in_first > base + wstart:
            raise ValueError("KdumpReader: the input bitmap must start at or before the window, 8-aligned")
        nruns = wb.find_runs(bitmap, wstart, wend, base)
        if nruns == 0:
            wb.count = 0
            return
        if base + wb.re[nruns - 1] - in_first > nbits_in:
            raise ValueError("KdumpReader: the input bitmap does not cover the window")
        idxs = <int64_t*> malloc(wb.capacity * sizeof(int64_t))
        tmp = <uint8_t*> malloc(ps * 2)
        if idxs == NULL or tmp == NULL:
            free(idxs)
            free(tmp)
            raise MemoryError()
        try:
            with nogil:
                # descriptor index of every page: its rank in the input's 2nd bitmap
                idx = idx0
                bit = in_first
                for r in range(nruns):
                    p = base + wb.rs[r]
                    pend = base + wb.re[r]
                    while p < pend:
                        while bit < p:
                            idx += kr_bit(ib, bit - in_first)
                            bit += 1
                        if not kr_bit(ib, p - in_first):
                            err = E_NOTIN  # the page is not in the input at all
                            bad_pfn = p
                            break
                        idxs[k] = idx
                        k += 1
                        p += 1
                    if err:
                        break
                if not err:
                    first_idx = idxs[0]
                    last_idx = idxs[k - 1]
                    nd = last_idx - first_idx + 1
                    descs = <uint8_t*> malloc(nd * DESC)
                    if descs == NULL:
                        err = E_NOMEM
                    elif self.pd_off + (last_idx + 1) * DESC > self.file_size:
                        err = E_EOF
                        bad_pfn = base + wb.rs[0]
                    else:
                        err = _pread_full(self.fd, descs, nd * DESC, self.pd_off + first_idx * DESC)
                        bad_pfn = base + wb.rs[0]
                if not err:
                    dfl = libdeflate_alloc_decompressor()
                    zctx = ZSTD_createDCtx()
                    if dfl == NULL or zctx == NULL:
                        err = E_NOMEM
                # decode page by page
                k = 0
                for r in range(nruns):
                    if err:
                        break
                    p = base + wb.rs[r]
                    pend = base + wb.re[r]
                    while p < pend and not err:
                        i = idxs[k] - first_idx
                        memcpy(&off, descs + i * DESC, 8)
                        memcpy(&size, descs + i * DESC + 8, 4)
                        memcpy(&flags, descs + i * DESC + 12, 4)
                        bad_pfn = p
                        bad_flags = flags
                        if off == 0:
                            err = E_LOST
                        elif off < 0 or size > <uint32_t> ps or off + size > self.file_size:
                            err = E_BAD
                        elif flags == FLAG_NONE:
                            if size != <uint32_t> ps:
                                err = E_BAD
                            else:
                                err = _pread_full(self.fd, scratch + k * ps, ps, off)
                        else:
                            err = _pread_full(self.fd, tmp, size, off)
                            if not err:
                                if flags == FLAG_ZLIB:
                                    if libdeflate_zlib_decompress(dfl, tmp, size, scratch + k * ps, ps, &actual) != 0 \
                                            or actual != <size_t> ps:
                                        err = E_DECODE
                                elif flags == FLAG_LZO:
                                    ll = ps
                                    if lzo1x_decompress_safe(tmp, size, scratch + k * ps, &ll, NULL) != LZO_E_OK \
                                            or ll != <lzo_uint> ps:
                                        err = E_DECODE
                                elif flags == FLAG_SNAPPY:
                                    sl = ps
                                    if snappy_uncompress(<const char*> tmp, size, <char*> (scratch + k * ps), &sl) \
                                            != SNAPPY_OK or sl != <size_t> ps:
                                        err = E_DECODE
                                elif flags == FLAG_ZSTD:
                                    actual = ZSTD_decompressDCtx(zctx, scratch + k * ps, ps, tmp, size)
                                    if ZSTD_isError(actual) or actual != <size_t> ps:
                                        err = E_DECODE
                                else:
                                    err = E_BAD
                        wb.ptrs[k] = scratch + k * ps
                        k += 1
                        p += 1
        finally:
            free(idxs)
            free(tmp)
            free(descs)
            if dfl != NULL:
                libdeflate_free_decompressor(dfl)
            if zctx != NULL:
                ZSTD_freeDCtx(zctx)
        if err:
            codec = {FLAG_ZLIB: "zlib", FLAG_LZO: "lzo", FLAG_SNAPPY: "snappy", FLAG_ZSTD: "zstd"}.get(bad_flags, "?")
            what = {E_IO: "read error", E_EOF: "its data lies past the end of the file (truncated)",
                    E_LOST: "the page is missing from this incomplete dump",
                    E_BAD: "its page descriptor is corrupt",
                    E_DECODE: f"{codec} decompression failed: the stored data does not decode to one page",
                    E_NOMEM: "out of memory", E_NOTIN: "it is not in the input's 2nd bitmap"}[err]
            raise OSError(0, f"pfn {bad_pfn:#x}: {what}")
        wb.count = k
