"""Shared test helpers: run the CLI, take kdump files apart independently of the writer."""
from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PYDUMPFILE = [sys.executable, "-m", "dumpfilter"]
FAILED = "pydumpfile Failed."  # makedumpfile's last line on a failure, after an empty one
TRY_HELP = "Try `pydumpfile --help' for more information."  # after a usage error


def error_lines(stderr: bytes | str, *, usage: bool = False) -> list[str]:
    """What a failed run said before its closing "pydumpfile Failed." (which must be there) and, for a
    usage error, before "Try `pydumpfile --help' ..." (which must be there too)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    assert lines[-2:] == ["", FAILED], lines
    lines = lines[:-2]
    if usage:
        assert lines[-1:] == [TRY_HELP], lines
        lines = lines[:-1]
    return "\n".join(lines).strip().splitlines()


@contextlib.contextmanager
def scratch_dir(factory, name: str) -> Iterator[Path]:
    """A module fixture's own directory under pytest's basetemp, deleted when the fixture ends: a full run
    writes tens of GB of dumps, and pytest would otherwise keep every module's until the session is over."""
    d = factory.mktemp(name)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(args: list[str], stdin: bytes | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(PYDUMPFILE + [str(a) for a in args], input=stdin, capture_output=True, timeout=timeout, **kw)


@dataclass
class KdumpFile:
    """A kdump-compressed file parsed with plain struct calls (not the project's reader)."""

    path: str
    status: int
    block_size: int
    max_mapnr: int
    nr_cpus: int
    utsname: bytes
    tv_sec: int
    dump_level: int
    phys_base: int
    bitmap1: np.ndarray  # bool[max_mapnr]
    bitmap2: np.ndarray
    descs: np.ndarray  # structured: offset, size, flags, page_flags
    notes: bytes
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    data_off: int

    @classmethod
    def load(cls, path: str) -> "KdumpFile":
        with open(path, "rb") as f:
            raw = f.read()
        assert raw[:8] == b"KDUMP   ", "not a kdump file"
        (version,) = struct.unpack_from("<i", raw, 8)
        assert version == 6
        uts = raw[12:402]
        tv_sec, _tv_usec, status, bs, sub_blocks, bitmap_blocks, mapnr32, _, _, _, _, nr_cpus = struct.unpack_from(
            "<qqIiiIIIIIIi", raw, 408
        )
        sub = struct.unpack_from("<QiiQQqQqQqQQQQ", raw, bs)
        phys_base, level = sub[0], sub[1]
        off_vmci, size_vmci, off_note, size_note = sub[5], sub[6], sub[7], sub[8]
        max_mapnr = sub[13]
        half = bitmap_blocks // 2 * bs
        b1off = (1 + sub_blocks) * bs

        def bits(off: int) -> np.ndarray:
            a = np.frombuffer(raw, dtype=np.uint8, count=half, offset=off)
            return np.unpackbits(a, bitorder="little")[:max_mapnr].astype(bool)

        bm1, bm2 = bits(b1off), bits(b1off + half)
        pd = (1 + sub_blocks + bitmap_blocks) * bs
        n = int(bm2.sum())
        dt = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
        descs = np.frombuffer(raw, dtype=dt, count=n, offset=pd).copy() if n else np.zeros(0, dtype=dt)
        return cls(path, status, bs, max_mapnr, nr_cpus, uts, tv_sec, level, phys_base, bm1, bm2, descs,
                   raw[off_note : off_note + size_note], off_vmci, size_vmci, pd + 24 * n)

    def dumped_pfns(self) -> np.ndarray:
        return np.flatnonzero(self.bitmap2)

    def zero_pfns(self) -> np.ndarray:
        """pfns whose descriptor points at the shared zero page (only when dump level has bit 1)."""
        pfns = self.dumped_pfns()
        if not self.dump_level & 1 or pfns.size == 0:
            return np.zeros(0, dtype=np.int64)
        return pfns[self.descs["offset"] == self.data_off]

    def page(self, pfn: int) -> bytes:
        """Decode one dumped page with the codec libraries directly."""
        import zlib

        pfns = self.dumped_pfns()
        i = int(np.searchsorted(pfns, pfn))
        assert i < pfns.size and pfns[i] == pfn, f"pfn {pfn:#x} not dumped"
        off, size, flags = int(self.descs["offset"][i]), int(self.descs["size"][i]), int(self.descs["flags"][i])
        with open(self.path, "rb") as f:
            f.seek(off)
            data = f.read(size)
        if flags == 0:
            return data
        if flags == 1:
            return zlib.decompress(data)
        if flags == 2:
            import lzo

            return lzo.decompress(data, False, self.block_size)
        if flags == 4:
            import snappy

            return snappy.decompress(data)
        if flags == 0x20:
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data, max_output_size=self.block_size)
        raise AssertionError(f"unknown flags {flags:#x}")


