"""Bitmap range operations against a plain bool array."""
from __future__ import annotations

import random

import numpy as np

from dumpfilter.bitmap import Bitmap


def test_bitmap_matches_bool_array():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 300)
        ref = np.zeros(n, bool)
        bm = Bitmap(n)
        for _ in range(6):
            s = rng.randint(0, n)
            e = rng.randint(s, n)
            v = rng.random() < 0.6
            ref[s:e] = v
            (bm.set_range if v else bm.clear_range)(s, e)
        assert (bm.unpack(0, n) == ref).all()
        s = rng.randint(0, n)
        e = rng.randint(s, n)
        assert bm.count(s, e) == ref[s:e].sum()
        w = rng.randint(1, 40)
        exp, i = [], 0
        while i < n:
            if ref[i]:
                j = i
                while j < n and ref[j]:
                    j += 1
                exp.append((i, j))
                i = j
            else:
                i += 1
        assert list(bm.runs(0, n, window=w)) == exp
        start = rng.randrange(0, n, 8) if n >= 8 else 0
        flags = np.array([rng.random() < 0.5 for _ in range(n - start)])
        bm.pack_into(start, flags)
        ref[start:] = flags
        assert (bm.unpack(0, n) == ref).all()
        assert bm.tobytes(64 if n <= 512 else None)[: (n + 7) // 8] == np.packbits(ref, bitorder="little").tobytes()
