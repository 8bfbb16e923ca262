"""``--split``: one dump as N kdump-compressed files over pfn ranges, and ``--reassemble``: joining such a
set back into one file (formats-cli.md §4).

The ranges balance the *dumpable* pages as makedumpfile balances them: memory is cut into splitblocks
(``--splitblock-size`` KiB, default 1 GiB), each file but the last takes whole splitblocks until it holds
``num_dumpable // N`` dumpable pages, the last one the rest. Every file carries the same main header,
both whole bitmaps and a descriptor area sized for the whole dump, so its page data starts where the
whole dump's would; ``--reassemble`` copies the pages of the set, unchanged, into one file, which is
then byte for byte the file one unsplit run writes.
"""
from __future__ import annotations

import os

from ..errors import InputError, OutputError
from ..filter import DumpBitmaps
from ..layouts import (DISK_DUMP_HEADER, DUMP_DH_COMPRESSED_INCOMPLETE, KDUMP_SIGNATURE, KDUMP_SUB_HEADER, PAGE_DESC,
                       STATUS_OFFSET, DiskDumpHeader, KdumpSubHeader)
from .sink import FileSink

DEFAULT_SPLITBLOCK = 1 << 30  # bytes (DEFAULT_SPLITBLOCK_SIZE)


def split_ranges(bitmaps: DumpBitmaps, page_size: int, nfiles: int,
                 splitblock: int = DEFAULT_SPLITBLOCK) -> list[tuple[int, int]]:
    """The pfn range of each of ``nfiles`` files (contiguous, from 0 to max_mapnr, splitblock-aligned;
    a range can be empty), as makedumpfile's calculate_end_pfn_by_splitblock draws them."""
    if splitblock % page_size or splitblock <= 0:
        raise OutputError(f"--splitblock-size must be a multiple of the page size ({page_size} bytes)")
    pps = splitblock // page_size
    max_mapnr = bitmaps.max_mapnr
    nblocks = -(-max_mapnr // pps)
    table = [0] * nblocks  # dumpable pages per splitblock; the last, partial one stays 0
    for start, end, _b1, b2 in bitmaps:
        first = -(-start // pps)
        for blk in range(first, min(nblocks, end // pps + 1)):
            a, b = blk * pps, (blk + 1) * pps
            if b > max_mapnr:
                break
            if a >= start and b <= end:
                table[blk] += b2.count(a - start, b - start)
            else:  # a splitblock larger than a cycle: count its part of this cycle
                table[blk] += b2.count(max(a, start) - start, min(b, end) - start)
    need = bitmaps.dumpable // nfiles
    ranges: list[tuple[int, int]] = []
    blk = 0
    start = 0
    for _ in range(nfiles - 1):
        left = need
        while left > 0 and blk < nblocks:
            left -= table[blk]
            blk += 1
        end = min(blk * pps, max_mapnr)
        ranges.append((start, end))
        start = end
    ranges.append((start, max_mapnr))
    return ranges


def saved_message(paths: list[str]) -> str:
    """``The dumpfiles are saved to F1, and F2.`` as makedumpfile says it."""
    return "The dumpfiles are saved to " + ", ".join(paths[:-1]) + ", and " + paths[-1] + "."


# --- --reassemble ---------------------------------------------------------------------------------------


class _Part:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise InputError(f"Can't open the dump file {path}: {e.strerror}") from None
        self.size = os.fstat(self.fd).st_size
        raw = self.pread(0, DISK_DUMP_HEADER.size)
        self.head_raw = raw
        self.header = DiskDumpHeader.unpack(raw)
        if self.header.signature != KDUMP_SIGNATURE:
            raise InputError(f"Invalid dumpfile({path}).")
        bs = self.header.block_size
        if not 1024 <= bs <= 1 << 16 or bs & (bs - 1):
            raise InputError(f"Invalid dumpfile({path}): block_size {bs}")
        self.sub = KdumpSubHeader.unpack(self.pread(bs, KDUMP_SUB_HEADER.size))
        self.start = self.sub.start_pfn_64 if self.header.header_version >= 6 else self.sub.start_pfn
        self.end = self.sub.end_pfn_64 if self.header.header_version >= 6 else self.sub.end_pfn

    def pread(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise InputError(f"{self.path}: {n} bytes at offset {off} lie past the end of the file; it is truncated")
        return os.pread(self.fd, n, off)

    def close(self) -> None:
        os.close(self.fd)


def _same_header(a: bytes, b: bytes) -> bool:
    """Main headers are byte-identical, but for the incomplete bit a failed part may carry."""
    def clear(h: bytes) -> bytes:
        st = int.from_bytes(h[STATUS_OFFSET : STATUS_OFFSET + 4], "little") & ~DUMP_DH_COMPRESSED_INCOMPLETE
        return h[:STATUS_OFFSET] + st.to_bytes(4, "little") + h[STATUS_OFFSET + 4 :]
    return clear(a) == clear(b)


def reassemble(paths: list[str], sink: FileSink, chunk: int = 1 << 20) -> int:
    """Join a --split set (any order) into one kdump-compressed file through ``sink``; returns the
    number of pages. Refuses, in one line, a set that does not belong together."""
    from .._speedups.bits import count as count_bits

    parts = [_Part(p) for p in paths]
    try:
        first = parts[0]
        for p in parts:
            if not p.sub.split:
                raise InputError(f"{p.path} is not a part of a --split set")
            if not _same_header(p.head_raw, first.head_raw):
                raise InputError(f"Invalid dumpfile({p.path}): its header differs from {first.path}'s")
        parts.sort(key=lambda p: (p.start, p.end))
        h, sub0 = first.header, first.sub
        bs = h.block_size
        max_mapnr = sub0.max_mapnr_64 if h.header_version >= 6 and sub0.max_mapnr_64 else h.max_mapnr
        pos = 0
        for p in parts:
            if p.start != pos or p.end < p.start:
                raise InputError(f"There is not dumpfile corresponding to pfn {pos:#x} - {p.start:#x}.")
            pos = p.end
        if pos != max_mapnr:
            raise InputError(f"There is not dumpfile corresponding to pfn {pos:#x} - {max_mapnr:#x}.")
        base = parts[0]
        incomplete = next((p for p in parts if p.header.status & DUMP_DH_COMPRESSED_INCOMPLETE), None)
        head = (incomplete or parts[-1]).head_raw
        bitmap_bytes = h.bitmap_blocks // 2 * bs
        bm_off = (1 + h.sub_hdr_size) * bs
        pd_off = (1 + h.sub_hdr_size + h.bitmap_blocks) * bs
        # the header first, marked incomplete until every page is in (the sink's crash safety)
        status = int.from_bytes(head[STATUS_OFFSET : STATUS_OFFSET + 4], "little")
        marked = head[:STATUS_OFFSET] + (status | DUMP_DH_COMPRESSED_INCOMPLETE).to_bytes(4, "little") + head[STATUS_OFFSET + 4 :]
        sink.pwrite(marked, 0)
        # sub header, notes and the vmcoreinfo inside them: file 0's, at the same offsets
        sink.pwrite(base.pread(bs, h.sub_hdr_size * bs), bs)
        num_dumpable = 0
        for off in range(0, bitmap_bytes, chunk):
            n = min(chunk, bitmap_bytes - off)
            sink.pwrite(base.pread(bm_off + off, n), bm_off + off)
            b2 = base.pread(bm_off + bitmap_bytes + off, n)
            sink.pwrite(b2, bm_off + bitmap_bytes + off)
            num_dumpable += count_bits(b2, n * 8, 0, n * 8)
        data = pd_off + PAGE_DESC.size * num_dumpable
        zero_off = data if sub0.dump_level & 1 else -1
        pos = data
        if zero_off >= 0:
            sink.pwrite(bytes(bs), zero_off)
            pos += bs
        idx = 0
        erase = bytearray()
        for p in parts:
            psub = p.sub
            n = _count_range(p, bm_off + bitmap_bytes, p.start, p.end)
            for k in range(0, n, 4096):
                m = min(4096, n - k)
                raw = p.pread(pd_off + PAGE_DESC.size * k, PAGE_DESC.size * m)
                out = bytearray(raw)
                for i in range(m):
                    off, size, flags, pflags = PAGE_DESC.unpack_from(raw, PAGE_DESC.size * i)
                    if zero_off >= 0 and off == zero_off:
                        new = zero_off
                    else:
                        if off <= 0:
                            raise InputError(f"{p.path}: page descriptor {k + i} is lost (an incomplete part)")
                        sink.pwrite(p.pread(off, size), pos)
                        new = pos
                        pos += size
                    PAGE_DESC.pack_into(out, PAGE_DESC.size * i, new, size, flags, pflags)
                sink.pwrite(out, pd_off + PAGE_DESC.size * (idx + k))
            idx += n
            if psub.offset_eraseinfo and psub.size_eraseinfo:
                erase += p.pread(psub.offset_eraseinfo, psub.size_eraseinfo)
        sub = KdumpSubHeader.unpack(base.pread(bs, KDUMP_SUB_HEADER.size))
        sub.split = sub.start_pfn = sub.end_pfn = sub.start_pfn_64 = sub.end_pfn_64 = 0
        if erase:
            sink.pwrite(bytes(erase), pos)
            sub.offset_eraseinfo, sub.size_eraseinfo = pos, len(erase)
        sink.patch(sub.pack(), bs)
        sink.sync()
        sink.patch(head, 0)
        sink.sync()
        return idx
    finally:
        for p in parts:
            p.close()


def _count_range(p: _Part, bitmap2_off: int, start: int, end: int) -> int:
    """Set bits of a part's 2nd bitmap for pfns [start, end)."""
    from .._speedups.bits import count as count_bits

    total = 0
    step = 1 << 23  # pfns per read (1 MiB of bitmap)
    a = start // 8 * 8
    while a < end:
        b = min(a + step, end)
        raw = p.pread(bitmap2_off + a // 8, (b - a + 7) // 8)
        total += count_bits(raw, b - a, max(start, a) - a, b - a)
        a = b
    return total
