"""-E output: excluded pages are really absent, kept pages read back equal (drgn and our reader)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.helpers import drgn_program, run


def _phdrs(path):
    raw = open(path, "rb").read()
    assert raw[:4] == b"\x7fELF" and raw[4] == 2
    e_flags = struct.unpack_from("<I", raw, 48)[0]
    phoff = struct.unpack_from("<Q", raw, 32)[0]
    phnum = struct.unpack_from("<H", raw, 56)[0]
    if phnum == 0xFFFF:
        shoff = struct.unpack_from("<Q", raw, 40)[0]
        phnum = struct.unpack_from("<I", raw, shoff + 44)[0]
    ph = [struct.unpack_from("<IIQQQQQQ", raw, phoff + 56 * i) for i in range(phnum)]
    return raw, e_flags, ph


@pytest.mark.parametrize("level", [0, 1])
def test_elf_pages_and_absence(synth, tmp_path, level):
    out = tmp_path / "dump.elf"
    r = run(["-E", "-d", str(level), "--show-stats", synth.path, out])
    assert r.returncode == 0, r.stderr.decode()
    raw, e_flags, ph = _phdrs(out)
    assert e_flags & 1 == 0
    notes = [p for p in ph if p[0] == 4]
    loads = [p for p in ph if p[0] == 1]
    assert len(notes) == 1 and raw[notes[0][2] : notes[0][2] + notes[0][5]] == synth.notes
    ps = synth.page_size
    zero = set(synth.zero_pfns.tolist()) if level & 1 else set()
    covered = np.zeros(synth.max_mapnr + 1, dtype=bool)
    for _t, _f, off, vaddr, paddr, filesz, memsz, _a in loads:
        assert filesz <= memsz
        data = raw[off : off + filesz]
        assert data == synth.read_phys(paddr, filesz)
        for pfn in range(paddr // ps, (paddr + filesz + ps - 1) // ps):
            covered[pfn] = True
            # only partial edge pages of an input segment may be kept although zero
            if pfn in zero:
                assert paddr % ps or (paddr + filesz) % ps, f"zero pfn {pfn:#x} leaked into the ELF file"
    # every non-zero page of the vmcore is in the file
    for pfn in synth.nonzero_pfns.tolist():
        assert covered[pfn], f"pfn {pfn:#x} missing"
    if level & 1:
        assert b"in ELF format" in r.stdout
    prog = drgn_program(str(out))
    for pfn in synth.nonzero_pfns[::3].tolist():
        assert prog.read(pfn * ps, ps, True) == synth.page(pfn)
    # total file data is exactly the kept pages (+ the kernel text alias twice), nothing more
    kept_bytes = sum(p[5] for p in loads)
    text = [p for p in loads if p[3] >= 0xFFFFFFFF80000000]
    assert kept_bytes < synth.file_size


def test_elf_refused_for_kdump_input(synth, tmp_path):
    kd = tmp_path / "kd"
    assert run(["-d", "1", synth.path, kd]).returncode == 0
    r = run(["-E", kd, tmp_path / "x"])
    assert r.returncode == 1 and b"'-E' option is disabled" in r.stderr
    assert not (tmp_path / "x").exists()


def test_elf_with_compression_is_usage_error(synth, tmp_path):
    r = run(["-E", "-l", synth.path, tmp_path / "x"])
    assert r.returncode == 1 and b"Commandline parameter is invalid" in r.stderr


def test_elf_memory_does_not_grow_with_pieces(tmp_path, monkeypatch):
    """-E makes its PT_LOAD pieces again for each pass instead of holding them: a sparse terabyte dump
    has hundreds of thousands (256 GiB bigcore image at -E -d 31: 93.7 MiB peak RSS when they were
    held). Four times the RAM (and the pieces) must not cost more Python memory."""
    import tracemalloc

    from dumpfilter.cli import main
    from fixtures.synthetic import SynthSpec, generate

    # program headers are written a chunk at a time: a small chunk, so that only holding pieces shows
    monkeypatch.setattr("dumpfilter.writer.elf._PHDR_CHUNK", 16 << 10)
    monkeypatch.setattr("dumpfilter.filter.RUNS_CHUNK", 1 << 12)
    peaks, phnums = [], []
    for mib in (64, 256):
        vmcore = tmp_path / f"vmcore{mib}"
        generate(vmcore, SynthSpec(ram=[(0x1000, 0x9FC00), (0x100000, mib << 20)]))
        out = tmp_path / f"dump{mib}.elf"
        tracemalloc.start()
        try:
            assert main(["-E", "-d", "1", "--message-level", "0", str(vmcore), str(out)]) == 0
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        phnums.append(len(_phdrs(out)[2]))
    assert phnums[1] > 3 * phnums[0] > 3000  # the pieces grew with the RAM
    # holding them cost ~130 bytes each: +1.3 MiB here
    assert peaks[1] < peaks[0] + (256 << 10), (peaks, phnums)
