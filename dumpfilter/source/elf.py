"""ELF vmcores: /proc/vmcore from kdump, QEMU's dump-guest-memory ELF, our own -E output.

Layouts: ELF64/ELF32 Ehdr and Phdr (formats-cli.md §3, filtering.md §2.1, §3.1). PT_NOTE holds the
notes; each PT_LOAD maps [p_paddr, p_paddr+p_memsz) with p_filesz bytes at p_offset in the file.
"""
from __future__ import annotations

import bisect
import heapq
import mmap
import os


from ..record import dataclass
from ..bitmap import Bitmap
from ..errors import InputError
from ..layouts import ELF_IDENT_SIZE, ET_CORE, PN_XNUM, PT_LOAD, PT_NOTE, ElfStructs
from .base import MAX_NOTES, DumpSource, FileView, SourceInfo, check_blob_size, host_page_size, parse_notes

_FAULT_AROUND = 2 << 20  # the most a fault maps around itself: one page table (release_view)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import ByteView, WindowReader



@dataclass(frozen=True)
class Segment:
    """A program header, normalised to the ELF64 field set."""

    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


@dataclass
class ElfLayout:
    elf_class: int
    big_endian: bool
    ident: bytes
    ehdr: tuple[int, ...]
    segments: list[Segment]
    note: Segment | None

    @property
    def machine(self) -> int:
        return self.ehdr[1]

    @property
    def e_flags(self) -> int:
        return self.ehdr[6]


def parse_elf_headers(fv: ByteView) -> ElfLayout:
    """Parse and validate ELF and program headers; InputError on anything inconsistent."""
    if fv.size < 16:
        raise InputError(f"{fv.path}: not a vmcore: file too small to hold an ELF header")
    ident = fv.pread(0, ELF_IDENT_SIZE, "ELF identification")
    if ident[:4] != b"\x7fELF":
        raise InputError(f"{fv.path}: not a vmcore (no ELF or KDUMP signature)")
    cls = ident[4]
    if cls not in (1, 2):
        raise InputError(f"{fv.path}: unsupported ELF class {cls}")
    if ident[5] not in (1, 2):
        raise InputError(f"{fv.path}: unsupported ELF data encoding {ident[5]}")
    be = ident[5] == 2
    es = ElfStructs(64 if cls == 2 else 32, be)
    phfmt = es.phdr
    ehdr = es.ehdr.unpack(fv.pread(ELF_IDENT_SIZE, es.ehdr.size, "ELF header"))
    e_type, _machine, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, _shes, shnum, _shstr = ehdr
    if e_type != ET_CORE:
        raise InputError(f"{fv.path}: ELF file is not a core file (e_type {e_type})")
    if phentsize != phfmt.size:
        raise InputError(f"{fv.path}: bad ELF program header size {phentsize} (expected {phfmt.size})")
    if phnum == PN_XNUM:
        shfmt = es.shdr
        if shoff == 0 or shnum == 0:
            raise InputError(f"{fv.path}: e_phnum is PN_XNUM but there is no section header 0")
        sh = shfmt.unpack(fv.pread(shoff, shfmt.size, "section header 0 (extended program header count)"))
        phnum = sh[7]
    if phnum == 0:
        raise InputError(f"{fv.path}: ELF core file has no program headers")
    raw = fv.pread(phoff, phnum * phfmt.size, f"{phnum} ELF program headers (truncated ELF headers)")
    segments: list[Segment] = []
    note: Segment | None = None
    for i in range(phnum):
        seg = Segment(*es.unpack_phdr(raw, i * phfmt.size))
        if seg.type == PT_NOTE:
            note = seg  # the last PT_NOTE wins, as in makedumpfile
        elif seg.type == PT_LOAD:
            if seg.paddr + seg.memsz > 1 << es.elf_class:
                raise InputError(f"{fv.path}: PT_LOAD {i} (paddr {seg.paddr:#x}, {seg.memsz:#x} bytes) runs past the "
                                 f"end of the {es.elf_class}-bit physical address space")
            if seg.filesz > seg.memsz:
                raise InputError(f"{fv.path}: PT_LOAD {i} has p_filesz {seg.filesz:#x} > p_memsz {seg.memsz:#x}")
            if seg.offset + seg.filesz > fv.size:
                raise InputError(
                    f"{fv.path}: PT_LOAD {i} (paddr {seg.paddr:#x}, {seg.filesz:#x} bytes at offset {seg.offset:#x}) "
                    f"lies past the end of the file ({fv.size:#x} bytes); the vmcore is truncated"
                )
        segments.append(seg)
    return ElfLayout(cls, be, ident, ehdr, segments, note)


def _pread_into(fd: int, buf: memoryview, offset: int, path: str) -> None:
    done = 0
    n = len(buf)
    while done < n:
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got <= 0:
            raise InputError(f"{path}: short read at offset {offset + done}")
        done += got


