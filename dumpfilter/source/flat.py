"""The flattened format (``makedumpfile -F``): a 4096-byte header, then (offset, size, data) records,
then an end marker of (-1, -1). formats-cli.md §2.

``FlatView`` gives random access to a flattened *file* (later records win where they overlap), so a
flattened dump can be opened like the file it stands for. ``rearrange`` turns a stream into that file.
"""
from __future__ import annotations

import bisect
import heapq
from array import array
import mmap
import os

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import BinaryIO

from ..errors import InputError
from .base import open_input
from ..layouts import FLAT_HEADER, FLAT_HEADER_SIZE, FLAT_RECORD, FLAT_SIGNATURE, FLAT_TYPE

MAX_OFFSET = 1 << 47  # no real dump file is 128 TiB; larger offsets mean a corrupt stream
MAX_RECORD = 1 << 32


def check_flat_header(head: bytes, where: str) -> None:
    if len(head) < FLAT_HEADER_SIZE:
        raise InputError(f"{where}: flattened stream is truncated in its header ({len(head)} of 4096 bytes)")
    sig, ftype, _version = FLAT_HEADER.unpack_from(head)
    if sig.split(b"\0", 1)[0] != FLAT_SIGNATURE:
        raise InputError(f"{where}: not a flattened dump (wrong signature)")
    if ftype != FLAT_TYPE:
        raise InputError(f"{where}: flattened header has unknown type {ftype}")


def check_record(offset: int, size: int, where: str, pos: int) -> bool:
    """True for a data record, False for the end marker; InputError for anything else."""
    if offset == -1 and size == -1:
        return False
    if offset < 0 or size <= 0:
        raise InputError(
            f"{where}: invalid record at stream offset {pos}: offset {offset}, size {size} "
            "(Can't get valid end header of flattened format)"
        )
    if offset >= MAX_OFFSET or offset + size > MAX_OFFSET or size > MAX_RECORD:
        raise InputError(f"{where}: record at stream offset {pos} has an implausible offset {offset:#x} / size {size:#x}")
    return True


class FlatView:
    """Random access over a flattened file, as if it had been rearranged."""

    mm: mmap.mmap | None = None  # never mapped: records are scattered in the stream

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_input(path)
        try:
            self._index()
        except BaseException:
            os.close(self.fd)
            raise

    def _index(self) -> None:
        fsize = os.fstat(self.fd).st_size
        check_flat_header(os.pread(self.fd, FLAT_HEADER_SIZE, 0), self.path)
        pos = FLAT_HEADER_SIZE
        # the records in stream order, (dest_start, dest_end, src_offset), as int64 arrays: a million
        # records cost 24 MB, not the 150 MB of Python tuples
        rs, re_, rsrc = array("q"), array("q"), array("q")
        end_seen = False
        while pos + FLAT_RECORD.size <= fsize:
            off, size = FLAT_RECORD.unpack(os.pread(self.fd, FLAT_RECORD.size, pos))
            if not check_record(off, size, self.path, pos):
                end_seen = True
                break
            src = pos + FLAT_RECORD.size
            if src + size > fsize:
                break
            rs.append(off)
            re_.append(off + size)
            rsrc.append(src)
            pos = src + size
        if not end_seen:
            raise InputError(f"{self.path}: flattened dump is truncated (no end marker)")
        self._starts, self._ends, self._srcs = self._resolve(rs, re_, rsrc)
        self.size = max(self._ends, default=0)

    @staticmethod
    def _resolve(rs: array, re_: array, rsrc: array) -> tuple[array, array, array]:
        """Disjoint, sorted pieces (dest_start, dest_end, src_offset_of_dest_start) of the records,
        the later record winning where they overlap. A sweep over the records' ends with a heap of
        the records covering the current point (the latest on top): O(n log n), where inserting each
        record into a sorted list was O(n) (records in descending order: O(n^2), minutes for a
        17 MB file of a million one-byte records)."""
        import numpy as np  # only when a flattened file is opened

        out_s, out_e, out_src = array("q"), array("q"), array("q")
        if not rs:
            return out_s, out_e, out_src
        starts = np.frombuffer(rs, dtype=np.int64)
        points = np.concatenate([starts, np.frombuffer(re_, dtype=np.int64)])
        points.sort()
        pts = array("q", points[np.concatenate(([True], points[1:] != points[:-1]))].tobytes())
        by_start = array("q", np.argsort(starts, kind="stable").astype(np.int64).tobytes())
        heap: list[int] = []  # -index of the records that have started: the latest on top
        winner = -1
        k, n = 0, len(rs)
        nxt_start = rs[by_start[0]]
        for j in range(len(pts) - 1):
            x, nx = pts[j], pts[j + 1]
            while k < n and nxt_start <= x:
                heapq.heappush(heap, -by_start[k])
                k += 1
                nxt_start = rs[by_start[k]] if k < n else 0
            while heap and re_[-heap[0]] <= x:
                heapq.heappop(heap)
            if not heap:
                continue
            i = -heap[0]
            if out_e and out_e[-1] == x and winner == i:
                out_e[-1] = nx
            else:
                out_s.append(x)
                out_e.append(nx)
                out_src.append(rsrc[i] + (x - rs[i]))
                winner = i
        return out_s, out_e, out_src

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise InputError(f"{self.path}: {what} at offset {offset} lies past the end of the flattened dump")
        out = bytearray(size)
        end = offset + size
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while i < len(self._starts):
            s, e, src = self._starts[i], self._ends[i], self._srcs[i]
            if s >= end:
                break
            if e > offset:
                a, b = max(s, offset), min(e, end)
                out[a - offset : b - offset] = os.pread(self.fd, b - a, src + (a - s))
            i += 1
        return bytes(out)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    got = 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def rearrange(stream: BinaryIO, write_at, where: str = "standard input", chunk: int = 1 << 20) -> int:
    """Read a flattened stream and call ``write_at(offset, data)`` for every record.

    Returns the number of records. Stops at the end marker; a truncated stream is an InputError at
    once (makedumpfile waits 600 s for more data; we do not).
    """
    check_flat_header(_read_exact(stream, FLAT_HEADER_SIZE), where)
    pos = FLAT_HEADER_SIZE
    nrec = 0
    while True:
        hdr = _read_exact(stream, FLAT_RECORD.size)
        if len(hdr) < FLAT_RECORD.size:
            raise InputError(f"{where}: flattened stream is truncated at byte {pos + len(hdr)} (no end marker)")
        off, size = FLAT_RECORD.unpack(hdr)
        if not check_record(off, size, where, pos):
            return nrec
        pos += FLAT_RECORD.size
        done = 0
        while done < size:
            n = min(chunk, size - done)
            data = _read_exact(stream, n)
            if len(data) < n:
                raise InputError(
                    f"{where}: flattened stream is truncated at byte {pos + done + len(data)} "
                    f"(inside a record of {size} bytes)"
                )
            write_at(off + done, data)
            done += n
        pos += size
        nrec += 1
