"""``pydumpfile``: makedumpfile's command line (formats-cli.md §5) → one DumpJob → run().

Errors become one line on stderr and makedumpfile's exit codes: 0 done, 1 failed (including an
incomplete dump), 2 a -i VMCOREINFO file from another kernel release. As makedumpfile, a usage error is
followed by "Try `pydumpfile --help' for more information.", and every failure ends with an empty
line and "pydumpfile Failed." (what admins grep for).
"""
from __future__ import annotations

import gc
import os
import re
import signal
import sys

from . import __version__
from .errors import DumpfilterError, Interrupted, UsageError
from .job import DumpJob
from .options import ArgParser, decimal, limit_size
from .report import DEFAULT_LEVEL, ML_DEBUG, ML_REPORT, Messages

PROG = "pydumpfile"
TRY_HELP = f"Try `{PROG} --help' for more information."  # after a usage error, as makedumpfile

USAGE = f"""usage: {PROG} [-c|-l|-p|-z] [-E] [-d DL[,DL...]] [-L SIZE] [-f] [options] VMCORE DUMPFILE
       {PROG} -F [-c|-l|-p|-z] [-E] [-d DL] [options] VMCORE > STREAM
       {PROG} -R [-f] DUMPFILE < STREAM
       {PROG} bench VMCORE [--max-size SIZE] [--max-time SEC]   (see '{PROG} bench -h')
       {PROG} --dump-dmesg [--partial-dmesg] [-f] VMCORE LOGFILE
       {PROG} --split [-c|-l|-p|-z] [-d DL] [--splitblock-size KB] [options] VMCORE DUMPFILE1 DUMPFILE2 ...
       {PROG} --reassemble [-f] DUMPFILE1 DUMPFILE2 ... DUMPFILE
       {PROG} -g VMCOREINFO -x VMLINUX
       {PROG} verify DUMPFILE [--vmcore VMCORE] [--json]   (see '{PROG} verify -h')

Create a small dumpfile from a vmcore (/proc/vmcore, an ELF or kdump-compressed file), like makedumpfile.

options:
  -c                 compress pages with zlib (zlib format, by libdeflate level 2)
  -l                 compress pages with lzo (LZO1X-1)
  -p                 compress pages with snappy
  -z                 compress pages with zstd (level 1)
                     (the last of -c/-l/-p/-z wins; a page is stored compressed only if smaller)
  -d DL[,DL...]      dump level 0-31, the sum of: 1 zero pages, 2 non-private cache, 4 all cache,
                     8 user data, 16 free pages; further levels are retried in turn when the disk
                     fills up or the -L limit is reached
  -E                 write ELF instead of kdump-compressed (excluded pages are absent from the file)
  -F                 write a flattened stream to standard output (rearrange it later with -R)
  -R                 rearrange a flattened stream from standard input into DUMPFILE
  -f                 overwrite an existing DUMPFILE
  -L SIZE            stop at SIZE bytes (suffix K/M/G/T/P/E); the file is then marked incomplete
  -i VMCOREINFO      use this VMCOREINFO text file instead of the vmcore's note
  -x VMLINUX         take kernel symbols and types from this debuginfo vmlinux (DWARF) instead of the
                     dump's own kallsyms and BTF
  -g VMCOREINFO      with -x: write the VMCOREINFO file makedumpfile -g writes for that vmlinux
  --config FILE      erase kernel data as makedumpfile.conf FILE says (erase/size/nullify/for loops);
                     erased bytes become 'X' and are listed in the dump's eraseinfo. Works without -x
                     on kernels with BTF (Linux 6.0+ with CONFIG_DEBUG_INFO_BTF)
  --extension FILE.py
                     run a Python filter plugin (API: dumpfilter.plugins; repeatable, in order): it may
                     exclude pages and erase byte ranges ("Extension filter pages" in the report)
  --keep-debuggable  put back pages the dump level excluded that crash and drgn need to open the dump
                     (page tables, idt_table, init_task, per-cpu areas, each CPU's task and stack, the
                     printk ring); counted as "Kept for debugging" in the report. On by default
                     when pykdumpctl capture runs pydumpfile (PYDUMPFILE_KEEP_DEBUGGABLE=1);
                     --no-keep-debuggable turns it off
  --no-check-debuggable
                     don't check (and list) such missing pages after filtering (checked by default
                     when the dump level excludes kernel-classified pages)
  --vtop VADDR       print the physical address of kernel virtual address VADDR (0x... for hex) before
                     the dump, as makedumpfile; with VMCORE alone, print it and exit
  --message-level N  bit mask: 1 progress, 2 messages, 4 errors, 8 debug, 16 report (default 7)
  -D                 add debug messages (message level bit 8)
  --show-stats       print the statistics report (message level bit 16)
  --report-json FILE write the statistics as JSON to FILE
  --dry-run          do everything except writing the output
  --mem-usage        print how many pages of each kind VMCORE holds and which are excludable
  --dump-dmesg       write the crashed kernel's log (dmesg) to LOGFILE (positionals VMCORE LOGFILE)
  --partial-dmesg    with --dump-dmesg: only the log since the last `dmesg --clear`
  --num-threads N    work on N threads in every stage: struct-page scan, reading, zero test,
                     compression, refiltering, -E (output is identical for any N)
  --cyclic-buffer KB build and write the bitmaps one cycle of KB*8192 pfns at a time
  --non-mmap         read /proc/vmcore with pread instead of mapping it (a vmcore file
                     on a disk is always read with pread)
  --split            write the dump as N kdump-compressed files over pfn ranges, in parallel, each
                     with a balanced share of the pages (crash opens the set; --reassemble joins it)
  --splitblock-size KB
                     with --split: the granule of the ranges (default 1048576 KiB = 1 GiB)
  --reassemble       join the files of a --split set (ours or makedumpfile's) into DUMPFILE
  -b ORDER, --work-dir DIR
                     accepted for makedumpfile compatibility
  -v                 print the version
  -h, --help         print this help
"""


