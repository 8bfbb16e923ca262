"""Acceptance tests for fixtures/realcore: real vmcores of Debian kernels.

The ELF is parsed here with struct on purpose (independent of dumpfilter).
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fixtures.realcore_lib import BuildError, build, cache_dir

pytestmark = pytest.mark.real

PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS = 1
PAGE = 4096
FILES = ("vmcore", "kpageflags", "meminfo.txt", "iomem.txt", "console.log",
         "kernel-release", "config")


# ----------------------------------------------------------------------------- ELF

def read_elf(path: Path):
    """Return (phdrs, notes) of a 64-bit little-endian ELF core.

    phdrs: list of dicts; notes: list of (name, type, desc bytes)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        assert eh[:4] == b"\x7fELF", "not an ELF file"
        assert eh[4] == 2 and eh[5] == 1, "not ELF64 little-endian"
        (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
         e_phnum, _shentsize, _shnum, _shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", eh, 16)
        assert e_type == 4, "not ET_CORE"
        assert e_machine == 62, "not x86_64"
        if e_phnum == 0xFFFF:  # PN_XNUM: the real count is sh_info of section 0
            f.seek(e_shoff)
            sh = f.read(64)
            e_phnum = struct.unpack_from("<I", sh, 44)[0]
        f.seek(e_phoff)
        raw = f.read(e_phentsize * e_phnum)
        phdrs = []
        for i in range(e_phnum):
            (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
             p_align) = struct.unpack_from("<IIQQQQQQ", raw, i * e_phentsize)
            phdrs.append(dict(type=p_type, offset=p_offset, vaddr=p_vaddr, paddr=p_paddr,
                              filesz=p_filesz, memsz=p_memsz))
        notes = []
        for ph in phdrs:
            if ph["type"] != PT_NOTE:
                continue
            f.seek(ph["offset"])
            data = f.read(ph["filesz"])
            off = 0
            while off + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                off += 12
                if namesz == 0 and descsz == 0 and ntype == 0:
                    break
                name = data[off:off + namesz].rstrip(b"\0").decode("ascii", "replace")
                off += (namesz + 3) & ~3
                desc = data[off:off + descsz]
                off += (descsz + 3) & ~3
                notes.append((name, ntype, desc))
    return phdrs, notes


def vmcoreinfo(notes) -> dict[str, str]:
    for name, _t, desc in notes:
        if name == "VMCOREINFO":
            out = {}
            for line in desc.rstrip(b"\0").decode().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v
            return out
    raise AssertionError("no VMCOREINFO note")


# ------------------------------------------------------------------------ intervals

def merge(iv):
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(x) for x in out]


def subtract(iv, holes):
    out = []
    for s, e in merge(iv):
        cur = [(s, e)]
        for hs, he in holes:
            nxt = []
            for a, b in cur:
                if he <= a or hs >= b:
                    nxt.append((a, b))
                else:
                    if a < hs:
                        nxt.append((a, hs))
                    if he < b:
                        nxt.append((he, b))
            cur = nxt
        out += cur
    return merge(out)


def parse_iomem(text: str):
    """(System RAM ranges, Crash kernel ranges) as half-open [start, end)."""
    ram, crash = [], []
    for line in text.splitlines():
        if " : " not in line:
            continue
        rng, name = line.strip().split(" : ", 1)
        s, e = (int(x, 16) for x in rng.split("-"))
        if name == "System RAM" and not line.startswith(" "):
            ram.append((s, e + 1))
        elif name == "Crash kernel":
            crash.append((s, e + 1))
    return merge(ram), merge(crash)


def load_ranges(phdrs):
    return merge([(p["paddr"], p["paddr"] + p["memsz"]) for p in phdrs if p["type"] == PT_LOAD])


# -------------------------------------------------------------------------- tests

KDUMP_CORES = ["core_61", "core_612", "core_7x"]


@pytest.fixture(params=KDUMP_CORES)
def kdump_core(request) -> Path:
    return request.getfixturevalue(request.param)


def test_files_present(kdump_core):
    for name in FILES:
        assert (kdump_core / name).is_file(), name
        assert (kdump_core / name).stat().st_size > 0, name
    info = json.loads((kdump_core / "build-info.json").read_text())
    release = (kdump_core / "kernel-release").read_text().strip()
    assert info["release"] == release
    # The kernel release names the Debian package it came from.
    assert any(release in p for p in info["packages"]), (release, info["packages"])
    meminfo = (kdump_core / "meminfo.txt").read_text()
    assert "MemTotal:" in meminfo and "--- /proc/vmstat ---" in meminfo and "nr_free_pages" in meminfo
    assert "CONFIG_CRASH_DUMP=y" in (kdump_core / "config").read_text()
    console = (kdump_core / "console.log").read_text(errors="replace")
    # Both kernels booted on the serial console: the crashed one and the capture kernel.
    assert console.count(f"Linux version {release}") >= 2


