"""Tests of the synthetic vmcore generator (fixtures/synthetic.py).

Only independent checks: the files are parsed here with ``struct`` (not with
the generator's helpers), opened with drgn (if importable; run with the venv
that has it, e.g. ``/tmp/probe/bin/python -m pytest``), and fed to the real
makedumpfile (if ``/usr/bin/makedumpfile`` exists).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fixtures import synthetic as syn

START_KERNEL_MAP = 0xFFFFFFFF80000000
U64 = (1 << 64) - 1
SMALL_RAM = [(0x1000, 0x9FC00), (0x100000, 0x2000000)]
MAKEDUMPFILE = shutil.which("makedumpfile") or (
    "/usr/bin/makedumpfile" if os.path.exists("/usr/bin/makedumpfile") else None
)


# ---------------------------------------------------------------------------
# an independent minimal ELF core reader
# ---------------------------------------------------------------------------


class Core:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes() if path.stat().st_size < (256 << 20) else None
        with open(path, "rb") as f:
            self.ehdr = f.read(64)
        assert self.ehdr[:4] == b"\x7fELF"
        self.is64 = self.ehdr[4] == 2
        if self.is64:
            (self.type, self.machine, _v, _e, self.phoff, self.shoff, _fl, self.ehsize,
             self.phentsize, self.phnum, _a, self.shnum, _b) = struct.unpack_from("<HHIQQQIHHHHHH", self.ehdr, 16)
        else:
            (self.type, self.machine, _v, _e, self.phoff, self.shoff, _fl, self.ehsize,
             self.phentsize, self.phnum, _a, self.shnum, _b) = struct.unpack_from("<HHIIIIIHHHHHH", self.ehdr, 16)
        raw = self.pread(self.phoff, self.phnum * self.phentsize)
        self.phdrs = []
        for i in range(self.phnum):
            if self.is64:
                t, fl, off, va, pa, fsz, msz, _al = struct.unpack_from("<IIQQQQQQ", raw, i * self.phentsize)
            else:
                t, off, va, pa, fsz, msz, fl, _al = struct.unpack_from("<IIIIIIII", raw, i * self.phentsize)
            self.phdrs.append(
                {"type": t, "offset": off, "vaddr": va, "paddr": pa, "filesz": fsz, "memsz": msz, "flags": fl}
            )
        self.loads = [p for p in self.phdrs if p["type"] == 1]

    def pread(self, off: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[off : off + n]
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def notes(self) -> list[tuple[bytes, int, bytes]]:
        (note,) = [p for p in self.phdrs if p["type"] == 4]
        blob = self.pread(note["offset"], note["filesz"])
        out = []
        pos = 0
        while pos + 12 <= len(blob):
            namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
            name = blob[pos + 12 : pos + 12 + namesz]
            dpos = pos + 12 + (namesz + 3) // 4 * 4
            out.append((name, ntype, blob[dpos : dpos + descsz]))
            pos = dpos + (descsz + 3) // 4 * 4
        assert pos == len(blob), "notes must fill PT_NOTE exactly"
        return out

    def read_phys(self, paddr: int, n: int) -> bytes:
        """Byte-wise: first PT_LOAD whose file data covers the byte, else 0."""
        out = bytearray(n)
        pos = 0
        while pos < n:
            a = paddr + pos
            for p in self.loads:
                if p["paddr"] <= a < p["paddr"] + p["filesz"]:
                    k = min(n - pos, p["paddr"] + p["filesz"] - a)
                    out[pos : pos + k] = self.pread(p["offset"] + a - p["paddr"], k)
                    pos += k
                    break
            else:
                # skip to the next covered byte
                nxt = min([p["paddr"] for p in self.loads if p["paddr"] > a and p["filesz"]] + [paddr + n])
                pos = nxt - paddr
        return bytes(out)

    def vtop(self, va: int, root_pa: int) -> int:
        """Own 4-level x86_64 walk (P bit, PS at PUD/PMD)."""
        mask = 0x000FFFFFFFFFF000
        e = struct.unpack("<Q", self.read_phys(root_pa + ((va >> 39) & 511) * 8, 8))[0]
        assert e & 1, "pgd not present"
        e = struct.unpack("<Q", self.read_phys((e & mask) + ((va >> 30) & 511) * 8, 8))[0]
        assert e & 1, "pud not present"
        if e & 0x80:
            return (e & mask & ~((1 << 30) - 1)) + (va & ((1 << 30) - 1))
        e = struct.unpack("<Q", self.read_phys((e & mask) + ((va >> 21) & 511) * 8, 8))[0]
        assert e & 1, "pmd not present"
        if e & 0x80:
            return (e & mask & ~((1 << 21) - 1)) + (va & ((1 << 21) - 1))
        e = struct.unpack("<Q", self.read_phys((e & mask) + ((va >> 12) & 511) * 8, 8))[0]
        assert e & 1, "pte not present"
        return (e & mask) + (va & 4095)


def vmcoreinfo_dict(text: str) -> dict[str, str]:
    d: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            d.setdefault(k, v)
    return d


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_core(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "vmcore"
    info = syn.generate(path, syn.SynthSpec())
    return path, info, Core(path)


@pytest.fixture(scope="module")
def small_core(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "vmcore.small"
    info = syn.generate(path, syn.SynthSpec(ram=SMALL_RAM))
    return path, info


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------


def test_elf_header_and_program_headers(default_core):
    path, info, core = default_core
    assert core.ehdr[4:7] == b"\x02\x01\x01"
    assert (core.type, core.machine) == (4, 62)
    assert core.phoff == 64 and core.phentsize == 56 and core.shnum == 0
    assert core.phdrs[0]["type"] == 4
    assert [p["type"] for p in core.phdrs[1:]] == [1] * (core.phnum - 1)
    assert len(core.loads) == len(info.loads) == 3
    for p, s in zip(core.loads, info.loads):
        assert (p["offset"], p["vaddr"], p["paddr"], p["filesz"], p["memsz"]) == (
            s.offset, s.vaddr, s.paddr, s.filesz, s.memsz)
    text, ram0, ram1 = core.loads
    # kernel-text alias first, then direct map
    assert text["vaddr"] >= START_KERNEL_MAP
    assert (text["vaddr"] - START_KERNEL_MAP + info.phys_base) & U64 == text["paddr"]
    assert (ram0["paddr"], ram0["filesz"]) == (0x1000, 0x9FC00 - 0x1000)
    assert (ram1["paddr"], ram1["filesz"]) == (0x100000, 0x4000000 - 0x100000)
    for p in (ram0, ram1):
        assert p["vaddr"] == 0xFFFF888000000000 + p["paddr"]
        assert p["memsz"] == p["filesz"]
    assert ram1["paddr"] <= text["paddr"] and text["paddr"] + text["filesz"] <= ram1["paddr"] + ram1["filesz"]
    # /proc/vmcore layout: page-aligned notes and segment pages, packed in order
    note = core.phdrs[0]
    assert note["offset"] % 4096 == 0 and note["filesz"] == len(info.notes)
    for p in core.loads:
        assert p["offset"] % 4096 == p["paddr"] % 4096
    assert text["offset"] == note["offset"] + 4096
    assert ram0["offset"] == text["offset"] + text["filesz"]
    assert ram1["offset"] == ram0["offset"] + 0xA0000 - 0x1000
    assert path.stat().st_size == info.file_size == ram1["offset"] + ram1["filesz"]
    assert info.max_mapnr == 0x4000000 // 4096


def test_notes(default_core):
    _path, info, core = default_core
    notes = core.notes()
    assert len(notes) == info.nr_cpus + 1 == 3
    for cpu, (name, ntype, desc) in enumerate(notes[:-1]):
        assert (name, ntype, len(desc)) == (b"CORE\0", 1, 336)
        assert struct.unpack_from("<i", desc, 32)[0] == info.pids[cpu]
        rip = struct.unpack_from("<Q", desc, 112 + 16 * 8)[0]
        assert rip >= START_KERNEL_MAP
    name, ntype, desc = notes[-1]
    assert (name, ntype) == (b"VMCOREINFO\0", 0)
    assert desc.decode() == info.vmcoreinfo
    assert core.pread(core.phdrs[0]["offset"], core.phdrs[0]["filesz"]) == info.notes


def test_vmcoreinfo_text(default_core):
    _path, info, _core = default_core
    lines = info.vmcoreinfo.splitlines()
    assert lines[0] == "OSRELEASE=6.1.0-99-cloud-amd64"
    assert lines[-1] == "CRASHTIME=1764130000"
    d = vmcoreinfo_dict(info.vmcoreinfo)
    assert d["PAGESIZE"] == "4096"
    assert re.fullmatch(r"[0-9a-f]{40}", d["BUILD-ID"])
    assert d["OFFSET(uts_namespace.name)"] == "0"
    assert d["NUMBER(pgtable_l5_enabled)"] == "0"
    assert int(d["NUMBER(phys_base)"]) == info.phys_base
    assert int(d["KERNELOFFSET"], 16) == info.kernel_offset
    assert int(d["SYMBOL(_stext)"], 16) == (0xFFFFFFFF81000000 + info.kernel_offset) & U64
    assert d["SYMBOL(init_top_pgt)"] == d["SYMBOL(swapper_pg_dir)"]
    for k in ("SYMBOL(init_uts_ns)", "SYMBOL(mem_section)", "SYMBOL(node_online_map)"):
        assert int(d[k], 16) == info.symbols[k[7:-1]]


def test_init_uts_ns_physical_translation(default_core):
    _path, info, core = default_core
    d = vmcoreinfo_dict(info.vmcoreinfo)
    va = int(d["SYMBOL(init_uts_ns)"], 16)
    assert va >= START_KERNEL_MAP
    pa = (va - START_KERNEL_MAP + int(d["NUMBER(phys_base)"])) & U64
    assert any(s <= pa and pa + 390 <= e for s, e in syn.SynthSpec().ram)
    uts = core.read_phys(pa, 390)
    assert uts == info.utsname
    fields = [uts[i * 65 : (i + 1) * 65].rstrip(b"\0") for i in range(6)]
    assert fields[0] == b"Linux" and fields[2] == b"6.1.0-99-cloud-amd64" and fields[4] == b"x86_64"
    assert fields[5] == b"(none)" and fields[3].startswith(b"#1 SMP PREEMPT_DYNAMIC Debian")


def test_page_tables_own_walk(default_core):
    _path, info, core = default_core
    d = vmcoreinfo_dict(info.vmcoreinfo)
    phys_base = int(d["NUMBER(phys_base)"])
    root = (int(d["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + phys_base) & U64
    uts_va = int(d["SYMBOL(init_uts_ns)"], 16)
    assert core.vtop(uts_va, root) == (uts_va - START_KERNEL_MAP + phys_base) & U64
    # direct map
    assert core.vtop(0xFFFF888000000000 + 0x1234567, root) == 0x1234567
    # mem_section root -> section 0 -> vmemmap mapped
    ms = int(d["SYMBOL(mem_section)"], 16)
    root0 = struct.unpack("<Q", core.read_phys(core.vtop(ms, root), 8))[0]
    smm = struct.unpack("<Q", core.read_phys(core.vtop(root0, root), 8))[0]
    assert smm & 1  # SECTION_MARKED_PRESENT
    vmemmap = smm & ~0x1F
    pa = core.vtop(vmemmap + 64 * 100, root)
    assert core.read_phys(pa, 64) == bytes(64)


def test_pages_match_file(default_core):
    _path, info, core = default_core
    zeros = bytes(4096)
    for pfn in range(info.max_mapnr):
        exp = info.page(pfn)
        assert len(exp) == 4096
        assert core.read_phys(pfn * 4096, 4096) == exp, pfn
        if info.present_mask[pfn]:
            assert bool(info.zero_mask[pfn]) == (exp == zeros), pfn
    # the text alias holds the same bytes as the RAM segment
    text, _r0, ram1 = core.loads
    a = core.pread(text["offset"], 1 << 20)
    b = core.pread(ram1["offset"] + text["paddr"] - ram1["paddr"], 1 << 20)
    assert a == b
    # pfn 0 is not in RAM
    assert not info.present_mask[0] and info.page(0) == zeros


def test_slack_bytes_not_part_of_memory(default_core):
    _path, info, core = default_core
    _t, ram0, _r1 = core.loads
    end = ram0["offset"] + ram0["filesz"]
    slack = core.pread(end, 0x400)
    assert any(slack)  # garbage really is there in the file
    assert info.page(0x9F)[0xC00:] == bytes(0x400)


def test_mixed_content_has_all_kinds(default_core):
    _path, info, _core = default_core
    present = np.flatnonzero(info.present_mask)
    frac_zero = info.zero_mask.sum() / len(present)
    assert 0.2 < frac_zero < 0.45
    kinds = dict(incompressible=0, text=0, pointers=0, repeated=0, few=0)
    for pfn in present[::7]:
        p = info.page(int(pfn))
        if not any(p):
            continue
        if len(zlib.compress(p, 1)) >= 4096:
            kinds["incompressible"] += 1
        elif all(32 <= c < 127 or c == 10 for c in p[:200]):
            kinds["text"] += 1
        elif len(set(p)) == 1:
            kinds["repeated"] += 1
        elif sum(1 for c in p if c) <= 8:
            kinds["few"] += 1
        elif any(struct.unpack_from("<Q", p, i)[0] >> 40 == 0xFFFF88 for i in range(0, 4096, 8)):
            kinds["pointers"] += 1
    assert all(v > 10 for v in kinds.values()), kinds


def test_deterministic_and_seeded(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    syn.generate(a, syn.SynthSpec(ram=SMALL_RAM, seed=5))
    syn.generate(b, syn.SynthSpec(ram=SMALL_RAM, seed=5))
    syn.generate(c, syn.SynthSpec(ram=SMALL_RAM, seed=6))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_sparse_and_dense_files_equal(tmp_path):
    a, b = tmp_path / "sparse", tmp_path / "dense"
    ia = syn.generate(a, syn.SynthSpec(ram=SMALL_RAM, sparse_file=True))
    syn.generate(b, syn.SynthSpec(ram=SMALL_RAM, sparse_file=False))
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_blocks * 512 < b.stat().st_blocks * 512
    assert a.stat().st_size == ia.file_size


def test_packed_layout(tmp_path):
    path = tmp_path / "packed"
    info = syn.generate(path, syn.SynthSpec(ram=SMALL_RAM, layout="packed"))
    core = Core(path)
    note = core.phdrs[0]
    assert note["offset"] == 64 + 56 * core.phnum
    off = note["offset"] + note["filesz"]
    for p in core.loads:
        assert p["offset"] == off
        off += p["filesz"]
    assert path.stat().st_size == off
    for pfn in range(0, info.max_mapnr, 3):
        assert core.read_phys(pfn * 4096, 4096) == info.page(pfn)


def test_elf32(tmp_path):
    path = tmp_path / "core32"
    info = syn.generate(path, syn.SynthSpec(ram=SMALL_RAM, elf_class=32))
    core = Core(path)
    assert core.ehdr[4] == 1 and core.machine == 3 and core.phentsize == 32 and core.phoff == 52
    notes = core.notes()
    for cpu, (name, ntype, desc) in enumerate(notes[:-1]):
        assert (name, ntype, len(desc)) == (b"CORE\0", 1, 144)
        assert struct.unpack_from("<i", desc, 24)[0] == info.pids[cpu]
    assert notes[-1][0] == b"VMCOREINFO\0"
    assert all(p["vaddr"] == 0xC0000000 + p["paddr"] for p in core.loads)
    d = vmcoreinfo_dict(info.vmcoreinfo)
    uts = int(d["SYMBOL(init_uts_ns)"], 16) - 0xC0000000
    assert core.read_phys(uts, 390) == info.utsname
    for pfn in range(0, info.max_mapnr, 5):
        assert core.read_phys(pfn * 4096, 4096) == info.page(pfn)


def test_nodata_ranges(tmp_path):
    path = tmp_path / "nodata"
    spec = syn.SynthSpec(nodata=[(0x3800000, 0x4000000), (0x5000000, 0x5200000)])
    info = syn.generate(path, spec)
    core = Core(path)
    by_pa = {p["paddr"]: p for p in core.loads if p["vaddr"] < START_KERNEL_MAP}
    assert by_pa[0x100000]["filesz"] == 0x3800000 - 0x100000
    assert by_pa[0x100000]["memsz"] == 0x4000000 - 0x100000
    assert by_pa[0x5000000]["filesz"] == 0 and by_pa[0x5000000]["memsz"] == 0x200000
    assert info.max_mapnr == 0x5200000 // 4096
    for pfn in list(range(0x3800, 0x4000, 17)) + list(range(0x5000, 0x5200, 13)):
        assert info.present_mask[pfn] and info.zero_mask[pfn]
        assert info.page(pfn) == bytes(4096)


def test_no_vmcoreinfo_and_options(tmp_path):
    info = syn.make_no_vmcoreinfo(tmp_path / "nv", syn.SynthSpec(ram=SMALL_RAM))
    names = [n for n, _t, _d in Core(tmp_path / "nv").notes()]
    assert names == [b"CORE\0"] * 2 and info.vmcoreinfo == ""
    info = syn.generate(tmp_path / "x", syn.SynthSpec(ram=SMALL_RAM, crashtime=None, ncpus=5,
                                                      extra_vmcoreinfo="NUMBER(foo)=1"))
    assert "CRASHTIME" not in info.vmcoreinfo and info.vmcoreinfo.endswith("NUMBER(foo)=1\n")
    assert len(Core(tmp_path / "x").notes()) == 6


def test_explicit_phys_base(tmp_path):
    info = syn.generate(tmp_path / "pb", syn.SynthSpec(ram=SMALL_RAM, phys_base=0x200000, kernel_offset=0,
                                                       kernel_size=0x400000))
    d = vmcoreinfo_dict(info.vmcoreinfo)
    assert d["NUMBER(phys_base)"] == str(0x200000) and d["KERNELOFFSET"] == "0"
    assert info.kernel_phys == (0x1200000, 0x1600000)
    text = [s for s in info.loads if s.vaddr >= START_KERNEL_MAP]
    assert [(s.vaddr, s.paddr, s.filesz) for s in text] == [(0xFFFFFFFF81000000, 0x1200000, 0x400000)]
    with pytest.raises(ValueError):
        syn.generate(tmp_path / "bad", syn.SynthSpec(ram=SMALL_RAM, phys_base=0x40000000))


def test_generation_speed_64mib(tmp_path):
    t0 = time.perf_counter()
    syn.generate(tmp_path / "speed", syn.SynthSpec())
    assert time.perf_counter() - t0 < 1.5


def test_big_sparse_core(tmp_path):
    ram = [(0x1000, 0x9FC00), (0x100000, 0xBFFE0000), (0x100000000, 0x240000000)]
    path = tmp_path / "big"
    t0 = time.perf_counter()
    info = syn.generate(path, syn.SynthSpec(ram=ram, content="sparse"))
    dt = time.perf_counter() - t0
    st = path.stat()
    assert st.st_size == info.file_size > 8 << 30
    assert st.st_blocks * 512 < st.st_size // 16
    assert dt < 10
    assert info.max_mapnr == 0x240000000 // 4096
    core = Core(path)
    assert len(core.loads) == 4
    nz = info.nonzero_pfns
    try:
        for pfn in list(nz[:: max(1, len(nz) // 200)]) + [0x100000, 0x23FFFF]:
            assert core.read_phys(int(pfn) * 4096, 4096) == info.page(int(pfn))
    finally:
        path.unlink()  # do not leave 8 GiB (sparse) files in pytest's retained tmp dirs


def test_cli(tmp_path):
    out = tmp_path / "cli.core"
    r = subprocess.run(
        [sys.executable, str(REPO / "fixtures" / "synthetic.py"), str(out), "--ram-mb", "16", "--seed", "3",
         "--content", "random", "--class", "64"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    core = Core(out)
    assert core.machine == 62 and len(core.loads) == 3


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------


def test_bad_input_makers(small_core, tmp_path):
    src, _info = small_core
    good = Core(src)
    size = src.stat().st_size

    syn.make_truncated_headers(src, tmp_path / "th")
    assert (tmp_path / "th").stat().st_size < good.phoff + good.phnum * good.phentsize

    syn.make_truncated_notes(src, tmp_path / "tn")
    note = good.phdrs[0]
    assert note["offset"] < (tmp_path / "tn").stat().st_size < note["offset"] + note["filesz"]

    syn.make_load_past_eof(src, tmp_path / "lp")
    lp = Core(tmp_path / "lp")
    assert any(p["offset"] + p["filesz"] > (tmp_path / "lp").stat().st_size for p in lp.loads)

    syn.make_not_a_vmcore(tmp_path / "nv")
    raw = (tmp_path / "nv").read_bytes()
    assert raw[:4] != b"\x7fELF" and len(raw) > 1000 and raw.decode("ascii")

    syn.make_bad_note_sizes(src, tmp_path / "bn")
    bn = (tmp_path / "bn").read_bytes()
    descsz = struct.unpack_from("<I", bn, note["offset"] + 4)[0]
    assert 12 + 8 + descsz > note["filesz"]
    assert len(bn) == size

    syn.make_phnum_huge(src, tmp_path / "ph")
    ph = (tmp_path / "ph").read_bytes()
    assert struct.unpack_from("<H", ph, 56)[0] == 0xFFFF and struct.unpack_from("<Q", ph, 40)[0] == 0

    syn.make_phoff_beyond_eof(src, tmp_path / "po")
    po = (tmp_path / "po").read_bytes()
    assert struct.unpack_from("<Q", po, 32)[0] > len(po)


# ---------------------------------------------------------------------------
# drgn
# ---------------------------------------------------------------------------


def _drgn_check(path: Path, info: syn.SynthInfo, step: int = 1) -> int:
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    checked = 0
    for pfn in np.flatnonzero(info.present_mask)[::step]:
        pfn = int(pfn)
        exp = info.page(pfn)
        try:
            got = prog.read(pfn * 4096, 4096, True)
        except drgn.FaultError:
            # partially covered page: read only the covered part
            lo = max((s.paddr for s in info.loads if s.paddr < (pfn + 1) * 4096 and s.paddr + s.filesz > pfn * 4096),
                     default=None)
            seg = [s for s in info.loads if s.paddr <= max(lo or 0, pfn * 4096) < s.paddr + s.filesz]
            if not seg:
                assert exp == bytes(4096)
                continue
            a = max(seg[0].paddr, pfn * 4096)
            b = min(seg[0].paddr + seg[0].filesz, (pfn + 1) * 4096)
            got = prog.read(a, b - a, True)
            assert got == exp[a - pfn * 4096 : b - pfn * 4096]
            checked += 1
            continue
        assert got == exp, pfn
        checked += 1
    return checked


def test_drgn_default(default_core):
    drgn = pytest.importorskip("drgn")
    path, info, _core = default_core
    assert _drgn_check(path, info, step=3) > 4000
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    assert prog.platform.arch == drgn.Architecture.X86_64
    # virtual reads go through our page tables
    assert prog.read(info.symbols["init_uts_ns"], 390) == info.utsname
    ms = prog.read_u64(info.symbols["mem_section"])
    assert prog.read_u64(ms) & 0x1F == 0xF
    assert prog.read(0xFFFF888000000000 + 0x100000, 4096) == info.page(0x100)


@pytest.mark.parametrize(
    "kw",
    [
        dict(elf_class=32),
        dict(layout="packed"),
        dict(content="random", ncpus=4, ram=[(0, 0x1800000)], kernel_offset=0),
        dict(nodata=[(0x1800000, 0x2000000)]),
        dict(kernel_text=False, page_offset=0xFFFF900000000000, seed=9),
    ],
    ids=["elf32", "packed", "random", "nodata", "notext"],
)
def test_drgn_variants(tmp_path, kw):
    pytest.importorskip("drgn")
    spec = syn.SynthSpec(**{"ram": SMALL_RAM, **kw})
    info = syn.generate(tmp_path / "v", spec)
    assert _drgn_check(tmp_path / "v", info, step=2) > 1000


# ---------------------------------------------------------------------------
# makedumpfile (the real one)
# ---------------------------------------------------------------------------


def _mdf_present(info: syn.SynthInfo) -> np.ndarray:
    """pfns makedumpfile puts in its 1st bitmap: [paddr>>12, (paddr+memsz)>>12) per PT_LOAD."""
    m = np.zeros(info.max_mapnr, dtype=bool)
    for s in info.loads:
        m[s.paddr // 4096 : (s.paddr + s.memsz) // 4096] = True
    return m


@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
@pytest.mark.parametrize("level", [0, 1, 31])
def test_makedumpfile_accepts(small_core, tmp_path, level):
    src, info = small_core
    out = tmp_path / f"dump.d{level}"
    r = subprocess.run([MAKEDUMPFILE, "-d", str(level), "--message-level", "31", str(src), str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    log = (r.stdout + r.stderr).replace("\r", "\n")
    assert r.returncode == 0, log
    m = re.search(r"Pages filled with zero\s*:\s*0x([0-9a-f]+)", log)
    assert m, log
    expected = int((info.zero_mask & _mdf_present(info)).sum()) if level & 1 else 0
    assert int(m.group(1), 16) == expected
    for what in ("Non-private cache pages", "Private cache pages", "User process data pages", "Free pages"):
        m = re.search(what + r"\s*:\s*0x([0-9a-f]+)", log)
        assert m and int(m.group(1), 16) == 0, log
    # cross-check the kdump-compressed output with drgn/libkdumpfile when available
    try:
        import drgn
    except ImportError:
        return
    prog = drgn.Program()
    prog.set_core_dump(str(out))
    present = _mdf_present(info)
    for pfn in np.flatnonzero(present)[::5]:
        pfn = int(pfn)
        try:
            got = prog.read(pfn * 4096, 4096, True)
        except drgn.FaultError:
            assert level & 1 and info.zero_mask[pfn], pfn
            continue
        assert got == info.page(pfn), pfn


# ---------------------------------------------------------------------------
# struct page modes (pages="kernel61" / "kernel612") and corruptions
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["kernel61", "kernel612"])
def kernel_core(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / f"vmcore.{request.param}"
    info = syn.generate(path, syn.SynthSpec(pages=request.param, seed=3))
    return request.param, path, info, Core(path)


def test_struct_pages_through_own_walk(kernel_core):
    """The struct pages the generator reports are what a page-table walk finds in the file."""
    era, _path, info, core = kernel_core
    d = vmcoreinfo_dict(info.vmcoreinfo)
    root = (int(d["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + int(d["NUMBER(phys_base)"])) & U64
    ms = int(d["SYMBOL(mem_section)"], 16)
    root0 = struct.unpack("<Q", core.read_phys(core.vtop(ms, root), 8))[0]
    vmemmap = struct.unpack("<Q", core.read_phys(core.vtop(root0, root), 8))[0] & ~0x1F
    assert vmemmap == syn.VMEMMAP_BASE
    pa0 = core.vtop(vmemmap, root)
    raw = np.frombuffer(core.read_phys(pa0, 64 * info.max_mapnr), dtype=np.uint8).reshape(-1, 64)
    assert np.array_equal(raw, info.struct_pages)
    assert info.struct_page(1234) == raw[1234].tobytes()
    # ground truth and bytes agree on a few kinds
    flags = raw[:, :8].copy().view("<u8")[:, 0]
    mapcount = raw[:, 48:52].copy().view("<u4")[:, 0]
    mapping = raw[:, 24:32].copy().view("<u8")[:, 0]
    k = info.kinds
    buddy = 0xFFFFFF7F if era == "kernel61" else 0xF0000000
    assert (mapcount[k == syn.KIND_BUDDY] == buddy).all()
    assert (mapping[k == syn.KIND_ANON] & 3 == 1).all() and (mapping[k == syn.KIND_KSM] & 3 == 3).all()
    assert (mapping[k == syn.KIND_MOVABLE] & 3 == 2).all()
    head = 1 << (16 if era == "kernel61" else 6)
    for h, order, kind in info.compounds:
        assert flags[h] & head, (h, kind)
        tails = raw[h + 1 : h + (1 << order), 8:16].copy().view("<u8")[:, 0]
        assert (tails == (syn.VMEMMAP_BASE + 64 * h) | 1).all()
        if era == "kernel612":
            assert flags[h + 1] & 0xFF == order
        else:
            assert raw[h + 1, 17] == order
    (h511,) = np.flatnonzero(k == syn.KIND_HEAD511)
    assert h511 % 512 == 511


def test_kernel_vmcoreinfo_order(kernel_core):
    era, _path, info, _core = kernel_core
    keys = [line.split("=", 1)[0] for line in info.vmcoreinfo.splitlines()]
    assert keys[:3] == ["OSRELEASE", "BUILD-ID", "PAGESIZE"] and keys[-1] == "CRASHTIME"
    assert keys.index("OFFSET(page.compound_head)") < keys.index("LENGTH(zone.free_area)") < keys.index(
        "NUMBER(NR_FREE_PAGES)") < keys.index("NUMBER(PG_lru)") < keys.index("NUMBER(phys_base)")
    d = vmcoreinfo_dict(info.vmcoreinfo)
    if era == "kernel61":
        assert d["OSRELEASE"].startswith("6.1.")
        assert keys.index("NUMBER(PG_slab)") < keys.index("NUMBER(PG_hwpoison)") < keys.index(
            "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)") < keys.index("NUMBER(HUGETLB_PAGE_DTOR)")
    else:
        assert d["OSRELEASE"].startswith("6.12.")
        assert keys.index("NUMBER(PG_swapbacked)") + 1 == keys.index("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)")
        assert int(d["NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)"]) & 0xFFFFFFFF == 0xF1000000
        assert int(d["NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)"]) & 0xFFFFFFFF == 0xF4000000


def test_kernel_pages_deterministic_and_zero_mode_unchanged(tmp_path):
    a, b, z = tmp_path / "a", tmp_path / "b", tmp_path / "z"
    ia = syn.generate(a, syn.SynthSpec(ram=SMALL_RAM, pages="kernel612", seed=9))
    syn.generate(b, syn.SynthSpec(ram=SMALL_RAM, pages="kernel612", seed=9))
    iz = syn.generate(z, syn.SynthSpec(ram=SMALL_RAM, seed=9))
    assert a.read_bytes() == b.read_bytes()
    assert iz.struct_pages is not None and not iz.struct_pages.any()
    assert set(np.unique(iz.kinds).tolist()) == {syn.KIND_NONE, syn.KIND_KERNEL}
    assert "PG_head_mask)=65536" in iz.vmcoreinfo and "LENGTH(zone.free_area)" not in iz.vmcoreinfo
    assert (ia.kinds != syn.KIND_NONE).sum() == (iz.kinds != syn.KIND_NONE).sum()


def test_corruptions(tmp_path):
    ok = syn.generate(tmp_path / "ok", syn.SynthSpec(pages="kernel61", seed=2))
    core_ok = Core(tmp_path / "ok")
    d = vmcoreinfo_dict(ok.vmcoreinfo)
    root = (int(d["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + int(d["NUMBER(phys_base)"])) & U64
    ms_pa = core_ok.vtop(int(d["SYMBOL(mem_section)"], 16), root)
    for kind in syn.CORRUPTIONS:
        info = syn.generate(tmp_path / kind, syn.SynthSpec(pages="kernel61", seed=2, corrupt=kind))
        core = Core(tmp_path / kind)
        if kind == "mem_section_root":
            r0 = struct.unpack("<Q", core.read_phys(ms_pa, 8))[0]
            assert r0 - 0xFFFF888000000000 >= ok.max_mapnr * 4096
        elif kind == "struct_pages_random":
            assert not np.array_equal(info.struct_pages, ok.struct_pages)
            pa = core_ok.vtop(syn.VMEMMAP_BASE, root)
            assert core.read_phys(pa, 4096) == info.struct_pages[:64].tobytes()
        else:
            va = syn.VMEMMAP_BASE if kind == "pgd_loop" else 0xFFFF888000000000
            e = struct.unpack("<Q", core.read_phys(root + ((va >> 39) & 511) * 8, 8))[0]
            assert e & 0x000FFFFFFFFFF000 == root and e & 1
