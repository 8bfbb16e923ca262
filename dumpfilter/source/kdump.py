"""kdump-compressed input (signature ``KDUMP   ``), for refiltering and reading pages back.

Layout: formats-cli.md §1.1 (header block, sub header + notes, two bitmaps, page descriptors, data).
"""
from __future__ import annotations

from array import array

import numpy as np

from .._speedups.bits import count as count_bits
from ..bitmap import Bitmap
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
from ..kernel.arch.machines import e_machine_of_uname, machine_of_notes
from .base import MAX_ERASEINFO, MAX_NOTES, DumpSource, FileView, SourceInfo, check_blob_size, parse_notes

RANK_BLOCK = 1 << 21  # pfns per entry of the descriptor rank index (a 256 KiB slice of the 2nd bitmap)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._speedups.window import WindowBuffers
    from .base import ByteView, WindowReader


class KdumpSource(DumpSource):
    """A kdump-compressed file (LP64 little-endian layout)."""

    format = "kdump"

    def __init__(self, path: str, fv: ByteView | None = None) -> None:
        self.path = path
        self.fv: ByteView = fv or FileView(path)
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
            check_blob_size(sub.size_note, MAX_NOTES, "notes", path)
            self.note_blob = fv.pread(sub.offset_note, sub.size_note, "notes")
            self.notes = parse_notes(self.note_blob)
        else:
            self.note_blob = b""
            self.notes = []
        # the bitmaps stay in the file: slices are read per cycle, so memory follows the cycle, not
        # what max_mapnr claims (formats-cli.md §1.5)
        self._bm1_off = (1 + h.sub_hdr_size) * bs
        self._bm2_off = self._bm1_off + bitmap_bytes
        if self._bm2_off + bitmap_bytes > fv.size:
            raise InputError(f"{path}: the bitmaps ({2 * bitmap_bytes} bytes for max_mapnr {max_mapnr}) lie past "
                             f"the end of the file ({fv.size} bytes); the file is truncated or its header corrupt")
        self.pd_off = (1 + h.sub_hdr_size + h.bitmap_blocks) * bs
        self._rank = self._rank_index()
        self.num_dumpable = self._rank[-1]
        if self.pd_off + PAGE_DESC.size * self.num_dumpable > fv.size:
            raise InputError(
                f"{path}: page descriptors for {self.num_dumpable} pages lie past the end of the file; truncated"
            )
        self._check_descriptors()
        self._block: tuple[int, Bitmap] | None = None  # the 2nd bitmap of the last RANK_BLOCK read
        erase = b""
        if h.header_version >= 5 and sub.offset_eraseinfo and sub.size_eraseinfo:
            check_blob_size(sub.size_eraseinfo, MAX_ERASEINFO, "eraseinfo", path)
            erase = fv.pread(sub.offset_eraseinfo, sub.size_eraseinfo, "eraseinfo")
        self.info = SourceInfo(
            timestamp=(h.tv_sec, h.tv_usec),
            nr_cpus=h.nr_cpus,
            phys_base=sub.phys_base,
            dump_level=sub.dump_level,
            utsname=h.utsname,
            eraseinfo=erase,
        )
        self.elf_machine = e_machine_of_uname(h.utsname[4 * 65 : 5 * 65].split(b"\0", 1)[0]) or machine_of_notes(self.notes)
        self.split = bool(sub.split)
        if self.split:
            raise InputError(f"{path}: a --split part cannot be read alone; reassemble the set first")
        self.incomplete = bool(h.status & 0x8)

    def _bitmap_slice(self, off: int, start: int, end: int, what: str) -> Bitmap:
        end = min(end, self.max_mapnr)
        if start & 7:
            raise ValueError("bitmap slices start at a multiple of 8 pfns")
        n = max(0, end - start)
        return Bitmap.from_bytes(n, self.fv.pread(off + start // 8, (n + 7) // 8, what))

    def _rank_index(self) -> array:
        """Set bits of the 2nd bitmap before each RANK_BLOCK of pfns (and in all, last): the
        descriptor index of a pfn is its block's entry plus the set bits before it in the block."""
        rank = array("q", [0])
        total = 0
        for start in range(0, self.max_mapnr, RANK_BLOCK):
            n = min(RANK_BLOCK, self.max_mapnr - start)
            raw = self.fv.pread(self._bm2_off + start // 8, (n + 7) // 8, "2nd bitmap")
            total += count_bits(raw, n, 0, n)
            rank.append(total)
        return rank

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

    def data_ranges(self, grain: int = 4096) -> list[tuple[int, int]] | None:
        """Pfn ranges, in steps of ``grain`` pfns (a multiple of 8), that hold a set bit of the 2nd
        bitmap: the descriptors the file has. Read a rank block at a time, only where the rank index
        says the block has pages; at most one range per ``grain`` pfns with data."""
        out: list[tuple[int, int]] = []
        gbytes = grain // 8
        for k in range(len(self._rank) - 1):
            if self._rank[k + 1] == self._rank[k]:
                continue
            start = k * RANK_BLOCK
            n = min(RANK_BLOCK, self.max_mapnr - start)
            raw = self.fv.pread(self._bm2_off + start // 8, (n + 7) // 8, "2nd bitmap")
            arr = np.frombuffer(raw + bytes(-len(raw) % gbytes), dtype=np.uint8).reshape(-1, gbytes)
            for g in np.flatnonzero(arr.any(axis=1)).tolist():
                a, b = start + g * grain, min(start + (g + 1) * grain, self.max_mapnr)
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
        return out

    def present_bitmap(self, partial_last: bool = False, start: int = 0, end: int | None = None) -> Bitmap:
        return self._bitmap_slice(self._bm1_off, start, self.max_mapnr if end is None else end, "1st bitmap")

    def dumpable_bitmap(self, start: int = 0, end: int | None = None) -> Bitmap:
        return self._bitmap_slice(self._bm2_off, start, self.max_mapnr if end is None else end, "2nd bitmap")

    def _block_bitmap(self, pfn: int) -> tuple[int, Bitmap]:
        b = pfn // RANK_BLOCK * RANK_BLOCK
        if self._block is None or self._block[0] != b:
            self._block = (b, self._bitmap_slice(self._bm2_off, b, b + RANK_BLOCK, "2nd bitmap"))
        return self._block

    def desc_index(self, pfn: int) -> int:
        """Index of pfn's page descriptor: the set bits of the 2nd bitmap before it."""
        b, bm = self._block_bitmap(pfn)
        return self._rank[b // RANK_BLOCK] + bm.count(0, pfn - b)

    def window_reader(self, use_mmap: bool = True) -> WindowReader:
        """A plain file is decoded a window at a time in C (``_speedups/kdumpread.pyx``); a flattened
        one, seen through a FlatView, through ``read_pages``."""
        if type(self.fv) is not FileView or self.fv.fd < 0:
            return super().window_reader(use_mmap)
        return _KdumpWindows(self)

    def window_context(self, first: int, end: int) -> tuple[bytes, int]:
        """The input's 2nd bitmap for pfns [first, end) (``first`` a multiple of 8) and the descriptor
        index of ``first``: what the C reader needs to find a window's descriptors."""
        return self.fv.pread(self._bm2_off + first // 8, (end - first + 7) // 8, "2nd bitmap"), self.desc_index(first)

    def read_pages(self, pfn: int, count: int, out: memoryview | bytearray) -> None:
        from ..codec import decompress_page

        ps = self.page_size
        dst = memoryview(out).cast("B")
        dst[: count * ps] = bytes(count * ps)
        end = min(pfn + count, self.max_mapnr)
        desc = PAGE_DESC
        first8 = pfn // 8 * 8
        bm = self._bitmap_slice(self._bm2_off, first8, end, "2nd bitmap")
        for rs, re_ in bm.runs(pfn - first8, end - first8):
            s, e = rs + first8, re_ + first8
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


class _KdumpWindows:
    """The window reader of a kdump-compressed file: C decoding, with the descriptor rank from Python
    once per window."""

    def __init__(self, src: KdumpSource) -> None:
        from .._speedups.kdumpread import KdumpReader

        self.src = src
        self.c = KdumpReader(src.fv.fd, src.pd_off, src.fv.size, src.page_size)

    def read_window(self, bitmap: bytearray, wstart: int, wend: int, base: int, wb: WindowBuffers) -> None:
        first = (base + wstart) // 8 * 8
        in_bits, idx0 = self.src.window_context(first, min(base + wend, self.src.max_mapnr))
        self.c.read_window(bitmap, wstart, wend, base, wb, in_bits, first, idx0)
