"""ELF output (``-E``, formats-cli.md §3), with excluded pages really absent.

makedumpfile keeps excluded runs shorter than 256 pages with their real contents; we do not: every
excluded run ends the PT_LOAD before it (its p_memsz covers the run, p_filesz does not), so no byte of
an excluded page reaches the file. Layout: Ehdr | PT_NOTE phdr | PT_LOAD phdrs | [Shdr 0 when the
count needs PN_XNUM] | notes | segment data (contiguous, not page aligned).

Crash safety: e_flags bit 0 (incomplete) is set in the header written first and cleared last.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from ..errors import DumpfilterError
from ..codec.zero import without_zero_pages
from ..filter import DumpBitmaps
from ..layouts import ELF_INCOMPLETE
from ..record import dataclass
from ..plan import DumpPlan
from ..report import Messages
from ..layouts import ELF_IDENT_SIZE, PN_XNUM, PT_LOAD, ElfStructs
from ..source.elf import ElfSource, Segment
from ..stats import Stats
from .sink import Sink


_PHDR_CHUNK = 1 << 20  # program headers are written in pieces of this many bytes (18724 of ELF64)


@dataclass
class _Piece:
    seg: Segment  # input segment
    paddr: int
    filesz: int
    memsz: int
    offset: int = 0


def _spans(seg: Segment, keep: DumpBitmaps, ps: int) -> Iterator[tuple[int, int]]:
    """The pfn runs of one input PT_LOAD to keep: the 2nd bitmap's, plus a leading partial page (always
    kept) and a trailing one (only its real bytes), which may extend the last run."""
    s_addr, e_addr = seg.paddr, seg.paddr + seg.memsz
    lo, hi = s_addr // ps, -(-e_addr // ps)
    runs = keep.runs(lo, hi)
    nxt = next(runs, None)
    last = (lo, lo + 1) if s_addr % ps and (nxt is None or nxt[0] != lo) else None
    while nxt is not None:  # the last run is held back for the trailing page
        if last is not None:
            yield last
        last, nxt = nxt, next(runs, None)
    if e_addr % ps and (last is None or last[1] != hi):
        if last is not None and last[1] == hi - 1:
            last = (last[0], hi)
        else:
            if last is not None:
                yield last
            last = (hi - 1, hi)
    if last is not None:
        yield last


def _pieces(seg: Segment, keep: DumpBitmaps, ps: int) -> Iterator[_Piece]:
    """Split one input PT_LOAD into kept pieces; each piece's memsz runs to the next piece. A
    generator: a sparse terabyte dump has hundreds of thousands of pieces, made again for each pass."""
    s_addr, e_addr = seg.paddr, seg.paddr + seg.memsz
    f_end = seg.paddr + seg.filesz
    if seg.memsz == 0:
        yield _Piece(seg, s_addr, 0, 0)
        return
    byte_spans = ((max(rs * ps, s_addr), min(re_ * ps, e_addr, f_end)) for rs, re_ in _spans(seg, keep, ps))
    byte_spans = ((a, b) for a, b in byte_spans if b > a)
    cur = next(byte_spans, None)
    if cur is None:
        yield _Piece(seg, s_addr, 0, seg.memsz)
        return
    if cur[0] > s_addr:
        yield _Piece(seg, s_addr, 0, cur[0] - s_addr)
    for nxt in byte_spans:
        yield _Piece(seg, cur[0], cur[1] - cur[0], nxt[0] - cur[0])
        cur = nxt
    yield _Piece(seg, cur[0], cur[1] - cur[0], e_addr - cur[0])


def _placed(src: ElfSource, keep: DumpBitmaps, ps: int, data_off: int) -> Iterator[_Piece]:
    """Every piece of every input PT_LOAD in order, with its file offset (data back to back)."""
    cur = data_off
    for seg in src.loads:
        for p in _pieces(seg, keep, ps):
            if p.filesz:
                p.offset = cur
                cur += p.filesz
            yield p


def _eraseinfo_note(text: bytes, big_endian: bool) -> bytes:
    """The ERASEINFO note makedumpfile appends to PT_NOTE (name "ERASEINFO", type 0)."""
    if not text:
        return b""
    import struct

    end = ">" if big_endian else "<"
    return (struct.pack(end + "III", 10, len(text), 0) + b"ERASEINFO\0\0\0"
            + text + bytes(-len(text) % 4))


def write_elf(plan: DumpPlan, sink: Sink, msgs: Messages, stats: Stats) -> None:
    src = plan.src
    if not isinstance(src, ElfSource):
        raise DumpfilterError(f"'-E' option is disabled, because {src.path} is kdump compressed format.")
    ps = plan.page_size
    lay = src.layout
    es = ElfStructs(64 if lay.elf_class == 2 else 32, lay.big_endian)
    keep = without_zero_pages(plan, stats) if plan.compression.exclude_zero else plan.bitmaps  # the program headers come first: which pages stay, cycle by cycle
    stats.elf_excluded = max(0, plan.bitmaps.present - keep.dumpable)

    # the pieces are made three times (count, program headers, data) rather than held: memory stays
    # bounded by a cycle's bitmaps whatever the number of pieces
    npieces = total = 0
    for p in _placed(src, keep, ps, 0):
        npieces += 1
        total += p.filesz
    note = lay.note
    nphdr = npieces + (1 if note is not None else 0)

    ph_fmt, sh_fmt = es.phdr, es.shdr
    phoff = ELF_IDENT_SIZE + es.ehdr.size
    use_xnum = nphdr >= PN_XNUM
    if use_xnum and es.elf_class != 64:
        raise DumpfilterError(f"ELF32 output cannot hold {nphdr} program headers")
    shoff = phoff + nphdr * ph_fmt.size if use_xnum else 0
    note_off = phoff + nphdr * ph_fmt.size + (sh_fmt.size if use_xnum else 0)
    note_size = len(plan.note_blob)
    erase_note = _eraseinfo_note(plan.eraseinfo, lay.big_endian)
    data_off = note_off + -(-note_size // 4) * 4 + len(erase_note) if erase_note else note_off + note_size

    e = list(lay.ehdr)  # type machine version entry phoff shoff flags ehsize phentsize phnum shentsize shnum shstrndx
    e[4] = phoff
    e[7] = phoff
    e[8] = ph_fmt.size
    if use_xnum:
        e[5], e[9], e[10], e[11], e[12] = shoff, PN_XNUM, sh_fmt.size, 1, 0
    else:
        e[5], e[9], e[11], e[12] = 0, nphdr, 0, 0

    def ehdr(flags: int) -> bytes:
        e[6] = flags
        return lay.ident + es.ehdr.pack(*e)

    phdr = es.pack_phdr

    final_flags = lay.e_flags & ~ELF_INCOMPLETE
    if sink.seekable:
        sink.pwrite(ehdr(final_flags | ELF_INCOMPLETE), 0)
    ph = bytearray()
    if note is not None:
        # with eraseinfo, p_filesz covers the ERASEINFO note and p_memsz does not (formats-cli.md §3.2)
        filesz = data_off - note_off if erase_note else note_size
        ph += phdr(note.type, note.flags, note_off, note.vaddr, note.paddr, filesz, note.memsz, note.align)
    vmask = (1 << es.elf_class) - 1  # a piece's p_vaddr wraps as the C address arithmetic would
    pos = phoff
    for p in _placed(src, keep, ps, data_off):
        seg = p.seg
        vaddr = (seg.vaddr + (p.paddr - seg.paddr)) & vmask
        ph += phdr(PT_LOAD, seg.flags, p.offset, vaddr, p.paddr, p.filesz, p.memsz, seg.align)
        if len(ph) >= _PHDR_CHUNK:
            sink.pwrite(ph, pos)
            pos += len(ph)
            ph = bytearray()
    if ph:
        sink.pwrite(ph, pos)
    if use_xnum:
        sink.pwrite(sh_fmt.pack(0, 0, 0, 0, 0, 1, 0, nphdr, 0, 0), shoff)
    if note_size:
        sink.pwrite(plan.note_blob, note_off)
    if erase_note:
        sink.pwrite(erase_note, note_off + -(-note_size // 4) * 4)
    hooks = plan.compression.hooks

    done = 0
    t0 = time.monotonic()
    chunk = max(1, plan.compression.window) * ps
    buf = bytearray(chunk + 2 * ps)
    for p in _placed(src, keep, ps, data_off):
        a = p.paddr
        b = p.paddr + p.filesz
        while a < b:
            n = min(b - a, chunk)
            first = a // ps
            npages = -(-(a + n) // ps) - first
            src.read_pages(first, npages, buf)
            for h in hooks:  # erase filters and plugins change page contents here too
                lo, hi = max(h.start, first), min(h.end, first + npages)
                if lo < hi:  # the hook sees only the pages of its range, as in the compression stage
                    h.fn(list(range(lo, hi)), memoryview(buf)[(lo - first) * ps : (hi - first) * ps])
            skip = a - first * ps
            sink.pwrite(memoryview(buf)[skip : skip + n], p.offset + (a - p.paddr))
            a += n
            done += n
            msgs.progress("Copying data", done, total, t0)
    msgs.progress("Copying data", total, total, t0)
    stats.dumped = keep.dumpable
    if sink.seekable:
        sink.sync()
        sink.patch(ehdr(final_flags), 0)
        sink.sync()
    else:
        sink.pwrite(ehdr(final_flags), 0)

