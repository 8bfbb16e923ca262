"""run(DumpJob): source → kernel facts → filter → writer, with dump-level retries on ENOSPC."""
from __future__ import annotations

import sys

from .codec import get_codec
from .errors import DumpfilterError, InputError, Interrupted, NoSpaceError, VmcoreinfoError, WrongReleaseError
from .filter import CyclePlan, cycle_pfns_for
from .kernel.arch import x86_64
from .kernel.utsname import placeholder, read_utsname, release_of
from .kernel.vmcoreinfo import VmcoreInfo
from .plan import DumpPlan
from .report import Messages, write_json
from .source import open_source
from .source.base import DumpSource
from .stats import Stats, StageTimer
from .writer.kdump import write_kdump
from .writer.sink import FileSink, FlatSink, NullSink, Sink

PROG = "pydumpfile"


def load_vmcoreinfo(src: DumpSource, path: str | None) -> VmcoreInfo | None:
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


def build_plan(job, src: DumpSource, level: int, msgs: Messages, stats: Stats) -> DumpPlan:  # noqa: ANN001
    vi = load_vmcoreinfo(src, job.vmcoreinfo_file)
    if vi is None:
        msgs.msg(f"{src.path} has no VMCOREINFO note; only dump levels 0 and 1 are possible.")
    if vi is not None and vi.page_size and vi.page_size != src.page_size and src.format == "elf":
        raise VmcoreinfoError(f"PAGESIZE={vi.page_size} in VMCOREINFO differs from the dump's {src.page_size}")
    if src.format == "kdump" and src.info.dump_level & ~level:
        new = level | src.info.dump_level
        msgs.msg(f"dump_level is changed to {new}, because {src.path} was created by dump_level({src.info.dump_level}).")
        level = new
    ps = src.page_size
    if src.format == "kdump":
        uts = src.info.utsname or placeholder(src.elf_machine)
        ts = src.info.timestamp or (0, 0)
        pbase = src.info.phys_base or 0
    else:
        uts = read_utsname(src, vi) if vi is not None else None
        if uts is None:
            if vi is not None:
                msgs.msg("Can't read init_uts_ns from the vmcore; the dump header carries no kernel release.")
            uts = placeholder(src.elf_machine)
        elif vi is not None and vi.osrelease and release_of(uts) != vi.osrelease:
            msgs.debug(f"utsname.release {release_of(uts)!r} differs from OSRELEASE {vi.osrelease!r}")
        ts = ((vi.crashtime or 0) if vi is not None else 0, 0)
        pbase = x86_64.phys_base(src, vi) if src.elf_machine == x86_64.EM_X86_64 else 0
    note = src.vmcoreinfo_note
    cycle_pfns = _cycle_pfns(job, src.max_mapnr)
    # makedumpfile keeps both bitmaps whole ("non-cyclic") when they fit its buffer, and then marks a
    # segment's partial last page in the 1st bitmap (formats-cli.md §1.5, §5.3); cyclic runs do not
    noncyclic = src.max_mapnr <= cycle_pfns and not job.cyclic_buffer
    cycles = CyclePlan(src, vi, level, cycle_pfns, partial_last=noncyclic)
    stats.max_mapnr = src.max_mapnr
    stats.page_size = ps
    num_dumpable = 0
    present = 0
    with StageTimer(stats, "filter"):
        for start, end in cycles.cycles:  # the planning pass: counts only, one cycle at a time
            present += cycles.bitmap1(start, end).count()
            num_dumpable += cycles.bitmap2(start, end, stats).count()
    stats.hole = src.max_mapnr - present
    loads = getattr(src, "loads", None)
    if loads is not None:
        # makedumpfile counts "Original pages" per PT_LOAD, so the kernel-text alias counts twice
        # and "Memory Hole" can wrap around; the report mirrors that (formats-cli.md §5.6)
        end_of = (lambda e: -(-e // ps)) if noncyclic else (lambda e: e // ps)
        stats.hole = src.max_mapnr - sum(end_of(seg.paddr + seg.memsz) - seg.paddr // ps for seg in loads)
    return DumpPlan(
        src=src,
        page_size=ps,
        max_mapnr=src.max_mapnr,
        cycles=cycles,
        num_dumpable=num_dumpable,
        dump_level=level,
        codec=get_codec(job.compress),
        utsname=uts,
        timestamp=ts,
        nr_cpus=src.nr_cpus,
        phys_base=pbase,
        note_blob=src.note_blob,
        vmcoreinfo_desc=(note.desc_offset, len(note.desc)) if note is not None else None,
        eraseinfo=src.info.eraseinfo,
        batch_pages=job.batch_pages,
        num_threads=job.num_threads,
        use_mmap=not job.non_mmap,
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


def _cycle_pfns(job, max_mapnr: int) -> int:  # noqa: ANN001
    """Pfns per cycle: --cyclic-buffer KiB per bitmap, else min(4 MiB, 60% of MemFree / 8) per bitmap
    (makedumpfile's rule, with room for the few bitmap-sized buffers a cycle needs)."""
    if job.cyclic_buffer:
        return cycle_pfns_for(max_mapnr, job.cyclic_buffer * 1024)
    budget = 4 << 20
    free = _mem_free()
    if free:
        budget = min(budget, max(1 << 16, int(free * 0.6) // 8))
    return cycle_pfns_for(max_mapnr, budget)


def _open_sink(job) -> Sink:  # noqa: ANN001
    if job.dry_run:
        return NullSink()
    if job.flat:
        return FlatSink(sys.stdout.buffer, limit=job.limit)
    return FileSink(job.dumpfile, force=job.force, limit=job.limit)


def run_rearrange(job, msgs: Messages) -> int:  # noqa: ANN001
    from .writer.flat import rearrange_to_file

    sink = FileSink(job.dumpfile, force=job.force, limit=job.limit)
    try:
        rearrange_to_file(sys.stdin.buffer, sink)
    except (DumpfilterError, KeyboardInterrupt) as e:
        sink.abort()
        if isinstance(e, KeyboardInterrupt):
            e = Interrupted("interrupted")
        raise type(e)(f"{e}; {job.dumpfile} is incomplete") from None
    sink.finish()
    msgs.msg(f"\nThe dumpfile is saved to {job.dumpfile}.\n\n{PROG} Completed.")
    return 0


def run_mem_usage(job, msgs: Messages) -> int:  # noqa: ANN001
    """makedumpfile's --mem-usage table, computed from the dump (formats-cli.md §5.7)."""
    from .filter.zero import clear_zero_pages

    src = open_source(job.vmcore)
    try:
        stats = Stats()
        plan = build_plan(job, src, 31, msgs, stats)
        _, bitmap2 = plan.cycles.full(Stats())
        bs = src.page_size
        zero = clear_zero_pages(src, bitmap2.copy())
        kern = bitmap2.count() - zero
        rows = [
            ("ZERO", zero, "yes", "Pages filled with zero"),
            ("NON_PRI_CACHE", stats.cache, "yes", "Cache pages without private flag"),
            ("PRI_CACHE", stats.cache_private, "yes", "Cache pages with private flag"),
            ("USER", stats.user, "yes", "User process pages"),
            ("FREE", stats.free, "yes", "Free pages"),
            ("KERN_DATA", kern, "no", "Dumpable kernel data"),
        ]
        out = ["", "TYPE\t\tPAGES\t\t\tEXCLUDABLE\tDESCRIPTION", "-" * 70]
        for name, pages, ex, desc in rows:
            tabs = "\t" if len(name) >= 8 else "\t\t"
            out.append(f"{name}{tabs}{pages:<16d}\t{ex}\t\t{desc}")
        total = stats.original
        out += ["", f"page size:\t\t{bs:<16d}", f"Total pages on system:\t{total:<16d}",
                f"Total size on system:\t{total * bs:<16d} Byte", ""]
        sys.stdout.write("\n".join(out) + "\n")
        return 0
    finally:
        src.close()


def run_dump_dmesg(job, msgs: Messages) -> int:  # noqa: ANN001
    """makedumpfile --dump-dmesg VMCORE LOGFILE (filtering.md §8, formats-cli.md §5.7)."""
    import os

    from .kernel.dmesg import DmesgError, dump_dmesg
    from .writer.sink import open_output

    src = open_source(job.vmcore)
    try:
        vi = load_vmcoreinfo(src, job.vmcoreinfo_file)
        if vi is None:
            raise DmesgError(f"{job.vmcore} has no VMCOREINFO note; the kernel log cannot be located")
        res = dump_dmesg(src, vi, partial=getattr(job, "partial_dmesg", False))
    finally:
        src.close()
    fd = open_output(job.dumpfile, job.force)
    try:
        view = memoryview(res.text)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise DumpfilterError(f"Can't write the log file({job.dumpfile}). {e.strerror}") from None
    finally:
        os.close(fd)
    if res.error is not None:
        raise DmesgError(f"{res.error}; {job.dumpfile} holds the {res.records} records before it")
    msgs.msg(f"\nThe dmesg log is saved to {job.dumpfile}.\n\n{PROG} Completed.")
    return 0


def run(job, msgs: Messages) -> int:  # noqa: ANN001
    if job.rearrange:
        return run_rearrange(job, msgs)
    if getattr(job, "dump_dmesg", False):
        return run_dump_dmesg(job, msgs)
    if job.mem_usage:
        return run_mem_usage(job, msgs)
    src = open_source(job.vmcore)
    try:
        if job.elf and src.format != "elf":
            raise DumpfilterError(f"'-E' option is disabled, because {job.vmcore} is kdump compressed format.")
        for i, level in enumerate(job.levels):
            stats = Stats()
            plan = build_plan(job, src, level, msgs, stats)
            sink = _open_sink(job)
            try:
                with StageTimer(stats, "write"):
                    if job.elf:
                        from .writer.elf import write_elf

                        write_elf(plan, sink, msgs, stats)
                    else:
                        write_kdump(plan, sink, msgs, stats)
            except NoSpaceError as e:
                stats.write_bytes = sink.bytes_written
                if i + 1 < len(job.levels) and sink.seekable and not job.dry_run:
                    msgs.error(f"\n{e}")
                    sink.discard()
                    msgs.msg(f"Retry to create a dumpfile by dump_level({job.levels[i + 1]}).")
                    continue
                sink.abort()
                msgs.error(f"\n{e}")
                if sink.seekable and not job.dry_run:
                    msgs.error("This is an incomplete dumpfile, but might analyzable.")
                raise NoSpaceError(f"{e} {sink.name} is incomplete.") from None
            except (DumpfilterError, KeyboardInterrupt) as e:
                sink.abort()
                if isinstance(e, KeyboardInterrupt):
                    e = Interrupted("interrupted")
                if sink.seekable and not job.dry_run:
                    raise type(e)(f"{e}; {sink.name} is marked incomplete") from None
                raise
            except BaseException:
                sink.abort()
                raise
            sink.finish()
            stats.write_bytes = sink.bytes_written
            msgs.report(stats, elf=job.elf)
            if job.report_json:
                secs = stats.seconds.get("write", 0.0) + stats.seconds.get("filter", 0.0)
                pages_in = plan.num_dumpable
                write_json(job.report_json, stats, {
                    "dump_level": plan.dump_level,
                    "compression": job.compress or "none",
                    "num_threads": job.num_threads,
                    "pages_read": pages_in,
                    "input_mib_per_second": round(pages_in * plan.page_size / 2**20 / secs, 1) if secs else None,
                    "output_bytes": stats.write_bytes,
                })
            if not job.dry_run:
                msgs.msg(f"\nThe dumpfile is saved to {sink.name}.\n\n{PROG} Completed.")
            return 0
        return 1
    finally:
        src.close()
