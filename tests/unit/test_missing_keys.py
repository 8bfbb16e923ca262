"""A VMCOREINFO without a key that a level needs: one line naming the key, exit 1, no output;
a real ENOSPC: the file is marked incomplete with makedumpfile's message."""
from __future__ import annotations

import os
import subprocess

import pytest

from fixtures import synthetic as S
from tests.helpers import KdumpFile, error_lines, run


@pytest.fixture(scope="module")
def core61(tmp_path_factory):
    return S.generate(tmp_path_factory.mktemp("k") / "vmcore", S.SynthSpec(pages="kernel61", seed=3))


@pytest.mark.parametrize(
    "drop,level,needle",
    [
        ("SIZE(page)=", 31, "SIZE(page)"),
        ("SYMBOL(mem_section)=", 8, "SYMBOL(mem_section)"),
        ("OFFSET(page.flags)=", 2, "OFFSET(page.flags)"),
        ("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=", 16, "PAGE_BUDDY_MAPCOUNT_VALUE"),
        ("SYMBOL(init_top_pgt)=", 31, "init_top_pgt"),
    ],
)
def test_missing_key_is_named(core61, tmp_path, drop, level, needle):
    text = "".join(line + "\n" for line in core61.vmcoreinfo.rstrip("\0").splitlines() if not line.startswith(drop))
    vmci = tmp_path / "vmcoreinfo"
    vmci.write_text(text)
    out = tmp_path / "out"
    r = run(["-l", "-d", level, "-i", vmci, core61.path, out])
    assert r.returncode == 1, r.stdout.decode() + r.stderr.decode()
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()
    # the levels that need no kernel data still work with the same file
    assert run(["-l", "-d", "1", "-i", vmci, core61.path, tmp_path / "ok"]).returncode == 0


def test_real_enospc(core61, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "dump"
        r = run(["-c", "-d", "0", core61.path, out])
        assert r.returncode == 1
        assert b"Can't write the dump file(" in r.stderr and b"No space left on device" in r.stderr
        assert b"incomplete" in r.stderr
        kd = KdumpFile.load(str(out))
        assert kd.status & 0x8
        lost = kd.descs["offset"] == 0
        assert lost.any() and not lost[0]
        size = out.stat().st_size
        ok = ~lost
        assert ((kd.descs["offset"][ok] + kd.descs["size"][ok]) <= size).all()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
