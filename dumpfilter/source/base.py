"""The DumpSource interface every input format implements, and ELF note parsing.

A source knows pages by pfn and the notes; it knows nothing about the kernel or the output.
"""
from __future__ import annotations

import mmap
import os
import resource
import stat
import struct
from abc import ABC, abstractmethod


from ..record import dataclass, field
from ..bitmap import Bitmap
from ..errors import InputError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .._speedups.window import WindowBuffers
    from .elf import Segment

    class WindowReader(Protocol):
        """Points a window's buffers at the pages of the set bits of ``bitmap`` in [wstart, wend)
        (bit i is pfn base + i); raises OSError when they can't be read."""

        def read_window(self, bitmap: bytearray, wstart: int, wend: int, base: int, wb: WindowBuffers) -> None: ...

    class ByteView(Protocol):
        """Random access to the bytes of an input: a FileView, or a FlatView of a flattened file."""

        path: str
        size: int
        fd: int
        mm: mmap.mmap | None

        def pread(self, offset: int, size: int, what: str = "data") -> bytes: ...
        def close(self) -> None: ...

NT_PRSTATUS = 1
# The notes (a few KiB: one NT_PRSTATUS per CPU, VMCOREINFO) and the eraseinfo (a line per erased
# symbol) are read whole. A header claiming more is corrupt; refused before reading, so that the
# memory does not follow the claim (a flattened file's view can claim up to 128 TiB).
MAX_NOTES = 16 << 20
MAX_ERASEINFO = 16 << 20


def check_blob_size(size: int, limit: int, what: str, path: str) -> None:
    """InputError when a header says ``what`` takes ``size`` bytes, more than ``limit``."""
    if size > limit:
        raise InputError(f"{path}: the {what} would take {size} bytes (at most {limit >> 20} MiB expected); "
                         "the header is corrupt")
_NHDR = struct.Struct("<III")
_NHDR_BE = struct.Struct(">III")


@dataclass(frozen=True)
class Note:
    """One ELF note inside a note blob. ``desc_offset`` is relative to the start of the blob."""

    name: bytes  # without the terminating NUL
    type: int
    desc_offset: int
    desc: bytes


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_notes(blob: bytes, big_endian: bool = False, what: str = "PT_NOTE") -> list[Note]:
    """Parse an ELF note blob ({namesz, descsz, type}, name, desc; each padded to 4 bytes).

    A header of all zeros ends the list (padding). A note running past the blob is an InputError.
    """
    hdr = _NHDR_BE if big_endian else _NHDR
    notes: list[Note] = []
    off = 0
    size = len(blob)
    while off + hdr.size <= size:
        namesz, descsz, ntype = hdr.unpack_from(blob, off)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break
        name_off = off + hdr.size
        desc_off = name_off + _align4(namesz)
        end = desc_off + _align4(descsz)
        if namesz > 4096 or desc_off + descsz > size:
            raise InputError(
                f"{what} is truncated or corrupt: note at offset {off} (namesz {namesz}, descsz {descsz}) "
                f"runs past the end of the notes ({size} bytes)"
            )
        name = bytes(blob[name_off : name_off + namesz]).split(b"\0", 1)[0]
        notes.append(Note(name, ntype, desc_off, bytes(blob[desc_off : desc_off + descsz])))
        off = end
    return notes


def host_page_size() -> int:
    return resource.getpagesize()


@dataclass
class SourceInfo:
    """Facts a writer copies into its output header when the input is already a dump file."""

    timestamp: tuple[int, int] | None = None  # (tv_sec, tv_usec)
    nr_cpus: int | None = None
    phys_base: int | None = None
    dump_level: int = 0
    utsname: bytes | None = None  # 390 bytes
    eraseinfo: bytes = b""
    extra: dict[str, int] = field(default_factory=dict)