class ElfSource(DumpSource):
    """An ELF64/ELF32 vmcore."""

    format = "elf"

    def __init__(self, path: str, fv: ByteView | None = None, page_size: int | None = None) -> None:
        self.path = path
        self.fv: ByteView = fv or FileView(path)
        try:
            self.layout = parse_elf_headers(self.fv)
            self.elf_class = 64 if self.layout.elf_class == 2 else 32
            self.big_endian = self.layout.big_endian
            self.elf_machine = self.layout.machine
            note = self.layout.note
            if note is not None and note.filesz:
                check_blob_size(note.filesz, MAX_NOTES, "PT_NOTE segment", path)
                self.note_blob = self.fv.pread(note.offset, note.filesz, "PT_NOTE data (truncated notes)")
            else:
                self.note_blob = b""
            self.notes = parse_notes(self.note_blob, self.big_endian)
            self.loads = [s for s in self.layout.segments if s.type == PT_LOAD]
            self.load_segments = self.loads
            if not self.loads:
                raise InputError(f"{path}: the vmcore has no PT_LOAD segments")
            self.page_size = page_size or self._page_size_from_notes() or host_page_size()
            ps = self.page_size
            max_paddr = max(s.paddr + s.memsz for s in self.loads)
            self.max_mapnr = (max_paddr + ps - 1) // ps
            if self.max_mapnr > 1 << 40:
                raise InputError(f"{path}: PT_LOAD addresses up to {max_paddr:#x} are not plausible physical memory")
            self._build_read_index()
            self.can_view = self.fv.mm is not None and type(self.fv) is FileView
        except BaseException:
            self.fv.close()
            raise
        self.info = SourceInfo()

    def _page_size_from_notes(self) -> int | None:
        from ..kernel.vmcoreinfo import VmcoreInfo

        raw = self.vmcoreinfo_raw
        if raw is None:
            return None
        return VmcoreInfo.parse(raw).page_size

    def _build_read_index(self) -> None:
        """Disjoint physical ranges backed by file data; the first PT_LOAD in header order wins.

        A sweep over the segments' ends with a heap of the segments covering the current point (the
        one first in header order on top): O(n log n) in the number of PT_LOADs, where subtracting
        every earlier segment from each one was O(n^2) (minutes for the 65535 PT_LOADs a header can
        claim)."""
        segs = [(s.paddr, s.paddr + s.filesz, s.offset) for s in self.loads if s.filesz > 0]
        points = sorted({p for a, b, _ in segs for p in (a, b)})
        by_start = sorted(range(len(segs)), key=lambda i: segs[i][0])
        heap: list[int] = []  # indexes (header order) of the segments that have started
        covered: list[tuple[int, int, int]] = []  # (pstart, pend, file_offset_of_pstart)
        winner: list[int] = []  # the segment of each covered range
        k = 0
        for j in range(len(points) - 1):
            x, nx = points[j], points[j + 1]
            while k < len(by_start) and segs[by_start[k]][0] <= x:
                heapq.heappush(heap, by_start[k])
                k += 1
            while heap and segs[heap[0]][1] <= x:
                heapq.heappop(heap)  # ended (segments ended below the top go when they reach it)
            if not heap:
                continue
            i = heap[0]
            if covered and covered[-1][1] == x and winner[-1] == i:
                covered[-1] = (covered[-1][0], nx, covered[-1][2])
            else:
                covered.append((x, nx, segs[i][2] + (x - segs[i][0])))
                winner.append(i)
        self._starts = [c[0] for c in covered]
        self._ranges = covered

    def has_memory(self, start: int, end: int) -> bool:
        """Whether a PT_LOAD (its memsz, in whole pages either way) meets pfns [start, end)."""
        spans = getattr(self, "_mem_spans", None)
        if spans is None:
            ps = self.page_size
            merged: list[tuple[int, int]] = []
            for a, b in sorted((s.paddr // ps, -(-(s.paddr + s.memsz) // ps)) for s in self.loads):
                if merged and a <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], b))
                else:
                    merged.append((a, b))
            spans = self._mem_spans = merged
        i = bisect.bisect_right(spans, (end, -1)) - 1
        return i >= 0 and spans[i][0] < end and spans[i][1] > start if spans else False

    def data_ranges(self) -> list[tuple[int, int]] | None:
        """The pfns of the PT_LOADs' file data (the read index, in whole pages, merged)."""
        ps = self.page_size
        out: list[tuple[int, int]] = []
        for s, e, _ in self._ranges:
            a, b = s // ps, -(-e // ps)
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out

    # --- bitmaps -------------------------------------------------------------------------------
    def present_bitmap(self, partial_last: bool = False, start: int = 0, end: int | None = None) -> Bitmap:
        """Pfns [start, end) covered by PT_LOADs: [floor(start/ps), floor(end/ps)) each (filtering.md §4.1).

        With ``partial_last`` a segment's partial last page is marked too, as makedumpfile's
        non-cyclic mode does in the 1st bitmap (formats-cli.md §1.5, checked against 1.7.2).
        """
        end = self.max_mapnr if end is None else min(end, self.max_mapnr)
        bm = Bitmap(end - start)
        ps = self.page_size
        for s in self.loads:
            e = s.paddr + s.memsz
            bm.set_range(s.paddr // ps - start, (-(-e // ps) if partial_last else e // ps) - start)
        return bm

    def dumpable_bitmap(self, start: int = 0, end: int | None = None) -> Bitmap:
        """Whole pages of PT_LOADs minus pages past p_filesz (exclude_nodata_pages), pfns [start, end)."""
        bm = self.present_bitmap(start=start, end=end)
        ps = self.page_size
        for s in self.loads:
            if s.filesz < s.memsz:
                bm.clear_range((s.paddr + s.filesz + ps - 1) // ps - start, (s.paddr + s.memsz + ps - 1) // ps - start)
        return bm

    # --- pages ---------------------------------------------------------------------------------
    def maps_fast(self) -> bool:
        """/proc/vmcore, yes. A file on a disk, no: each mapped window costs an mmap, a fault per page and
        an munmap (with TLB shootdowns once there are worker threads), while pread's copy comes from
        readahead in large batches. Measured cold on the 256 GiB bigcore image at -l -d 31: 49.7 s mapped,
        40.2 s with pread (43.3 / 28.3 s with --num-threads 2); warm on the real 8 GiB vmcore at -d 31,
        0.48 / 0.42 s; at -d 1 the same wall time (the output's writes dominate), 10% more CPU."""
        return type(self.fv) is FileView and self.fv.on_procfs and self.fv.mm is not None

    def window_reader(self, use_mmap: bool = True) -> WindowReader:
        """A plain file is read in C (mapped, or with pread when ``use_mmap`` is off or the file can't
        be mapped); a flattened one, seen through a FlatView, through ``read_pages``."""
        if type(self.fv) is not FileView or self.fv.fd < 0:
            return super().window_reader(use_mmap)
        from .._speedups.reader import DirectReader

        return DirectReader(self.fv.fd, self.read_index, use_mmap)

    @property
    def read_index(self) -> list[tuple[int, int, int]]:
        """Disjoint, sorted (phys_start, phys_end, file_offset) byte ranges backed by file data."""
        return list(self._ranges)

    def phys_view(self, paddr: int, size: int) -> memoryview | None:
        """A read-only view of physical memory [paddr, paddr+size) in the file's mapping, without a
        copy, when one PT_LOAD's file data holds all of it; None otherwise. Give it back with
        ``release_view`` so that its pages leave our RSS."""
        mm = self.fv.mm
        if mm is None or not self.can_view:
            return None
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i < 0:
            return None
        s, e, foff = self._ranges[i]
        if paddr + size > e:
            return None
        off = foff + (paddr - s)
        return memoryview(mm)[off : off + size]

    def release_view(self, view: memoryview, paddr: int) -> None:
        """Drop a phys_view's pages from this process (they stay in the page cache).

        The range dropped is widened to whole 2 MiB blocks of the file: on a fault the kernel also maps
        the neighbours already in the page cache ("fault-around", up to a page table's worth), and on a
        cold file its readahead has just put the pages past the view there. Left mapped, those made 14
        pages per section of a 256 GiB vmcore stay in our RSS (47 MiB). Dropping the mapping of a shared
        read-only file page is harmless to another thread's view: its next access faults it back in."""
        s, e, foff = self._ranges[bisect.bisect_right(self._starts, paddr) - 1]
        off = foff + (paddr - s)
        size = view.nbytes
        view.release()
        mm = self.fv.mm
        a = off // _FAULT_AROUND * _FAULT_AROUND
        b = min(-(-(off + size) // _FAULT_AROUND) * _FAULT_AROUND, self.fv.size // mmap.PAGESIZE * mmap.PAGESIZE)
        if mm is not None and b > a:
            try:
                mm.madvise(mmap.MADV_DONTNEED, a, b - a)
            except (OSError, ValueError):
                pass

    def read_pages(self, pfn: int, count: int, out: memoryview | bytearray) -> None:
        ps = self.page_size
        mv = memoryview(out).cast("B")
        nbytes = count * ps
        if mv.nbytes < nbytes:
            raise ValueError("read_pages: output buffer too small")
        start = pfn * ps
        end = start + nbytes
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            i = 0
        pos = start  # everything before pos has been filled
        fd = self.fv.fd
        while i < len(self._ranges):
            s, e, foff = self._ranges[i]
            if s >= end:
                break
            if e > start:
                a = max(s, start)
                b = min(e, end)
                if a > pos:
                    mv[pos - start : a - start] = bytes(a - pos)
                if fd >= 0 and self.fv.mm is not None:
                    # pread, not the mapping: it releases the GIL and keeps file pages out of our RSS
                    _pread_into(fd, mv[a - start : b - start], foff + (a - s), self.path)
                else:
                    mv[a - start : b - start] = self.fv.pread(foff + (a - s), b - a)
                pos = max(pos, b)
            i += 1
        if pos < end:
            mv[pos - start : nbytes] = bytes(end - pos)

    def close(self) -> None:
        self.fv.close()
