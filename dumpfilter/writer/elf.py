"""ELF output (``-E``, formats-cli.md §3), with excluded pages really absent.

makedumpfile keeps excluded runs shorter than 256 pages with their real contents; we do not: every
excluded run ends the PT_LOAD before it (its p_memsz covers the run, p_filesz does not), so no byte of
an excluded page reaches the file. Layout: Ehdr | PT_NOTE phdr | PT_LOAD phdrs | [Shdr 0 when the
count needs PN_XNUM] | notes | segment data (contiguous, not page aligned).

Crash safety: e_flags bit 0 (incomplete) is set in the header written first and cleared last.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np

from ..bitmap import Bitmap
from ..errors import DumpfilterError
from ..filter.zero import clear_zero_pages
from ..layouts import ELF_INCOMPLETE
from ..plan import DumpPlan
from ..report import Messages
from ..source.elf import PN_XNUM, PT_LOAD, ElfSource, Segment
from ..stats import Stats
from .sink import Sink


@dataclass
class _Piece:
    seg: Segment  # input segment
    paddr: int
    filesz: int
    memsz: int
    offset: int = 0


def _pieces(seg: Segment, keep: Bitmap, ps: int) -> list[_Piece]:
    """Split one input PT_LOAD into kept pieces; each piece's memsz runs to the next piece."""
    s_addr, e_addr = seg.paddr, seg.paddr + seg.memsz
    f_end = seg.paddr + seg.filesz
    if seg.memsz == 0:
        return [_Piece(seg, s_addr, 0, 0)]
    lo, hi = s_addr // ps, -(-e_addr // ps)
    spans: list[tuple[int, int]] = []
    for rs, re_ in keep.runs(lo, hi):
        spans.append((rs, re_))
    # a leading partial page is always kept; so is a trailing partial page (only its real bytes)
    if s_addr % ps and (not spans or spans[0][0] != lo):
        spans.insert(0, (lo, lo + 1))
    if e_addr % ps and (not spans or spans[-1][1] != hi):
        if spans and spans[-1][1] == hi - 1:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((hi - 1, hi))
    byte_spans = []
    for rs, re_ in spans:
        a, b = max(rs * ps, s_addr), min(re_ * ps, e_addr, f_end)
        if b > a:
            byte_spans.append((a, b))
    pieces: list[_Piece] = []
    if not byte_spans:
        return [_Piece(seg, s_addr, 0, seg.memsz)]
    if byte_spans[0][0] > s_addr:
        pieces.append(_Piece(seg, s_addr, 0, byte_spans[0][0] - s_addr))
    for k, (a, b) in enumerate(byte_spans):
        nxt = byte_spans[k + 1][0] if k + 1 < len(byte_spans) else e_addr
        pieces.append(_Piece(seg, a, b - a, nxt - a))
    return pieces


def write_elf(plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats) -> None:
    src = plan.src
    if not isinstance(src, ElfSource):
        raise DumpfilterError(f"'-E' option is disabled, because {src.path} is kdump compressed format.")
    ps = plan.page_size
    lay = src.layout
    cls = lay.elf_class
    end = ">" if lay.big_endian else "<"
    bitmap1, keep = plan.cycles.full(Stats())  # ELF output needs its segment list up front: whole bitmaps
    if plan.exclude_zero:
        stats.zero += clear_zero_pages(plan.src, keep, window=plan.batch_pages)
    stats.elf_excluded = max(0, bitmap1.count() - keep.count())

    pieces: list[_Piece] = []
    for seg in src.loads:
        pieces.extend(_pieces(seg, keep, ps))
    note = lay.note
    nphdr = len(pieces) + (1 if note is not None else 0)

    ehdr_fmt = struct.Struct(end + ("16sHHIQQQIHHHHHH" if cls == 2 else "16sHHIIIIIHHHHHH"))
    ph_fmt = struct.Struct(end + ("IIQQQQQQ" if cls == 2 else "IIIIIIII"))
    sh_fmt = struct.Struct(end + ("IIQQQQIIQQ" if cls == 2 else "IIIIIIIIII"))
    phoff = ehdr_fmt.size
    use_xnum = nphdr >= PN_XNUM
    if use_xnum and cls != 2:
        raise DumpfilterError(f"ELF32 output cannot hold {nphdr} program headers")
    shoff = phoff + nphdr * ph_fmt.size if use_xnum else 0
    note_off = phoff + nphdr * ph_fmt.size + (sh_fmt.size if use_xnum else 0)
    note_size = len(plan.note_blob)
    data_off = note_off + note_size
    cur = data_off
    for p in pieces:
        if p.filesz:
            p.offset = cur
            cur += p.filesz

    e = list(lay.ehdr)  # type machine version entry phoff shoff flags ehsize phentsize phnum shentsize shnum shstrndx
    e[4] = phoff
    e[7] = ehdr_fmt.size
    e[8] = ph_fmt.size
    if use_xnum:
        e[5], e[9], e[10], e[11], e[12] = shoff, PN_XNUM, sh_fmt.size, 1, 0
    else:
        e[5], e[9], e[11], e[12] = 0, nphdr, 0, 0

    def ehdr(flags: int) -> bytes:
        e[6] = flags
        return ehdr_fmt.pack(lay.ident, *e)

    def phdr(t: int, fl: int, off: int, va: int, pa: int, fs: int, ms: int, al: int) -> bytes:
        if cls == 2:
            return ph_fmt.pack(t, fl, off, va, pa, fs, ms, al)
        return ph_fmt.pack(t, off, va, pa, fs, ms, fl, al)

    final_flags = lay.e_flags & ~ELF_INCOMPLETE
    if sink.seekable:
        sink.pwrite(ehdr(final_flags | ELF_INCOMPLETE), 0)
    ph = bytearray()
    if note is not None:
        ph += phdr(note.type, note.flags, note_off, note.vaddr, note.paddr, note_size, note.memsz, note.align)
    for p in pieces:
        seg = p.seg
        ph += phdr(PT_LOAD, seg.flags, p.offset, seg.vaddr + (p.paddr - seg.paddr), p.paddr, p.filesz, p.memsz, seg.align)
    sink.pwrite(bytes(ph), phoff)
    if use_xnum:
        sink.pwrite(sh_fmt.pack(0, 0, 0, 0, 0, 1, 0, nphdr, 0, 0), shoff)
    if note_size:
        sink.pwrite(plan.note_blob, note_off)

    total = sum(p.filesz for p in pieces)
    done = 0
    t0 = time.monotonic()
    chunk = max(1, plan.batch_pages) * ps
    buf = np.empty(chunk + 2 * ps, dtype=np.uint8)
    for p in pieces:
        a = p.paddr
        b = p.paddr + p.filesz
        while a < b:
            n = min(b - a, chunk)
            first = a // ps
            npages = -(-(a + n) // ps) - first
            src.read_pages(first, npages, buf)
            skip = a - first * ps
            sink.pwrite(memoryview(buf)[skip : skip + n], p.offset + (a - p.paddr))
            a += n
            done += n
            msgs.progress("Copying data", done, total, t0)
    msgs.progress("Copying data", total, total, t0)
    stats.dumped = keep.count()
    if sink.seekable:
        sink.sync()
        sink.patch(ehdr(final_flags), 0)
        sink.sync()
    else:
        sink.pwrite(ehdr(final_flags), 0)

