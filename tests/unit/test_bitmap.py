"""Bitmap range operations against a plain bool array."""
from __future__ import annotations

import random

import numpy as np

from dumpfilter.bitmap import Bitmap


def _bools(bm: Bitmap, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bm.tobytes(), dtype=np.uint8), bitorder="little")[:n].astype(bool)


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
        assert (_bools(bm, n) == ref).all()
        s = rng.randint(0, n)
        e = rng.randint(s, n)
        assert bm.count(s, e) == ref[s:e].sum()
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
        assert list(bm.runs(0, n)) == exp
        for p in range(n):
            if rng.random() < 0.2:
                v = rng.random() < 0.5
                (bm.set if v else bm.clear)(p)
                ref[p] = v
        assert (_bools(bm, n) == ref).all()
        assert bm.tobytes(64 if n <= 512 else None)[: (n + 7) // 8] == np.packbits(ref, bitorder="little").tobytes()


# --- the C kernels (_speedups/bits.pyx) against plain Python on odd sizes -------------------------

import pytest  # noqa: E402

from dumpfilter._speedups import bits as cbits  # noqa: E402

SIZES = [1, 7, 8, 9, 63, 64, 65, 127, 1000, 70001]


def _ref_bits(buf: bytearray, nbits: int) -> list[int]:
    return [(buf[p >> 3] >> (p & 7)) & 1 for p in range(nbits)]


def _ref_runs(ref: list[int], start: int, end: int) -> list[tuple[int, int]]:
    out, i = [], max(start, 0)
    end = min(end, len(ref))
    while i < end:
        if ref[i]:
            j = i
            while j < end and ref[j]:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _random_buf(rng: random.Random, nbits: int, density: float) -> bytearray:
    """Random bits with long runs and sparse stretches; garbage in the tail bits past nbits."""
    nbytes = (nbits + 7) // 8
    buf = bytearray(rng.getrandbits(8) for _ in range(nbytes))
    if density in (0.0, 1.0):
        for i in range(nbytes):
            buf[i] = 0xFF if density else 0
    else:
        for _ in range(rng.randint(0, 6)):  # long all-0 / all-1 stretches to hit the 64-bit word paths
            s = rng.randrange(nbits)
            e = min(nbits, s + rng.randint(0, 3000))
            for p in range(s, e):
                if density < 0.5:
                    buf[p >> 3] &= ~(1 << (p & 7)) & 0xFF
                else:
                    buf[p >> 3] |= 1 << (p & 7)
    if nbits % 8:  # bits past nbits are never reported
        buf[-1] |= (0xFF << (nbits % 8)) & 0xFF if density >= 0.5 else 0
    return buf


def _ranges(rng: random.Random, nbits: int) -> list[tuple[int, int]]:
    out = [(0, nbits), (0, 0), (nbits, nbits), (nbits // 2, nbits // 2), (-5, nbits + 100), (nbits + 3, nbits + 9),
           (5, 2), (-10, -1), (1, nbits), (0, nbits - 1)]
    for _ in range(25):
        s = rng.randint(-3, nbits + 3)
        out.append((s, s + rng.randint(0, 140)))
        out.append((s, rng.randint(s, nbits + 20)))
    return out


@pytest.mark.parametrize("nbits", SIZES)
@pytest.mark.parametrize("density", [0.0, 0.3, 0.7, 1.0])
def test_bits_kernels_match_reference(nbits, density):
    rng = random.Random(nbits * 10 + int(density * 10))
    buf = _random_buf(rng, nbits, density)
    ref = _ref_bits(buf, nbits)
    for s, e in _ranges(rng, nbits):
        cs, ce = max(s, 0), min(e, nbits)
        assert cbits.count(buf, nbits, s, e) == (sum(ref[cs:ce]) if cs < ce else 0), (s, e)
        assert cbits.runs(buf, nbits, s, e) == _ref_runs(ref, s, e), (s, e)
        assert cbits.runs(bytes(buf), nbits, s, e) == _ref_runs(ref, s, e)  # read-only buffers are fine
    positions = list(range(-2, min(nbits, 80) + 3)) + [rng.randint(0, nbits) for _ in range(40)] + [nbits, nbits + 50]
    for pos in positions:
        p = max(pos, 0)
        exp_set = next((i for i in range(p, nbits) if ref[i]), nbits)
        assert cbits.next_set(buf, nbits, pos) == exp_set, pos


@pytest.mark.parametrize("nbits", SIZES)
def test_bits_set_clear_range_match_reference(nbits):
    rng = random.Random(nbits)
    buf = _random_buf(rng, nbits, 0.3)
    tail_mask = (0xFF << (nbits % 8)) & 0xFF if nbits % 8 else 0
    tail0 = buf[-1] & tail_mask
    ref = _ref_bits(buf, nbits)
    for s, e in _ranges(rng, nbits):
        v = rng.random() < 0.5
        (cbits.set_range if v else cbits.clear_range)(buf, nbits, s, e)
        for p in range(max(s, 0), min(e, nbits)):
            ref[p] = int(v)
        assert _ref_bits(buf, nbits) == ref, (s, e, v)
        assert buf[-1] & tail_mask == tail0  # never writes past nbits
        assert len(buf) == (nbits + 7) // 8


def test_bits_reject_nbits_past_buffer():
    with pytest.raises(ValueError):
        cbits.count(bytearray(2), 17, 0, 17)
    with pytest.raises(ValueError):
        cbits.set_range(bytearray(2), -1, 0, 1)
    with pytest.raises((TypeError, ValueError, BufferError)):
        cbits.set_range(b"\0\0", 16, 0, 3)  # read-only
    assert cbits.count(bytearray(0), 0, 0, 10) == 0
    assert cbits.next_set(bytearray(0), 0, 0) == 0
    assert cbits.runs(bytearray(0), 0, 0, 10) == []
    assert cbits.count(bytearray(3), 17, 0, 17) == 0  # a larger buffer is fine


@pytest.mark.parametrize("nbits", SIZES)
def test_bitmap_methods_on_odd_sizes(nbits):
    rng = random.Random(nbits + 1)
    bm = Bitmap(nbits)
    assert isinstance(bm.bits, bytearray) and len(bm.bits) == (nbits + 7) // 8
    ref = [0] * nbits
    for _ in range(20):
        s = rng.randint(-2, nbits + 2)
        e = rng.randint(s, nbits + 30)
        v = rng.random() < 0.6
        (bm.set_range if v else bm.clear_range)(s, e)
        for p in range(max(s, 0), min(e, nbits)):
            ref[p] = int(v)
    for pfn in [rng.randrange(nbits) for _ in range(10)]:
        bm.set(pfn) if rng.random() < 0.5 else bm.clear(pfn)
        ref[pfn] = int(bm.test(pfn))
    assert [int(bm.test(p)) for p in range(nbits)] == ref
    assert not bm.test(-1) and not bm.test(nbits)
    assert bm.count() == sum(ref)
    assert list(bm.runs()) == _ref_runs(ref, 0, nbits)
    for pos in [0, nbits // 3, nbits - 1, nbits, nbits + 5]:
        assert bm.next_set(pos) == next((i for i in range(pos, nbits) if ref[i]), nbits)
    assert bm.tobytes() == bytes(bm.bits)
    assert bm.tobytes(len(bm.bits) + 5) == bytes(bm.bits) + b"\0" * 5
    cp = bm.copy()
    cp.clear_range(0, nbits)
    assert cp.count() == 0 and bm.count() == sum(ref)
    raw = bytes(bm.bits) + b"\xff\xff"
    fb = Bitmap.from_bytes(nbits, bytearray(b"\xff" * len(bm.bits)))
    assert fb.count() == nbits and len(fb.bits) == len(bm.bits)
    assert Bitmap.from_bytes(nbits, raw).tobytes() == bm.tobytes()
    assert Bitmap.from_bytes(nbits, memoryview(raw)).count() == sum(ref)
    with pytest.raises(ValueError):
        Bitmap.from_bytes(nbits + 8, bytes(bm.bits))


def test_bitmap_accepts_numpy_and_caller_buffers():
    arr = np.zeros(20, dtype=np.uint8)  # a caller's larger numpy array is used in place
    bm = Bitmap(130, arr)
    assert bm.bits is arr
    bm.set_range(3, 77)
    bm.set(129)
    assert arr[0] == 0xF8 and bm.count() == 75 and list(bm.runs()) == [(3, 77), (129, 130)]
    assert _bools(bm, 130).sum() == 75 and bm.next_set(78) == 129
    bm.clear_range(8, 16)
    assert arr[1] == 0 and bm.count() == 67
    assert bm.tobytes() == arr[:17].tobytes()
    assert bm.copy().tobytes()[:17] == arr[:17].tobytes()
    ba = bytearray(17)
    bm2 = Bitmap(130, ba)
    bm2.set_range(0, 130)
    assert ba[:16] == b"\xff" * 16 and ba[16] == 3
    with pytest.raises(ValueError):
        Bitmap(130, np.zeros(16, dtype=np.uint8))
    with pytest.raises(ValueError):
        Bitmap(130, bytearray(16))


def test_bitmap_is_writable_uint8_for_classify_section():
    """_speedups/classify.pyx takes bitmap2.bits as a writable uint8_t[::1]: a bytearray must do."""
    mv = memoryview(Bitmap(100).bits)
    assert mv.format == "B" and not mv.readonly and mv.contiguous


def test_bitmap_import_does_not_import_numpy():
    import subprocess
    import sys

    code = "import sys, dumpfilter.bitmap; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
