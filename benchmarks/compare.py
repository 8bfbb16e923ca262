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
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import codec_honoured, default_makedumpfile, default_pydumpfile, median, timed, warm  # noqa: E402

DEFAULT_CASES = ["-l -d 31", "-c -d 31", "-l -d 1", "-l -d 1 --num-threads 2", "-z -d 31", "-p -d 31"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmcore")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out-dir", default=None, help="where outputs go (default: a temp dir next to the vmcore)")
    ap.add_argument("--case", action="append", help="options of one case (repeatable)")
    ap.add_argument("--pydumpfile", default=shlex.join(default_pydumpfile()))
    ap.add_argument("--makedumpfile", default=default_makedumpfile())
    a = ap.parse_args()
    cases = a.case or DEFAULT_CASES
    out_dir = a.out_dir or tempfile.mkdtemp(prefix="compare-", dir=os.path.dirname(os.path.abspath(a.vmcore)))
    warm(a.vmcore)  # the page cache
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
                r = timed(cmd)
                dt, rc = r.wall, r.rc
                if rc == 0 and who == "mdf" and not codec_honoured(opts, out):
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
        p = median(times["py"])
        m = median(times["mdf"]) if times["mdf"] else None
        ratio = f"{p / m:6.2f}" if m else "   n/a"
        ms = f"{m:14.2f}" if m else f"{'n/a':>14}"
        msz = f"{sizes['mdf'] / 2**20:8.1f}" if "mdf" in sizes else f"{'n/a':>8}"
        print(f"{case:32} {p:12.2f} {ms} {ratio} {sizes['py'] / 2**20:8.1f} {msz}", flush=True)
    if not a.out_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
