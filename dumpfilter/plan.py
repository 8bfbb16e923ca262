"""DumpPlan: everything a writer needs, decided before the first output byte.

``build_plan`` is the planning pass: VMCOREINFO, the dump header's facts (utsname, crash time,
phys_base), the filter over every cycle (``filter_dump``: each cycle classified once) and how the pages
will be compressed. The writers only consume it.
"""
from __future__ import annotations

from .codec import Codec, get_codec
from .codec.hooks import PageHook
from .codec.pool import WINDOW_PAGES, Compression
from .errors import InputError, VmcoreinfoError, WrongReleaseError
from .filter import DumpBitmaps, cycle_pfns_for, extend, filter_dump
from .job import DumpJob
from .kernel.arch import for_machine
from .kernel.utsname import placeholder, read_utsname, release_of
from .kernel.vmcoreinfo import VmcoreInfo
from .record import dataclass
from .report import Messages
from .source.base import DumpSource
from .stats import StageTimer, Stats


@dataclass
class DumpPlan:
    src: DumpSource
    page_size: int
    max_mapnr: int
    bitmaps: DumpBitmaps  # the 1st (memory present) and 2nd (pages to dump) bitmaps, per cycle
    dump_level: int
    codec: Codec | None
    compression: Compression
    utsname: bytes
    timestamp: tuple[int, int]
    nr_cpus: int
    phys_base: int
    note_blob: bytes
    vmcoreinfo_desc: tuple[int, int] | None  # (offset in note_blob, size)
    eraseinfo: bytes = b""
    use_mmap: bool = True  # /proc/vmcore without --non-mmap (DumpSource.maps_fast)


def load_vmcoreinfo(src: DumpSource, path: str | None) -> VmcoreInfo | None:
    """The dump's VMCOREINFO, or the ``-i`` file's (refused if it is from another kernel release)."""
    raw = src.vmcoreinfo_raw
    vi = VmcoreInfo.parse(raw) if raw is not None else None
    if path is None:
        return vi
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"Can't open the VMCOREINFO file {path}: {e.strerror}") from None
    given = VmcoreInfo.parse(text)
    if given.osrelease is None:
        raise VmcoreinfoError(f"{path}: no OSRELEASE= line; not a VMCOREINFO file")
    if vi is not None and vi.osrelease and vi.osrelease != given.osrelease:
        raise WrongReleaseError(
            f"The kernel version of {path} ({given.osrelease}) does not match the vmcore's ({vi.osrelease})"
        )
    return given


def _header_facts(src: DumpSource, vi: VmcoreInfo | None, msgs: Messages) -> tuple[bytes, tuple[int, int], int]:
    """utsname, (tv_sec, tv_usec) and phys_base for the kdump header."""
    if src.format == "kdump":
        return (src.info.utsname or placeholder(src.elf_machine), src.info.timestamp or (0, 0),
                src.info.phys_base or 0)
    arch = for_machine(src.elf_machine)
    uts = read_utsname(src, vi, arch) if vi is not None else None
    if uts is None:
        if vi is not None:
            msgs.msg("Can't read init_uts_ns from the vmcore; the dump header carries no kernel release.")
        uts = placeholder(src.elf_machine)
    elif vi is not None and vi.osrelease and release_of(uts) != vi.osrelease:
        msgs.debug(f"utsname.release {release_of(uts)!r} differs from OSRELEASE {vi.osrelease!r}")
    return uts, ((vi.crashtime or 0) if vi is not None else 0, 0), arch.phys_base(src, vi)


def _debug_vmcoreinfo(vi: VmcoreInfo, src: DumpSource, msgs: Messages) -> None:
    msgs.debug(f"OSRELEASE         : {vi.osrelease}")
    msgs.debug(f"PAGESIZE          : {vi.page_size}  (the dump's: {src.page_size})")
    msgs.debug(f"CRASHTIME         : {vi.crashtime}")
    keys = for_machine(src.elf_machine).vmcoreinfo_keys
    vals = [f"{k}={vi.get(k)}" for k in keys if vi.get(k) is not None]
    if vals:
        msgs.debug("arch keys         : " + " ".join(vals))


