"""Packed pfn bitmaps, LSB first: pfn p is bit (p & 7) of byte p >> 3 (formats-cli.md §1.5).

A thin wrapper over a bytearray (or a caller's writable uint8 buffer) with range operations in
C (_speedups/bits.pyx) that never expand to one element per pfn, so a bitmap for 1 TiB of 4 KiB
pages costs 32 MiB, not 256 MiB.
"""
from __future__ import annotations

from collections.abc import Iterator

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

from ._speedups import bits as _bits


class Bitmap:
    """A bitmap of ``nbits`` pfns stored in ``ceil(nbits/8)`` bytes (or a caller's larger buffer)."""

    __slots__ = ("bits", "nbits")

    def __init__(self, nbits: int, data: Any = None) -> None:
        """``data``: a bytearray or any writable contiguous uint8 buffer (kept, not copied)."""
        self.nbits = nbits
        nbytes = (nbits + 7) // 8
        if data is None:
            self.bits: Any = bytearray(nbytes)
        else:
            if memoryview(data).nbytes < nbytes:
                raise ValueError("bitmap data too small")
            self.bits = data

    @classmethod
    def from_bytes(cls, nbits: int, raw: bytes | bytearray | memoryview) -> Bitmap:
        nbytes = (nbits + 7) // 8
        mv = memoryview(raw).cast("B")
        if mv.nbytes < nbytes:
            raise ValueError("bitmap data too small")
        bm = cls(nbits, bytearray(mv[:nbytes]))
        bm._clear_tail()
        return bm

    def copy(self) -> Bitmap:
        return Bitmap(self.nbits, bytearray(self.bits))

    def _clear_tail(self) -> None:
        if self.nbits % 8:
            self.bits[self.nbits // 8] &= (1 << (self.nbits % 8)) - 1

    def set_range(self, start: int, end: int) -> None:
        """Set bits for pfns in [start, end)."""
        _bits.set_range(self.bits, self.nbits, start, end)

    def clear_range(self, start: int, end: int) -> None:
        """Clear bits for pfns in [start, end)."""
        _bits.clear_range(self.bits, self.nbits, start, end)

    def test(self, pfn: int) -> bool:
        return 0 <= pfn < self.nbits and bool(self.bits[pfn >> 3] >> (pfn & 7) & 1)

    def set(self, pfn: int) -> None:
        self.bits[pfn >> 3] |= 1 << (pfn & 7)

    def clear(self, pfn: int) -> None:
        self.bits[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Number of set bits for pfns in [start, end)."""
        return _bits.count(self.bits, self.nbits, start, self.nbits if end is None else end)

    def next_set(self, pos: int) -> int:
        """The first pfn >= pos whose bit is set, or nbits if there is none."""
        return _bits.next_set(self.bits, self.nbits, pos)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Maximal [s, e) runs of set bits inside [start, end)."""
        return iter(_bits.runs(self.bits, self.nbits, start, self.nbits if end is None else end))

    def tobytes(self, nbytes: int | None = None) -> bytes:
        """The packed bytes, zero-padded to nbytes (e.g. a whole number of blocks)."""
        raw = bytes(memoryview(self.bits).cast("B")[: (self.nbits + 7) // 8])
        if nbytes is not None:
            raw = raw.ljust(nbytes, b"\0")
        return raw
