"""Shared timing code of the benchmark scripts (compare.py, scale.py).

A run is one collector process: wall time from start until it exits, optionally until its outputs are
durable (each output file and its directory fsync'ed, as ``sync`` would, but without flushing other
files of the machine), and its peak RSS (``wait4``'s ``ru_maxrss``, of that process alone).
"""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

_CODEC_BIT = {"-c": 0x1, "-l": 0x2, "-p": 0x4, "-z": 0x20}


@dataclass
class Run:
    wall: float  # seconds, until exit (plus the fsync of the outputs when durable)
    rc: int
    maxrss_kib: int
    stderr: bytes = b""
    cpu: float = 0.0  # user + system seconds of the collector (and GNU time around it)


def default_pydumpfile() -> list[str]:
    """The script next to this interpreter (a venv's bin/), not a version manager's shim on PATH, whose
    own start-up would be timed too."""
    here = os.path.join(os.path.dirname(sys.executable), "pydumpfile")
    if os.access(here, os.X_OK):
        return [here]
    found = shutil.which("pydumpfile")
    return [found] if found else [sys.executable, "-m", "dumpfilter"]


def default_makedumpfile() -> str | None:
    return shutil.which("makedumpfile") or next(
        (p for p in ("/usr/sbin/makedumpfile", "/usr/bin/makedumpfile") if os.access(p, os.X_OK)), None)


def fsync_paths(paths: Sequence[str]) -> None:
    dirs = set()
    for p in paths:
        if not os.path.exists(p):
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dirs.add(os.path.dirname(os.path.abspath(p)))
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def timed(cmd: Sequence[str], outputs: Sequence[str] = (), durable: bool = False) -> Run:
    """Run ``cmd`` (stdout discarded); with ``durable`` the time includes the fsync of ``outputs``.

    The peak RSS comes from GNU time (``%M``) when it is installed: a child forked from this process
    inherits its high-water mark (Linux keeps ``maxrss`` across exec), GNU time's child inherits
    only GNU time's ~2 MiB."""
    fd, rss_file = tempfile.mkstemp(prefix="rss-")
    os.close(fd)
    full = [TIME, "-q", "-f", "%M", "-o", rss_file, *cmd] if TIME else list(cmd)
    t0 = time.perf_counter()
    p = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read() if p.stderr else b""
    _pid, status, ru = os.wait4(p.pid, 0)
    if durable:
        fsync_paths(outputs)
    dt = time.perf_counter() - t0
    if p.stderr:
        p.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    rss = int(ru.ru_maxrss)
    try:
        with open(rss_file) as f:
            lines = [x for x in f.read().split() if x.isdigit()]
        if TIME and lines:
            rss = int(lines[-1])
    finally:
        os.unlink(rss_file)
    return Run(dt, rc, rss, err, ru.ru_utime + ru.ru_stime)


def remove(paths: Sequence[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def settle() -> None:
    """Write back what earlier runs left dirty, so that it is not charged to the next run."""
    os.sync()


def drop_cache(path: str) -> None:
    """Take ``path``'s clean pages out of the page cache (posix_fadvise DONTNEED; no root needed), so that
    a run starts cold: what a 1 TiB image always is on a host that cannot cache it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: str, limit: int | None = None) -> int:
    """Read the data of ``path`` (skipping the holes of a sparse file) into the page cache; bytes read."""
    n = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size and (limit is None or n < limit):
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            p = d
            while p < h:
                k = len(os.pread(fd, min(1 << 24, h - p), p))
                if not k:
                    break
                p += k
                n += k
            pos = h
    finally:
        os.close(fd)
    return n


def codec_honoured(opts: Sequence[str], path: str) -> bool:
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


def kdump_bitmaps(path: str) -> tuple[bytes, bytes]:
    """(1st bitmap, 2nd bitmap) of a kdump-compressed file, read with plain struct calls."""
    with open(path, "rb") as f:
        head = f.read(464)
        if head[:8] != b"KDUMP   ":
            raise ValueError(f"{path}: not a kdump-compressed file")
        bs, sub_blocks, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
        f.seek(bs)
        sub = f.read(112)
        max_mapnr = struct.unpack_from("<Q", sub, 104)[0]
        half = bitmap_blocks // 2 * bs
        f.seek((1 + sub_blocks) * bs)
        b1 = f.read(half)
        b2 = f.read(half)
    nbytes = (max_mapnr + 7) // 8
    return b1[:nbytes], b2[:nbytes]


def popcount(b: bytes) -> int:
    return int.from_bytes(b, "little").bit_count() if b else 0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def machine() -> str:
    """nproc, RAM, the disk under the current directory, the kernel."""
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    disk = "?"
    try:
        st = os.statvfs(".")
        r = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", "."], capture_output=True, text=True)
        dev = r.stdout.split()
        disk = f"{' '.join(dev)}, {st.f_blocks * st.f_frsize / 1e9:.0f} GB ({st.f_bavail * st.f_frsize / 1e9:.0f} free)"
        name = os.path.basename(dev[0]) if dev else ""
        rot = f"/sys/block/{name}/queue/rotational"
        if name and os.path.exists(rot):
            disk += ", rotational" if open(rot).read().strip() == "1" else ", non-rotational"
    except (OSError, IndexError):
        pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**30:.1f} GiB RAM, disk {disk}; "
            f"{platform.platform()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def fmt_cmd(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)
