"""Microbenchmarks of the Cython kernels (pytest-benchmark; not run by the test suite).

    .venv/bin/python -m pytest benchmarks/ --benchmark-only

Pages come from a synthetic vmcore with mixed content (text, pointer tables, random, zero pages).
"""
from __future__ import annotations

import numpy as np
import pytest

from dumpfilter._speedups.classify import classify_section
from dumpfilter._speedups.compress import BatchCompressor
from dumpfilter._speedups.window import WindowBuffers
from dumpfilter.kernel.pagetypes import derive
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo

PS = 4096
N = 1024


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    from fixtures.synthetic import SynthSpec, generate

    return generate(tmp_path_factory.mktemp("b") / "core", SynthSpec(ram=[(0x100000, 0x4000000)]))


def _first_window(src):
    bm = src.dumpable_bitmap()
    start = bm.next_set(0)
    return bm, start


def test_zero_test_window(benchmark, core):
    """Read one 512-page window from the file and test each page for zero (the -E / --mem-usage pass)."""
    from dumpfilter.source import open_source

    src = open_source(core.path)
    bm, start = _first_window(src)
    reader = src.window_reader(True)
    wb = WindowBuffers(512, PS)

    def window():
        reader.read_window(bm.bits, start, start + 512, 0, wb)
        wb.zero_test()
        wb.release()

    benchmark(window)
    want = sum(src.read_page(p) == bytes(PS) for p in range(start, start + 512) if bm.test(p))
    assert wb.nzero == want and wb.count == 512
    src.close()


@pytest.mark.parametrize("codec", [1, 2, 4, 0x20], ids=["zlib", "lzo", "snappy", "zstd"])
def test_compress_window_per_codec(benchmark, core, codec):
    """Read and compress one 512-page window per codec (zero pages excluded)."""
    from dumpfilter.source import open_source

    src = open_source(core.path)
    bm, start = _first_window(src)
    reader = src.window_reader(True)
    comp = BatchCompressor(codec, PS)
    wb = WindowBuffers(512, PS)

    def window():
        reader.read_window(bm.bits, start, start + 512, 0, wb)
        comp.compress_window(wb, True)

    benchmark(window)
    assert wb.count == 512 and 0 < wb.used < (512 - wb.nzero) * PS
    assert all(f == codec or s in (-1, PS) for f, s in zip(wb.flags[::4], wb.sizes_list()))
    src.close()


def test_classify_section(benchmark):
    vi = VmcoreInfo.parse(
        b"SIZE(page)=64\nOFFSET(page.flags)=0\nOFFSET(page.mapping)=24\nOFFSET(page._mapcount)=48\n"
        b"OFFSET(page.private)=40\nOFFSET(page.compound_head)=8\nNUMBER(PG_lru)=5\nNUMBER(PG_private)=14\n"
        b"NUMBER(PG_swapcache)=10\nNUMBER(PG_swapbacked)=17\nNUMBER(PG_head_mask)=64\n"
        b"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456\nNUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-184549376\n"
        b"NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-201326592\nLENGTH(zone.free_area)=11\n"
    )
    params = derive(vi).params
    rng = np.random.default_rng(1)
    n = 1 << 15
    sp = np.zeros((n, 64), dtype=np.uint8)
    kinds = rng.integers(0, 4, n)
    flags = np.where(kinds == 1, 1 << 5, 0).astype("<u8")  # LRU
    sp[:, 0:8] = flags.view(np.uint8).reshape(n, 8)
    mapping = np.where(kinds == 2, 0xFFFF888000000001, 0).astype("<u8")
    sp[:, 24:32] = mapping.view(np.uint8).reshape(n, 8)
    mc = np.where(kinds == 3, 0xF0000000, 0xFFFFFFFF).astype("<u4")
    sp[:, 48:52] = mc.view(np.uint8).reshape(n, 4)
    raw = sp.reshape(-1).copy()
    counts = np.zeros(7, dtype=np.int64)

    def run():
        counts[:] = 0
        bm = np.full(n // 8, 0xFF, dtype=np.uint8)
        classify_section(raw, 0, n, params, 31, bm, n, counts)
        return bm

    bm = benchmark(run)
    kept = np.unpackbits(bm, bitorder="little").astype(bool)
    assert (kept == (kinds == 0)).all(), "only the plain kernel pages stay"
    assert counts[1] == (kinds == 1).sum() and counts[3] == (kinds == 2).sum() and counts[0] == (kinds == 3).sum()


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "pread"])
def test_compress_window(benchmark, core, use_mmap):
    """The writer's hot path: read one 512-page window of the 2nd bitmap from the file, zero-test and
    LZO-compress it (zero pages excluded)."""
    from dumpfilter.source import open_source

    src = open_source(core.path)
    bm = src.dumpable_bitmap()
    start = bm.next_set(0)
    reader = src.window_reader(use_mmap)
    comp = BatchCompressor(2, PS)
    wb = WindowBuffers(512, PS)

    def window():
        reader.read_window(bm.bits, start, start + 512, 0, wb)
        comp.compress_window(wb, True)

    benchmark(window)
    assert wb.count == 512 and 0 < wb.used < 512 * PS
    want_zero = sum(src.read_page(p) == bytes(PS) for p in range(start, start + 512) if bm.test(p))
    assert wb.nzero == want_zero
    src.close()