def drgn_program(path: str):
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(path)
    return prog


def file_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


class ElfCore:
    """An ELF vmcore read with plain struct calls (independent of dumpfilter.source)."""

    def __init__(self, path: str) -> None:
        import mmap

        self.path = path
        self.f = open(path, "rb")
        self.mm = mmap.mmap(self.f.fileno(), 0, prot=mmap.PROT_READ)
        assert self.mm[:4] == b"\x7fELF" and self.mm[4] == 2
        phoff = struct.unpack_from("<Q", self.mm, 32)[0]
        phnum = struct.unpack_from("<H", self.mm, 56)[0]
        self.loads = []
        self.notes = b""
        for i in range(phnum):
            t, _fl, off, va, pa, fs, ms, _al = struct.unpack_from("<IIQQQQQQ", self.mm, phoff + 56 * i)
            if t == 1:
                self.loads.append((pa, fs, ms, off, va))
            elif t == 4:
                self.notes = self.mm[off : off + fs]
        self.page_size = 4096

    def read_phys(self, paddr: int, size: int) -> bytes:
        out = bytearray(size)
        for pa, fs, _ms, off, _va in self.loads:
            a, b = max(pa, paddr), min(pa + fs, paddr + size)
            if a < b:
                out[a - paddr : b - paddr] = self.mm[off + a - pa : off + b - pa]
        return bytes(out)

    def zero_pfns(self, pfns: np.ndarray) -> set[int]:
        ps = self.page_size
        zero = set()
        for pfn in pfns.tolist():
            if self.read_phys(pfn * ps, ps) == bytes(ps):
                zero.add(pfn)
        return zero


def runs_of(pfns: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of a sorted pfn array."""
    if pfns.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(pfns) != 1)
    starts = np.concatenate(([pfns[0]], pfns[breaks + 1]))
    ends = np.concatenate((pfns[breaks] + 1, [pfns[-1] + 1]))
    return list(zip(starts.tolist(), ends.tolist()))


def makedumpfile(args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["makedumpfile"] + [str(a) for a in args], capture_output=True, timeout=timeout, **kw)


def bits(bm, start: int, end: int) -> np.ndarray:
    """Bits [start, end) of a dumpfilter Bitmap as a bool array (tests only; the package needs no numpy)."""
    end = min(end, bm.nbits)
    if start >= end:
        return np.zeros(0, dtype=bool)
    raw = np.frombuffer(bm.tobytes(), dtype=np.uint8)
    out = np.unpackbits(raw, bitorder="little")[start:end].astype(bool)
    return out


REPORT_LINES = {
    "zero": "Pages filled with zero",
    "cache": "Non-private cache pages",
    "cache_private": "Private cache pages",
    "user": "User process data pages",
    "free": "Free pages",
}


def report_counts(text: str) -> dict[str, int]:
    """The excluded-page counts of a makedumpfile-style report (``--message-level``/``--show-stats``)."""
    import re

    out = {}
    for key, label in REPORT_LINES.items():
        m = re.search(re.escape(label) + r"\s*:\s*0x([0-9a-f]+)", text)
        assert m, f"no {label!r} line in the report"
        out[key] = int(m.group(1), 16)
    return out
