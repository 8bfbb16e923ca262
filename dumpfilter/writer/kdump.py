"""kdump-compressed output (formats-cli.md §1): header, sub header + notes, two bitmaps,
page descriptors, page data; the shared zero page first when dump level bit 1 is set.

Crash safety: on a seekable file the header is written first with DUMP_DH_COMPRESSED_INCOMPLETE set
and only cleared after all data and descriptors are written and synced, so a file cut short by a
crash, a signal or ENOSPC is always marked incomplete. Pages whose data did not reach the file keep
an all-zero descriptor (offset 0), which readers report as "page incomplete".
"""
from __future__ import annotations

import time

from .._speedups.descs import fill_descs
from .._speedups.window import WindowBuffers
from ..bitmap import Bitmap
from ..errors import DumpfilterError, NoSpaceError
from ..layouts import DUMP_DH_COMPRESSED_INCOMPLETE, KDUMP_SUB_HEADER, PAGE_DESC, DiskDumpHeader, KdumpSubHeader
from ..plan import DumpPlan
from ..report import Messages
from ..stats import Stats
from .sink import Sink


class KdumpLayout:
    """File offsets of every region for a plan (§1.1, §1.7)."""

    def __init__(self, plan: DumpPlan) -> None:
        bs = plan.page_size
        self.block_size = bs
        self.size_note = len(plan.note_blob)
        self.offset_note = bs + KDUMP_SUB_HEADER.size if self.size_note else 0
        self.sub_hdr_size = max(1, -(-(KDUMP_SUB_HEADER.size + self.size_note) // bs))
        self.bitmap_bytes = -(-((plan.max_mapnr + 7) // 8) // bs) * bs
        self.bitmap_blocks = 2 * self.bitmap_bytes // bs
        self.bitmap1_off = (1 + self.sub_hdr_size) * bs
        self.bitmap2_off = self.bitmap1_off + self.bitmap_bytes
        self.pd_off = (1 + self.sub_hdr_size + self.bitmap_blocks) * bs
        self.num_dumpable = plan.bitmaps.dumpable
        self.data_off = self.pd_off + PAGE_DESC.size * self.num_dumpable


class KdumpWriter:
    """Writes one kdump-compressed file of a plan's pages into a sink: the whole dump, or with
    ``pfn_range`` one file of a ``--split`` set (formats-cli.md §4.1): the same main header, bitmaps
    and descriptor area size as the whole dump, a sub header with ``split`` and the range, and only
    the range's descriptors and pages, so page data starts at the same offset in every file."""

    def __init__(self, plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats,
                 pfn_range: tuple[int, int] | None = None, eraseinfo: bool = True) -> None:
        self.plan, self.sink, self.msgs, self.stats = plan, sink, msgs, stats
        self.pfn_range = pfn_range
        self.eraseinfo = plan.eraseinfo if eraseinfo else b""
        self.lay = KdumpLayout(plan)
        self.expected = self.lay.num_dumpable if pfn_range is None else plan.bitmaps.count_dumpable(*pfn_range)
        self.status = plan.codec.flag if plan.codec else 0
        self.zero_off = self.lay.data_off
        self.idx = 0  # next page descriptor
        self.pos = self.lay.data_off  # next data byte
        self.t0 = 0.0

    def _headers(self, status: int, erase: tuple[int, int]) -> tuple[bytes, bytes]:
        plan, lay = self.plan, self.lay
        hdr = DiskDumpHeader(
            utsname=plan.utsname,
            tv_sec=plan.timestamp[0],
            tv_usec=plan.timestamp[1],
            status=status,
            block_size=lay.block_size,
            sub_hdr_size=lay.sub_hdr_size,
            bitmap_blocks=lay.bitmap_blocks,
            max_mapnr=min(plan.max_mapnr, 0xFFFFFFFF),
            nr_cpus=plan.nr_cpus,
        )
        vmci_off, vmci_size = 0, 0
        if plan.vmcoreinfo_desc is not None and lay.offset_note:
            vmci_off = lay.offset_note + plan.vmcoreinfo_desc[0]
            vmci_size = plan.vmcoreinfo_desc[1]
        r0, r1 = self.pfn_range or (0, 0)
        sub = KdumpSubHeader(
            phys_base=plan.phys_base,
            dump_level=plan.dump_level,
            split=1 if self.pfn_range is not None else 0,
            start_pfn=r0 & 0xFFFFFFFF,
            end_pfn=r1 & 0xFFFFFFFF,
            start_pfn_64=r0,
            end_pfn_64=r1,
            offset_vmcoreinfo=vmci_off,
            size_vmcoreinfo=vmci_size,
            offset_note=lay.offset_note,
            size_note=lay.size_note,
            offset_eraseinfo=erase[0],
            size_eraseinfo=erase[1],
            max_mapnr_64=plan.max_mapnr,
        )
        return hdr.pack(), sub.pack()

    def write(self) -> None:
        """Write the whole file; raises NoSpaceError (after marking the file) when space runs out."""
        plan, sink, lay = self.plan, self.sink, self.lay
        bs = plan.page_size
        if sink.seekable:
            h, s = self._headers(self.status | DUMP_DH_COMPRESSED_INCOMPLETE, (0, 0))
            sink.pwrite(h, 0)
            sink.pwrite(s, bs)
        if lay.size_note:
            sink.pwrite(plan.note_blob, lay.offset_note)
        if plan.compression.exclude_zero:
            sink.pwrite(bytes(bs), self.zero_off)
            self.pos += bs

        self.t0 = time.monotonic()
        reader = plan.src.window_reader(plan.use_mmap)
        for start, end, b1, b2 in plan.bitmaps:
            # one cycle at a time: its slice of both bitmaps, then its pages (formats-cli.md §2.5)
            sink.pwrite(b1.tobytes(), lay.bitmap1_off + start // 8)
            sink.pwrite(b2.tobytes(), lay.bitmap2_off + start // 8)
            if self.pfn_range is not None:
                r0, r1 = self.pfn_range
                if r1 <= start or r0 >= end:
                    continue
                b2 = b2.copy()  # this file's pages only
                b2.clear_range(0, r0 - start)
                b2.clear_range(r1 - start, end - start)
            self._write_pages(reader, b2, start)
        if self.idx != self.expected:
            raise DumpfilterError(f"internal error: {self.idx} pages written, {self.expected} planned")
        self.msgs.progress("Copying data", self.expected, self.expected, self.t0)

        erase = (0, 0)
        if self.eraseinfo:
            sink.pwrite(self.eraseinfo, self.pos)
            erase = (self.pos, len(self.eraseinfo))
        h, s = self._headers(self.status, erase)
        if sink.seekable:
            if erase[1]:
                sink.patch(s, bs)
            sink.sync()
            sink.patch(h, 0)
            sink.sync()
        else:
            sink.pwrite(s, bs)
            sink.pwrite(h, 0)

    def _write_pages(self, reader, b2: Bitmap, base: int) -> None:  # noqa: ANN001 - a source's window reader
        """Descriptors and data of one cycle's pages (bit i of ``b2`` is pfn base + i)."""
        stats, sink, lay = self.stats, self.sink, self.lay
        for wb in self.plan.compression.windows(reader, b2, base, self.plan.src.path):
            n = wb.count
            nbytes = fill_descs(wb, self.pos, self.zero_off)
            stats.zero += wb.nzero
            stats.dumped += n - wb.nzero
            try:
                sink.pwrite(memoryview(wb.out)[: wb.used], self.pos)
            except NoSpaceError as e:
                self._keep_written_descs(wb, e.written)
                raise
            sink.pwrite(memoryview(wb.descs)[:nbytes], lay.pd_off + PAGE_DESC.size * self.idx)
            self.idx += n
            self.pos += wb.used
            self.msgs.progress("Copying data", self.idx, self.expected, self.t0)

    def _keep_written_descs(self, wb: WindowBuffers, written: int) -> None:
        """After ENOSPC: write the descriptors of the window's pages whose data did reach the file."""
        k = end = 0
        for size in wb.sizes_list():
            end += max(size, 0)
            if end > written:
                break
            k += 1
        try:
            self.sink.pwrite(memoryview(wb.descs)[: k * PAGE_DESC.size], self.lay.pd_off + PAGE_DESC.size * self.idx)
        except NoSpaceError:
            pass


def write_kdump(plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats) -> None:
    KdumpWriter(plan, sink, msgs, stats).write()
