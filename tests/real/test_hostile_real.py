"""Issue 11 on the real Linux 6.1 vmcore: each class of hostile or broken input ends in exit code 1 with
one line (or, for a bad crash time, a complete dump), no traceback, no signal, peak memory under 64 MiB
in an address-space-limited child, the input unchanged and no complete-looking output."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from tests.helpers import scratch_dir
from tests.hostile import (assert_refused, fingerprint, load_paddr_patch, looks_complete, patched, run_limited,
                           set_value, vmcoreinfo_patch)

GiB = 1 << 30


@pytest.fixture(scope="module")
def scratch(core_61, tmp_path_factory):
    """A private sparse copy of the 6.1 vmcore, mutated in place by the tests and put back after each."""
    with scratch_dir(tmp_path_factory, "hostile") as d:
        dst = d / "vmcore"
        subprocess.run(["cp", "--sparse=always", str(core_61 / "vmcore"), str(dst)], check=True)
        yield dst


def _limit(path) -> int:
    return os.path.getsize(path) + GiB  # the vmcore is mapped: address space, not memory


def _refused(vmcore, out, opts, expect):
    r = run_limited([*opts, vmcore, out], address_space=_limit(vmcore))
    assert_refused(r, expect)
    assert not looks_complete(out)
    return r


@pytest.mark.parametrize("key, value, said", [
    ("OFFSET(page.flags)", "4096", "OFFSET(page.flags)=4096 lies outside SIZE(page)=64"),
    ("OFFSET(page.private)", "-8", "OFFSET(page.private)=-8"),
    ("SIZE(page)", "1048576", "SIZE(page)=1048576"),
    ("OFFSET(mem_section.section_mem_map)", "99999999", "OFFSET(mem_section.section_mem_map)"),
    ("PAGESIZE", "65536", "page size 65536 does not exist on x86_64"),
])
def test_vmcoreinfo_that_would_reach_outside_its_structures(scratch, tmp_path, key, value, said):
    before = fingerprint(scratch)
    with patched(scratch, vmcoreinfo_patch(scratch, set_value(key, value))):
        _refused(scratch, tmp_path / "out", ["-l", "-d", "31"], said)
    assert fingerprint(scratch) == before


def test_printk_ring_claiming_2_gib(scratch, tmp_path):
    """size_bits of the text ring set to 31: the log is read as far as the dump holds it, in bounded
    memory (this step runs first in a capture, in a small reservation)."""
    from dumpfilter import open as dopen
    from dumpfilter.kernel.arch import for_machine
    from dumpfilter.kernel.vmcoreinfo import VmcoreInfo

    src = dopen(str(scratch))
    vi = VmcoreInfo.parse(src.vmcoreinfo_raw)
    mmu = for_machine(src.elf_machine).mmu(src, vi)
    prb = int.from_bytes(mmu.read(vi.symbol["prb"], 8), "little")
    field = prb + vi.offset["printk_ringbuffer.text_data_ring"] + vi.offset["prb_data_ring.size_bits"]
    pa = mmu.vtop(field)
    off = next(foff + pa - s for s, e, foff in src.read_index if s <= pa < e)
    src.close()
    with open(scratch, "rb") as f:
        f.seek(off)
        assert 12 <= struct.unpack("<I", f.read(4))[0] <= 25, "not the size_bits of a real ring"
    log = tmp_path / "dmesg.txt"
    with patched(scratch, {off: struct.pack("<I", 31)}):
        r = run_limited(["--dump-dmesg", scratch, log], address_space=_limit(scratch))
    text = r.stderr.decode(errors="replace")
    assert r.returncode in (0, 1) and "Traceback" not in text and "internal error" not in text, text
    assert r.peak_mib < 64, f"peak RSS {r.peak_mib:.0f} MiB"
    if r.returncode:
        assert len(r.lines) == 1 and r.lines[0].startswith("pydumpfile: "), r.lines


def test_memory_beyond_the_physical_address_space(scratch, tmp_path):
    with patched(scratch, load_paddr_patch(scratch, -1, 1 << 51)):
        for opts in (["-l", "-d", "31"], ["--dry-run", "-l", "-d", "1"]):
            _refused(scratch, tmp_path / "out", opts, "beyond the 46-bit physical address space")


def test_output_equal_to_input_never_destroys_it(scratch, tmp_path):
    before = fingerprint(scratch)
    link = tmp_path / "link"
    os.symlink(scratch, link)
    for target in (scratch, link):
        assert_refused(run_limited(["-f", "-l", "-d", "1", scratch, target], address_space=_limit(scratch)),
                       "is the input")
        assert_refused(run_limited(["-f", "--dump-dmesg", scratch, target], address_space=_limit(scratch)),
                       "is the input")
    assert fingerprint(scratch) == before


def test_refiltering_a_dump_whose_header_lies(scratch, tmp_path):
    dump = tmp_path / "d31"
    assert run_limited(["-l", "-d", "31", scratch, dump], address_space=_limit(scratch)).returncode == 0
    raw = bytearray(dump.read_bytes())
    bs, = struct.unpack_from("<i", raw, 428)
    struct.pack_into("<I", raw, 436, 1 << 20)  # bitmap_blocks for 2^33 pfns
    struct.pack_into("<Q", raw, bs + 96, 1 << 33)  # max_mapnr_64
    dump.write_bytes(bytes(raw))
    _refused(dump, tmp_path / "out", ["-l", "-d", "31"], "past the end of the file")
