"""``pydumpfile bench VMCORE``: measure codecs, dump levels and thread counts on a real vmcore and
recommend the fastest ``core_collector`` line that fits a size or time budget.

Each configuration runs as its own process writing to a scratch file next to the output directory
(default: the system temp directory), so wall time, output size and peak memory are measured the way
kdump would see them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from .options import ArgParser, limit_size
from .errors import UsageError


@dataclass
class Result:
    options: list[str]
    seconds: float
    size: int
    peak_mib: float

    @property
    def line(self) -> str:
        return "core_collector pydumpfile " + " ".join(self.options)


_CHILD = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "dt = time.perf_counter() - t\n"
    "sys.stderr.write(r.stderr.decode(errors='replace'))\n"
    "print(r.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _measure(vmcore: str, options: list[str], scratch: str) -> Result:
    out = os.path.join(scratch, "bench.out")
    if os.path.exists(out):
        os.unlink(out)
    cmd = [sys.executable, "-c", _CHILD, sys.executable, "-m", "dumpfilter", *options, vmcore, out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        rc, dt, rss = r.stdout.split()
    except ValueError:
        raise UsageError(f"bench: could not run pydumpfile: {r.stderr.strip()[-200:]}") from None
    if int(rc) != 0:
        raise UsageError(f"bench: pydumpfile {' '.join(options)} failed: {r.stderr.strip().splitlines()[-1:]}")
    size = os.path.getsize(out)
    os.unlink(out)
    return Result(options, float(dt), size, int(rss) / 1024)


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="pydumpfile bench", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmcore")
    ap.add_argument("--max-size", help="largest acceptable dump (K/M/G suffix)")
    ap.add_argument("--max-time", type=float, help="longest acceptable dump time in seconds")
    ap.add_argument("--levels", default="31,1", help="dump levels to try (default 31,1)")
    ap.add_argument("--codecs", default="lzo,snappy,zstd,zlib", help="codecs to try")
    ap.add_argument("--threads", default=None, help="thread counts to try (default 1 and the CPU count)")
    ap.add_argument("--scratch", default=None, help="directory for the trial outputs")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.vmcore):
        raise UsageError(f"bench: {a.vmcore}: no such file")
    max_size = limit_size(a.max_size) if a.max_size else None
    ncpu = os.cpu_count() or 1
    threads = sorted({int(t) for t in a.threads.split(",")}) if a.threads else sorted({1, ncpu})
    flag = {"lzo": "-l", "snappy": "-p", "zstd": "-z", "zlib": "-c", "none": None}
    scratch = a.scratch or tempfile.mkdtemp(prefix="pydumpfile-bench-")
    results: list[Result] = []
    print(f"{'options':36} {'seconds':>8} {'MiB/s in':>9} {'size MiB':>9} {'peak MiB':>9}")
    vm_size = os.path.getsize(a.vmcore)
    try:
        for level in a.levels.split(","):
            for codec in a.codecs.split(","):
                if codec not in flag:
                    raise UsageError(f"bench: unknown codec {codec!r}")
                for t in threads:
                    opts = ([flag[codec]] if flag[codec] else []) + ["-d", level]
                    if t > 1:
                        opts += ["--num-threads", str(t)]
                    res = _measure(a.vmcore, opts, scratch)
                    results.append(res)
                    print(f"{' '.join(opts):36} {res.seconds:8.2f} {vm_size / 2**20 / res.seconds:9.0f} "
                          f"{res.size / 2**20:9.1f} {res.peak_mib:9.1f}", flush=True)
    finally:
        if not a.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    fits = [r for r in results if (max_size is None or r.size <= max_size) and (a.max_time is None or r.seconds <= a.max_time)]
    print()
    if not fits:
        print("No configuration fits the given budget.")
        return 1
    best = min(fits, key=lambda r: (r.seconds, r.size)) if max_size is not None or a.max_time is None else \
        min(fits, key=lambda r: (r.size, r.seconds))
    print("Fastest configuration within the budget:" if a.max_time is None else "Smallest configuration within the budget:")
    print(f"    {best.line}")
    return 0
