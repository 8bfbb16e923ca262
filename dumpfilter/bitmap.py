"""Packed pfn bitmaps, LSB first: pfn p is bit (p & 7) of byte p >> 3 (formats-cli.md §1.5).

A thin wrapper over a numpy uint8 array with range operations that never expand to one
element per pfn, so a bitmap for 1 TiB of 4 KiB pages costs 32 MiB, not 256 MiB.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount_bytes(a: np.ndarray) -> int:
    """Set bits in a uint8 array (numpy < 2 has no bitwise_count: Debian 12 ships 1.24)."""
    return int(_POP8[a].sum(dtype=np.int64))


def popcount_words(words: np.ndarray) -> np.ndarray:
    """Set bits of each little-endian uint64 word, as int64."""
    return _POP8[words.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.int64)


class Bitmap:
    """A bitmap of ``nbits`` pfns stored in ``ceil(nbits/8)`` bytes (or a caller's larger array)."""

    __slots__ = ("bits", "nbits")

    def __init__(self, nbits: int, data: np.ndarray | None = None) -> None:
        self.nbits = nbits
        nbytes = (nbits + 7) // 8
        if data is None:
            self.bits = np.zeros(nbytes, dtype=np.uint8)
        else:
            if data.dtype != np.uint8 or data.size < nbytes:
                raise ValueError("bitmap data too small")
            self.bits = data

    @classmethod
    def from_bytes(cls, nbits: int, raw: bytes | bytearray | memoryview) -> Bitmap:
        arr = np.frombuffer(raw, dtype=np.uint8, count=(nbits + 7) // 8).copy()
        bm = cls(nbits, arr)
        bm._clear_tail()
        return bm

    def copy(self) -> Bitmap:
        return Bitmap(self.nbits, self.bits.copy())

    def _clear_tail(self) -> None:
        if self.nbits % 8:
            self.bits[self.nbits // 8] &= (1 << (self.nbits % 8)) - 1

    def _range(self, start: int, end: int, value: bool) -> None:
        start = max(start, 0)
        end = min(end, self.nbits)
        if start >= end:
            return
        b0, b1 = start >> 3, (end - 1) >> 3
        head = (0xFF << (start & 7)) & 0xFF
        tail = 0xFF >> (7 - ((end - 1) & 7))
        if b0 == b1:
            m = head & tail
            if value:
                self.bits[b0] |= m
            else:
                self.bits[b0] &= ~m & 0xFF
            return
        if value:
            self.bits[b0] |= head
            self.bits[b1] |= tail
            self.bits[b0 + 1 : b1] = 0xFF
        else:
            self.bits[b0] &= ~head & 0xFF
            self.bits[b1] &= ~tail & 0xFF
            self.bits[b0 + 1 : b1] = 0

    def set_range(self, start: int, end: int) -> None:
        """Set bits for pfns in [start, end)."""
        self._range(start, end, True)

    def clear_range(self, start: int, end: int) -> None:
        """Clear bits for pfns in [start, end)."""
        self._range(start, end, False)

    def test(self, pfn: int) -> bool:
        return 0 <= pfn < self.nbits and bool(self.bits[pfn >> 3] >> (pfn & 7) & 1)

    def set(self, pfn: int) -> None:
        self.bits[pfn >> 3] |= 1 << (pfn & 7)

    def clear(self, pfn: int) -> None:
        self.bits[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Number of set bits for pfns in [start, end)."""
        end = self.nbits if end is None else min(end, self.nbits)
        start = max(start, 0)
        if start >= end:
            return 0
        b0, b1 = start >> 3, (end - 1) >> 3
        if b0 == b1:
            m = ((0xFF << (start & 7)) & 0xFF) & (0xFF >> (7 - ((end - 1) & 7)))
            return int(self.bits[b0] & m).bit_count()
        total = popcount_bytes(self.bits[b0 + 1 : b1])
        total += int(self.bits[b0] & ((0xFF << (start & 7)) & 0xFF)).bit_count()
        total += int(self.bits[b1] & (0xFF >> (7 - ((end - 1) & 7)))).bit_count()
        return total

    def unpack(self, start: int, end: int) -> np.ndarray:
        """Bits for pfns [start, end) as a bool array (use on bounded windows only)."""
        end = min(end, self.nbits)
        if start >= end:
            return np.zeros(0, dtype=bool)
        b0 = start >> 3
        b1 = (end + 7) >> 3
        bits = np.unpackbits(self.bits[b0:b1], bitorder="little")
        off = start - b0 * 8
        return bits[off : off + (end - start)].astype(bool)

    def pack_into(self, start: int, flags: np.ndarray) -> None:
        """Overwrite bits [start, start+len(flags)) from a bool array; start must be a multiple of 8."""
        if start & 7:
            raise ValueError("pack_into: start must be byte aligned")
        n = len(flags)
        if n == 0:
            return
        packed = np.packbits(flags.astype(np.uint8), bitorder="little")
        b0 = start >> 3
        full = n >> 3
        self.bits[b0 : b0 + full] = packed[:full]
        if n & 7:
            m = (1 << (n & 7)) - 1
            self.bits[b0 + full] = (int(self.bits[b0 + full]) & ~m & 0xFF) | (int(packed[full]) & m)

    def runs(self, start: int = 0, end: int | None = None, window: int = 1 << 22) -> Iterator[tuple[int, int]]:
        """Yield maximal [s, e) runs of set bits inside [start, end), scanning in bounded windows."""
        end = self.nbits if end is None else min(end, self.nbits)
        open_start: int | None = None
        pos = start
        while pos < end:
            wend = min(end, pos + window)
            flags = self.unpack(pos, wend).astype(np.int8)
            d = np.diff(flags, prepend=np.int8(0), append=np.int8(0))
            starts = (np.flatnonzero(d == 1) + pos).tolist()
            ends = (np.flatnonzero(d == -1) + pos).tolist()
            if open_start is not None and (not starts or starts[0] != pos):
                yield open_start, pos
                open_start = None
            for s, e in zip(starts, ends):
                if open_start is not None:  # s == pos: the run goes on from the previous window
                    s = open_start
                    open_start = None
                if e == wend and wend < end:
                    open_start = s
                else:
                    yield s, e
            pos = wend
        if open_start is not None:
            yield open_start, end

    def tobytes(self, nbytes: int | None = None) -> bytes:
        """The packed bytes, zero-padded to nbytes (e.g. a whole number of blocks)."""
        raw = self.bits[: (self.nbits + 7) // 8].tobytes()
        if nbytes is not None:
            raw = raw.ljust(nbytes, b"\0")
        return raw
