#!/usr/bin/env python3
"""What erase filters cost (issue 14): a ``-l -d 31`` dump of a real vmcore, plain, with ``--config``
through BTF+kallsyms (no vmlinux), with ``-x VMLINUX --config``, and makedumpfile's ``-x --config``.

    benchmarks/erase.py CORE_DIR [--runs 3] [--config FILE] [--vmlinux FILE]

CORE_DIR is a realcore fixture directory (fixtures/realcore; default config: the one the real tests
use). The vmlinux defaults to the fixture's Debian -dbg vmlinux (fixtures/dbgsym.py, downloaded once).
Runs alternate; the table gives the median wall time of each case and the cost of ``--config`` over the
plain dump. Targets: BTF adds at most 0.5 s; ``-x`` takes no longer than makedumpfile's ``-x``. Each
output's eraseinfo is checked to be the same as the others' (a benchmark that erased nothing would
measure nothing).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _time(cmd: list[str]) -> float:
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr.decode()[-2000:]}")
    return time.monotonic() - t


def _eraseinfo(path: Path) -> bytes:
    from dumpfilter.source import open_source

    with open_source(str(path)) as s:
        return s.info.eraseinfo


def main(argv: list[str]) -> int:
    from fixtures.dbgsym import vmlinux as dbg_vmlinux
    from tests.real.test_erase_real import CONFIG

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("core", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--vmlinux", type=Path)
    a = ap.parse_args(argv)
    vmcore = a.core / "vmcore"
    vml = a.vmlinux or dbg_vmlinux(a.core)
    py = [sys.executable, "-m", "dumpfilter"]
    with tempfile.TemporaryDirectory(prefix="erase-bench.") as tmp:
        t = Path(tmp)
        conf = a.config or (t / "erase.conf")
        if a.config is None:
            conf.write_text(CONFIG)
        cases = {
            "pydumpfile -l -d 31": py + ["-f", "-l", "-d", "31", str(vmcore), str(t / "plain")],
            "pydumpfile --config (BTF)": py + ["-f", "-l", "-d", "31", "--config", str(conf), str(vmcore), str(t / "btf")],
            "pydumpfile -x --config": py + ["-f", "-l", "-d", "31", "-x", str(vml), "--config", str(conf), str(vmcore),
                                            str(t / "x")],
            "makedumpfile -x --config": ["makedumpfile", "-f", "-l", "-d", "31", "-x", str(vml), "--config", str(conf),
                                         str(vmcore), str(t / "mdf")],
        }
        with open(vmcore, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(a.runs):
            for name, cmd in cases.items():
                times[name].append(_time(cmd))
        infos = {_eraseinfo(t / n) for n in ("btf", "x", "mdf")}
        med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'case':32s} {'median s':>9s} {'runs':>5s}")
    for k, v in med.items():
        print(f"{k:32s} {v:9.2f} {len(times[k]):5d}")
    plain = med["pydumpfile -l -d 31"]
    print(f"\n--config through BTF adds {med['pydumpfile --config (BTF)'] - plain:+.2f} s (target: at most +0.50 s)")
    print(f"-x --config: {med['pydumpfile -x --config']:.2f} s, makedumpfile's {med['makedumpfile -x --config']:.2f} s "
          f"(ratio {med['pydumpfile -x --config'] / med['makedumpfile -x --config']:.2f}; target: at most 1)")
    print(f"eraseinfo of the three erasing runs {'identical' if len(infos) == 1 else 'DIFFERS'}")
    return 0 if len(infos) == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
