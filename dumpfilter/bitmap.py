"""Packed pfn bitmaps, LSB first: pfn p is bit (p & 7) of byte p >> 3 (formats-cli.md §1.5).

A thin wrapper over a bytearray (or a caller's writable uint8 buffer) with range operations in
C (_speedups/bits.pyx) that never expand to one element per pfn, so a bitmap for 1 TiB of 4 KiB
pages costs 32 MiB, not 256 MiB. numpy is imported only by the methods that return or take
numpy arrays (unpack, pack_into, popcount_words): importing this module must not pull it in.
"""
from __future__ import annotations

from collections.abc import Iterator

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

from ._speedups import bits as _bits

if TYPE_CHECKING:
    import numpy as np

_POP8: Any = None


def popcount_words(words: np.ndarray) -> np.ndarray:
    """Set bits of each little-endian uint64 word, as int64."""
    import numpy as np

    global _POP8
    if _POP8 is None:
        _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return _POP8[words.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.int64)


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

    def unpack(self, start: int, end: int) -> np.ndarray:
        """Bits for pfns [start, end) as a bool array (use on bounded windows only)."""
        import numpy as np

        end = min(end, self.nbits)
        if start >= end:
            return np.zeros(0, dtype=bool)
        b0 = start >> 3
        b1 = (end + 7) >> 3
        bits = np.unpackbits(np.frombuffer(self.bits, dtype=np.uint8, count=b1 - b0, offset=b0), bitorder="little")
        off = start - b0 * 8
        return bits[off : off + (end - start)].astype(bool)

    def pack_into(self, start: int, flags: np.ndarray) -> None:
        """Overwrite bits [start, start+len(flags)) from a bool array; start must be a multiple of 8."""
        import numpy as np

        if start & 7:
            raise ValueError("pack_into: start must be byte aligned")
        n = len(flags)
        if n == 0:
            return
        packed = np.packbits(np.asarray(flags).astype(np.uint8), bitorder="little")
        b0 = start >> 3
        full = n >> 3
        memoryview(self.bits).cast("B")[b0 : b0 + full] = packed[:full]
        if n & 7:
            m = (1 << (n & 7)) - 1
            self.bits[b0 + full] = (int(self.bits[b0 + full]) & ~m & 0xFF) | (int(packed[full]) & m)

    def runs(self, start: int = 0, end: int | None = None, window: int = 1 << 22) -> Iterator[tuple[int, int]]:
        """Maximal [s, e) runs of set bits inside [start, end) (``window`` is unused, kept for callers)."""
        return iter(_bits.runs(self.bits, self.nbits, start, self.nbits if end is None else end))

    def tobytes(self, nbytes: int | None = None) -> bytes:
        """The packed bytes, zero-padded to nbytes (e.g. a whole number of blocks)."""
        raw = bytes(memoryview(self.bits).cast("B")[: (self.nbits + 7) // 8])
        if nbytes is not None:
            raw = raw.ljust(nbytes, b"\0")
        return raw
