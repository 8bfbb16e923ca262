"""Issue 13 on real arm64 vmcores (Debian kernels under qemu-system-aarch64, tests/conftest.py):
filtering, --dump-dmesg, --mem-usage and the dump header, on this (x86_64) host.

Oracles:
- Linux 6.1 (48-bit VA, 4 levels): Debian's arm64 makedumpfile 1.7.2 under qemu-user
  (fixtures/arm64-makedumpfile): the 2nd bitmap, the zero-page set, every dumped page and the dump
  header must be identical. That binary runs as arm64 code, so this is also "the same on arm64 as on
  an x86_64 host".
- 6.12 (52-bit VA with LPA2; the same kernel at 48 bits), 7.x and 6.12 with 16K pages, which that
  makedumpfile refuses: the kernel's /proc/kpageflags taken just before the crash, at the x86
  thresholds, every disagreement a page that changed between the snapshot and the crash
  (tests/real/test_kpageflags_real.py); the console of the crashed kernel for --dump-dmesg.
- drgn (libkdumpfile, its own arm64 page-table walker) opens our dumps: init_uts_ns, jiffies and the
  crashing task's stack trace with Debian's debug vmlinux (fixtures/dbgsym.py).
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

import dumpfilter
from dumpfilter.kernel.arch import for_machine
from dumpfilter.kernel.arch.machines import EM_AARCH64
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from fixtures.realcore_lib import oracle
from tests.helpers import KdumpFile, bits, report_counts, run, runs_of, scratch_dir
from tests.real.test_dmesg_real import cli_dmesg, first_kernel_console, our_messages, strip_caller
from tests.real.test_kpageflags_real import THRESHOLD, compare

ARM64 = ["core_arm64_61", "core_arm64_612", "core_arm64_612_48", "core_arm64_7x", "core_arm64_612_16k"]
NEW = ARM64[1:]  # no makedumpfile for these
LEVELS = [1, 2, 4, 8, 16, 31]
def _pages(src, pfn: int, n: int) -> bytearray:  # noqa: ANN001
    buf = bytearray(n * src.page_size)
    src.read_pages(pfn, n, buf)
    return buf


@pytest.fixture(params=ARM64)
def arm64_core(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(params=NEW)
def new_core(request) -> Path:
    return request.getfixturevalue(request.param)


# --- 6.1: identical to the arm64 makedumpfile ------------------------------------------------


@pytest.fixture(scope="module")
def oracle61(core_arm64_61, tmp_path_factory):
    """The arm64 makedumpfile's dump of the 6.1 vmcore at each level (run once per level)."""
    with scratch_dir(tmp_path_factory, "oracle61") as d:
        out = {}
        for level in LEVELS:
            path = d / f"d{level}"
            r = oracle.run_makedumpfile(["-l", "-d", str(level), "--message-level", "23",
                                         str(core_arm64_61 / "vmcore"), str(path)],
                                        capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            out[level] = (path, report_counts(r.stdout))
        yield out


@pytest.mark.parametrize("level", LEVELS)
def test_61_identical_to_arm64_makedumpfile(core_arm64_61, oracle61, tmp_path, level):
    ref_path, ref_counts = oracle61[level]
    out = tmp_path / "ours"
    r = run(["-l", "-d", level, "--show-stats", core_arm64_61 / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    ours, ref = KdumpFile.load(str(out)), KdumpFile.load(str(ref_path))
    assert (ours.bitmap1 == ref.bitmap1).all()
    diff = np.flatnonzero(ours.bitmap2 != ref.bitmap2)
    assert diff.size == 0, f"2nd bitmap differs on {diff.size} pfns, runs {runs_of(diff)[:10]}"
    assert set(ours.zero_pfns().tolist()) == set(ref.zero_pfns().tolist())
    assert report_counts(r.stdout.decode()) == ref_counts
    # every dumped page has makedumpfile's contents: all of them read back in runs by our reader, a
    # spread of them decoded independently (tests.helpers.KdumpFile)
    pfns = ours.dumped_pfns()
    assert pfns.size > 1000
    with dumpfilter.open(str(out)) as a, dumpfilter.open(str(ref_path)) as b:
        for s, e in runs_of(pfns):
            for p in range(s, e, 512):
                n = min(512, e - p)
                assert _pages(a, p, n) == _pages(b, p, n), f"pages {p:#x}+{n} differ"
    for p in pfns[:: max(1, pfns.size // 200)].tolist():
        assert ours.page(p) == ref.page(p), f"pfn {p:#x} differs"
    # the header: machine (utsname), phys_base (PHYS_OFFSET), the notes (arm64 PRSTATUS + VMCOREINFO)
    assert ours.utsname == ref.utsname and b"aarch64" in ours.utsname
    assert ours.phys_base == ref.phys_base == 0x40000000
    assert ours.nr_cpus == ref.nr_cpus == 2 and ours.max_mapnr == ref.max_mapnr
    assert ours.notes == ref.notes
    assert (ours.offset_vmcoreinfo, ours.size_vmcoreinfo) == (ref.offset_vmcoreinfo, ref.size_vmcoreinfo)
    assert ours.block_size == ref.block_size == 4096 and ours.dump_level == ref.dump_level == level
    if level & 8:
        assert ref_counts["user"] > 1000
    if level & 16:
        assert ref_counts["free"] > 1000


def test_61_mem_usage_matches_arm64_makedumpfile(core_arm64_61):
    """The excludable rows and the totals are the oracle's. KERN_DATA is not: makedumpfile counts
    the kernel image twice (its own PT_LOAD and the linear map's, ``max_mapnr - pfn_memhole`` over
    PT_LOADs), ours is the dumpable non-zero pages; the difference is exactly the image PT_LOAD."""
    r = run(["--mem-usage", core_arm64_61 / "vmcore"])
    assert r.returncode == 0, r.stderr.decode()
    ref = oracle.run_makedumpfile(["--mem-usage", str(core_arm64_61 / "vmcore")], iomem=core_arm64_61 / "iomem.txt",
                                  capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    def table(text: str) -> dict[str, int]:
        rows = {}
        for line in text.splitlines():
            p = line.split()
            if len(p) >= 3 and p[1].isdigit() and p[2] in ("yes", "no"):
                rows[p[0]] = int(p[1])
            m = re.match(r"Total pages on system:\s*(\d+)", line)
            if m:
                rows["TOTAL"] = int(m.group(1))
        return rows

    ours, want = table(r.stdout.decode()), table(ref.stdout)
    kern_ours, kern_ref = ours.pop("KERN_DATA"), want.pop("KERN_DATA")
    assert ours == want and want["USER"] > 10000 and want["FREE"] > 10000
    with dumpfilter.open(str(core_arm64_61 / "vmcore")) as src:
        vi = VmcoreInfo.parse(src.vmcoreinfo_raw)
        voff = vi.number["kimage_voffset"]
        image = [s for s in src.load_segments if (s.vaddr - s.paddr) % (1 << 64) == voff]
        assert len(image) == 1
        assert kern_ref - kern_ours == image[0].memsz // 4096


def test_61_dmesg_identical_to_arm64_makedumpfile(core_arm64_61, tmp_path):
    """Byte for byte (without our caller column, which 1.7.2 predates), unsigned-char escapes included."""
    ref = tmp_path / "mdf.txt"
    r = oracle.run_makedumpfile(["--dump-dmesg", str(core_arm64_61 / "vmcore"), str(ref)],
                                capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    ours = cli_dmesg(core_arm64_61 / "vmcore", tmp_path / "ours.txt")
    assert strip_caller(ours) == ref.read_bytes()


# --- every arm64 fixture ------------------------------------------------------------------------


def test_translation_facts(arm64_core):
    """Root, levels and linear map as the fixture's VMCOREINFO says; every section's mem_map is
    vmemmap + pfn * SIZE(page) with vmemmap from VMEMMAP_START and PHYS_OFFSET (and equal to
    SYMBOL(vmemmap) where the kernel exports it); the linear-map arithmetic agrees with the walk."""
    from dumpfilter.filter.classify import KernelView

    with dumpfilter.open(str(arm64_core / "vmcore")) as src:
        assert src.elf_machine == EM_AARCH64
        vi = VmcoreInfo.parse(src.vmcoreinfo_raw)
        kv = KernelView(src, vi)
        lo = kv.mmu.layout
        t1sz = vi.number["TCR_EL1_T1SZ"]
        assert lo.vabits_actual == 64 - t1sz
        assert kv.mmu.levels == {(4096, 48): 4, (4096, 52): 5, (16384, 52): 4}[(src.page_size, 64 - t1sz)]
        sp = kv.memmap.page_struct_size
        vmemmap = lo.vmemmap(sp)
        with_map = [s for s in kv.memmap.sections if s.mem_map]
        assert len(with_map) >= 4
        assert all(s.mem_map == (vmemmap + s.pfn_start * sp) % (1 << 64) for s in with_map)
        if "vmemmap" in vi.symbol:
            assert vi.symbol["vmemmap"] == vmemmap
        for va in (vi.symbol["mem_section"], vi.symbol["init_uts_ns"], vi.symbol["swapper_pg_dir"],
                   vi.symbol["prb"]):
            assert kv.mmu.vtop(va) == lo.pa(va) == for_machine(src.elf_machine).kernel_text_to_phys(va, src, vi)
        # the linear map's PT_LOADs, walked: the start of each lands on its paddr
        for seg in src.load_segments:
            if lo.is_linear(seg.vaddr):
                assert kv.mmu.vtop(seg.vaddr) == seg.paddr


def test_dmesg_holds_every_console_line(arm64_core, tmp_path):
    text = cli_dmesg(arm64_core / "vmcore", tmp_path / "dmesg.txt")
    assert b"sysrq: Trigger a crash" in text
    assert b"Kernel panic - not syncing: sysrq triggered crash" in text
    ours = our_messages(text)
    # arm64 prints "Booting Linux on physical CPU" before the banner: the capture kernel's first line
    # comes before its "Linux version", so the crashed kernel's console ends at "Bye!"
    raw = (arm64_core / "console.log").read_bytes()
    crashed_part = tmp_path / "console-crashed.log"
    crashed_part.write_bytes(raw[: raw.index(b"] Bye!")] + b"] Bye!\n" + b"[    0.000000] Linux version x\n")
    console = first_kernel_console(crashed_part)
    assert len(console) > 200
    missing = sorted(console - ours)
    assert not missing, f"{len(missing)} console lines missing from our log, e.g. {missing[:5]}"
    assert text.count(b"] Linux version ") == 1


def _free_without_any_flag_at_snapshot(core: Path) -> int:
    """Pfns we call free (PageBuddy at the crash) that /proc/kpageflags showed with no flag at all.

    kpageflags has no flag for a page on a per-CPU free list (not PageBuddy, not allocated for
    anything); since 6.7 the kernel hands such pages back to the buddy allocator every second
    (decay_pcp_high), so a snapshot taken a moment before the crash can catch a full per-CPU list
    that is buddy at the crash: a change, which compare() counts as explained, but a whole list at once.
    """
    from dumpfilter.filter.classify import KernelView, exclude_pages
    from dumpfilter.stats import Stats

    with dumpfilter.open(str(core / "vmcore")) as src:
        vi = VmcoreInfo.parse(src.vmcoreinfo_raw)
        kv = KernelView(src, vi)
        present = bits(src.dumpable_bitmap(), 0, src.max_mapnr)
        bm = src.dumpable_bitmap()
        exclude_pages(src, vi, bm, 16, Stats(), kv)
        ours_free = present & ~bits(bm, 0, src.max_mapnr)
        kpf = np.fromfile(core / "kpageflags", dtype="<u8")[: src.max_mapnr]
        return int((ours_free & (kpf == 0)).sum())


def test_agrees_with_kpageflags(new_core, capsys):
    res = compare(new_core)
    with dumpfilter.open(str(new_core / "vmcore")) as src:
        present = int(src.dumpable_bitmap().count())
    pcp = _free_without_any_flag_at_snapshot(new_core)
    with capsys.disabled():
        print(f"\n== {new_core.name}: agreement with kpageflags")
        for kind, (agree, lines, unexplained) in res.items():
            print(f"  {kind}: {agree:.4f}% ({len(lines)} disagreeing ranges, {unexplained} pfns unexplained)")
            for line in lines:
                print("    " + line)
        print(f"  free at the crash, no flag at all in the snapshot (per-CPU lists): {pcp} pfns")
    for kind, (agree, lines, unexplained) in res.items():
        assert unexplained == 0, f"{kind}: {unexplained} disagreeing pfns not explained by a change"
        if kind == "free":
            # a per-CPU list drained between snapshot and crash is not held against us
            agree = min(100.0, agree + 100.0 * pcp / present)
        assert agree >= THRESHOLD[kind], f"{kind}: {agree:.4f}% < {THRESHOLD[kind]}%"


@pytest.mark.parametrize("level", [1, 2, 4, 8, 16, 31])
def test_every_level_on_the_new_kernels(new_core, tmp_path, level):
    """Each dump level excludes what --mem-usage counts, and nothing else."""
    out = tmp_path / "d"
    r = run(["-z", "-d", level, "--show-stats", new_core / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    counts = report_counts(r.stdout.decode())
    kd = KdumpFile.load(str(out))
    assert kd.dump_level == level and b"aarch64" in kd.utsname
    excluded = int(kd.bitmap1.sum() - kd.bitmap2.sum())
    want = {1: 0, 2: counts["cache"], 4: counts["cache"] + counts["cache_private"], 8: counts["user"],
            16: counts["free"], 31: counts["cache"] + counts["cache_private"] + counts["user"] + counts["free"]}
    assert excluded == want[level]
    assert counts["zero"] > 0 if level & 1 else counts["zero"] == 0
    if level & 8:
        assert counts["user"] > (160 << 20) // kd.block_size // 2  # the workload's anonymous memory
    if level & 16:
        assert counts["free"] > 1000


def test_refilter_and_outputs(new_core, tmp_path):
    """A kdump-compressed arm64 input (machine from its utsname) refilters to the same bitmap; -E
    writes an AArch64 ELF core; -F | -R gives the same file; dmesg reads the same from all."""
    vmcore = new_core / "vmcore"
    d1, r31, d31 = tmp_path / "d1", tmp_path / "r31", tmp_path / "d31"
    assert run(["-l", "-d", "1", vmcore, d1]).returncode == 0
    assert run(["-z", "-d", "31", d1, r31]).returncode == 0
    assert run(["-l", "-d", "31", vmcore, d31]).returncode == 0
    a, b = KdumpFile.load(str(r31)), KdumpFile.load(str(d31))
    assert (a.bitmap2 == b.bitmap2).all() and a.phys_base == b.phys_base
    elf = tmp_path / "e"
    assert run(["-E", "-d", "31", vmcore, elf]).returncode == 0
    head = elf.read_bytes()[:64]
    assert head[:4] == b"\x7fELF" and struct.unpack_from("<H", head, 18)[0] == EM_AARCH64
    want = cli_dmesg(vmcore, tmp_path / "a.txt")
    assert cli_dmesg(d31, tmp_path / "b.txt") == want == cli_dmesg(elf, tmp_path / "c.txt")


# --- drgn -----------------------------------------------------------------------------------------


def test_drgn_reads_our_dumps(arm64_core, tmp_path):
    """Our kdump-compressed (-l -d 31) and ELF (-E -d 31) dumps of every arm64 fixture."""
    drgn = pytest.importorskip("drgn")
    from fixtures.dbgsym import vmlinux

    debug = vmlinux(arm64_core)
    release = (arm64_core / "kernel-release").read_text().strip()
    hz = int(re.search(r"^CONFIG_HZ=(\d+)$", (arm64_core / "config").read_text(), re.M).group(1))
    uptime = float(re.findall(rb"\[\s*(\d+\.\d+)\] sysrq: Trigger a crash",
                              (arm64_core / "console.log").read_bytes())[0])
    for opts in (["-l"], ["-E"]):
        out = tmp_path / f"d31{opts[0]}"
        assert run([*opts, "-d", "31", arm64_core / "vmcore", out]).returncode == 0
        prog = drgn.Program()
        prog.set_core_dump(str(out))
        assert prog.platform.arch == drgn.Architecture.AARCH64
        prog.load_debug_info([str(debug)], default=False, main=True)
        assert prog["init_uts_ns"].name.release.string_().decode() == release
        assert prog["init_uts_ns"].name.machine.string_() == b"aarch64"
        # jiffies start at INITIAL_JIFFIES, -300 s as an unsigned int, and count HZ per second of uptime
        ticks = (prog["jiffies"].value_() - (1 << 32) + 300 * hz) % (1 << 64)
        assert abs(ticks / hz - uptime) < 2, (ticks, hz, uptime)
        frames = [f.name for f in prog.crashed_thread().stack_trace()]
        assert "sysrq_handle_crash" in frames and "panic" in frames, frames
    # drgn reads the physical pages we dumped as we dumped them
    kd = KdumpFile.load(str(tmp_path / "d31-l"))
    prog = drgn.Program()
    prog.set_core_dump(str(tmp_path / "d31-l"))
    pfns = kd.dumped_pfns()
    for pfn in pfns[:: max(1, pfns.size // 50)].tolist():
        assert prog.read(pfn * kd.block_size, kd.block_size, True) == kd.page(pfn)
