"""kdump-compressed output (formats-cli.md §1): header, sub header + notes, two bitmaps,
page descriptors, page data; the shared zero page first when dump level bit 1 is set.

Crash safety: on a seekable file the header is written first with DUMP_DH_COMPRESSED_INCOMPLETE set
and only cleared after all data and descriptors are written and synced, so a file cut short by a
crash, a signal or ENOSPC is always marked incomplete. Pages whose data did not reach the file keep
an all-zero descriptor (offset 0), which readers report as "page incomplete".
"""
from __future__ import annotations

import time

from ..bitmap import Bitmap
from ..engine import DirectReader, compressed_batches, direct_reader, fill_descs
from ..errors import DumpfilterError, NoSpaceError
from ..layouts import (
    DUMP_DH_COMPRESSED_INCOMPLETE,
    KDUMP_SUB_HEADER,
    PAGE_DESC,
    DiskDumpHeader,
    KdumpSubHeader,
)
from ..plan import DumpPlan
from ..report import Messages
from ..stats import Stats
from .sink import Sink



class KdumpLayout:
    """File offsets of every region for a plan (§1.1, §1.7)."""

    def __init__(self, plan: DumpPlan, num_dumpable: int) -> None:
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
        self.num_dumpable = num_dumpable
        self.data_off = self.pd_off + PAGE_DESC.size * num_dumpable


def _headers(plan: DumpPlan, lay: KdumpLayout, status: int, erase: tuple[int, int]) -> tuple[bytes, bytes]:
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
    sub = KdumpSubHeader(
        phys_base=plan.phys_base,
        dump_level=plan.dump_level,
        offset_vmcoreinfo=vmci_off,
        size_vmcoreinfo=vmci_size,
        offset_note=lay.offset_note,
        size_note=lay.size_note,
        offset_eraseinfo=erase[0],
        size_eraseinfo=erase[1],
        max_mapnr_64=plan.max_mapnr,
    )
    return hdr.pack(), sub.pack()


def write_kdump(plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats) -> None:
    """Write the whole dump; raises NoSpaceError (after marking the file) when space runs out."""
    bs = plan.page_size
    lay = KdumpLayout(plan, plan.num_dumpable)
    status = plan.codec.flag if plan.codec else 0
    if sink.seekable:
        h, s = _headers(plan, lay, status | DUMP_DH_COMPRESSED_INCOMPLETE, (0, 0))
        sink.pwrite(h, 0)
        sink.pwrite(s, bs)
    if lay.size_note:
        sink.pwrite(plan.note_blob, lay.offset_note)

    zero_off = lay.data_off
    pos = lay.data_off
    if plan.exclude_zero:
        sink.pwrite(bytes(bs), zero_off)
        pos += bs

    t0 = time.monotonic()
    idx = 0
    reader = direct_reader(plan)
    for start, end in plan.cycles.cycles:
        # one cycle at a time: its slice of both bitmaps, then its pages (formats-cli.md §2.5)
        b1 = plan.cycles.bitmap1(start, end)
        b2 = plan.cycles.bitmap2(start, end, Stats())  # the counts were taken in the planning pass
        sink.pwrite(b1.tobytes(), lay.bitmap1_off + start // 8)
        sink.pwrite(b2.tobytes(), lay.bitmap2_off + start // 8)
        idx, pos = _write_cycle(plan, sink, msgs, stats, lay, b2, start, idx, pos, zero_off, t0, reader)
    if idx != lay.num_dumpable:
        raise DumpfilterError(f"internal error: {idx} pages written, {lay.num_dumpable} planned")
    msgs.progress("Copying data", lay.num_dumpable, lay.num_dumpable, t0)

    erase = (0, 0)
    if plan.eraseinfo:
        sink.pwrite(plan.eraseinfo, pos)
        erase = (pos, len(plan.eraseinfo))
    h, s = _headers(plan, lay, status, erase)
    if sink.seekable:
        if erase[1]:
            sink.patch(s, bs)
        sink.sync()
        sink.patch(h, 0)
        sink.sync()
    else:
        sink.pwrite(s, bs)
        sink.pwrite(h, 0)


def _write_cycle(plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats, lay: KdumpLayout, b2: Bitmap,
                 base: int, idx: int, pos: int, zero_off: int, t0: float,
                 reader: DirectReader | None) -> tuple[int, int]:
    """Descriptors and data of one cycle's pages; returns the next descriptor index and data offset."""
    desc_size = PAGE_DESC.size
    for wb in compressed_batches(plan, b2, base, reader):
        n = wb.count
        nbytes = fill_descs(wb, pos, zero_off)
        stats.zero += wb.nzero
        stats.dumped += n - wb.nzero
        used = wb.used
        try:
            sink.pwrite(memoryview(wb.out)[:used], pos)
        except NoSpaceError as e:
            # keep the descriptors of the pages whose data did reach the file
            written = getattr(e, "written", 0)
            k = end = 0
            for size in wb.sizes_list():
                end += max(size, 0)
                if end > written:
                    break
                k += 1
            try:
                sink.pwrite(memoryview(wb.descs)[: k * desc_size], lay.pd_off + desc_size * idx)
            except NoSpaceError:
                pass
            raise
        sink.pwrite(memoryview(wb.descs)[:nbytes], lay.pd_off + desc_size * idx)
        idx += n
        pos += used
        msgs.progress("Copying data", idx, lay.num_dumpable, t0)
    return idx, pos
