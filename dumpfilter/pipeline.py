"""run(DumpJob): source → kernel facts → filter → writer, with dump-level retries on ENOSPC."""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from .errors import DumpfilterError, Interrupted, NoSpaceError, OutputError
from .job import DumpJob
from .kernel.arch import for_machine
from .plan import DumpPlan, build_plan, load_vmcoreinfo
from .report import Messages, write_json
from .source import open_source
from .stats import Stats, StageTimer
from .writer.kdump import write_kdump
from .writer.sink import FileSink, FlatSink, NullSink, Sink, check_distinct

PROG = "pydumpfile"


def _std_fd(fd: int, what: str) -> int:
    try:
        os.fstat(fd)
    except OSError:
        raise OutputError(f"the standard {what} is closed") from None
    return fd


def preflight(job: DumpJob) -> None:
    """Everything about the outputs that can be refused before any work (makedumpfile checks DUMPFILE
    first too): an output that is an input, a closed standard stream, a report that can't be written."""
    inputs: list[str | int] = [p for p in (job.vmcore, job.vmcoreinfo_file) if p]
    if job.rearrange:
        _std_fd(0, "input")
        check_distinct(job.output, [0])
    elif job.flat:
        check_distinct(_std_fd(1, "output"), inputs, "the flattened stream")
    elif job.split and not job.dry_run:
        for k, part in enumerate(job.parts):
            check_distinct(part, [*inputs, *job.parts[:k]], "the dump file")
    elif job.reassemble:
        check_distinct(job.output, list(job.parts))
    elif job.dumpfile is not None and not job.dry_run:
        check_distinct(job.output, inputs, "the log file" if job.dump_dmesg else "the dump file")
    if job.report_json:
        check_distinct(job.report_json, [*inputs, *([job.dumpfile] if job.dumpfile else [])], "the JSON report")
        folder = os.path.dirname(os.path.abspath(job.report_json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise OutputError(f"Can't write the JSON report {job.report_json}: {folder} is not a writable directory")


def _open_sink(job: DumpJob, path: str | None = None) -> Sink:
    if job.dry_run:
        return NullSink()
    if job.flat:
        return FlatSink(1, limit=job.limit)
    return FileSink(path or job.output, force=job.force, limit=job.limit)


def _write_split(job: DumpJob, plan: DumpPlan, sinks: list[Sink], msgs: Messages, stats: Stats) -> None:
    """--split: one KdumpWriter per file over its pfn range, all at once on their own threads (the
    C stages release the GIL, so N files use N cores); the first failure is raised."""
    from concurrent.futures import ThreadPoolExecutor

    from .writer.kdump import KdumpWriter
    from .writer.split import DEFAULT_SPLITBLOCK, split_ranges

    ranges = split_ranges(plan.bitmaps, plan.page_size, len(sinks), job.splitblock_size or DEFAULT_SPLITBLOCK)
    for (r0, r1), sink in zip(ranges, sinks):
        msgs.debug(f"split             : {sink.name}: pfns {r0:#x}-{r1:#x}, "
                   f"{plan.bitmaps.count_dumpable(r0, r1)} pages")
    quiet = Messages(msgs.level & ~1)  # no progress line from N threads at once
    part_stats = [Stats() for _ in sinks]
    writers = [KdumpWriter(plan, sink, quiet, st, pfn_range=r, eraseinfo=k == 0)
               for k, (sink, st, r) in enumerate(zip(sinks, part_stats, ranges))]
    with ThreadPoolExecutor(max_workers=len(writers), thread_name_prefix="pydumpfile-split") as pool:
        futures = [pool.submit(w.write) for w in writers]
        errors = [f.exception() for f in futures]
    for st in part_stats:
        stats.zero += st.zero
        stats.dumped += st.dumped
    for e in errors:
        if e is not None:
            raise e


def _abort_all(e: DumpfilterError, sinks: list[Sink], job: DumpJob) -> DumpfilterError:
    for s in sinks:
        s.abort()
    if not sinks:
        return e
    if len(sinks) == 1:
        return _failed(e, sinks[0], job)
    return type(e)(f"{e}; the files of the set are marked incomplete or removed")


def _failed(e: DumpfilterError, sink: Sink, job: DumpJob) -> DumpfilterError:
    """The one line the failure ends in, after the sink was aborted: what happened to DUMPFILE."""
    if not sink.seekable or job.dry_run:
        return e
    if isinstance(sink, FileSink) and sink.removed:
        tail = f"nothing was written, {sink.name} is not left behind"
    elif isinstance(e, NoSpaceError):
        tail = f"{sink.name} is marked incomplete (it might still be analyzable)"
    else:
        tail = f"{sink.name} is marked incomplete"
    return type(e)(f"{e}; {tail}")


def _into_file(job: DumpJob, msgs: Messages, fill: Callable[[FileSink], object]) -> int:
    """DUMPFILE made by ``fill(sink)``, removed or marked incomplete if that fails."""
    sink = FileSink(job.output, force=job.force, limit=job.limit)
    try:
        fill(sink)
    except (DumpfilterError, KeyboardInterrupt) as e:
        sink.abort()
        raise _failed(Interrupted("interrupted") if isinstance(e, KeyboardInterrupt) else e, sink, job) from None
    sink.finish()
    msgs.msg(f"\nThe dumpfile is saved to {job.output}.\n\n{PROG} Completed.")
    return 0


def run_rearrange(job: DumpJob, msgs: Messages) -> int:
    """-R: the flattened stream on standard input into DUMPFILE (formats-cli.md §2.3)."""
    from .writer.flat import rearrange_to_file

    preflight(job)

    def fill(sink: FileSink) -> None:
        with os.fdopen(0, "rb", closefd=False) as stdin:
            rearrange_to_file(stdin, sink)

    return _into_file(job, msgs, fill)


def run_mem_usage(job: DumpJob, msgs: Messages) -> int:
    """makedumpfile's --mem-usage table, computed from the dump (formats-cli.md §5.7)."""
    from .codec.zero import without_zero_pages

    src = open_source(job.input)
    try:
        stats = Stats()
        plan = build_plan(job, src, 31, msgs, stats)
        bs = src.page_size
        kern = without_zero_pages(plan, stats).dumpable
        zero = stats.zero
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


def run_dump_dmesg(job: DumpJob, msgs: Messages) -> int:
    """makedumpfile --dump-dmesg VMCORE LOGFILE (filtering.md §8, formats-cli.md §5.7).

    The log goes to the file as the records are read (a ring may claim 2 GiB of text), the file
    being created with the first piece; a failure removes it again, so that it exists only with the
    whole log, or with every record before a corruption of an old-style log_buf (as makedumpfile)."""
    from .kernel.dmesg import DmesgError, dump_dmesg
    from .writer.sink import open_output

    fd = -1
    regular = False  # only a regular file is removed again (never /dev/stdout or a device)

    def write(data: bytes) -> None:
        nonlocal fd, regular
        try:
            if fd < 0:
                fd = open_output(job.output, job.force)
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            raise DumpfilterError(f"Can't write the log file({job.dumpfile}). {e.strerror}") from None

    try:
        src = open_source(job.input)
        try:
            vi = load_vmcoreinfo(src, job.vmcoreinfo_file)
            if vi is None:
                raise DmesgError(f"{job.vmcore} has no VMCOREINFO note; the kernel log cannot be located")
            for_machine(src.elf_machine).check_layout(src, vi)
            res = dump_dmesg(src, vi, partial=job.partial_dmesg, write=write)
        finally:
            src.close()
        write(b"")  # an empty log is still a log file
    except BaseException:
        if fd >= 0:
            os.close(fd)
            fd = -1
            if regular:
                try:
                    os.unlink(job.output)
                except OSError:
                    pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    if res.error is not None:
        raise DmesgError(f"{res.error}; {job.dumpfile} holds the {res.records} records before it")
    msgs.msg(f"\nThe dmesg log is saved to {job.dumpfile}.\n\n{PROG} Completed.")
    return 0


def run_reassemble(job: DumpJob, msgs: Messages) -> int:
    """--reassemble DUMPFILE1 ... DUMPFILE (formats-cli.md §4.2)."""
    from .writer.split import reassemble

    return _into_file(job, msgs, lambda sink: reassemble(job.parts, sink))


def run_vtop(job: DumpJob, msgs: Messages) -> int:
    """makedumpfile --vtop VADDR: the translation through the dump's page tables (formats-cli.md §5.7)."""
    assert job.vtop is not None
    src = open_source(job.input)
    try:
        vi = load_vmcoreinfo(src, job.vmcoreinfo_file)
        if vi is None:
            raise DumpfilterError(f"{job.vmcore} has no VMCOREINFO note; kernel addresses cannot be translated")
        arch = for_machine(src.elf_machine)
        arch.check_layout(src, vi)
        pa = arch.mmu(src, vi).vtop(job.vtop)
    finally:
        src.close()
    out = sys.stderr if job.flat else sys.stdout
    out.write(f"\nTranslating virtual address {job.vtop:x} to physical address.\n"
              f"VIRTUAL           PHYSICAL\n{job.vtop:16x}  {pa:x}\n\n")
    out.flush()
    return 0


def run_gen_vmcoreinfo(job: DumpJob, msgs: Messages) -> int:
    """makedumpfile -g VMCOREINFO -x VMLINUX."""
    from .kernel.symbols.gen import write_vmcoreinfo

    assert job.gen_vmcoreinfo is not None and job.vmlinux is not None
    write_vmcoreinfo(job.vmlinux, job.gen_vmcoreinfo, job.force)
    msgs.msg(f"\nThe vmcoreinfo is saved to {job.gen_vmcoreinfo}.\n\n{PROG} Completed.")
    return 0


def run(job: DumpJob, msgs: Messages) -> int:
    if job.gen_vmcoreinfo:
        return run_gen_vmcoreinfo(job, msgs)
    if job.rearrange:
        return run_rearrange(job, msgs)
    if job.vtop is not None:
        run_vtop(job, msgs)
        if job.dumpfile is None and not job.flat:
            return 0
    preflight(job)
    if job.reassemble:
        return run_reassemble(job, msgs)
    if job.dump_dmesg:
        return run_dump_dmesg(job, msgs)
    if job.mem_usage:
        return run_mem_usage(job, msgs)
    src = open_source(job.input)
    try:
        if job.elf and src.format != "elf":
            raise DumpfilterError(f"'-E' option is disabled, because {job.vmcore} is kdump compressed format.")
        for i, level in enumerate(job.levels):
            stats = Stats()
            plan = build_plan(job, src, level, msgs, stats)
            sinks: list[Sink] = []
            try:
                for path in (job.parts if job.split else [None]):
                    sinks.append(_open_sink(job, path))  # one by one: a failure aborts those made
                with StageTimer(stats, "write"):
                    if job.elf:
                        from .writer.elf import write_elf

                        write_elf(plan, sinks[0], msgs, stats)
                    elif job.split:
                        _write_split(job, plan, sinks, msgs, stats)
                    else:
                        write_kdump(plan, sinks[0], msgs, stats)
            except NoSpaceError as e:
                stats.write_bytes = sum(s.bytes_written for s in sinks)
                if i + 1 < len(job.levels) and all(s.seekable for s in sinks) and not job.dry_run:
                    for s in sinks:
                        s.discard()
                    msgs.msg(f"{e} Retry to create a dumpfile by dump_level({job.levels[i + 1]}).")
                    continue
                raise _abort_all(e, sinks, job) from None
            except (DumpfilterError, KeyboardInterrupt) as e:
                raise _abort_all(Interrupted("interrupted") if isinstance(e, KeyboardInterrupt) else e, sinks, job) from None
            except BaseException:
                for s in sinks:
                    s.abort()
                raise
            for s in sinks:
                s.finish()
            stats.write_bytes = sum(s.bytes_written for s in sinks)
            msgs.report(stats, elf=job.elf)
            if job.report_json:
                secs = stats.seconds.get("write", 0.0) + stats.seconds.get("filter", 0.0)
                pages_in = plan.bitmaps.dumpable
                write_json(job.report_json, stats, {
                    "dump_level": plan.dump_level,
                    "compression": job.compress or "none",
                    "num_threads": job.num_threads,
                    "pages_read": pages_in,
                    "input_mib_per_second": round(pages_in * plan.page_size / 2**20 / secs, 1) if secs else None,
                    "output_bytes": stats.write_bytes,
                })
            if not job.dry_run:
                from .writer.split import saved_message

                saved = saved_message([s.name for s in sinks]) if job.split else f"The dumpfile is saved to {sinks[0].name}."
                msgs.msg(f"\n{saved}\n\n{PROG} Completed.")
            return 0
        return 1
    finally:
        src.close()
