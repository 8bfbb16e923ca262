#!/usr/bin/env python3
"""Compare pydumpfile and makedumpfile on the same vmcore, alternating runs.

    benchmarks/compare.py VMCORE [--runs 5] [--out-dir DIR] [--case "-l -d 31" ...]

For each case both collectors run with the same options, in alternation, writing to the same
filesystem; the table shows the median wall time of each, the ratio pydumpfile/makedumpfile, and the
output sizes. The page cache is warmed with one untimed read of the vmcore first. makedumpfile runs
single-threaded unless the case itself passes --num-threads.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_CASES = ["-l -d 31", "-c -d 31", "-l -d 1", "-l -d 1 --num-threads 2", "-z -d 31", "-p -d 31"]


_CODEC_BIT = {"-c": 0x1, "-l": 0x2, "-p": 0x4, "-z": 0x20}


def _codec_honoured(opts: list[str], path: str) -> bool:
    """False when a kdump-compressed output lacks the asked codec's status bit: Debian's makedumpfile
    1.7.2 is built without snappy and zstd and then writes uncompressed pages without a word."""
    want = 0
    for o in opts:
        want = _CODEC_BIT.get(o, want)
    if not want or "-E" in opts:
        return True
    with open(path, "rb") as f:
        head = f.read(428)
    return len(head) == 428 and bool(int.from_bytes(head[424:428], "little") & want)


def _timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    return dt, r.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmcore")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out-dir", default=None, help="where outputs go (default: a temp dir next to the vmcore)")
    ap.add_argument("--case", action="append", help="options of one case (repeatable)")
    # the script next to this interpreter (a venv's bin/), not a version manager's shim on PATH,
    # whose own start-up would be timed too
    here = os.path.join(os.path.dirname(sys.executable), "pydumpfile")
    default_py = here if os.access(here, os.X_OK) else shutil.which("pydumpfile") or f"{sys.executable} -m dumpfilter"
    ap.add_argument("--pydumpfile", default=default_py)
    ap.add_argument("--makedumpfile", default=shutil.which("makedumpfile"))
    a = ap.parse_args()
    cases = a.case or DEFAULT_CASES
    out_dir = a.out_dir or tempfile.mkdtemp(prefix="compare-", dir=os.path.dirname(os.path.abspath(a.vmcore)))
    with open(a.vmcore, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    py = shlex.split(a.pydumpfile)
    print(f"# {a.vmcore}: {os.path.getsize(a.vmcore) / 2**30:.2f} GiB; {platform.node()}, "
          f"{os.cpu_count()} CPUs, {platform.platform()}; {a.runs} runs per collector, medians")
    print(f"{'case':32} {'pydumpfile s':>12} {'makedumpfile s':>14} {'ratio':>6} {'py MiB':>8} {'mdf MiB':>8}")
    for case in cases:
        opts = shlex.split(case)
        times: dict[str, list[float]] = {"py": [], "mdf": []}
        sizes: dict[str, int] = {}
        mdf_ok = a.makedumpfile is not None
        for _ in range(a.runs):
            for who in ("py", "mdf"):
                if who == "mdf" and not mdf_ok:
                    continue
                out = os.path.join(out_dir, f"out.{who}")
                if os.path.exists(out):
                    os.unlink(out)
                cmd = (py if who == "py" else [a.makedumpfile]) + opts + [a.vmcore, out]
                dt, rc = _timed(cmd)
                if rc == 0 and who == "mdf" and not _codec_honoured(opts, out):
                    rc = 1
                if rc != 0:
                    if who == "mdf":
                        mdf_ok = False  # e.g. -p/-z on a makedumpfile built without them
                        continue
                    print(f"pydumpfile failed on {case!r} (exit {rc})", file=sys.stderr)
                    return 1
                times[who].append(dt)
                sizes[who] = os.path.getsize(out)
                os.unlink(out)
        p = statistics.median(times["py"])
        m = statistics.median(times["mdf"]) if times["mdf"] else None
        ratio = f"{p / m:6.2f}" if m else "   n/a"
        ms = f"{m:14.2f}" if m else f"{'n/a':>14}"
        msz = f"{sizes['mdf'] / 2**20:8.1f}" if "mdf" in sizes else f"{'n/a':>8}"
        print(f"{case:32} {p:12.2f} {ms} {ratio} {sizes['py'] / 2**20:8.1f} {msz}", flush=True)
    if not a.out_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
