"""The C page reader of the compression stage (_speedups/reader.pyx): mmap and pread give the
same pages as the Python reader, on layouts with partial pages, p_filesz < p_memsz, slack bytes and
segments that are not page aligned in the file; a read error ends in one line and an incomplete file."""
from __future__ import annotations

import os

import pytest

from dumpfilter._speedups.compress import BatchCompressor
from dumpfilter._speedups.reader import DirectReader, RunReader
from dumpfilter._speedups.window import WindowBuffers
from dumpfilter.bitmap import Bitmap
from dumpfilter.source import open_source
from tests.helpers import KdumpFile, run

LAYOUTS = {
    "proc-slack": dict(ram=[(0x1000, 0x9FC00), (0x100000, 0x2345678)], slack_garbage=True,
                       nodata=[(0x2000000, 0x2345678)]),
    "packed": dict(ram=[(0x1000, 0x9FC00), (0x100000, 0x1800000), (0x1800800, 0x2000000)], layout="packed"),
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def core(request, tmp_path_factory):
    from fixtures.synthetic import SynthSpec, generate

    path = tmp_path_factory.mktemp("reader") / f"vmcore-{request.param}"
    return generate(path, SynthSpec(**LAYOUTS[request.param]))


def _window_pages(src, bm: Bitmap, reader) -> list[bytes]:
    """Every page the reader reads for the set bits of ``bm``, codec none, zero pages kept."""
    ps = src.page_size
    comp = BatchCompressor(0, ps)
    wb = WindowBuffers(512, ps)
    pages: list[bytes] = []
    pos = bm.next_set(0)
    while pos < bm.nbits:
        end = min(pos + 512, bm.nbits)
        reader.read_window(bm.bits, pos, end, 0, wb)
        comp.compress_window(wb, False)
        assert wb.used == wb.count * ps
        out = bytes(wb.out[: wb.used])
        pages += [out[i * ps : (i + 1) * ps] for i in range(wb.count)]
        pos = bm.next_set(end)
    return pages


def test_mmap_pread_and_python_reads_agree(core):
    src = open_source(core.path)
    try:
        bm = src.present_bitmap(partial_last=True)  # partial pages too: the slow path
        want = [src.read_page(p) for s, e in bm.runs() for p in range(s, e)]
        assert len(want) > 1000
        assert isinstance(src.window_reader(True), DirectReader)
        for reader in (src.window_reader(True), src.window_reader(False)):
            assert _window_pages(src, bm, reader) == want
        assert _window_pages(src, bm, RunReader(src.read_pages)) == want
        # a pattern of single pages and short runs: many runs per window, one mapping per extent
        sparse = Bitmap(bm.nbits)
        for s, e in bm.runs():
            for p in range(s, e):
                if p % 7 in (0, 3, 4) or p % 101 == 5:
                    sparse.set(p)
        want = [src.read_page(p) for s, e in sparse.runs() for p in range(s, e)]
        assert _window_pages(src, sparse, src.window_reader(True)) == want
    finally:
        src.close()


def test_non_mmap_output_is_identical(core, tmp_path):
    outs = []
    for extra in ([], ["--non-mmap"], ["--num-threads", "2"]):
        out = tmp_path / f"d{len(outs)}"
        r = run(["-l", "-d", "1", *extra, core.path, out])
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    kd = KdumpFile.load(str(tmp_path / "d0"))
    for pfn in kd.dumped_pfns()[::13].tolist():
        assert kd.page(pfn) == core.page(pfn)


@pytest.mark.parametrize("use_mmap", [False, True], ids=["pread", "mmap"])
def test_read_error_is_one_line_and_incomplete(core, tmp_path, use_mmap):
    """The vmcore shrinks after the headers were checked: pread hits the end of the file; a mapping
    would end the process with SIGBUS, so the reader checks the file's size first."""
    src = open_source(core.path)
    try:
        ranges = src.read_index
        bm = src.dumpable_bitmap()
        last = max(e for s, e in bm.runs())
        cut = tmp_path / "cut"
        with open(core.path, "rb") as f:
            data = f.read()
        cut.write_bytes(data[: ranges[-1][2] + 4096])  # the last extent keeps one page
        fd2 = os.open(cut, os.O_RDONLY)
        try:
            reader = DirectReader(fd2, ranges, use_mmap)
            wb = WindowBuffers(512, src.page_size)
            with pytest.raises(OSError):
                reader.read_window(bm.bits, max(0, last - 512), last, 0, wb)
        finally:
            os.close(fd2)
    finally:
        src.close()
