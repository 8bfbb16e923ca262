"""``pydumpfile verify DUMPFILE [--vmcore VMCORE] [--json]``: is this kdump-compressed file whole, and can
crash and drgn open it?

Checks, each problem one line (exit 0 only when there is none):

- header: signature, version, block size, sub header, bitmap size for max_mapnr, the notes and the
  VMCOREINFO inside the file;
- bitmaps: no 2nd-bitmap bit without its 1st-bitmap bit, no bit past max_mapnr;
- descriptors: one per 2nd-bitmap bit; every offset inside the file, sizes of at most a page (raw pages
  exactly a page), known compression flags; data packed in pfn order from the end of the descriptor area
  (the shared zero page first when there is one), so a wrong bitmap bit or a lost descriptor shows;
- completeness: a file marked incomplete is reported; a file that is cut (descriptors or data past its
  end, descriptors of offset 0) but not marked incomplete is reported as such;
- every page decodes to exactly one page;
- eraseinfo: inside the file, right after the page data, lines ``erase EXPR size N|nullify``;
- debuggability (``kernel/debuggable.py``): the pages crash and drgn need, by symbol;
- with ``--vmcore``: every kept page equals the source's page (bytes erased to 'X' or zero are allowed
  when the file has eraseinfo), zero-page descriptors stand for zero pages, and the 1st bitmap covers
  the source's memory.
"""
from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

from .codec import BY_FLAG, decompress_page
from .errors import DumpfilterError
from .layouts import KDUMP_SUB_HEADER, PAGE_DESC, DiskDumpHeader, KdumpSubHeader
from .options import ArgParser
from .source.base import MAX_ERASEINFO

PROG = "pydumpfile verify"
USAGE = f"""usage: {PROG} DUMPFILE [--vmcore VMCORE] [--json]

Check a kdump-compressed DUMPFILE: header, bitmaps, page descriptors, that every page decodes, the
incomplete flag, the eraseinfo, and that the pages crash and drgn need to open it are there. With
--vmcore, compare every kept page with the source it was made from. One line per problem; exit 0 only
when there is none. --json prints {{"ok": bool, "problems": [...], "pages": N, ...}} instead.
"""
ERASE_LINE = re.compile(rb"^erase \S+ (size [1-9][0-9]*|nullify)$")
DESC_DTYPE = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
MAX_LISTED = 20  # page-level problems of one kind listed before "... and N more"


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.facts: dict[str, object] = {}
        self._counts: dict[str, int] = {}

    def add(self, text: str, kind: str | None = None) -> None:
        if kind is not None:
            n = self._counts.get(kind, 0) + 1
            self._counts[kind] = n
            if n > MAX_LISTED:
                return
        self.problems.append(text)

    def finish(self) -> None:
        for kind, n in self._counts.items():
            if n > MAX_LISTED:
                self.problems.append(f"... and {n - MAX_LISTED} more {kind} problems")


def _popcount(b: np.ndarray) -> int:
    return int(np.unpackbits(b).sum()) if b.size else 0


def verify(path: str, vmcore: str | None = None) -> Report:
    rep = Report()
    try:
        _verify(path, vmcore, rep)
    except DumpfilterError as e:
        rep.add(f"{path}: {e}")
    except OSError as e:
        rep.add(f"{path}: {e.strerror or e}")
    rep.finish()
    return rep


