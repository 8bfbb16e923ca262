"""ELF output (``-E``, formats-cli.md §3), with excluded pages really absent.

makedumpfile keeps excluded runs shorter than 256 pages with their real contents; we do not: every
excluded run ends the PT_LOAD before it (its p_memsz covers the run, p_filesz does not), so no byte of
an excluded page reaches the file. Layout: Ehdr | PT_NOTE phdr | PT_LOAD phdrs | [Shdr 0 when the
count needs PN_XNUM] | notes | segment data (contiguous, not page aligned).

Crash safety: e_flags bit 0 (incomplete) is set in the header written first and cleared last.
"""
from __future__ import annotations

import time


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


@dataclass
class _Piece:
    seg: Segment  # input segment
    paddr: int
    filesz: int
    memsz: int
    offset: int = 0


def _pieces(seg: Segment, keep: DumpBitmaps, ps: int) -> list[_Piece]:
    """Split one input PT_LOAD into kept pieces; each piece's memsz runs to the next piece."""
    s_addr, e_addr = seg.paddr, seg.paddr + seg.memsz
    f_end = seg.paddr + seg.filesz
    if seg.memsz == 0:
        return [_Piece(seg, s_addr, 0, 0)]
    lo, hi = s_addr // ps, -(-e_addr // ps)
    spans = keep.runs(lo, hi)
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

    pieces: list[_Piece] = []
    for seg in src.loads:
        pieces.extend(_pieces(seg, keep, ps))
    note = lay.note
    nphdr = len(pieces) + (1 if note is not None else 0)

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
    cur = data_off
    for p in pieces:
        if p.filesz:
            p.offset = cur
            cur += p.filesz

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
    for p in pieces:
        seg = p.seg
        vaddr = (seg.vaddr + (p.paddr - seg.paddr)) & vmask
        ph += phdr(PT_LOAD, seg.flags, p.offset, vaddr, p.paddr, p.filesz, p.memsz, seg.align)
    sink.pwrite(bytes(ph), phoff)
    if use_xnum:
        sink.pwrite(sh_fmt.pack(0, 0, 0, 0, 0, 1, 0, nphdr, 0, 0), shoff)
    if note_size:
        sink.pwrite(plan.note_blob, note_off)
    if erase_note:
        sink.pwrite(erase_note, note_off + -(-note_size // 4) * 4)
    hooks = plan.compression.hooks

    total = sum(p.filesz for p in pieces)
    done = 0
    t0 = time.monotonic()
    chunk = max(1, plan.compression.window) * ps
    buf = bytearray(chunk + 2 * ps)
    for p in pieces:
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

