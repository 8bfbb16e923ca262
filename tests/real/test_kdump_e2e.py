"""End-to-end kdump in a VM (issue 6), with fixtures/kdumpvm.

A Debian bookworm guest (debootstrap rootfs: python3 + this project's wheel) boots the
Debian 6.1 cloud kernel with crashkernel=, runs ``pykexec -p`` to load its capture kernel
and crashes through sysrq; the capture kernel runs ``pykdumpctl capture``, which leaves
``vmcore`` and ``vmcore-dmesg.txt`` on a virtio disk; here the host opens the vmcore with drgn.

Nothing here runs kexec on this machine: the real load happens in the guest only, and the
guest's init scripts refuse to run unless they are PID 1 of the kdumpvm guest.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.kdumpvm_lib import CRASH_LINE, DUMP_PATH, GUEST, BuildError, run_capture


# Comfortably above the smallest crashkernel= measured for pydumpfile (README.md,
# "Smallest crashkernel= (measured)"), so that the test does not become flaky.
CRASHKERNEL = "256M"
COLLECTOR = "pydumpfile -l -d 31"


@pytest.mark.parametrize("script", ["first-init", "capture-init"])
def test_guest_inits_refuse_outside_the_vm(script):
    """The guest inits load a crash kernel, crash and power off: on the host they must refuse
    before doing anything."""
    if not Path("/bin/busybox").exists():
        pytest.skip("no /bin/busybox")
    r = subprocess.run([str(GUEST / script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "refusing to run: not PID 1" in r.stderr


def test_e2e_crash_refuses_outside_the_vm():
    """The systemd guests' crash unit runs as a service, not PID 1: it refuses without kdumpvm.crash=1 on the
    kernel command line, before touching a disk or the sysrq trigger."""
    if "kdumpvm.crash=1" in Path("/proc/cmdline").read_text().split():
        pytest.skip("this machine booted with kdumpvm.crash=1")
    r = subprocess.run(["sh", str(GUEST / "e2e-crash"), "pykdump.service"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "refusing to run: the kernel command line has no kdumpvm.crash=1" in r.stderr


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the kdump VM test needs root (debootstrap, chroot)")
    missing = [t for t in ("debootstrap", "debugfs", "mke2fs", "qemu-system-x86_64")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (run .ci/install-realcore.sh)")
    out = tmp_path_factory.mktemp("kdumpvm")
    try:
        r = run_capture(crashkernel=CRASHKERNEL, collector=COLLECTOR, out_dir=out)
    except BuildError as e:
        pytest.fail(f"cannot prepare the kdump VM: {e}")
    if not r.ok:
        console = r.console.read_text(errors="replace").splitlines()[-40:] if r.console else []
        pytest.fail(f"{r.summary()}\n--- capture log ---\n{r.capture_log[-3000:]}\n"
                    f"--- capture kernel dmesg ---\n{r.guest_dmesg[-3000:]}\n"
                    f"--- console ---\n" + "\n".join(console))
    yield r
    shutil.rmtree(out, ignore_errors=True)  # kept only when the fixture failed


def test_pykdumpctl_capture_ran_and_powered_off(e2e):
    """The capture kernel ran pykdumpctl capture (its log is kexec-dmesg.log) and its
    final_action poweroff ended the guest (so capture-init never got to record a return)."""
    log = (e2e.vmcore.parent / "kexec-dmesg.log").read_text()
    assert "kdump: saving vmcore-dmesg.txt complete" in log
    assert "kdump: running pydumpfile -l -d 31 /proc/vmcore" in log
    assert "kdump: saving vmcore complete" in log
    console = e2e.console.read_text(errors="replace")
    assert "kdump: Executing final action poweroff" in console
    assert "reboot: Power down" in console
    assert e2e.first["state"] == "crashing" and e2e.capture["state"] == "capturing"


def test_capture_leaves_vmcore_and_dmesg(e2e):
    assert e2e.vmcore.is_file() and e2e.vmcore.stat().st_size > 1 << 20
    assert e2e.dmesg.is_file()
    assert not (e2e.vmcore.parent / "vmcore-incomplete").exists()
    # $path/$IP-$DATE/ with date +%Y-%m-%d-%H:%M:%S
    assert re.fullmatch(r"[0-9a-f.:]+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", e2e.vmcore.parent.name)
    assert e2e.vmcore.parent.parent.name == Path(DUMP_PATH).name


def test_dmesg_has_the_crash_line(e2e):
    text = e2e.dmesg.read_text(errors="replace")
    assert CRASH_LINE in text
    assert "Kernel panic - not syncing: sysrq triggered crash" in text


def test_vmcore_is_kdump_compressed_level_31(e2e):
    from dumpfilter.codec import FLAG_LZO
    from dumpfilter.source.kdump import KdumpSource

    with open(e2e.vmcore, "rb") as f:
        assert f.read(8) == b"KDUMP   "
    src = KdumpSource(str(e2e.vmcore))
    try:
        assert src.info.dump_level == 31
        assert not src.incomplete
        assert src.header.status & FLAG_LZO  # -l
        assert b"OSRELEASE=6.1." in (src.vmcoreinfo_raw or b"")
    finally:
        src.close()


def test_drgn_opens_the_vmcore(e2e):
    drgn = pytest.importorskip("drgn")
    from dumpfilter.source.kdump import KdumpSource
    from tests.helpers import bits

    prog = drgn.Program()
    prog.set_core_dump(str(e2e.vmcore))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    assert prog.platform.arch == drgn.Architecture.X86_64
    # Physical pages drgn reads are the pages the dump holds (compare a spread of them).
    src = KdumpSource(str(e2e.vmcore))
    try:
        import numpy as np
        bm = src.dumpable_bitmap()
        pfns = np.flatnonzero(bits(bm, 0, src.max_mapnr))
        assert len(pfns) > 1000
        for pfn in [int(pfns[i]) for i in range(0, len(pfns), max(1, len(pfns) // 16))]:
            assert prog.read(pfn * 4096, 4096, True) == src.read_page(pfn), f"pfn {pfn:#x}"
    finally:
        src.close()
