"""Issue 3 on a real Linux 6.1 vmcore: every codec at -d 0 and -d 1 against Debian's makedumpfile 1.7.2
and drgn; flattened streams both ways; refiltering; -E; QEMU's own ELF dumps."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ElfCore, KdumpFile, drgn_program, makedumpfile, run, runs_of, scratch_dir

CODECS = {"zlib": "-c", "lzo": "-l", "snappy": "-p", "zstd": "-z"}
FLAGS = {"zlib": 1, "lzo": 2, "snappy": 4, "zstd": 0x20}


@pytest.fixture(scope="module")
def vmcore61(core_61):
    return str(core_61 / "vmcore")


@pytest.fixture(scope="module")
def mdf_outputs(vmcore61, tmp_path_factory):
    """makedumpfile 1.7.2's files, one per (codec, level); it lacks snappy and zstd (then raw pages)."""
    with scratch_dir(tmp_path_factory, "mdf") as d:
        out = {}
        for codec, flag in CODECS.items():
            for level in (0, 1):
                path = d / f"{codec}.{level}"
                r = makedumpfile([flag, "-d", level, vmcore61, path])
                assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
                out[codec, level] = KdumpFile.load(str(path))
        yield out


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", list(CODECS))
def test_codec_level_against_makedumpfile_and_drgn(vmcore61, mdf_outputs, tmp_path, codec, level):
    out = tmp_path / "dump"
    r = run([CODECS[codec], "-d", level, vmcore61, out])
    assert r.returncode == 0, r.stderr.decode()
    ours = KdumpFile.load(str(out))
    ref = mdf_outputs[codec, level]
    assert ours.max_mapnr == ref.max_mapnr
    assert (ours.bitmap1 == ref.bitmap1).all(), "1st bitmap differs from makedumpfile's"
    assert (ours.bitmap2 == ref.bitmap2).all(), "2nd bitmap differs from makedumpfile's"
    assert set(ours.zero_pfns().tolist()) == set(ref.zero_pfns().tolist())
    assert ours.utsname == ref.utsname and ours.nr_cpus == ref.nr_cpus == 2
    assert ours.tv_sec == ref.tv_sec and ours.phys_base == ref.phys_base
    assert ours.notes == ref.notes and ours.dump_level == ref.dump_level == level
    assert ours.status == FLAGS[codec]
    # every dumped page: equal to the vmcore's (read independently) and to drgn's view of our file
    core = ElfCore(vmcore61)
    prog = drgn_program(str(out))
    ps = 4096
    pfns = ours.dumped_pfns()
    assert pfns.size > 100000
    for s, e in runs_of(pfns):
        want = core.read_phys(s * ps, (e - s) * ps)
        assert prog.read(s * ps, (e - s) * ps, True) == want, f"drgn pfns {s:#x}-{e:#x}"
    # spot-check our decoding against makedumpfile's page contents
    for pfn in pfns[:: max(1, pfns.size // 500)].tolist():
        assert ours.page(pfn) == ref.page(pfn)


def test_our_flat_stream_rearranged_by_makedumpfile(vmcore61, tmp_path):
    direct = tmp_path / "direct"
    assert run(["-l", "-d", "1", vmcore61, direct]).returncode == 0
    stream = run(["-F", "-l", "-d", "1", vmcore61])
    assert stream.returncode == 0
    mk = tmp_path / "mk"
    r = makedumpfile(["-R", mk], input=stream.stdout)
    assert r.returncode == 0, r.stderr.decode()
    assert mk.read_bytes() == direct.read_bytes()
    ours = tmp_path / "ours"
    assert run(["-R", ours], stdin=stream.stdout).returncode == 0
    assert ours.read_bytes() == direct.read_bytes()


def test_makedumpfile_flat_stream_rearranged_by_us(vmcore61, tmp_path):
    s = makedumpfile(["-F", "-l", "-d", "31", vmcore61])
    assert s.returncode == 0, s.stderr.decode()
    theirs = tmp_path / "theirs"
    assert makedumpfile(["-R", theirs], input=s.stdout).returncode == 0
    ours = tmp_path / "ours"
    r = run(["-R", ours], stdin=s.stdout)
    assert r.returncode == 0, r.stderr.decode()
    assert ours.read_bytes() == theirs.read_bytes()


def test_makedumpfile_refilters_our_file(vmcore61, tmp_path):
    ours = tmp_path / "ours"
    assert run(["-c", "-d", "1", vmcore61, ours]).returncode == 0
    refiltered = tmp_path / "refiltered"
    r = makedumpfile(["-l", "-d", "31", ours, refiltered])
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    direct = tmp_path / "direct"
    assert makedumpfile(["-l", "-d", "31", vmcore61, direct]).returncode == 0
    a, b = KdumpFile.load(str(refiltered)), KdumpFile.load(str(direct))
    assert (a.bitmap1 == b.bitmap1).all() and (a.bitmap2 == b.bitmap2).all()
    assert set(a.zero_pfns().tolist()) == set(b.zero_pfns().tolist())
    pfns = a.dumped_pfns()
    for pfn in pfns[:: max(1, pfns.size // 300)].tolist():
        assert a.page(pfn) == b.page(pfn)


def test_elf_output_opens_in_drgn(vmcore61, tmp_path):
    out = tmp_path / "dump.elf"
    r = run(["-E", "-d", "1", vmcore61, out])
    assert r.returncode == 0, r.stderr.decode()
    elf = ElfCore(str(out))
    core = ElfCore(vmcore61)
    prog = drgn_program(str(out))
    kept = 0
    for pa, fs, ms, off, va in elf.loads:
        assert fs <= ms
        if fs:
            want = core.read_phys(pa, fs)
            assert elf.read_phys(pa, fs) == want
            assert prog.read(pa, fs, True) == want
            kept += fs
    zero_pages = 0
    for pa, fs, ms, off, va in elf.loads:
        first = -(-pa // 4096)
        for pfn in range(first, (pa + fs) // 4096):
            if core.read_phys(pfn * 4096, 4096) == bytes(4096):
                zero_pages += 1
    assert zero_pages == 0, "zero pages were written to the -E file at -d 1"
    assert kept > 50 << 20


def test_qemu_elf_dump_is_readable(core_qemu_61, tmp_path):
    vmcore = str(core_qemu_61 / "vmcore")
    out = tmp_path / "dump"
    r = run(["-l", "-d", "1", vmcore, out])
    assert r.returncode == 0, r.stderr.decode()
    kd = KdumpFile.load(str(out))
    assert kd.utsname[130:135] == b"6.1.0"  # release read from init_uts_ns
    core = ElfCore(vmcore)
    prog = drgn_program(str(out))
    pfns = kd.dumped_pfns()
    for s, e in runs_of(pfns)[:2000]:
        assert prog.read(s * 4096, (e - s) * 4096, True) == core.read_phys(s * 4096, (e - s) * 4096)