def _levels(text: str) -> list[int]:
    items = text.split(",")
    if not text or len(items) > 32:
        raise UsageError("Dump_level is invalid.")
    out = []
    for it in items:
        if not re.fullmatch(r"\s*[0-9]+", it):
            raise UsageError(f"Dump_level({it}) is invalid.")
        v = int(it)
        if v > 31:
            raise UsageError(f"Dump_level({v}) is invalid.")
        out.append(v)
    return out


def parse_args(argv: list[str]) -> DumpJob | str:
    """A DumpJob, or the text to print for -h / -v."""
    p = ArgParser(prog=PROG, add_help=False, allow_abbrev=True)
    p.add_argument("-c", dest="compress", action="store_const", const="zlib")
    p.add_argument("-l", dest="compress", action="store_const", const="lzo")
    p.add_argument("-p", dest="compress", action="store_const", const="snappy")
    p.add_argument("-z", dest="compress", action="store_const", const="zstd")
    p.add_argument("-d", dest="levels")
    p.add_argument("-E", dest="elf", action="store_true")
    p.add_argument("-F", dest="flat", action="store_true")
    p.add_argument("-R", dest="rearrange", action="store_true")
    p.add_argument("-f", dest="force", action="store_true")
    p.add_argument("-L", dest="limit")
    p.add_argument("-i", dest="vmcoreinfo")
    p.add_argument("-x", dest="vmlinux")
    p.add_argument("-g", dest="gen_vmcoreinfo")
    p.add_argument("-b", dest="block_order")
    p.add_argument("-D", dest="debug", action="store_true")
    p.add_argument("-e", dest="exclude_vmemmap", action="store_true")
    p.add_argument("-X", dest="xen", action="store_true")
    p.add_argument("-v", dest="version", action="store_true")
    p.add_argument("-h", "--help", dest="help", action="store_true")
    p.add_argument("--message-level", dest="message_level")
    p.add_argument("--show-stats", dest="show_stats", action="store_true")
    p.add_argument("--dry-run", dest="dry_run", action="store_true")
    p.add_argument("--num-threads", dest="num_threads")
    p.add_argument("--cyclic-buffer", dest="cyclic_buffer")
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--non-mmap", dest="non_mmap", action="store_true")
    p.add_argument("--report-json", dest="report_json")
    p.add_argument("--check-params", dest="check_params", action="store_true")
    p.add_argument("--mem-usage", dest="mem_usage", action="store_true")
    p.add_argument("--dump-dmesg", dest="dump_dmesg", action="store_true")
    p.add_argument("--partial-dmesg", dest="partial_dmesg", action="store_true")
    p.add_argument("--split", dest="split", action="store_true")
    p.add_argument("--splitblock-size", dest="splitblock_size")
    p.add_argument("--reassemble", dest="reassemble", action="store_true")
    p.add_argument("--config", dest="config")
    p.add_argument("--extension", dest="extensions", action="append", default=[])
    p.add_argument("--keep-debuggable", dest="keep_debuggable", action="store_true", default=None)
    p.add_argument("--no-keep-debuggable", dest="keep_debuggable", action="store_false")
    p.add_argument("--no-check-debuggable", dest="no_check_debuggable", action="store_true")
    p.add_argument("--eppic", dest="eppic")
    p.add_argument("--vtop", dest="vtop")
    p.add_argument("positional", nargs="*")
    a = p.parse_intermixed_args(argv)

    if a.help:
        return USAGE
    if a.version:
        return f"{PROG}: version {__version__}\nlzo\tenabled\nsnappy\tenabled\nzstd\tenabled\n"
    for opt, val in (("-e", a.exclude_vmemmap), ("-X", a.xen), ("--eppic", a.eppic)):
        if val:
            raise UsageError(f"{opt} is not supported by {PROG} yet")
    if a.vmlinux and a.vmcoreinfo:
        raise UsageError("Commandline parameter is invalid: -i cannot be combined with -x")
    if a.gen_vmcoreinfo:
        # makedumpfile: -g needs -x, takes no positionals and refuses dump options
        if (not a.vmlinux or a.positional or a.compress or (a.levels and a.levels != "0") or a.elf or a.flat
                or a.rearrange or a.dry_run or a.config or a.extensions):
            raise UsageError("Commandline parameter is invalid: -g takes only -x VMLINUX")
        job = DumpJob(vmlinux=a.vmlinux, gen_vmcoreinfo=a.gen_vmcoreinfo, force=a.force)
        return job

    job = DumpJob()
    job.compress = a.compress
    job.levels = _levels(a.levels) if a.levels is not None else [0]
    job.elf, job.flat, job.rearrange, job.force = a.elf, a.flat, a.rearrange, a.force
    job.limit = limit_size(a.limit) if a.limit is not None else None
    job.vmcoreinfo_file = a.vmcoreinfo
    job.vmlinux = a.vmlinux
    job.config = a.config
    job.extensions = list(a.extensions)
    # default on when pykdumpctl capture runs the collector (it sets PYDUMPFILE_KEEP_DEBUGGABLE=1)
    job.keep_debuggable = (a.keep_debuggable if a.keep_debuggable is not None
                           else os.environ.get("PYDUMPFILE_KEEP_DEBUGGABLE") == "1")
    job.check_debuggable = not a.no_check_debuggable
    if a.vtop is not None:
        try:  # strtoul(optarg, NULL, 0), as makedumpfile: 0x... hex, 0... octal, else decimal
            job.vtop = int(a.vtop, 0) if not re.fullmatch(r"0[0-7]+", a.vtop) else int(a.vtop, 8)
        except ValueError:
            raise UsageError(f"Commandline parameter is invalid: --vtop {a.vtop} is not an address "
                             "(0x... for hex)") from None
    if a.message_level is not None:
        ml = decimal(a.message_level, "Message_level")
        if not 0 <= ml <= 31:
            raise UsageError(f"Message_level({ml}) is invalid.")
        job.message_level = ml
        job.explicit_level = True
    if a.debug:
        job.message_level |= ML_DEBUG
    if a.show_stats:
        job.message_level |= ML_REPORT
    job.dry_run = a.dry_run
    job.non_mmap = a.non_mmap
    job.report_json = a.report_json
    if a.num_threads is not None:
        job.num_threads = max(0, decimal(a.num_threads, "num_threads"))
    if a.block_order is not None:
        decimal(a.block_order, "block_order")
    if a.cyclic_buffer is not None:
        job.cyclic_buffer = decimal(a.cyclic_buffer, "cyclic_buffer")
    pos = a.positional
    job.mem_usage = a.mem_usage

    if a.partial_dmesg and not a.dump_dmesg:
        raise UsageError("Commandline parameter is invalid: --partial-dmesg needs --dump-dmesg")
    if a.dump_dmesg:
        # makedumpfile: --dump-dmesg comes after -R in the mode priority and refuses --dry-run
        if job.rearrange or job.flat or job.mem_usage or job.dry_run or len(pos) != 2:
            raise UsageError("Commandline parameter is invalid: --dump-dmesg takes VMCORE LOGFILE "
                             "(and no -F, -R, --mem-usage or --dry-run)")
        job.dump_dmesg, job.partial_dmesg = True, a.partial_dmesg
        job.vmcore, job.dumpfile = pos
        if a.check_params:
            return "check-params: ok\n"
        return job

    if a.reassemble:
        # makedumpfile: --reassemble comes after -R in the mode priority and refuses --dry-run
        if job.rearrange or job.flat or job.elf or job.dry_run or a.split or len(pos) < 2:
            raise UsageError("Commandline parameter is invalid: --reassemble takes DUMPFILE1 DUMPFILE2 ... DUMPFILE "
                             "(and no -F, -R, -E, --split or --dry-run)")
        job.reassemble, job.parts, job.dumpfile = True, pos[:-1], pos[-1]
        return "check-params: ok\n" if a.check_params else job
    if job.vtop is not None and len(pos) == 1 and not job.flat:
        job.vmcore = pos[0]  # only the translation (makedumpfile prints it before making a dump)
        return job
    if job.mem_usage:
        if len(pos) != 1 or job.rearrange or job.flat or job.elf:
            raise UsageError("Commandline parameter is invalid: --mem-usage takes exactly one VMCORE")
        job.vmcore = pos[0]
        return job
    if job.rearrange:
        if job.compress or any(job.levels) or job.elf or job.flat or job.vmcoreinfo_file:
            raise UsageError("Commandline parameter is invalid: -R takes only -f, -L and message options")
        if len(pos) != 1:
            raise UsageError("Commandline parameter is invalid: -R needs exactly one DUMPFILE")
        job.dumpfile = pos[0]
        return job
    if a.splitblock_size is not None:
        kib = decimal(a.splitblock_size, "splitblock_size")
        if kib <= 0:
            raise UsageError(f"splitblock_size({kib}) is invalid.")
        job.splitblock_size = kib * 1024
    if a.split:
        if job.elf or job.flat or job.rearrange or len(pos) < 3:
            raise UsageError("Commandline parameter is invalid: --split takes VMCORE DUMPFILE1 DUMPFILE2 ... "
                             "(kdump-compressed output only: no -E, -F or -R)")
        job.split, job.vmcore, job.parts = True, pos[0], pos[1:]
        return "check-params: ok\n" if a.check_params else job
    if job.elf and job.compress:
        raise UsageError("Commandline parameter is invalid: -E cannot be combined with -c/-l/-p/-z")
    if job.flat:
        if len(pos) != 1:
            raise UsageError("Commandline parameter is invalid: -F takes exactly one VMCORE (the stream goes to stdout)")
        job.vmcore = pos[0]
        if len(job.levels) > 1:
            job.levels = job.levels[:1]
    elif job.dry_run:
        if len(pos) not in (1, 2):
            raise UsageError("Commandline parameter is invalid: expected VMCORE [DUMPFILE]")
        job.vmcore = pos[0]
        job.dumpfile = pos[1] if len(pos) == 2 else None
    else:
        if len(pos) != 2:
            raise UsageError("Commandline parameter is invalid: expected VMCORE DUMPFILE")
        job.vmcore, job.dumpfile = pos
    if a.check_params:
        return "check-params: ok\n"
    return job


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(f"interrupted by signal {signal.Signals(signum).name}")


