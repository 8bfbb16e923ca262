"""``pykdumpctl capture`` on a real vmcore (the cached 6.1 one, built by fixtures/realcore under QEMU on
first use): ``vmcore-dmesg.txt`` is saved before the vmcore, locally and over ssh. The synthetic-vmcore
tests of the same flow are in tests/unit/test_capture.py; what both share is in tests/capture_lib.py."""
from __future__ import annotations

import pytest

import dumpfilter
from tests.capture_lib import ctl, log_order, one_dump_dir, ssh_capture, sshd  # noqa: F401 (ctl, sshd: fixtures)


@pytest.fixture(scope="module")
def realcore_61():
    """The cached real 6.1 vmcore (built by fixtures/realcore on first use)."""
    from fixtures.realcore_lib import BuildError, build

    try:
        return build("6.1") / "vmcore"
    except BuildError as e:
        pytest.skip(f"real 6.1 vmcore unavailable: {str(e).splitlines()[0]}")


def test_local_target_saves_dmesg_first(ctl, realcore_61, tmp_path):
    rootfs = tmp_path / "rootfs"
    r = ctl.capture("final_action halt\n", realcore_61, "--rootfs", rootfs)  # local target = the root fs
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(rootfs / "var/crash")
    dmesg = d / "vmcore-dmesg.txt"
    assert "Linux version 6.1" in dmesg.read_text()
    assert dmesg.stat().st_mode & 0o777 == 0o600
    assert not (d / "vmcore-dmesg-incomplete.txt").exists() and not (d / "vmcore-incomplete").exists()
    log_order(r.stderr, "kdump: saving vmcore-dmesg.txt complete", "kdump: saving vmcore\n", "kdump: saving vmcore complete")
    with dumpfilter.open(str(d / "vmcore")) as src:
        assert src.vmcoreinfo_raw and b"OSRELEASE=6.1" in src.vmcoreinfo_raw
    assert ctl.actions == ["halt"]


def test_ssh_saves_dmesg_of_a_real_vmcore(ctl, sshd, realcore_61, tmp_path):
    sshd.remote_pydumpfile(True)
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, realcore_61, remote)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(remote)
    assert sorted(p.name for p in d.iterdir()) == ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    assert "Linux version 6.1" in (d / "vmcore-dmesg.txt").read_text()
    log_order(r.stderr, "saving vmcore-dmesg.txt complete", "kdump: saving vmcore\n", "saving vmcore complete")
    with dumpfilter.open(str(d / "vmcore")) as src:
        assert b"OSRELEASE=6.1" in src.vmcoreinfo_raw