class DumpSource(ABC):
    """An opened vmcore or dump file: pages by pfn, notes, and the bitmaps of what is present.

    ``read_pages(pfn, count, out)`` fills ``out`` (a writable buffer of count*page_size bytes) with
    pages pfn..pfn+count-1; bytes that are not backed by the input read as zero.
    """

    format: str = "?"
    path: str
    page_size: int
    max_mapnr: int
    note_blob: bytes
    notes: list[Note]
    big_endian: bool = False
    elf_class: int = 64
    elf_machine: int = 0  # ELF e_machine of the dumped machine; every source sets it
    info: SourceInfo
    #: the PT_LOAD segments of an ELF input (empty for dump files): the kernel-text alias and the
    #: direct-map offset can be read off them
    load_segments: list[Segment] = []
    #: ``phys_view`` can hand out views of the input without a copy (a plain, mapped ELF file)
    can_view: bool = False

    # --- notes -----------------------------------------------------------------------------
    @property
    def vmcoreinfo_note(self) -> Note | None:
        """The VMCOREINFO note (type 0, exact name); the last one wins, as in makedumpfile."""
        found = None
        for n in self.notes:
            if n.name == b"VMCOREINFO" and n.type == 0:
                found = n
        return found

    @property
    def vmcoreinfo_raw(self) -> bytes | None:
        n = self.vmcoreinfo_note
        return n.desc if n is not None else None

    @property
    def nr_cpus(self) -> int:
        if self.info.nr_cpus is not None:
            return self.info.nr_cpus
        return sum(1 for n in self.notes if n.name == b"CORE" and n.type == NT_PRSTATUS)

    # --- pages -----------------------------------------------------------------------------
    @abstractmethod
    def present_bitmap(self, partial_last: bool = False, start: int = 0, end: int | None = None) -> Bitmap:
        """The 1st bitmap for pfns [start, end): pfns that are memory (not holes)."""

    @abstractmethod
    def dumpable_bitmap(self, start: int = 0, end: int | None = None) -> Bitmap:
        """The starting 2nd bitmap for pfns [start, end): present pfns whose contents the input holds."""

    @abstractmethod
    def read_pages(self, pfn: int, count: int, out: memoryview | bytearray) -> None:
        """Fill ``out`` with ``count`` pages starting at ``pfn``."""

    def has_memory(self, start: int, end: int) -> bool:
        """False only if no pfn of [start, end) is present (a cycle in a hole of the layout)."""
        return True

    def data_ranges(self) -> list[tuple[int, int]] | None:
        """Ascending, disjoint pfn ranges [start, end) outside which the input holds no page contents
        (they may hold some pfns without): what the kernel-memory scans are bounded by. None: unknown,
        all of [0, max_mapnr)."""
        return None

    def maps_fast(self) -> bool:
        """Whether the compression stage should map the input rather than pread it: only /proc/vmcore,
        where mapping is what makes reading fast (makedumpfile's reason for mapping by default)."""
        return False

    def window_reader(self, use_mmap: bool = True) -> WindowReader:
        """What the compression stage reads windows of pages with (``_speedups/reader.pyx``): here one
        ``read_pages`` call per run of pages; a plain ELF file is read in C instead."""
        from .._speedups.reader import RunReader

        return RunReader(self.read_pages)

    def read_page(self, pfn: int) -> bytes:
        buf = bytearray(self.page_size)
        self.read_pages(pfn, 1, buf)
        return bytes(buf)

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read physical memory (page-granular underneath)."""
        ps = self.page_size
        first = paddr // ps
        last = (paddr + size + ps - 1) // ps
        buf = bytearray((last - first) * ps)
        self.read_pages(first, last - first, buf)
        off = paddr - first * ps
        return bytes(buf[off : off + size])

    def phys_view(self, paddr: int, size: int) -> memoryview | None:
        """A read-only view of physical memory [paddr, paddr+size) without a copy, or None."""
        return None

    def release_view(self, view: memoryview, paddr: int) -> None:
        """Give back a ``phys_view``."""
        view.release()

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    def __enter__(self) -> DumpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(path: str) -> int:
    """A read-only descriptor of an input file; InputError in one line if it can't be opened, or if it
    is not something that can be read at random offsets (a FIFO would hang open(), a terminal or a
    socket can't be mapped or seeked): a regular file, /proc/vmcore or a block device."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"Can't open the input file {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a vmcore")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
            "a character device"
        raise InputError(f"{path}: is {what}; the input must be a file that can be read at any offset "
                         "(for a stream, save it to a file first; a flattened stream goes to -R)")
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise InputError(f"Can't open the input file {path}: {e.strerror}") from None


def _same_device(st: os.stat_result, path: str) -> bool:
    try:
        return os.stat(path).st_dev == st.st_dev
    except OSError:
        return False


class FileView:
    """Random access to a file: mmap when possible, with bounds checks that raise InputError."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_input(path)
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.on_procfs = _same_device(st, "/proc")  # /proc/vmcore: the old kernel's memory, no page cache
        self.mm: mmap.mmap | None = None
        if self.size > 0:
            try:
                self.mm = mmap.mmap(self.fd, 0, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                self.mm = None  # /proc/vmcore without mmap support, pipes: fall back to pread

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise InputError(
                f"{self.path}: {what} at offset {offset} ({size} bytes) lies past the end of the file "
                f"({self.size} bytes); the file is truncated or corrupt"
            )
        # pread, not the mapping: pages read through a mapping would count in our RSS for as long as
        # the file stays mapped (a whole kdump-compressed input, when refiltering)
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise InputError(f"{self.path}: short read of {what} at offset {offset}")
        return data

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
