"""--split / --reassemble on the real 6.1 vmcore against Debian's makedumpfile 1.7.2: the same ranges,
sets that join back byte for byte (ours by ours and by makedumpfile, makedumpfile's by ours), and the
joined pages equal to the unsplit dump's."""
from __future__ import annotations

import re
import struct

import pytest

from tests.helpers import makedumpfile, run

SUB = struct.Struct("<QiiQQqQqQqQQQQ")


def _range(path):
    raw = open(path, "rb").read(4096 + SUB.size)
    return SUB.unpack_from(raw, 4096)[11:13]


@pytest.mark.parametrize("n", [2, 3])
def test_split_sets_against_makedumpfile(core_61, tmp_path, n):
    vm = str(core_61 / "vmcore")
    opts = ["-l", "-d", "31", "--splitblock-size", "131072"]
    whole, mwhole = tmp_path / "whole", tmp_path / "mwhole"
    assert run(opts[:3] + [vm, whole]).returncode == 0
    assert makedumpfile(opts[:3] + [vm, mwhole]).returncode == 0
    ours = [tmp_path / f"o{i}" for i in range(n)]
    theirs = [tmp_path / f"m{i}" for i in range(n)]
    r = run(["--split", *opts, vm, *ours])
    assert r.returncode == 0, r.stderr.decode()
    r = makedumpfile(["--split", *opts, vm, *theirs])
    assert r.returncode == 0, r.stdout + r.stderr
    assert [_range(p) for p in ours] == [_range(p) for p in theirs]
    for parts, tool, want in ((ours, run, whole), (ours, makedumpfile, whole), (theirs, run, mwhole)):
        out = tmp_path / "joined"
        if out.exists():
            out.unlink()
        r = tool(["--reassemble", *parts, out])
        assert r.returncode == 0, r
        assert out.read_bytes() == want.read_bytes(), f"{tool.__name__} joining {parts[0].name}..."


def test_crash_opens_a_split_set(core_61, tmp_path):
    """crash 8 with Debian's -dbg vmlinux opens our --split set (both files on its command line) and
    reads the crashed kernel's release, the panic, a stack trace and the log from it."""
    import shutil
    import subprocess

    from fixtures.dbgsym import vmlinux

    crash = shutil.which("crash")
    if crash is None:
        pytest.fail("crash is not installed (.ci/install-deps.sh installs it)")
    vm = str(core_61 / "vmcore")
    parts = [tmp_path / "p0", tmp_path / "p1"]
    r = run(["--split", "-l", "-d", "31", "--splitblock-size", "131072", vm, *parts])
    assert r.returncode == 0, r.stderr.decode()
    assert all(p.stat().st_size > 100_000 for p in parts), [p.stat().st_size for p in parts]
    cmds = "sys\nbt\nlog\nquit\n"
    out = subprocess.run([crash, "-s", str(vmlinux(core_61)), *map(str, parts)], input=cmds.encode(),
                         capture_output=True, timeout=600)
    text = out.stdout.decode(errors="replace")
    assert "RELEASE: 6.1." in text, text[-3000:] + out.stderr.decode(errors="replace")[-2000:]
    assert 'PANIC: "Kernel panic - not syncing: sysrq triggered crash"' in text
    assert re.search(r"#\d+ \[[0-9a-f]+\] panic at ", text), text[-3000:]
    assert "sysrq: Trigger a crash" in text
    assert "excluded" not in text.lower() and "seek error" not in text.lower(), text[-3000:]
