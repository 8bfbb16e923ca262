"""kdump-compressed output on synthetic vmcores: layout, pages, zero pages, codecs, -F/-R, refilter."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.helpers import KdumpFile, drgn_program, error_lines, file_mode, run

CODECS = {"none": [], "zlib": ["-c"], "lzo": ["-l"], "snappy": ["-p"], "zstd": ["-z"]}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("level", [0, 1])
def test_every_page_reads_back(synth, tmp_path, codec, level):
    out = tmp_path / "dump"
    r = run(CODECS[codec] + ["-d", str(level), synth.path, out])
    assert r.returncode == 0, r.stderr.decode()
    kd = KdumpFile.load(str(out))
    ps = synth.page_size
    # 1st bitmap: PT_LOAD coverage with a partial last page marked (makedumpfile's non-cyclic mode);
    # 2nd bitmap: whole pages only
    expect1 = np.zeros(synth.max_mapnr, dtype=bool)
    expect2 = np.zeros(synth.max_mapnr, dtype=bool)
    for s in synth.loads:
        expect1[s.paddr // ps : -(-(s.paddr + s.memsz) // ps)] = True
        expect2[s.paddr // ps : (s.paddr + s.memsz) // ps] = True
    assert (kd.bitmap1 == expect1).all()
    assert (kd.bitmap2 == expect2).all()
    assert expect1.sum() == expect2.sum() + 1  # the [0x1000, 0x9fc00) segment's last page
    assert kd.max_mapnr == synth.max_mapnr
    assert kd.nr_cpus == synth.nr_cpus == 2
    assert kd.utsname == synth.utsname
    assert kd.tv_sec == synth.crashtime
    assert kd.dump_level == level
    assert kd.phys_base == synth.phys_base & (2**64 - 1)
    assert kd.notes == synth.notes
    vmci = open(out, "rb").read()[kd.offset_vmcoreinfo : kd.offset_vmcoreinfo + kd.size_vmcoreinfo]
    assert vmci.rstrip(b"\0").decode() == synth.vmcoreinfo.rstrip("\0")
    flag = {"none": 0, "zlib": 1, "lzo": 2, "snappy": 4, "zstd": 0x20}[codec]
    assert kd.status == flag  # incomplete bit cleared at the end
    zero = set(kd.zero_pfns().tolist())
    if level & 1:
        assert zero == set(synth.zero_pfns.tolist()) & set(kd.dumped_pfns().tolist())
        assert len(zero) > 100
    else:
        assert not zero
    # raw pages have size == page size; compressed ones are strictly smaller and use the codec flag
    d = kd.descs
    assert ((d["flags"] == 0) | (d["flags"] == flag)).all()
    assert (d["size"][d["flags"] == 0] == ps).all()
    assert (d["size"][d["flags"] != 0] < ps).all()
    if flag:
        assert (d["flags"] == flag).sum() > 0 and (d["flags"] == 0).sum() > 0  # random pages stay raw
    prog = drgn_program(str(out))
    for pfn in kd.dumped_pfns().tolist():
        want = synth.page(pfn)
        assert kd.page(pfn) == want, f"pfn {pfn:#x}"
        assert prog.read(pfn * ps, ps, True) == want, f"drgn pfn {pfn:#x}"


def test_zero_page_written_even_without_zero_pages(synth, tmp_path):
    # an -E -d 1 dump has no zero pages left; refiltering it at -d 1 must still write the shared zero page
    elf = tmp_path / "elf"
    assert run(["-E", "-d", "1", synth.path, elf]).returncode == 0
    out = tmp_path / "dump"
    r = run(["-d", "1", elf, out])
    assert r.returncode == 0, r.stderr.decode()
    kd = KdumpFile.load(str(out))
    assert kd.zero_pfns().size == 0
    raw = open(out, "rb").read()
    assert kd.data_off == (1 + 1 + 2) * 4096 + 24 * kd.descs.size
    assert raw[kd.data_off : kd.data_off + 4096] == bytes(4096)
    assert int(kd.descs["offset"].min()) == kd.data_off + 4096
    assert set(kd.dumped_pfns().tolist()) <= set(synth.nonzero_pfns.tolist())


def test_output_mode_and_overwrite(synth, tmp_path):
    out = tmp_path / "dump"
    assert run(["-d", "1", synth.path, out]).returncode == 0
    assert file_mode(str(out)) == 0o600
    r = run(["-d", "1", synth.path, out])
    assert r.returncode == 1
    assert b"already exists" in r.stderr and len(error_lines(r.stderr)) == 1
    os.chmod(out, 0o644)
    r = run(["-f", "-l", "-d", "1", synth.path, out])
    assert r.returncode == 0
    assert file_mode(str(out)) == 0o600
    assert KdumpFile.load(str(out)).status == 2


@pytest.mark.parametrize("args", [["-l", "-d", "1"], ["-E", "-d", "1"], ["-z", "-d", "0"]])
def test_flat_then_rearrange_is_identical(synth, tmp_path, args):
    direct = tmp_path / "direct"
    assert run(args + [synth.path, direct]).returncode == 0
    r = run(["-F"] + args + [synth.path])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout[:12] == b"makedumpfile"
    assert r.stdout[-16:] == b"\xff" * 16
    rearranged = tmp_path / "rearranged"
    r2 = run(["-R", rearranged], stdin=r.stdout)
    assert r2.returncode == 0, r2.stderr.decode()
    assert open(direct, "rb").read() == open(rearranged, "rb").read()
    assert file_mode(str(rearranged)) == 0o600


def test_refilter_kdump_input(synth, tmp_path):
    first = tmp_path / "d0"
    assert run(["-c", "-d", "0", synth.path, first]).returncode == 0
    second = tmp_path / "d1"
    r = run(["-z", "-d", "1", first, second])
    assert r.returncode == 0, r.stderr.decode()
    a, b = KdumpFile.load(str(first)), KdumpFile.load(str(second))
    assert (a.bitmap1 == b.bitmap1).all() and (a.bitmap2 == b.bitmap2).all()
    assert b.dump_level == 1 and b.status == 0x20
    assert b.notes == a.notes and b.utsname == a.utsname and b.tv_sec == a.tv_sec
    assert set(b.zero_pfns().tolist()) == set(synth.zero_pfns.tolist()) & set(b.dumped_pfns().tolist())
    for pfn in b.dumped_pfns()[::7].tolist():
        assert b.page(pfn) == synth.page(pfn)
    # refiltering to a lower level keeps the input's level (ORed), as makedumpfile does
    third = tmp_path / "d0again"
    r = run(["-d", "0", second, third])
    assert r.returncode == 0 and b"dump_level is changed to 1" in r.stdout
    assert KdumpFile.load(str(third)).dump_level == 1


def test_no_vmcoreinfo_level0_still_works(synth_novmci, tmp_path):
    out = tmp_path / "dump"
    r = run(["-l", "-d", "1", synth_novmci.path, out])
    assert r.returncode == 0, r.stderr.decode()
    assert b"no VMCOREINFO" in r.stdout
    kd = KdumpFile.load(str(out))
    for pfn in kd.dumped_pfns()[::5].tolist():
        assert kd.page(pfn) == synth_novmci.page(pfn)
    r = run(["-d", "31", synth_novmci.path, tmp_path / "d31"])
    assert r.returncode == 1
    assert b"VMCOREINFO" in r.stderr and len(error_lines(r.stderr)) == 1
    assert not (tmp_path / "d31").exists()


def test_dry_run_writes_nothing(synth, tmp_path):
    out = tmp_path / "dump"
    r = run(["--dry-run", "--show-stats", "-l", "-d", "1", synth.path, out])
    assert r.returncode == 0
    assert not out.exists()
    assert b"Pages filled with zero  : 0x%016x" % synth.zero_pfns.size in r.stdout


def test_elf32_input(tmp_path):
    """ELF32 vmcores (i386/arm) are read too: -d 1 kdump output and -E ELF32 output keep every page."""
    from fixtures.synthetic import SynthSpec, generate

    info = generate(tmp_path / "core32", SynthSpec(elf_class=32, ram=[(0x1000, 0x9FC00), (0x100000, 0x2000000)]))
    out = tmp_path / "dump"
    r = run(["-l", "-d", "1", info.path, out])
    assert r.returncode == 0, r.stderr.decode()
    kd = KdumpFile.load(str(out))
    assert set(kd.zero_pfns().tolist()) == set(info.zero_pfns.tolist()) & set(kd.dumped_pfns().tolist())
    for pfn in kd.dumped_pfns()[::11].tolist():
        assert kd.page(pfn) == info.page(pfn)
    elf = tmp_path / "dump.elf"
    assert run(["-E", "-d", "1", info.path, elf]).returncode == 0
    import dumpfilter

    src = dumpfilter.open(str(elf))
    assert src.elf_class == 32
    for pfn in info.nonzero_pfns[::13].tolist():
        assert src.read_page(pfn) == info.page(pfn)