def _failed(msgs: Messages, rc: int) -> int:
    """makedumpfile's last line on any failure (after the one line that says what went wrong)."""
    msgs.error(f"\n{PROG} Failed.")
    return rc


def main(argv: list[str] | None = None) -> int:
    # a short-lived process whose objects are freed by reference counting: the cyclic collector
    # would only walk the heap now and then for nothing
    gc.disable()
    argv = sys.argv[1:] if argv is None else argv
    msgs = Messages(DEFAULT_LEVEL)
    try:
        if argv[:1] == ["bench"]:
            from .bench import main as bench_main

            return bench_main(argv[1:])
        if argv[:1] == ["verify"]:
            from .verify import main as verify_main

            return verify_main(argv[1:])
        parsed = parse_args(argv)
        if isinstance(parsed, str):
            sys.stdout.write(parsed)
            return 0
        job = parsed
        msgs = Messages(job.message_level, flat=job.flat, progress=True if job.explicit_level else None)
        signal.signal(signal.SIGTERM, _on_signal)
        from .pipeline import run

        rc = run(job, msgs)
        return _failed(msgs, rc) if rc else rc
    except UsageError as e:
        msgs.error(f"{PROG}: {e}")
        msgs.error(TRY_HELP)
        return _failed(msgs, e.exit_code)
    except DumpfilterError as e:
        msgs.error(f"{PROG}: {e}")
        return _failed(msgs, e.exit_code)
    except KeyboardInterrupt:
        msgs.error(f"{PROG}: interrupted; the output is marked incomplete")
        return _failed(msgs, 1)
    except MemoryError:
        msgs.error(f"{PROG}: out of memory")
        return _failed(msgs, 1)
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's flush at exit quiet
        except OSError:
            pass
        msgs.error(f"{PROG}: the standard output was closed")
        return _failed(msgs, 1)
    except Exception as e:  # noqa: BLE001 - a bug must still end in one line and exit 1
        if os.environ.get("PYDUMPFILE_TRACEBACK"):
            raise
        msgs.error(f"{PROG}: internal error: {type(e).__name__}: {e} (set PYDUMPFILE_TRACEBACK=1 for details)")
        return _failed(msgs, 1)
    finally:
        gc.enable()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
