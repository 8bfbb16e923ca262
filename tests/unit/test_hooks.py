"""Page hooks (codec/hooks.py): a hook over a pfn range changes exactly those pages' contents between
reading and compressing, with any number of threads; without a hook the output is the plain dump."""
from __future__ import annotations

import pytest

from dumpfilter.codec.hooks import PageHook
from dumpfilter.codec.pool import Compression
from dumpfilter.job import DumpJob
from dumpfilter.plan import build_plan
from dumpfilter.report import Messages
from dumpfilter.source import open_source
from dumpfilter.stats import Stats
from dumpfilter.writer.kdump import KdumpWriter
from dumpfilter.writer.sink import FileSink
from tests.helpers import KdumpFile


def _dump(vmcore: str, out: str, hooks: tuple[PageHook, ...], threads: int) -> Stats:
    job = DumpJob(vmcore=vmcore, dumpfile=out, compress="lzo", levels=[1], num_threads=threads)
    src = open_source(vmcore)
    try:
        stats = Stats()
        plan = build_plan(job, src, 1, Messages(0), stats)
        c = plan.compression
        plan.compression = Compression(c.page_size, c.codec, c.exclude_zero, threads, hooks)
        sink = FileSink(out)
        KdumpWriter(plan, sink, Messages(0), stats).write()
        sink.finish()
        return stats
    finally:
        src.close()


@pytest.mark.parametrize("threads", [0, 2])
def test_hook_changes_exactly_its_range(synth, tmp_path, threads):
    ps = 4096
    lo, hi = 0x1800, 0x1a40  # crosses window boundaries; holds zero and non-zero pages
    calls: list[list[int]] = []

    def erase(pfns: list[int], pages: memoryview) -> None:
        assert len(pages) == len(pfns) * ps
        assert all(lo <= p < hi for p in pfns)
        calls.append(pfns)
        pages[:] = b"X" * len(pages)

    plain = _dump(synth.path, str(tmp_path / "plain"), (), threads)
    hooked = _dump(synth.path, str(tmp_path / "hooked"), (PageHook(lo, hi, erase, "erase"),), threads)
    ref, got = KdumpFile.load(str(tmp_path / "plain")), KdumpFile.load(str(tmp_path / "hooked"))
    seen = sorted(p for c in calls for p in c)
    assert seen == sorted(set(seen)), "a page was given to the hook twice"
    in_range = [p for p in range(lo, hi) if ref.bitmap2[p]]
    assert seen == in_range and len(in_range) > 300
    # zero pages of the range are no longer zero: they are stored as pages of 'X'
    zero_in_range = [p for p in in_range if p in set(ref.zero_pfns().tolist())]
    assert zero_in_range, "the range should hold zero pages"
    assert hooked.zero == plain.zero - len(zero_in_range)
    for p in in_range:
        assert got.page(p) == b"X" * ps
    for p in ref.dumped_pfns()[::37].tolist():
        if not lo <= p < hi:
            assert got.page(p) == ref.page(p) == synth.page(p)


def test_no_hook_leaves_the_bytes_alone(synth, tmp_path):
    """A hook whose range holds no page is never called and the file equals the plain one."""
    _dump(synth.path, str(tmp_path / "a"), (), 0)
    called = []
    _dump(synth.path, str(tmp_path / "b"), (PageHook(1 << 40, 1 << 41, lambda p, b: called.append(p)),), 0)
    assert not called
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