def test_vmcoreinfo_osrelease(kdump_core):
    _ph, notes = read_elf(kdump_core / "vmcore")
    info = vmcoreinfo(notes)
    release = (kdump_core / "kernel-release").read_text().strip()
    assert info["OSRELEASE"] == release
    assert info["PAGESIZE"] == str(PAGE)


def test_prstatus_per_cpu(kdump_core):
    _ph, notes = read_elf(kdump_core / "vmcore")
    prstatus = [n for n in notes if n[0] == "CORE" and n[1] == NT_PRSTATUS]
    assert len(prstatus) == 2  # the guest runs with -smp 2


def test_pt_load_covers_ram_minus_crashkernel(kdump_core):
    phdrs, _notes = read_elf(kdump_core / "vmcore")
    ram, crash = parse_iomem((kdump_core / "iomem.txt").read_text())
    assert crash, "no 'Crash kernel' range in iomem.txt"
    loads = load_ranges(phdrs)
    # x86 kdump (kexec_file) leaves the first MiB out of the ELF headers: it is always
    # reserved and the capture kernel's own copy of it is not the crashed kernel's.
    expected = subtract(ram, crash + [(0, 1 << 20)])
    assert subtract(expected, loads) == [], "System RAM not covered by PT_LOADs"
    assert subtract(loads, ram) == [], "PT_LOAD outside System RAM"
    for s, e in crash:
        assert subtract([(s, e)], loads) == [(s, e)], "crashkernel region dumped"
    # File sizes agree with the PT_LOADs.
    size = (kdump_core / "vmcore").stat().st_size
    assert all(p["offset"] + p["filesz"] <= size for p in phdrs)


def test_kpageflags_covers_dump(kdump_core):
    phdrs, _notes = read_elf(kdump_core / "vmcore")
    top = max(p["paddr"] + p["memsz"] for p in phdrs if p["type"] == PT_LOAD)
    size = (kdump_core / "kpageflags").stat().st_size
    assert size % 8 == 0
    assert size // 8 >= -(-top // PAGE), (size // 8, top // PAGE)
    # Some page must be a user (anonymous, KPF_ANON bit 12) page from the workload.
    data = (kdump_core / "kpageflags").read_bytes()
    flags = struct.unpack(f"<{len(data) // 8}Q", data)
    assert sum(1 for f in flags if f >> 12 & 1) > 160 * 256 // 2


def test_7x_is_newest_backport(core_7x):
    info = json.loads((core_7x / "build-info.json").read_text())
    assert info["package_version"].startswith("7.")


def test_makedumpfile_61(core_61, tmp_path):
    exe = shutil.which("makedumpfile")
    assert exe, "makedumpfile is not installed (apt-get install makedumpfile)"
    out = tmp_path / "dump"
    r = subprocess.run([exe, "-l", "-d", "31", str(core_61 / "vmcore"), str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_file() and out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"KDUMP   "


def test_qemu_producer_61(core_qemu_61):
    phdrs, notes = read_elf(core_qemu_61 / "vmcore")
    info = vmcoreinfo(notes)
    assert info["OSRELEASE"] == (core_qemu_61 / "kernel-release").read_text().strip()
    prstatus = [n for n in notes if n[0] == "CORE" and n[1] == NT_PRSTATUS]
    assert len(prstatus) == 2
    ram, _crash = parse_iomem((core_qemu_61 / "iomem.txt").read_text())
    # QEMU dumps all guest RAM, the crashkernel region included.
    assert subtract(ram, load_ranges(phdrs)) == []
    assert (core_qemu_61 / "kpageflags").stat().st_size > 0


def test_failed_guest_reports_console_and_leaves_nothing(monkeypatch, core_61):
    # core_61 first so the kernel package is already in the cache.
    monkeypatch.setenv("REALCORE_TEST_FAIL", "nocrash")
    cores = cache_dir() / "cores"
    before = set(cores.iterdir()) if cores.exists() else set()
    with pytest.raises(BuildError) as ei:
        build("6.1", timeout=60, force=True)
    msg = str(ei.value)
    assert "no crash seen" in msg and "timeout" in msg
    assert "last 30 lines of console.log" in msg
    assert "REALCORE: test hook: not crashing" in msg
    after = set(cores.iterdir()) if cores.exists() else set()
    assert after == before, f"left behind: {sorted(map(str, after - before))}"
    assert not any("fail_nocrash" in p.name for p in after)
    assert not list(cores.glob("**/vmcore.tmp*"))
