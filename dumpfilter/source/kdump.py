"""kdump-compressed input (signature ``KDUMP   ``), for refiltering and reading pages back.

Layout: formats-cli.md §1.1 (header block, sub header + notes, two bitmaps, page descriptors, data).
"""
from __future__ import annotations

import numpy as np

from ..bitmap import Bitmap, popcount_words
from ..errors import InputError
from ..layouts import (
    DESC_DTYPE,
    DISK_DUMP_HEADER,
    DISKDUMP_SIGNATURE,
    KDUMP_SIGNATURE,
    KDUMP_SUB_HEADER,
    PAGE_DESC,
    DiskDumpHeader,
    KdumpSubHeader,
)
from .base import DumpSource, FileView, SourceInfo, parse_notes


class KdumpSource(DumpSource):
    """A kdump-compressed file (LP64 little-endian layout)."""

    format = "kdump"

    def __init__(self, path: str, fv: FileView | None = None) -> None:
        self.path = path
        self.fv = fv or FileView(path)
        try:
            self._parse()
        except BaseException:
            self.fv.close()
            raise

    def _parse(self) -> None:
        fv, path = self.fv, self.path
        if fv.size < DISK_DUMP_HEADER.size:
            raise InputError(f"{path}: kdump header is truncated ({fv.size} bytes)")
        h = DiskDumpHeader.unpack(fv.pread(0, DISK_DUMP_HEADER.size, "kdump header"))
        if h.signature not in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
            raise InputError(f"{path}: not a kdump-compressed file")
        bs = h.block_size
        if bs < 1024 or bs > 1 << 18 or bs & (bs - 1):
            raise InputError(f"{path}: invalid kdump header: block_size {bs}")
        if h.header_version < 1 or h.header_version > 64:
            raise InputError(f"{path}: invalid kdump header: header_version {h.header_version}")
        if h.sub_hdr_size < 1 or h.sub_hdr_size > 1 << 20:
            raise InputError(f"{path}: invalid kdump header: sub_hdr_size {h.sub_hdr_size}")
        sub = KdumpSubHeader.unpack(fv.pread(bs, KDUMP_SUB_HEADER.size, "kdump sub header"))
        max_mapnr = sub.max_mapnr_64 if h.header_version >= 6 and sub.max_mapnr_64 else h.max_mapnr
        if max_mapnr <= 0 or max_mapnr > 1 << 40:
            raise InputError(f"{path}: invalid kdump header: max_mapnr {max_mapnr}")
        bitmap_bytes = (h.bitmap_blocks // 2) * bs
        if h.bitmap_blocks % 2 or bitmap_bytes * 8 < max_mapnr:
            raise InputError(
                f"{path}: invalid kdump header: bitmap_blocks {h.bitmap_blocks} cannot cover max_mapnr {max_mapnr}"
            )
        self.header, self.sub = h, sub
        self.page_size = bs
        self.max_mapnr = max_mapnr
        if h.header_version >= 4 and sub.offset_note and sub.size_note:
            self.note_blob = fv.pread(sub.offset_note, sub.size_note, "notes")
            self.notes = parse_notes(self.note_blob)
        else:
            self.note_blob = b""
            self.notes = []
        bm_off = (1 + h.sub_hdr_size) * bs
        self._bitmap1 = Bitmap.from_bytes(max_mapnr, fv.pread(bm_off, bitmap_bytes, "1st bitmap"))
        self._bitmap2 = Bitmap.from_bytes(max_mapnr, fv.pread(bm_off + bitmap_bytes, bitmap_bytes, "2nd bitmap"))
        self.pd_off = (1 + h.sub_hdr_size + h.bitmap_blocks) * bs
        self.num_dumpable = self._bitmap2.count()
        if self.pd_off + PAGE_DESC.size * self.num_dumpable > fv.size:
            raise InputError(
                f"{path}: page descriptors for {self.num_dumpable} pages lie past the end of the file; truncated"
            )
        self._check_descriptors()
        # cumulative popcount per 64-pfn word: descriptor index of pfn = rank of its bit
        b = np.frombuffer(self._bitmap2.bits, dtype=np.uint8)
        nwords = (b.size + 7) // 8
        padded = np.zeros(nwords * 8, dtype=np.uint8)
        padded[: b.size] = b
        words = padded.view("<u8")
        self._rank = np.concatenate(([0], np.cumsum(popcount_words(words), dtype=np.int64)))
        self._words = words
        erase = b""
        if h.header_version >= 5 and sub.offset_eraseinfo and sub.size_eraseinfo:
            erase = fv.pread(sub.offset_eraseinfo, sub.size_eraseinfo, "eraseinfo")
        self.info = SourceInfo(
            timestamp=(h.tv_sec, h.tv_usec),
            nr_cpus=h.nr_cpus,
            phys_base=sub.phys_base,
            dump_level=sub.dump_level,
            utsname=h.utsname,
            eraseinfo=erase,
        )
        self.split = bool(sub.split)
        if self.split:
            raise InputError(f"{path}: a --split part cannot be read alone; reassemble the set first")
        self.incomplete = bool(h.status & 0x8)

    def _check_descriptors(self, chunk: int = 1 << 16) -> None:
        """Every descriptor must point inside the file (offset 0 = lost page of an incomplete dump)."""
        ps = self.page_size
        for start in range(0, self.num_dumpable, chunk):
            n = min(chunk, self.num_dumpable - start)
            raw = self.fv.pread(self.pd_off + start * PAGE_DESC.size, n * PAGE_DESC.size, "page descriptors")
            d = np.frombuffer(raw, dtype=DESC_DTYPE)
            live = d["offset"] != 0
            bad = live & ((d["offset"] < 0) | (d["size"] > ps) | (d["offset"] + d["size"].astype(np.int64) > self.fv.size))
            if bad.any():
                i = start + int(bad.argmax())
                raise InputError(
                    f"{self.path}: page descriptor {i} points past the end of the file or is corrupt; "
                    "the file is truncated"
                )

    def present_bitmap(self, partial_last: bool = False, start: int = 0, end: int | None = None) -> Bitmap:
        return self._slice(self._bitmap1, start, end)

    def dumpable_bitmap(self, start: int = 0, end: int | None = None) -> Bitmap:
        return self._slice(self._bitmap2, start, end)

    def _slice(self, bm: Bitmap, start: int, end: int | None) -> Bitmap:
        end = self.max_mapnr if end is None else min(end, self.max_mapnr)
        if start & 7:
            raise ValueError("bitmap slices start at a multiple of 8 pfns")
        return Bitmap.from_bytes(end - start, memoryview(bm.bits)[start // 8 : (end + 7) // 8])

    def desc_index(self, pfn: int) -> int:
        w = pfn >> 6
        bit = pfn & 63
        below = int(self._words[w]) & ((1 << bit) - 1)
        return int(self._rank[w]) + below.bit_count()

    def read_pages(self, pfn: int, count: int, out: memoryview | bytearray) -> None:
        from ..codec import decompress_page

        ps = self.page_size
        dst = memoryview(out).cast("B")
        dst[: count * ps] = bytes(count * ps)
        bm = self._bitmap2
        end = min(pfn + count, self.max_mapnr)
        desc = PAGE_DESC
        for s, e in bm.runs(pfn, end):
            # consecutive dumped pfns have consecutive descriptors: one read per run
            first = self.desc_index(s)
            raw = self.fv.pread(self.pd_off + first * desc.size, (e - s) * desc.size, "page descriptors")
            for k, (off, size, flags, _) in enumerate(desc.iter_unpack(raw)):
                p = s + k
                if off == 0:
                    raise InputError(f"{self.path}: page {p:#x} is missing from this incomplete dump")
                if size > ps or off < 0:
                    raise InputError(f"{self.path}: corrupt page descriptor for pfn {p:#x}")
                data = self.fv.pread(off, size, f"data of pfn {p:#x}")
                i = p - pfn
                dst[i * ps : (i + 1) * ps] = decompress_page(flags, data, ps, f"{self.path}: pfn {p:#x}")

    def close(self) -> None:
        self.fv.close()
