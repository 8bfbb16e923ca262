"""--split and --reassemble on synthetic vmcores (formats-cli.md §4): the set joins back into exactly
the unsplit file, with our --reassemble and with makedumpfile's; the ranges balance the dumpable pages;
a set that does not belong together is refused in one line."""
from __future__ import annotations

import struct

import pytest

from tests.helpers import KdumpFile, error_lines, makedumpfile, run

SUB = struct.Struct("<QiiQQqQqQqQQQQ")


def _sub(path):
    raw = open(path, "rb").read(4096 + SUB.size)
    return SUB.unpack_from(raw, 4096)


@pytest.mark.parametrize("n, opts", [(2, ["-l", "-d", "31"]), (3, ["-z", "-d", "1"]), (4, ["-c", "-d", "0"]),
                                     (2, ["-l", "-d", "31", "--num-threads", "2"])])
def test_split_set_reassembles_to_the_unsplit_file(synth, tmp_path, n, opts):
    whole = tmp_path / "whole"
    assert run([*opts, synth.path, whole]).returncode == 0
    parts = [tmp_path / f"part{i}" for i in range(n)]
    r = run(["--split", *opts, "--splitblock-size", "4096", synth.path, *parts])
    assert r.returncode == 0, r.stderr.decode()
    assert b"The dumpfiles are saved to " + b", ".join(str(p).encode() for p in parts[:-1]) in r.stdout
    ranges = [(_sub(p)[11], _sub(p)[12]) for p in parts]
    assert ranges[0][0] == 0 and ranges[-1][1] == KdumpFile.load(str(whole)).max_mapnr
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(_sub(p)[2] == 1 for p in parts)  # sub header: split
    heads = {open(p, "rb").read(464) for p in parts}
    assert heads == {open(whole, "rb").read(464)}  # the same main header in every file
    # the pages are shared out: every file but the last has about num_dumpable / n of them
    kd = KdumpFile.load(str(whole))
    counts = [int(kd.bitmap2[a:b].sum()) for a, b in ranges]
    assert sum(counts) == int(kd.bitmap2.sum()) and all(c > 0 for c in counts)
    joined = tmp_path / "joined"
    r = run(["--reassemble", *reversed(parts), joined])  # any order
    assert r.returncode == 0, r.stderr.decode()
    assert joined.read_bytes() == whole.read_bytes()
    mjoined = tmp_path / "mjoined"
    r = makedumpfile(["--reassemble", *parts, mjoined])
    assert r.returncode == 0, r.stdout + r.stderr
    assert mjoined.read_bytes() == whole.read_bytes()


def test_ranges_are_makedumpfiles(synth, tmp_path):
    ours = [tmp_path / f"o{i}" for i in range(3)]
    theirs = [tmp_path / f"m{i}" for i in range(3)]
    assert run(["--split", "-l", "-d", "31", "--splitblock-size", "8192", synth.path, *ours]).returncode == 0
    r = makedumpfile(["--split", "-l", "-d", "31", "--splitblock-size", "8192", synth.path, *theirs])
    assert r.returncode == 0, r.stdout + r.stderr
    assert [_sub(p)[11:13] for p in ours] == [_sub(p)[11:13] for p in theirs]


def test_sets_that_do_not_belong_together(synth, synth_novmci, tmp_path):
    a = [tmp_path / f"a{i}" for i in range(2)]
    b = [tmp_path / f"b{i}" for i in range(2)]
    assert run(["--split", "-l", "-d", "1", "--splitblock-size", "4096", synth.path, *a]).returncode == 0
    assert run(["--split", "-l", "-d", "1", synth_novmci.path, *b]).returncode == 0
    whole = tmp_path / "whole"
    assert run(["-l", "-d", "1", synth.path, whole]).returncode == 0
    for parts, said in (([a[0]], b"There is not dumpfile corresponding to pfn"),
                        ([a[0], b[1]], b"Invalid dumpfile"),
                        ([a[0], whole], b"is not a part of a --split set"),
                        ([a[0], a[0]], b"There is not dumpfile corresponding to pfn")):
        out = tmp_path / "out"
        r = run(["--reassemble", *parts, out])
        assert r.returncode == 1 and said in r.stderr, r.stderr
        assert len(error_lines(r.stderr)) == 1
        assert not out.exists()


@pytest.mark.parametrize("bad", [["-E"], ["-F"]])
def test_split_refuses_other_formats(synth, tmp_path, bad):
    r = run(["--split", *bad, "-d", "1", synth.path, tmp_path / "x", tmp_path / "y"])
    assert r.returncode == 1 and b"--split" in r.stderr
    assert not (tmp_path / "x").exists()
