"""--num-threads applies to every stage (classification, reading, zero test, compression, refiltering,
-E, --split) and the output bytes never depend on it (N = 0, 1, 2, 4, every format)."""
from __future__ import annotations

import pytest

from fixtures.synthetic import SynthSpec, generate
from tests.helpers import run

FORMATS = {
    "kdump-lzo-31": ["-l", "-d", "31"],
    "kdump-zstd-1": ["-z", "-d", "1"],
    "kdump-none-0": ["-d", "0"],
    "elf-31": ["-E", "-d", "31"],
    "elf-1": ["-E", "-d", "1"],
    "flat-31": ["-F", "-l", "-d", "31"],
}


@pytest.fixture(scope="module")
def core61(tmp_path_factory):
    """A 6.1-era synthetic vmcore with struct pages of every kind, in several sections."""
    return generate(tmp_path_factory.mktemp("thr") / "vmcore", SynthSpec(pages="kernel61", ram=[(0x1000, 0x9FC00),
                                                                                          (0x100000, 0x10000000)]))


def _output(opts, vm, out, threads):
    flat = "-F" in opts
    args = [*opts, "--num-threads", str(threads), vm] + ([] if flat else [out])
    r = run(args)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout if flat else out.read_bytes()


@pytest.mark.parametrize("name", list(FORMATS))
def test_output_does_not_depend_on_threads(core61, tmp_path, name):
    outs = [_output(FORMATS[name], core61.path, tmp_path / f"o{n}", n) for n in (0, 1, 2, 4)]
    assert len(outs[0]) > 4096
    assert all(o == outs[0] for o in outs[1:])


def test_refilter_and_split_do_not_depend_on_threads(core61, tmp_path):
    src = tmp_path / "d1"
    assert run(["-c", "-d", "1", core61.path, src]).returncode == 0
    outs = [_output(["-l", "-d", "31"], src, tmp_path / f"r{n}", n) for n in (0, 1, 2, 4)]
    assert all(o == outs[0] for o in outs[1:])
    sets = []
    for n in (0, 2, 4):
        parts = [tmp_path / f"s{n}-{i}" for i in range(3)]
        r = run(["--split", "-l", "-d", "31", "--splitblock-size", "16384", "--num-threads", str(n), core61.path, *parts])
        assert r.returncode == 0, r.stderr.decode()
        sets.append([p.read_bytes() for p in parts])
    assert sets[0] == sets[1] == sets[2]
