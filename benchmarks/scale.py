#!/usr/bin/env python3
"""How pydumpfile and makedumpfile scale with RAM (issue 15).

    benchmarks/scale.py [--image 64G] [--image 256G] [--image 1T:31] [--real VMCORE[:GIB]] [--runs 1]
                        [--levels 31,1] [--threads 1,2] [--mdf-threads 1] [--extras] [--rss-sweep]
                        [--out-dir DIR] [--json FILE]

``--image SIZE[:LEVELS]`` is a sparse image made (or found in the cache) by ``fixtures/bigcore.py``;
``--real VMCORE`` a real vmcore (e.g. ``fixtures/realcore --kernel 6.1 --mem-mb 8192 --crashkernel 512M
--workload-mb 6000``; ``:GIB`` its RAM size, default: its PT_LOADs rounded up to a GiB).  For every
image and level (``-l -d L``) the collectors run in alternation, ``--runs`` rounds of
makedumpfile single-threaded, pydumpfile with each ``--threads`` count (``--num-threads N``; 1 means
no option) and makedumpfile with each ``--mdf-threads`` count > 1.  Every run writes to DIR (default: a
directory next to the image) and is timed until its output is durable (the collector, then the fsync
of the output file and its directory); earlier runs' dirty data is written back before each run, and
the image's data (not its holes) is read once and one untimed ``pydumpfile -l -d 31`` run made before
its first timed run (``--no-warmup``: not).  The table gives medians: wall
time, ratio to makedumpfile single-threaded in the same invocation, peak RSS (the process's
``ru_maxrss``), time per GiB of RAM, and whether pydumpfile and makedumpfile kept the same pfns (2nd
bitmaps, compared on the first round).

``--extras`` (on the real vmcore): refiltering a ``-l -d 1`` dump to ``-l -d 31`` (both collectors,
the input made once by makedumpfile), ``--split`` into 2 files with ``--num-threads 0`` against the same
run unsplit at ``-l -d 1``.  ``--rss-sweep`` runs pydumpfile once more per image (up to ``--rss-sweep-max`` GiB) with
``-E -d 31``, ``-c -d 31`` and ``--num-threads 4`` and reports the peak RSS (``-E`` written to /dev/null: at 1 TiB it is 20 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from benchlib import (  # noqa: E402
    Run,
    default_makedumpfile,
    default_pydumpfile,
    drop_cache,
    kdump_bitmaps,
    machine,
    median,
    popcount,
    remove,
    settle,
    timed,
    warm,
)


@dataclass
class Image:
    label: str
    path: str
    gib: float
    levels: list[int]
    real: bool = False


@dataclass
class Row:
    image: str
    gib: float
    case: str
    who: str  # "mdf" or "py"
    threads: int
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    size: int = 0
    same_pfns: str = ""

    @property
    def wall(self) -> float:
        return median(self.walls)


def ram_of(path: str) -> float:
    """GiB of RAM behind an ELF vmcore: its RAM PT_LOADs (not the kernel-text alias), rounded up."""
    with open(path, "rb") as f:
        eh = f.read(64)
        (phoff,) = struct.unpack_from("<Q", eh, 32)
        (phnum,) = struct.unpack_from("<H", eh, 56)
        f.seek(phoff)
        raw = f.read(56 * phnum)
    total = 0
    for i in range(phnum):
        t, _fl, _off, va, _pa, _fsz, msz, _al = struct.unpack_from("<IIQQQQQQ", raw, 56 * i)
        if t == 1 and va < 0xFFFFFFFF80000000:
            total += msz
    return float(-(-total // 2**30))


def parse_images(a: argparse.Namespace) -> list[Image]:
    from fixtures import bigcore

    levels = [int(x) for x in a.levels.split(",")]
    out: list[Image] = []
    for spec in a.image or []:
        size, _, lv = spec.partition(":")
        t0 = time.perf_counter()
        path = str(bigcore.build(bigcore.parse_size(size), seed=a.seed, progress=True))
        dt = time.perf_counter() - t0
        if dt > 1:
            print(f"# built {path} in {dt:.0f}s", flush=True)
        gib = bigcore.parse_size(size) / 2**30
        out.append(Image(size, path, gib, [int(x) for x in lv.split(",")] if lv else levels))
    for spec in a.real or []:
        path, _, gib = spec.partition(":")
        g = float(gib) if gib else ram_of(path)
        out.append(Image(f"real {g:g}G", path, g, levels, real=True))
    return out


class Bench:
    def __init__(self, a: argparse.Namespace, out_dir: str) -> None:
        self.a = a
        self.out_dir = out_dir
        self.py = default_pydumpfile() if not a.pydumpfile else a.pydumpfile.split()
        self.mdf = a.makedumpfile or default_makedumpfile()
        self.rows: list[Row] = []
        self.extras: list[dict[str, object]] = []

    def run(self, cmd: list[str], outputs: list[str]) -> Run:
        remove(outputs)
        settle()
        if self.a.cold:
            drop_cache(cmd[-2])
        r = timed(cmd, outputs, durable=True)
        if r.rc != 0:
            raise SystemExit(f"failed (exit {r.rc}): {' '.join(cmd)}\n{r.stderr.decode(errors='replace')[-2000:]}")
        return r

    def collectors(self) -> list[tuple[str, int]]:
        out = [("mdf", 1)] if self.mdf else []
        for t in (int(x) for x in self.a.threads.split(",")):
            out.append(("py", t))
        for t in (int(x) for x in self.a.mdf_threads.split(",") if x):
            if t > 1 and self.mdf:
                out.append(("mdf", t))
        return out

    def cmd(self, who: str, threads: int, opts: list[str], src: str, dst: str) -> list[str]:
        base = [self.mdf] if who == "mdf" else list(self.py)
        topt = ["--num-threads", str(threads)] if threads != 1 else []
        assert base[0]
        return [str(x) for x in base] + opts + topt + [src, dst]

    def image(self, img: Image) -> None:
        t0 = time.perf_counter()
        n = 0 if self.a.cold else warm(img.path)
        print(f"# {img.label}: {img.path}, {os.path.getsize(img.path) / 2**30:.1f} GiB apparent, "
              f"{n / 2**30:.2f} GiB of data read in {time.perf_counter() - t0:.0f}s"
              + (" (--cold: its page cache dropped before every run)" if self.a.cold else ""), flush=True)
        if self.a.warmup and not self.a.cold:
            # the pages -d 31 reads: on a sparse image most are holes, which the first reader turns
            # into page-cache pages; without this the first collector would pay for all of them
            out = os.path.join(self.out_dir, "warmup")
            r = self.run(self.cmd("py", 1, ["-l", "-d", "31"], img.path, out), [out])
            remove([out])
            print(f"# warm-up run (pydumpfile -l -d 31, untimed): {r.wall:.1f}s", flush=True)
        for level in img.levels if self.a.runs else ():  # --runs 0: only --extras / --rss-sweep
            case = f"-l -d {level}"
            opts = case.split()
            rows = {c: Row(img.label, img.gib, case, c[0], c[1]) for c in self.collectors()}
            for rnd in range(self.a.runs):
                kept: dict[tuple[str, int], str] = {}
                for c, row in rows.items():
                    out = os.path.join(self.out_dir, f"out.{c[0]}{c[1]}")
                    r = self.run(self.cmd(c[0], c[1], opts, img.path, out), [out])
                    row.walls.append(r.wall)
                    row.rss.append(r.maxrss_kib)
                    row.size = os.path.getsize(out)
                    if rnd == 0 and c in (("mdf", 1), ("py", 1)):
                        kept[c] = out
                    else:
                        remove([out])
                    print(f"  {img.label:>9} {case:10} {c[0]:3} t{c[1]} {r.wall:8.2f}s {r.maxrss_kib / 1024:7.1f} MiB "
                          f"cpu {r.cpu:7.2f}s ({r.cpu / img.gib:.4f}/GiB)",
                          flush=True)
                if len(kept) == 2:
                    a, b = (kdump_bitmaps(kept[k]) for k in (("mdf", 1), ("py", 1)))
                    same = "yes" if a[1] == b[1] else "NO"
                    for row in rows.values():
                        row.same_pfns = f"{same} ({popcount(a[1])})"
                remove(list(kept.values()))
            self.rows += rows.values()

    def extras_real(self, img: Image) -> None:
        d1 = os.path.join(self.out_dir, "in.d1")
        if self.mdf:
            self.run([self.mdf, "-l", "-d", "1", img.path, d1], [d1])
            warm(d1)
            t: dict[str, list[float]] = {"mdf": [], "py": []}
            rss: dict[str, list[int]] = {"mdf": [], "py": []}
            for _ in range(self.a.runs):
                for who in ("mdf", "py"):
                    out = os.path.join(self.out_dir, f"refilter.{who}")
                    r = self.run(self.cmd(who, 1, ["-l", "-d", "31"], d1, out), [out])
                    t[who].append(r.wall)
                    rss[who].append(r.maxrss_kib)
                    remove([out])
                    print(f"  refilter -d 1 -> -d 31 {who:3} {r.wall:8.2f}s {r.maxrss_kib / 1024:7.1f} MiB", flush=True)
            self.extras.append({"what": f"refilter a {img.label} -l -d 1 dump to -l -d 31",
                                "py": median(t["py"]), "mdf": median(t["mdf"]),
                                "ratio": median(t["py"]) / median(t["mdf"]),
                                "py_rss_mib": max(rss["py"]) / 1024, "mdf_rss_mib": max(rss["mdf"]) / 1024})
            remove([d1])
        # --split into 2 files, --num-threads 0, against the same run unsplit
        s: dict[str, list[float]] = {"split": [], "unsplit": []}
        srss: dict[str, list[int]] = {"split": [], "unsplit": []}
        for _ in range(self.a.runs):
            for kind in ("unsplit", "split"):
                if kind == "split":
                    outs = [os.path.join(self.out_dir, f"split.{i}") for i in (1, 2)]
                    cmd = list(self.py) + ["--split", "-l", "-d", "1", "--num-threads", "0", img.path] + outs
                else:
                    outs = [os.path.join(self.out_dir, "unsplit")]
                    cmd = list(self.py) + ["-l", "-d", "1", "--num-threads", "0", img.path] + outs
                r = self.run(cmd, outs)
                s[kind].append(r.wall)
                srss[kind].append(r.maxrss_kib)
                remove(outs)
                print(f"  {kind:8} -l -d 1 --num-threads 0 {r.wall:8.2f}s {r.maxrss_kib / 1024:7.1f} MiB", flush=True)
        self.extras.append({"what": f"--split 2 files vs unsplit, {img.label}, -l -d 1 --num-threads 0",
                            "py": median(s["split"]), "mdf": median(s["unsplit"]),
                            "ratio": median(s["split"]) / median(s["unsplit"]),
                            "py_rss_mib": max(srss["split"]) / 1024, "mdf_rss_mib": max(srss["unsplit"]) / 1024})

    def rss_sweep(self, img: Image) -> None:
        for case in ("-E -d 31", "-c -d 31", "-l -d 31 --num-threads 4", "-E -d 31 --num-threads 4"):
            # -E keeps the mem_map uncompressed (20 GB at 1 TiB): only the peak RSS is measured, so
            # its output goes to /dev/null
            out = os.devnull if case.startswith("-E") else os.path.join(self.out_dir, "sweep")
            outputs = [] if out == os.devnull else [out]
            r = self.run(list(self.py) + case.split() + ["-f", img.path, out], outputs)
            remove(outputs)
            print(f"  rss-sweep {img.label:>9} {case:28} {r.wall:8.2f}s {r.maxrss_kib / 1024:7.1f} MiB", flush=True)
            self.extras.append({"what": f"peak RSS, {img.label}, pydumpfile {case}", "py": r.wall,
                                "py_rss_mib": r.maxrss_kib / 1024})

    def table(self) -> str:
        lines = ["| image | GiB | case | collector | wall s | ratio | s/GiB | peak RSS MiB | output MiB | same pfns |",
                 "|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
        base = {(r.image, r.case): r.wall for r in self.rows if r.who == "mdf" and r.threads == 1}
        for r in self.rows:
            b = base.get((r.image, r.case))
            ratio = f"{r.wall / b:.2f}" if b else "n/a"
            name = ("makedumpfile" if r.who == "mdf" else "pydumpfile") + (f" --num-threads {r.threads}" if r.threads != 1 else "")
            lines.append(f"| {r.image} | {r.gib:g} | `{r.case}` | {name} | {r.wall:.2f} | {ratio} | "
                         f"{r.wall / r.gib:.3f} | {max(r.rss) / 1024:.1f} | {r.size / 2**20:.0f} | {r.same_pfns} |")
        if self.extras:
            lines += ["", "| extra | pydumpfile s | reference s | ratio | peak RSS MiB (py / ref) |", "|---|---:|---:|---:|---:|"]
            for e in self.extras:
                ref = e.get("mdf")
                refs = "" if ref is None else f"{ref:.2f}"
                ratio = "" if ref is None else f"{e['ratio']:.2f}"
                rss = f"{e['py_rss_mib']:.1f}" + ("" if ref is None else f" / {e['mdf_rss_mib']:.1f}")
                lines.append(f"| {e['what']} | {e['py']:.2f} | {refs} | {ratio} | {rss} |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", action="append", help="bigcore image SIZE[:LEVELS], e.g. 64G, 1T:31 (repeatable)")
    ap.add_argument("--real", action="append", help="a real vmcore PATH[:GIB] (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1, help="rounds of the timed runs (0: only --extras / --rss-sweep)")
    ap.add_argument("--levels", default="31,1")
    ap.add_argument("--threads", default="1,2", help="pydumpfile thread counts (1: no --num-threads)")
    ap.add_argument("--mdf-threads", default="1", help="makedumpfile thread counts besides 1 (its --num-threads)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the input's page cache before every run (posix_fadvise): every size as cold as 1 TiB")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="no untimed pydumpfile -l -d 31 run before an image's timed runs")
    ap.add_argument("--extras", action="store_true", help="refilter and --split runs on the real vmcores")
    ap.add_argument("--rss-sweep", action="store_true")
    ap.add_argument("--rss-sweep-max", type=float, default=64, help="only on images up to this many GiB")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--pydumpfile", default=None)
    ap.add_argument("--makedumpfile", default=None)
    a = ap.parse_args(argv)
    images = parse_images(a)
    if not images:
        ap.error("give --image and/or --real")
    out_dir = a.out_dir or tempfile.mkdtemp(prefix="scale-", dir=os.path.dirname(os.path.abspath(images[0].path)))
    os.makedirs(out_dir, exist_ok=True)
    b = Bench(a, out_dir)
    print(f"# {machine()}\n# outputs in {out_dir}; {a.runs} round(s), medians; times until durable", flush=True)
    for img in images:
        b.image(img)
        if a.extras and img.real:
            b.extras_real(img)
        if a.rss_sweep and img.gib <= a.rss_sweep_max:
            b.rss_sweep(img)
    print()
    print(b.table())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), "rows": [r.__dict__ | {"wall": r.wall} for r in b.rows],
                       "extras": b.extras}, f, indent=1)
    if not a.out_dir:
        try:
            os.rmdir(out_dir)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
