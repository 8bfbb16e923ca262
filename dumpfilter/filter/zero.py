"""Zero pages for the outputs that exclude them from the bitmap itself (-E, --mem-usage; filtering.md
§5.10). The kdump-compressed writer tests pages for zero while it compresses them instead."""
from __future__ import annotations

import numpy as np

from .._speedups.pages import zero_pages
from ..bitmap import Bitmap
from ..source.base import DumpSource


def clear_zero_pages(src: DumpSource, bitmap: Bitmap, base: int = 0, window: int = 1024) -> int:
    """Clear the bits of all-zero pages in ``bitmap`` (pfns base..); returns how many were cleared.

    Pages are read and tested a window at a time in one Cython call each."""
    bs = src.page_size
    window = max(8, window // 8 * 8)
    buf = np.empty(window * bs, dtype=np.uint8)
    zf = np.empty(window, dtype=np.uint8)
    cleared = 0
    for w in range(0, bitmap.nbits, window):
        flags = bitmap.unpack(w, w + window)
        sel = np.flatnonzero(flags)
        if sel.size == 0:
            continue
        first = int(sel[0])
        n = int(sel[-1]) + 1 - first
        src.read_pages(base + w + first, n, buf)
        zero_pages(buf, bs, n, zf)
        z = np.zeros(flags.size, dtype=bool)
        z[first : first + n] = zf[:n].astype(bool)
        z &= flags
        if z.any():
            cleared += int(z.sum())
            bitmap.pack_into(w, flags & ~z)
    return cleared
