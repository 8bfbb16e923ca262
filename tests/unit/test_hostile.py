"""Issue 11 on synthetic vmcores: every class of hostile or broken input ends in exit code 1 with one
line, no traceback, no signal, bounded memory, the input untouched and no complete-looking output.
(tests/real/test_hostile_real.py does the same on a real 6.1 vmcore.)"""
from __future__ import annotations

import os
import shutil
import struct

import pytest

from tests.hostile import (assert_refused, fingerprint, load_paddr_patch, looks_complete, patched, run_limited,
                           set_value, vmcoreinfo_patch)


@pytest.fixture()
def core(synth, tmp_path):
    """A private copy of the 64 MiB synthetic vmcore (tests mutate it)."""
    dst = tmp_path / "vmcore"
    shutil.copyfile(synth.path, dst)
    return dst


def _dump(core, out, *opts):
    before = fingerprint(core)
    r = run_limited([*opts, core, out])
    assert fingerprint(core) == before, "the input changed"
    return r


@pytest.mark.parametrize("key, value, said", [
    ("OFFSET(page.flags)", "9999", "OFFSET(page.flags)=9999 lies outside SIZE(page)"),
    ("OFFSET(page._mapcount)", "-4", "OFFSET(page._mapcount)=-4 lies outside SIZE(page)"),
    ("OFFSET(page.compound_head)", "60", "OFFSET(page.compound_head)=60 lies outside SIZE(page)=64"),
    ("SIZE(page)", "100000", "SIZE(page)=100000"),
    ("LENGTH(zone.free_area)", "4000", "LENGTH(zone.free_area)=4000"),
    ("OFFSET(mem_section.section_mem_map)", "123456789", "OFFSET(mem_section.section_mem_map)=123456789"),
    ("PAGESIZE", "65536", "page size 65536 does not exist on x86_64"),
])
def test_vmcoreinfo_values_that_would_read_out_of_bounds(core, tmp_path, key, value, said):
    out = tmp_path / "out"
    with patched(core, vmcoreinfo_patch(core, set_value(key, value))):
        r = _dump(core, out, "-l", "-d", "31")
    assert_refused(r, said)
    assert not out.exists()


def test_crashtime_out_of_range_is_ignored_not_fatal(core, tmp_path):
    out = tmp_path / "out"
    with patched(core, vmcoreinfo_patch(core, set_value("CRASHTIME", "99999999999999999999999"))):
        r = _dump(core, out, "-l", "-d", "31")
    assert r.returncode == 0, r.stderr
    assert looks_complete(out)
    assert struct.unpack_from("<q", out.read_bytes(), 408)[0] == 0  # tv_sec left 0


def test_load_beyond_the_physical_address_space(core, tmp_path):
    out = tmp_path / "out"
    with patched(core, load_paddr_patch(core, -1, 1 << 51)):
        for opts in (["-l", "-d", "31"], ["--dry-run", "-l", "-d", "1"], ["-E", "-d", "0"]):
            r = _dump(core, out, *opts)
            assert_refused(r, "beyond the 46-bit physical address space")
    assert not out.exists()


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_output_is_the_input(core, tmp_path, how):
    target = core
    if how == "symlink":
        target = tmp_path / "link"
        os.symlink(core, target)
    elif how == "hardlink":
        target = tmp_path / "hard"
        os.link(core, target)
    before = fingerprint(core)
    for opts in (["-f", "-l", "-d", "1"], ["-f", "-E", "-d", "1"]):
        assert_refused(run_limited([*opts, core, target]), "is the input")
    assert_refused(run_limited(["-f", "--dump-dmesg", core, target]), "is the input")
    with open(core, "rb") as stdin:
        assert_refused(run_limited(["-R", "-f", target], stdin=stdin.fileno()), "is the input")
    with open(core, "ab") as out:  # -F >> vmcore: the stream would be appended to what it reads
        assert_refused(run_limited(["-F", "-l", "-d", "1", target], stdout=out.fileno()), "is the input")
    assert fingerprint(core) == before


def test_report_json_into_a_missing_directory_is_refused_before_work(core, tmp_path):
    out = tmp_path / "out"
    r = _dump(core, out, "-l", "-d", "31", "--report-json", tmp_path / "nowhere" / "r.json")
    assert_refused(r, "not a writable directory")
    assert not out.exists()


def test_closed_stdout_with_F(core):
    r = run_limited(["-F", "-l", "-d", "31", core], close_stdout=True)
    assert_refused(r, "standard output is closed")


def test_fifo_as_vmcore_fails_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_limited(["-l", "-d", "31", fifo, tmp_path / "out"], timeout=60)
    assert_refused(r, "is a FIFO")
    assert not (tmp_path / "out").exists()


