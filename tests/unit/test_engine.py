"""Issue 5: output independent of --num-threads, bounded memory, worker failures stop the run."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tests.helpers import PYDUMPFILE, KdumpFile, error_lines, run


@pytest.mark.parametrize("codec", ["-l", "-c", "-z", "-p"])
def test_output_identical_for_any_thread_count(synth, tmp_path, codec):
    outs = []
    for n in (1, 2, 4):
        out = tmp_path / f"t{n}"
        r = run([codec, "-d", "1", "--num-threads", n, synth.path, out])
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    kd = KdumpFile.load(str(tmp_path / "t4"))
    for pfn in kd.dumped_pfns()[::97].tolist():
        assert kd.page(pfn) == synth.page(pfn)


_MEASURE = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _peak_rss_kb(args: list[str]) -> tuple[int, bytes]:
    """Peak RSS of pydumpfile, forked from a small fresh interpreter (not from pytest, whose pages
    a forked child would count until it execs)."""
    r = subprocess.run([PYDUMPFILE[0], "-c", _MEASURE] + PYDUMPFILE + [str(a) for a in args],
                       capture_output=True, timeout=600)
    rc, rss = r.stdout.split()
    assert int(rc) == 0, r.stderr.decode()
    return int(rss), r.stderr


@pytest.fixture(scope="module")
def big_sparse(tmp_path_factory):
    from fixtures.synthetic import SynthSpec, generate

    # on tmpfs when there is one: this disk takes a minute to delete a large sparse file
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        import tempfile

        path = os.path.join(tempfile.mkdtemp(dir=shm, prefix="pydumpfile-test-"), "vmcore8g")
    else:
        path = tmp_path_factory.mktemp("big") / "vmcore8g"
    info = generate(path, SynthSpec(ram=[(0x1000, 0x9FC00), (0x100000, 0xC0000000), (0x100000000, 0x240000000)],
                                    content="sparse"))
    yield info
    os.unlink(path)
    if str(path).startswith("/dev/shm/"):
        os.rmdir(os.path.dirname(path))


@pytest.mark.parametrize("threads", [0, 2])
def test_memory_bounded_on_8gib(big_sparse, tmp_path, threads):
    out = tmp_path / "dump"
    rss, _ = _peak_rss_kb(["-l", "-d", "1", "--num-threads", threads, big_sparse.path, out])
    assert big_sparse.max_mapnr * 4096 >= 8 << 30
    assert rss <= 64 * 1024, f"peak RSS {rss} KiB for an 8 GiB vmcore"
    kd = KdumpFile.load(str(out))
    expect = np.intersect1d(big_sparse.zero_pfns, kd.dumped_pfns()).size
    assert kd.zero_pfns().size == expect > 2_000_000


def test_worker_failure_stops_the_run(synth, tmp_path):
    good = tmp_path / "good"
    assert run(["-l", "-d", "0", synth.path, good]).returncode == 0
    kd = KdumpFile.load(str(good))
    raw = bytearray(good.read_bytes())
    # corrupt one LZO page in the middle: decompression fails inside a worker thread
    i = int(np.flatnonzero(kd.descs["flags"] == 2)[len(kd.descs) // 3])
    off, size = int(kd.descs["offset"][i]), int(kd.descs["size"][i])
    raw[off : off + size] = b"\xff" * size
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "out"
    r = run(["-z", "-d", "1", "--num-threads", "2", bad, out], timeout=60)
    assert r.returncode == 1
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "decompression failed" in lines[0] and "incomplete" in lines[0]
    assert KdumpFile.load(str(out)).status & 0x8


def test_report_json(synth, tmp_path):
    import json

    out, rep = tmp_path / "dump", tmp_path / "report.json"
    r = run(["-l", "-d", "1", "--num-threads", "2", "--report-json", rep, synth.path, out])
    assert r.returncode == 0, r.stderr.decode()
    d = json.loads(rep.read_text())
    kd = KdumpFile.load(str(out))
    assert d["zero"] == kd.zero_pfns().size > 0
    assert d["dumped"] + d["zero"] == kd.dumped_pfns().size
    assert 0.99 * out.stat().st_size <= d["write_bytes"] <= out.stat().st_size + 4096  # holes are not written
    assert d["num_threads"] == 2 and d["compression"] == "lzo" and d["dump_level"] == 1
    assert d["seconds"]["write"] > 0 and d["input_mib_per_second"] > 0


def test_progress_line_when_asked(synth, tmp_path):
    r = run(["-l", "-d", "1", "--message-level", "31", synth.path, tmp_path / "d"])
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "\rCopying data" in err and "[100.0 %]" in err
    r = run(["-l", "-d", "1", synth.path, tmp_path / "e"])
    assert "Copying data" not in r.stderr.decode()  # not a terminal, not asked for


def test_capture_path_does_not_import_numpy(synth, tmp_path):
    """ELF vmcore → kdump-compressed file, the path a capture kernel runs, never imports numpy (its
    import alone costs 0.1 s and 14 MiB); the modules it does import are checked with -X importtime."""
    import sys
    from pathlib import Path

    out = tmp_path / "d"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dumpfilter", "-l", "-d", "31", "--num-threads", "1",
                        synth.path, str(out)], capture_output=True, cwd=str(Path(__file__).resolve().parents[2]))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.decode().splitlines() if line.startswith("import time:")]
    assert "dumpfilter.writer.kdump" in imported and "dumpfilter._speedups.compress" in imported
    assert not [m for m in imported if m.split(".")[0] == "numpy"]
    assert KdumpFile.load(str(out)).status & 0x8 == 0