def build_plan(job: DumpJob, src: DumpSource, level: int, msgs: Messages, stats: Stats) -> DumpPlan:
    vi = load_vmcoreinfo(src, job.vmcoreinfo_file)
    if vi is None:
        msgs.msg(f"{src.path} has no VMCOREINFO note; only dump levels 0 and 1 are possible.")
    else:
        _debug_vmcoreinfo(vi, src, msgs)
    if vi is not None and vi.page_size and vi.page_size != src.page_size and src.format == "elf":
        raise VmcoreinfoError(f"PAGESIZE={vi.page_size} in VMCOREINFO differs from the dump's {src.page_size}")
    if src.format == "kdump" and src.info.dump_level & ~level:
        new = level | src.info.dump_level
        msgs.msg(f"dump_level is changed to {new}, because {src.path} was created by dump_level({src.info.dump_level}).")
        level = new
    for_machine(src.elf_machine).check_layout(src, vi)
    ps = src.page_size
    uts, ts, pbase = _header_facts(src, vi, msgs)
    note = src.vmcoreinfo_note
    cycle_pfns = _cycle_pfns(job, src.max_mapnr)
    # makedumpfile keeps both bitmaps whole ("non-cyclic") when they fit its buffer, and then marks a
    # segment's partial last page in the 1st bitmap (formats-cli.md §1.5, §5.3); cyclic runs do not
    noncyclic = src.max_mapnr <= cycle_pfns and not job.cyclic_buffer
    stats.max_mapnr = src.max_mapnr
    stats.page_size = ps
    with StageTimer(stats, "filter"):
        bitmaps = filter_dump(src, vi, level, cycle_pfns, noncyclic, msgs, threads=job.num_threads)
    for k in ("cache", "cache_private", "user", "free", "hwpoison", "offline"):
        setattr(stats, k, getattr(bitmaps.counts, k))
    stats.hole = src.max_mapnr - bitmaps.present
    if src.format == "elf":
        # makedumpfile counts "Original pages" per PT_LOAD, so the kernel-text alias counts twice
        # and "Memory Hole" can wrap around; the report mirrors that (formats-cli.md §5.6)
        end_of = (lambda e: -(-e // ps)) if noncyclic else (lambda e: e // ps)
        stats.hole = src.max_mapnr - sum(end_of(seg.paddr + seg.memsz) - seg.paddr // ps for seg in src.load_segments)
    hooks: tuple[PageHook, ...] = ()
    eraseinfo = src.info.eraseinfo
    if extend.wanted(job, level):
        ext = extend.apply_extensions(job, src, vi, bitmaps, msgs, level)
        hooks, eraseinfo = ext.hooks, ext.eraseinfo
        stats.extension = ext.extension_pages if job.extensions else None
        stats.kept_debuggable = ext.kept_pages
        for label, why in ext.missing:
            msgs.msg(f"The dump lacks a page crash and drgn need: {label}: {why}")
    codec = get_codec(job.compress)
    compression = Compression(ps, codec.flag if codec else 0, bool(level & 1), max(0, job.num_threads), hooks)
    threads = f"{compression.threads} worker threads" if compression.threads else "in the main thread"
    use_mmap = not job.non_mmap and src.maps_fast()
    msgs.debug(f"compression       : {codec.name if codec else 'none'}, {threads}, windows of {WINDOW_PAGES} pages, "
               f"{'mmap' if use_mmap else 'pread'} reads")
    return DumpPlan(
        src=src,
        page_size=ps,
        max_mapnr=src.max_mapnr,
        bitmaps=bitmaps,
        dump_level=level,
        codec=codec,
        compression=compression,
        utsname=uts,
        timestamp=ts,
        nr_cpus=src.nr_cpus,
        phys_base=pbase,
        note_blob=src.note_blob,
        vmcoreinfo_desc=(note.desc_offset, len(note.desc)) if note is not None else None,
        eraseinfo=eraseinfo,
        use_mmap=use_mmap,
    )


def _mem_free() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemFree:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _cycle_pfns(job: DumpJob, max_mapnr: int) -> int:
    """Pfns per cycle: --cyclic-buffer KiB per bitmap, else min(4 MiB, 60% of MemFree / 8) per bitmap
    (makedumpfile's rule, with room for the few bitmap-sized buffers a cycle needs)."""
    if job.cyclic_buffer:
        return cycle_pfns_for(max_mapnr, job.cyclic_buffer * 1024)
    budget = 4 << 20
    free = _mem_free()
    if free:
        budget = min(budget, max(1 << 16, int(free * 0.6) // 8))
    return cycle_pfns_for(max_mapnr, budget)
