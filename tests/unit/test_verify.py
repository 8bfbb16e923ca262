"""pydumpfile verify (issue 14): a good dump passes; each corruption is found, in one line."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from tests.helpers import KdumpFile, run


@pytest.fixture(scope="module")
def good(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "good.dump"
    r = run(["-f", "-l", "-d", "1", synth.path, out])
    assert r.returncode == 0, r.stderr
    return out


def _copy(good, tmp_path, name="bad.dump"):
    p = tmp_path / name
    shutil.copy(good, p)
    return p


def _verify(path, *extra):
    r = run(["verify", *map(str, extra), path])
    return r.returncode, r.stdout.decode()


def test_good_dump_passes(good, synth):
    code, out = _verify(good, "--vmcore", synth.path)
    assert code == 0 and out.endswith("ok (%d pages)\n" % len(KdumpFile.load(str(good)).dumped_pfns()))
    r = run(["verify", "--json", good])
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["ok"] and d["problems"] == [] and d["undecodable"] == 0


def test_truncated_file(good, tmp_path):
    p = _copy(good, tmp_path)
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size * 2 // 3)
    code, out = _verify(p)
    assert code == 1 and "past the end of the file" in out and "not marked incomplete" in out


def test_cut_file_marked_incomplete_is_reported(good, tmp_path):
    p = _copy(good, tmp_path)
    with open(p, "r+b") as f:
        f.seek(424)
        status = struct.unpack("<I", f.read(4))[0]
        f.seek(424)
        f.write(struct.pack("<I", status | 8))
        f.truncate(p.stat().st_size // 2)
    code, out = _verify(p)
    assert code == 1 and "marked incomplete" in out and "not marked incomplete" not in out


def test_wrong_bitmap_bit(good, tmp_path):
    k = KdumpFile.load(str(good))
    pfns = k.dumped_pfns()
    victim = int(pfns[len(pfns) // 2])
    p = _copy(good, tmp_path)
    raw = good.read_bytes()
    bs = k.block_size
    sub_hdr_size = struct.unpack_from("<i", raw, 432)[0]
    bitmap_blocks = struct.unpack_from("<I", raw, 436)[0]
    bm2 = (1 + sub_hdr_size) * bs + bitmap_blocks * bs // 2
    with open(p, "r+b") as f:
        f.seek(bm2 + victim // 8)
        byte = f.read(1)[0]
        f.seek(bm2 + victim // 8)
        f.write(bytes([byte & ~(1 << (victim % 8))]))
    code, out = _verify(p)
    assert code == 1 and ("out of place" in out or "descriptors" in out), out


def test_undecodable_page(good, tmp_path):
    k = KdumpFile.load(str(good))
    i = next(i for i, d in enumerate(k.descs) if d["flags"] != 0)  # a compressed page
    off, size = int(k.descs[i]["offset"]), int(k.descs[i]["size"])
    p = _copy(good, tmp_path)
    with open(p, "r+b") as f:
        f.seek(off)
        f.write(b"\xff" * size)
    code, out = _verify(p)
    assert code == 1 and "does not decode" in out


def test_changed_byte_found_with_vmcore(good, synth, tmp_path):
    k = KdumpFile.load(str(good))
    i = next(i for i, d in enumerate(k.descs) if d["flags"] == 0 and int(d["offset"]) != k.data_off)  # a raw page
    off = int(k.descs[i]["offset"])
    p = _copy(good, tmp_path)
    with open(p, "r+b") as f:
        f.seek(off + 100)
        b = f.read(1)[0]
        f.seek(off + 100)
        f.write(bytes([b ^ 0x01]))
    assert _verify(p)[0] == 0  # still a well-formed dump
    code, out = _verify(p, "--vmcore", synth.path)
    assert code == 1 and "differs from" in out and "at byte 100" in out


def test_not_a_dump(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"hello" * 200)
    code, out = _verify(p)
    assert code == 1 and "not a kdump-compressed file" in out
