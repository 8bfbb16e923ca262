"""ENOSPC / -L: the file is marked incomplete, lost pages have zeroed descriptors, exit 1."""
from __future__ import annotations

import signal
import struct
import subprocess
import time

import pytest

from tests.helpers import PYDUMPFILE, KdumpFile, run


def test_size_limit_marks_kdump_incomplete(synth, tmp_path):
    out = tmp_path / "dump"
    r = run(["-l", "-d", "1", "-L", "4M", synth.path, out])
    assert r.returncode == 1
    assert b"Size limit(4194304) reached." in r.stderr
    assert b"incomplete" in r.stderr
    assert out.stat().st_size <= 4 << 20
    kd = KdumpFile.load(str(out))
    assert kd.status & 0x8
    offs = kd.descs["offset"]
    lost = offs == 0
    assert lost.any() and (~lost).any()
    # descriptors are valid up to the first lost one, then all zero
    first_lost = int(lost.argmax())
    assert lost[first_lost:].all()
    for i in range(0, first_lost, 50):
        pfn = int(kd.dumped_pfns()[i])
        assert kd.page(pfn) == synth.page(pfn)
    # every valid descriptor's data lies inside the file
    ok = ~lost
    assert ((offs[ok] + kd.descs["size"][ok]) <= out.stat().st_size).all()


def test_retry_with_next_dump_level(synth, tmp_path):
    out = tmp_path / "dump"
    # level 0 needs ~64 MiB raw; -d 0,1 with -c and a 40 MiB limit: first try fails, the retry fits
    r = run(["-d", "0,1", "-L", "36M", synth.path, out])
    assert b"Retry to create a dumpfile by dump_level(1)." in r.stdout
    kd = KdumpFile.load(str(out))
    assert kd.dump_level == 1
    assert (r.returncode == 0) == (kd.status & 0x8 == 0)


def test_size_limit_marks_elf_incomplete(synth, tmp_path):
    out = tmp_path / "dump.elf"
    r = run(["-E", "-d", "1", "-L", "2M", synth.path, out])
    assert r.returncode == 1
    raw = open(out, "rb").read(64)
    assert struct.unpack_from("<I", raw, 48)[0] & 1


def test_sigterm_leaves_file_marked_incomplete(tmp_path):
    from fixtures.synthetic import SynthSpec, generate

    info = generate(tmp_path / "core", SynthSpec(ram=[(0x1000, 0x9FC00), (0x100000, 0x30000000)], content="random"))
    out = tmp_path / "dump"
    p = subprocess.Popen(PYDUMPFILE + ["-c", "-d", "1", info.path, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 8 << 20):
        if p.poll() is not None:
            break
        time.sleep(0.05)
    if p.poll() is not None:
        pytest.skip("the dump finished before it could be interrupted")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert b"SIGTERM" in err and b"incomplete" in err
    assert KdumpFile.load(str(out)).status & 0x8