def _verify(path: str, vmcore: str | None, rep: Report) -> None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(464)
        if len(raw) < 464 or raw[:8] != b"KDUMP   ":
            rep.add(f"{path}: not a kdump-compressed file (no 'KDUMP   ' signature)")
            return
        h = DiskDumpHeader.unpack(raw)
        bs = h.block_size
        if bs < 1024 or bs > 65536 or bs & (bs - 1):
            rep.add(f"{path}: header: block size {bs} is not a page size")
            return
        if h.header_version < 1 or h.header_version > 6:
            rep.add(f"{path}: header: version {h.header_version} (1-6 expected)")
        f.seek(bs)
        sub = KdumpSubHeader.unpack(f.read(KDUMP_SUB_HEADER.size))
        max_mapnr = sub.max_mapnr_64 if h.header_version >= 6 and sub.max_mapnr_64 else h.max_mapnr
        rep.facts.update(max_mapnr=max_mapnr, dump_level=sub.dump_level, status=h.status, file_size=size)
        if h.max_mapnr != min(max_mapnr, 0xFFFFFFFF):
            rep.add(f"{path}: header: max_mapnr {h.max_mapnr} disagrees with max_mapnr_64 {max_mapnr}")
        if h.status & 0x8:
            rep.add(f"{path}: marked incomplete (the dump was cut short when it was written)")
        need_sub = -(-(KDUMP_SUB_HEADER.size + sub.size_note) // bs) if sub.size_note else 1
        if h.sub_hdr_size < max(1, need_sub):
            rep.add(f"{path}: header: sub_hdr_size {h.sub_hdr_size} blocks cannot hold the {sub.size_note} bytes of notes")
        if sub.size_note and (sub.offset_note != bs + KDUMP_SUB_HEADER.size or sub.offset_note + sub.size_note > size):
            rep.add(f"{path}: sub header: notes at {sub.offset_note}+{sub.size_note} are misplaced")
        if sub.size_vmcoreinfo and not (sub.offset_note <= sub.offset_vmcoreinfo
                                        and sub.offset_vmcoreinfo + sub.size_vmcoreinfo <= sub.offset_note + sub.size_note):
            rep.add(f"{path}: sub header: VMCOREINFO at {sub.offset_vmcoreinfo} lies outside the notes")
        half = -(-((max_mapnr + 7) // 8) // bs) * bs
        if h.bitmap_blocks * bs != 2 * half:
            rep.add(f"{path}: header: bitmap_blocks {h.bitmap_blocks} does not match max_mapnr {max_mapnr} "
                    f"({2 * half // bs} expected)")
            return
        bm1_off = (1 + h.sub_hdr_size) * bs
        pd_off = bm1_off + 2 * half
        if pd_off > size:
            rep.add(f"{path}: cut before the end of the bitmaps ({size} of {pd_off} bytes)"
                    + ("" if h.status & 0x8 else ", and not marked incomplete"))
            return
        f.seek(bm1_off)
        b1 = np.frombuffer(f.read(half), dtype=np.uint8)
        b2 = np.frombuffer(f.read(half), dtype=np.uint8)
        stray = b2 & ~b1
        if stray.any():
            first = int(np.flatnonzero(stray)[0]) * 8
            rep.add(f"{path}: bitmaps: {_popcount(stray)} pages are in the 2nd bitmap but not in the 1st "
                    f"(first near pfn {first:#x})")
        tail_bits = np.unpackbits(b2, bitorder="little")[max_mapnr:]
        if tail_bits.any() or np.unpackbits(b1, bitorder="little")[max_mapnr:].any():
            rep.add(f"{path}: bitmaps: bits set past max_mapnr {max_mapnr:#x}")
        pfns = np.flatnonzero(np.unpackbits(b2, bitorder="little")[:max_mapnr])
        n = len(pfns)
        rep.facts["pages"] = n
        data_off = pd_off + PAGE_DESC.size * n
        ndesc = max(0, min(n, (size - pd_off) // PAGE_DESC.size))
        f.seek(pd_off)
        descs = np.frombuffer(f.read(ndesc * PAGE_DESC.size), dtype=DESC_DTYPE)
        cut = ndesc < n
        if cut:
            rep.add(f"{path}: cut inside the page descriptors ({ndesc} of {n})"
                    + ("" if h.status & 0x8 else ", and not marked incomplete"))
        _check_descs(path, rep, descs, pfns, data_off, size, bs, h, sub)
        eraseinfo = _check_eraseinfo(path, rep, f, descs, data_off, size, bs, h, sub)
        _decode_all(path, rep, f, descs, pfns, bs, size)
    _debuggable(path, rep)
    if vmcore is not None:
        _compare(path, vmcore, rep, pfns, descs, data_off, bs, bool(eraseinfo), b1, max_mapnr)


def _check_descs(path: str, rep: Report, d: np.ndarray, pfns: np.ndarray, data_off: int, size: int, bs: int,
                 h: DiskDumpHeader, sub: KdumpSubHeader) -> None:
    if not len(d):
        return
    off, sz, fl = d["offset"], d["size"], d["flags"]
    zero_desc = (off == data_off) & (sz == bs) & (fl == 0) & bool(sub.dump_level & 1)
    lost = off == 0
    if lost.any():
        i = int(np.flatnonzero(lost)[0])
        rep.add(f"{path}: {int(lost.sum())} page descriptors are empty (page data never written; first pfn "
                f"{int(pfns[i]):#x})" + ("" if h.status & 0x8 else ", and the file is not marked incomplete"))
    valid = ~lost
    known = np.isin(fl, [0, *BY_FLAG.keys()])
    for i in np.flatnonzero(valid & ~known)[:MAX_LISTED]:
        rep.add(f"{path}: pfn {int(pfns[i]):#x}: unknown compression flags {int(fl[i]):#x}", "descriptor")
    bad_size = valid & ((sz == 0) | (sz > bs) | ((fl == 0) & (sz != bs)))
    for i in np.flatnonzero(bad_size)[:MAX_LISTED]:
        rep.add(f"{path}: pfn {int(pfns[i]):#x}: stored size {int(sz[i])} (a page is {bs})", "descriptor")
    past = valid & ((off < data_off) | (off + sz.astype(np.int64) > size))
    if past.any():
        i = int(np.flatnonzero(past)[0])
        beyond = bool(((off + sz.astype(np.int64)) > size)[i])
        what = "past the end of the file" if beyond else "inside the headers or descriptors"
        tail = ("" if h.status & 0x8 else ", and the file is not marked incomplete") if beyond else ""
        rep.add(f"{path}: {int(past.sum())} pages have data {what} (first pfn {int(pfns[i]):#x}){tail}")
    # the data of non-zero pages is packed in descriptor order from data_off (+ the zero page)
    mine = valid & ~zero_desc
    if mine.any():
        o = off[mine]
        s = sz[mine].astype(np.int64)
        start = data_off + (bs if sub.dump_level & 1 else 0)
        expect = np.concatenate(([start], (o + s)[:-1]))
        wrong = o != expect
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            j = int(np.flatnonzero(mine)[i])
            rep.add(f"{path}: page data out of place at pfn {int(pfns[j]):#x}: offset {int(o[i])}, {int(expect[i])} "
                    f"expected (a wrong 2nd-bitmap bit or a damaged descriptor)")
        rep.facts["data_end"] = int(o[-1] + s[-1])
    else:
        rep.facts["data_end"] = data_off + (bs if sub.dump_level & 1 else 0)


def _check_eraseinfo(path: str, rep: Report, f, d: np.ndarray, data_off: int, size: int, bs: int,  # noqa: ANN001
                     h: DiskDumpHeader, sub: KdumpSubHeader) -> bytes:
    end = int(str(rep.facts.get("data_end", data_off)))
    if h.header_version < 5 or not (sub.offset_eraseinfo or sub.size_eraseinfo):
        if size > end and not h.status & 0x8:
            rep.add(f"{path}: {size - end} bytes after the page data that no header describes")
        return b""
    if sub.offset_eraseinfo != end:
        rep.add(f"{path}: eraseinfo at {sub.offset_eraseinfo}, right after the page data ({end}) expected")
    if sub.offset_eraseinfo + sub.size_eraseinfo > size:
        rep.add(f"{path}: eraseinfo ({sub.size_eraseinfo} bytes at {sub.offset_eraseinfo}) runs past the end of the file")
        return b""
    if sub.size_eraseinfo > MAX_ERASEINFO:
        rep.add(f"{path}: eraseinfo of {sub.size_eraseinfo} bytes (at most {MAX_ERASEINFO >> 20} MiB expected)")
        return b""
    f.seek(sub.offset_eraseinfo)
    text = f.read(sub.size_eraseinfo)
    if not text.endswith(b"\n"):
        rep.add(f"{path}: eraseinfo does not end with a newline")
    for k, line in enumerate(text.rstrip(b"\n").split(b"\n"), 1):
        if not ERASE_LINE.match(line):
            rep.add(f"{path}: eraseinfo line {k} is not 'erase EXPR size N|nullify': {line[:80]!r}", "eraseinfo")
    rep.facts["eraseinfo_lines"] = text.count(b"\n")
    if size > sub.offset_eraseinfo + sub.size_eraseinfo:
        rep.add(f"{path}: {size - sub.offset_eraseinfo - sub.size_eraseinfo} bytes after the eraseinfo")
    return text


def _decode_all(path: str, rep: Report, f, d: np.ndarray, pfns: np.ndarray, bs: int, size: int) -> None:  # noqa: ANN001
    fd = f.fileno()
    bad = 0
    for i in range(len(d)):
        o, s, fl = int(d["offset"][i]), int(d["size"][i]), int(d["flags"][i])
        if o == 0 or o + s > size or s > bs or not s:
            continue
        data = os.pread(fd, s, o)
        try:
            page = decompress_page(fl, data, bs, "")
            if len(page) != bs:
                raise DumpfilterError(f"decodes to {len(page)} bytes")
        except DumpfilterError as e:
            bad += 1
            rep.add(f"{path}: pfn {int(pfns[i]):#x}: page data does not decode ({str(e).lstrip(': ')})", "decode")
        except Exception as e:  # noqa: BLE001 - a codec library's own error on corrupt data
            bad += 1
            rep.add(f"{path}: pfn {int(pfns[i]):#x}: page data does not decode ({type(e).__name__}: {e})", "decode")
    rep.facts["undecodable"] = bad


def _debuggable(path: str, rep: Report) -> None:
    from .kernel.debuggable import missing, needed_pages
    from .kernel.vmcoreinfo import VmcoreInfo
    from .source import open_source

    try:
        src = open_source(path)
    except DumpfilterError as e:
        rep.add(f"{path}: can't be opened as a dump: {e}")
        return
    try:
        raw = src.vmcoreinfo_raw
        if raw is None:
            rep.add(f"{path}: no VMCOREINFO note; crash and drgn can't find the kernel's structures")
            return
        vi = VmcoreInfo.parse(raw)
        syms = None
        try:
            from .filter.extend import open_kernel_symbols

            syms = open_kernel_symbols(src, vi, None)
        except DumpfilterError:
            syms = None
        _, b2 = _dumped_bits(src)
        needs = needed_pages(src, vi, syms)
        for label, why in missing(needs, lambda p: bool(b2.test(p)) if p < src.max_mapnr else False):
            rep.add(f"{path}: crash and drgn need {label}: {why}", "debuggability")
        rep.facts["debuggability_items"] = len(needs)
    except DumpfilterError as e:
        rep.add(f"{path}: debuggability check failed: {e}")
    finally:
        src.close()


def _dumped_bits(src):  # noqa: ANN001, ANN202
    return src.present_bitmap(), src.dumpable_bitmap()


def _compare(path: str, vmcore: str, rep: Report, pfns: np.ndarray, d: np.ndarray, data_off: int, bs: int,
             erased: bool, b1: np.ndarray, max_mapnr: int) -> None:
    from .source import open_source

    try:
        src = open_source(vmcore)
    except DumpfilterError as e:
        rep.add(f"{vmcore}: {e}")
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if src.page_size != bs:
            rep.add(f"{path}: block size {bs} differs from {vmcore}'s page size {src.page_size}")
            return
        present = src.present_bitmap(partial_last=True)  # non-cyclic dumps mark a partial last page
        mine = np.unpackbits(b1, bitorder="little")[:max_mapnr]
        theirs = np.unpackbits(np.frombuffer(present.tobytes(), dtype=np.uint8), bitorder="little")[:max_mapnr]
        if len(theirs) < len(mine):
            theirs = np.concatenate((theirs, np.zeros(len(mine) - len(theirs), dtype=np.uint8)))
        if (mine > theirs[:len(mine)]).any():
            rep.add(f"{path}: 1st bitmap marks {int((mine > theirs[:len(mine)]).sum())} pages that {vmcore} does not have")
        differ = allowed = 0
        for i in range(len(d)):
            o, s, fl = int(d["offset"][i]), int(d["size"][i]), int(d["flags"][i])
            pfn = int(pfns[i])
            if o == 0 or pfn >= src.max_mapnr:
                continue
            try:
                page = decompress_page(fl, os.pread(fd, s, o), bs, "")
                ref = src.read_page(pfn)
            except Exception:  # noqa: BLE001 - reported by the decode pass already
                continue
            if page == ref:
                continue
            if erased and _only_erased(page, ref):
                allowed += 1
                continue
            differ += 1
            a = np.frombuffer(page, dtype=np.uint8)
            b = np.frombuffer(ref, dtype=np.uint8)
            k = int(np.flatnonzero(a != b)[0])
            rep.add(f"{path}: pfn {pfn:#x} differs from {vmcore} at byte {k} "
                    f"({int((a != b).sum())} bytes differ)", "content")
        rep.facts["pages_compared"] = len(d)
        rep.facts["pages_erased"] = allowed
        rep.facts["pages_differing"] = differ
    finally:
        os.close(fd)
        src.close()


def _only_erased(page: bytes, ref: bytes) -> bool:
    a = np.frombuffer(page, dtype=np.uint8)
    b = np.frombuffer(ref, dtype=np.uint8)
    diff = a != b
    return bool(np.all((a[diff] == 0x58) | (a[diff] == 0)))


def main(argv: list[str]) -> int:
    p = ArgParser(prog=PROG, add_help=False)
    p.add_argument("dumpfile", nargs="?")
    p.add_argument("--vmcore")
    p.add_argument("--json", action="store_true")
    p.add_argument("-h", "--help", action="store_true")
    a = p.parse_args(argv)
    if a.help or not a.dumpfile:
        sys.stdout.write(USAGE)
        return 0 if a.help else 1
    rep = verify(a.dumpfile, a.vmcore)
    if a.json:
        sys.stdout.write(json.dumps({"ok": not rep.problems, "problems": rep.problems, **rep.facts},
                                    indent=2, sort_keys=True) + "\n")
    else:
        for line in rep.problems:
            sys.stdout.write(line + "\n")
        if not rep.problems:
            sys.stdout.write(f"{a.dumpfile}: ok ({rep.facts.get('pages', 0)} pages)\n")
    return 0 if not rep.problems else 1
