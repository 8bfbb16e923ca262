"""Cyclic mode: bitmaps built one cycle at a time give the same dump as one big cycle, and the same
bitmaps as makedumpfile 1.7.2 run with the same --cyclic-buffer (filtering.md §6, formats-cli.md §1.5)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from fixtures import synthetic as S
from tests.helpers import KdumpFile, run


@pytest.fixture(scope="module")
def core3g(tmp_path_factory):
    """A sparse 6.1-era core of 3 GiB with real struct pages in 24 sections: 3 cycles of 1 GiB."""
    path = tmp_path_factory.mktemp("cyc") / "vmcore"
    return S.generate(path, S.SynthSpec(pages="kernel61", seed=5, content="sparse",
                                        ram=[(0x1000, 0x9FC00), (0x100000, 0xC0000000)]))


@pytest.mark.parametrize("level", [1, 31])
def test_cycles_equal_one_pass(core3g, tmp_path, level):
    one, many = tmp_path / "one", tmp_path / "many"
    assert run(["-l", "-d", level, core3g.path, one]).returncode == 0
    r = run(["-l", "-d", level, "--cyclic-buffer", "32", "--num-threads", "2", core3g.path, many])
    assert r.returncode == 0, r.stderr.decode()
    a, b = KdumpFile.load(str(one)), KdumpFile.load(str(many))
    assert core3g.max_mapnr > 2 * (32 * 1024 * 8)  # really several cycles
    assert (a.bitmap2 == b.bitmap2).all()
    # the only difference cyclic mode makes: the partial last page of [0x1000, 0x9fc00) in the 1st bitmap
    assert np.flatnonzero(a.bitmap1 != b.bitmap1).tolist() == [0x9F]
    assert a.bitmap1[0x9F] and not b.bitmap1[0x9F]
    assert (a.descs["size"] == b.descs["size"]).all() and (a.descs["flags"] == b.descs["flags"]).all()
    for pfn in b.dumped_pfns()[::101].tolist():
        assert b.page(pfn) == core3g.page(pfn)


def test_cycles_match_makedumpfile_cyclic(core3g, tmp_path):
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    assert run(["-l", "-d", "31", "--cyclic-buffer", "32", core3g.path, ours]).returncode == 0
    r = subprocess.run(["makedumpfile", "-l", "-d", "31", "--cyclic-buffer", "32", core3g.path, str(ref)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    a, b = KdumpFile.load(str(ours)), KdumpFile.load(str(ref))
    assert (a.bitmap1 == b.bitmap1).all()
    assert (a.bitmap2 == b.bitmap2).all()
    assert set(a.zero_pfns().tolist()) == set(b.zero_pfns().tolist())