def test_flattened_stream_without_data_is_not_a_dump(tmp_path):
    stream = tmp_path / "empty.flat"
    stream.write_bytes(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1) + bytes(4096 - 32)
                       + struct.pack(">qq", -1, -1))
    with open(stream, "rb") as stdin:
        r = run_limited(["-R", tmp_path / "out"], stdin=stdin.fileno())
    assert_refused(r, "holds no data")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("limit", ["100", "1M"])
def test_size_limit_is_one_line_and_incomplete(core, tmp_path, limit):
    out = tmp_path / "out"
    r = _dump(core, out, "-l", "-d", "1", "-L", limit)
    assert_refused(r, "is marked incomplete")
    assert not looks_complete(out)


def test_corrupt_zstd_page_names_the_page(core, tmp_path):
    dump = tmp_path / "dump.z"
    assert run_limited(["-z", "-d", "1", core, dump]).returncode == 0
    raw = bytearray(dump.read_bytes())
    bs, = struct.unpack_from("<i", raw, 8 + 4 + 390 + 6 + 16 + 4)
    sub_blocks, bitmap_blocks = struct.unpack_from("<iI", raw, 8 + 4 + 390 + 6 + 16 + 4 + 4)
    pd = (1 + sub_blocks + bitmap_blocks) * bs
    for i in range(1000):  # the first zstd-compressed page: spoil the middle of its frame
        off, size, flags, _ = struct.unpack_from("<qIIQ", raw, pd + 24 * i)
        if flags == 0x20 and size > 64:
            raw[off + size // 2 : off + size // 2 + 16] = b"\xff" * 16
            break
    else:
        pytest.fail("no zstd page")
    dump.write_bytes(bytes(raw))
    r = run_limited(["-l", "-d", "31", dump, tmp_path / "out"])
    assert_refused(r, "zstd")
    assert "pfn" in r.lines[0]
    assert not looks_complete(tmp_path / "out")


def test_kdump_header_claiming_more_pfns_than_the_file_holds(core, tmp_path):
    dump = tmp_path / "dump"
    assert run_limited(["-l", "-d", "31", core, dump]).returncode == 0
    raw = bytearray(dump.read_bytes())
    bs, = struct.unpack_from("<i", raw, 428)
    struct.pack_into("<I", raw, 436, 1 << 31)  # bitmap_blocks: 2^31 blocks of bitmap
    struct.pack_into("<Q", raw, bs + 96, 1 << 33)  # max_mapnr_64
    dump.write_bytes(bytes(raw))
    assert_refused(run_limited(["-l", "-d", "31", dump, tmp_path / "out"]), "past the end of the file")


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_vmcore_is_refused(core, tmp_path, mmap):
    out = tmp_path / "out"
    with open(core, "r+b") as f:
        f.truncate(os.path.getsize(core) // 2)
    r = run_limited(["-l", "-d", "1", *([] if mmap else ["--non-mmap"]), core, out])
    assert_refused(r, "truncated")
    assert not looks_complete(out) and not out.exists()


def test_kdump_header_claiming_2_pow_33_pfns_in_a_file_that_holds_them(core, tmp_path):
    """The bitmaps really are in the (sparse) file: memory must follow the cycle, not max_mapnr."""
    dump = tmp_path / "dump"
    assert run_limited(["-l", "-d", "31", core, dump]).returncode == 0
    raw = bytearray(dump.read_bytes())
    bs, = struct.unpack_from("<i", raw, 428)
    struct.pack_into("<I", raw, 436, 1 << 20)  # bitmap_blocks: 2 x 2 GiB of bitmaps for 2^33 pfns
    struct.pack_into("<Q", raw, bs + 96, 1 << 33)  # max_mapnr_64
    dump.write_bytes(bytes(raw))
    with open(dump, "r+b") as f:
        f.truncate(5 << 30)  # a hole: the bitmaps read as zeros
    r = run_limited(["--dry-run", "-l", "-d", "31", dump])
    text = r.stderr.decode(errors="replace")
    assert r.returncode in (0, 1) and "Traceback" not in text and "internal error" not in text, text
    assert r.peak_mib < 64, f"peak RSS {r.peak_mib:.0f} MiB"


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs: the disk fills up for real (ENOSPC), not through -L."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    import subprocess

    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("can't mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_is_one_line_and_incomplete(core, tiny_fs):
    out = tiny_fs / "dump"
    r = _dump(core, out, "-l", "-d", "0")
    assert_refused(r, "No space left on device")
    assert "marked incomplete" in r.lines[0] and not looks_complete(out)
    # with further dump levels, each retry says so on stdout and the last failure is still one line
    r = _dump(core, out, "-f", "-l", "-d", "0,1")
    assert_refused(r, "No space left on device")
    assert b"Retry to create a dumpfile by dump_level(1)." in r.stdout
